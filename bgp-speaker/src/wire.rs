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

use crate::config::{Origin, RouteAttrs};
use crate::iana::{
    BGP_VERSION, UNSPECIFIC, afi, capability, code, header, msg, open as open_err, refresh_subtype,
    safi,
};
use crate::notification::header_bytes;
use crate::raw_check::{self, CheckCtx, RefreshRequest, UpdateSummary};

pub use crate::iana::AS_TRANS;
pub use crate::notification::{HEADER_LEN, MAX_LEN, Notification};

pub const TYPE_OPEN: u8 = msg::OPEN;
pub const TYPE_UPDATE: u8 = msg::UPDATE;
pub const TYPE_NOTIFICATION: u8 = msg::NOTIFICATION;
pub const TYPE_KEEPALIVE: u8 = msg::KEEPALIVE;
pub const TYPE_ROUTE_REFRESH: u8 = msg::ROUTE_REFRESH;

/// Smallest OPEN: version, AS, hold time, identifier, parameters length.
const MIN_OPEN_LEN: usize = HEADER_LEN + 10;
/// Smallest UPDATE: the two length fields.
const MIN_UPDATE_LEN: usize = HEADER_LEN + 4;
/// Smallest NOTIFICATION: code and subcode.
const MIN_NOTIFICATION_LEN: usize = HEADER_LEN + 2;

impl From<BgpNotificationMessage> for Notification {
    fn from(m: BgpNotificationMessage) -> Self {
        // netgauze knows the RFC mapping; we only need its code and subcode,
        // which are the two bytes after the header once it is written.
        let mut buf = Vec::new();
        match BgpMessage::Notification(m).write(&mut buf) {
            Ok(()) if buf.len() >= MIN_NOTIFICATION_LEN => Notification::new(
                buf[HEADER_LEN],
                buf[HEADER_LEN + 1],
                buf[MIN_NOTIFICATION_LEN..].to_vec(),
            ),
            _ => Notification::new(code::HEADER, UNSPECIFIC, Vec::new()),
        }
    }
}

/// Validates a 19-byte header (RFC 4271 section 6.1); returns the total
/// message length.
pub fn check_header(h: &[u8; HEADER_LEN]) -> Result<usize, Notification> {
    if h[..16].iter().any(|b| *b != 0xff) {
        return Err(Notification::new(
            code::HEADER,
            header::NOT_SYNCHRONIZED,
            Vec::new(),
        ));
    }
    let len = u16::from_be_bytes([h[16], h[17]]);
    let ty = h[18];
    let bad_len =
        || Notification::new(code::HEADER, header::BAD_LENGTH, len.to_be_bytes().to_vec());
    let len_usize = usize::from(len);
    if !(HEADER_LEN..=MAX_LEN).contains(&len_usize) {
        return Err(bad_len());
    }
    let ok = match ty {
        TYPE_OPEN => len_usize >= MIN_OPEN_LEN,
        TYPE_UPDATE => len_usize >= MIN_UPDATE_LEN,
        TYPE_NOTIFICATION => len_usize >= MIN_NOTIFICATION_LEN,
        TYPE_KEEPALIVE => len_usize == HEADER_LEN,
        // Judged with the negotiated capabilities: RFC 7313 has its own
        // error for a bad length (`raw_check::check_route_refresh`).
        TYPE_ROUTE_REFRESH => true,
        _ => return Err(Notification::new(code::HEADER, header::BAD_TYPE, vec![ty])),
    };
    if ok { Ok(len_usize) } else { Err(bad_len()) }
}

/// A message received from a peer, decoded far enough for the FSM.
#[derive(Debug)]
pub enum Incoming {
    Open(Box<BgpOpenMessage>),
    Update(UpdateSummary),
    Notification(Notification),
    KeepAlive,
    /// A ROUTE-REFRESH request for a family of the session.
    RouteRefresh(RefreshRequest),
    /// A ROUTE-REFRESH to ignore (RFC 7313 section 5, RFC 2918 section 4).
    Ignored,
}

