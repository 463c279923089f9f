//! MTU and MSS on the forward path.
//!
//! A segment that lands on the wrong node crosses the underlay a second
//! time inside an outer IP header (plus UDP and GUE for GUE). XDP cannot
//! fragment, so the owner clamps the MSS it advertises in its SYN-ACKs
//! until a full-size segment still fits the underlay's MTU once wrapped.
//! lbd derives the clamp from the underlay MTU with [`clamped_mss`].

const IPV4_HEADER: u16 = 20;
const IPV6_HEADER: u16 = 40;
const UDP_HEADER: u16 = 8;
/// GUE's base header (variant 0, no extension fields).
const GUE_HEADER: u16 = 4;
const TCP_HEADER: u16 = 20;

/// MSS that keeps an encapsulated full-size segment within `underlay_mtu`:
/// the MTU minus the outer IP header (and UDP + GUE), the inner IP header
/// and the TCP header. Saturates at 0 for an MTU too small to carry any
/// payload (config validation rejects such MTUs before this is asked).
pub fn clamped_mss(underlay_mtu: u16, underlay_v6: bool, gue: bool, vip_v6: bool) -> u16 {
    let outer = if underlay_v6 {
        IPV6_HEADER
    } else {
        IPV4_HEADER
    } + if gue { UDP_HEADER + GUE_HEADER } else { 0 };
    let inner = if vip_v6 { IPV6_HEADER } else { IPV4_HEADER };
    underlay_mtu.saturating_sub(outer + inner + TCP_HEADER)
}

#[cfg(test)]
mod tests {
    use super::clamped_mss;

    #[test]
    fn a_wrapped_full_size_segment_fits_the_underlay() {
        // 1500 - 20 (outer v4) - 12 (UDP+GUE) - 20 (inner v4) - 20 (TCP)
        assert_eq!(clamped_mss(1500, false, true, false), 1428);
        // IPIP over IPv4 carrying IPv4: 1500 - 20 - 20 - 20
        assert_eq!(clamped_mss(1500, false, false, false), 1440);
        // GUE over IPv6 carrying IPv6: 1500 - 40 - 12 - 40 - 20
        assert_eq!(clamped_mss(1500, true, true, true), 1388);
        assert_eq!(clamped_mss(9000, false, true, true), 8908);
    }

    #[test]
    fn a_tiny_mtu_saturates_instead_of_wrapping() {
        assert_eq!(clamped_mss(60, true, true, true), 0);
    }
}
