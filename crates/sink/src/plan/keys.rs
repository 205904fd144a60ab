//! Keys: the decision and state hashes of a rule's key (computed
//! piecewise from the session's strings), its readable text, and the keys
//! of per-rule state (attempt counters, token buckets, greylist entries).

use super::model::{KeyKind, RateBy};
use super::select::{domain_of, hash_bytes, lower_word, mix64, tail_word, KeyHasher};
use super::validate::Rule;
use super::view::{rcpt_key_hash, RcptPart, View};

/// Tags separating the state a rule keeps under one key.
pub(crate) const TAG_ATTEMPTS: u64 = 1;
pub(super) const TAG_BUCKET: u64 = 2;
pub(super) const TAG_GREY: u64 = 3;

/// A fast hash of `bytes` ASCII-lower-cased, for the engine's own
/// bookkeeping (the referee's request identities, a session's known
/// domains), never for a replayable decision. Each step is a bijection of
/// the state, so two texts of one length hash alike only if equal.
pub(crate) fn lower_hash(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9FB2_1C65_1E98_DF25;
    let step = |h: u64, w: u64| (h ^ lower_word(w)).wrapping_mul(K).rotate_left(29);
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = step(h, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let rest = words.remainder().len();
    if rest > 0 {
        h = step(h, tail_word(bytes, rest));
    }
    mix64(h)
}

pub(crate) fn state_key(rule: usize, tag: u64, key: u64) -> u64 {
    mix64(key ^ mix64(((rule as u64) << 8) | tag))
}

/// A key's two hashes.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyHashes {
    /// What the rule's random draws use.
    pub(super) draw: u64,
    /// What attempts and other per-key state are kept under.
    pub(super) state: u64,
}

impl Rule {
    /// The key's decision hash (what the draw uses) and its state hash
    /// (what attempts are counted under). `None`: the key does not exist at
    /// this stage, so the rule does not apply.
    ///
    /// For text keys both are `hash_bytes(0, text)` of the readable form
    /// ([`Rule::key_text`]), computed piecewise without building the text.
    pub(super) fn key_hashes(&self, v: &View<'_>) -> Option<KeyHashes> {
        let ctx = v.ctx;
        let h = match self.key {
            // One recipient (always so at RCPT): the hash the referee
            // may share.
            KeyKind::Rcpt => match v.rcpt_part()? {
                RcptPart::One(_) if v.ctx.rcpt.is_some() => v.rcpt_hash()?,
                RcptPart::One(r) => rcpt_key_hash(r),
                r => {
                    let mut k = KeyHasher::new(0, "rcpt:".len() + r.len(","));
                    k.bytes(b"rcpt:");
                    r.feed(&mut k, ",");
                    k.finish()
                }
            },
            KeyKind::Sender => {
                let s = v.sender?.as_bytes();
                KeyHasher::new(0, "sender:".len() + s.len())
                    .bytes(b"sender:")
                    .lower(s)
                    .finish()
            }
            KeyKind::MessageId => {
                let m = ctx.header("message-id")?.as_bytes();
                KeyHasher::new(0, "message_id:".len() + m.len())
                    .bytes(b"message_id:")
                    .bytes(m)
                    .finish()
            }
            KeyKind::Triplet => {
                let s = v.sender?.as_bytes();
                let ip = v.ip;
                let r = v.rcpt_part().unwrap_or(RcptPart::Empty);
                let len = "triplet:".len() + ip.as_bytes().len() + 1 + s.len() + 1 + r.len(",");
                let mut k = KeyHasher::new(0, len);
                k.bytes(b"triplet:")
                    .bytes(ip.as_bytes())
                    .bytes(b",")
                    .lower(s)
                    .bytes(b",");
                r.feed(&mut k, ",");
                k.finish()
            }
            // The decision hash of connection keys leaves the id out, so
            // the n-th attempt in any connection draws the same: decisions
            // do not depend on connection order.
            KeyKind::Connection | KeyKind::Session => {
                let (_, h) = conn_hash(self.key);
                let (states, _) = connection_state_keys(self.key, ctx.session_id);
                let st = states[usize::from(ctx.tls && self.key == KeyKind::Session)];
                return Some(KeyHashes { draw: h, state: st });
            }
            KeyKind::Global => hash_bytes(0, b"global"),
        };
        Some(KeyHashes { draw: h, state: h })
    }

    /// The key's readable form (`rcpt:bob@example.test`), built only when
    /// a verdict is produced. Call only when [`Rule::key_hashes`] gave
    /// `Some`.
    pub(super) fn key_text(&self, v: &View<'_>) -> String {
        let ctx = v.ctx;
        let lower = |s: Option<&str>| s.unwrap_or_default().to_ascii_lowercase();
        let rcpts = || v.rcpt_part().map(|r| r.text(",")).unwrap_or_default();
        match self.key {
            KeyKind::Rcpt => format!("rcpt:{}", rcpts()),
            KeyKind::Sender => format!("sender:{}", lower(v.sender)),
            KeyKind::MessageId => {
                format!(
                    "message_id:{}",
                    ctx.header("message-id").unwrap_or_default()
                )
            }
            KeyKind::Triplet => format!(
                "triplet:{},{},{}",
                ctx.peer.ip().to_canonical(),
                lower(v.sender),
                rcpts()
            ),
            KeyKind::Connection | KeyKind::Session => {
                format!("{}:{}", conn_hash(self.key).0, ctx.session_id)
            }
            KeyKind::Global => "global".to_string(),
        }
    }
}

fn conn_hash(k: KeyKind) -> (&'static str, u64) {
    let name = if k == KeyKind::Session {
        "session"
    } else {
        "connection"
    };
    (name, hash_bytes(0, name.as_bytes()))
}

/// The state hashes a connection-scoped key can have for session `id`
/// (a session key has one per TLS state: STARTTLS starts a new session),
/// and how many of the two are used.
pub(crate) fn connection_state_keys(k: KeyKind, id: u64) -> ([u64; 2], usize) {
    match k {
        KeyKind::Connection => ([mix64(conn_hash(k).1 ^ id), 0], 1),
        KeyKind::Session => {
            let h = conn_hash(k).1;
            (
                [
                    mix64(h ^ id.wrapping_mul(2)),
                    mix64(h ^ (id.wrapping_mul(2) + 1)),
                ],
                2,
            )
        }
        _ => ([0; 2], 0),
    }
}

/// The token bucket key of a rate limit.
pub(super) fn bucket_key(by: RateBy, v: &View<'_>) -> Option<u64> {
    Some(match by {
        RateBy::Global => 0,
        RateBy::Ip => hash_bytes(1, v.ip.as_bytes()),
        RateBy::Sender => {
            let s = v.sender?.as_bytes();
            KeyHasher::new(2, s.len()).lower(s).finish()
        }
        RateBy::RcptDomain => {
            let r = v.ctx.rcpt.or_else(|| v.ctx.recipients.get(0))?;
            let d = domain_of(r).as_bytes();
            KeyHasher::new(3, d.len()).lower(d).finish()
        }
    })
}
