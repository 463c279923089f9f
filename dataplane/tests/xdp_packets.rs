//! The XDP forwarder, case by case, through BPF_PROG_TEST_RUN (repeat 1) in
//! the real kernel: each case builds a packet, sets the VIP tables, runs the
//! program and compares the verdict and every output byte (Cilium's
//! bpf/tests style). Expected encapsulations are built independently with
//! etherparse.
//!
//! Each test gets its own network namespace: a veth `up0` with the node's
//! underlay addresses and permanent neighbours for the other nodes, so
//! bpf_fib_lookup resolves real next hops, and real sockets for the
//! "local connection" cases.
use std::net::{IpAddr, SocketAddr};

use anyhow::Result;
use dataplane_common::{ENCAP_GUE, ENCAP_IPIP, HOP_FIRST, HOP_SECOND, NO_HOP};
use etherparse::PacketBuilder;
use lab::{bed::*, packets::*};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const OTHER4: [u8; 4] = [203, 0, 113, 99];

// ---------- the cases ----------

enum Expect {
    /// Verdict and exact output bytes.
    Out(u32, Vec<u8>),
    Drop,
}

struct Case {
    name: &'static str,
    tables: (u16, u16),
    input: Vec<u8>,
    expect: Expect,
    /// Counter that must grow by exactly one.
    counter: &'static str,
}

fn check(bed: &mut Bed, cases: Vec<Case>) -> Result<()> {
    let mut failures = Vec::new();
    for c in cases {
        bed.tables(c.tables.0, c.tables.1)?;
        let before = bed.all_counters()?;
        let Run { action, out, .. } = bed.run(&c.input)?;
        let after = bed.all_counters()?;
        let grew = after[c.counter] - before[c.counter];
        let ok = match &c.expect {
            Expect::Out(a, bytes) => action == *a && out == *bytes,
            Expect::Drop => action == XDP_DROP,
        };
        if !ok || grew != 1 {
            let want = match &c.expect {
                Expect::Out(a, b) => format!("action {a}, {} bytes {:02x?}", b.len(), b),
                Expect::Drop => "XDP_DROP".into(),
            };
            failures.push(format!(
                "{}: got action {action}, {} bytes {:02x?}; want {want}; counter {} grew by {grew}",
                c.name,
                out.len(),
                out,
                c.counter
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
    Ok(())
}

fn forwarding_cases(gue: bool) -> Vec<Case> {
    let syn = tcp4(CLIENT4, 40000, VIP4, 80, Tcp::Syn, b"");
    let ack = tcp4(CLIENT4, 40001, VIP4, 80, Tcp::Ack, b"data");
    let h_ack = flow4(CLIENT4, 40001, VIP4, 80, 6);
    let h_syn = flow4(CLIENT4, 40000, VIP4, 80, 6);
    let syn6 = tcp6(CLIENT6, 40002, VIP6, 80, Tcp::Syn, b"");
    let h_syn6 = flow6(CLIENT6, 40002, VIP6, 80, 6);
    let udp = udp4(CLIENT4, 5353, VIP4, 53, b"query");
    let h_udp = flow4(CLIENT4, 5353, VIP4, 53, 17);
    let mut vlan = Vec::new();
    PacketBuilder::ethernet2(MAC_ROUTER, MAC_SELF)
        .single_vlan(etherparse::VlanId::try_new(100).unwrap())
        .ipv4(CLIENT4, VIP4, 64)
        .tcp(40003, 80, 1, 64000)
        .syn()
        .write(&mut vlan, b"")
        .unwrap();
    let h_vlan = flow4(CLIENT4, 40003, VIP4, 80, 6);
    vec![
        Case {
            name: "local SYN stays",
            tables: (SELF, NO_HOP),
            input: syn.clone(),
            expect: Expect::Out(XDP_PASS, syn.clone()),
            counter: "pass_local",
        },
        Case {
            // No listener in the bed: the SYN goes where the bucket's later
            // packets go (syn_without_listener_goes_to_the_fallback has
            // the cases with a listener).
            name: "local SYN without listener, second hop: to the second hop",
            tables: (SELF, N2),
            input: syn.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(
                    &syn,
                    Underlay::V4(SELF4, N2_4),
                    gue,
                    HOP_SECOND,
                    h_syn,
                    MAC_N2,
                ),
            ),
            counter: "syn_to_fallback",
        },
        Case {
            name: "remote owner, IPv4 underlay",
            tables: (N2, NO_HOP),
            input: syn.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(
                    &syn,
                    Underlay::V4(SELF4, N2_4),
                    gue,
                    HOP_FIRST,
                    h_syn,
                    MAC_N2,
                ),
            ),
            counter: "fwd_first_hop",
        },
        Case {
            name: "remote owner, IPv6 underlay, IPv4 inner",
            tables: (N3, NO_HOP),
            input: ack.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(
                    &ack,
                    Underlay::V6(SELF6, N3_6),
                    gue,
                    HOP_FIRST,
                    h_ack,
                    MAC_N3,
                ),
            ),
            counter: "fwd_first_hop",
        },
        Case {
            name: "remote owner, IPv6 underlay, IPv6 inner",
            tables: (N3, NO_HOP),
            input: syn6.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(
                    &syn6,
                    Underlay::V6(SELF6, N3_6),
                    gue,
                    HOP_FIRST,
                    h_syn6,
                    MAC_N3,
                ),
            ),
            counter: "fwd_first_hop",
        },
        Case {
            name: "remote owner, IPv4 underlay, IPv6 inner",
            tables: (N2, NO_HOP),
            input: syn6.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(
                    &syn6,
                    Underlay::V4(SELF4, N2_4),
                    gue,
                    HOP_FIRST,
                    h_syn6,
                    MAC_N2,
                ),
            ),
            counter: "fwd_first_hop",
        },
        Case {
            name: "VLAN tag kept when forwarding",
            tables: (N2, NO_HOP),
            input: vlan.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(
                    &vlan,
                    Underlay::V4(SELF4, N2_4),
                    gue,
                    HOP_FIRST,
                    h_vlan,
                    MAC_N2,
                ),
            ),
            counter: "fwd_first_hop",
        },
        Case {
            name: "non-SYN without local socket goes to the second hop",
            tables: (SELF, N2),
            input: ack.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(
                    &ack,
                    Underlay::V4(SELF4, N2_4),
                    gue,
                    HOP_SECOND,
                    h_ack,
                    MAC_N2,
                ),
            ),
            counter: "fwd_second_hop",
        },
        Case {
            name: "non-SYN stays when the bucket has no second hop",
            tables: (SELF, NO_HOP),
            input: ack.clone(),
            expect: Expect::Out(XDP_PASS, ack.clone()),
            counter: "pass_local",
        },
        Case {
            name: "UDP stays at the first hop",
            tables: (SELF, N2),
            input: udp.clone(),
            expect: Expect::Out(XDP_PASS, udp.clone()),
            counter: "pass_local",
        },
        Case {
            name: "UDP to a remote owner",
            tables: (N2, NO_HOP),
            input: udp.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(
                    &udp,
                    Underlay::V4(SELF4, N2_4),
                    gue,
                    HOP_FIRST,
                    h_udp,
                    MAC_N2,
                ),
            ),
            counter: "fwd_first_hop",
        },
        Case {
            name: "owner without underlay address is dropped",
            tables: (N_UNKNOWN, NO_HOP),
            input: syn.clone(),
            expect: Expect::Drop,
            counter: "drop_no_node",
        },
    ]
}

