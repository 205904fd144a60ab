//! Globs compiled once at plan load. The shapes plans use (`*@domain`,
//! `prefix*`, a literal) compare one slice against a pre-lower-cased
//! pattern; anything else runs the general matcher
//! ([`super::select::glob_match`]), with the same results.

use super::select::glob_match;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `*` then no wildcard: the text ends with the rest.
    Suffix,
    /// No wildcard then `*`: the text starts with the rest.
    Prefix,
    /// No wildcard at all.
    Literal,
    /// Anything else.
    General,
}

/// A `match:` glob (`*` any run, `?` one character, ASCII
/// case-insensitive).
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    shape: Shape,
    /// The fixed part, lower-cased (the whole pattern for `General`).
    part: Box<[u8]>,
    pattern: Box<str>,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        let p = pattern.as_bytes();
        let plain = |s: &[u8]| !s.iter().any(|&c| c == b'*' || c == b'?');
        let (shape, part) = if let Some(s) = p.strip_prefix(b"*").filter(|s| plain(s)) {
            (Shape::Suffix, s)
        } else if let Some(s) = p.strip_suffix(b"*").filter(|s| plain(s)) {
            (Shape::Prefix, s)
        } else if plain(p) {
            (Shape::Literal, p)
        } else {
            (Shape::General, p)
        };
        Glob {
            shape,
            part: part.to_ascii_lowercase().into(),
            pattern: pattern.into(),
        }
    }

    /// Whether `text` matches (as `glob_match(pattern, text)`).
    pub(crate) fn matches(&self, text: &str) -> bool {
        let (p, t) = (&*self.part, text.as_bytes());
        let same = |a: &[u8]| {
            a.len() == p.len() && a.iter().zip(p).all(|(x, y)| x.to_ascii_lowercase() == *y)
        };
        match self.shape {
            Shape::Suffix => t.len() >= p.len() && same(&t[t.len() - p.len()..]),
            Shape::Prefix => t.len() >= p.len() && same(&t[..p.len()]),
            Shape::Literal => same(t),
            Shape::General => glob_match(&self.pattern, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_globs_agree_with_the_matcher() {
        let pats = [
            "*@example.test",
            "*@EXAMPLE.test",
            "b?b@*",
            "*",
            "**",
            "*x",
            "a*b*c",
            "unknown-*@*",
            "Abc*",
            "abc",
            "",
            "?",
            "*@never.invalid",
        ];
        let texts = [
            "Bob@EXAMPLE.test",
            "bob@x",
            "bb@x",
            "",
            "x",
            "aXXbYYbc",
            "unknown-7@x.test",
            "abcd",
            "ab",
            "ABC",
            "a@blast.test",
            "é@example.test",
        ];
        for p in pats {
            let g = Glob::new(p);
            for t in texts {
                assert_eq!(g.matches(t), glob_match(p, t), "{p} ~ {t}");
            }
        }
    }
}
