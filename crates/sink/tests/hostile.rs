//! Hostile peers against the sink: slowloris (clients trickling a command
//! line byte by byte) and ten thousand idle connections. Each test is
//! bounded in time and checks the accounting and the memory it costs.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::child::{rss_kib, Running};
use common::*;
use mailstorm_sink::{CloseReason, Sink};

/// Issue 10 item 11: connections that trickle a command line (one byte at
/// a time, each byte well inside the idle timeout) are closed with
/// `421 4.4.2` once the line is not complete within `command_timeout`,
/// while a normal client is served meanwhile.
#[test]
fn slowloris_is_closed_by_the_command_deadline() {
    const TRICKLERS: usize = 200;
    let sink = start(
        Sink::builder()
            .threads(2)
            .idle_timeout(Duration::from_secs(60))
            .command_timeout(Duration::from_millis(800)),
    );
    let addr = sink.local_addr();
    let rss_before = rss_kib("self");
    let mut conns: Vec<(TcpStream, Vec<u8>, bool)> = (0..TRICKLERS)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.send(b"E");
            c.stream.set_nonblocking(true).unwrap();
            (c.stream, Vec::new(), false)
        })
        .collect();
    // A normal client is served while the tricklers hold their lines open.
    let mut normal = Client::ehlo(addr);
    normal
        .send_message("a@x.test", &["b@y.test"], "Subject: t\r\n\r\nhi")
        .expect(250, "2.0.0");
    // Trickle one byte per connection every 100 ms (never a line end)
    // until the sink has closed them all, for at most 10 s.
    let end = Instant::now() + TIMEOUT;
    let mut closed = 0;
    while closed < TRICKLERS {
        assert!(
            Instant::now() < end,
            "only {closed} of {TRICKLERS} trickling connections were closed"
        );
        for (stream, got, done) in conns.iter_mut().filter(|c| !c.2) {
            let _ = stream.write(b"H");
            let mut buf = [0u8; 256];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        *done = true;
                        closed += 1;
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        *done = true;
                        closed += 1;
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (_, got, _) in &conns {
        let text = String::from_utf8_lossy(got);
        assert!(text.starts_with("421 4.4.2 "), "{text:?}");
    }
    // The normal client's session is still fine.
    normal.cmd("NOOP").expect(250, "2.0.0");
    normal.cmd("QUIT");
    wait_for("every close counted", || {
        let s = sink.stats();
        s.closed_for(CloseReason::CommandTimeout) == TRICKLERS as u64
            && s.closed_for(CloseReason::Quit) == 1
    });
    let s = sink.shutdown();
    assert_eq!(s.messages_accepted, 1);
    assert_eq!(s.connections_total, TRICKLERS as u64 + 1);
    assert_eq!(s.closed_for(CloseReason::IdleTimeout), 0);
    let grown = rss_kib("self").saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
}

/// A command line that is complete in time is not affected: the deadline
/// covers one line, not the session.
#[test]
fn command_deadline_restarts_with_each_line() {
    let sink = start(Sink::builder().command_timeout(Duration::from_millis(400)));
    let mut c = Client::ehlo(sink.local_addr());
    let end = Instant::now() + Duration::from_millis(1200);
    // Each NOOP trickles in over ~200 ms; together they outlast the
    // deadline several times.
    while Instant::now() < end {
        for b in b"NOOP\r\n".chunks(2) {
            c.send(b);
            std::thread::sleep(Duration::from_millis(60));
        }
        c.reply().expect(250, "2.0.0");
    }
    c.cmd("QUIT");
    wait_for("quit", || sink.stats().closed_for(CloseReason::Quit) == 1);
    assert_eq!(sink.stats().closed_for(CloseReason::CommandTimeout), 0);
}

/// Issue 10: 10,000 idle connections while a normal client is served. The
/// sink runs as its own process (20,000 descriptors would not fit one
/// process under common limits); its RSS per idle connection is bounded.
#[test]
fn ten_thousand_idle_connections_and_a_normal_client() {
    const IDLE: usize = 10_000;
    let limit = mailstorm_sink::raise_nofile_limit().unwrap();
    // The sink serves what its (equal) open-files limit leaves room for.
    let room = mailstorm_sink::connection_ceiling(
        limit,
        &mailstorm_sink::SinkConfig {
            threads: Some(2),
            control: None,
            ..mailstorm_sink::SinkConfig::default()
        },
    );
    assert!(
        limit >= IDLE as u64 + 100 && room > IDLE,
        "open files limit {limit} (room for {room} connections) is too low for this test"
    );
    let run = Running::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--no-pin",
        "--control",
        "off",
        "--stats-interval",
        "0",
    ]);
    let addr = run.smtp_addr();
    let pid = run.child.id().to_string();
    let started = Instant::now();
    let rss_before = rss_kib(&pid);
    // Every idle connection is accepted and greeted.
    let idle: Vec<Client> = (0..IDLE).map(|_| Client::connect(addr)).collect();
    let rss_idle = rss_kib(&pid);
    // The normal client is served promptly.
    let t = Instant::now();
    let mut c = Client::ehlo(addr);
    c.send_message("a@x.test", &["b@y.test"], "Subject: t\r\n\r\nhi")
        .expect(250, "2.0.0");
    c.cmd("QUIT");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "normal client took {:?}",
        t.elapsed()
    );
    let per_conn = rss_idle.saturating_sub(rss_before) * 1024 / IDLE as u64;
    assert!(
        per_conn < 16 * 1024,
        "{per_conn} bytes of sink RSS per idle connection"
    );
    // Closed idle sessions see EOF (during the shutdown grace at the
    // latest): every one counts as closed by the client.
    drop(idle);
    drop(c);
    kill_term(&run);
    let (fin, json) = run.final_stats();
    assert_eq!(json["messages_accepted"], 1, "{fin}");
    assert_eq!(json["connections_total"], IDLE as u64 + 1, "{fin}");
    assert_eq!(json["closed"]["quit"], 1, "{fin}");
    assert_eq!(json["closed"]["client_closed"], IDLE as u64, "{fin}");
    assert!(started.elapsed() < Duration::from_secs(60));
    eprintln!(
        "sink RSS: {rss_before} KiB at start, {rss_idle} KiB with {IDLE} idle connections ({per_conn} B each)"
    );
}

