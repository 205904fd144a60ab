//! Pure functions behind selection: the documented hash, uniform draws,
//! delay distributions, globs, CIDR blocks and time windows.
//!
//! Nothing here reads a clock, a thread id or a random source: every result
//! is a function of its arguments, which is what makes fault plans
//! replayable.
//!
//! # The hash
//!
//! Decisions hash `(seed, rule index, key, attempt, stream)` with the
//! SplitMix64 finalizer (Steele, Lea & Flood 2014; constants from Stafford's
//! "variant 13"). Key bytes are folded 8 at a time, little-endian, zero
//! padded, into a running state that starts from the seed and the length:
//!
//! ```text
//! h0      = mix(seed ^ 0x9E3779B97F4A7C15 ^ len * 0xFF51AFD7ED558CCD)
//! h(i+1)  = mix(h(i) ^ word(i)) + 0x9E3779B97F4A7C15        (wrapping)
//! draw    = mix(mix(mix(seed ^ rule * G) ^ key) ^ attempt * H ^ stream * J)
//! uniform = (draw >> 11) / 2^53                                ∈ [0, 1)
//! ```
//!
//! It is not cryptographic; it only has to be stable across runs, machines
//! and versions (changing it is a breaking change to replayability).

use std::net::IpAddr;
use std::time::Duration;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const LEN_MUL: u64 = 0xFF51_AFD7_ED55_8CCD;
const RULE_MUL: u64 = 0xC2B2_AE3D_27D4_EB4F;
const ATTEMPT_MUL: u64 = 0x1656_67B1_9E37_79F9;
const STREAM_MUL: u64 = 0x27D4_EB2F_1656_67C5;

/// The SplitMix64 finalizer, shared with the blaster's generator.
pub use mailstorm_sample::mix64;

/// Hashes `bytes` under `seed` (see the module docs for the exact steps).
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = mix64(seed ^ GOLDEN ^ (bytes.len() as u64).wrapping_mul(LEN_MUL));
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix64(h ^ u64::from_le_bytes(w)).wrapping_add(GOLDEN);
    }
    h
}

/// [`hash_bytes`] fed in pieces: the same value as hashing the
/// concatenation, without building it. The total length must be known up
/// front (it seeds the state); [`KeyHasher::finish`] checks it in debug
/// builds.
pub(crate) struct KeyHasher {
    h: u64,
    word: u64,
    filled: u32,
    #[cfg(debug_assertions)]
    left: usize,
}

impl KeyHasher {
    /// Starts hashing `len` bytes under `seed`.
    #[inline]
    pub(crate) fn new(seed: u64, len: usize) -> KeyHasher {
        KeyHasher {
            h: mix64(seed ^ GOLDEN ^ (len as u64).wrapping_mul(LEN_MUL)),
            word: 0,
            filled: 0,
            #[cfg(debug_assertions)]
            left: len,
        }
    }

    /// Appends the low `n` bytes (1..=8) of `w`, little-endian.
    #[inline]
    fn push(&mut self, w: u64, n: u32) {
        let filled = self.filled;
        // `filled` < 8, so the shift is in range.
        self.word |= w << (8 * filled);
        if filled + n >= 8 {
            self.h = mix64(self.h ^ self.word).wrapping_add(GOLDEN);
            // The bytes of `w` that did not fit (none when filled == 0).
            self.word = if filled == 0 {
                0
            } else {
                w >> (8 * (8 - filled))
            };
            self.filled = filled + n - 8;
        } else {
            self.filled = filled + n;
        }
    }

