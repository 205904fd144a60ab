//! Accepted messages: `.eml` capture files and the in-memory ring kept for
//! the control API. Only used when `capture` or `keep` is set; discard mode
//! never reaches this module.

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::hook::Recipients;
use crate::settings::Settings;

/// The envelope of a message being stored (borrowed from the session).
pub(crate) struct Envelope<'a> {
    pub(crate) mail_from: &'a str,
    pub(crate) recipients: Recipients<'a>,
    pub(crate) client: SocketAddr,
    pub(crate) helo: &'a str,
    pub(crate) tls: Option<&'static str>,
    pub(crate) auth_user: Option<&'a str>,
}

/// A message the sink accepted and kept (`keep`).
#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    /// Id, also the capture file name (`<id>.eml`).
    pub id: u64,
    /// Reception time, milliseconds since the Unix epoch.
    pub received_unix_ms: u64,
    /// Reverse-path (`""` for `<>`).
    pub mail_from: String,
    /// Recipients in RCPT order.
    pub rcpt_to: Vec<String>,
    /// The client's address.
    pub client: SocketAddr,
    /// The EHLO/HELO/LHLO argument.
    pub helo: String,
    /// The TLS version, when TLS was active.
    pub tls: Option<String>,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
    /// Size of the message body as received (without the added headers).
    pub size: usize,
    /// The `X-Mailstorm-*` envelope headers followed by the message.
    #[serde(skip)]
    pub raw: Vec<u8>,
}

impl StoredMessage {
    /// Whether `filter` selects this message (by its greeting, sender and
    /// recipient domains).
    pub fn matches(&self, filter: &crate::ClientFilter) -> bool {
        filter.matches_message(&self.helo, &self.mail_from, &self.rcpt_to)
    }

    /// The message as received, without the envelope headers.
    pub fn body(&self) -> &[u8] {
        &self.raw[self.raw.len() - self.size..]
    }

    /// The first header named `name` of the received message.
    pub fn header(&self, name: &str) -> Option<String> {
        let ctx = crate::hook::StageContext {
            stage: crate::hook::Stage::DataEnd,
            session_id: 0,
            peer: self.client,
            helo: None,
            sender: None,
            recipients: Recipients { buf: "", ends: &[] },
            rcpt: None,
            reverse_path: None,
            tls: false,
            auth_user: None,
            message_size: 0,
            message: Some(self.body()),
            command: b"",
            scope: None,
        };
        ctx.header(name).map(str::to_owned)
    }
}

pub(crate) struct Store {
    next_id: AtomicU64,
    ring: Mutex<Ring>,
    /// Bytes of arriving messages that sessions hold (see [`MessageHold`]).
    held: Arc<AtomicU64>,
}

/// One session's share of the bytes of arriving messages held in memory,
/// counted across sessions against `buffer_bytes`: the body while it
/// arrives with `keep` or `capture` (without it, 50 connections each
/// sending 20 MB with `--keep` held 1 GB), and the envelope's recipients
/// past [`ENVELOPE_ALLOWANCE`] (500 connections with 1,000 long recipients
/// each held 230 MB). Given back when the message ends or is abandoned and
/// when the session is dropped mid-message.
pub(crate) struct MessageHold {
    held_by_all: Arc<AtomicU64>,
    body: u64,
    envelope: u64,
}

/// Recipient bytes a session holds without counting them: ordinary
/// envelopes never touch the shared count (no contention per RCPT), and
/// this much per connection is below its read buffer's 64 KiB.
pub(crate) const ENVELOPE_ALLOWANCE: usize = 32 << 10;

impl MessageHold {
    /// Grows `part` (the body's or the envelope's count) to `len`, if the
    /// growth fits under `limit` across sessions. The shared count is
    /// touched only on growth: a message that holds nothing costs nothing.
    fn grow(held_by_all: &AtomicU64, part: &mut u64, len: u64, limit: u64) -> bool {
        if len <= *part {
            return true;
        }
        let more = len - *part;
        let before = held_by_all.fetch_add(more, Ordering::Relaxed);
        if before.saturating_add(more) > limit {
            held_by_all.fetch_sub(more, Ordering::Relaxed);
            return false;
        }
        *part = len;
        true
    }

    /// Grows the body's hold to `len` bytes. `false` when that would take
    /// all sessions past `limit`; the body's hold is then given back whole.
    pub(crate) fn grow_to(&mut self, len: usize, limit: u64) -> bool {
        if Self::grow(&self.held_by_all, &mut self.body, len as u64, limit) {
            return true;
        }
        self.release();
        false
    }

