//! NOTIFICATION messages (RFC 4271 section 4.5): what we send when a peer
//! breaks the protocol and what we decode from the peer's.

use serde::Serialize;

use crate::iana::{UNSPECIFIC, cease, code, fsm, header, msg, open, route_refresh, update};

/// Length of the BGP message header (RFC 4271 section 4.1).
pub const HEADER_LEN: usize = 19;
/// We do not advertise RFC 8654 extended messages, so 4096 is the limit for
/// every type.
pub const MAX_LEN: usize = 4096;

/// A NOTIFICATION as code, subcode and data (RFC 4271 section 4.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// A message header with the marker, `len` and type `ty`.
pub fn header_bytes(ty: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.push(ty);
    out
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Self {
            code,
            subcode,
            data: data.into(),
        }
    }

    /// RFC 6608: an unexpected message of type `ty` in OpenSent, OpenConfirm
    /// or Established (`subcode` from [`fsm`]); the data is the type.
    pub fn unexpected(subcode: u8, ty: u8) -> Self {
        Self::new(code::FSM, subcode, vec![ty])
    }

    pub fn cease(subcode: u8) -> Self {
        Self::new(code::CEASE, subcode, Vec::new())
    }

    pub fn hold_timer_expired() -> Self {
        Self::new(code::HOLD_TIMER_EXPIRED, UNSPECIFIC, Vec::new())
    }

    pub fn encode(&self) -> Vec<u8> {
        // Data is truncated so the message never exceeds 4096 bytes.
        let data = &self.data[..self.data.len().min(MAX_LEN - HEADER_LEN - 2)];
        let mut out = header_bytes(msg::NOTIFICATION, HEADER_LEN + 2 + data.len());
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(data);
        out
    }

    /// Short operator-facing name, e.g. "3/4 UPDATE: attribute flags error".
    pub fn describe(&self) -> String {
        let name = match (self.code, self.subcode) {
            (code::HEADER, header::NOT_SYNCHRONIZED) => "header: connection not synchronized",
            (code::HEADER, header::BAD_LENGTH) => "header: bad message length",
            (code::HEADER, header::BAD_TYPE) => "header: bad message type",
            (code::HEADER, _) => "header error",
            (code::OPEN, open::UNSUPPORTED_VERSION) => "OPEN: unsupported version",
            (code::OPEN, open::BAD_PEER_AS) => "OPEN: bad peer AS",
            (code::OPEN, open::BAD_BGP_ID) => "OPEN: bad BGP identifier",
            (code::OPEN, open::UNSUPPORTED_OPTIONAL_PARAMETER) => {
                "OPEN: unsupported optional parameter"
            }
            (code::OPEN, open::UNACCEPTABLE_HOLD_TIME) => "OPEN: unacceptable hold time",
            (code::OPEN, open::UNSUPPORTED_CAPABILITY) => "OPEN: unsupported capability",
            (code::OPEN, _) => "OPEN error",
            (code::UPDATE, update::MALFORMED_ATTRIBUTE_LIST) => "UPDATE: malformed attribute list",
            (code::UPDATE, update::UNRECOGNIZED_WELL_KNOWN) => {
                "UPDATE: unrecognized well-known attribute"
            }
            (code::UPDATE, update::MISSING_WELL_KNOWN) => "UPDATE: missing well-known attribute",
            (code::UPDATE, update::ATTRIBUTE_FLAGS) => "UPDATE: attribute flags error",
            (code::UPDATE, update::ATTRIBUTE_LENGTH) => "UPDATE: attribute length error",
            (code::UPDATE, update::INVALID_ORIGIN) => "UPDATE: invalid ORIGIN",
            (code::UPDATE, update::INVALID_NEXT_HOP) => "UPDATE: invalid NEXT_HOP",
            (code::UPDATE, update::OPTIONAL_ATTRIBUTE) => "UPDATE: optional attribute error",
            (code::UPDATE, update::INVALID_NETWORK_FIELD) => "UPDATE: invalid network field",
            (code::UPDATE, update::MALFORMED_AS_PATH) => "UPDATE: malformed AS_PATH",
            (code::UPDATE, _) => "UPDATE error",
            (code::HOLD_TIMER_EXPIRED, _) => "hold timer expired",
            (code::FSM, fsm::UNEXPECTED_IN_OPEN_SENT) => "FSM: unexpected message in OpenSent",
            (code::FSM, fsm::UNEXPECTED_IN_OPEN_CONFIRM) => {
                "FSM: unexpected message in OpenConfirm"
            }
            (code::FSM, fsm::UNEXPECTED_IN_ESTABLISHED) => "FSM: unexpected message in Established",
            (code::FSM, _) => "finite state machine error",
            (code::CEASE, cease::ADMINISTRATIVE_SHUTDOWN) => "cease: administrative shutdown",
            (code::CEASE, cease::PEER_DECONFIGURED) => "cease: peer de-configured",
            (code::CEASE, cease::ADMINISTRATIVE_RESET) => "cease: administrative reset",
            (code::CEASE, cease::CONNECTION_REJECTED) => "cease: connection rejected",
            (code::CEASE, cease::CONNECTION_COLLISION) => "cease: connection collision resolution",
            (code::CEASE, cease::BFD_DOWN) => "cease: BFD down",
            (code::CEASE, _) => "cease",
            (code::ROUTE_REFRESH, route_refresh::INVALID_LENGTH) => {
                "ROUTE-REFRESH: invalid message length"
            }
            (code::ROUTE_REFRESH, _) => "ROUTE-REFRESH error",
            _ => "unknown error code",
        };
        format!("{}/{} {}", self.code, self.subcode, name)
    }
}