fn decap_cases(gue: bool) -> Vec<Case> {
    let ack = tcp4(CLIENT4, 40011, VIP4, 80, Tcp::Ack, b"hello");
    let h = flow4(CLIENT4, 40011, VIP4, 80, 6);
    let hop1 = arriving(&ack, Underlay::V4(N2_4, SELF4), gue, HOP_FIRST, h);
    let hop2 = arriving(&ack, Underlay::V4(N2_4, SELF4), gue, HOP_SECOND, h);
    let syn = tcp4(CLIENT4, 40014, VIP4, 80, Tcp::Syn, b"");
    let h_syn = flow4(CLIENT4, 40014, VIP4, 80, 6);
    let hop1_syn = arriving(&syn, Underlay::V4(N2_4, SELF4), gue, HOP_FIRST, h_syn);
    let syn6 = tcp6(CLIENT6, 40012, VIP6, 80, Tcp::Syn, b"");
    let h6 = flow6(CLIENT6, 40012, VIP6, 80, 6);
    let hop1_v6 = arriving(&syn6, Underlay::V6(N3_6, SELF6), gue, HOP_FIRST, h6);
    let not_vip = tcp4(CLIENT4, 40013, OTHER4, 80, Tcp::Ack, b"");
    let h_nv = flow4(CLIENT4, 40013, OTHER4, 80, 6);
    let enc_not_vip = arriving(&not_vip, Underlay::V4(N2_4, SELF4), gue, HOP_FIRST, h_nv);
    vec![
        Case {
            name: "decap, owner is us: to the stack",
            tables: (SELF, NO_HOP),
            input: hop1.clone(),
            expect: Expect::Out(XDP_PASS, decapsulated(&hop1, &ack)),
            counter: "decap",
        },
        Case {
            name: "decap over IPv6 underlay, IPv6 inner",
            tables: (SELF, NO_HOP),
            input: hop1_v6.clone(),
            expect: Expect::Out(XDP_PASS, decapsulated(&hop1_v6, &syn6)),
            counter: "decap",
        },
        Case {
            name: "decap, first hop without socket: on to the second hop",
            tables: (SELF, N2),
            input: hop1.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(&ack, Underlay::V4(SELF4, N2_4), gue, HOP_SECOND, h, MAC_N2),
            ),
            counter: "fwd_second_hop",
        },
        Case {
            name: "decap, marked second hop: never forwarded again",
            tables: (N2, N3),
            input: hop2.clone(),
            expect: Expect::Out(XDP_PASS, decapsulated(&hop2, &ack)),
            counter: "pass_local",
        },
        Case {
            name: "decap, tables mid-update name another first hop: there, marked second",
            tables: (N2, NO_HOP),
            input: hop1.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(&ack, Underlay::V4(SELF4, N2_4), gue, HOP_SECOND, h, MAC_N2),
            ),
            counter: "fwd_second_hop",
        },
        Case {
            // No listener in the bed (the listener test has the SYN that
            // stays): where our table says, marked second hop.
            name: "decap, SYN without listener while tables disagree: to our first hop",
            tables: (N2, NO_HOP),
            input: hop1_syn.clone(),
            expect: Expect::Out(
                XDP_TX,
                encapsulated(
                    &syn,
                    Underlay::V4(SELF4, N2_4),
                    gue,
                    HOP_SECOND,
                    h_syn,
                    MAC_N2,
                ),
            ),
            counter: "syn_to_fallback",
        },
        Case {
            name: "decap, inner not VIP: dropped, never passed or forwarded",
            tables: (N2, NO_HOP),
            input: enc_not_vip.clone(),
            expect: Expect::Drop,
            counter: "drop_decap_not_vip",
        },
    ]
}

/// The counter of tunnel packets from a non-member.
const NOT_MEMBER: &str = "drop_not_member";

/// Not a member: an address that is in no node list.
const STRANGER4: [u8; 4] = [203, 0, 113, 66];
const STRANGER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x66,
];

