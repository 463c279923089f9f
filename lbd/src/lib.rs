//! lbd: the daemon every storage node runs, and its operator CLI.
//!
//! One config file ([`config`]) says who the node is, who its peers are,
//! which VIPs it serves and how to check them. The daemon ([`daemon`])
//! wires the pieces together: local health checks (the `health` crate),
//! peer liveness ([`liveness`]), the Maglev tables every node computes from
//! the same view ([`tables`], programmed into the `dataplane` XDP maps), and
//! BGP announcements (`bgp-speaker`) in an order that keeps connections
//! alive. Each VIP's config, checks and table are one state object
//! ([`vips`]). Operators talk to it over a root-only Unix socket
//! ([`control`]); what they see is assembled in [`status`] and
//! [`table_view`], printed through [`columns`].
pub mod columns;
pub mod config;
pub mod control;
pub mod daemon;
pub mod liveness;
pub mod metrics;
pub mod status;
pub mod table_view;
pub mod tables;
pub mod vips;
