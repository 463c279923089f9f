//! Property-based fuzzing (proptest, a bounded number of cases per run) of
//! every parser in lbd that takes outside input: liveness reports and
//! their tags (network), control socket request lines (local clients),
//! the status rendering of member-supplied text, and config files.
//! Each must answer any input with a value or an error, never a panic, and
//! what it accepts must satisfy the documented invariants.

use std::collections::BTreeMap;

use lbd::config::Config;
use lbd::control::{self, Request};
use lbd::liveness::{Keys, NodeState, Report, is_generation};
use lbd::status::{MemberLine, NodeStatus, Status, render};
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    }
}

/// JSON shaped like a report, with every field drawn from hostile values.
fn report_json() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        "[0-9a-f]{16}",
        "\\PC{0,20}",
        "[\\x00-\\x1f\u{202e}é]{0,10}",
        Just(String::new()),
    ];
    let state = prop_oneof![
        Just("\"active\"".to_string()),
        Just("\"down\"".to_string()),
        Just("\"draining\"".to_string()),
        "\"\\PC{0,8}\"",
        Just("17".to_string()),
        Just("null".to_string()),
    ];
    let vip_key = prop_oneof![
        Just("198.51.100.10".to_string()),
        Just("2001:db8::10".to_string()),
        Just("2001:0db8::10".to_string()),
        "\\PC{0,12}",
    ];
    (
        any::<i64>(),
        state,
        text,
        proptest::collection::vec((vip_key, any::<bool>()), 0..40),
    )
        .prop_map(|(id, state, generation, vips)| {
            let vips: Vec<String> = vips
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).expect("key")))
                .collect();
            format!(
                "{{\"node_id\":{id},\"state\":{state},\"generation\":{},\"vips\":{{{}}}}}",
                serde_json::to_string(&generation).expect("gen"),
                vips.join(",")
            )
        })
}

fn check_accepted(r: &Report) {
    assert!((1..=1023).contains(&r.node_id));
    assert!(is_generation(&r.generation), "{:?}", r.generation);
    assert!(r.vips.len() <= 32);
    for k in r.vips.keys() {
        let a: std::net::IpAddr = k.parse().expect("VIP key is an address");
        assert_eq!(&a.to_string(), k);
    }
    let again = Report::parse(&serde_json::to_vec(r).expect("json")).expect("round trip");
    assert_eq!(&again, r);
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn report_parse_takes_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(r) = Report::parse(&body) {
            check_accepted(&r);
        }
    }

    #[test]
    fn report_parse_takes_any_report_shaped_json(body in report_json()) {
        if let Ok(r) = Report::parse(body.as_bytes()) {
            check_accepted(&r);
        }
    }

    #[test]
    fn a_tag_verifies_only_for_its_nonce_body_and_secret(
        secret in proptest::collection::vec(any::<u8>(), 16..64),
        nonce in "[0-9a-f]{32}",
        other_nonce in "[0-9a-f]{32}",
        body in proptest::collection::vec(any::<u8>(), 0..256),
        junk_tag in "\\PC{0,80}",
    ) {
        let keys = Keys::new(&[secret.as_slice()]).expect("keys");
        let tag = keys.sign(&nonce, &body);
        prop_assert!(keys.verify(&nonce, &body, &tag));
        prop_assert_eq!(keys.verify(&other_nonce, &body, &tag), other_nonce == nonce);
        let mut flipped = body.clone();
        flipped.push(0);
        prop_assert!(!keys.verify(&nonce, &flipped, &tag));
        // Whatever a peer puts in the header: an answer, no panic.
        prop_assert!(!keys.verify(&nonce, &body, &junk_tag) || junk_tag == tag);
    }

    #[test]
    fn control_request_lines_take_any_text(line in "\\PC{0,200}") {
        if let Ok(req) = control::parse_request(&line) {
            let text = serde_json::to_string(&req).expect("json");
            prop_assert!(control::parse_request(&text).is_ok());
        }
    }

    #[test]
    fn control_request_lines_take_any_request_shaped_json(
        cmd in prop_oneof![Just("status".to_string()), Just("drain".to_string()), Just("undrain".to_string()), Just("table".to_string()), "\\PC{0,10}"],
        vip in proptest::option::of("\\PC{0,40}"),
        extra in proptest::option::of("\\PC{0,10}"),
    ) {
        let mut v = serde_json::json!({"cmd": cmd});
        if let Some(vip) = vip { v["vip"] = vip.into(); }
        if let Some(e) = extra { v[e.as_str()] = 1.into(); }
        if let Ok(Request::Table { vip }) = control::parse_request(&v.to_string()) {
            prop_assert_eq!(Some(vip.as_str()), v["vip"].as_str());
        }
    }

    #[test]
    fn status_render_escapes_any_member_text(
        generation in "\\PC{0,20}|[\\x00-\\x1f\u{202e}é]{0,20}",
        error in "\\PC{0,80}|[\\x00-\\x1f\u{202e}é]{0,20}",
        // A member's state is one of a closed set by then (a report with
        // any other is refused: `report_states_are_a_closed_set`).
        state in prop_oneof![Just(NodeState::Active), Just(NodeState::Draining), Just(NodeState::Down)],
    ) {
        let s = Status {
            node: NodeStatus {
                id: 1,
                state: NodeState::Active,
                reason: "r".into(),
                generation: generation.clone(),
                config: "/etc/lbd/lbd.toml".into(),
                uptime_s: 1,
                last_reload: None,
                dataplane: BTreeMap::new(),
            },
            vips: vec![],
            bgp: vec![],
            members: vec![MemberLine {
                id: 2,
                address: "192.0.2.12".into(),
                local: false,
                up: true,
                state,
                generation: Some(generation),
                generation_matches: false,
                last_seen_unix: Some(1),
                last_error: Some(error),
            }],
            liveness: BTreeMap::new(),
            bgp_refused_unknown: 0,
        };
        let text = render(&s, 2);
        prop_assert!(
            text.chars().all(|c| c == '\n' || c == ' ' || c.is_ascii_graphic()),
            "{:?}", text
        );
    }

    #[test]
    fn config_parse_takes_any_text(text in "\\PC{0,300}") {
        let _ = Config::parse("lbd.toml", &text);
    }
}

#[test]
fn report_states_are_a_closed_set() {
    for (s, ok) in [
        ("active", true),
        ("draining", true),
        ("down", true),
        ("up", false),
        ("ACTIVE", false),
    ] {
        let body = format!(
            "{{\"node_id\":2,\"state\":\"{s}\",\"generation\":\"0123456789abcdef\",\"vips\":{{}}}}"
        );
        assert_eq!(Report::parse(body.as_bytes()).is_ok(), ok, "{s}");
    }
    let r = Report::parse(
        br#"{"node_id":2,"state":"active","generation":"0123456789abcdef","vips":{"198.51.100.10":true}}"#,
    )
    .expect("valid");
    assert_eq!(r.state, NodeState::Active);
    // A non-ASCII generation (which made `lbd status` panic) is refused.
    let bad = r#"{"node_id":2,"state":"active","generation":"ééééééééé","vips":{}}"#;
    assert!(
        Report::parse(bad.as_bytes())
            .expect_err("refused")
            .to_string()
            .contains("\\u{e9}"),
        "the refusal quotes the text escaped"
    );
}
