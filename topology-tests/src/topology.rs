//! The topology file: one TOML file describes a whole lab (how many nodes
//! and clients, which router, the VIPs and the timings every lbd gets).
//! Unknown keys are errors, like in lbd.toml.
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouterKind {
    Frr,
    Bird,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Prefix of every namespace, pin directory and run directory of the
    /// lab, so that leftovers of a crashed run are found by name.
    pub name: String,
    #[serde(default = "defaults::nodes")]
    pub nodes: u16,
    #[serde(default = "defaults::clients")]
    pub clients: u16,
    #[serde(default = "defaults::router")]
    pub router: RouterKind,
    #[serde(default = "defaults::encapsulation")]
    pub encapsulation: String,
    #[serde(default)]
    pub vips: Vips,
    #[serde(default)]
    pub timings: Timings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vips {
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Default for Vips {
    fn default() -> Self {
        Vips {
            ipv4: Ipv4Addr::new(198, 51, 100, 10),
            ipv6: "2001:db8:100::10".parse().expect("literal"),
        }
    }
}

/// What every node's lbd and the router get. The defaults are the lab's
/// "default timings" the scenario goals refer to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timings {
    pub check_interval_ms: u64,
    pub check_timeout_ms: u64,
    pub check_fall: u32,
    pub check_rise: u32,
    pub liveness_interval_ms: u64,
    pub liveness_fall: u32,
    /// BFD between the router and each node (0 turns BFD off).
    pub bfd_interval_ms: u64,
    pub bfd_multiplier: u32,
    pub hold_time_s: u16,
    pub drain_period_s: u64,
    /// How long a draining node announces GRACEFUL_SHUTDOWN before it withdraws.
    pub shutdown_wait_ms: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            check_interval_ms: 500,
            check_timeout_ms: 400,
            check_fall: 2,
            check_rise: 1,
            liveness_interval_ms: 200,
            liveness_fall: 3,
            bfd_interval_ms: 100,
            bfd_multiplier: 3,
            hold_time_s: 9,
            drain_period_s: 120,
            shutdown_wait_ms: 1000,
        }
    }
}

mod defaults {
    use super::RouterKind;
    pub fn nodes() -> u16 {
        3
    }
    pub fn clients() -> u16 {
        1
    }
    pub fn router() -> RouterKind {
        RouterKind::Frr
    }
    pub fn encapsulation() -> String {
        "gue".into()
    }
}

pub const MAX_NODES: u16 = 8;

impl Topology {
    pub fn load(path: &Path) -> Result<Topology> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::parse(&text).with_context(|| format!("{file}: invalid topology"))
    }

    pub fn parse(text: &str) -> Result<Topology> {
        let t: Topology = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        t.validate()?;
        Ok(t)
    }

    fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 10
            || !n.starts_with(|c: char| c.is_ascii_lowercase())
            || !n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            bail!("name: {n:?} must be 1-10 lowercase letters or digits, starting with a letter");
        }
        if !(1..=MAX_NODES).contains(&self.nodes) {
            bail!("nodes: {} must be between 1 and {MAX_NODES}", self.nodes);
        }
        if !(1..=2).contains(&self.clients) {
            bail!("clients: {} must be 1 or 2", self.clients);
        }
        if !matches!(self.encapsulation.as_str(), "gue" | "ipip") {
            bail!(
                "encapsulation: {:?} is not \"gue\" or \"ipip\"",
                self.encapsulation
            );
        }
        let t = &self.timings;
        for (key, v) in [
            ("timings.check_interval_ms", t.check_interval_ms),
            ("timings.check_timeout_ms", t.check_timeout_ms),
            ("timings.liveness_interval_ms", t.liveness_interval_ms),
            ("timings.shutdown_wait_ms", t.shutdown_wait_ms),
            ("timings.drain_period_s", t.drain_period_s),
        ] {
            if v == 0 {
                bail!("{key}: must be above 0");
            }
        }
        if t.check_fall == 0 || t.check_rise == 0 || t.liveness_fall == 0 {
            bail!("timings: check_fall, check_rise and liveness_fall must be at least 1");
        }
        if t.bfd_interval_ms > 0 && t.bfd_multiplier == 0 {
            bail!("timings.bfd_multiplier: must be at least 1 when BFD is on");
        }
        if t.hold_time_s != 0 && t.hold_time_s < 3 {
            bail!(
                "timings.hold_time_s: {} must be 0 or at least 3",
                t.hold_time_s
            );
        }
        Ok(())
    }
}

/// Addresses of the lab: node `id` (1-based) sits on 192.0.2.16*id/28 and
/// 2001:db8:id::/64 with the router at .1 / ::1; client `c` on
/// 203.0.113.16*c/28 and 2001:db8:c0c::/64 likewise.
pub mod addr {
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub use lab::addr::{node4, node6, router_to_node4, router_to_node6};

    pub fn client4(c: u16) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, (16 * c + 2) as u8)
    }
    pub fn router_to_client4(c: u16) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, (16 * c + 1) as u8)
    }
    pub fn client6(c: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0xc00 + c, 0, 0, 0, 0, 2)
    }
    pub fn router_to_client6(c: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0xc00 + c, 0, 0, 0, 0, 1)
    }
    pub const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    pub const ROUTER_AS: u32 = 65000;
    pub const NODE_AS: u32 = 65100;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_key() {
        let t = Topology::parse("name = \"lab\"").expect("minimal file");
        assert_eq!((t.nodes, t.clients, t.router), (3, 1, RouterKind::Frr));
        for (text, expect) in [
            ("name = \"lab\"\nnodez = 3", "unknown field `nodez`"),
            (
                "name = \"lab\"\nnodes = 9",
                "nodes: 9 must be between 1 and 8",
            ),
            (
                "name = \"lab\"\nnodes = 0",
                "nodes: 0 must be between 1 and 8",
            ),
            ("name = \"Lab\"", "name: \"Lab\" must be"),
            (
                "name = \"lab\"\nrouter = \"quagga\"",
                "unknown variant `quagga`",
            ),
            (
                "name = \"lab\"\n[vips]\nipv4 = \"10.0.0.300\"\nipv6 = \"::1\"",
                "invalid IPv4",
            ),
            ("name = \"lab\"\n[timings]\ncheck_fall = 0", "check_fall"),
            (
                "name = \"lab\"\nencapsulation = \"vxlan\"",
                "encapsulation: \"vxlan\"",
            ),
        ] {
            let err = format!("{:#}", Topology::parse(text).expect_err(text));
            assert!(err.contains(expect), "{text:?}: {err}");
        }
    }
}