/// Hostile HTTP clients on the control API: 1,000 connections each
/// sending 300 KB of one header line and never ending it. axum's own
/// server read all of it into per-connection buffers (4,000 of them: 1.3
/// GB); now a head is capped at 16 KiB (431) and connections at 256, so
/// the sink's RSS barely moves and a normal call is still answered.
#[test]
fn control_api_memory_is_bounded_against_endless_heads() {
    let head = format!(
        "GET /stats HTTP/1.1\r\nHost: t\r\nX-Pad: {}",
        "a".repeat(300_000)
    );
    let grown_mib = hostile_control_clients(1_000, head.as_bytes());
    assert!(grown_mib < 48, "the sink's RSS grew {grown_mib} MiB");
}

/// 250 connections (under the cap, so `/healthz` still gets one) each
/// sending `PUT /plan` with 1.9 MB of a 2 MB body and stalling. Each body
/// is buffered whole (axum's 2 MiB limit) until the request deadline: 250
/// of them held ~500 MiB; now 8 bodies are read at a time and the rest
/// wait unread.
#[test]
fn control_api_memory_is_bounded_against_stalled_bodies() {
    let mut put = b"PUT /plan HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n".to_vec();
    put.resize(put.len() + 1_900_000, b'#');
    let grown_mib = hostile_control_clients(250, &put);
    assert!(grown_mib < 48, "the sink's RSS grew {grown_mib} MiB");
}

/// Starts a sink with its control API, opens `conns` connections that
/// each send `request` (never completing it) and watches the sink's RSS
/// until it holds still; checks `/healthz` is answered meanwhile. Returns
/// the RSS growth in MiB.
fn hostile_control_clients(conns: usize, request: &[u8]) -> u64 {
    let limit = mailstorm_sink::raise_nofile_limit().unwrap();
    assert!(limit >= conns as u64 + 100, "open files limit {limit}");
    let run = one_shard_sink(&["--control", "127.0.0.1:0"]);
    let control = run.control_addr();
    let pid = run.child.id().to_string();
    let rss_before = rss_kib(&pid);
    let started = Instant::now();
    // Each connection and how much of `request` it has sent.
    // Each sends at once: connections past the sink's cap of 256 are
    // accepted only as earlier ones are closed (431).
    let mut hostile: Vec<(TcpStream, usize)> = (0..conns)
        .map(|_| {
            let mut s = TcpStream::connect(control).unwrap();
            s.set_nonblocking(true).unwrap();
            let sent = match s.write(request) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(_) => request.len(),
            };
            (s, sent)
        })
        .collect();
    let rss_max = watch_rss(&pid, &mut hostile, request);
    // A normal call is answered while the hostile connections are open.
    let mut c = TcpStream::connect(control).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let sent: usize = hostile.iter().map(|(_, sent)| sent).sum();
    eprintln!(
        "sink RSS {rss_before} KiB before, at most {rss_max} KiB with {conns} hostile \
         connections ({} MB sent) after {:?}",
        sent / 1_000_000,
        started.elapsed()
    );
    drop(hostile);
    rss_max.saturating_sub(rss_before) / 1024
}

