//! What the speaker tells every session: the routes to announce and when
//! to stop. The speaker writes them, each session watches them.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::config::RouteAttrs;

/// The routes we announce; `draining` adds GRACEFUL_SHUTDOWN to all of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rib {
    pub routes: BTreeMap<IpNet, RouteAttrs>,
    pub draining: bool,
    /// A restarting speaker holds End-of-RIB until its owner has decided
    /// its first routes ([`Speaker::release_end_of_rib`]): the router ends
    /// its stale timer at End-of-RIB, and a route sent after that would
    /// leave a gap.
    pub eor_held: bool,
}

/// How a session ends when the speaker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// Cease / Administrative Shutdown: the router withdraws at once.
    Shutdown,
    /// Close TCP without NOTIFICATION: a graceful-restart helper keeps our
    /// routes for the restart time.
    ForRestart,
}
