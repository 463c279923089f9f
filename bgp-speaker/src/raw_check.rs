//! Checks of received OPEN, UPDATE and ROUTE-REFRESH messages on their raw
//! bytes, and the RFC 7606 classification of every UPDATE error.
//!
//! UPDATEs are never handed to netgauze: its decoder stops at the first
//! error and reports one error for the whole message, while RFC 7606 needs
//! the walk to go on past a malformed attribute (to find the NLRI, a
//! duplicate MP_REACH_NLRI or an unrecognized well-known attribute further
//! on) and needs each error classed by the attribute it is in. lbd ignores
//! the routes it receives, so the walk only has to classify and count.
//!
//! Outcomes of [`check_update`]:
//! - `Err(Notification)`: one of the errors RFC 7606 still classes as
//!   session reset, with the code, subcode and data of RFC 4271 section 6.3.
//! - `Ok(summary)` with `errors`: treat-as-withdraw (the UPDATE's routes are
//!   withdrawn, the session stays Established) and attribute discard (the
//!   attribute is dropped, the routes stay), one entry per error.

use serde::Serialize;

use crate::iana::{
    afi, attr, attr_flag, code, open, origin, param, refresh_subtype, route_refresh, safi, segment,
    update,
};
use crate::notification::{HEADER_LEN, Notification};

/// What the session negotiated that changes how a message is judged.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckCtx {
    /// The peer is in another AS: LOCAL_PREF from it is discarded.
    pub ebgp: bool,
    /// Both sides advertised 4-octet AS (RFC 6793).
    pub asn4: bool,
    /// Both sides advertised Enhanced Route Refresh (RFC 7313).
    pub enhanced_route_refresh: bool,
    /// The families negotiated (IPv4 unicast, IPv6 unicast).
    pub ipv4: bool,
    pub ipv6: bool,
}

/// RFC 7606 section 2 approaches short of a session reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    TreatAsWithdraw,
    AttributeDiscard,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::TreatAsWithdraw => "treat-as-withdraw",
            Action::AttributeDiscard => "attribute-discard",
        }
    }
}

/// What was wrong: the attribute, or the structural rule that was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Optional/transitive bits conflict with the type (RFC 7606 3(c)).
    AttributeFlags,
    /// A well-known mandatory attribute is missing (RFC 7606 3(d)).
    MissingWellKnown,
    /// A second copy of an attribute (RFC 7606 3(g)).
    Duplicate,
    /// An attribute runs past the path attributes (RFC 7606 section 4).
    AttributeOverrun,
    Origin,
    AsPath,
    NextHop,
    MultiExitDisc,
    LocalPref,
    AtomicAggregate,
    Aggregator,
    Communities,
    OriginatorId,
    ClusterList,
    MpReachNextHop,
    ExtendedCommunities,
    As4Path,
    As4Aggregator,
    Ipv6ExtendedCommunities,
    LargeCommunities,
    OnlyToCustomer,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::AttributeFlags => "attribute_flags",
            ErrorClass::MissingWellKnown => "missing_well_known",
            ErrorClass::Duplicate => "duplicate",
            ErrorClass::AttributeOverrun => "attribute_overrun",
            ErrorClass::Origin => "origin",
            ErrorClass::AsPath => "as_path",
            ErrorClass::NextHop => "next_hop",
            ErrorClass::MultiExitDisc => "multi_exit_disc",
            ErrorClass::LocalPref => "local_pref",
            ErrorClass::AtomicAggregate => "atomic_aggregate",
            ErrorClass::Aggregator => "aggregator",
            ErrorClass::Communities => "communities",
            ErrorClass::OriginatorId => "originator_id",
            ErrorClass::ClusterList => "cluster_list",
            ErrorClass::MpReachNextHop => "mp_reach_next_hop",
            ErrorClass::ExtendedCommunities => "extended_communities",
            ErrorClass::As4Path => "as4_path",
            ErrorClass::As4Aggregator => "as4_aggregator",
            ErrorClass::Ipv6ExtendedCommunities => "ipv6_extended_communities",
            ErrorClass::LargeCommunities => "large_communities",
            ErrorClass::OnlyToCustomer => "only_to_customer",
        }
    }

    /// The attribute type a class is about (for the class alone).
    fn of_type(ty: u8) -> Option<ErrorClass> {
        Some(match ty {
            attr::ORIGIN => ErrorClass::Origin,
            attr::AS_PATH => ErrorClass::AsPath,
            attr::NEXT_HOP => ErrorClass::NextHop,
            attr::MULTI_EXIT_DISC => ErrorClass::MultiExitDisc,
            attr::LOCAL_PREF => ErrorClass::LocalPref,
            attr::ATOMIC_AGGREGATE => ErrorClass::AtomicAggregate,
            attr::AGGREGATOR => ErrorClass::Aggregator,
            attr::COMMUNITIES => ErrorClass::Communities,
            attr::ORIGINATOR_ID => ErrorClass::OriginatorId,
            attr::CLUSTER_LIST => ErrorClass::ClusterList,
            attr::EXTENDED_COMMUNITIES => ErrorClass::ExtendedCommunities,
            attr::AS4_PATH => ErrorClass::As4Path,
            attr::AS4_AGGREGATOR => ErrorClass::As4Aggregator,
            attr::IPV6_EXTENDED_COMMUNITIES => ErrorClass::Ipv6ExtendedCommunities,
            attr::LARGE_COMMUNITIES => ErrorClass::LargeCommunities,
            attr::ONLY_TO_CUSTOMER => ErrorClass::OnlyToCustomer,
            _ => return None,
        })
    }
}

