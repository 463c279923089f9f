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
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Request>(16);
        tokio::spawn(async move {
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
        });
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
