//! Keyword dispatch without string comparison chains: a keyword of up to
//! eight bytes is packed, upper-cased, into one `u64` (one load and a few
//! bit operations) and matched as an integer.

/// Packs up to 8 bytes, ASCII letters upper-cased, into a `u64` (byte `i`
/// in bits `8i..`, unused bytes zero; the layout [`load_key`] produces).
/// Returns 0 (which no keyword packs to) for an empty or longer input or for
/// non-ASCII bytes. NULs would collide with shorter keywords, but line
/// framing rejects NUL before any keyword is packed.
#[inline]
pub(crate) const fn pack_upper(s: &[u8]) -> u64 {
    if s.is_empty() || s.len() > 8 {
        return 0;
    }
    let mut v: u64 = 0;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c >= 0x80 {
            return 0;
        }
        v |= (c.to_ascii_uppercase() as u64) << (8 * i);
        i += 1;
    }
    v
}

/// `pack_upper(&buf[at..at + len])` without a loop: one 8-byte load (when
/// `buf` has 8 bytes from `at`) and a SWAR upper-casing.
#[inline(always)]
pub(crate) fn load_key(buf: &[u8], at: usize, len: usize) -> u64 {
    if len == 0 || len > 8 {
        return 0;
    }
    let x = match buf.get(at..at + 8) {
        Some(w) => {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            u64::from_le_bytes(b)
        }
        None => {
            let mut b = [0u8; 8];
            b[..len].copy_from_slice(&buf[at..at + len]);
            u64::from_le_bytes(b)
        }
    };
    let x = if len == 8 {
        x
    } else {
        x & ((1u64 << (8 * len)) - 1)
    };
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    if x & HIGH != 0 {
        return 0;
    }
    // Per byte (all < 0x80, so no carries between bytes): bit 7 of
    // `x + (0x80 - 'a')` says `>= 'a'`, of `x + (0x80 - 'z' - 1)` says `> 'z'`.
    let lower = (x.wrapping_add(ONES * (0x80 - b'a' as u64))
        ^ x.wrapping_add(ONES * (0x80 - b'z' as u64 - 1)))
        & HIGH;
    x - (lower >> 2)
}

#[cfg(test)]
mod tests {
    use super::pack_upper;

    #[test]
    fn case_insensitive_and_distinct() {
        assert_eq!(pack_upper(b"ehlo"), pack_upper(b"EHLO"));
        assert_eq!(pack_upper(b"StartTls"), pack_upper(b"STARTTLS"));
        assert_ne!(pack_upper(b"HELO"), pack_upper(b"EHLO"));
        assert_eq!(pack_upper(b"TOOLONGXX"), 0);
        assert_eq!(pack_upper(b""), 0);
    }

    #[test]
    fn load_key_matches_pack_upper() {
        let words: [&[u8]; 10] = [
            b"ehlo",
            b"StartTls",
            b"FROM:",
            b"to:",
            b"8bitMime",
            b"x",
            b"TOOLONGXX",
            b"",
            b"\xc3\xa9t\xc3\xa9",
            b"[@`{",
        ];
        for w in words {
            // Padded (one 8-byte load) and exact (copy) buffers.
            let mut padded = w.to_vec();
            padded.extend_from_slice(b"ZZZZZZZZ");
            assert_eq!(super::load_key(&padded, 0, w.len()), pack_upper(w), "{w:?}");
            assert_eq!(super::load_key(w, 0, w.len()), pack_upper(w), "{w:?}");
        }
        for b in 0..=255u8 {
            assert_eq!(super::load_key(&[b], 0, 1), pack_upper(&[b]), "{b}");
        }
    }
}
