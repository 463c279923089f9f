//! Property tests for every parser of outside input: arbitrary input never
//! panics, and well-formed input round-trips.
use flowmark::{
    firefly,
    flow::{Verb, parse_pipe_line},
    registry::Registry,
    scitag::{Extracted, SciTag, Source, extract},
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn scitag_parse_never_panics_and_is_exact(s in ".{0,30}") {
        if let Ok(t) = SciTag::parse(&s) {
            prop_assert_eq!(t.value().to_string(), s.trim().trim_start_matches('0').to_string());
            prop_assert!((65..=65535).contains(&t.value()));
        }
    }

    #[test]
    fn any_valid_value_parses_back(v in 65u32..=65535, pad in "[ \t]{0,2}") {
        let t = SciTag::parse(&format!("{pad}{v}{pad}")).unwrap();
        prop_assert_eq!(t.value(), v);
    }

    #[test]
    fn extraction_follows_precedence(
        a in proptest::option::of(65u32..=65535),
        b in proptest::option::of(65u32..=65535),
        q in proptest::option::of(65u32..=65535),
    ) {
        let (sa, sb) = (a.map(|v| v.to_string()), b.map(|v| v.to_string()));
        let mut headers = vec![("Host", "x")];
        if let Some(v) = &sb { headers.push(("TransferHeaderSciTag", v)); }
        if let Some(v) = &sa { headers.push(("scitag", v)); }
        let query = q.map(|v| format!("x=1&scitag.flow={v}"));
        let got = extract(headers, query.as_deref());
        let want = match (a, b, q) {
            (Some(v), _, _) => Extracted::Tag(SciTag::from_value(v as u64).unwrap(), Source::Header),
            (None, Some(v), _) => Extracted::Tag(SciTag::from_value(v as u64).unwrap(), Source::TransferHeader),
            (None, None, Some(v)) => Extracted::Tag(SciTag::from_value(v as u64).unwrap(), Source::Query),
            _ => Extracted::Absent,
        };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn extraction_never_panics(name in ".{0,20}", value in ".{0,20}", query in ".{0,40}") {
        let _ = extract([(name.as_str(), value.as_str())], Some(&query));
    }

    #[test]
    fn pipe_parser_never_panics(line in ".{0,200}") {
        let _ = parse_pipe_line(&line);
    }

    #[test]
    fn pipe_lines_round_trip(
        start in any::<bool>(),
        v6 in any::<bool>(),
        a in any::<[u8; 16]>(),
        b in any::<[u8; 16]>(),
        sport in 1u16..,
        dport in 1u16..,
        exp in 0u32..5000,
        act in 0u32..200,
    ) {
        let (src, dst) = if v6 {
            (std::net::Ipv6Addr::from(a).to_string(), std::net::Ipv6Addr::from(b).to_string())
        } else {
            (std::net::Ipv4Addr::new(192, 0, 2, a[0]).to_string(), std::net::Ipv4Addr::new(198, 51, 100, b[0]).to_string())
        };
        let verb = if start { "start" } else { "end" };
        let line = format!("{verb} tcp {src} {sport} {dst} {dport} {exp} {act}");
        match parse_pipe_line(&line) {
            Ok(p) => {
                prop_assert_eq!(p.verb, if start { Verb::Start } else { Verb::End });
                prop_assert_eq!(p.flow.src.port(), sport);
                prop_assert_eq!(p.flow.dst.port(), dport);
                prop_assert_eq!(p.tag, Some((exp, act)));
            }
            // Random IPv6 addresses may be unspecified, multicast or v4-mapped.
            Err(e) => prop_assert!(v6, "{line}: {e:?}"),
        }
    }

    #[test]
    fn firefly_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = firefly::parse(&data);
    }

    #[test]
    fn firefly_parser_never_panics_on_json_like(s in "(<[0-9]{1,3}>1 )?\\{[\"a-z:,{} 0-9\\-\\[\\]]{0,200}") {
        let _ = firefly::parse(s.as_bytes());
    }

    #[test]
    fn registry_parser_never_panics(s in "\\{[\"a-zA-Z:,{} 0-9\\[\\]]{0,300}") {
        let _ = Registry::parse(&s);
    }
}

