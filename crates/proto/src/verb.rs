//! Keyword dispatch without string comparison chains: a keyword of up to
//! eight bytes is packed, upper-cased, into one `u64` and matched as an
//! integer.

/// Packs up to 8 bytes, ASCII letters upper-cased, into a `u64`.
/// Returns 0 (which no keyword packs to) for an empty or longer input or for
/// non-ASCII bytes. Leading NULs would collide with shorter keywords, but
/// line framing rejects NUL before any keyword is packed.
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
        v = (v << 8) | c.to_ascii_uppercase() as u64;
        i += 1;
    }
    v
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
}