/// Bytes of the offending attribute kept for the log line.
pub const EXCERPT_LEN: usize = 24;

/// One error handled without a session reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrError {
    pub action: Action,
    pub class: ErrorClass,
    /// Type code of the attribute (0 for structural errors).
    pub attr_type: u8,
    /// The attribute's first bytes, flags and type included.
    pub excerpt: Vec<u8>,
}

/// A received UPDATE, classified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    /// Prefixes announced (0 when the UPDATE is treated as withdraw).
    pub announced: usize,
    /// Prefixes withdrawn, including the announced ones of a
    /// treat-as-withdraw UPDATE.
    pub withdrawn: usize,
    pub errors: Vec<AttrError>,
}

impl UpdateSummary {
    pub fn treated_as_withdraw(&self) -> bool {
        self.errors
            .iter()
            .any(|e| e.action == Action::TreatAsWithdraw)
    }
}

/// Expected (optional, transitive) bits per recognized attribute type.
fn expected_flags(ty: u8) -> Option<(bool, bool)> {
    match ty {
        attr::ORIGIN
        | attr::AS_PATH
        | attr::NEXT_HOP
        | attr::LOCAL_PREF
        | attr::ATOMIC_AGGREGATE => Some((false, true)),
        attr::MULTI_EXIT_DISC
        | attr::ORIGINATOR_ID
        | attr::CLUSTER_LIST
        | attr::MP_REACH_NLRI
        | attr::MP_UNREACH_NLRI => Some((true, false)),
        attr::AGGREGATOR
        | attr::COMMUNITIES
        | attr::EXTENDED_COMMUNITIES
        | attr::AS4_PATH
        | attr::AS4_AGGREGATOR
        | attr::IPV6_EXTENDED_COMMUNITIES
        | attr::LARGE_COMMUNITIES
        | attr::ONLY_TO_CUSTOMER => Some((true, true)),
        _ => None,
    }
}

fn update_error(subcode: u8, data: &[u8]) -> Notification {
    Notification::new(code::UPDATE, subcode, data.to_vec())
}

fn malformed_list() -> Notification {
    update_error(update::MALFORMED_ATTRIBUTE_LIST, &[])
}

fn invalid_network() -> Notification {
    update_error(update::INVALID_NETWORK_FIELD, &[])
}

fn rd16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

/// Counts the prefixes of an NLRI field of `max_bits` addresses; `None` if
/// it is not a well-formed list (RFC 4271 section 4.3).
fn count_prefixes(mut b: &[u8], max_bits: u8) -> Option<usize> {
    let mut n = 0;
    while let Some((&bits, rest)) = b.split_first() {
        if bits > max_bits {
            return None;
        }
        let bytes = usize::from(bits).div_ceil(8);
        b = rest.get(bytes..)?;
        n += 1;
    }
    Some(n)
}

