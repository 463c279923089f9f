//! BGP message framing, decoding and encoding.
//!
//! The header (marker, length, type) and NOTIFICATION/KEEPALIVE are checked
//! here by hand so that every framing error maps to the RFC 4271 section 6.1
//! code and subcode before a byte of the body is trusted; OPEN, UPDATE and
//! ROUTE-REFRESH bodies are decoded and encoded with netgauze-bgp-pkt.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4PathSegment, AsPath, AsPathSegmentType, Communities, LargeCommunities,
    LocalPreference, MpReach, MpUnreach, MultiExitDiscriminator, NextHop, Origin as NgOrigin,
    PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use serde::Serialize;

use crate::config::{Origin, RouteAttrs};

pub const HEADER_LEN: usize = 19;
/// We do not advertise RFC 8654 extended messages, so 4096 is the limit for
/// every type.
pub const MAX_LEN: usize = 4096;
pub const AS_TRANS: u16 = 23456;

pub const TYPE_OPEN: u8 = 1;
pub const TYPE_UPDATE: u8 = 2;
pub const TYPE_NOTIFICATION: u8 = 3;
pub const TYPE_KEEPALIVE: u8 = 4;
pub const TYPE_ROUTE_REFRESH: u8 = 5;

/// A NOTIFICATION as code, subcode and data (RFC 4271 section 4.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Self {
            code,
            subcode,
            data: data.into(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Data is truncated so the message never exceeds 4096 bytes.
        let data = &self.data[..self.data.len().min(MAX_LEN - HEADER_LEN - 2)];
        let mut out = header(TYPE_NOTIFICATION, HEADER_LEN + 2 + data.len());
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(data);
        out
    }

    /// Short operator-facing name, e.g. "3/4 UPDATE: attribute flags error".
    pub fn describe(&self) -> String {
        let name = match (self.code, self.subcode) {
            (1, 1) => "header: connection not synchronized",
            (1, 2) => "header: bad message length",
            (1, 3) => "header: bad message type",
            (1, _) => "header error",
            (2, 1) => "OPEN: unsupported version",
            (2, 2) => "OPEN: bad peer AS",
            (2, 3) => "OPEN: bad BGP identifier",
            (2, 4) => "OPEN: unsupported optional parameter",
            (2, 6) => "OPEN: unacceptable hold time",
            (2, 7) => "OPEN: unsupported capability",
            (2, _) => "OPEN error",
            (3, 1) => "UPDATE: malformed attribute list",
            (3, 2) => "UPDATE: unrecognized well-known attribute",
            (3, 3) => "UPDATE: missing well-known attribute",
            (3, 4) => "UPDATE: attribute flags error",
            (3, 5) => "UPDATE: attribute length error",
            (3, 6) => "UPDATE: invalid ORIGIN",
            (3, 8) => "UPDATE: invalid NEXT_HOP",
            (3, 9) => "UPDATE: optional attribute error",
            (3, 10) => "UPDATE: invalid network field",
            (3, 11) => "UPDATE: malformed AS_PATH",
            (3, _) => "UPDATE error",
            (4, _) => "hold timer expired",
            (5, _) => "finite state machine error",
            (6, 2) => "cease: administrative shutdown",
            (6, 3) => "cease: peer de-configured",
            (6, 4) => "cease: administrative reset",
            (6, 5) => "cease: connection rejected",
            (6, 7) => "cease: connection collision resolution",
            (6, 10) => "cease: BFD down",
            (6, _) => "cease",
            (7, _) => "ROUTE-REFRESH error",
            _ => "unknown error code",
        };
        format!("{}/{} {}", self.code, self.subcode, name)
    }
}

impl From<BgpNotificationMessage> for Notification {
    fn from(msg: BgpNotificationMessage) -> Self {
        // netgauze knows the RFC mapping; we only need its code and subcode,
        // which are the two bytes after the header once it is written.
        let mut buf = Vec::new();
        match BgpMessage::Notification(msg).write(&mut buf) {
            Ok(()) if buf.len() >= HEADER_LEN + 2 => Notification::new(
                buf[HEADER_LEN],
                buf[HEADER_LEN + 1],
                buf[HEADER_LEN + 2..].to_vec(),
            ),
            _ => Notification::new(1, 0, Vec::new()),
        }
    }
}

fn header(ty: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.push(ty);
    out
}