    /// Feeds `bytes`, each word passed through `map` first. Whole words
    /// keep the fill level, so a tight loop shifts each across the pending
    /// bytes; the tail goes through [`KeyHasher::push`].
    #[inline(always)]
    fn feed(&mut self, bytes: &[u8], map: impl Fn(u64) -> u64) -> &mut Self {
        #[cfg(debug_assertions)]
        {
            self.left -= bytes.len();
        }
        let mut words = bytes.chunks_exact(8);
        let (mut h, mut pending) = (self.h, self.word);
        let word = |w: &[u8]| map(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        if self.filled == 0 {
            for w in &mut words {
                h = mix64(h ^ word(w)).wrapping_add(GOLDEN);
            }
        } else {
            // 8..=56: both shifts are in range.
            let bits = 8 * self.filled;
            for w in &mut words {
                let w = word(w);
                h = mix64(h ^ (pending | (w << bits))).wrapping_add(GOLDEN);
                pending = w >> (64 - bits);
            }
        }
        (self.h, self.word) = (h, pending);
        let rest = words.remainder().len();
        if rest > 0 {
            // Zero bytes map to zero bytes: the padding stays zero.
            self.push(map(tail_word(bytes, rest)), rest as u32);
        }
        self
    }

    /// Feeds `bytes` as they are.
    #[inline]
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.feed(bytes, |w| w)
    }

    /// Feeds `bytes` ASCII-lower-cased (same length).
    #[inline]
    pub(crate) fn lower(&mut self, bytes: &[u8]) -> &mut Self {
        self.feed(bytes, lower_word)
    }

    /// The hash; equal to `hash_bytes(seed, all bytes fed)`.
    #[inline]
    pub(crate) fn finish(&self) -> u64 {
        #[cfg(debug_assertions)]
        debug_assert_eq!(self.left, 0, "KeyHasher: length given up front was wrong");
        if self.filled == 0 {
            self.h
        } else {
            mix64(self.h ^ self.word).wrapping_add(GOLDEN)
        }
    }
}

/// The last `rest` (1..=7) bytes of `bytes` as a little-endian word,
/// zero-padded: one overlapping load when `bytes` holds a whole word, not
/// a variable-length copy (a libc call) per hashed string.
#[inline]
pub(crate) fn tail_word(bytes: &[u8], rest: usize) -> u64 {
    debug_assert!((1..8).contains(&rest) && rest <= bytes.len());
    match bytes.len().checked_sub(8) {
        Some(at) => {
            let w = u64::from_le_bytes(bytes[at..].try_into().expect("8 bytes"));
            w >> (8 * (8 - rest))
        }
        None => bytes
            .iter()
            .rev()
            .fold(0u64, |w, &b| (w << 8) | u64::from(b)),
    }
}

/// ASCII-lower-cases the 8 bytes of `w` at once (bytes >= 0x80 unchanged).
#[inline]
pub(crate) fn lower_word(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = w & !HIGH;
    // High bit of each byte: byte >= 'A', byte > 'Z' (on the low 7 bits,
    // so no carry crosses bytes).
    let ge_a = low7.wrapping_add(ONES * (0x80 - u64::from(b'A')));
    let gt_z = low7.wrapping_add(ONES * (0x80 - u64::from(b'Z') - 1));
    let upper = ge_a & !gt_z & !w & HIGH;
    w | (upper >> 2)
}

