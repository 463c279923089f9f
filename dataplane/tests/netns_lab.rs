//! The dataplane end to end, in network namespaces: client -> Linux router
//! (ECMP over the nodes, L4 hash) -> nodes running the XDP forwarder, real
//! TCP connections to an HTTP server bound to the VIP on every node.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use dataplane::mtu::clamped_mss;
use dataplane_common::{DEFAULT_GUE_PORT, ENCAP_GUE, ENCAP_IPIP, HOP_FIRST, IPV4_ID_MARK};
use etherparse::{IpNumber, Ipv4Header};
use lab::{self, Lab, LabOptions, VIP4, VIP6};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Lines (one per 100 ms) each stream must receive after a membership
/// change before the next: its ACKs crossed the new tables (a misrouted
/// ACK would have reset it within that time).
const LINES_PER_STEP: usize = 3;

/// Hundreds of concurrent connections all succeed, and each is served by
/// the node the Rust predictor names (whichever node the router chose).
fn every_connection_lands_on_its_predicted_owner(encap: u8) -> Result<()> {
    let mut lab = Lab::build(LabOptions {
        encap,
        ..Default::default()
    })?;
    lab.start_servers()?;
    let per_family = 150;
    let mut conns: Vec<(IpAddr, TcpStream)> = Vec::new();
    for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
        for _ in 0..per_family {
            conns.push((vip, lab::connect(&lab, vip, None, TIMEOUT)?));
        }
    }
    // All open at once; now ask each who serves it.
    let mut by_node = std::collections::BTreeMap::<String, usize>::new();
    for (vip, s) in conns {
        let local = s.local_addr()?;
        let predicted = lab.predict(local, vip).context("no bucket")?.first;
        let mut r = lab::get(s, "/whoami")?;
        let served = lab::next_line(&mut r)?.context("empty answer")?;
        ensure!(
            served == format!("node{predicted}"),
            "{local} -> {vip}: served by {served}, predicted node{predicted}"
        );
        *by_node.entry(served).or_default() += 1;
    }
    ensure!(by_node.len() == 3, "all three nodes serve: {by_node:?}");
    // Forwarding really happened (the router's ECMP disagrees with Maglev
    // for about 2/3 of flows), and nothing was dropped.
    let mut forwarded = 0;
    for n in &lab.nodes {
        for vip in Lab::vips() {
            let c = n.dp.counters(Some(&vip))?;
            forwarded += c["fwd_first_hop"];
            ensure!(
                c["drop_no_route"] + c["drop_no_node"] + c["drop_too_big"] == 0,
                "{}: drops {c:?}",
                n.name()
            );
        }
    }
    ensure!(forwarded > 0, "no packet was forwarded");
    Ok(())
}

#[test]
fn predicted_owner_serves_every_connection_gue() -> Result<()> {
    every_connection_lands_on_its_predicted_owner(ENCAP_GUE)
}

#[test]
fn predicted_owner_serves_every_connection_ipip() -> Result<()> {
    every_connection_lands_on_its_predicted_owner(ENCAP_IPIP)
}

