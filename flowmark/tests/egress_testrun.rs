//! The tc egress program through BPF_PROG_TEST_RUN, Cilium-style: build a
//! packet, set the maps, run, compare the output bytes and the verdict.
use aya::programs::{TestRun, TestRunOptions};
use flowmark::marker::Marker;
use flowmark_common::{FlowKey, encode_label, entropy_of, with_entropy};

const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// Ethernet + IPv6 (traffic class 0xab, label `label`) + TCP or UDP header.
fn v6_packet(proto: u8, sport: u16, dport: u16, label: u32) -> Vec<u8> {
    let mut p = vec![0u8; 14];
    p[12..14].copy_from_slice(&[0x86, 0xdd]);
    let first: u32 = (6 << 28) | (0xab << 20) | label;
    p.extend_from_slice(&first.to_be_bytes());
    p.extend_from_slice(&20u16.to_be_bytes());
    p.push(proto);
    p.push(64);
    p.extend_from_slice(&SRC6);
    p.extend_from_slice(&DST6);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0u8; 16]);
    p
}

fn v4_packet() -> Vec<u8> {
    let mut p = vec![0u8; 14];
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    p.extend_from_slice(&[
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
    ]);
    p.extend_from_slice(&[0x1f, 0x90, 0xa4, 0x10]);
    p.extend_from_slice(&[0u8; 16]);
    p
}

fn key(proto: u8, sport: u16, dport: u16) -> FlowKey {
    FlowKey::new(SRC6, DST6, sport, dport, proto)
}

fn run(m: &mut Marker, input: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; input.len() + 64];
    let opts = TestRunOptions {
        data_in: Some(input),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let r = m.program().unwrap().test_run(opts).expect("test run");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

fn label_of(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[14], p[15], p[16], p[17]]) & 0xFFFFF
}

#[test]
fn egress_program_table() {
    let mut m = Marker::load().expect("load (needs root)");
    let flow_label = with_entropy(encode_label(3, 14), 0b10110);
    m.set_flow(&key(6, 8080, 41000), flow_label).unwrap();
    let rule = encode_label(2, 4);
    m.add_port_rule(9000, rule).unwrap();

    let cases: Vec<(&str, Vec<u8>, Option<u32>)> = vec![
        (
            "registered TCP flow",
            v6_packet(6, 8080, 41000, 0x12345),
            Some(flow_label),
        ),
        (
            "registered flow, other protocol",
            v6_packet(17, 8080, 41000, 0),
            None,
        ),
        (
            "unregistered IPv6 flow",
            v6_packet(6, 8080, 41001, 0x54321),
            None,
        ),
        (
            "reply direction is another flow",
            v6_packet(6, 41000, 8080, 0),
            None,
        ),
        (
            "local-port rule",
            v6_packet(17, 9000, 5000, 0),
            Some(u32::MAX),
        ),
        ("IPv4", v4_packet(), None),
        ("ICMPv6", v6_packet(58, 0, 0, 7), None),
        (
            "truncated IPv6",
            v6_packet(6, 8080, 41000, 0)[..56].to_vec(),
            None,
        ),
    ];
    for (name, input, want) in cases {
        let (verdict, out) = run(&mut m, &input);
        assert_eq!(verdict, 0, "{name}: TC_ACT_OK");
        assert_eq!(out.len(), input.len(), "{name}: length");
        match want {
            None => assert_eq!(out, input, "{name}: must be untouched"),
            Some(u32::MAX) => {
                // A rule: its semantic bits, entropy from the 5-tuple, stable.
                assert_eq!(
                    label_of(&out) & flowmark_common::SEMANTIC_MASK,
                    rule,
                    "{name}"
                );
                let again = run(&mut m, &input).1;
                assert_eq!(
                    label_of(&again),
                    label_of(&out),
                    "{name}: entropy must be stable"
                );
                assert_eq!(out[..14], input[..14]);
                assert_eq!(out[18..], input[18..]);
            }
            Some(l) => {
                assert_eq!(label_of(&out), l, "{name}: label");
                assert_eq!(entropy_of(label_of(&out)), 0b10110);
                // Version and traffic class kept, nothing else changed.
                assert_eq!(out[14] >> 4, 6);
                assert_eq!(
                    (u32::from_be_bytes([out[14], out[15], out[16], out[17]]) >> 20) & 0xff,
                    0xab
                );
                assert_eq!(out[..14], input[..14]);
                assert_eq!(out[18..], input[18..]);
            }
        }
    }
    let stats: std::collections::HashMap<_, _> = m.stats().into_iter().collect();
    assert_eq!(stats["marked_flow"], 1);
    assert_eq!(stats["marked_port"], 2);
    assert_eq!(stats["ipv4"], 1);
    assert!(stats["unmarked_v6"] >= 3);
    assert_eq!(stats["truncated"], 1);
    // The kernel counted the marked packet against its flow.
    let v = m.flow(&key(6, 8080, 41000)).unwrap();
    assert_eq!(
        (v.packets, v.bytes),
        (1, v6_packet(6, 8080, 41000, 0).len() as u64)
    );
}

/// The per-CPU flow cache and the remote-port filter in front of the flow
/// map must never outlive the flow map: a changed label, a removed flow and
/// a second flow on the same remote port behave as with the map alone, and
/// the counters add up across cached and uncached runs.
#[test]
fn flow_cache_and_port_filter_follow_the_flow_map() {
    let mut m = Marker::load().expect("load (needs root)");
    let first = with_entropy(encode_label(3, 14), 1);
    let second = with_entropy(encode_label(2, 4), 2);
    let (a, b) = (key(6, 8080, 41000), key(6, 8081, 41000));
    let (pa, pb) = (v6_packet(6, 8080, 41000, 0), v6_packet(6, 8081, 41000, 0));
    m.set_flow(&a, first).unwrap();
    for _ in 0..3 {
        assert_eq!(label_of(&run(&mut m, &pa).1), first, "cached label");
    }
    // Same remote port, not registered: passes the filter, misses the map.
    assert_eq!(run(&mut m, &pb).1, pb, "unregistered flow on a shared port");
    let v = m.flow(&a).unwrap();
    assert_eq!(
        (v.packets, v.bytes),
        (3, 3 * pa.len() as u64),
        "counters of the cache slots and the map add up"
    );

    m.set_flow(&a, second).unwrap();
    assert_eq!(label_of(&run(&mut m, &pa).1), second, "a new label wins");

    m.set_flow(&b, first).unwrap();
    assert_eq!(label_of(&run(&mut m, &pb).1), first);
    let gone = m.remove_flow(&a).unwrap();
    assert_eq!(gone.label, second);
    assert_eq!(gone.packets, 1, "the re-registered flow counts afresh");
    assert_eq!(run(&mut m, &pa).1, pa, "a removed flow is unmarked at once");
    // The other flow on remote port 41000 keeps its filter bit.
    assert_eq!(
        label_of(&run(&mut m, &pb).1),
        first,
        "the shared port stays open"
    );
    m.remove_flow(&b).unwrap();
    assert_eq!(run(&mut m, &pb).1, pb);
    let stats: std::collections::HashMap<_, _> = m.stats().into_iter().collect();
    assert_eq!(stats["marked_flow"], 6);
    assert_eq!(stats["unmarked_v6"], 3);
}
