//! The trace header's value, parsed once per accepted message in the
//! sink. The value is split at its spaces in one pass and the long fields
//! (20 digits of sequence, 16 of send time, 32 hex digits of tags) are
//! read eight bytes a step: the byte-at-a-time scans this replaced were a
//! third of the ledger's cost per message.

use super::{Trace, MAX_RUN_ID, MAX_TAGGED, RCPT_WIDTH, SEQ_WIDTH, TAG_WIDTH, TIME_WIDTH};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Parses the value after the colon.
///
/// Accepts exactly `v1 r=RUN s=SOURCE q=SEQ n=RCPTS t=SENT_US [h=TAGS]`,
/// single spaces between fields, surrounding whitespace ignored; anything
/// else is `None`. The value is split once ([`split_fields`]) rather than
/// searched for a space per field.
pub fn parse_value(v: &[u8]) -> Option<Trace<'_>> {
    let (fields, n) = split_fields(v.trim_ascii())?;
    if !(6..=7).contains(&n) || fields[0] != b"v1" {
        return None;
    }
    let field = |i: usize, prefix: &[u8]| fields[i].strip_prefix(prefix);
    let run = field(1, b"r=")?;
    let source = field(2, b"s=")?;
    let seq = field(3, b"q=")?;
    let rcpts = field(4, b"n=")?;
    let sent = field(5, b"t=")?;
    let tags = match n {
        7 => Some(parse_tags(field(6, b"h=")?)?),
        _ => None,
    };
    if source.len() != 8 || !valid_run_bytes(run) {
        return None;
    }
    // Checked above: ASCII, so the conversion cannot fail.
    let run = std::str::from_utf8(run).ok()?;
    Some(Trace {
        run,
        // Eight bytes: checked above.
        source: eight_hex(load(source))?,
        seq: digits(seq, SEQ_WIDTH)?,
        rcpts: u32::try_from(digits(rcpts, RCPT_WIDTH)?).ok()?,
        sent_us: digits(sent, TIME_WIDTH)?,
        tags,
    })
}

/// Most fields a value has (`h=` included).
const FIELDS: usize = 7;

/// `v` split at each space, in one pass of eight bytes per step: the
/// fields and how many; `None` past [`FIELDS`]. Two spaces in a row give
/// an empty field, which no field's prefix matches.
fn split_fields(v: &[u8]) -> Option<([&[u8]; FIELDS], usize)> {
    let mut fields: [&[u8]; FIELDS] = [&[]; FIELDS];
    let (mut n, mut start) = (0, 0);
    let mut cut = |end: usize| {
        *fields.get_mut(n)? = &v[start..end];
        n += 1;
        start = end + 1;
        Some(())
    };
    let mut words = v.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let mut spaces = zero_bytes(load(w) ^ (ONES * u64::from(b' ')));
        while spaces != 0 {
            cut(at + (spaces.trailing_zeros() / 8) as usize)?;
            spaces &= spaces - 1;
        }
        at += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == b' ' {
            cut(at + i)?;
        }
    }
    cut(v.len())?;
    Some((fields, n))
}

/// Whether `id` is a valid run id: 1 to [`MAX_RUN_ID`] characters of
/// `A-Za-z0-9._-`.
pub fn valid_run_id(id: &str) -> bool {
    valid_run_bytes(id.as_bytes())
}

fn valid_run_bytes(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_RUN_ID && id.iter().all(|&b| RUN_CHAR[usize::from(b)])
}

/// Which bytes a run id may hold.
static RUN_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-');
        b += 1;
    }
    t
};

