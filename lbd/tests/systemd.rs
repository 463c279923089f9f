//! configs/lbd/lbd.service. systemd is not PID 1 on the test machines, so
//! the unit cannot be started here; what can be checked is: the unit passes
//! `systemd-analyze verify` (with the binary path pointing at this build),
//! and lbd does its whole job (XDP, pins, BGP with MD5 on port 179, BFD,
//! reload) with no capability but the ones the unit grants, as root with
//! the bounding set cut down by setpriv, the way systemd runs it.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

fn unit() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lbd/lbd.service"),
    )
    .expect("lbd.service")
}

/// `systemd-analyze verify` of `text` saved as lbd.service: (success, stderr).
fn verify(text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(lab::unique("lbdt-unit-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("lbd.service");
    std::fs::write(&file, text.replace("/usr/local/bin/lbd", LBD)).expect("unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let (ok, err) = verify(&unit());
    assert!(ok && err.trim().is_empty(), "{err}");
    // The check sees mistakes: a misspelled key is reported.
    let (_, err) = verify(&unit().replace("ProtectSystem=", "ProtectSystme="));
    assert!(
        err.contains("Unknown key") && err.contains("ProtectSystme"),
        "{err}"
    );
}

/// The unit's CapabilityBoundingSet as setpriv options.
fn unit_caps() -> Vec<String> {
    let line = unit()
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet=").map(str::to_string))
        .expect("CapabilityBoundingSet");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

#[test]
fn lbd_works_with_only_the_capabilities_of_the_unit() {
    let caps = unit_caps();
    assert!(caps.contains(&"bpf".to_string()) && !caps.contains(&"sys_admin".to_string()));
    let mut lab = Lab::new("caps", 1, false);
    let key = lab.dir.join("bgp.key");
    std::fs::write(&key, "caps-test-key\n").expect("key");
    lab.start_frr(&lab.frr_conf("password caps-test-key\nbfd profile fast"));
    let cfg = lab.node_config(1, &[1]).replace(
        "remote_as = 65000\n",
        &format!(
            "remote_as = 65000\nmd5_password_file = \"{}\"\nbfd = {{ min_tx = \"100ms\", min_rx = \"100ms\", multiplier = 3 }}\n",
            key.display()
        ),
    );
    lab.write_config(0, &cfg);
    let bounding = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    lab.start_lbd_wrapped(
        0,
        &[
            "setpriv".into(),
            "--bounding-set".into(),
            bounding,
            "--inh-caps=-all".into(),
        ],
    );
    wait_for("announced to FRR", Duration::from_secs(30), || {
        lab.vip_via() == via_all(&[1])
    });
    // The process really runs with those and no others (as far as this
    // test process has them itself).
    let mask = |pid: &str, field: &str| -> u64 {
        lab::procfs::capability_mask(pid, field).expect("capability mask")
    };
    let bit = |c: &str| match c {
        "net_bind_service" => 10,
        "net_admin" => 12,
        "net_raw" => 13,
        "ipc_lock" => 14,
        "sys_resource" => 24,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("capability {other} of the unit is not known to this test"),
    };
    let granted: u64 = caps.iter().map(|c| 1u64 << bit(c)).sum();
    assert_eq!(
        mask(&lab.lbd_pid(0).to_string(), "CapEff:"),
        granted & mask("self", "CapBnd:")
    );
    wait_for("BFD up", Duration::from_secs(10), || {
        lab.status(0)["bgp"][0]["bfd"] == "Up"
    });
    assert_eq!(
        lab.get_from(IpAddr::V4(VIP), "/whoami").expect("GET"),
        "node1"
    );
    // A reload that restarts the session (new key) works too.
    std::fs::write(&key, "caps-test-key-2\n").expect("key");
    assert!(lab.reload(0).contains("settings changed"));
    assert!(lab.log(0).contains("BGP peer started"), "{}", lab.log(0));
}
