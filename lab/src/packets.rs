//! Test packets, built with etherparse (an implementation independent of
//! ours), and the frames the forwarder must emit for them.
use dataplane_common::{DEFAULT_GUE_PORT, IPV4_ID_MARK};
use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder, PacketBuilderStep,
    UdpHeader,
};

use super::bed::{MAC_ROUTER, MAC_SELF, N2, N2_4, N3, N3_6, SEED, SELF, SELF4, SELF6};
use dataplane::predict::Flow;
use std::net::IpAddr;

#[derive(Clone, Copy)]
pub enum Tcp {
    Syn,
    Ack,
}

pub fn eth_v4() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_ROUTER, MAC_SELF)
}

pub fn tcp4(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    kind: Tcp,
    payload: &[u8],
) -> Vec<u8> {
    tcp(eth_v4().ipv4(src, dst, 64), sport, dport, kind, payload)
}

pub fn tcp6(
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
    kind: Tcp,
    payload: &[u8],
) -> Vec<u8> {
    tcp(eth_v4().ipv6(src, dst, 64), sport, dport, kind, payload)
}

/// The TCP part, the same on either IP version.
fn tcp(
    ip: PacketBuilderStep<IpHeaders>,
    sport: u16,
    dport: u16,
    kind: Tcp,
    payload: &[u8],
) -> Vec<u8> {
    let b = ip.tcp(sport, dport, 1000, 64000);
    let b = match kind {
        Tcp::Syn => b.syn(),
        Tcp::Ack => b.ack(1),
    };
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("packet fits a Vec");
    v
}

pub fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    eth_v4()
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .expect("packet fits a Vec");
    v
}

pub fn flow4(client: [u8; 4], cport: u16, vip: [u8; 4], vport: u16, proto: u8) -> u32 {
    flow_hash(IpAddr::from(client), cport, IpAddr::from(vip), vport, proto)
}

pub fn flow6(client: [u8; 16], cport: u16, vip: [u8; 16], vport: u16, proto: u8) -> u32 {
    flow_hash(IpAddr::from(client), cport, IpAddr::from(vip), vport, proto)
}

/// The kernel's hash of a flow, through the predictor.
fn flow_hash(client: IpAddr, client_port: u16, vip: IpAddr, vip_port: u16, proto: u8) -> u32 {
    Flow {
        client,
        client_port,
        vip,
        vip_port,
        proto,
    }
    .hash(SEED)
    .expect("client and VIP of one family")
}

pub enum Underlay {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

/// The node id a GUE packet from this underlay source carries (the bed's
/// node list); 0, as from a sender without ids, for any other source.
fn sender_id(under: &Underlay) -> u16 {
    match under {
        Underlay::V4(src, _) if *src == SELF4 => SELF,
        Underlay::V4(src, _) if *src == N2_4 => N2,
        Underlay::V6(src, _) if *src == SELF6 => SELF,
        Underlay::V6(src, _) if *src == N3_6 => N3,
        _ => 0,
    }
}

/// The frame the forwarder must emit: `frame` (Ethernet + IP) wrapped for
/// the hop, MACs from the neighbour table.
pub fn encapsulated(
    frame: &[u8],
    under: Underlay,
    gue: bool,
    hop: u8,
    hash: u32,
    dmac: [u8; 6],
) -> Vec<u8> {
    let (l2_len, inner) = if frame[12..14] == [0x81, 0x00] {
        (18, &frame[18..])
    } else {
        (14, &frame[14..])
    };
    let inner_v4 = inner[0] >> 4 == 4;
    let inner_proto = if inner_v4 {
        IpNumber::IPV4
    } else {
        IpNumber::IPV6
    };
    let mut l2 = frame[..l2_len].to_vec();
    l2[0..6].copy_from_slice(&dmac);
    l2[6..12].copy_from_slice(&MAC_SELF);
    let mut extra = Vec::new();
    if gue {
        let sport = 0xc000 | ((hash ^ (hash >> 16)) & 0x3fff) as u16;
        let udp = UdpHeader {
            source_port: sport,
            destination_port: DEFAULT_GUE_PORT,
            length: (8 + 4 + inner.len()) as u16,
            checksum: 0,
        };
        extra.extend_from_slice(&udp.to_bytes());
        let sender = sender_id(&under).to_be_bytes();
        extra.extend_from_slice(&[0, inner_proto.0, sender[0], sender[1]]);
    }
    let proto = if gue { IpNumber::UDP } else { inner_proto };
    let payload_len = (extra.len() + inner.len()) as u16;
    let mut out = l2;
    let et = out.len() - 2;
    match under {
        Underlay::V4(src, dst) => {
            out[et..].copy_from_slice(&[0x08, 0x00]);
            let mut h =
                Ipv4Header::new(payload_len, 64, proto, src, dst).expect("packet fits a Vec");
            h.identification = IPV4_ID_MARK | hop as u16;
            h.dont_fragment = true;
            h.header_checksum = h.calc_header_checksum();
            out.extend_from_slice(&h.to_bytes());
        }
        Underlay::V6(src, dst) => {
            out[et..].copy_from_slice(&[0x86, 0xdd]);
            let h = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::try_new(((hash << 2) & 0xf_fffc) | hop as u32).unwrap(),
                payload_length: payload_len,
                next_header: proto,
                hop_limit: 64,
                source: src,
                destination: dst,
            };
            out.extend_from_slice(&h.to_bytes());
        }
    }
    out.extend_from_slice(&extra);
    out.extend_from_slice(inner);
    out
}

/// `frame` as it arrives encapsulated from another node (router MACs).
pub fn arriving(frame: &[u8], under: Underlay, gue: bool, hop: u8, hash: u32) -> Vec<u8> {
    let mut f = encapsulated(frame, under, gue, hop, hash, MAC_SELF);
    f[6..12].copy_from_slice(&MAC_ROUTER);
    f
}

/// The inner frame after decapsulation: L2 of the outer, inner packet.
pub fn decapsulated(encapsulated_frame: &[u8], inner_frame: &[u8]) -> Vec<u8> {
    let mut out = encapsulated_frame[..14].to_vec();
    out[12..14].copy_from_slice(&inner_frame[12..14]);
    out.extend_from_slice(&inner_frame[14..]);
    out
}