/// Bits of an address of a family we speak, `None` for other families.
fn family_bits(afi_v: u16, safi_v: u8) -> Option<u8> {
    match (afi_v, safi_v) {
        (afi::IPV4, safi::UNICAST | safi::MULTICAST) => Some(32),
        (afi::IPV6, safi::UNICAST | safi::MULTICAST) => Some(128),
        _ => None,
    }
}

/// RFC 4271 section 6.3 semantic check of an IPv4 next hop: not 0/8,
/// not multicast or broadcast.
fn bad_v4_next_hop(a: &[u8]) -> bool {
    a[0] == 0 || a[0] >= 224
}

/// AS_PATH / AS4_PATH well-formedness (RFC 7606 section 7.2, RFC 7607):
/// known segment types, no empty segment, no AS 0, exact length.
fn as_path_ok(mut v: &[u8], as_len: usize, allow_confed: bool) -> bool {
    while !v.is_empty() {
        let [ty, count, rest @ ..] = v else {
            return false;
        };
        let known = match *ty {
            segment::AS_SET | segment::AS_SEQUENCE => true,
            segment::AS_CONFED_SEQUENCE | segment::AS_CONFED_SET => allow_confed,
            _ => false,
        };
        let n = usize::from(*count) * as_len;
        let Some(members) = rest.get(..n) else {
            return false;
        };
        if !known || *count == 0 || members.chunks(as_len).any(|a| a.iter().all(|b| *b == 0)) {
            return false;
        }
        v = &rest[n..];
    }
    true
}

/// An MP_REACH_NLRI / MP_UNREACH_NLRI whose structure we cannot trust: the
/// NLRI cannot be located, so no approach short of a session reset is left
/// (RFC 7606 section 7.11, RFC 4760 section 7).
fn mp_error(whole: &[u8]) -> Notification {
    update_error(update::OPTIONAL_ATTRIBUTE, whole)
}

fn nonzero_multiple(v: &[u8], n: usize) -> bool {
    !v.is_empty() && v.len().is_multiple_of(n)
}

/// Per-attribute value checks (RFC 7606 section 7, RFC 6793, RFC 8092, RFC
/// 9234): the approach for a malformed value, or None when it is fine.
fn check_value(ty: u8, v: &[u8], ctx: &CheckCtx) -> Option<Action> {
    use Action::{AttributeDiscard as Discard, TreatAsWithdraw as Withdraw};
    let as_len = if ctx.asn4 { 4 } else { 2 };
    match ty {
        // 7.1: length 1, a defined value.
        attr::ORIGIN => (v.len() != 1 || v[0] > origin::INCOMPLETE).then_some(Withdraw),
        // 7.2.
        attr::AS_PATH => (!as_path_ok(v, as_len, true)).then_some(Withdraw),
        // 7.3: length 4; a semantically wrong address withdraws too (RFC
        // 4271 section 6.3: no NOTIFICATION for it).
        attr::NEXT_HOP => (v.len() != 4 || bad_v4_next_hop(v)).then_some(Withdraw),
        // 7.4.
        attr::MULTI_EXIT_DISC => (v.len() != 4).then_some(Withdraw),
        // 7.5: ignored from an external peer.
        attr::LOCAL_PREF if ctx.ebgp => Some(Discard),
        attr::LOCAL_PREF => (v.len() != 4).then_some(Withdraw),
        // 7.6.
        attr::ATOMIC_AGGREGATE => (!v.is_empty()).then_some(Discard),
        // 7.7 and RFC 7607 (AS 0).
        attr::AGGREGATOR => {
            (v.len() != as_len + 4 || v[..as_len].iter().all(|b| *b == 0)).then_some(Discard)
        }
        // 7.8, 7.10: a non-zero multiple of 4.
        attr::COMMUNITIES | attr::CLUSTER_LIST => (!nonzero_multiple(v, 4)).then_some(Withdraw),
        // 7.9.
        attr::ORIGINATOR_ID => (v.len() != 4).then_some(Withdraw),
        // 7.14.
        attr::EXTENDED_COMMUNITIES => (!v.len().is_multiple_of(8)).then_some(Withdraw),
        // 7.15.
        attr::IPV6_EXTENDED_COMMUNITIES => (!v.len().is_multiple_of(20)).then_some(Withdraw),
        // RFC 6793 section 6: a 4-octet speaker ignores AS4_PATH and
        // AS4_AGGREGATOR; malformed ones are discarded.
        attr::AS4_PATH => (ctx.asn4 || !as_path_ok(v, 4, false)).then_some(Discard),
        attr::AS4_AGGREGATOR => (ctx.asn4 || v.len() != 8).then_some(Discard),
        // RFC 8092 section 6.
        attr::LARGE_COMMUNITIES => (!nonzero_multiple(v, 12)).then_some(Withdraw),
        // RFC 9234 section 5.
        attr::ONLY_TO_CUSTOMER => (v.len() != 4).then_some(Withdraw),
        _ => None,
    }
}