/// Compares two strings as their ASCII-lower-cased forms would compare.
pub(crate) fn cmp_lower(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// A uniform draw in `[0, 1)` for `(seed, rule, key hash, attempt, stream)`.
/// `stream` separates independent draws of one decision (0: selection,
/// 1 and 2: delay sampling).
pub fn uniform(seed: u64, rule: usize, key: u64, attempt: u64, stream: u64) -> f64 {
    let a = mix64(seed ^ (rule as u64).wrapping_add(1).wrapping_mul(RULE_MUL));
    let b = mix64(a ^ key);
    let c = mix64(b ^ attempt.wrapping_mul(ATTEMPT_MUL) ^ stream.wrapping_mul(STREAM_MUL));
    (c >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A delay distribution, in milliseconds (validated: finite, non-negative).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    /// Always this long.
    Fixed(f64),
    /// Uniform in `[min, max]`.
    Uniform {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// Normal, clamped at 0.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        stddev: f64,
    },
    /// Log-normal given by its median and 99th percentile.
    LogNormal {
        /// Median.
        median: f64,
        /// 99th percentile (≥ median).
        p99: f64,
    },
    /// Exponential with this mean.
    Exponential {
        /// Mean.
        mean: f64,
    },
    /// Pareto (type I): `scale / U^(1/shape)`.
    Pareto {
        /// Minimum value.
        scale: f64,
        /// Tail index α (> 0).
        shape: f64,
    },
}

impl Dist {
    /// The sample for two independent uniforms `u1`, `u2` in `[0, 1)`,
    /// capped at `cap_ms`.
    pub fn sample(&self, u1: f64, u2: f64, cap_ms: f64) -> Duration {
        let gauss = || mailstorm_sample::standard_normal(u1, u2);
        let ms = match *self {
            Dist::Fixed(ms) => ms,
            Dist::Uniform { min, max } => min + (max - min) * u1,
            Dist::Normal { mean, stddev } => mean + stddev * gauss(),
            Dist::LogNormal { median, p99 } => {
                mailstorm_sample::LogNormal::from_median_p99(median, p99).at(gauss())
            }
            Dist::Exponential { mean } => -mean * (1.0 - u1).ln(),
            Dist::Pareto { scale, shape } => scale / (1.0 - u1).powf(1.0 / shape),
        };
        let ms = if ms.is_finite() { ms.max(0.0) } else { cap_ms };
        Duration::from_micros((ms.min(cap_ms) * 1000.0) as u64)
    }
}

/// `*` (any run) and `?` (one character) glob, ASCII case-insensitive.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // The common shapes `*@domain` and `prefix*` without backtracking.
    if let Some(suffix) = p.strip_prefix(b"*") {
        if !suffix.iter().any(|&c| c == b'*' || c == b'?') {
            return t.len() >= suffix.len()
                && t[t.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
        }
    } else if let Some(prefix) = p.strip_suffix(b"*") {
        if !prefix.iter().any(|&c| c == b'*' || c == b'?') {
            return t.len() >= prefix.len() && t[..prefix.len()].eq_ignore_ascii_case(prefix);
        }
    }
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last star absorb one more character.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// An address block: `10.0.0.0/8`, `::1/128`, or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR[/PREFIX]`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside the block (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A time window in seconds since the plan was loaded: active in
/// `[from, to)`, or, with a `period`, in `[from, to)` of every period
/// (`t mod period`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Start (seconds).
    pub from: f64,
    /// End (seconds, exclusive; may be infinite).
    pub to: f64,
    /// Repeat every this many seconds (0: no repetition).
    pub period: f64,
}

impl Window {
    /// Whether the window is active `elapsed` after the plan was loaded.
    pub fn active(&self, elapsed: Duration) -> bool {
        let mut t = elapsed.as_secs_f64();
        if self.period > 0.0 {
            t %= self.period;
        }
        t >= self.from && t < self.to
    }
}

/// The domain of an address (`user@Example.COM` → `example.com`); the
/// whole string lower-cased when there is no `@`.
pub fn domain_of(addr: &str) -> &str {
    // memchr's search, not `rsplit_once`: run per decision of a domain rule.
    memchr::memrchr(b'@', addr.as_bytes()).map_or(addr, |i| &addr[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        // Pinned values: changing the hash breaks replayability.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161D_100B_05E5);
        let h = hash_bytes(42, b"bob@example.test");
        assert_eq!(h, hash_bytes(42, b"bob@example.test"));
        assert_ne!(h, hash_bytes(43, b"bob@example.test"));
        assert_ne!(hash_bytes(0, b"a"), hash_bytes(0, b"a\0"));
        let u = uniform(1, 0, h, 1, 0);
        assert!((0.0..1.0).contains(&u));
        assert_eq!(u, uniform(1, 0, h, 1, 0));
        assert_ne!(u, uniform(1, 0, h, 2, 0));
        assert_ne!(u, uniform(1, 1, h, 1, 0));
    }

    #[test]
    fn key_hasher_equals_hash_bytes() {
        let parts: [&[u8]; 5] = [b"triplet:", b"127.0.0.1", b",", b"Bob@Example.TEST", b""];
        for seed in [0u64, 42] {
            for cut in 0..parts.len() {
                let ps = &parts[..=cut];
                let whole: Vec<u8> = ps.concat();
                let mut k = KeyHasher::new(seed, whole.len());
                for p in ps {
                    k.bytes(p);
                }
                assert_eq!(k.finish(), hash_bytes(seed, &whole));
            }
        }
        // Unaligned pieces, lower-casing.
        let text = "rcpt:Some.Long.Recipient@Example.TEST";
        for split in 0..text.len() {
            let (a, b) = text.split_at(split);
            let mut k = KeyHasher::new(0, text.len());
            k.lower(a.as_bytes())
                .bytes(b.to_ascii_lowercase().as_bytes());
            assert_eq!(
                k.finish(),
                hash_bytes(0, text.to_ascii_lowercase().as_bytes())
            );
        }
        assert_eq!(KeyHasher::new(3, 0).finish(), hash_bytes(3, b""));
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b, b'A', b'z', b'@', 0x80 | b, b'Z', b'[', b'`']);
            let want = u64::from_le_bytes(w.to_le_bytes().map(|c| c.to_ascii_lowercase()));
            assert_eq!(lower_word(w), want, "{b}");
        }
        assert!(cmp_lower("B", "a").is_gt() && cmp_lower("ab", "AB").is_eq());
    }

    #[test]
    fn uniform_is_roughly_uniform() {
        let n = 20_000;
        let below = (0..n)
            .filter(|&i| uniform(7, 3, hash_bytes(7, b"k"), i, 0) < 0.25)
            .count();
        let frac = below as f64 / n as f64;
        assert!((0.23..0.27).contains(&frac), "{frac}");
    }

    #[test]
    fn distributions() {
        let cap = 1e9;
        assert_eq!(
            Dist::Fixed(5.0).sample(0.3, 0.2, cap),
            Duration::from_millis(5)
        );
        let u = Dist::Uniform {
            min: 10.0,
            max: 20.0,
        };
        assert_eq!(u.sample(0.5, 0.0, cap), Duration::from_millis(15));
        // Log-normal: the median at gauss = 0 (u2 = 0.25 → cos = 0).
        let ln = Dist::LogNormal {
            median: 100.0,
            p99: 1000.0,
        };
        let m = ln.sample(0.5, 0.25, cap).as_secs_f64() * 1000.0;
        assert!((m - 100.0).abs() < 0.01, "{m}");
        // Empirical p99 close to the configured one.
        let mut v: Vec<f64> = (0..20_000u64)
            .map(|i| {
                let k = hash_bytes(1, &i.to_le_bytes());
                ln.sample(uniform(1, 0, k, 0, 1), uniform(1, 0, k, 0, 2), cap)
                    .as_secs_f64()
                    * 1000.0
            })
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let p99 = v[v.len() * 99 / 100];
        assert!((800.0..1250.0).contains(&p99), "{p99}");
        let e = Dist::Exponential { mean: 50.0 };
        assert_eq!(e.sample(0.0, 0.0, cap), Duration::ZERO);
        let p = Dist::Pareto {
            scale: 10.0,
            shape: 2.0,
        };
        assert_eq!(p.sample(0.0, 0.0, cap), Duration::from_millis(10));
        assert_eq!(p.sample(0.999_999, 0.0, 50.0), Duration::from_millis(50));
        let n = Dist::Normal {
            mean: 5.0,
            stddev: 100.0,
        };
        assert!(n.sample(0.999, 0.5, cap) == Duration::ZERO);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*@example.test", "Bob@EXAMPLE.test"));
        assert!(glob_match("b?b@*", "bob@x"));
        assert!(!glob_match("b?b@*", "bb@x"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYbc"));
        assert!(!glob_match("a*b*c", "aXXbYYbd"));
        assert!(glob_match("unknown-*@*", "unknown-7@x.test"));
        assert!(glob_match("*", "x") && glob_match("**", "") && glob_match("*x", "x"));
        assert!(!glob_match("*@never.invalid", "a@blast.test"));
        assert!(glob_match("Abc*", "abcd") && !glob_match("abc*", "ab"));
        assert!(!glob_match("*abc", "bc"));
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn windows() {
        let w = Window {
            from: 0.0,
            to: 20.0,
            period: 60.0,
        };
        let s = Duration::from_secs;
        assert!(w.active(s(0)) && w.active(s(19)) && !w.active(s(20)));
        assert!(!w.active(s(59)) && w.active(s(60)) && w.active(s(125)));
        let once = Window {
            from: 5.0,
            to: f64::INFINITY,
            period: 0.0,
        };
        assert!(!once.active(s(4)) && once.active(s(1_000_000)));
    }
}
