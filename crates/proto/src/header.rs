//! The end of a message's header section (RFC 5322 §2.1: the first empty
//! line), found sixteen bytes per step.

use crate::line::find_byte;

/// The end of the first empty line that follows a line end in `s`: the
/// position just past `\n\n` or `\n\r\n`, whichever comes first, or `None`
/// when `s` holds neither. A section that starts with its empty line (no
/// header fields at all) has no line end before it: the caller checks
/// that case, and an end split across reads, itself.
///
/// Line ends are found with the parsers' vector scan rather than one
/// `memchr` call per line: on a message's dozen short header lines the
/// calls cost ~60 instructions each, more than the scan itself (callgrind,
/// the sink's discard mode, which runs this for every message).
pub fn empty_line_end(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let lf = from + find_byte(s, from, s.len(), b'\n');
        match s.get(lf + 1..)? {
            [b'\n', ..] => return Some(lf + 2),
            [b'\r', b'\n', ..] => return Some(lf + 3),
            _ => from = lf + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::empty_line_end;
    use proptest::prelude::*;

    /// The plain statement: the first `\n` followed by `\n` or `\r\n`.
    fn reference(s: &[u8]) -> Option<usize> {
        (0..s.len()).find_map(|i| match &s[i..] {
            [b'\n', b'\n', ..] => Some(i + 2),
            [b'\n', b'\r', b'\n', ..] => Some(i + 3),
            _ => None,
        })
    }

    #[test]
    fn ends() {
        assert_eq!(empty_line_end(b"A: 1\r\nB: 2\r\n\r\nbody"), Some(14));
        assert_eq!(empty_line_end(b"A: 1\n\nb\r\n\r\n"), Some(6));
        assert_eq!(empty_line_end(b"A: 1\r\n\nbody"), Some(7));
        assert_eq!(empty_line_end(b"A: 1\r\n\r"), None);
        assert_eq!(empty_line_end(b"A: 1\r\n"), None);
        assert_eq!(empty_line_end(b"\r\nbody"), None, "no line end before it");
        assert_eq!(empty_line_end(b""), None);
        // An end past the first vector, and one in the bytewise tail.
        let mut long = b"Received: from somewhere.example\r\n".repeat(3);
        long.extend_from_slice(b"\r\nbody");
        assert_eq!(empty_line_end(&long), Some(long.len() - 4));
        assert_eq!(
            empty_line_end(&long[..long.len() - 4]),
            Some(long.len() - 4)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Any mix of line ends, CRs and text, at every length across
        /// the 16-byte steps, ends where the plain statement says.
        #[test]
        fn agrees_with_the_plain_statement(
            s in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b':'), any::<u8>()],
                0..80,
            )
        ) {
            prop_assert_eq!(empty_line_end(&s), reference(&s));
        }
    }
}
