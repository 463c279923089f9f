//! Config validation: a table of bad files, each with the exact message
//! (file, key path, what was expected) that `lbd check-config` prints and
//! exit code 2; the examples in configs/lbd pass.

use std::path::PathBuf;
use std::process::Command;

use lbd::config::Config;

const BASE: &str = r#"
node_id = 1
[dataplane]
interface = "eth0"
[[members]]
id = 1
address = "192.0.2.11"
[[members]]
id = 2
address = "192.0.2.12"
[[vips]]
address = "198.51.100.10"
ports = [80]
[[vips.checks]]
type = "tcp"
address = "127.0.0.1:80"
[bgp]
local_as = 65100
router_id = "192.0.2.11"
[[bgp.peers]]
address = "192.0.2.1"
remote_as = 65000
"#;

/// `BASE` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

fn errors(text: &str) -> Vec<String> {
    match Config::parse("lbd.toml", text) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn base_config_is_valid_and_defaults_apply() {
    let c = Config::parse("lbd.toml", BASE).expect("valid");
    assert_eq!(c.node_id, 1);
    assert_eq!(c.dataplane.gue_port, 6080);
    assert_eq!(c.dataplane.table_size, 65537);
    assert_eq!(c.bgp.hold_time, 9);
    assert_eq!(c.bgp.listen_port, Some(179));
    // 0: no listener, active sessions only.
    let c = Config::parse(
        "lbd.toml",
        &edit("local_as = 65100", "local_as = 65100\nlisten_port = 0"),
    )
    .expect("listen_port = 0 is valid");
    assert_eq!(c.bgp.listen_port, None);
    assert_eq!(c.liveness.fall, 3);
    assert_eq!(c.vips[0].checks[0].rise, 2);
    assert_eq!(c.members[1].weight, 1);
}

#[test]
fn bad_files_name_file_key_and_expectation() {
    let cases: Vec<(String, &str)> = vec![
        (
            edit("node_id = 1", "node_id = 1\nnode_id = 2"),
            "lbd.toml: invalid TOML (line 3): duplicate key",
        ),
        (
            edit("[dataplane]", "[dataplane"),
            "lbd.toml: invalid TOML (line 3): unclosed table, expected `]`",
        ),
        (
            edit("node_id = 1", "node_id = 1\nnode-id = 1"),
            "lbd.toml: node-id: unknown key \"node-id\": expected one of: node_id, hash_seed, drain_period, dataplane, members, liveness, vips, bgp, api (line 3)",
        ),
        (
            edit(
                "address = \"192.0.2.12\"",
                "address = \"192.0.2.12\"\nwieght = 2",
            ),
            "lbd.toml: members[1].wieght: unknown key \"wieght\": expected one of: id, address, weight (line 11)",
        ),
        (
            edit("\"198.51.100.10\"", "\"10.0.0.300\""),
            "lbd.toml: vips[0].address: \"10.0.0.300\" is not an IPv4 or IPv6 address",
        ),
        (
            edit("ports = [80]", "ports = [0]"),
            "lbd.toml: vips[0].ports[0]: 0 is not a port: expected 1-65535",
        ),
        (
            edit("ports = [80]", "ports = [80, 80]"),
            "lbd.toml: vips[0].ports[1]: 80 is listed twice",
        ),
        (
            edit("ports = [80]", "ports = \"80\""),
            "lbd.toml: vips[0].ports: wrong type: string \"80\", expected a list (line 13)",
        ),
        (
            edit("id = 2", "id = 1"),
            "lbd.toml: members[1].id: 1 is already the id of members[0]",
        ),
        (
            edit("address = \"192.0.2.12\"", "address = \"192.0.2.11\""),
            "lbd.toml: members[1].address: 192.0.2.11 is already the address of members[0]",
        ),
        (
            edit("node_id = 1", "node_id = 4"),
            "lbd.toml: node_id: 4 is not the id of any entry in members (ids: 1, 2)",
        ),
        (
            edit("node_id = 1", "node_id = 0"),
            "lbd.toml: node_id: 0 is out of range: expected a node id 1-1023",
        ),
        (
            edit("node_id = 1\n", ""),
            "lbd.toml: node_id: missing: expected this node's id (1-1023)",
        ),
        (
            edit("remote_as = 65000\n", ""),
            "lbd.toml: bgp.peers[0].remote_as: missing: expected the router's AS number",
        ),
        (
            edit("remote_as = 65000", "remote_as = 23456"),
            "lbd.toml: bgp.peers[0].remote_as: 23456 is AS_TRANS, not a usable AS number: expected 1-4294967295",
        ),
        (
            edit("local_as = 65100", "local_as = 4294967296"),
            "lbd.toml: bgp.local_as: 4294967296 is out of range: expected an AS number 1-4294967295",
        ),
        (
            edit("router_id = \"192.0.2.11\"", "router_id = \"2001:db8::1\""),
            "lbd.toml: bgp.router_id: \"2001:db8::1\" is not an IPv4 address (a BGP identifier is one)",
        ),
        (
            edit(
                "router_id = \"192.0.2.11\"",
                "router_id = \"192.0.2.11\"\nlisten_port = 65536",
            ),
            "lbd.toml: bgp.listen_port: 65536 is not a port: expected 1-65535",
        ),
        (
            edit(
                "router_id = \"192.0.2.11\"",
                "router_id = \"192.0.2.11\"\nlisten_port = 0",
            )
            .replacen("remote_as = 65000", "remote_as = 65000\npassive = true", 1),
            "lbd.toml: bgp.peers[0].passive: a passive peer needs a listener, and bgp.listen_port = 0 turns it off",
        ),
        (
            edit(
                "router_id = \"192.0.2.11\"",
                "router_id = \"192.0.2.11\"\nhold_time = 2",
            ),
            "lbd.toml: bgp.hold_time: 2 is not a hold time (expected 0 or 3-65535 seconds)",
        ),
        (
            edit(
                "router_id = \"192.0.2.11\"",
                "router_id = \"192.0.2.11\"\ncommunities = [\"65000:70000\"]",
            ),
            "lbd.toml: bgp.communities[0]: \"65000:70000\" is not a community (expected \"ASN:VALUE\", each 0-65535)",
        ),
        (
            edit(
                "address = \"127.0.0.1:80\"",
                "address = \"127.0.0.1:80\"\nrise = 0",
            ),
            "lbd.toml: vips[0].checks[0].rise: 0 is out of range: expected 1-100",
        ),
        (
            edit(
                "address = \"127.0.0.1:80\"",
                "address = \"127.0.0.1:80\"\ninterval = \"2 s\"",
            ),
            "lbd.toml: vips[0].checks[0].interval: \"2 s\" is not a duration above zero (expected e.g. \"500ms\", \"2s\", \"5m\", \"1h\")",
        ),
        (
            edit(
                "address = \"127.0.0.1:80\"",
                "address = \"127.0.0.1:80\"\ninterval = \"1s\"\ntimeout = \"3s\"",
            ),
            "lbd.toml: vips[0].checks[0].timeout: 3s is longer than the interval (1s): expected at most the interval",
        ),
        (
            edit("type = \"tcp\"", "type = \"icmp\""),
            "lbd.toml: vips[0].checks[0].type: \"icmp\" is not a check type (expected \"http\", \"https\", \"tcp\" or \"exec\")",
        ),
        (
            edit("type = \"tcp\"", "type = \"http\""),
            "lbd.toml: vips[0].checks[0].address: not a key of \"http\" checks",
        ),
        (
            edit(
                "type = \"tcp\"\naddress = \"127.0.0.1:80\"",
                "type = \"https\"\nurl = \"http://127.0.0.1/\"",
            ),
            "lbd.toml: vips[0].checks[0].url: \"http://127.0.0.1/\" is a http:// URL but the check type is \"https\": expected https://",
        ),
        (
            edit(
                "type = \"tcp\"\naddress = \"127.0.0.1:80\"",
                "type = \"exec\"\ncommand = [\"check.sh\"]",
            ),
            "lbd.toml: vips[0].checks[0].command[0]: \"check.sh\" is not an absolute path (the command runs without a shell or PATH)",
        ),
        (
            edit("address = \"127.0.0.1:80\"", "address = \"127.0.0.1\""),
            "lbd.toml: vips[0].checks[0].address: \"127.0.0.1\" is not an address and port (expected e.g. \"127.0.0.1:9181\" or \"[::1]:9181\")",
        ),
        (
            edit(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nencapsulation = \"vxlan\"",
            ),
            "lbd.toml: dataplane.encapsulation: \"vxlan\" is not an encapsulation (expected \"gue\" or \"ipip\")",
        ),
        (
            edit(
                "interface = \"eth0\"",
                "interface = \"eth0\"\ntable_size = 65536",
            ),
            "lbd.toml: dataplane.table_size: 65536 is not a prime in 2-65537 (e.g. 65537, 16381, 4093)",
        ),
        (
            edit(
                "remote_as = 65000",
                "remote_as = 65000\nlocal_address = \"2001:db8::11\"",
            ),
            "lbd.toml: bgp.peers[0].local_address: 2001:db8::11 is not of the same family as the peer address 192.0.2.1",
        ),
        (
            edit(
                "remote_as = 65000",
                "remote_as = 65000\nbfd = { multiplier = 0 }",
            ),
            "lbd.toml: bgp.peers[0].bfd.multiplier: 0 is out of range: expected 1-255",
        ),
        (
            edit(
                "node_id = 1",
                "node_id = 1\n[liveness]\ninterval = \"1s\"\ntimeout = \"2s\"",
            ),
            "lbd.toml: liveness.timeout: 2s is longer than liveness.interval (1s): expected at most the interval",
        ),
        (
            edit("node_id = 1", "node_id = 1\ndrain_period = \"0s\""),
            "lbd.toml: drain_period: \"0s\" is not a duration above zero (expected e.g. \"500ms\", \"2s\", \"5m\", \"1h\")",
        ),
        (
            format!("{BASE}[api]\nsocket = \"lbd.sock\"\n"),
            "lbd.toml: api.socket: \"lbd.sock\" is not an absolute path",
        ),
        (
            edit("address = \"192.0.2.12\"", "address = \"2001:db8::12\""),
            "lbd.toml: members[1].address: 2001:db8::12 is IPv6 but this node's underlay (192.0.2.11, node 1) is IPv4: every member must be in the same family",
        ),
        (
            format!("{BASE}[liveness]\nsecret_file = \"liveness.secret\"\n"),
            "lbd.toml: liveness.secret_file: \"liveness.secret\" is not an absolute path",
        ),
    ];
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = errors(text);
        if got.first().map(String::as_str) != Some(*want) {
            failures.push(format!("want: {want}\n got: {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = edit("ports = [80]", "ports = [0, 70000]").replace("remote_as = 65000\n", "");
    assert_eq!(
        errors(&text),
        vec![
            "lbd.toml: vips[0].ports[0]: 0 is not a port: expected 1-65535",
            "lbd.toml: vips[0].ports[1]: 70000 is not a port: expected 1-65535",
            "lbd.toml: bgp.peers[0].remote_as: missing: expected the router's AS number",
        ]
    );
}

fn lbd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lbd"))
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/lbd")
}

#[test]
fn check_config_exits_2_with_the_message_on_stderr() {
    let dir = std::env::temp_dir().join(format!("lbdt-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("lbd.toml");
    std::fs::write(&file, edit("\"198.51.100.10\"", "\"10.0.0.300\"")).expect("write");
    let out = lbd()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run lbd");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "{}: vips[0].address: \"10.0.0.300\" is not an IPv4 or IPv6 address",
            file.display()
        )
    );
    // `lbd run` refuses the same file the same way, before touching anything.
    let out = lbd()
        .arg("run")
        .arg("-c")
        .arg(&file)
        .output()
        .expect("run lbd");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("vips[0].address: \"10.0.0.300\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing = dir.join("nope.toml");
    let out = lbd()
        .arg("check-config")
        .arg(&missing)
        .output()
        .expect("run lbd");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with(&format!("{}: cannot read: No such file", missing.display())),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn example_configs_pass_and_agree_on_the_generation() {
    let mut generations = Vec::new();
    for n in 1..=3 {
        let file = examples().join(format!("node{n}.toml"));
        let out = lbd()
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("run lbd");
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = Config::load(&file).expect("valid");
        assert_eq!(c.node_id, n);
        generations.push(c.generation());
    }
    assert!(
        generations.windows(2).all(|w| w[0] == w[1]),
        "{generations:?}"
    );
}

#[test]
fn example_bird_config_parses() {
    let file = examples().join("bird-router.conf");
    let out = Command::new("bird")
        .arg("-p")
        .arg("-c")
        .arg(&file)
        .output()
        .expect("run bird");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