/// The API handler answers every line with one JSON object and never
/// panics, with a stand-in daemon task that answers every request.
#[test]
fn api_handler_answers_any_line() {
    use flowmark::{api::handle, daemon::Request};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel::<Request>(16);
        tokio::spawn(stand_in_daemon(rx));
        let registry = Registry::builtin();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 1000, ..Default::default() });
        use proptest::{strategy::ValueTree, string::string_regex};
        let any_text = string_regex(".{0,100}").unwrap();
        let json_like = string_regex(
            "\\{\"op\":\"(start|end|status|x)\"(,\"(src|dst|sport|dport|scitag|headers|query|experiment|activity|sent)\":(\"[0-9a-f:.]{0,12}\"|[0-9]{1,6}|\\{\\}|null))*\\}",
        )
        .unwrap();
        let mut cases = vec![];
        for i in 0..1000 {
            let s = if i % 2 == 0 { &any_text } else { &json_like };
            cases.push(s.new_tree(&mut runner).unwrap().current());
        }
        for line in cases {
            let reply = handle(&line, &registry, &tx).await;
            assert!(reply["ok"].is_boolean(), "{line:?} -> {reply}");
        }
        let good = r#"{"op":"start","src":"2001:db8::1","sport":443,"dst":"2001:db8::2","dport":"5000","headers":{"SciTag":"206"}}"#;
        assert_eq!(handle(good, &registry, &tx).await["ok"], true);
        let unmarked = r#"{"op":"start","src":"2001:db8::1","sport":443,"dst":"2001:db8::2","dport":5000,"headers":{"SciTag":"9"}}"#;
        assert_eq!(handle(unmarked, &registry, &tx).await["marked"], false);
    });
}

// Fuzzing (issue 12): structure-aware inputs for the network and local
// parsers, a bounded number of cases each (a few seconds in all), run by
// `make test`. PROPTEST_CASES raises the count for a longer session.

/// Any JSON value, nested a few levels, with awkward numbers and strings.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,40}".prop_map(Value::String),
        "[0-9a-f:.\\[\\]]{0,45}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z-]{1,12}", inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid firefly (framed or bare) with any context ids and state.
fn valid_firefly() -> impl Strategy<Value = (Vec<u8>, i64, i64)> {
    (
        prop_oneof![0i64..520, any::<i64>()],
        prop_oneof![0i64..70, any::<i64>()],
        0usize..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(exp, act, state, framed, v6)| {
            let flow = if v6 {
                flowmark::flow::FlowId::parse("udp", "2001:db8::1", "1", "2001:db8::2", "2")
            } else {
                flowmark::flow::FlowId::parse("tcp", "192.0.2.1", "443", "192.0.2.2", "4000")
            }
            .unwrap();
            let state = [
                firefly::State::Start,
                firefly::State::Ongoing,
                firefly::State::End,
            ][state];
            let now = std::time::SystemTime::now();
            let usage = Some(firefly::Usage {
                sent: Some(5),
                received: None,
            });
            let mut msg = firefly::message(
                state,
                &flow,
                SciTag::new(1, 2).unwrap(),
                "f",
                now,
                now,
                usage,
            );
            msg["context"]["experiment-id"] = serde_json::json!(exp);
            msg["context"]["activity-id"] = serde_json::json!(act);
            let bytes = if framed {
                firefly::frame(&msg, "h", "a", now).into_bytes()
            } else {
                msg.to_string().into_bytes()
            };
            (bytes, exp, act)
        })
}

/// A byte string with a few random edits (flip, insert, delete).
fn mutated(base: Vec<u8>, edits: Vec<(usize, u8, u8)>) -> Vec<u8> {
    let mut d = base;
    for (at, byte, op) in edits {
        if d.is_empty() {
            d.push(byte);
            continue;
        }
        let at = at % d.len();
        match op % 3 {
            0 => d[at] ^= byte | 1,
            1 => d.insert(at, byte),
            _ => {
                d.remove(at);
            }
        }
    }
    d
}

/// The label values of every series in a Prometheus text rendering.
fn label_values(text: &str, label: &str) -> Vec<String> {
    let key = format!("{label}=\"");
    let mut out = vec![];
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        for (i, _) in l.match_indices(key.as_str()) {
            // Only a whole label name: preceded by `{` or `,`.
            if i > 0 && !l[..i].ends_with(['{', ',']) {
                continue;
            }
            let rest = &l[i + key.len()..];
            out.push(rest[..rest.find('"').unwrap_or(rest.len())].to_string());
        }
    }
    out
}

