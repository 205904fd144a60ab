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
            tls: false,
            auth_user: None,
            message_size: 0,
            message: Some(self.body()),
            command: b"",
        };
        ctx.header(name).map(str::to_owned)
    }
}

pub(crate) struct Store {
    next_id: AtomicU64,
    ring: Mutex<VecDeque<Arc<StoredMessage>>>,
}

impl Store {
    /// A store whose ids continue after the highest `<n>.eml` in `capture`,
    /// so a restart never overwrites earlier captures.
    pub(crate) fn new(capture: Option<&Path>) -> Store {
        let first = capture.map_or(1, |dir| highest_capture_id(dir) + 1);
        Store {
            next_id: AtomicU64::new(first),
            ring: Mutex::new(VecDeque::new()),
        }
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
        if keep > 0 {
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
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            while ring.len() >= keep {
                ring.pop_front();
            }
            ring.push_back(msg);
        }
        Ok(id)
    }

    pub(crate) fn messages(&self) -> Vec<Arc<StoredMessage>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().cloned().collect()
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<StoredMessage>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().find(|m| m.id == id).cloned()
    }

    pub(crate) fn clear(&self) {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Writes `<dir>/.<id>.eml.tmp`, then renames it to `<dir>/<id>.eml`, so a
/// reader never sees half a message.
fn write_atomically(dir: &Path, id: u64, raw: &[u8]) -> std::io::Result<PathBuf> {
    let tmp = dir.join(format!(".{id}.eml.tmp"));
    let path = dir.join(format!("{id}.eml"));
    std::fs::write(&tmp, raw)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn highest_capture_id(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_suffix(".eml")?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}