/// Long-lived streaming downloads stay up while a fourth node joins (tables,
/// then ECMP route) and later one node is drained out of tables and route.
#[test]
fn established_connections_survive_join_and_drain() -> Result<()> {
    let mut lab = Lab::build(LabOptions {
        nodes: 4,
        active: 3,
        ..Default::default()
    })?;
    lab.start_servers()?;
    let stream_ms = 7000;
    let mut streams = Vec::new();
    for i in 0..40u16 {
        let vip = if i % 4 == 3 {
            IpAddr::V6(VIP6)
        } else {
            IpAddr::V4(VIP4)
        };
        let s = lab::connect(&lab, vip, Some(42000 + i), TIMEOUT)?;
        let local = s.local_addr()?;
        let mut r = lab::get(s, &format!("/stream?ms={stream_ms}"))?;
        let first = lab::next_line(&mut r)?.context("no first line")?;
        let received = Arc::new(AtomicUsize::new(1));
        let count = received.clone();
        streams.push((
            local,
            first.clone(),
            received,
            std::thread::spawn(move || -> Result<usize> {
                loop {
                    let lines = count.load(Ordering::Relaxed);
                    match lab::next_line(&mut r)? {
                        Some(l) if l == "done" => return Ok(lines),
                        Some(l) if l == first => count.fetch_add(1, Ordering::Relaxed),
                        Some(l) => bail!("server changed from {first} to {l}"),
                        None => bail!("stream from {first} cut after {lines} lines"),
                    };
                }
            }),
        ));
    }
    // Every stream carries data before the join...
    let streams_flow = |what: &str| {
        let base: Vec<usize> = streams
            .iter()
            .map(|(_, _, n, _)| n.load(Ordering::Relaxed))
            .collect();
        lab::wait_for(what, TIMEOUT, || {
            streams.iter().zip(&base).all(|((_, _, n, t), b)| {
                t.is_finished() || n.load(Ordering::Relaxed) >= b + LINES_PER_STEP
            })
        });
    };
    streams_flow("every stream to carry data before the join");
    let mut history = vec![lab.live.clone()];
    lab.set_members(&[1, 2, 3, 4], &[])?;
    history.push(lab.live.clone());
    // New connections reach the new node too.
    let mut new_on_4 = 0;
    for p in 0..40 {
        let s = lab::connect(&lab, IpAddr::V4(VIP4), Some(43000 + p), TIMEOUT)?;
        let mut r = lab::get(s, "/whoami")?;
        if lab::next_line(&mut r)?.as_deref() == Some("node4") {
            new_on_4 += 1;
        }
    }
    ensure!(new_on_4 > 0, "node 4 got no new connection after joining");
    // ... and through the join's tables (second hops) before the drain.
    streams_flow("every stream to carry data through the join's tables");
    lab.set_members(&[1, 2, 4], &[3])?;
    history.push(lab.live.clone());
    let chain = |local: std::net::SocketAddr| -> String {
        let vip = if local.is_ipv4() {
            IpAddr::V4(VIP4)
        } else {
            IpAddr::V6(VIP6)
        };
        let f = dataplane::predict::Flow {
            client: local.ip(),
            client_port: local.port(),
            vip,
            vip_port: 80,
            proto: 6,
        };
        history
            .iter()
            .map(|t| {
                f.bucket(lab.opts.seed, t)
                    .map(|b| format!("{}/{}", b.first, b.second))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" -> ")
    };
    let mut broken = Vec::new();
    for (local, first, _, t) in streams {
        match t.join().map_err(|_| anyhow::anyhow!("reader panicked"))? {
            // "done" arrived: the stream was never cut. The line count only
            // guards against an empty stream (timing varies under load).
            Ok(lines) if lines >= 20 => {}
            Ok(lines) => broken.push(format!(
                "{local} ({first}, buckets {}): only {lines} lines",
                chain(local)
            )),
            Err(e) => broken.push(format!(
                "{local} ({first}, buckets {}): {e:#}",
                chain(local)
            )),
        }
    }
    ensure!(
        broken.is_empty(),
        "broken connections:\n{}",
        broken.join("\n")
    );
    // After the drain node 3 gets no new connection.
    for p in 0..30 {
        let s = lab::connect(&lab, IpAddr::V4(VIP4), Some(44000 + p), TIMEOUT)?;
        let mut r = lab::get(s, "/whoami")?;
        let who = lab::next_line(&mut r)?.unwrap_or_default();
        ensure!(who != "node3", "drained node3 took a new connection");
    }
    Ok(())
}

fn tcp_maxseg(s: &TcpStream) -> u32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            &mut v as *mut _ as *mut _,
            &mut len,
        );
    }
    v as u32
}

/// Client ports whose flows to VIP4 are owned by another node than `ingress`.
fn forwarded_ports(lab: &Lab, ingress: u16, from: u16, count: usize) -> Vec<u16> {
    (from..from + 1000)
        .filter(|&p| {
            let local = std::net::SocketAddr::new(IpAddr::V4(lab::CLIENT4), p);
            lab.predict(local, IpAddr::V4(VIP4))
                .is_some_and(|b| b.first != ingress)
        })
        .take(count)
        .collect()
}

