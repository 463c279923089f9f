//! Each node's lbd.toml, from the topology: the same members, VIPs, checks
//! and timings on every node (so their config generations agree), the
//! node's own id and addresses, BGP (with BFD) to the router.
use std::fmt::Write;
use std::path::Path;

use crate::topology::{Topology, addr};

/// `iface`: the node's uplink (eth0 in the lab, eth1 under containerlab);
/// `secret`: the cluster secret file that authenticates liveness reports.
pub fn render(
    topo: &Topology,
    id: u16,
    iface: &str,
    pin_dir: &Path,
    socket: &Path,
    secret: &Path,
) -> String {
    let t = &topo.timings;
    let mut s = format!(
        r#"# lbd on lab node {id} (written by lbd-lab from the topology file)
node_id = {id}
hash_seed = {seed:#x}
drain_period = "{drain}s"

[dataplane]
interface = "{iface}"
encapsulation = "{encap}"
pin_dir = "{pins}"
table_size = 65537

[liveness]
interval = "{li}ms"
timeout = "{lt}ms"
rise = 1
fall = {lf}
secret_file = "{secret}"
"#,
        seed = dataplane_common::DEFAULT_HASH_SEED,
        secret = secret.display(),
        drain = t.drain_period_s,
        encap = topo.encapsulation,
        pins = pin_dir.display(),
        li = t.liveness_interval_ms,
        lt = (t.liveness_interval_ms * 3 / 4).max(1),
        lf = t.liveness_fall,
    );
    for m in 1..=topo.nodes {
        let _ = write!(
            s,
            "\n[[members]]\nid = {m}\naddress = \"{}\"\n",
            addr::node4(m)
        );
    }
    for (vip, url_host) in [
        (topo.vips.ipv4.to_string(), topo.vips.ipv4.to_string()),
        (topo.vips.ipv6.to_string(), format!("[{}]", topo.vips.ipv6)),
    ] {
        let _ = write!(
            s,
            r#"
[[vips]]
address = "{vip}"
ports = [80, 443]

[[vips.checks]]
type = "http"
url = "http://{url_host}/health"
expect_status = 200
body_contains = "ok"
interval = "{ci}ms"
timeout = "{ct}ms"
rise = {cr}
fall = {cf}
"#,
            ci = t.check_interval_ms,
            ct = t.check_timeout_ms,
            cr = t.check_rise,
            cf = t.check_fall,
        );
    }
    let _ = write!(
        s,
        r#"
[bgp]
local_as = {nas}
router_id = "{me}"
hold_time = {hold}
graceful_restart_time = 120
shutdown_wait = "{sw}ms"
communities = ["{nas}:10"]

[[bgp.peers]]
address = "{router}"
remote_as = {ras}
local_address = "{me}"
next_hop_v6 = "{me6}"
"#,
        nas = addr::NODE_AS,
        ras = addr::ROUTER_AS,
        me = addr::node4(id),
        me6 = addr::node6(id),
        router = addr::router_to_node4(id),
        hold = t.hold_time_s,
        sw = t.shutdown_wait_ms,
    );
    if t.bfd_interval_ms > 0 {
        let _ = writeln!(
            s,
            "bfd = {{ min_tx = \"{i}ms\", min_rx = \"{i}ms\", multiplier = {m} }}",
            i = t.bfd_interval_ms,
            m = t.bfd_multiplier
        );
    }
    let _ = write!(
        s,
        "\n[api]\nsocket = \"{}\"\nmetrics = \"127.0.0.1:9181\"\n",
        socket.display()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the lab writes is what `lbd check-config` accepts.
    #[test]
    fn every_node_config_is_valid_for_lbd() {
        let topo = Topology::parse("name = \"cfgtest\"\nnodes = 8").expect("topology");
        for id in 1..=8 {
            let text = render(
                &topo,
                id,
                "eth0",
                Path::new("/sys/fs/bpf/x"),
                Path::new("/tmp/x.sock"),
                Path::new("/etc/lbd/liveness.secret"),
            );
            if let Err(e) = lbd::config::Config::parse("lbd.toml", &text) {
                panic!("node {id}: {e}\n{text}");
            }
        }
    }
}