    /// Gives the body's hold back.
    pub(crate) fn release(&mut self) {
        if self.body > 0 {
            self.held_by_all.fetch_sub(self.body, Ordering::Relaxed);
            self.body = 0;
        }
    }

    /// Grows the envelope's hold to `len` bytes (0 up to
    /// [`ENVELOPE_ALLOWANCE`]). `false` when that would take all sessions
    /// past `limit`; what it held stays (its recipients were accepted).
    pub(crate) fn grow_envelope_to(&mut self, len: usize, limit: u64) -> bool {
        let len = if len > ENVELOPE_ALLOWANCE {
            len as u64
        } else {
            0
        };
        Self::grow(&self.held_by_all, &mut self.envelope, len, limit)
    }

    /// Gives the envelope's hold back.
    pub(crate) fn release_envelope(&mut self) {
        if self.envelope > 0 {
            self.held_by_all.fetch_sub(self.envelope, Ordering::Relaxed);
            self.envelope = 0;
        }
    }
}

impl Drop for MessageHold {
    fn drop(&mut self) {
        self.release();
        self.release_envelope();
    }
}

/// The kept messages and their total size (`raw` lengths), so the byte cap
/// is checked without walking the ring.
#[derive(Default)]
struct Ring {
    messages: VecDeque<Arc<StoredMessage>>,
    bytes: u64,
}

impl Ring {
    fn pop_oldest(&mut self) {
        if let Some(m) = self.messages.pop_front() {
            self.bytes -= m.raw.len() as u64;
        }
    }
}

impl Store {
    /// A store whose ids continue after the highest `<n>.eml` in `capture`,
    /// so a restart never overwrites earlier captures.
    pub(crate) fn new(capture: Option<&Path>) -> Store {
        let first = capture.map_or(1, |dir| highest_capture_id(dir) + 1);
        Store {
            next_id: AtomicU64::new(first),
            ring: Mutex::new(Ring::default()),
            held: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An empty hold on an arriving message's bytes, for one session.
    pub(crate) fn message_hold(&self) -> MessageHold {
        MessageHold {
            held_by_all: self.held.clone(),
            body: 0,
            envelope: 0,
        }
    }

    /// Bytes of arriving messages held by all sessions now.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Stores an accepted message; returns its id.
    pub(crate) fn deliver(
        &self,
        s: &Settings,
        env: &Envelope<'_>,
        body: &[u8],
    ) -> std::io::Result<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut raw = Vec::with_capacity(body.len() + 256);
        let clean = |s: &str| s.replace(['\r', '\n'], " ");
        let _ = write!(raw, "X-Mailstorm-Mail-From: <{}>\r\n", clean(env.mail_from));
        for r in env.recipients.iter() {
            let _ = write!(raw, "X-Mailstorm-Rcpt-To: <{}>\r\n", clean(r));
        }
        let _ = write!(
            raw,
            "X-Mailstorm-Client: {} helo={}\r\n",
            env.client,
            clean(env.helo)
        );
        let _ = write!(raw, "X-Mailstorm-TLS: {}\r\n", env.tls.unwrap_or("no"));
        let _ = write!(
            raw,
            "X-Mailstorm-Auth: {}\r\n",
            env.auth_user.map_or_else(|| "none".to_owned(), clean)
        );
        raw.extend_from_slice(body);
        if let Some(dir) = &s.config.capture {
            // Blocking file I/O on the shard: capture mode trades throughput
            // for a simple guarantee (the file exists before the 250 reply).
            write_atomically(dir, id, &raw)?;
        }
        let keep = s.config.keep;
        // 0 = no byte cap; a message bigger than the cap is not kept at all.
        let cap = match s.config.keep_bytes {
            0 => u64::MAX,
            n => n,
        };
        if keep > 0 && raw.len() as u64 <= cap {
            let msg = Arc::new(StoredMessage {
                id,
                received_unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                mail_from: env.mail_from.to_owned(),
                rcpt_to: env.recipients.iter().map(str::to_owned).collect(),
                client: env.client,
                helo: env.helo.to_owned(),
                tls: env.tls.map(str::to_owned),
                auth_user: env.auth_user.map(str::to_owned),
                size: body.len(),
                raw,
            });
            let size = msg.raw.len() as u64;
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            while ring.messages.len() >= keep || ring.bytes + size > cap {
                ring.pop_oldest();
            }
            ring.bytes += size;
            ring.messages.push_back(msg);
        }
        Ok(id)
    }

    pub(crate) fn messages(&self) -> Vec<Arc<StoredMessage>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.messages.iter().cloned().collect()
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<StoredMessage>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.messages.iter().find(|m| m.id == id).cloned()
    }