/// Full-size segments cross the forward path. The router sends everything
/// to node 1 and the flows are chosen (by the predictor) to be owned by
/// other nodes, so every segment is encapsulated. With the MSS clamp the
/// uploads complete and the client's MSS shows the clamp; without it the
/// encapsulated full-size segments exceed the MTU and the uploads stall.
#[test]
fn full_size_segments_cross_the_forward_path() -> Result<()> {
    let size = 2 << 20;
    let mut lab = Lab::build(LabOptions::default())?;
    lab.start_servers()?;
    lab.set_route(&[1])?;
    let clamp4 = clamped_mss(1500, false, true, false) as u32;
    for p in forwarded_ports(&lab, 1, 45000, 4) {
        let s = lab::connect(&lab, IpAddr::V4(VIP4), Some(p), TIMEOUT)?;
        let mss = tcp_maxseg(&s);
        ensure!(
            mss <= clamp4 && mss + 40 >= clamp4,
            "client MSS {mss}, clamp {clamp4}"
        );
        let answer = lab::upload(s, size)?;
        ensure!(
            answer.ends_with(&format!("received {size}")),
            "upload answer: {answer}"
        );
    }
    let n1 = lab.counters4(1)?;
    ensure!(
        n1["fwd_first_hop"] > 4 * (size as u64 / 1500),
        "node 1 forwarded only {n1:?}"
    );
    ensure!(n1["drop_too_big"] == 0, "node 1 dropped: {n1:?}");
    ensure!(
        n1["mss_clamped"] == 0,
        "node 1 answered none of these flows"
    );
    let clamped: u64 = lab
        .nodes
        .iter()
        .map(|n| {
            n.dp.counters(Some(&Lab::vips()[0]))
                .map(|c| c["mss_clamped"])
                .unwrap_or(0)
        })
        .sum();
    ensure!(clamped >= 4, "SYN-ACKs clamped: {clamped}");

    // Control: the same forward path without the clamp.
    drop(lab);
    let mut lab = Lab::build(LabOptions {
        clamp_mss: false,
        ..Default::default()
    })?;
    lab.start_servers()?;
    lab.set_route(&[1])?;
    for p in forwarded_ports(&lab, 1, 46000, 2) {
        let s = lab::connect(&lab, IpAddr::V4(VIP4), Some(p), Duration::from_millis(1500))?;
        let r = lab::upload(s, size);
        ensure!(
            r.is_err(),
            "without the clamp a forwarded upload completed: {r:?}"
        );
    }
    let n1 = lab.counters4(1)?;
    ensure!(
        n1["drop_too_big"] > 0,
        "control: no segment was too big: {n1:?}"
    );
    Ok(())
}

/// An IPv4 packet with a tunnel header (GUE to the default port, or IPIP)
/// around `inner`, marked as a first-hop packet the way nodes mark theirs.
fn tunnel_packet(src: Ipv4Addr, dst: Ipv4Addr, gue: bool, inner: &[u8]) -> Result<Vec<u8>> {
    let mut extra = Vec::new();
    if gue {
        let udp = etherparse::UdpHeader {
            source_port: 0xc123,
            destination_port: DEFAULT_GUE_PORT,
            length: (UDP_AND_GUE_LEN + inner.len()) as u16,
            checksum: 0,
        };
        extra.extend_from_slice(&udp.to_bytes());
        extra.extend_from_slice(&[0, IpNumber::IPV4.0, 0, 0]);
    }
    let proto = if gue { IpNumber::UDP } else { IpNumber::IPV4 };
    let mut ip = Ipv4Header::new(
        (extra.len() + inner.len()) as u16,
        64,
        proto,
        src.octets(),
        dst.octets(),
    )?;
    ip.identification = IPV4_ID_MARK | u16::from(HOP_FIRST);
    ip.dont_fragment = true;
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = ip.to_bytes().to_vec();
    out.extend_from_slice(&extra);
    out.extend_from_slice(inner);
    Ok(out)
}

const UDP_AND_GUE_LEN: usize = 8 + 4;

/// Sends a complete IPv4 packet (our own header) from namespace `ns`.
fn inject(ns: &lab::Netns, packet: Vec<u8>, dst: Ipv4Addr) -> Result<()> {
    ns.run(move || {
        let raw = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::from(libc::SOCK_RAW),
            Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
        )?;
        raw.send_to(&packet, &SocketAddr::new(IpAddr::V4(dst), 0).into())?;
        Ok(())
    })
}

