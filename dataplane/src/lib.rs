//! lbd's dataplane, userspace side.
//!
//! - [`maglev`]: the pure Maglev table builder every node runs over the same
//!   ordered membership, so all nodes compute identical tables.
//! - [`transition`]: turns "previous owners" and "new owners" into buckets with
//!   a second hop, so established connections survive membership changes.
//! - [`predict`]: the owner of a flow, computed with the kernel's own hash.
//! - [`loader`]: loads, attaches and pins the XDP program and its maps, swaps
//!   tables atomically and reads counters.
//! - [`pinned_link`]: which interface a pinned link drives (0: detached).
pub mod lab;
pub mod loader;
pub mod maglev;
pub mod pinned_link;
pub mod predict;
pub mod transition;