/// MP_REACH_NLRI: (announced prefixes, next hop usable), or the reset.
fn check_mp_reach(v: &[u8], whole: &[u8]) -> Result<(usize, bool), Notification> {
    let (Some(afi_v), Some(&safi_v), Some(&nh_len)) = (rd16(v, 0), v.get(2), v.get(3)) else {
        return Err(mp_error(whole));
    };
    let nh_end = 4 + usize::from(nh_len);
    // Next hop, then one reserved octet, then the NLRI.
    let (Some(nh), Some(nlri)) = (v.get(4..nh_end), v.get(nh_end + 1..)) else {
        return Err(mp_error(whole));
    };
    let Some(bits) = family_bits(afi_v as u16, safi_v) else {
        // A family we do not speak: its routes are ignored (RFC 4760).
        return Ok((0, true));
    };
    let nh_ok = match (afi_v as u16, nh.len()) {
        (afi::IPV4, 4) => !bad_v4_next_hop(nh),
        // Global, or global and link-local (RFC 2545).
        (afi::IPV6, 16 | 32) => nh[0] != 0xff && nh[..16].iter().any(|b| *b != 0),
        // A next hop length that does not fit the family (7.11).
        _ => return Err(mp_error(whole)),
    };
    let n = count_prefixes(nlri, bits).ok_or_else(|| mp_error(whole))?;
    Ok((n, nh_ok))
}

/// MP_UNREACH_NLRI: withdrawn prefixes, or the reset.
fn check_mp_unreach(v: &[u8], whole: &[u8]) -> Result<usize, Notification> {
    let (Some(afi_v), Some(&safi_v)) = (rd16(v, 0), v.get(2)) else {
        return Err(mp_error(whole));
    };
    match family_bits(afi_v as u16, safi_v) {
        Some(bits) => count_prefixes(&v[3..], bits).ok_or_else(|| mp_error(whole)),
        None => Ok(0),
    }
}