/// Whether `f` comes to hold within `limit` (the lab's poll; an error of
/// `f` ends the wait and is returned).
fn eventually(limit: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<bool> {
    let mut failed = None;
    let held = lab::wait::poll("a packet's effect", limit, || match f() {
        Ok(held) => held.then_some(()),
        Err(e) => {
            failed = Some(e);
            Some(())
        }
    })
    .is_ok();
    failed.map_or(Ok(held), Err)
}

/// No open tunnel relay. Node 1 is addressed with tunnel packets carrying
/// a VIP segment that node 1's table sends on to node 3 (bucket first hop
/// 1, second hop 3, no local socket): a third namespace. From a member
/// (node 2, the control) the segment reaches node 3, so the path and the
/// measurement work; the very same packet from a non-member (the client)
/// is dropped at node 1 and never reaches node 3, over GUE and IPIP; and
/// an inner packet that is not VIP traffic (a datagram for a socket on
/// node 3) is dropped even from a member.
#[test]
fn tunnel_packets_from_non_members_never_leave_the_node() -> Result<()> {
    let mut lab = Lab::build(LabOptions::default())?;
    // Node 3 drains: its buckets keep it as second hop behind 1 or 2.
    lab.set_members(&[1, 2], &[3])?;
    let port = (40000..50000)
        .find(|&p| {
            let b = lab.predict(
                SocketAddr::new(IpAddr::V4(lab::CLIENT4), p),
                IpAddr::V4(VIP4),
            );
            b.is_some_and(|b| b.first == 1 && b.second == 3)
        })
        .context("no flow with buckets 1 -> 3")?;
    let mut segment = Vec::new();
    etherparse::PacketBuilder::ipv4(lab::CLIENT4.octets(), VIP4.octets(), 64)
        .tcp(port, lab::HTTP_PORT, 1000, 64000)
        .ack(1)
        .write(&mut segment, b"injected")?;
    let node1 = lab::underlay(1).0;
    let node3 = lab::underlay(3).0;
    let (member, stranger) = (lab::underlay(2).0, lab::CLIENT4);
    let node = |id| lab.node(id).context("node missing");
    let decap3 = || -> Result<u64> { Ok(lab.counters4(3)?["decap"]) };
    let global1 = |c: &str| -> Result<u64> { Ok(node(1)?.dp.counters(None)?[c]) };
    // A datagram for node 3 itself: what an open relay would deliver.
    let victim = node(3)?
        .ns
        .run(|| Ok(std::net::UdpSocket::bind((node3, 9999))?))?;
    victim.set_nonblocking(true)?;
    let mut relay = Vec::new();
    etherparse::PacketBuilder::ipv4(lab::CLIENT4.octets(), node3.octets(), 64)
        .udp(5555, 9999)
        .write(&mut relay, b"relayed")?;

    let from_member = |gue| {
        inject(
            &node(2)?.ns,
            tunnel_packet(member, node1, gue, &segment)?,
            node1,
        )
    };
    for gue in [true, false] {
        let how = if gue { "GUE" } else { "IPIP" };
        // Control: a member's packet crosses node 1 to node 3.
        let before = decap3()?;
        from_member(gue)?;
        ensure!(
            eventually(TIMEOUT, || Ok(decap3()? > before))?,
            "{how} control: the member's packet did not reach node 3"
        );

        // The same bytes from a non-member: dropped at node 1, counted.
        let (before3, dropped) = (decap3()?, global1("drop_not_member")?);
        inject(
            &lab.client,
            tunnel_packet(stranger, node1, gue, &segment)?,
            node1,
        )?;
        eventually(TIMEOUT, || {
            Ok(global1("drop_not_member")? > dropped || decap3()? > before3)
        })?;
        // A control packet sent after it arrives; the other must not have.
        from_member(gue)?;
        ensure!(
            eventually(TIMEOUT, || Ok(decap3()? > before3))?,
            "{how}: second control packet lost"
        );
        std::thread::sleep(Duration::from_millis(50));
        ensure!(
            decap3()? == before3 + 1,
            "{how}: the non-member's packet reached node 3"
        );
        ensure!(
            global1("drop_not_member")? == dropped + 1,
            "{how}: node 1 did not count the non-member's packet"
        );

        // Not VIP traffic inside a tunnel: dropped even from a member.
        for (who, ns, src) in [
            ("member", &node(2)?.ns, member),
            ("non-member", &lab.client, stranger),
        ] {
            let counter = if who == "member" {
                "drop_decap_not_vip"
            } else {
                "drop_not_member"
            };
            let dropped = global1(counter)?;
            inject(ns, tunnel_packet(src, node1, gue, &relay)?, node1)?;
            ensure!(
                eventually(TIMEOUT, || Ok(global1(counter)? > dropped))?,
                "{how} relay from a {who}: not counted as {counter}"
            );
        }
    }
    // The victim's socket works (sent straight, not through a tunnel) and
    // holds only that datagram: nothing relayed through node 1 arrived.
    inject(&lab.client, relay.clone(), node3)?;
    let mut got = Vec::new();
    eventually(TIMEOUT, || {
        let mut buf = [0u8; 64];
        if let Ok((n, _)) = victim.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        Ok(!got.is_empty())
    })?;
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 64];
    while let Ok((n, _)) = victim.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    ensure!(
        got == vec![b"relayed".to_vec()],
        "node 3's socket got {} datagrams, want exactly the direct one",
        got.len()
    );
    Ok(())
}