/// Validates a 19-byte header; returns the total message length.
pub fn check_header(h: &[u8; HEADER_LEN]) -> Result<usize, Notification> {
    if h[..16].iter().any(|b| *b != 0xff) {
        return Err(Notification::new(1, 1, Vec::new()));
    }
    let len = u16::from_be_bytes([h[16], h[17]]);
    let ty = h[18];
    let bad_len = || Notification::new(1, 2, len.to_be_bytes().to_vec());
    let len_usize = usize::from(len);
    if !(HEADER_LEN..=MAX_LEN).contains(&len_usize) {
        return Err(bad_len());
    }
    let ok = match ty {
        TYPE_OPEN => len_usize >= 29,
        TYPE_UPDATE => len_usize >= 23,
        TYPE_NOTIFICATION => len_usize >= 21,
        TYPE_KEEPALIVE => len_usize == HEADER_LEN,
        TYPE_ROUTE_REFRESH => len_usize == 23,
        _ => return Err(Notification::new(1, 3, vec![ty])),
    };
    if ok { Ok(len_usize) } else { Err(bad_len()) }
}

/// A message received from a peer, decoded far enough for the FSM.
#[derive(Debug)]
pub enum Incoming {
    Open(Box<BgpOpenMessage>),
    Update(Box<BgpUpdateMessage>),
    Notification(Notification),
    KeepAlive,
    RouteRefresh,
}

/// Decodes one complete message (header already checked by `check_header`).
pub fn decode(frame: &[u8], ctx: &mut BgpParsingContext) -> Result<Incoming, Notification> {
    let ty = frame.get(18).copied().unwrap_or(0);
    match ty {
        TYPE_KEEPALIVE => return Ok(Incoming::KeepAlive),
        TYPE_NOTIFICATION => {
            // Parsed by hand: an unknown code from the peer still closes the
            // session cleanly instead of becoming a parse error of our own.
            let code = frame.get(HEADER_LEN).copied().unwrap_or(0);
            let subcode = frame.get(HEADER_LEN + 1).copied().unwrap_or(0);
            let data = frame.get(HEADER_LEN + 2..).unwrap_or(&[]).to_vec();
            return Ok(Incoming::Notification(Notification::new(
                code, subcode, data,
            )));
        }
        _ => {}
    }
    let mut reader = SliceReader::new(frame);
    match BgpMessage::parse(&mut reader, ctx) {
        Ok(BgpMessage::Open(open)) => {
            if open
                .capabilities()
                .iter()
                .any(|c| matches!(c, BgpCapability::FourOctetAs(_)))
            {
                // We always advertise 4-octet AS: from here on AS_PATH is
                // 4-octet in both directions.
                ctx.set_asn4(true);
            }
            Ok(Incoming::Open(Box::new(open)))
        }
        Ok(BgpMessage::Update(u)) => Ok(Incoming::Update(Box::new(u))),
        Ok(BgpMessage::RouteRefresh(_)) => Ok(Incoming::RouteRefresh),
        Ok(BgpMessage::KeepAlive) => Ok(Incoming::KeepAlive),
        Ok(BgpMessage::Notification(n)) => Ok(Incoming::Notification(n.into())),
        Err(e) => Err(BgpNotificationMessage::from(e).into()),
    }
}

/// A parsing context for a fresh connection: 2-octet AS until the peer's
/// OPEN says otherwise, and every malformed field is an error.
pub fn new_context() -> BgpParsingContext {
    // Capability errors are not fatal: netgauze reports capabilities it
    // cannot interpret (an MP capability with an AFI/SAFI pair it does not
    // know, as multi-service routers send) as errors, and RFC 5492 says a
    // speaker ignores capabilities it does not support. A capability that
    // breaks the parameter's TLV structure still fails the OPEN.
    BgpParsingContext::new(
        false,
        Default::default(),
        Default::default(),
        true,
        true,
        false,
        true,
    )
}

fn write(msg: BgpMessage) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    // Writing into a Vec only fails on oversize messages, which our builders
    // never produce (one prefix per UPDATE, bounded attributes).
    if let Err(e) = msg.write(&mut buf) {
        tracing::error!(error = %e, "BUG: could not encode a BGP message");
        buf.clear();
    }
    buf
}

pub fn keepalive() -> Vec<u8> {
    header(TYPE_KEEPALIVE, HEADER_LEN)
}

/// What we put in our OPEN.
pub struct OpenParams {
    pub local_as: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub graceful_restart: Option<(u16, bool)>,
}

pub fn open(p: &OpenParams) -> Vec<u8> {
    let my_as = u16::try_from(p.local_as).unwrap_or(AS_TRANS);
    let mut caps = vec![
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv4Unicast,
        )),
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv6Unicast,
        )),
        BgpCapability::RouteRefresh,
        BgpCapability::FourOctetAs(FourOctetAsCapability::new(p.local_as)),
    ];
    if let Some((time, restarting)) = p.graceful_restart {
        // Forwarding state preserved: the XDP maps keep forwarding while the
        // process restarts.
        caps.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(
                restarting,
                false,
                time.min(4095),
                vec![
                    GracefulRestartAddressFamily::new(true, AddressType::Ipv4Unicast),
                    GracefulRestartAddressFamily::new(true, AddressType::Ipv6Unicast),
                ],
            ),
        ));
    }
    write(BgpMessage::Open(BgpOpenMessage::new(
        my_as,
        p.hold_time,
        p.router_id,
        vec![BgpOpenMessageParameter::new_capabilities(caps)],
    )))
}