/// Tunnel packets (GUE and IPIP, both underlay families) are decapsulated
/// only when their outer source is a member's underlay address; anything
/// else addressed to the GUE port or the IPIP protocol is dropped. The
/// members' packets of the same shape still decapsulate (the control).
fn membership_cases() -> Vec<Case> {
    let ack = tcp4(CLIENT4, 40051, VIP4, 80, Tcp::Ack, b"inject");
    let h = flow4(CLIENT4, 40051, VIP4, 80, 6);
    let ack6 = tcp6(CLIENT6, 40052, VIP6, 80, Tcp::Ack, b"inject");
    let h6 = flow6(CLIENT6, 40052, VIP6, 80, 6);
    // What an open relay would carry: a packet for another host of the site.
    let relay = tcp4(CLIENT4, 40053, OTHER4, 22, Tcp::Syn, b"");
    let h_relay = flow4(CLIENT4, 40053, OTHER4, 22, 6);
    let mut cases = Vec::new();
    for gue in [true, false] {
        let how = if gue { "GUE" } else { "IPIP" };
        let from = |under, frame: &[u8], hash| arriving(frame, under, gue, HOP_SECOND, hash);
        for (what, under, frame, hash, counter) in [
            (
                "over IPv4 from a non-member",
                Underlay::V4(STRANGER4, SELF4),
                &ack,
                h,
                NOT_MEMBER,
            ),
            (
                "over IPv6 from a non-member",
                Underlay::V6(STRANGER6, SELF6),
                &ack6,
                h6,
                NOT_MEMBER,
            ),
            (
                "over IPv6 from a non-member, IPv4 inner",
                Underlay::V6(STRANGER6, SELF6),
                &ack,
                h,
                NOT_MEMBER,
            ),
            (
                "from a non-member relaying to another host",
                Underlay::V4(STRANGER4, SELF4),
                &relay,
                h_relay,
                NOT_MEMBER,
            ),
            (
                "from a member relaying to another host",
                Underlay::V4(N2_4, SELF4),
                &relay,
                h_relay,
                "drop_decap_not_vip",
            ),
        ] {
            cases.push(Case {
                name: format!("{how} {what}: dropped").leak(),
                tables: (SELF, NO_HOP),
                input: from(under, frame, hash),
                expect: Expect::Drop,
                counter,
            });
        }
        let member4 = from(Underlay::V4(N2_4, SELF4), &ack, h);
        let member6 = from(Underlay::V6(N3_6, SELF6), &ack6, h6);
        for (name, input, inner) in [("over IPv4", member4, &ack), ("over IPv6", member6, &ack6)] {
            cases.push(Case {
                name: format!("{how} {name} from a member: decapsulated").leak(),
                tables: (SELF, NO_HOP),
                expect: Expect::Out(XDP_PASS, decapsulated(&input, inner)),
                input,
                counter: "decap",
            });
        }
    }
    // GUE's sender id (flags field): checked against LBD_NODES with an
    // array read; no id, a wrong one or one out of range falls back to the
    // member maps, and no id makes a stranger a member.
    let gue_from = |src: [u8; 4], id: u16| {
        let mut f = arriving(&ack, Underlay::V4(src, SELF4), true, HOP_SECOND, h);
        f[14 + 20 + 10..14 + 20 + 12].copy_from_slice(&id.to_be_bytes());
        f
    };
    for (what, input) in [
        ("its own id", gue_from(N2_4, N2)),
        ("no id (a sender without ids)", gue_from(N2_4, 0)),
        ("another member's id", gue_from(N2_4, N3)),
        ("an id beyond the node list", gue_from(N2_4, u16::MAX)),
    ] {
        cases.push(Case {
            name: format!("GUE from a member with {what}: decapsulated").leak(),
            tables: (SELF, NO_HOP),
            expect: Expect::Out(XDP_PASS, decapsulated(&input, &ack)),
            input,
            counter: "decap",
        });
    }
    for id in [N2, SELF, N3] {
        cases.push(Case {
            name: format!("GUE from a non-member claiming node {id}: dropped").leak(),
            tables: (SELF, NO_HOP),
            input: gue_from(STRANGER4, id),
            expect: Expect::Drop,
            counter: NOT_MEMBER,
        });
    }
    // Not GUE at all (variant 1) from a stranger: the source decides first.
    let mut bad_gue = arriving(&ack, Underlay::V4(STRANGER4, SELF4), true, HOP_FIRST, h);
    bad_gue[14 + 20 + 8] = 0x40;
    cases.push(Case {
        name: "malformed GUE from a non-member: dropped as not member",
        tables: (SELF, NO_HOP),
        input: bad_gue,
        expect: Expect::Drop,
        counter: NOT_MEMBER,
    });
    cases
}

#[test]
fn tunnels_are_decapsulated_only_from_members() -> Result<()> {
    let mut bed = Bed::new(ENCAP_GUE)?;
    check(&mut bed, membership_cases())
}

/// An underlay of one family leaves the other self address unset (0.0.0.0
/// or ::): a tunnel packet addressed there from a member is not ours, never
/// decapsulated.
#[test]
fn unset_self_address_never_matches() -> Result<()> {
    let mut bed = Bed::new(ENCAP_GUE)?;
    bed.tables(SELF, NO_HOP)?;
    let ack = tcp4(CLIENT4, 40061, VIP4, 80, Tcp::Ack, b"x");
    let h = flow4(CLIENT4, 40061, VIP4, 80, 6);
    let cfg = bed.dp.config()?;
    let to_zero4 = arriving(&ack, Underlay::V4(N2_4, [0; 4]), true, HOP_SECOND, h);
    let to_zero6 = arriving(&ack, Underlay::V6(N3_6, [0; 16]), false, HOP_SECOND, h);
    let ipv6_only = dataplane_common::Config {
        self_v4: [0; 4],
        ..cfg
    };
    let ipv4_only = dataplane_common::Config {
        self_v6: [0; 16],
        ..cfg
    };
    let mut cases = Vec::new();
    for (name, c, input) in [
        ("IPv6-only underlay, GUE to 0.0.0.0", ipv6_only, to_zero4),
        ("IPv4-only underlay, IPIP to ::", ipv4_only, to_zero6),
    ] {
        bed.dp.set_config(&c)?;
        let before = bed.all_counters()?;
        let Run { action, out, .. } = bed.run(&input)?;
        let after = bed.all_counters()?;
        let decapped = after["decap"] - before["decap"];
        if action != XDP_PASS || out != input || decapped != 0 {
            cases.push(format!(
                "{name}: action {action}, decap grew {decapped}, output changed: {}",
                out != input
            ));
        }
    }
    bed.dp.set_config(&cfg)?;
    assert!(cases.is_empty(), "{}", cases.join("\n"));
    Ok(())
}

#[test]
fn gue_forwarding_and_decap() -> Result<()> {
    let mut bed = Bed::new(ENCAP_GUE)?;
    let mut cases = forwarding_cases(true);
    cases.extend(decap_cases(true));
    check(&mut bed, cases)
}

#[test]
fn ipip_forwarding_and_decap() -> Result<()> {
    let mut bed = Bed::new(ENCAP_IPIP)?;
    let mut cases = forwarding_cases(false);
    cases.extend(decap_cases(false));
    check(&mut bed, cases)
}

