//! Shared test helpers: an embedded sink, a run wrapper, a scripted
//! mini-server that records what it received, and a small JSON Schema
//! validator (the subset the report schema uses).
#![allow(dead_code)]

pub mod browser;
pub mod child;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailstorm_blast::config::Config;
use mailstorm_blast::{RunParams, RunResult, StopSignal};
use mailstorm_sink::{Sink, SinkBuilder, SinkHandle};

/// A one-thread loopback sink builder.
pub fn sink_builder() -> SinkBuilder {
    Sink::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .threads(1)
        .hostname("localhost")
}

pub fn sink() -> SinkHandle {
    sink_builder().start().expect("sink starts")
}

/// A bounded config for tests: 2 threads, unpinned, quiet, a time cap.
pub fn config() -> Config {
    Config {
        threads: 2,
        pin: false,
        quiet: true,
        seed: 7,
        concurrency: 4,
        duration: Some(Duration::from_secs(20)),
        grace: Duration::from_secs(2),
        ..Config::default()
    }
}

pub fn run_with(cfg: Config, addr: SocketAddr, trusted_pem: Option<Vec<u8>>) -> RunResult {
    try_run(cfg, addr, trusted_pem).expect("run succeeds")
}

pub fn try_run(
    cfg: Config,
    addr: SocketAddr,
    trusted_pem: Option<Vec<u8>>,
) -> Result<RunResult, mailstorm_blast::BlastError> {
    let params = RunParams {
        config: cfg,
        addr,
        target: addr.to_string(),
        host: addr.ip().to_string(),
        trusted_pem,
        stop: StopSignal::new(),
        preflight: None,
    };
    mailstorm_blast::run(&params, |_| {})
}

pub fn run(cfg: Config, addr: SocketAddr) -> RunResult {
    run_with(cfg, addr, None)
}

/// Replies a [`RunResult`] counted for `stage` and exact label.
pub fn replies(r: &RunResult, stage: &str, label: &str) -> u64 {
    r.totals
        .replies_by_stage()
        .into_iter()
        .filter(|(s, _)| s.name() == stage)
        .flat_map(|(_, m)| m.into_iter())
        .filter(|(l, _)| l == label)
        .map(|(_, n)| n)
        .sum()
}

/// What the scripted server saw.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Command verbs, upper case, in order (all connections).
    pub verbs: Vec<String>,
    /// MAIL commands that arrived with more bytes behind them in the same
    /// read: the client did not wait for the MAIL reply (pipelining).
    pub mail_with_more: usize,
    /// Messages completed (DATA dot or BDAT LAST).
    pub messages: usize,
}

impl Log {
    pub fn count(&self, verb: &str) -> usize {
        self.verbs.iter().filter(|v| *v == verb).count()
    }
}

/// Options of the scripted server.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub pipelining: bool,
    pub chunking: bool,
    /// Answer EHLO with 502 (forces HELO).
    pub reject_ehlo: bool,
}

/// A tiny blocking SMTP server (thread per connection), for asserting on
/// what the client sent. Lives until the process ends; bounded by tests.
pub fn scripted(script: Script) -> (SocketAddr, Arc<Mutex<Log>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let l2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (script, log) = (script.clone(), l2.clone());
            std::thread::spawn(move || {
                let _ = serve(stream, &script, &log);
            });
        }
    });
    (addr, log)
}

