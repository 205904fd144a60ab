//! The ready signal: `--ready-file` / `--ready-fd` with port 0 everywhere,
//! `GET /info`, and a bad path refused at start.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::child::{Running, BIN};
use common::{http, temp_dir, TIMEOUT};

const PORT0: [&str; 9] = [
    "--listen",
    "127.0.0.1:0",
    "--tls-listen",
    "127.0.0.1:0",
    "--control",
    "127.0.0.1:0",
    "--threads",
    "1",
    "--quiet",
];

fn parse(text: &str) -> serde_json::Value {
    assert!(text.ends_with('\n'), "one line with its newline: {text:?}");
    assert_eq!(text.lines().count(), 1, "{text:?}");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

fn addr(v: &serde_json::Value) -> SocketAddr {
    v.as_str().and_then(|s| s.parse().ok()).expect("an address")
}

/// Every address in the object accepts a connection; the SMTP one greets.
fn assert_listening(info: &serde_json::Value) {
    let smtp = addr(&info["smtp"][0]);
    let tls = addr(&info["tls"][0]);
    let control = addr(&info["control"]);
    for a in [smtp, tls, control] {
        assert_ne!(a.port(), 0, "{info}");
        TcpStream::connect_timeout(&a, TIMEOUT).unwrap_or_else(|e| panic!("{a}: {e}"));
    }
    let mut c = common::Client::connect(smtp);
    c.cmd("QUIT");
}

#[test]
fn ready_file_appears_whole_once_every_listener_accepts() {
    let dir = temp_dir("ready-file");
    let path = dir.join("sink.ready.json");
    let mut args = PORT0.to_vec();
    let p = path.to_str().unwrap();
    args.extend(["--ready-file", p]);
    let sink = Running::spawn(&args);
    let end = Instant::now() + TIMEOUT;
    while !path.exists() {
        assert!(Instant::now() < end, "no ready file");
        // The only other entry the directory may hold is the temporary
        // file: never a partial ready file.
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let info = parse(&text);
    assert_eq!(info["pid"], sink.child.id(), "{info}");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["dns"].is_null(), "{info}");
    assert!(info["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert_listening(&info);
    // GET /info is the same object.
    let got = http(addr(&info["control"]), "GET", "/info", b"");
    assert_eq!(got.status, 200);
    let from_api: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(from_api, info);
    // Only the ready file is left in the directory (the temp was renamed).
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("sink.ready.json")]);
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ready_fd_writes_one_line_to_the_descriptor() {
    // fd 1 is a pipe the test reads: the first line is the object.
    let mut args = PORT0.to_vec();
    args.extend(["--ready-fd", "1"]);
    let mut child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(TIMEOUT).expect("a ready line");
    let info = parse(&line);
    assert_eq!(info["pid"], child.id());
    assert_listening(&info);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_bad_ready_path_is_refused_at_start_naming_it() {
    let dir = temp_dir("ready-bad");
    for bad in [
        dir.join("missing-dir").join("ready.json"),
        // A directory is not a file.
        dir.clone(),
    ] {
        let mut args = PORT0.to_vec();
        let p = bad.to_str().unwrap();
        args.extend(["--ready-file", p]);
        let out = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(p) && err.contains("ready file"), "{err}");
        assert!(!err.contains("listening"), "refused before serving: {err}");
    }
    let mut args = PORT0.to_vec();
    args.extend(["--ready-fd", "987"]);
    let out = Command::new(BIN).args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("file descriptor 987"), "{err}");
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_handle_reports_the_same_object() {
    let sink = common::start(
        mailstorm_sink::Sink::builder()
            .tls_listen("127.0.0.1:0".parse().unwrap())
            .control("127.0.0.1:0".parse().unwrap())
            .hostname("sink.test"),
    );
    let info = sink.ready_info();
    assert_eq!(info.smtp, sink.local_addrs());
    assert_eq!(info.tls, sink.tls_addrs());
    assert_eq!(info.control, sink.control_addr());
    assert_eq!(info.hostname, "sink.test");
    let got = http(sink.control_addr().unwrap(), "GET", "/info", b"");
    let from_api: mailstorm_sink::ReadyInfo = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(from_api, info);
}