/// Eight ASCII hex digits (first in the low byte, either case) as their
/// value, or `None` if any byte is not one.
#[inline]
fn eight_hex(w: u64) -> Option<u32> {
    if w & HIGH != 0 {
        return None;
    }
    // On bytes below 0x80 nothing carries between bytes: the high bit of
    // `w + (0x80 - lo)` says `b >= lo`, that of `w + (0x7f - hi)` `b > hi`.
    let in_range = |w: u64, lo: u8, hi: u8| {
        w.wrapping_add(ONES * u64::from(0x80 - lo))
            & !w.wrapping_add(ONES * u64::from(0x7f - hi))
            & HIGH
    };
    let digit = in_range(w, b'0', b'9');
    // `| 0x20` maps exactly `A-F` and `a-f` onto `a-f`.
    let letter = in_range(w | (ONES * 0x20), b'a', b'f');
    if digit | letter != HIGH {
        return None;
    }
    // Nibble values: the low four bits, plus 9 for a letter.
    let x = (w & (ONES * 0x0f)) + (letter >> 7) * 9;
    // Pack pairs, then quads, then the eight, the lower-addressed half
    // being the more significant each time.
    let x = (x & 0x00ff_00ff_00ff_00ff) << 4 | (x >> 8) & 0x00ff_00ff_00ff_00ff;
    let x = (x & 0x0000_ffff_0000_ffff) << 8 | (x >> 16) & 0x0000_ffff_0000_ffff;
    Some(((x & 0xffff_ffff) << 16 | x >> 32) as u32)
}

/// Exactly [`MAX_TAGGED`] tags of 4 hex digits.
fn parse_tags(h: &[u8]) -> Option<[u16; MAX_TAGGED]> {
    if h.len() != MAX_TAGGED * TAG_WIDTH {
        return None;
    }
    let mut tags = [0u16; MAX_TAGGED];
    for (pair, hex) in tags.chunks_exact_mut(2).zip(h.chunks_exact(2 * TAG_WIDTH)) {
        let two = eight_hex(load(hex))?;
        pair[0] = (two >> 16) as u16;
        pair[1] = two as u16;
    }
    Some(tags)
}

/// 1 to `max` decimal digits (no sign, no spaces), without overflow;
/// eight digits a step: first the leading `len % 8` as one left-padded
/// word, then whole words.
fn digits(s: &[u8], max: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max {
        return None;
    }
    let lead = s.len() % 8;
    let (mut word, mut rest) = match lead {
        0 => (load(&s[..8]), &s[8..]),
        _ => (padded_lead(s, lead), &s[lead..]),
    };
    // One conversion site in the loop (not one for the lead and one for
    // the words): fewer instruction-cache lines per message.
    let mut n = 0u64;
    loop {
        // Each partial value is a prefix's value, at most the whole
        // number's: it overflows exactly when the digit-by-digit sum would.
        n = n
            .checked_mul(100_000_000)?
            .checked_add(eight_digits(word)?)?;
        let Some((next, tail)) = rest.split_first_chunk::<8>() else {
            return Some(n);
        };
        (word, rest) = (u64::from_le_bytes(*next), tail);
    }
}

/// The first `lead` (1..=7) bytes of `s` as the last bytes of a word of
/// eight, preceded by `'0'`s: `"123"` reads as `"00000123"`.
#[inline]
fn padded_lead(s: &[u8], lead: usize) -> u64 {
    let pad = 8 * (8 - lead) as u32;
    let zeros = (ONES * u64::from(b'0')) & ((1u64 << pad) - 1);
    match s.get(..8) {
        // One load; the shift drops the bytes past `lead`.
        Some(w) => load(w) << pad | zeros,
        None => s[..lead]
            .iter()
            .fold(ONES * u64::from(b'0'), |w, &b| w >> 8 | u64::from(b) << 56),
    }
}

/// Eight ASCII digits (first in the low byte) as their value, or `None`
/// if any byte is not a digit.
#[inline]
fn eight_digits(w: u64) -> Option<u64> {
    // A digit byte is 0x30..=0x39: high nibble 3, and still 3 after adding
    // 6. A carry out of a byte needs one >= 0xFA, already refused by the
    // first test.
    let nibbles =
        (w & 0xF0F0_F0F0_F0F0_F0F0) | ((w.wrapping_add(ONES * 6) & 0xF0F0_F0F0_F0F0_F0F0) >> 4);
    if nibbles != ONES * 0x33 {
        return None;
    }
    // Pairs, then quads, then the eight: each step multiplies the more
    // significant half (the lower-addressed one) and adds the other.
    let w = (w & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561) >> 8;
    let w = (w & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601) >> 16;
    Some((w & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001) >> 32)
}