fn serve(mut s: TcpStream, script: &Script, log: &Mutex<Log>) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(b"220 scripted ESMTP\r\n")?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut in_data = false;
    let mut bdat_left: usize = 0;
    loop {
        // Process what is buffered.
        loop {
            if bdat_left > 0 {
                let take = bdat_left.min(buf.len());
                buf.drain(..take);
                bdat_left -= take;
                if bdat_left > 0 {
                    break;
                }
                log.lock().unwrap().messages += 1;
                s.write_all(b"250 2.0.0 chunk ok\r\n")?;
                continue;
            }
            if in_data {
                let Some(p) = find(&buf, b"\r\n.\r\n") else {
                    break;
                };
                buf.drain(..p + 5);
                in_data = false;
                log.lock().unwrap().messages += 1;
                s.write_all(b"250 2.0.0 queued\r\n")?;
                continue;
            }
            let Some(p) = find(&buf, b"\r\n") else { break };
            let line: Vec<u8> = buf.drain(..p + 2).collect();
            let line = String::from_utf8_lossy(&line[..p]).to_string();
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            {
                let mut l = log.lock().unwrap();
                l.verbs.push(verb.clone());
                if verb == "MAIL" && !buf.is_empty() {
                    l.mail_with_more += 1;
                }
            }
            match verb.as_str() {
                "EHLO" if script.reject_ehlo => s.write_all(b"502 5.5.1 no EHLO here\r\n")?,
                "EHLO" => {
                    let mut r = String::from("250-scripted\r\n");
                    if script.pipelining {
                        r.push_str("250-PIPELINING\r\n");
                    }
                    if script.chunking {
                        r.push_str("250-CHUNKING\r\n");
                    }
                    r.push_str("250 8BITMIME\r\n");
                    s.write_all(r.as_bytes())?;
                }
                "HELO" => s.write_all(b"250 scripted\r\n")?,
                "MAIL" | "RCPT" | "RSET" => s.write_all(b"250 2.0.0 ok\r\n")?,
                "DATA" => {
                    in_data = true;
                    // The DATA line itself ends the dot search's first line:
                    // put a CRLF back so "\r\n.\r\n" also matches an empty body.
                    buf.splice(0..0, b"\r\n".iter().copied());
                    s.write_all(b"354 go ahead\r\n")?;
                }
                "BDAT" => {
                    let n: usize = line
                        .split(' ')
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    bdat_left = n;
                    if n == 0 {
                        s.write_all(b"250 2.0.0 chunk ok\r\n")?;
                    }
                }
                "QUIT" => {
                    s.write_all(b"221 bye\r\n")?;
                    return Ok(());
                }
                _ => s.write_all(b"502 5.5.2 unknown\r\n")?,
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Validates `v` against `schema` (type, required, properties,
/// additionalProperties, items, enum, const, minimum); returns the errors.
pub fn validate(schema: &serde_json::Value, v: &serde_json::Value) -> Vec<String> {
    let mut errs = Vec::new();
    check(schema, v, "$", &mut errs);
    errs
}

fn type_ok(t: &str, v: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => matches!(v, V::Number(n) if n.is_u64() || n.is_i64()),
        other => panic!("schema uses unsupported type {other}"),
    }
}

fn check(s: &serde_json::Value, v: &serde_json::Value, at: &str, errs: &mut Vec<String>) {
    use serde_json::Value as V;
    let Some(obj) = s.as_object() else {
        if s == &V::Bool(false) {
            errs.push(format!("{at}: not allowed"));
        }
        return;
    };
    for key in obj.keys() {
        assert!(
            [
                "$schema",
                "$id",
                "title",
                "description",
                "type",
                "required",
                "properties",
                "additionalProperties",
                "items",
                "enum",
                "const",
                "minimum",
                "$comment"
            ]
            .contains(&key.as_str()),
            "validator does not support schema keyword {key}"
        );
    }
    if let Some(t) = obj.get("type") {
        let ok = match t {
            V::String(t) => type_ok(t, v),
            V::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
            _ => panic!("bad type keyword"),
        };
        if !ok {
            errs.push(format!("{at}: expected type {t}, got {v}"));
            return;
        }
    }
    if let Some(e) = obj.get("enum").and_then(|e| e.as_array()) {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Some(c) = obj.get("const") {
        if c != v {
            errs.push(format!("{at}: expected {c}, got {v}"));
        }
    }
    if let (Some(m), Some(x)) = (obj.get("minimum").and_then(|m| m.as_f64()), v.as_f64()) {
        if x < m {
            errs.push(format!("{at}: {x} below minimum {m}"));
        }
    }
    if let Some(map) = v.as_object() {
        if let Some(req) = obj.get("required").and_then(|r| r.as_array()) {
            for k in req {
                if !map.contains_key(k.as_str().unwrap()) {
                    errs.push(format!("{at}: missing required {k}"));
                }
            }
        }
        let props = obj.get("properties").and_then(|p| p.as_object());
        for (k, val) in map {
            let path = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(ps, val, &path, errs),
                None => match obj.get("additionalProperties") {
                    Some(V::Bool(false)) => errs.push(format!("{path}: unexpected property")),
                    Some(ap) => check(ap, val, &path, errs),
                    None => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (obj.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(items, x, &format!("{at}[{i}]"), errs);
        }
    }
}