impl Incoming {
    /// The message type, for FSM errors (RFC 6608 data).
    pub fn msg_type(&self) -> u8 {
        match self {
            Incoming::Open(_) => TYPE_OPEN,
            Incoming::Update(_) => TYPE_UPDATE,
            Incoming::Notification(_) => TYPE_NOTIFICATION,
            Incoming::KeepAlive => TYPE_KEEPALIVE,
            Incoming::RouteRefresh(_) | Incoming::Ignored => TYPE_ROUTE_REFRESH,
        }
    }
}

/// Everything one connection needs to decode what its peer sends.
pub struct Decoder {
    ctx: BgpParsingContext,
    pub check: CheckCtx,
}

impl Decoder {
    /// A fresh connection to a peer inside (`ebgp` false) or outside our AS.
    pub fn new(ebgp: bool) -> Self {
        Decoder {
            ctx: new_context(),
            check: CheckCtx {
                ebgp,
                ..CheckCtx::default()
            },
        }
    }

    /// Checks and decodes one complete message whose header passed
    /// [`check_header`].
    pub fn decode(&mut self, frame: &[u8]) -> Result<Incoming, Notification> {
        match frame.get(18).copied().unwrap_or(0) {
            TYPE_UPDATE => raw_check::check_update(frame, &self.check).map(Incoming::Update),
            TYPE_ROUTE_REFRESH => Ok(raw_check::check_route_refresh(frame, &self.check)?
                .map_or(Incoming::Ignored, Incoming::RouteRefresh)),
            TYPE_OPEN => {
                raw_check::check_open(frame)?;
                let m = decode_open(frame, &mut self.ctx)?;
                if let Incoming::Open(o) = &m {
                    // We always advertise these: the peer's OPEN decides.
                    self.check.asn4 = self.ctx.asn4();
                    self.check.enhanced_route_refresh =
                        raw_check::open_has_capability(frame, capability::ENHANCED_ROUTE_REFRESH);
                    let (v4, v6) = families(o);
                    self.check.ipv4 = v4;
                    self.check.ipv6 = v6;
                }
                Ok(m)
            }
            _ => decode(frame, &mut self.ctx),
        }
    }
}

/// Where the BGP identifier sits in an OPEN.
const BGP_ID_AT: usize = HEADER_LEN + 5;

