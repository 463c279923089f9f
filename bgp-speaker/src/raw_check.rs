//! Structural checks of received OPEN and UPDATE messages on their raw bytes
//! (RFC 4271 sections 6.2 and 6.3), done before the body is decoded:
//! netgauze decodes attribute values but does not check attribute flags,
//! duplicates or missing well-known attributes (each has its own
//! NOTIFICATION subcode), and we let it skip capabilities it cannot
//! interpret, so a capability that breaks the TLV structure is caught here.

use crate::wire::{HEADER_LEN, Notification};

const ORIGIN: u8 = 1;
const AS_PATH: u8 = 2;
const NEXT_HOP: u8 = 3;
const MP_REACH: u8 = 14;

/// Expected (optional, transitive) bits per known attribute type.
fn expected_flags(ty: u8) -> Option<(bool, bool)> {
    match ty {
        1 | 2 | 3 | 5 | 6 => Some((false, true)),
        4 | 9 | 10 | 14 | 15 => Some((true, false)),
        7 | 8 | 16 | 17 | 18 | 32 => Some((true, true)),
        _ => None,
    }
}

fn malformed_list() -> Notification {
    Notification::new(3, 1, Vec::new())
}

/// Checks a complete UPDATE message (header included).
pub fn check_update(frame: &[u8]) -> Result<(), Notification> {
    let body = frame.get(HEADER_LEN..).unwrap_or(&[]);
    let rd16 = |b: &[u8], at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *b.get(at)?,
            *b.get(at + 1)?,
        ])))
    };
    let wlen = rd16(body, 0).ok_or_else(malformed_list)?;
    let alen_at = 2 + wlen;
    let alen = rd16(body, alen_at).ok_or_else(malformed_list)?;
    let attrs_start = alen_at + 2;
    let attrs_end = attrs_start + alen;
    if attrs_end > body.len() {
        return Err(malformed_list());
    }
    let nlri_present = attrs_end < body.len();
    let attrs = &body[attrs_start..attrs_end];
    let mut seen = [false; 256];
    let mut i = 0;
    while i < attrs.len() {
        let flags = attrs[i];
        let ty = *attrs.get(i + 1).ok_or_else(malformed_list)?;
        let ext = flags & 0x10 != 0;
        let (len, hdr) = if ext {
            (rd16(attrs, i + 2).ok_or_else(malformed_list)?, 4)
        } else {
            (
                usize::from(*attrs.get(i + 2).ok_or_else(malformed_list)?),
                3,
            )
        };
        let end = i + hdr + len;
        if end > attrs.len() {
            // RFC 4271: an attribute running past the list is a length error
            // of that attribute.
            return Err(Notification::new(3, 5, attrs[i..].to_vec()));
        }
        if seen[usize::from(ty)] {
            return Err(malformed_list());
        }
        seen[usize::from(ty)] = true;
        let optional = flags & 0x80 != 0;
        let transitive = flags & 0x40 != 0;
        let partial = flags & 0x20 != 0;
        if let Some((o, t)) = expected_flags(ty) {
            // Partial may only be set on optional transitive attributes.
            if o != optional || t != transitive || (partial && !(o && t)) {
                return Err(Notification::new(3, 4, attrs[i..end].to_vec()));
            }
        } else if !optional {
            return Err(Notification::new(3, 2, attrs[i..end].to_vec()));
        }
        i = end;
    }
    let reach = nlri_present || seen[usize::from(MP_REACH)];
    if reach {
        let mut required = vec![ORIGIN, AS_PATH];
        if nlri_present {
            required.push(NEXT_HOP);
        }
        if let Some(missing) = required.into_iter().find(|t| !seen[usize::from(*t)]) {
            return Err(Notification::new(3, 3, vec![missing]));
        }
    }
    Ok(())
}

/// Checks that the optional parameters of a complete OPEN (header included)
/// and the capabilities inside them are well-formed TLVs.
pub fn check_open(frame: &[u8]) -> Result<(), Notification> {
    let bad = || Notification::new(2, 0, Vec::new());
    // version(1) AS(2) hold(2) id(4) then the parameters length.
    let body = frame.get(HEADER_LEN..).unwrap_or(&[]);
    let plen = usize::from(*body.get(9).ok_or_else(bad)?);
    let params = body.get(10..10 + plen).ok_or_else(bad)?;
    if 10 + plen != body.len() {
        return Err(bad());
    }
    let mut i = 0;
    while i < params.len() {
        let ty = params[i];
        let len = usize::from(*params.get(i + 1).ok_or_else(bad)?);
        let value = params.get(i + 2..i + 2 + len).ok_or_else(bad)?;
        if ty == 2 {
            let mut j = 0;
            while j < value.len() {
                let clen = usize::from(*value.get(j + 1).ok_or_else(bad)?);
                if j + 2 + clen > value.len() {
                    return Err(bad());
                }
                j += 2 + clen;
            }
        }
        i += 2 + len;
    }
    Ok(())
}