/// How to build path attributes for one session.
pub struct UpdateCtx {
    pub local_as: u32,
    pub ebgp: bool,
    pub asn4: bool,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
}

fn attr(optional: bool, transitive: bool, value: PathAttributeValue) -> Option<PathAttribute> {
    PathAttribute::from(optional, transitive, false, false, value)
        .or_else(|(value, _)| PathAttribute::from(optional, transitive, false, true, value))
        .ok()
}

fn common_attrs(ctx: &UpdateCtx, a: &RouteAttrs) -> Vec<PathAttribute> {
    let origin = match a.origin {
        Origin::Igp => NgOrigin::IGP,
        Origin::Egp => NgOrigin::EGP,
        Origin::Incomplete => NgOrigin::Incomplete,
    };
    let path: Vec<u32> = if ctx.ebgp {
        vec![ctx.local_as; 1 + usize::from(a.as_path_prepend)]
    } else {
        Vec::new()
    };
    let as_path = if path.is_empty() {
        if ctx.asn4 {
            AsPath::As4PathSegments(Box::new([]))
        } else {
            AsPath::As2PathSegments(Box::new([]))
        }
    } else if ctx.asn4 {
        AsPath::As4PathSegments(Box::new([As4PathSegment::new(
            AsPathSegmentType::AsSequence,
            path,
        )]))
    } else {
        let p: Vec<u16> = path
            .iter()
            .map(|a| u16::try_from(*a).unwrap_or(AS_TRANS))
            .collect();
        AsPath::As2PathSegments(Box::new([As2PathSegment::new(
            AsPathSegmentType::AsSequence,
            p,
        )]))
    };
    let mut out = Vec::new();
    out.extend(attr(false, true, PathAttributeValue::Origin(origin)));
    out.extend(attr(false, true, PathAttributeValue::AsPath(as_path)));
    if let Some(med) = a.med {
        out.extend(attr(
            true,
            false,
            PathAttributeValue::MultiExitDiscriminator(MultiExitDiscriminator::new(med)),
        ));
    }
    if !ctx.ebgp {
        out.extend(attr(
            false,
            true,
            PathAttributeValue::LocalPreference(LocalPreference::new(a.local_pref.unwrap_or(100))),
        ));
    }
    if !a.communities.is_empty() {
        let c: Vec<Community> = a.communities.iter().map(|c| Community::new(*c)).collect();
        out.extend(attr(
            true,
            true,
            PathAttributeValue::Communities(Communities::new(c)),
        ));
    }
    if !a.large_communities.is_empty() {
        let c: Vec<LargeCommunity> = a
            .large_communities
            .iter()
            .map(|(g, l1, l2)| LargeCommunity::new(*g, *l1, *l2))
            .collect();
        out.extend(attr(
            true,
            true,
            PathAttributeValue::LargeCommunities(LargeCommunities::new(c)),
        ));
    }
    out
}

/// Whether a prefix can be carried as unicast NLRI (not multicast).
pub fn is_unicast(prefix: IpNet) -> bool {
    match prefix {
        IpNet::V4(p) => Ipv4Unicast::from_net(p).is_ok(),
        IpNet::V6(p) => Ipv6Unicast::from_net(p).is_ok(),
    }
}

/// An UPDATE announcing one prefix, or `None` when the session has no next
/// hop of the prefix's family.
pub fn announce(ctx: &UpdateCtx, prefix: IpNet, a: &RouteAttrs) -> Option<Vec<u8>> {
    let mut attrs = common_attrs(ctx, a);
    match prefix {
        IpNet::V4(p) => {
            let nh = ctx.next_hop_v4?;
            let nlri = Ipv4UnicastAddress::new_no_path_id(Ipv4Unicast::from_net(p).ok()?);
            attrs.insert(
                2,
                attr(false, true, PathAttributeValue::NextHop(NextHop::new(nh)))?,
            );
            Some(write(BgpMessage::Update(BgpUpdateMessage::new(
                vec![],
                attrs,
                vec![nlri],
            ))))
        }
        IpNet::V6(p) => {
            let nh = ctx.next_hop_v6?;
            let nlri = Ipv6UnicastAddress::new(None, Ipv6Unicast::from_net(p).ok()?);
            attrs.push(attr(
                true,
                false,
                PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                    next_hop_global: nh,
                    next_hop_local: None,
                    nlri: Box::new([nlri]),
                }),
            )?);
            Some(write(BgpMessage::Update(BgpUpdateMessage::new(
                vec![],
                attrs,
                vec![],
            ))))
        }
    }
}