/// Keeps sending `payload` on each connection (from where it stopped) and
/// samples the sink's RSS until everything is sent or refused and the RSS
/// holds still for 10 samples in a row, bounded by TIMEOUT; returns the
/// highest sample.
fn watch_rss(pid: &str, conns: &mut [(TcpStream, usize)], payload: &[u8]) -> u64 {
    let watch = Instant::now();
    let mut rss_max = rss_kib(pid);
    let mut last = rss_max;
    let mut still = 0;
    while still < 10 && watch.elapsed() < TIMEOUT {
        let mut sending = false;
        let mut progressed = false;
        for (s, sent) in conns.iter_mut().filter(|(_, sent)| *sent < payload.len()) {
            match s.write(&payload[*sent..]) {
                Ok(n) => {
                    *sent += n;
                    progressed = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // Closed by the sink: nothing more to send.
                Err(_) => *sent = payload.len(),
            }
            sending |= *sent < payload.len();
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(50));
        }
        let rss = rss_kib(pid);
        still = if rss == last && !sending {
            still + 1
        } else {
            0
        };
        last = rss;
        rss_max = rss_max.max(rss);
    }
    rss_max
}

/// 10 SMTP clients each sending 8 MB of a message and not ending it, to a
/// sink that keeps messages (`--keep`, which buffers each arriving message
/// whole). Without a shared budget they held 80 MB (50 × 20 MB held 1 GB);
/// `--buffer-bytes 16MiB` holds the sink to that, and a message that would
/// pass it is answered 452 at its end.
#[test]
fn kept_messages_in_flight_are_bounded_by_the_buffer_budget() {
    const CLIENTS: usize = 10;
    let run = one_shard_sink(&[
        "--control",
        "off",
        "--keep",
        "10",
        "--max-message-size",
        "8MiB",
        "--buffer-bytes",
        "16MiB",
    ]);
    let addr = run.smtp_addr();
    let pid = run.child.id().to_string();
    let rss_before = rss_kib(&pid);
    let body = {
        let mut b = b"Subject: big\r\n\r\n".to_vec();
        while b.len() < 8_000_000 {
            b.extend_from_slice(&[b'x'; 998]);
            b.extend_from_slice(b"\r\n");
        }
        b
    };
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let mut c = Client::ehlo(addr);
            c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
            c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
            assert_eq!(c.cmd("DATA").code, 354);
            c
        })
        .collect();
    let mut sending = nonblocking_senders(&clients);
    let rss_max = watch_rss(&pid, &mut sending, &body);
    let grown_mib = rss_max.saturating_sub(rss_before) / 1024;
    eprintln!(
        "sink RSS {rss_before} KiB before, at most {rss_max} KiB with {CLIENTS} clients \
         each holding 8 MB of a message"
    );
    // The budget, the read buffers and one message's copy into the store.
    assert!(grown_mib < 40, "the sink's RSS grew {grown_mib} MiB");
    // Each message ends: those the budget refused get 452, at least one
    // (the first to hold its bytes) is accepted.
    let mut codes = Vec::new();
    for (c, (s, sent)) in clients.iter_mut().zip(&sending) {
        assert_eq!(*sent, body.len(), "the whole body was sent");
        s.set_nonblocking(false).unwrap();
        c.send(b"\r\n.\r\n");
        codes.push(c.reply().code);
    }
    assert!(codes.iter().all(|&c| c == 250 || c == 452), "{codes:?}");
    assert!(codes.contains(&250) && codes.contains(&452), "{codes:?}");
}

