//! The verdict of a classifier subprogram as a plain u32 (main.rs explains
//! the encoding and why it exists).
use dataplane_common::counter::DROP_MALFORMED;

use crate::{
    maps::FLOW,
    types::{Flow, Parsed},
};

/// Verdict kinds, in bits 8..16; a counter index rides in bits 0..8.
pub const PASS: u32 = 1 << 8;
pub const DROP: u32 = 2 << 8;
pub const DECAP: u32 = 3 << 8;
pub const STEER: u32 = 4 << 8;

/// The u32 a subprogram returns for `p`; Decap details go to `flow`.
#[inline(always)]
pub fn encode(p: Parsed, flow: &mut Flow) -> u32 {
    match p {
        Parsed::Pass(c) => PASS | c,
        Parsed::Drop(c) => DROP | c,
        Parsed::Decap {
            hop,
            outer_len,
            inner_proto,
        } => {
            flow.decap_hop = hop;
            flow.outer_len = outer_len;
            flow.inner_proto = inner_proto;
            DECAP
        }
        Parsed::Steer => STEER,
    }
}

/// The caller's view of a subprogram's verdict.
#[inline(always)]
pub fn decode(code: u32) -> Parsed {
    match code & 0xff00 {
        PASS => Parsed::Pass(code & 0xff),
        DROP => Parsed::Drop(code & 0xff),
        STEER => Parsed::Steer,
        DECAP => match FLOW.get(0) {
            Some(f) => Parsed::Decap {
                hop: f.decap_hop,
                outer_len: if f.outer_len > 128 { 128 } else { f.outer_len },
                inner_proto: f.inner_proto,
            },
            None => Parsed::Drop(DROP_MALFORMED),
        },
        _ => Parsed::Drop(DROP_MALFORMED),
    }
}