/// 300 cases per fuzz target in `make test`; PROPTEST_CASES=N for more.
fn fuzz_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    /// Any valid firefly, and any small corruption of one, through the
    /// parser and then the collector: no panic, and every label value the
    /// collector emits is a registry name or id, "unknown" or "other",
    /// with at most `max_series` label sets (plus "other").
    #[test]
    fn collector_labels_stay_in_the_registry(
        fireflies in proptest::collection::vec((valid_firefly(), proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..3)), 1..40),
        max_series in 1usize..8,
    ) {
        use flowmark::collector::{Collector, Limits};
        let registry = Registry::builtin();
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut c = Collector::new(registry.clone(), Limits { max_series, allow_from: vec![], ..Limits::default() });
        metrics::with_local_recorder(&recorder, || {
            for ((bytes, exp, act), edits) in &fireflies {
                let clean = edits.is_empty();
                let d = mutated(bytes.clone(), edits.clone());
                if let Ok(v) = firefly::parse(&d) {
                    let r = c.record(&v);
                    if clean {
                        let ok = (0..=511).contains(exp) && (0..=63).contains(act);
                        assert_eq!(r.is_ok(), ok, "{exp} {act}: {r:?}");
                    }
                }
            }
        });
        prop_assert!(c.series() <= max_series);
        let text = handle.render();
        let mut allowed: std::collections::BTreeSet<String> =
            ["unknown", "other"].iter().map(|s| s.to_string()).collect();
        for (id, e) in &registry.experiments {
            allowed.insert(id.to_string());
            allowed.insert(e.name.clone());
            for (a, name) in &e.activities {
                allowed.insert(a.to_string());
                allowed.insert(name.clone());
            }
        }
        for label in ["experiment", "activity", "experiment_id", "activity_id"] {
            for v in label_values(&text, label) {
                prop_assert!(allowed.contains(&v), "{label}={v:?}\n{text}");
            }
        }
        // The fuzzed fireflies' application ("f") is no TPC agent.
        for v in label_values(&text, "transfer") {
            prop_assert!(v == "plain", "transfer={v:?}\n{text}");
        }
        let sets: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("flowmark_collector_fireflies_total{"))
            .map(|l| l.split(",state=").next().unwrap_or(l).to_string())
            .collect();
        prop_assert!(sets.len() <= max_series + 1, "{sets:?}");
    }

    /// Corrupted fireflies: the parser answers, never panics.
    #[test]
    fn firefly_parser_survives_corruption(
        (bytes, _, _) in valid_firefly(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        let _ = firefly::parse(&mutated(bytes, edits));
    }

    /// The API handler with any JSON object (known keys with values of any
    /// type, unknown keys, nesting) answers one object with a boolean "ok".
    #[test]
    fn api_handler_answers_any_json(
        op in prop_oneof![
            Just("start".to_string()),
            Just("end".to_string()),
            Just("status".to_string()),
            ".{0,8}",
        ],
        fields in proptest::collection::btree_map(
            prop_oneof![
                Just("proto"), Just("src"), Just("sport"), Just("dst"), Just("dport"),
                Just("scitag"), Just("experiment"), Just("activity"), Just("headers"),
                Just("query"), Just("application"), Just("sent"), Just("received"), Just("zz"),
            ],
            any_json(),
            0..8,
        ),
    ) {
        let mut req = serde_json::Map::new();
        req.insert("op".into(), serde_json::json!(op));
        for (k, v) in fields {
            req.insert(k.into(), v);
        }
        let line = serde_json::Value::Object(req).to_string();
        let reply = api_reply(&line);
        prop_assert!(reply["ok"].is_boolean(), "{line} -> {reply}");
    }

    /// The pipe reader over any byte stream (lines of any length, any
    /// bytes, valid lines among them): it reads to the end, never panics,
    /// and registers exactly the valid start lines.
    #[test]
    fn pipe_reader_survives_any_stream(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                (1u16..65535, 1u32..600, 0u32..80).prop_map(|(p, e, a)|
                    format!("start tcp 2001:db8::1 {p} 2001:db8::2 80 {e} {a}\n").into_bytes()),
                Just(vec![b'x'; 3000]),
                Just(b"\n".to_vec()),
            ],
            0..20,
        ),
    ) {
        let input: Vec<u8> = chunks.concat();
        let registry = Registry::builtin();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let starts = rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
            flowmark::pipe::serve(&input[..], registry.clone(), tx).await;
            let mut n = 0;
            while let Ok(r) = rx.try_recv() {
                if let flowmark::daemon::Request::Start { flow, tag, .. } = r {
                    prop_assert!(registry.experiment_name(tag.experiment).is_some());
                    prop_assert!(flow.src.port() != 0);
                    n += 1;
                }
            }
            Ok(n)
        })?;
        // No more starts than lines.
        prop_assert!(starts <= input.iter().filter(|b| **b == b'\n').count() + 1);
    }
}

/// Answers every request `{"ok":true}` until the senders are gone.
async fn stand_in_daemon(mut rx: tokio::sync::mpsc::Receiver<flowmark::daemon::Request>) {
    use flowmark::daemon::Request;
    while let Some(r) = rx.recv().await {
        let ok = serde_json::json!({"ok": true});
        match r {
            Request::Start { reply, .. } | Request::End { reply, .. } => {
                if let Some(r) = reply {
                    let _ = r.send(ok);
                }
            }
            Request::Status { reply } => {
                let _ = reply.send(ok);
            }
        }
    }
}

/// One API request line to its reply, with a stand-in daemon task.
fn api_reply(line: &str) -> serde_json::Value {
    use flowmark::daemon::Request;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel::<Request>(1);
        let daemon = tokio::spawn(stand_in_daemon(rx));
        let reply = flowmark::api::handle(line, &Registry::builtin(), &tx).await;
        drop(tx);
        let _ = daemon.await;
        reply
    })
}