/// 200 SMTP clients each sending MAIL and 1,000 recipients of ~400 bytes
/// (`--max-recipients` and the line length allow both) and then waiting.
/// Each envelope held ~470 KB: 500 such clients took a sink to 230 MB.
/// Past 32 KiB a session's recipients count against `--buffer-bytes`;
/// those that would pass it get `452 4.3.1`.
#[test]
fn envelopes_past_their_allowance_are_bounded_by_the_buffer_budget() {
    const CLIENTS: usize = 200;
    let run = one_shard_sink(&["--control", "off", "--buffer-bytes", "8MiB"]);
    let addr = run.smtp_addr();
    let pid = run.child.id().to_string();
    let rss_before = rss_kib(&pid);
    let mut envelope = b"MAIL FROM:<a@b.test>\r\n".to_vec();
    let (local, label) = ("u".repeat(200), "d".repeat(60));
    for i in 0..1000 {
        envelope.extend_from_slice(
            format!("RCPT TO:<{local}{i}@{label}.{label}.{label}.test>\r\n").as_bytes(),
        );
    }
    let clients: Vec<Client> = (0..CLIENTS).map(|_| Client::ehlo(addr)).collect();
    let mut sending = nonblocking_senders(&clients);
    let rss_max = watch_rss(&pid, &mut sending, &envelope);
    let grown_mib = rss_max.saturating_sub(rss_before) / 1024;
    eprintln!(
        "sink RSS {rss_before} KiB before, at most {rss_max} KiB with {CLIENTS} clients \
         each holding 1,000 recipients"
    );
    assert!(sending.iter().all(|(_, sent)| *sent == envelope.len()));
    // The budget, 32 KiB per session and the read buffers (+29 MiB; +90
    // MiB without the budget).
    assert!(grown_mib < 48, "the sink's RSS grew {grown_mib} MiB");
    drop(sending);
    drop(clients);
    kill_term(&run);
    let (fin, json) = run.final_stats();
    let refused = json["replies"]["rcpt"]["452"].as_u64().unwrap_or(0);
    let accepted = json["replies"]["rcpt"]["250"].as_u64().unwrap_or(0);
    assert!(refused > 0 && accepted > 0, "{fin}");
    assert_eq!(refused + accepted, (CLIENTS * 1000) as u64, "{fin}");
}

/// A one-shard sink child on a free port, without stats lines, with
/// `extra` flags.
fn one_shard_sink(extra: &[&str]) -> Running {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--no-pin",
        "--stats-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    Running::spawn(&args)
}

/// Non-blocking clones of the clients' sockets (the flag is shared with
/// the originals), each with nothing sent yet, for [`watch_rss`].
fn nonblocking_senders(clients: &[Client]) -> Vec<(TcpStream, usize)> {
    clients
        .iter()
        .map(|c| {
            let s = c.stream.try_clone().unwrap();
            s.set_nonblocking(true).unwrap();
            (s, 0)
        })
        .collect()
}

/// How many of process `pid`'s open sockets are accepted TCP connections
/// on local `port`: their inodes in `/proc/PID/fd` matched against
/// `/proc/PID/net/tcp` (its listener is left out by its state, LISTEN).
/// The table is read in chunks while other tests' sockets come and go, so
/// a line may repeat (hence a set: never more than are open) or be missed
/// (so callers wait for a count rather than assert one reading).
fn accepted_connections_on(pid: &str, port: u16) -> usize {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    const LISTEN: &str = "0A";
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            (local_port == port && f[3] != LISTEN && inodes.contains(f[9])).then_some(f[9])
        })
        .collect::<HashSet<&str>>()
        .len()
}

fn kill_term(run: &Running) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    kill(Pid::from_raw(run.child.id() as i32), Signal::SIGTERM).unwrap();
}

