//! lbd's dataplane, userspace side.
//!
//! - [`maglev`]: the pure Maglev table builder every node runs over the same
//!   ordered membership, so all nodes compute identical tables.
//! - [`transition`]: turns "previous owners" and "new owners" into buckets with
//!   a second hop, so established connections survive membership changes.
//! - [`predict`]: the owner of a flow, computed with the kernel's own hash.
//! - [`loader`]: loads, attaches and pins the XDP program and its maps, swaps
//!   tables atomically and reads counters.
//! - [`listen_watch`]: where the listener watch's tracepoint record keeps
//!   the fields it reads (from this kernel's format file).
//! - [`mtu`]: the MSS clamp that keeps forwarded segments within the
//!   underlay's MTU.
//! - [`pinned_link`]: which interface a pinned link drives (0: detached).
//!
//! The namespace lab, test bed, packet builders, benchmark and demo live in
//! the dev-only `lab` crate, apart from this library.
pub mod listen_watch;
pub mod loader;
pub mod maglev;
pub mod mtu;
pub mod pinned_link;
pub mod predict;
pub mod transition;
