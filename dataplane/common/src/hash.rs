//! The flow hash: Bob Jenkins' lookup3 (the kernel's `jhash`), over the
//! 5-tuple in the client-to-VIP direction, with a cluster-wide seed.
//!
//! Words are loaded little-endian straight from packet bytes (a free load on
//! the bpfel target and on x86-64), so the kernel never byte-swaps and the
//! userspace predictor reproduces the value exactly.

const JHASH_INITVAL: u32 = 0xdead_beef;

#[inline(always)]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

#[inline(always)]
fn finalize(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

/// The kernel's `jhash_3words`.
#[inline(always)]
pub fn jhash_3words(a: u32, b: u32, c: u32, initval: u32) -> u32 {
    let init = JHASH_INITVAL.wrapping_add(initval).wrapping_add(3 << 2);
    finalize(
        a.wrapping_add(init),
        b.wrapping_add(init),
        c.wrapping_add(init),
    )
}

/// Twelve words through two mix rounds and a final one (lookup3 `hashword`).
#[inline(always)]
fn jhash_12words(w: &[u32; 12], initval: u32) -> u32 {
    let init = JHASH_INITVAL.wrapping_add(12 << 2).wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    a = a.wrapping_add(w[0]);
    b = b.wrapping_add(w[1]);
    c = c.wrapping_add(w[2]);
    mix(&mut a, &mut b, &mut c);
    a = a.wrapping_add(w[3]);
    b = b.wrapping_add(w[4]);
    c = c.wrapping_add(w[5]);
    mix(&mut a, &mut b, &mut c);
    a = a.wrapping_add(w[6]);
    b = b.wrapping_add(w[7]);
    c = c.wrapping_add(w[8]);
    mix(&mut a, &mut b, &mut c);
    a = a.wrapping_add(w[9]);
    b = b.wrapping_add(w[10]);
    c = c.wrapping_add(w[11]);
    finalize(a, b, c)
}

#[inline(always)]
fn word(b: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*b)
}

#[inline(always)]
fn words16(b: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// The bucket of a flow hash in a table of `size` entries: multiply-shift
/// ("fastrange") instead of `hash % size`, which costs a division on every
/// packet. Uniform over 0..size for a uniform 32-bit hash.
#[inline(always)]
pub fn bucket_index(hash: u32, size: u32) -> u32 {
    ((hash as u64 * size as u64) >> 32) as u32
}

/// Hash of an IPv4 flow. `ports` are the first four bytes of the TCP/UDP
/// header (source port then destination port, network order).
#[inline(always)]
pub fn flow_hash_v4(
    saddr: &[u8; 4],
    daddr: &[u8; 4],
    ports: &[u8; 4],
    proto: u8,
    seed: u32,
) -> u32 {
    flow_hash_v4_words(word(saddr), word(daddr), word(ports), proto, seed)
}

/// [`flow_hash_v4`] over the fields as loaded from the packet: each word is
/// the four bytes in memory order, read little-endian (the XDP program
/// loads them with one instruction each).
#[inline(always)]
pub fn flow_hash_v4_words(saddr: u32, daddr: u32, ports: u32, proto: u8, seed: u32) -> u32 {
    jhash_3words(saddr, daddr, ports, seed.wrapping_add(proto as u32))
}

/// Hash of an IPv6 flow, same conventions as [`flow_hash_v4`].
#[inline(always)]
pub fn flow_hash_v6(
    saddr: &[u8; 16],
    daddr: &[u8; 16],
    ports: &[u8; 4],
    proto: u8,
    seed: u32,
) -> u32 {
    flow_hash_v6_words(&words16(saddr), &words16(daddr), word(ports), proto, seed)
}

/// [`flow_hash_v6`] over the fields as loaded from the packet (see
/// [`flow_hash_v4_words`]).
#[inline(always)]
pub fn flow_hash_v6_words(s: &[u32; 4], d: &[u32; 4], ports: u32, proto: u8, seed: u32) -> u32 {
    let w = [
        s[0],
        s[1],
        s[2],
        s[3],
        d[0],
        d[1],
        d[2],
        d[3],
        ports,
        proto as u32,
        0,
        0,
    ];
    jhash_12words(&w, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_kernel_jhash() {
        // Reference values from the kernel's include/linux/jhash.h compiled
        // with gcc (jhash_3words, and jhash2 over 12 words).
        assert_eq!(jhash_3words(0, 0, 0, 0), 0x1b68_e557);
        assert_eq!(jhash_3words(1, 2, 3, 0x1234), 0x050a_4870);
        let w = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(jhash_12words(&w, 0x55), 0x75bd_e7a4);
    }

    #[test]
    fn v4_hash_depends_on_every_field() {
        let (s, d, p) = ([192, 0, 2, 1], [198, 51, 100, 10], [0x9c, 0x40, 0, 80]);
        let base = flow_hash_v4(&s, &d, &p, 6, 7);
        let variants = [
            flow_hash_v4(&[192, 0, 2, 2], &d, &p, 6, 7),
            flow_hash_v4(&s, &[198, 51, 100, 11], &p, 6, 7),
            flow_hash_v4(&s, &d, &[0x9c, 0x41, 0, 80], 6, 7),
            flow_hash_v4(&s, &d, &p, 17, 7),
            flow_hash_v4(&s, &d, &p, 6, 8),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(base, *v, "variant {i} hashes like the base flow");
        }
    }
}