    /// Forgets the kept messages `drop` selects (a filtered reset).
    pub(crate) fn remove_where(&self, drop: impl Fn(&StoredMessage) -> bool) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let before = std::mem::take(&mut ring.messages);
        ring.bytes = 0;
        for m in before {
            if !drop(&m) {
                ring.bytes += m.raw.len() as u64;
                ring.messages.push_back(m);
            }
        }
    }

    /// Forgets the kept messages and gives their memory back to the system.
    pub(crate) fn clear(&self) {
        let old = std::mem::take(&mut *self.ring.lock().unwrap_or_else(|e| e.into_inner()));
        // Freed outside the lock; a reader may still hold some messages.
        drop(old);
        release_free_memory();
    }
}

/// Checks a capture directory before the first message needs it: creates it
/// if missing and proves it writable with a probe file, so a bad path fails
/// at start instead of turning every message into a 451.
pub(crate) fn prepare_capture_dir(dir: &Path) -> Result<(), crate::SinkError> {
    probe_dir(dir).map_err(|source| crate::SinkError::Capture {
        path: dir.to_path_buf(),
        source,
    })
}

fn probe_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".mailstorm-write-probe-{}", std::process::id()));
    let written = std::fs::write(&probe, b"probe");
    // Removed even when the write failed half-way.
    let removed = std::fs::remove_file(&probe);
    written?;
    removed
}

/// Writes `<dir>/.<id>.eml.tmp`, then renames it to `<dir>/<id>.eml`, so a
/// reader never sees half a message. On any error the temp file is removed
/// (a full disk must not stay full) and the error names the path.
fn write_atomically(dir: &Path, id: u64, raw: &[u8]) -> std::io::Result<PathBuf> {
    let tmp = dir.join(format!(".{id}.eml.tmp"));
    let path = dir.join(format!("{id}.eml"));
    let result = match std::fs::write(&tmp, raw) {
        Err(e) => Err(with_path(e, "writing", &tmp)),
        Ok(()) => std::fs::rename(&tmp, &path).map_err(|e| with_path(e, "renaming to", &path)),
    };
    if result.is_err() {
        // NotFound: the write failed before creating it. Any other failure
        // to remove is already covered by the error being returned.
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

fn with_path(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The highest id among the `<n>.eml` files (not directories) in `dir`.
fn highest_capture_id(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            if !e.file_type().ok()?.is_file() {
                return None;
            }
            let name = e.file_name();
            name.to_str()?.strip_suffix(".eml")?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Returns freed heap pages to the system. glibc keeps small freed blocks
/// (a kept message is one) in its arenas, so without this RSS stays at its
/// peak after `DELETE /messages`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers, only walks glibc's own free
    // lists under its arena locks, and is safe to call from any thread.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::Store;

    #[test]
    fn holds_share_one_budget_and_come_back() {
        let store = Store::new(None);
        let (mut a, mut b) = (store.message_hold(), store.message_hold());
        assert!(a.grow_to(600, 1000));
        assert!(a.grow_to(500, 1000), "shrinking asks for nothing");
        assert_eq!(store.held_bytes(), 600);
        // B would take the two past 1000: refused, B holds nothing.
        assert!(b.grow_to(300, 1000));
        assert!(!b.grow_to(500, 1000));
        assert_eq!(store.held_bytes(), 600);
        a.release();
        assert!(b.grow_to(1000, 1000));
        assert_eq!(store.held_bytes(), 1000);
        drop(b);
        assert_eq!(store.held_bytes(), 0, "a dropped session gives back");
    }

    #[test]
    fn an_envelope_counts_past_its_allowance_and_keeps_what_it_has() {
        use super::ENVELOPE_ALLOWANCE as FREE;
        let store = Store::new(None);
        let mut a = store.message_hold();
        assert!(a.grow_envelope_to(FREE, 1));
        assert_eq!(store.held_bytes(), 0, "within the allowance: uncounted");
        let limit = 2 * FREE as u64;
        assert!(a.grow_envelope_to(FREE + 1, limit));
        assert!(
            a.grow_to(FREE - 1, limit),
            "body and envelope share the count"
        );
        assert_eq!(store.held_bytes(), limit);
        assert!(!a.grow_envelope_to(FREE + 2, limit));
        assert_eq!(
            store.held_bytes(),
            limit,
            "a refused recipient keeps the rest"
        );
        a.release();
        a.release_envelope();
        assert_eq!(store.held_bytes(), 0);
        assert!(a.grow_envelope_to(FREE + 1, limit));
        drop(a);
        assert_eq!(store.held_bytes(), 0, "a dropped session gives back both");
    }
}
