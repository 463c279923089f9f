//! The shipped systemd units (`configs/flowmark/*.service`):
//! `systemd-analyze verify` accepts them without a single warning, and
//! their ExecStart command lines, exactly as written, start a marking
//! daemon and a collector that work together.
//!
//! systemd is not PID 1 on the test machines, so the units cannot be
//! started by systemd itself; the last test runs each ExecStart in a
//! network namespace with a private /run (the paths the units name),
//! under setpriv with the unit's capabilities, groups and umask, the way
//! systemd would run it; `systemd-analyze security` rates the sandboxing.
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
/// said (warnings too).
fn verify(dir: &std::path::Path, name: &str, text: &str) -> Result<(), String> {
    lab::systemd::verify(dir, name, text, &[])
}

#[test]
fn units_pass_systemd_analyze_verify() {
    // No skip: a machine without systemd-analyze fails here (scripts/setup.sh
    // installs it with the systemd package).
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

/// `systemd-analyze security --offline=true`'s overall exposure (0 safe,
/// 10 unsafe) of `text` saved as DIR/NAME.
fn exposure(dir: &std::path::Path, name: &str, text: &str) -> f64 {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let out = String::from_utf8_lossy(&o.stdout);
    out.lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{name}: no exposure in:\n{out}{}",
                String::from_utf8_lossy(&o.stderr)
            )
        })
}

/// The units' sandboxing, as systemd itself rates it: the marking daemon
/// (uid 0 with two capabilities) and the collector (a dynamic user with
/// none) stay well below systemd's "MEDIUM".
#[test]
fn units_are_sandboxed() {
    let dir = std::env::temp_dir().join(format!("flm-units-sec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, most) in [("flowmark.service", 4.0), ("flowmark-collect.service", 3.0)] {
        let text = unit(name).replace(INSTALLED, flowmark_bin());
        let e = exposure(&dir, name, &text);
        assert!(e <= most, "{name}: exposure {e} > {most}");
        // Control: the unit without its sandboxing lines rates far worse.
        let bare: String = text
            .lines()
            .filter(|l| {
                [
                    "[",
                    "#",
                    "ExecStart=",
                    "Description=",
                    "Restart",
                    "WantedBy",
                    "After=",
                    "Wants=",
                    "Before=",
                    "Documentation=",
                ]
                .iter()
                .any(|k| l.starts_with(k))
                    || l.is_empty()
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let e = exposure(&dir, name, &bare);
        assert!(e > most + 3.0, "{name} without sandboxing: exposure {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `Key=` line of a unit, split on whitespace.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// setpriv options that give a process what the unit gives its ExecStart:
/// the capability bounding set (uid 0 gets exactly those), no inheritable
/// capabilities, no new privileges, the supplementary groups.
fn setpriv_as_unit(unit: &str) -> Vec<String> {
    let caps: Vec<String> = unit_values(unit, "CapabilityBoundingSet")
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let mut args = vec![
        "setpriv".to_string(),
        format!("--bounding-set=-all,{}", caps.join(",")),
        "--inh-caps=-all".into(),
        "--no-new-privs".into(),
    ];
    if unit.contains("\nSupplementaryGroups=") {
        args.push(format!(
            "--groups={}",
            unit_values(unit, "SupplementaryGroups").join(",")
        ));
    }
    args
}

/// A capability mask line of /proc/PID/status.
fn cap_mask(pid: &str, field: &str) -> u64 {
    lab::procfs::capability_mask(pid, field).expect("capability mask")
}

/// Both ExecStart lines, exactly as written, with the privileges of their
/// units: the marking daemon as uid 0 with only the unit's capabilities
/// and groups (and its umask), the collector as an unprivileged user with
/// none (DynamicUser). They mark, register from the pipe and the socket,
/// and exchange fireflies.
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

    let collect_unit = unit("flowmark-collect.service");
    assert!(collect_unit.contains("\nDynamicUser=yes"));
    assert_eq!(
        unit_values(&collect_unit, "CapabilityBoundingSet"),
        Vec::<String>::new()
    );
    let mut collect: Vec<String> = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--no-new-privs",
    ]
    .map(String::from)
    .to_vec();
    collect.extend(exec_start(&collect_unit));
    let collect: Vec<&str> = collect.iter().map(String::as_str).collect();
    let cpid = lab.spawn("collector", &cli, &collect).id().to_string();
    lab.wait_log("collector", "flowmark: ready");
    assert_eq!(
        cap_mask(&cpid, "CapEff:"),
        0,
        "the collector has capabilities"
    );

    // The unit's /var/run/flowd and /run/flowmark.sock go to a private
    // tmpfs on /run (this host's /run stays untouched); the test reaches
    // them through /proc/PID/root. The unit's umask applies.
    let run_unit = unit("flowmark.service");
    let umask = unit_values(&run_unit, "UMask").remove(0);
    assert_eq!(umask, "0077");
    let mut run = setpriv_as_unit(&run_unit);
    run.extend(exec_start(&run_unit));
    let script = format!("umask {umask} && mount -t tmpfs flm-run /run && exec \"$0\" \"$@\"");
    let mut args = vec![
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ];
    args.extend(run.iter().map(String::as_str));
    let pid = lab.spawn("flowmark", &srv, &args).id();
    lab.wait_log("flowmark", "flowmark: ready");
    let root = PathBuf::from(format!("/proc/{pid}/root/run"));

    // It runs with the unit's capabilities and no others.
    let caps = unit_values(&run_unit, "CapabilityBoundingSet");
    assert!(
        !caps
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN" || c == "CAP_PERFMON"),
        "{caps:?}"
    );
    let bit = |c: &str| match c {
        "CAP_NET_ADMIN" => 12,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("capability {other} of the unit is not known to this test"),
    };
    let granted: u64 = caps.iter().map(|c| 1u64 << bit(c)).sum();
    let pid_s = pid.to_string();
    assert_eq!(
        cap_mask(&pid_s, "CapEff:"),
        granted & cap_mask("self", "CapBnd:")
    );
    assert_eq!(
        cap_mask(&pid_s, "CapBnd:"),
        granted & cap_mask("self", "CapBnd:")
    );

    // The pipe is writable by any local service despite UMask=0077, and
    // the socket belongs to the proxy's group.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let fifo = std::fs::metadata(root.join("flowd")).expect("the unit's pipe");
    assert_eq!(fifo.permissions().mode() & 0o7777, 0o622);
    let sock = std::fs::metadata(root.join("flowmark.sock")).expect("the unit's socket");
    assert_eq!(sock.permissions().mode() & 0o7777, 0o660);
    let www = sh(&["getent", "group", "www-data"]);
    let gid: u32 = www.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(sock.gid(), gid);

    let reply = api(
        &root.join("flowmark.sock"),
        &format!(
            r#"{{"op":"start","src":"{SRV6}","sport":8080,"dst":"{CLI6}","dport":41000,"scitag":206}}"#
        ),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    // The flow map took the label (loading and writing maps worked).
    assert!(reply["flow_label"].as_u64().is_some(), "{reply}");
    std::fs::write(
        root.join("flowd"),
        format!("start tcp {SRV6} 8081 {CLI6} 41001 2 4\n"),
    )
    .expect("the unit's pipe");

    // Both start fireflies reached the peer's collector.
    wait_value("start fireflies counted", Duration::from_secs(10), || {
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
