//! The shipped Prometheus alert rules (configs/prometheus/): they load in
//! Prometheus's own checker, and their unit tests (lbd-alerts.test.yml)
//! pass, among them "VIP not announced by any node" firing. Whether the
//! metric names exist is checked against real scrapes by
//! lbd/tests/monitoring.rs and flowmark/tests/monitoring.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .expect("promtool (Debian's prometheus package; scripts/setup.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_rules() {
    let out = promtool(&["check", "rules", "lbd-alerts.yml"]);
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
}

#[test]
fn rule_unit_tests_pass_and_show_vip_not_announced_firing() {
    let tests = std::fs::read_to_string(prometheus_dir().join("lbd-alerts.test.yml"))
        .expect("lbd-alerts.test.yml");
    // The unit test expects the alert, with its labels, once both nodes
    // withdrew the VIP for longer than `for:`.
    assert!(
        tests.contains(
            "alertname: LbdVipNotAnnounced\n        exp_alerts:\n          - exp_labels:"
        )
    );
    let out = promtool(&["test", "rules", "lbd-alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn a_broken_vip_rule_fails_its_unit_test() {
    // The unit test can fail: with the VIP rule's threshold wrong, the
    // expected "VIP not announced" alert does not fire and promtool says so.
    let dir = std::env::temp_dir().join(format!("lbd-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rules = std::fs::read_to_string(prometheus_dir().join("lbd-alerts.yml")).expect("rules");
    let broken = rules.replace(
        "max by (vip) (lbd_vip_announced) == 0",
        "max by (vip) (lbd_vip_announced) == 2",
    );
    assert_ne!(rules, broken);
    std::fs::write(dir.join("lbd-alerts.yml"), broken).expect("write");
    std::fs::copy(
        prometheus_dir().join("lbd-alerts.test.yml"),
        dir.join("lbd-alerts.test.yml"),
    )
    .expect("copy");
    let out = Command::new("promtool")
        .args(["test", "rules", "lbd-alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("alertname: LbdVipNotAnnounced"), "{text}");
}