/// A plan that delays every DNS query by a minute, and a flood of 30,000
/// UDP queries. Each held query costs the sink ~3 KiB: a 5 s flood (481,000
/// queries) took it to 1.5 GB. Now at most `MAX_HELD_DNS_QUERIES` are
/// held; the rest are dropped unanswered and counted as `shed`.
#[test]
fn dns_queries_held_by_a_delay_are_capped() {
    use mailstorm_sink::dns::MAX_HELD_DNS_QUERIES;
    const QUERIES: u64 = 30_000;
    let dir = temp_dir("dns-held");
    let plan = dir.join("plan.yaml");
    std::fs::write(&plan, "rules:\n  - {stage: dns, action: {delay: 60s}}\n").unwrap();
    let run = one_shard_sink(&[
        "--dns",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--plan",
        plan.to_str().unwrap(),
    ]);
    let (dns, control) = (run.dns_addr(), run.control_addr());
    let pid = run.child.id().to_string();
    let rss_before = rss_kib(&pid);
    let query = dns_query("example.test", hickory_proto::rr::RecordType::MX);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns_stats = || -> serde_json::Value {
        serde_json::from_str(&http(control, "GET", "/dns", b"").text()).unwrap()
    };
    // Bursts until the sink has counted QUERIES (the kernel drops some);
    // well inside the delay, so no held query is answered meanwhile.
    let started = Instant::now();
    while dns_stats()["queries"].as_u64().unwrap() < QUERIES {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the sink did not count {QUERIES} queries"
        );
        for _ in 0..2_000 {
            udp.send_to(&query, dns).unwrap();
        }
    }
    // Every query counted has been held or shed, in two readings alike
    // (the counters of one query are not bumped at one instant).
    let mut stats = dns_stats();
    wait_for("each query held or shed", || {
        let previous = std::mem::replace(&mut stats, dns_stats());
        let n = |k: &str| stats[k].as_u64().unwrap();
        stats == previous && n("delayed") + n("shed") == n("queries")
    });
    let rss_after = rss_kib(&pid);
    eprintln!("sink RSS {rss_before} KiB before, {rss_after} KiB after; /dns: {stats}");
    assert_eq!(stats["delayed"], MAX_HELD_DNS_QUERIES as u64, "{stats}");
    assert_eq!(stats["shed"], stats["no_answer"], "{stats}");
    assert!(stats["shed"].as_u64().unwrap() >= QUERIES - MAX_HELD_DNS_QUERIES as u64);
    let grown_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 48, "the sink's RSS grew {grown_mib} MiB");
}

/// 320 TCP clients, each sending the start of a 64 KiB DNS query and
/// stalling. hickory-server's listener accepted every connection (4,000
/// of them held 104 MB); now the responder takes at most
/// `MAX_DNS_TCP_CONNECTIONS` and the rest wait in the backlog (128: all of
/// them fit). UDP is answered meanwhile, and TCP again once the stalled
/// clients leave.
#[test]
fn dns_tcp_connections_are_capped() {
    use mailstorm_sink::dns::MAX_DNS_TCP_CONNECTIONS;
    const CLIENTS: usize = 320;
    mailstorm_sink::raise_nofile_limit().unwrap();
    let run = one_shard_sink(&["--dns", "127.0.0.1:0", "--control", "off"]);
    let dns = run.dns_addr();
    let pid = run.child.id().to_string();
    // The sink's connections on the DNS port, not all its open fds: the
    // shard thread opens its runtime's after the sink prints its addresses
    // (CI saw 258 "connections" that way).
    let held = || accepted_connections_on(&pid, dns.port());
    assert_eq!(held(), 0);
    // A length prefix of 65,535 and 30,000 bytes of the query.
    let mut partial = vec![0xff, 0xff];
    partial.resize(30_002, 0);
    let mut stalled: Vec<(TcpStream, usize)> = (0..CLIENTS)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            // In progress (EINPROGRESS) or done; the writes below wait.
            let _ = s.connect(&dns.into());
            (s.into(), 0)
        })
        .collect();
    wait_for("the responder to take its connections", || {
        held() == MAX_DNS_TCP_CONNECTIONS
    });
    watch_rss(&pid, &mut stalled, &partial);
    // At most: one that completes no query for 10 s is closed (and a
    // waiting one taken instead), which a slow run may reach by now.
    let held = held();
    assert!(
        held <= MAX_DNS_TCP_CONNECTIONS,
        "{held} connections taken with {CLIENTS} stalled"
    );
    let answer = |extra: &[&str]| dig(dns, "MX", "example.test", extra, 5);
    let out = answer(&["+short"]);
    assert!(
        out.contains("mx1.example.test."),
        "UDP during the flood: {out}"
    );
    drop(stalled);
    let out = answer(&["+short", "+tcp"]);
    assert!(
        out.contains("mx1.example.test."),
        "TCP after the flood: {out}"
    );
}

/// A DNS query in wire format (hickory's encoder).
fn dns_query(name: &str, qtype: hickory_proto::rr::RecordType) -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;
    let mut m = Message::new();
    m.set_id(7)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}