/// ICMP errors about VIP flows go to the flow's owner (hash of the embedded
/// header, reversed), so path MTU discovery works across nodes.
#[test]
fn icmp_too_big_goes_to_the_owner() -> Result<()> {
    let mut bed = Bed::new(ENCAP_GUE)?;
    // The VIP's own segment (VIP -> client), quoted by a router.
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(VIP4, CLIENT4, 64)
        .tcp(80, 40020, 5, 1000)
        .ack(1)
        .write(&mut quoted, &[0; 8])?;
    let mut icmp4 = Vec::new();
    eth_v4()
        .ipv4([198, 51, 100, 1], VIP4, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut icmp4, &quoted[..28])?;
    let h4 = flow4(CLIENT4, 40020, VIP4, 80, 6);

    let mut quoted6 = Vec::new();
    PacketBuilder::ipv6(VIP6, CLIENT6, 64)
        .tcp(80, 40021, 5, 1000)
        .ack(1)
        .write(&mut quoted6, &[0; 8])?;
    let mut icmp6 = Vec::new();
    eth_v4()
        .ipv6(
            [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            VIP6,
            64,
        )
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 })
        .write(&mut icmp6, &quoted6[..48])?;
    let h6 = flow6(CLIENT6, 40021, VIP6, 80, 6);

    let other = {
        let mut v = Vec::new();
        eth_v4()
            .ipv4([198, 51, 100, 1], VIP4, 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut v, b"ping")?;
        v
    };
    check(
        &mut bed,
        vec![
            Case {
                name: "ICMPv4 fragmentation needed -> owner",
                tables: (N2, NO_HOP),
                input: icmp4.clone(),
                expect: Expect::Out(
                    XDP_TX,
                    encapsulated(
                        &icmp4,
                        Underlay::V4(SELF4, N2_4),
                        true,
                        HOP_FIRST,
                        h4,
                        MAC_N2,
                    ),
                ),
                counter: "icmp_to_owner",
            },
            Case {
                name: "ICMPv6 packet too big -> owner",
                tables: (N3, NO_HOP),
                input: icmp6.clone(),
                expect: Expect::Out(
                    XDP_TX,
                    encapsulated(
                        &icmp6,
                        Underlay::V6(SELF6, N3_6),
                        true,
                        HOP_FIRST,
                        h6,
                        MAC_N3,
                    ),
                ),
                counter: "icmp_to_owner",
            },
            Case {
                name: "ICMPv4 too big for a flow we own stays",
                tables: (SELF, NO_HOP),
                input: icmp4.clone(),
                expect: Expect::Out(XDP_PASS, icmp4.clone()),
                counter: "pass_local",
            },
            Case {
                name: "other ICMP to the VIP is not steered",
                tables: (N2, NO_HOP),
                input: other.clone(),
                expect: Expect::Out(XDP_PASS, other.clone()),
                counter: "not_vip",
            },
        ],
    )
}