/// Classifies a complete UPDATE message (header included).
pub fn check_update(frame: &[u8], ctx: &CheckCtx) -> Result<UpdateSummary, Notification> {
    let body = frame.get(HEADER_LEN..).unwrap_or(&[]);
    // RFC 4271 section 6.3 / RFC 7606 section 4: the two length fields must
    // fit the message, or nothing in it can be located.
    let wlen = rd16(body, 0).ok_or_else(malformed_list)?;
    let alen_at = 2 + wlen;
    let alen = rd16(body, alen_at).ok_or_else(malformed_list)?;
    let attrs_start = alen_at + 2;
    let attrs_end = attrs_start + alen;
    if attrs_end > body.len() {
        return Err(malformed_list());
    }
    // RFC 7606 section 5.3: an NLRI field that does not parse leaves no
    // route to withdraw safely.
    let withdrawn = count_prefixes(&body[2..alen_at], 32).ok_or_else(invalid_network)?;
    let nlri = count_prefixes(&body[attrs_end..], 32).ok_or_else(invalid_network)?;
    let nlri_present = nlri > 0;

    let attrs = &body[attrs_start..attrs_end];
    let mut out = UpdateSummary {
        announced: nlri,
        withdrawn,
        errors: Vec::new(),
    };
    let mut record = |action, class, ty: u8, bytes: &[u8]| {
        out.errors.push(AttrError {
            action,
            class,
            attr_type: ty,
            excerpt: bytes[..bytes.len().min(EXCERPT_LEN)].to_vec(),
        });
    };
    let mut seen = [false; 256];
    let mut mp_reach = false;
    let mut overrun = false;
    let mut i = 0;
    while i < attrs.len() {
        let flags = attrs[i];
        let hdr = if flags & attr_flag::EXTENDED_LENGTH != 0 {
            4
        } else {
            3
        };
        let len = match (attrs.get(i + 1), hdr) {
            (Some(_), 4) => rd16(attrs, i + 2),
            (Some(_), _) => attrs.get(i + 2).map(|l| usize::from(*l)),
            (None, _) => None,
        };
        let end = len.map(|l| i + hdr + l).filter(|e| *e <= attrs.len());
        let Some(end) = end else {
            // Section 4: the NLRI field is located with the Total Path
            // Attribute Length, so the UPDATE is treated as withdraw.
            let ty = attrs.get(i + 1).copied().unwrap_or(0);
            record(
                Action::TreatAsWithdraw,
                ErrorClass::AttributeOverrun,
                ty,
                &attrs[i..],
            );
            overrun = true;
            break;
        };
        let ty = attrs[i + 1];
        let whole = &attrs[i..end];
        let value = &attrs[i + hdr..end];
        i = end;
        if std::mem::replace(&mut seen[usize::from(ty)], true) {
            // 3(g): a second MP_REACH/MP_UNREACH makes the NLRI ambiguous;
            // any other copy is dropped.
            if matches!(ty, attr::MP_REACH_NLRI | attr::MP_UNREACH_NLRI) {
                return Err(malformed_list());
            }
            record(Action::AttributeDiscard, ErrorClass::Duplicate, ty, whole);
            continue;
        }
        let optional = flags & attr_flag::OPTIONAL != 0;
        let transitive = flags & attr_flag::TRANSITIVE != 0;
        let Some(expected) = expected_flags(ty) else {
            // RFC 4271 section 6.3: an unrecognized well-known attribute
            // resets, with the attribute as data; unrecognized optional
            // attributes are quietly ignored or passed on (section 9).
            if !optional {
                return Err(update_error(update::UNRECOGNIZED_WELL_KNOWN, whole));
            }
            continue;
        };
        // 3(c): flags in conflict with the type make the attribute
        // malformed; MP attributes are still walked to find their NLRI.
        let flags_bad = expected != (optional, transitive);
        if flags_bad {
            record(
                Action::TreatAsWithdraw,
                ErrorClass::AttributeFlags,
                ty,
                whole,
            );
        }
        match ty {
            attr::MP_REACH_NLRI => {
                mp_reach = true;
                let (n, nh_ok) = check_mp_reach(value, whole)?;
                out.announced += n;
                if !nh_ok {
                    record(
                        Action::TreatAsWithdraw,
                        ErrorClass::MpReachNextHop,
                        ty,
                        whole,
                    );
                }
            }
            attr::MP_UNREACH_NLRI => out.withdrawn += check_mp_unreach(value, whole)?,
            _ if flags_bad => {}
            _ => {
                if let Some(action) = check_value(ty, value, ctx) {
                    let class = ErrorClass::of_type(ty).unwrap_or(ErrorClass::AttributeFlags);
                    record(action, class, ty, whole);
                }
            }
        }
    }
    // 3(d): routes without ORIGIN, AS_PATH (and NEXT_HOP for the NLRI
    // field) are withdrawn; an UPDATE that only withdraws needs none, and
    // after an overrun the rest of the list is unknown.
    if (nlri_present || mp_reach) && !overrun {
        let mut required = vec![attr::ORIGIN, attr::AS_PATH];
        if nlri_present {
            required.push(attr::NEXT_HOP);
        }
        if let Some(missing) = required.into_iter().find(|t| !seen[usize::from(*t)]) {
            record(
                Action::TreatAsWithdraw,
                ErrorClass::MissingWellKnown,
                missing,
                &[missing],
            );
        }
    }
    if out.treated_as_withdraw() {
        out.withdrawn += out.announced;
        out.announced = 0;
    }
    Ok(out)
}

/// A ROUTE-REFRESH request for a family we negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshRequest {
    pub ipv6: bool,
}

