//! The shipped systemd units (`configs/flowmark/*.service`):
//! `systemd-analyze verify` accepts them without a single warning, and
//! their ExecStart command lines, exactly as written, start a marking
//! daemon and a collector that work together.
//!
//! systemd is not PID 1 on the test machines, so the units cannot be
//! started by systemd itself; the second test runs each ExecStart in a
//! network namespace with a private /run (the paths the units name).
mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::*;

const INSTALLED: &str = "/usr/local/bin/flowmark";

fn unit(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/flowmark")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit's ExecStart as argv, with the installed binary replaced by the
/// one under test.
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut argv: Vec<String> = line.split_whitespace().map(String::from).collect();
    assert_eq!(argv[0], INSTALLED, "the units run the installed binary");
    argv[0] = flowmark_bin().to_string();
    argv
}

/// `systemd-analyze verify` of `text` saved as DIR/NAME: Ok, or what it
/// said. Warnings fail too (verify exits 0 on an unknown key).
fn verify(dir: &std::path::Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let said =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    if o.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: verify skipped");
        return;
    }
    let dir = std::env::temp_dir().join(format!("flm-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["flowmark.service", "flowmark-collect.service"] {
        // verify checks that ExecStart's binary exists: point it at ours.
        let text = unit(name).replace(INSTALLED, flowmark_bin());
        if let Err(said) = verify(&dir, name, &text) {
            panic!("{name}: systemd-analyze verify:\n{said}");
        }
        // The check can fail: the same unit with a misspelt key does.
        let broken = text.replace("NoNewPrivileges=", "NoNewPrivilege=");
        assert!(
            verify(&dir, name, &broken).is_err(),
            "{name}: a misspelt key went unnoticed"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unit_command_lines_start_working_daemons() {
    let mut lab = Lab::new("unit");
    let (srv, cli) = (lab.srv.clone(), lab.cli.clone());
    // flowmark.service marks `--iface eth0`: name the node's side so.
    sh(&["ip", "-n", &srv, "link", "set", "veth0", "down"]);
    sh(&["ip", "-n", &srv, "link", "set", "veth0", "name", "eth0"]);
    sh(&["ip", "-n", &srv, "link", "set", "eth0", "up"]);
    // Down flushed the static IPv6 address (keep_addr_on_down = 0).
    let a6 = format!("{SRV6}/64");
    sh(&[
        "ip", "-n", &srv, "addr", "replace", &a6, "dev", "eth0", "nodad",
    ]);

    let collect = exec_start(&unit("flowmark-collect.service"));
    let collect: Vec<&str> = collect.iter().map(String::as_str).collect();
    lab.spawn("collector", &cli, &collect);
    lab.wait_log("collector", "flowmark: ready");

    // The unit's /var/run/flowd and /run/flowmark.sock go to a private
    // tmpfs on /run (this host's /run stays untouched); the test reaches
    // them through /proc/PID/root.
    let run = exec_start(&unit("flowmark.service"));
    let mut args = vec![
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs flm-run /run && exec \"$0\" \"$@\"",
    ];
    args.extend(run.iter().map(String::as_str));
    let pid = lab.spawn("flowmark", &srv, &args).id();
    lab.wait_log("flowmark", "flowmark: ready");
    let root = PathBuf::from(format!("/proc/{pid}/root/run"));

    let reply = api(
        &root.join("flowmark.sock"),
        &format!(
            r#"{{"op":"start","src":"{SRV6}","sport":8080,"dst":"{CLI6}","dport":41000,"scitag":206}}"#
        ),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    std::fs::write(
        root.join("flowd"),
        format!("start tcp {SRV6} 8081 {CLI6} 41001 2 4\n"),
    )
    .expect("the unit's pipe");

    // Both start fireflies reached the peer's collector.
    wait_for("start fireflies counted", Duration::from_secs(10), || {
        // The unit's collector listens on [::]:9814 (IPv6 only).
        let m = metrics_at(&lab, &cli, "[::1]:9814");
        (metric_sum(&m, "flowmark_collector_flows_started_total", &[]) >= 2.0).then_some(())
    });
    let m = metrics(&lab, &srv, 9815);
    assert_eq!(metric_sum(&m, "flowmark_flows_started_total", &[]), 2.0);
    let filters = sh(&["tc", "-n", &srv, "filter", "show", "dev", "eth0", "egress"]);
    assert!(
        filters.contains("flowmark_egress"),
        "no marking program on eth0:\n{filters}"
    );
}
