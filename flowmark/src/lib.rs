//! flowmark: SciTags support for lbd storage nodes.
//!
//! - [`scitag`]: the SciTag value, its IPv6 flow-label encoding, and its
//!   extraction from HTTP requests (used by the reverse-proxy API).
//! - [`registry`]: experiment and activity names, shipped in the binary.
//!
//! The daemon (`flowmark run`) marks the IPv6 flow label of registered flows
//! with a tc clsact egress program (`flowmark-ebpf`) and sends UDP fireflies;
//! `flowmark collect` receives fireflies and exposes Prometheus metrics.
pub mod api;
pub mod bad;
pub mod collector;
pub mod daemon;
pub mod discovery;
pub mod firefly;
pub mod flow;
pub mod lines;
pub mod marker;
pub mod pipe;
pub mod registry;
pub mod scitag;
pub mod tcpinfo;
pub mod tool;