/// Checks a complete ROUTE-REFRESH message (RFC 2918, RFC 7313 section 5).
/// `Ok(None)`: a message to ignore (a family not negotiated, a subtype we
/// do not act on).
pub fn check_route_refresh(
    frame: &[u8],
    ctx: &CheckCtx,
) -> Result<Option<RefreshRequest>, Notification> {
    const LEN: usize = HEADER_LEN + 4;
    if frame.len() != LEN {
        return Err(if ctx.enhanced_route_refresh {
            // RFC 7313: the whole message as data.
            Notification::new(
                code::ROUTE_REFRESH,
                route_refresh::INVALID_LENGTH,
                frame.to_vec(),
            )
        } else {
            // RFC 2918 leaves the header check of RFC 4271 in force.
            Notification::new(
                code::HEADER,
                crate::iana::header::BAD_LENGTH,
                (frame.len() as u16).to_be_bytes().to_vec(),
            )
        });
    }
    let afi_v = rd16(frame, HEADER_LEN).unwrap_or(0) as u16;
    let subtype = frame[HEADER_LEN + 2];
    let safi_v = frame[HEADER_LEN + 3];
    // Without enhanced route refresh the subtype octet is reserved and
    // ignored; with it, only a request asks for routes (BoRR/EoRR from a
    // router concern its own routes, unknown subtypes are ignored).
    if ctx.enhanced_route_refresh && subtype != refresh_subtype::REQUEST {
        return Ok(None);
    }
    Ok(match (afi_v, safi_v) {
        (afi::IPV4, safi::UNICAST) if ctx.ipv4 => Some(RefreshRequest { ipv6: false }),
        (afi::IPV6, safi::UNICAST) if ctx.ipv6 => Some(RefreshRequest { ipv6: true }),
        _ => None,
    })
}

/// Checks that the optional parameters of a complete OPEN (header included)
/// and the capabilities inside them are well-formed TLVs (RFC 4271 section
/// 6.2 leaves the subcode of a malformed parameter list unspecified: 2/0).
pub fn check_open(frame: &[u8]) -> Result<(), Notification> {
    let bad = || Notification::new(code::OPEN, crate::iana::UNSPECIFIC, Vec::new());
    // version(1) AS(2) hold(2) id(4) then the parameters length.
    const PARAMS_LEN_AT: usize = 9;
    let body = frame.get(HEADER_LEN..).unwrap_or(&[]);
    let plen = usize::from(*body.get(PARAMS_LEN_AT).ok_or_else(bad)?);
    let params = body
        .get(PARAMS_LEN_AT + 1..PARAMS_LEN_AT + 1 + plen)
        .ok_or_else(bad)?;
    if PARAMS_LEN_AT + 1 + plen != body.len() {
        return Err(bad());
    }
    let mut i = 0;
    while i < params.len() {
        let ty = params[i];
        let len = usize::from(*params.get(i + 1).ok_or_else(bad)?);
        let value = params.get(i + 2..i + 2 + len).ok_or_else(bad)?;
        if ty == param::CAPABILITIES {
            let mut j = 0;
            while j < value.len() {
                let clen = usize::from(*value.get(j + 1).ok_or_else(bad)?);
                if j + 2 + clen > value.len() {
                    return Err(bad());
                }
                j += 2 + clen;
            }
        } else {
            return Err(Notification::new(
                code::OPEN,
                open::UNSUPPORTED_OPTIONAL_PARAMETER,
                Vec::new(),
            ));
        }
        i += 2 + len;
    }
    Ok(())
}

/// Whether the peer's OPEN (complete, already checked) advertises a
/// capability.
pub fn open_has_capability(frame: &[u8], cap: u8) -> bool {
    let body = frame.get(HEADER_LEN + 10..).unwrap_or(&[]);
    let mut i = 0;
    while let (Some(&ty), Some(&len)) = (body.get(i), body.get(i + 1)) {
        let value = body.get(i + 2..i + 2 + usize::from(len)).unwrap_or(&[]);
        if ty == param::CAPABILITIES {
            let mut j = 0;
            while let (Some(&c), Some(&clen)) = (value.get(j), value.get(j + 1)) {
                if c == cap {
                    return true;
                }
                j += 2 + usize::from(clen);
            }
        }
        i += 2 + usize::from(len);
    }
    false
}
