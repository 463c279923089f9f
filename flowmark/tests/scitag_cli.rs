//! `flowmark scitag` and `flowmark registry` as a user runs them.
use std::process::Command;

fn flowmark(args: &[&str]) -> (i32, serde_json::Value, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_flowmark"))
        .args(args)
        .output()
        .expect("run flowmark");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (
        o.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn scitag_206_prints_cms_analysis_input_and_label() {
    let (code, j, _) = flowmark(&["scitag", "206"]);
    assert_eq!(code, 0);
    assert_eq!(j["value"], 206);
    assert_eq!(j["experiment"], 3);
    assert_eq!(j["activity"], 14);
    assert_eq!(j["flow_label"], 196664);
    assert_eq!(j["experiment_name"], "cms");
    assert_eq!(j["activity_name"], "Analysis Input");
}

#[test]
fn scitag_reverse_by_id_and_by_name() {
    let (code, j, _) = flowmark(&["scitag", "--exp", "3", "--act", "14"]);
    assert_eq!((code, j["value"].as_u64()), (0, Some(206)));
    let (code, j, _) = flowmark(&["scitag", "--exp", "atlas", "--act", "Data Consolidation"]);
    assert_eq!((code, j["value"].as_u64()), (0, Some(2 << 6 | 4)));
}

#[test]
fn scitag_experiment_512_has_null_label_and_reason() {
    let (code, j, _) = flowmark(&["scitag", "32769"]);
    assert_eq!(code, 0);
    assert_eq!(j["experiment"], 512);
    assert!(j["flow_label"].is_null());
    assert!(j["reason"].as_str().unwrap_or("").contains("511"), "{j}");
}

#[test]
fn scitag_invalid_value_exits_2_with_a_message() {
    for bad in ["64", "65536", "abc", "-1", ""] {
        let (code, _, err) = flowmark(&["scitag", bad]);
        assert_eq!(code, 2, "{bad}");
        assert!(err.contains("flowmark scitag"), "{bad}: {err}");
    }
    let (code, _, _) = flowmark(&["scitag", "--exp", "1024", "--act", "1"]);
    assert_eq!(code, 2);
}

#[test]
fn registry_refresh_from_file_checks_and_stores() {
    let dir = std::env::temp_dir().join(format!("flm-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.json");
    std::fs::write(
        &good,
        r#"{"version": 1, "experiments": [{"expName": "newexp", "expId": 42, "activities": [{"activityName": "Bulk", "activityId": 5}]}]}"#,
    )
    .unwrap();
    let out = dir.join("registry.json");
    let o = Command::new(env!("CARGO_BIN_EXE_flowmark"))
        .args([
            "registry",
            "refresh",
            good.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, j, _) = flowmark(&[
        "--registry",
        out.to_str().unwrap(),
        "scitag",
        "--exp",
        "newexp",
        "--act",
        "bulk",
    ]);
    assert_eq!(code, 0);
    assert_eq!(j["value"], 42 << 6 | 5);
    assert_eq!(j["experiment_name"], "newexp");

    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"version": 2, "experiments": []}"#).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_flowmark"))
        .args([
            "registry",
            "refresh",
            bad.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("schema"));
    // The stored registry is untouched by a refused refresh.
    let (_, j, _) = flowmark(&["--registry", out.to_str().unwrap(), "scitag", "2693"]);
    assert_eq!(j["experiment_name"], "newexp");
    let _ = std::fs::remove_dir_all(&dir);
}
