//! The shipped deployment files: the systemd unit passes
//! `systemd-analyze verify` (and a misspelt key is caught), the example
//! config passes `storage-front check-config`, a bad one is refused with
//! exit 2 and the key named.
use std::process::Command;

const CONFIGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/storage-front/");
const BIN: &str = env!("CARGO_BIN_EXE_storage-front");

/// `systemd-analyze verify` of the unit; www-data may not exist on a build
/// machine, the rest must be clean.
fn verify(dir: &std::path::Path, text: &str) -> Result<(), String> {
    lab::systemd::verify(dir, "storage-front.service", text, &["www-data"])
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = std::env::temp_dir().join(format!("sf-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(format!("{CONFIGS}storage-front.service"))
        .unwrap()
        .replace("/usr/bin/storage-front", BIN);
    verify(&dir, &text).unwrap_or_else(|e| panic!("systemd-analyze verify:\n{e}"));
    let broken = text.replace("NoNewPrivileges=", "NoNewPrivilege=");
    assert!(
        verify(&dir, &broken).is_err(),
        "a misspelt key went unnoticed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_accepts_the_example_and_names_bad_keys() {
    let o = Command::new(BIN)
        .args(["check-config", &format!("{CONFIGS}storage-front.toml")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bad = std::env::temp_dir().join(format!("sf-bad-{}.toml", std::process::id()));
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:8091\"\nroot = \"/srv\"\nidle_timeout_ms = 5\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "{}: idle_timeout_ms: 5 is outside 100..=3600000",
            bad.display()
        )
    );
    let _ = std::fs::remove_file(&bad);
}
