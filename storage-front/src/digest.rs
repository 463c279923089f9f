//! RFC 3230 `Digest` / `Want-Digest` as WLCG clients use them: algorithm
//! names case-insensitive, comma lists, `Want-Digest` with q-values.

/// The adler32 in a `Digest` header value (`adler32=0a1b2c3d, md5=...`),
/// normalised to 8 lowercase hex digits (gfal2 ignores case and leading
/// zeros, davix zero-pads), or None.
pub fn adler32_of(digest: &str) -> Option<String> {
    digest.split(',').find_map(|item| {
        let (alg, value) = item.trim().split_once('=')?;
        if !alg.trim().eq_ignore_ascii_case("adler32") {
            return None;
        }
        let value = value.trim();
        if value.is_empty() || value.len() > 8 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(value, 16)
            .ok()
            .map(crate::checksum::hex)
    })
}

/// Whether a `Want-Digest` value asks for adler32 (q > 0).
pub fn wants_adler32(want: &str) -> bool {
    want.split(',').any(|item| {
        let mut parts = item.split(';');
        let alg = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .next()
            .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            .unwrap_or(1.0);
        alg.eq_ignore_ascii_case("adler32") && q > 0.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_values() {
        assert_eq!(adler32_of("adler32=0a1b2c3d").as_deref(), Some("0a1b2c3d"));
        assert_eq!(
            adler32_of("MD5=abc, ADLER32=A1B2C3").as_deref(),
            Some("00a1b2c3")
        );
        assert_eq!(adler32_of("md5=abc"), None);
        assert_eq!(adler32_of("adler32=xyz"), None);
        assert_eq!(adler32_of("adler32=123456789"), None);
    }

    #[test]
    fn want_digest_lists() {
        assert!(wants_adler32("ADLER32"));
        assert!(wants_adler32("md5;q=0.3, adler32;q=0.5"));
        assert!(!wants_adler32("md5"));
        assert!(!wants_adler32("adler32;q=0"));
    }
}