/// Eight bytes, the first in the low byte.
#[inline]
fn load(w: &[u8]) -> u64 {
    u64::from_le_bytes(w.try_into().expect("8 bytes"))
}

/// The high bit of each byte of `x` that is zero, exactly (no borrow
/// between bytes, unlike the shorter `(x - ONES) & !x & HIGH`).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    !(((x & !HIGH).wrapping_add(!HIGH)) | x | !HIGH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-at-a-time parser this module replaced: the reference the
    /// word-at-a-time one must agree with on every input.
    mod reference {
        use super::super::super::{Trace, MAX_RUN_ID, MAX_TAGGED};

        pub(super) fn parse_value(v: &[u8]) -> Option<Trace<'_>> {
            let mut rest = v.trim_ascii();
            if next_field(&mut rest, b"v1")? != b"" {
                return None;
            }
            let run = next_field(&mut rest, b"r=")?;
            let source = next_field(&mut rest, b"s=")?;
            let seq = next_field(&mut rest, b"q=")?;
            let rcpts = next_field(&mut rest, b"n=")?;
            let sent = next_field(&mut rest, b"t=")?;
            let tags = match rest {
                [] => None,
                _ => Some(parse_tags(next_field(&mut rest, b"h=")?)?),
            };
            if !rest.is_empty() || source.len() != 8 {
                return None;
            }
            let run = std::str::from_utf8(run).ok().filter(|r| {
                !r.is_empty()
                    && r.len() <= MAX_RUN_ID
                    && r.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            })?;
            let mut src = 0u32;
            for &b in source {
                src = src << 4 | char::from(b).to_digit(16)?;
            }
            Some(Trace {
                run,
                source: src,
                seq: digits(seq, 20)?,
                rcpts: u32::try_from(digits(rcpts, 4)?).ok()?,
                sent_us: digits(sent, 16)?,
                tags,
            })
        }

        fn parse_tags(h: &[u8]) -> Option<[u16; MAX_TAGGED]> {
            if h.len() != MAX_TAGGED * 4 {
                return None;
            }
            let mut tags = [0u16; MAX_TAGGED];
            for (tag, hex) in tags.iter_mut().zip(h.chunks_exact(4)) {
                for &b in hex {
                    *tag = *tag << 4 | char::from(b).to_digit(16)? as u16;
                }
            }
            Some(tags)
        }

        fn next_field<'a>(rest: &mut &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
            let r: &'a [u8] = rest;
            let field = r.strip_prefix(prefix)?;
            match field.iter().position(|&b| b == b' ') {
                Some(i) => {
                    *rest = &field[i + 1..];
                    if rest.is_empty() {
                        return None;
                    }
                    Some(&field[..i])
                }
                None => {
                    *rest = &[];
                    Some(field)
                }
            }
        }

        fn digits(s: &[u8], max: usize) -> Option<u64> {
            if s.is_empty() || s.len() > max {
                return None;
            }
            let mut n = 0u64;
            for &b in s {
                let d = b.wrapping_sub(b'0');
                if d > 9 {
                    return None;
                }
                n = n.checked_mul(10)?.checked_add(u64::from(d))?;
            }
            Some(n)
        }
    }

    /// A well-formed value with these fields (tags when `tags` is set).
    fn value(run: &str, seq: &str, rcpts: &str, sent: &str, tags: Option<&str>) -> String {
        let mut v = format!(" v1 r={run} s=00c0ffee q={seq} n={rcpts} t={sent}");
        if let Some(t) = tags {
            v.push_str(" h=");
            v.push_str(t);
        }
        v
    }

    #[test]
    fn numbers_at_every_width_and_the_overflow_edge() {
        for len in 1..=20usize {
            for digit in [b'0', b'1', b'5', b'9'] {
                let seq = String::from_utf8(vec![digit; len]).unwrap();
                let v = value("r", &seq, "1", "7", None);
                assert_eq!(
                    parse_value(v.as_bytes()),
                    reference::parse_value(v.as_bytes()),
                    "{v}"
                );
            }
        }
        // u64::MAX parses; one more does not (20 digits both).
        let max = value("r", "18446744073709551615", "1", "1", None);
        assert_eq!(parse_value(max.as_bytes()).unwrap().seq, u64::MAX);
        let over = value("r", "18446744073709551616", "1", "1", None);
        assert_eq!(parse_value(over.as_bytes()), None);
        assert_eq!(
            parse_value(
                value(
                    "r",
                    "00000000000000000042",
                    "0003",
                    "1700000000123456",
                    None
                )
                .as_bytes()
            )
            .map(|t| (t.seq, t.rcpts, t.sent_us)),
            Some((42, 3, 1_700_000_000_123_456))
        );
    }

    #[test]
    fn every_non_digit_byte_in_every_position_is_refused() {
        for (len, at) in (1..=20).flat_map(|len| (0..len).map(move |at| (len, at))) {
            for b in 0..=255u8 {
                // A leading zero keeps every 20-digit variant but one digit
                // at the front within u64.
                let mut seq = b"01234567890123456789"[..len].to_vec();
                seq[at] = b;
                let mut v = b" v1 r=r s=00000001 q=".to_vec();
                v.extend_from_slice(&seq);
                v.extend_from_slice(b" n=1 t=1");
                let got = parse_value(&v);
                assert_eq!(
                    got,
                    reference::parse_value(&v),
                    "byte {b:#x} at {at} of {len}"
                );
                let fits = len < 20 || at > 0 || b <= b'1';
                assert_eq!(
                    got.is_some(),
                    b.is_ascii_digit() && fits,
                    "byte {b:#x} at {at} of {len}"
                );
            }
        }
    }

    #[test]
    fn hex_fields_and_run_ids_agree_with_the_reference() {
        for b in 0..=255u8 {
            let mut tags = b"0123456789abcdefABCDEF0000000000".to_vec();
            tags[b as usize % 32] = b;
            let mut v = b" v1 r=a s=0000000".to_vec();
            v.push(b);
            v.extend_from_slice(b" q=1 n=1 t=1 h=");
            v.extend_from_slice(&tags);
            assert_eq!(parse_value(&v), reference::parse_value(&v), "byte {b:#x}");
            let mut run = b" v1 r=ab".to_vec();
            run.push(b);
            run.extend_from_slice(b" s=00000001 q=1 n=1 t=1");
            assert_eq!(
                parse_value(&run),
                reference::parse_value(&run),
                "run byte {b:#x}"
            );
        }
    }

    /// Bytes an edit writes: the separators and field characters the
    /// parser decides on as often as anything else.
    fn edit_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b' '),
            Just(b'\t'),
            Just(b'='),
            b'0'..=b'9',
            prop::sample::select(b"afAFgh-._/".to_vec()),
            any::<u8>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Valid values with a few bytes replaced, cut or doubled parse as
        /// the reference parses them.
        #[test]
        fn mutated_values_agree(
            seq in "[0-9]{1,21}",
            rcpts in "[0-9]{1,5}",
            sent in "[0-9]{1,17}",
            tagged in any::<bool>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), edit_byte(), 0u8..3), 0..4),
        ) {
            let tags = tagged.then_some("beef0001cafe00000000000000000000");
            let mut v = value("run-1", &seq, &rcpts, &sent, tags).into_bytes();
            for (at, byte, kind) in edits {
                let i = at.index(v.len());
                match kind {
                    0 => v[i] = byte,
                    1 => { v.remove(i); }
                    _ => v.insert(i, byte),
                }
            }
            prop_assert_eq!(parse_value(&v), reference::parse_value(&v));
        }
    }
}