/// Not VIP traffic passes untouched; fragments are never steered; broken
/// headers are dropped before anything could misforward them.
#[test]
fn not_vip_fragments_and_malformed() -> Result<()> {
    let mut bed = Bed::new(ENCAP_GUE)?;
    let not_vip = tcp4(CLIENT4, 40030, OTHER4, 80, Tcp::Syn, b"");
    let other_port = tcp4(CLIENT4, 40031, VIP4, 8080, Tcp::Syn, b"");
    let arp = {
        let mut v = vec![0xff; 6];
        v.extend_from_slice(&MAC_ROUTER);
        v.extend_from_slice(&[0x08, 0x06]);
        v.extend_from_slice(&[0; 28]);
        v
    };
    let syn = tcp4(CLIENT4, 40032, VIP4, 80, Tcp::Syn, b"");
    // More-fragments set, offset 0: first fragment of a VIP datagram.
    let mut frag = syn.clone();
    frag[20] = 0x20;
    fix_ipv4_checksum(&mut frag);
    let mut later_frag = syn.clone();
    later_frag[20] = 0x00;
    later_frag[21] = 0x10;
    fix_ipv4_checksum(&mut later_frag);
    let mut ihl_short = syn.clone();
    ihl_short[14] = 0x44;
    let mut too_long = syn.clone();
    too_long[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let mut doff_short = syn.clone();
    doff_short[14 + 20 + 12] = 0x40;
    let truncated_tcp = syn[..14 + 20 + 10].to_vec();
    let truncated_ip = syn[..14 + 12].to_vec();
    let mut frag6 = tcp6(CLIENT6, 40033, VIP6, 80, Tcp::Syn, b"");
    frag6[14 + 6] = 44; // next header: fragment
    let pass = |name, input: Vec<u8>, counter| Case {
        name,
        tables: (N2, NO_HOP),
        expect: Expect::Out(XDP_PASS, input.clone()),
        input,
        counter,
    };
    let drop = |name, input: Vec<u8>| Case {
        name,
        tables: (N2, NO_HOP),
        expect: Expect::Drop,
        input,
        counter: "drop_malformed",
    };
    check(
        &mut bed,
        vec![
            pass("TCP to another address", not_vip, "not_vip"),
            pass("TCP to the VIP on an unserved port", other_port, "not_vip"),
            pass("ARP", arp, "not_vip"),
            pass("IPv4 first fragment", frag, "fragment"),
            pass("IPv4 later fragment", later_frag, "fragment"),
            pass("IPv6 fragment header", frag6, "fragment"),
            drop("IPv4 IHL below 5", ihl_short),
            drop("IPv4 total length beyond the frame", too_long),
            drop("TCP data offset below 5", doff_short),
            drop("TCP header truncated", truncated_tcp),
            drop("IPv4 header truncated", truncated_ip),
        ],
    )?;
    // Frames shorter than an Ethernet header never reach XDP (the kernel
    // refuses them even in BPF_PROG_TEST_RUN); the program passes them anyway.
    Ok(())
}

fn fix_ipv4_checksum(frame: &mut [u8]) {
    frame[24] = 0;
    frame[25] = 0;
    let mut sum = 0u32;
    for i in (14..34).step_by(2) {
        sum += u16::from_be_bytes([frame[i], frame[i + 1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// With a second hop in the bucket, a non-SYN packet of a connection this
/// node holds stays here (real sockets, found by bpf_skc_lookup_tcp).
#[test]
fn local_connection_wins_over_second_hop() -> Result<()> {
    let mut bed = Bed::new(ENCAP_GUE)?;
    for (vip, client) in [
        (IpAddr::from(VIP4), IpAddr::from(CLIENT4)),
        (IpAddr::from(VIP6), IpAddr::from(CLIENT6)),
    ] {
        let listener = std::net::TcpListener::bind(SocketAddr::new(vip, 80))?;
        let sock = socket2::Socket::new(
            if vip.is_ipv4() {
                socket2::Domain::IPV4
            } else {
                socket2::Domain::IPV6
            },
            socket2::Type::STREAM,
            None,
        )?;
        sock.bind(&SocketAddr::new(client, 0).into())?;
        sock.connect(&SocketAddr::new(vip, 80).into())?;
        let (_server_side, _) = listener.accept()?;
        let cport = sock
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .unwrap_or_default();
        let (established, unknown) = match (vip, client) {
            (IpAddr::V4(v), IpAddr::V4(c)) => (
                tcp4(c.octets(), cport, v.octets(), 80, Tcp::Ack, b"x"),
                tcp4(c.octets(), cport + 1, v.octets(), 80, Tcp::Ack, b"x"),
            ),
            (IpAddr::V6(v), IpAddr::V6(c)) => (
                tcp6(c.octets(), cport, v.octets(), 80, Tcp::Ack, b"x"),
                tcp6(c.octets(), cport + 1, v.octets(), 80, Tcp::Ack, b"x"),
            ),
            _ => unreachable!(),
        };
        bed.tables(SELF, N2)?;
        let Run { action, out, .. } = bed.run(&established)?;
        assert_eq!(
            action, XDP_PASS,
            "{vip}: established connection must stay local"
        );
        assert_eq!(out, established);
        // Same listener, unknown connection: a listener is not a connection.
        let action = bed.run(&unknown)?.action;
        assert_eq!(
            action, XDP_TX,
            "{vip}: unknown flow (listener only) goes to the second hop"
        );
    }
    Ok(())
}

/// Listener-aware steering (issue 15): a SYN at the first hop with no local
/// listener for the VIP's port goes to the bucket's fallback (marked second
/// hop), or to its second hop when it has one; later packets of such a
/// flow follow it while no local socket holds them; with a listener, or
/// without a usable fallback, nothing changes. Real listeners and real
/// sockets, found by bpf_skc_lookup_tcp.
#[test]
fn syn_without_listener_goes_to_the_fallback() -> Result<()> {
    use dataplane_common::Bucket;
    let mut bed = Bed::new(ENCAP_GUE)?;
    let vip4 = vip4_http();
    let with = |first, second, fallback| Bucket {
        first,
        second,
        fallback,
        _pad: 0,
    };
    let syn = tcp4(CLIENT4, 40070, VIP4, 80, Tcp::Syn, b"");
    let h_syn = flow4(CLIENT4, 40070, VIP4, 80, 6);
    let ack = tcp4(CLIENT4, 40070, VIP4, 80, Tcp::Ack, b"data");
    let syn6 = tcp6(CLIENT6, 40071, VIP6, 80, Tcp::Syn, b"");
    let h_syn6 = flow6(CLIENT6, 40071, VIP6, 80, 6);
    let udp = udp4(CLIENT4, 5353, VIP4, 53, b"query");
    let to = |frame: &[u8], hash, node| match node {
        N2 => encapsulated(
            frame,
            Underlay::V4(SELF4, N2_4),
            true,
            HOP_SECOND,
            hash,
            MAC_N2,
        ),
        _ => encapsulated(
            frame,
            Underlay::V6(SELF6, N3_6),
            true,
            HOP_SECOND,
            hash,
            MAC_N3,
        ),
    };
    let mut failures: Vec<String> = Vec::new();

    // No listener anywhere on port 80 in the bed's namespace.
    let steering = |bed: &Bed| {
        bed.dp
            .listener_state(&vip4)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    ensure_clean(steering(&bed))?;
    failures.extend(step(
        &mut bed,
        "absent, no fallback: kept (the kernel refuses, as before)",
        with(SELF, NO_HOP, NO_HOP),
        &syn,
        (XDP_PASS, syn.clone()),
        "pass_local",
    )?);
    failures.extend(step(
        &mut bed,
        "absent: SYN to the fallback, marked second hop",
        with(SELF, NO_HOP, N2),
        &syn,
        (XDP_TX, to(&syn, h_syn, N2)),
        "syn_to_fallback",
    )?);
    let s = steering(&bed);
    if s.steering == 0 || s.missing == 0 || s.last_missing_ns == 0 {
        failures.push(format!("a SYN without listener must start steering: {s:?}"));
    }
    failures.extend(step(
        &mut bed,
        "absent: later packet of that flow follows it to the fallback",
        with(SELF, NO_HOP, N2),
        &ack,
        (XDP_TX, to(&ack, h_syn, N2)),
        "fwd_second_hop",
    )?);
    failures.extend(step(
        &mut bed,
        "absent over IPv6: SYN to the fallback over its IPv6 underlay",
        with(SELF, NO_HOP, N3),
        &syn6,
        (XDP_TX, to(&syn6, h_syn6, N3)),
        "syn_to_fallback",
    )?);
    failures.extend(step(
        &mut bed,
        "absent with a second hop: SYN to the fallback all the same (the owner after failover)",
        with(SELF, N3, N2),
        &syn,
        (XDP_TX, to(&syn, h_syn, N2)),
        "syn_to_fallback",
    )?);
    failures.extend(step(
        &mut bed,
        "absent with a second hop: later packet follows it to the fallback",
        with(SELF, N3, N2),
        &ack,
        (XDP_TX, to(&ack, h_syn, N2)),
        "fwd_second_hop",
    )?);
    failures.extend(step(
        &mut bed,
        "absent, fallback has no underlay address (down): kept",
        with(SELF, NO_HOP, N_UNKNOWN),
        &syn,
        (XDP_PASS, syn.clone()),
        "pass_local",
    )?);
    failures.extend(step(
        &mut bed,
        "UDP is never looked up: kept",
        with(SELF, NO_HOP, N2),
        &udp,
        (XDP_PASS, udp.clone()),
        "pass_local",
    )?);
    let hop2 = arriving(&syn, Underlay::V4(N2_4, SELF4), true, HOP_SECOND, h_syn);
    failures.extend(step(
        &mut bed,
        "absent, SYN already forwarded once: kept (at most two hops)",
        with(SELF, NO_HOP, N2),
        &hop2,
        (XDP_PASS, decapsulated(&hop2, &syn)),
        "pass_local",
    )?);
    let hop1 = arriving(&syn, Underlay::V4(N2_4, SELF4), true, HOP_FIRST, h_syn);
    failures.extend(step(
        &mut bed,
        "absent, SYN forwarded to us as first hop: on to the fallback, marked second",
        with(SELF, NO_HOP, N3),
        &hop1,
        (XDP_TX, to(&syn, h_syn, N3)),
        "syn_to_fallback",
    )?);

    // The listener is back: SYNs stay; a later packet with no local
    // connection still goes to the fallback (steering lasts until lbd
    // ends it after the drain period), one with a connection stays.
    let listener = std::net::TcpListener::bind(SocketAddr::new(IpAddr::from(VIP4), 80))?;
    failures.extend(step(
        &mut bed,
        "present: SYN stays",
        with(SELF, NO_HOP, N2),
        &syn,
        (XDP_PASS, syn.clone()),
        "pass_local",
    )?);
    let s = steering(&bed);
    if s.missing != 0 || s.steering == 0 {
        failures.push(format!(
            "a SYN finding the listener clears `missing` only: {s:?}"
        ));
    }
    failures.extend(step(
        &mut bed,
        "present, hop-1 SYN while tables disagree: stays",
        with(N2, NO_HOP, NO_HOP),
        &hop1,
        (XDP_PASS, decapsulated(&hop1, &syn)),
        "pass_local",
    )?);
    failures.extend(step(
        &mut bed,
        "present with a second hop: SYN stays",
        with(SELF, N3, N2),
        &syn,
        (XDP_PASS, syn.clone()),
        "pass_local",
    )?);
    failures.extend(step(
        &mut bed,
        "present, steering: unknown flow's later packet to the fallback",
        with(SELF, NO_HOP, N2),
        &ack,
        (XDP_TX, to(&ack, h_syn, N2)),
        "fwd_second_hop",
    )?);
    let client = std::net::TcpStream::connect(SocketAddr::new(IpAddr::from(VIP4), 80))?;
    let cport = client.local_addr()?.port();
    let (_server, _) = listener.accept()?;
    let mine = tcp4(VIP4, cport, VIP4, 80, Tcp::Ack, b"x");
    failures.extend(step(
        &mut bed,
        "present, steering: a local connection's packet stays",
        with(SELF, NO_HOP, N2),
        &mine,
        (XDP_PASS, mine.clone()),
        "pass_local",
    )?);
    // lbd ends steering after the drain period: the steady state again.
    if !bed
        .dp
        .end_steering_after(&vip4, std::time::Duration::ZERO)?
    {
        failures.push("end_steering_after refused with the listener back".into());
    }
    ensure_clean(steering(&bed))?;
    failures.extend(step(
        &mut bed,
        "present, steady state: non-SYN kept without any lookup",
        with(SELF, NO_HOP, N2),
        &ack,
        (XDP_PASS, ack.clone()),
        "pass_local",
    )?);
    drop(listener);
    // Still missing when lbd looks: steering is not ended.
    failures.extend(step(
        &mut bed,
        "absent again: SYN to the fallback",
        with(SELF, NO_HOP, N2),
        &syn,
        (XDP_TX, to(&syn, h_syn, N2)),
        "syn_to_fallback",
    )?);
    if bed
        .dp
        .end_steering_after(&vip4, std::time::Duration::ZERO)?
    {
        failures.push("steering ended while the listener is missing".into());
    }
    assert_no_failed_steps(&failures);
    Ok(())
}

/// A VIP with two ports (80 and 443, as a storage site lists them), each
/// its own dataplane entry: a SYN to the port with no listener steers that
/// port only. A packet of the other port's connection held by its second
/// hop (a drained node's) still goes to the second hop, not to the
/// fallback, and that port's listener state stays clear. Real listener.
#[test]
fn listener_steering_is_per_vip_port() -> Result<()> {
    use dataplane_common::Bucket;
    let mut bed = Bed::new(ENCAP_GUE)?;
    let (http, https) = (vip4_tcp(80), vip4_tcp(443));
    let b = Bucket {
        first: SELF,
        second: N2,
        fallback: N3,
        _pad: 0,
    };
    bed.buckets(b)?;
    bed.dp.set_vip_table(&https, &[b; TABLE], 0)?;
    let state = |bed: &Bed, v| bed.dp.listener_state(v).ok().flatten().unwrap_or_default();
    ensure_clean(state(&bed, &http))?;
    ensure_clean(state(&bed, &https))?;
    // nginx listens on 80 here, nothing on 443.
    let _listener = std::net::TcpListener::bind(SocketAddr::new(IpAddr::from(VIP4), 80))?;
    let mut failures: Vec<String> = Vec::new();

    let syn443 = tcp4(CLIENT4, 40090, VIP4, 443, Tcp::Syn, b"");
    let h443 = flow4(CLIENT4, 40090, VIP4, 443, 6);
    let before = bed.dp.counters(Some(&https))?["syn_to_fallback"];
    let run = bed.run(&syn443)?;
    let want = encapsulated(
        &syn443,
        Underlay::V6(SELF6, N3_6),
        true,
        HOP_SECOND,
        h443,
        MAC_N3,
    );
    let grew = bed.dp.counters(Some(&https))?["syn_to_fallback"] - before;
    if run.action != XDP_TX || run.out != want || grew != 1 {
        failures.push(format!(
            "443 without listener: SYN must go to the fallback (action {}, output {}, syn_to_fallback +{grew})",
            run.action,
            if run.out == want { "as expected" } else { "differs" }
        ));
    }
    let s = state(&bed, &https);
    if s.steering == 0 || s.missing == 0 {
        failures.push(format!("443 must be steering: {s:?}"));
    }
    let s = state(&bed, &http);
    if s.steering != 0 || s.missing != 0 {
        failures.push(format!("80 must not be steering: {s:?}"));
    }

    // Port 80: a connection no local socket holds (the drained second
    // hop's) goes on to the second hop.
    let ack80 = tcp4(CLIENT4, 40091, VIP4, 80, Tcp::Ack, b"data");
    let h80 = flow4(CLIENT4, 40091, VIP4, 80, 6);
    failures.extend(step(
        &mut bed,
        "80 while 443 steers: a second hop's connection goes to the second hop",
        b,
        &ack80,
        (
            XDP_TX,
            encapsulated(
                &ack80,
                Underlay::V4(SELF4, N2_4),
                true,
                HOP_SECOND,
                h80,
                MAC_N2,
            ),
        ),
        "fwd_second_hop",
    )?);
    let syn80 = tcp4(CLIENT4, 40092, VIP4, 80, Tcp::Syn, b"");
    failures.extend(step(
        &mut bed,
        "80 while 443 steers: a SYN finds its listener and stays",
        b,
        &syn80,
        (XDP_PASS, syn80.clone()),
        "pass_local",
    )?);
    assert_no_failed_steps(&failures);
    Ok(())
}

/// The listener cache: a SYN whose lookup finds the listener records the
/// listening-socket generation; later SYNs of the VIP port are kept without
/// a lookup (counter `syn_listener_lookup` does not grow) until a listening
/// socket of the host closes (the tracepoint program bumps the generation):
/// closing the listener sends the very next SYN to the fallback, a listener
/// back is found again. Real listeners, real tracepoint.
#[test]
fn listener_cache_ends_when_a_listener_closes() -> Result<()> {
    use dataplane_common::Bucket;
    let mut bed = Bed::new(ENCAP_GUE)?;
    let vip4 = vip4_http();
    let b = Bucket {
        first: SELF,
        second: NO_HOP,
        fallback: N2,
        _pad: 0,
    };
    let syn = tcp4(CLIENT4, 40080, VIP4, 80, Tcp::Syn, b"");
    let other_syn = tcp4(CLIENT4, 40081, VIP4, 80, Tcp::Syn, b"");
    let h_syn = flow4(CLIENT4, 40080, VIP4, 80, 6);
    let to_fallback = encapsulated(
        &syn,
        Underlay::V4(SELF4, N2_4),
        true,
        HOP_SECOND,
        h_syn,
        MAC_N2,
    );
    let vip_addr = SocketAddr::new(IpAddr::from(VIP4), 80);
    let (_, armed) = bed.dp.listen_generation()?;
    anyhow::ensure!(armed, "the bed arms the listener cache");
    let mut failures: Vec<String> = Vec::new();
    let kept = |f: &[u8]| (XDP_PASS, f.to_vec());
    let fallback = (XDP_TX, to_fallback);
    let mut syns = |bed: &mut Bed, rows: Vec<SynRow>| {
        for (name, input, want, counter, lookups) in rows {
            failures.extend(syn_step(bed, b, name, input, want, counter, lookups)?);
        }
        anyhow::Ok(())
    };

    let listener = std::net::TcpListener::bind(vip_addr)?;
    let first = "listener: first SYN looks it up, stays";
    syns(&mut bed, vec![(first, &syn, kept(&syn), "pass_local", 1)])?;
    let (generation, _) = bed.dp.listen_generation()?;
    let state = bed.dp.listener_state(&vip4)?.unwrap_or_default();
    let cached_ok = state.listener_gen == generation + 1;
    syns(
        &mut bed,
        vec![
            (
                "listener: second SYN stays from the cache",
                &syn,
                kept(&syn),
                "pass_local",
                0,
            ),
            (
                "listener: another flow's SYN too (one entry per VIP port)",
                &other_syn,
                kept(&other_syn),
                "pass_local",
                0,
            ),
        ],
    )?;
    drop(listener);
    let (after_close, _) = bed.dp.listen_generation()?;
    syns(
        &mut bed,
        vec![
            (
                "closed: the next SYN looks up, to the fallback",
                &syn,
                fallback.clone(),
                "syn_to_fallback",
                1,
            ),
            (
                "closed: absence is not cached",
                &syn,
                fallback,
                "syn_to_fallback",
                1,
            ),
        ],
    )?;
    let listener = std::net::TcpListener::bind(vip_addr)?;
    syns(
        &mut bed,
        vec![
            (
                "back: SYN finds the new listener",
                &syn,
                kept(&syn),
                "pass_local",
                1,
            ),
            ("back: cached again", &syn, kept(&syn), "pass_local", 0),
        ],
    )?;
    // Any listening socket of the host that closes ends every entry (one
    // lookup more; no per-port bookkeeping).
    drop(std::net::TcpListener::bind("127.0.0.1:0")?);
    syns(
        &mut bed,
        vec![
            (
                "another listener closed: one lookup, stays",
                &syn,
                kept(&syn),
                "pass_local",
                1,
            ),
            ("and cached again", &syn, kept(&syn), "pass_local", 0),
        ],
    )?;
    if !cached_ok {
        failures.push(format!(
            "cache holds {state:?}, want generation {generation} + 1"
        ));
    }
    if after_close <= generation {
        failures.push(format!(
            "closing the listener left the generation at {after_close}"
        ));
    }
    drop(listener);
    assert_no_failed_steps(&failures);
    Ok(())
}

/// A quiesced listener (`lbd listener quiesce`, before nginx stops): it
/// still listens, yet new connections go to the fallback as if it were
/// missing, and so do the later packets of those flows (the lookup finds
/// the listener, which is not their socket); an established connection
/// and one waiting in the accept queue stay, so the queue drains before
/// the socket closes. Resumed, SYNs stay again while steering lasts the
/// drain period. Real listener and sockets.
#[test]
fn quiesced_listener_sends_new_connections_to_the_fallback() -> Result<()> {
    use dataplane_common::Bucket;
    let mut bed = Bed::new(ENCAP_GUE)?;
    let vip = |addr: IpAddr| dataplane::loader::Vip {
        addr,
        port: 80,
        proto: 6,
    };
    let (vip4, vip6) = (vip(IpAddr::from(VIP4)), vip(IpAddr::from(VIP6)));
    let with = |first, second, fallback| Bucket {
        first,
        second,
        fallback,
        _pad: 0,
    };
    let syn = tcp4(CLIENT4, 40080, VIP4, 80, Tcp::Syn, b"");
    let h_syn = flow4(CLIENT4, 40080, VIP4, 80, 6);
    let ack = tcp4(CLIENT4, 40080, VIP4, 80, Tcp::Ack, b"data");
    let syn6 = tcp6(CLIENT6, 40081, VIP6, 80, Tcp::Syn, b"");
    let h_syn6 = flow6(CLIENT6, 40081, VIP6, 80, 6);
    let to_n2 = |frame: &[u8], hash| {
        encapsulated(
            frame,
            Underlay::V4(SELF4, N2_4),
            true,
            HOP_SECOND,
            hash,
            MAC_N2,
        )
    };
    let state = |bed: &Bed, v| bed.dp.listener_state(v).ok().flatten().unwrap_or_default();
    let mut failures: Vec<String> = Vec::new();

    // The listener with one accepted connection and one still in its
    // accept queue (handshake done, not accepted).
    let listener = std::net::TcpListener::bind(SocketAddr::new(IpAddr::from(VIP4), 80))?;
    let accepted = std::net::TcpStream::connect(SocketAddr::new(IpAddr::from(VIP4), 80))?;
    let (_server, _) = listener.accept()?;
    let queued = std::net::TcpStream::connect(SocketAddr::new(IpAddr::from(VIP4), 80))?;
    let est = tcp4(
        VIP4,
        accepted.local_addr()?.port(),
        VIP4,
        80,
        Tcp::Ack,
        b"x",
    );
    let in_queue = tcp4(VIP4, queued.local_addr()?.port(), VIP4, 80, Tcp::Ack, b"y");
    failures.extend(step(
        &mut bed,
        "listening, not quiesced: SYN stays",
        with(SELF, NO_HOP, N2),
        &syn,
        (XDP_PASS, syn.clone()),
        "pass_local",
    )?);

    anyhow::ensure!(bed.dp.set_quiesced(&vip4, true)?, "{vip4} not installed");
    anyhow::ensure!(bed.dp.set_quiesced(&vip6, true)?, "{vip6} not installed");
    let s = state(&bed, &vip4);
    if s.quiesced == 0 || s.steering == 0 || s.last_missing_ns == 0 {
        failures.push(format!("quiescing must set quiesced and steering: {s:?}"));
    }
    failures.extend(step(
        &mut bed,
        "quiesced: SYN to the fallback though the listener is there",
        with(SELF, NO_HOP, N2),
        &syn,
        (XDP_TX, to_n2(&syn, h_syn)),
        "syn_to_fallback",
    )?);
    failures.extend(step(
        &mut bed,
        "quiesced: that flow's next packet follows it (the lookup finds only the listener)",
        with(SELF, NO_HOP, N2),
        &ack,
        (XDP_TX, to_n2(&ack, h_syn)),
        "fwd_second_hop",
    )?);
    failures.extend(step(
        &mut bed,
        "quiesced with a second hop: SYN to the fallback",
        with(SELF, N3, N2),
        &syn,
        (XDP_TX, to_n2(&syn, h_syn)),
        "syn_to_fallback",
    )?);
    failures.extend(step(
        &mut bed,
        "quiesced over IPv6: SYN to the fallback over its IPv6 underlay",
        with(SELF, NO_HOP, N3),
        &syn6,
        (
            XDP_TX,
            encapsulated(
                &syn6,
                Underlay::V6(SELF6, N3_6),
                true,
                HOP_SECOND,
                h_syn6,
                MAC_N3,
            ),
        ),
        "syn_to_fallback",
    )?);
    failures.extend(step(
        &mut bed,
        "quiesced: an established connection's packet stays",
        with(SELF, NO_HOP, N2),
        &est,
        (XDP_PASS, est.clone()),
        "pass_local",
    )?);
    failures.extend(step(
        &mut bed,
        "quiesced: a connection in the accept queue stays",
        with(SELF, N3, N2),
        &in_queue,
        (XDP_PASS, in_queue.clone()),
        "pass_local",
    )?);
    failures.extend(step(
        &mut bed,
        "quiesced, no fallback: SYN kept (nowhere else to go)",
        with(SELF, NO_HOP, NO_HOP),
        &syn,
        (XDP_PASS, syn.clone()),
        "pass_local",
    )?);
    let s = state(&bed, &vip4);
    if s.missing != 0 {
        failures.push(format!(
            "quiesced SYNs look nothing up, `missing` stays 0: {s:?}"
        ));
    }
    if bed
        .dp
        .end_steering_after(&vip4, std::time::Duration::ZERO)?
    {
        failures.push("steering ended while quiesced".into());
    }

    // Resumed (a new nginx listens): SYNs stay; the flows sent away keep
    // going to the fallback until lbd ends steering.
    anyhow::ensure!(bed.dp.set_quiesced(&vip4, false)?, "{vip4} not installed");
    let s = state(&bed, &vip4);
    if s.quiesced != 0 || s.steering == 0 {
        failures.push(format!("resuming keeps steering, clears quiesced: {s:?}"));
    }
    failures.extend(step(
        &mut bed,
        "resumed: SYN stays",
        with(SELF, NO_HOP, N2),
        &syn,
        (XDP_PASS, syn.clone()),
        "pass_local",
    )?);
    failures.extend(step(
        &mut bed,
        "resumed, steering: a flow sent away still goes to the fallback",
        with(SELF, NO_HOP, N2),
        &ack,
        (XDP_TX, to_n2(&ack, h_syn)),
        "fwd_second_hop",
    )?);
    if !bed
        .dp
        .end_steering_after(&vip4, std::time::Duration::ZERO)?
    {
        failures.push("end_steering_after refused after the resume".into());
    }
    ensure_clean(state(&bed, &vip4))?;
    // Resuming what is not quiesced changes nothing (no steering started).
    bed.dp.set_quiesced(&vip4, false)?;
    ensure_clean(state(&bed, &vip4))?;
    drop((listener, accepted, queued));
    assert_no_failed_steps(&failures);
    Ok(())
}

/// One packet through the forwarder with every bucket set to `b`: the
/// verdict and bytes `want`, and `counter` grown by one; else what differs.
fn step(
    bed: &mut Bed,
    name: &str,
    b: dataplane_common::Bucket,
    input: &[u8],
    want: (u32, Vec<u8>),
    counter: &str,
) -> Result<Option<String>> {
    bed.buckets(b)?;
    let before = bed.all_counters()?;
    let Run { action, out, .. } = bed.run(input)?;
    let grew = bed.all_counters()?[counter] - before[counter];
    Ok((action != want.0 || out != want.1 || grew != 1).then(|| {
        format!(
            "{name}: action {action} (want {}), output {} (want {} bytes), {counter} grew {grew}",
            want.0,
            if out == want.1 {
                "as expected"
            } else {
                "differs"
            },
            want.1.len()
        )
    }))
}

/// A row of the listener cache test: name, SYN, verdict and bytes,
/// counter, listener lookups.
type SynRow<'a> = (&'a str, &'a [u8], (u32, Vec<u8>), &'a str, u64);

/// One SYN through [`step`], and whether it looked its listener up
/// (`lookups`: how much `syn_listener_lookup` must grow). The generation
/// counts listening sockets closing anywhere on the host (other tests
/// too): a "no lookup" step is judged on a run during which it did not
/// move, retried until there is one.
fn syn_step(
    bed: &mut Bed,
    b: dataplane_common::Bucket,
    name: &str,
    input: &[u8],
    want: (u32, Vec<u8>),
    counter: &str,
    lookups: u64,
) -> Result<Vec<String>> {
    bed.buckets(b)?;
    for _ in 0..50 {
        let (generation, _) = bed.dp.listen_generation()?;
        let before = bed.all_counters()?["syn_listener_lookup"];
        let mut failures: Vec<String> = step(bed, name, b, input, want.clone(), counter)?
            .into_iter()
            .collect();
        let looked = bed.all_counters()?["syn_listener_lookup"] - before;
        if lookups == 0 && looked != 0 && bed.dp.listen_generation()?.0 != generation {
            continue;
        }
        if looked != lookups {
            failures.push(format!("{name}: {looked} listener lookups, want {lookups}"));
        }
        return Ok(failures);
    }
    Ok(vec![format!(
        "{name}: the generation moved during each of 50 runs"
    )])
}

/// The bed's IPv4 VIP on port 80, TCP (the listener tests' VIP port).
fn vip4_http() -> dataplane::loader::Vip {
    vip4_tcp(80)
}

fn vip4_tcp(port: u16) -> dataplane::loader::Vip {
    dataplane::loader::Vip {
        addr: IpAddr::from(VIP4),
        port,
        proto: 6,
    }
}

/// Every step of a multi-step test ran as expected (each failure named).
fn assert_no_failed_steps(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "failing steps:\n{}",
        failures.join("\n")
    );
}

fn ensure_clean(s: dataplane_common::ListenerState) -> Result<()> {
    anyhow::ensure!(
        s.steering == 0 && s.missing == 0 && s.quiesced == 0,
        "listener state should be clear: {s:?}"
    );
    Ok(())
}