/// Decodes an OPEN. RFC 6286 allows any non-zero identifier, but netgauze
/// refuses the ones that read as multicast or broadcast addresses: those
/// are parsed with a stand-in and put back.
fn decode_open(frame: &[u8], ctx: &mut BgpParsingContext) -> Result<Incoming, Notification> {
    let id = frame
        .get(BGP_ID_AT..BGP_ID_AT + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(Ipv4Addr::from)
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    if id.is_unspecified() || !(id.is_multicast() || id.is_broadcast()) {
        return decode(frame, ctx);
    }
    let mut stand_in = frame.to_vec();
    stand_in[BGP_ID_AT..BGP_ID_AT + 4].copy_from_slice(&Ipv4Addr::new(192, 0, 2, 1).octets());
    match decode(&stand_in, ctx)? {
        Incoming::Open(o) => Ok(Incoming::Open(Box::new(BgpOpenMessage::new(
            o.my_as(),
            o.hold_time(),
            id,
            o.params().to_vec(),
        )))),
        other => Ok(other),
    }
}

/// The unicast families of a peer's OPEN (IPv4 alone without MP capability,
/// RFC 4760).
fn families(open: &BgpOpenMessage) -> (bool, bool) {
    let mut ipv4 = false;
    let mut ipv6 = false;
    let mut any_mp = false;
    for c in open.capabilities() {
        if let BgpCapability::MultiProtocolExtensions(mp) = c {
            any_mp = true;
            match mp.address_type() {
                AddressType::Ipv4Unicast => ipv4 = true,
                AddressType::Ipv6Unicast => ipv6 = true,
                _ => {}
            }
        }
    }
    (ipv4 || !any_mp, ipv6)
}

/// Decodes one complete OPEN, NOTIFICATION or KEEPALIVE with netgauze
/// (header already checked by `check_header`). UPDATE and ROUTE-REFRESH
/// go through [`Decoder`], which checks them by hand (see `raw_check`).
pub fn decode(frame: &[u8], ctx: &mut BgpParsingContext) -> Result<Incoming, Notification> {
    let ty = frame.get(18).copied().unwrap_or(0);
    match ty {
        TYPE_KEEPALIVE => return Ok(Incoming::KeepAlive),
        TYPE_NOTIFICATION => {
            // Parsed by hand: an unknown code from the peer still closes the
            // session cleanly instead of becoming a parse error of our own.
            let code = frame.get(HEADER_LEN).copied().unwrap_or(0);
            let subcode = frame.get(HEADER_LEN + 1).copied().unwrap_or(0);
            let data = frame.get(MIN_NOTIFICATION_LEN..).unwrap_or(&[]).to_vec();
            return Ok(Incoming::Notification(Notification::new(
                code, subcode, data,
            )));
        }
        TYPE_OPEN => {}
        _ => {
            return Err(Notification::new(code::HEADER, header::BAD_TYPE, vec![ty]));
        }
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
        Ok(_) => Err(Notification::new(code::HEADER, header::BAD_TYPE, vec![ty])),
        Err(e) => Err(open_error(BgpNotificationMessage::from(e).into())),
    }
}

/// RFC 4271 section 6.2 asks for data only with an unsupported version (the
/// version we speak) and RFC 5492 with an unsupported capability; netgauze
/// adds the offending field to the others, which we drop.
fn open_error(mut n: Notification) -> Notification {
    match (n.code, n.subcode) {
        (code::OPEN, open_err::UNSUPPORTED_VERSION) => {
            n.data = u16::from(BGP_VERSION).to_be_bytes().to_vec();
        }
        (code::OPEN, open_err::UNSUPPORTED_CAPABILITY) => {}
        _ => n.data.clear(),
    }
    n
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
    header_bytes(TYPE_KEEPALIVE, HEADER_LEN)
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
        BgpCapability::EnhancedRouteRefresh,
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

/// RFC 7313 Beginning-of-RIB (`begin`) or End-of-RIB marker around the
/// answer to a ROUTE-REFRESH request.
pub fn refresh_marker(v6: bool, begin: bool) -> Vec<u8> {
    let mut out = header_bytes(TYPE_ROUTE_REFRESH, HEADER_LEN + 4);
    out.extend_from_slice(&(if v6 { afi::IPV6 } else { afi::IPV4 }).to_be_bytes());
    out.push(if begin {
        refresh_subtype::BEGIN
    } else {
        refresh_subtype::END
    });
    out.push(safi::UNICAST);
    out
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
    /// RFC 7313: we advertise it, so the peer's OPEN decides.
    pub enhanced_route_refresh: bool,
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
        // RFC 4271 section 6.2 names no data for this error.
        return Err(Notification::new(
            code::OPEN,
            open_err::BAD_PEER_AS,
            Vec::new(),
        ));
    }
    let id = open.bgp_id();
    // RFC 6286: the identifier must differ from ours on iBGP sessions; the
    // parser already rejected 0.0.0.0.
    if !ebgp && id == our_id {
        return Err(Notification::new(
            code::OPEN,
            open_err::BAD_BGP_ID,
            Vec::new(),
        ));
    }
    let (ipv4, ipv6) = families(open);
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
        enhanced_route_refresh: caps
            .iter()
            .any(|c| matches!(c, BgpCapability::EnhancedRouteRefresh)),
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