/// An UPDATE withdrawing one prefix.
pub fn withdraw(prefix: IpNet) -> Option<Vec<u8>> {
    match prefix {
        IpNet::V4(p) => {
            let w = Ipv4UnicastAddress::new_no_path_id(Ipv4Unicast::from_net(p).ok()?);
            Some(write(BgpMessage::Update(BgpUpdateMessage::new(
                vec![w],
                vec![],
                vec![],
            ))))
        }
        IpNet::V6(p) => {
            let w = Ipv6UnicastAddress::new(None, Ipv6Unicast::from_net(p).ok()?);
            let a = attr(
                true,
                false,
                PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast {
                    nlri: Box::new([w]),
                }),
            )?;
            Some(write(BgpMessage::Update(BgpUpdateMessage::new(
                vec![],
                vec![a],
                vec![],
            ))))
        }
    }
}

/// RFC 4724 End-of-RIB marker for one family.
pub fn end_of_rib(v6: bool) -> Vec<u8> {
    if v6 {
        let a = attr(
            true,
            false,
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri: Box::new([]) }),
        );
        write(BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            a.into_iter().collect::<Vec<_>>(),
            vec![],
        )))
    } else {
        write(BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            vec![],
            vec![],
        )))
    }
}

/// Number of prefixes an UPDATE announces and withdraws (for counters).
pub fn update_prefix_counts(u: &BgpUpdateMessage) -> (usize, usize) {
    let mut ann = u.nlri().len();
    let mut wd = u.withdraw_routes().len();
    for a in u.path_attributes() {
        match a.value() {
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast { nlri, .. }) => ann += nlri.len(),
            PathAttributeValue::MpReach(MpReach::Ipv4Unicast { nlri, .. }) => ann += nlri.len(),
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => wd += nlri.len(),
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => wd += nlri.len(),
            _ => {}
        }
    }
    (ann, wd)
}

/// What we learned from the peer's OPEN.
#[derive(Debug, Clone)]
pub struct PeerOpen {
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub ipv4: bool,
    pub ipv6: bool,
    pub asn4: bool,
    pub route_refresh: bool,
    pub graceful_restart: bool,
}

/// Checks the peer's OPEN against what we expect (RFC 4271 section 6.2).
pub fn check_open(
    open: &BgpOpenMessage,
    expected_as: u32,
    our_id: Ipv4Addr,
    ebgp: bool,
) -> Result<PeerOpen, Notification> {
    let caps = open.capabilities();
    let asn4 = caps
        .iter()
        .any(|c| matches!(c, BgpCapability::FourOctetAs(_)));
    let asn = open.my_asn4();
    let two_octet_ok = u32::from(open.my_as()) == asn || (asn > 0xffff && open.my_as() == AS_TRANS);
    if asn != expected_as || !two_octet_ok {
        return Err(Notification::new(2, 2, open.my_as().to_be_bytes().to_vec()));
    }
    let id = open.bgp_id();
    // RFC 6286: the identifier must differ from ours on iBGP sessions; the
    // parser already rejected 0.0.0.0, multicast and broadcast.
    if !ebgp && id == our_id {
        return Err(Notification::new(2, 3, id.octets().to_vec()));
    }
    let mut ipv4 = false;
    let mut ipv6 = false;
    let mut any_mp = false;
    for c in &caps {
        if let BgpCapability::MultiProtocolExtensions(mp) = c {
            any_mp = true;
            match mp.address_type() {
                AddressType::Ipv4Unicast => ipv4 = true,
                AddressType::Ipv6Unicast => ipv6 = true,
                _ => {}
            }
        }
    }
    if !any_mp {
        // RFC 4760: a peer without the capability speaks IPv4 unicast only.
        ipv4 = true;
    }
    Ok(PeerOpen {
        asn,
        hold_time: open.hold_time(),
        router_id: id,
        ipv4,
        ipv6,
        asn4,
        route_refresh: caps
            .iter()
            .any(|c| matches!(c, BgpCapability::RouteRefresh)),
        graceful_restart: caps
            .iter()
            .any(|c| matches!(c, BgpCapability::GracefulRestartCapability(_))),
    })
}

/// Next hop of a family from a local session address and the configured
/// overrides.
pub fn next_hops(
    local: IpAddr,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let local = match local {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(a)),
        v4 => v4,
    };
    match local {
        IpAddr::V4(a) => (Some(v4.unwrap_or(a)), v6),
        IpAddr::V6(a) => (v4, Some(v6.unwrap_or(a))),
    }
}
