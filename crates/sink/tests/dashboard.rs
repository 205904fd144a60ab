//! The sink dashboard (`GET /` on the control address) in a real browser:
//! headless Chromium, driven over the DevTools protocol (see
//! `browser/cdp.rs`), while real SMTP sessions flow. The charts receive
//! data, the referee's clients (two on 127.0.0.1, told apart by EHLO name)
//! and their verdicts show, a bad plan is refused with its error at its
//! line and the old plan kept, a good one shows its rules, a kept message
//! is found and opens, hostile strings stay text, and nothing is logged on
//! the console. Screenshots go to `target/screenshots/sink-dashboard-*.png`.
//!
//! The token tests use plain HTTP (and the browser, for the cookie).
//! Without `chromium` the browser test says so and passes, unless
//! `MAILSTORM_REQUIRE_BROWSER=1` (scripts/test.sh sets it).

#[path = "browser/cdp.rs"]
mod cdp;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{http, start, Client, TIMEOUT};
use mailstorm_sink::plan::Engine;
use mailstorm_sink::{Sink, SinkHandle};
use serde_json::Value;

const TOKEN: &str = "s3cret;token with space";

fn sink(token: Option<&str>) -> (SinkHandle, SocketAddr) {
    let mut b = Sink::builder()
        .threads(1)
        .keep(500)
        .control("127.0.0.1:0".parse().unwrap())
        .fault_engine(Arc::new(Engine::new()));
    if let Some(t) = token {
        b = b.control_token(t);
    }
    let s = start(b);
    let ctl = s.control_addr().unwrap();
    (s, ctl)
}

fn shots() -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp: the screenshots sit beside it.
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One HTTP/1.1 request with extra headers: status, headers (lower-case
/// names) and body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn feed(ctl: SocketAddr, query: &str) -> Value {
    let r = http(ctl, "GET", &format!("/dashboard.json{query}"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn put_plan(ctl: SocketAddr, yaml: &str) {
    let r = http(ctl, "PUT", "/plan", yaml.as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
}

/// The first RCPT of each recipient is deferred (451), its retry accepted.
const OLD_PLAN: &str = "seed: 1\nrules:\n  - name: old-defer-first\n    stage: rcpt\n    key: rcpt\n    sequence: [451, 250]\n";

/// One message from client `helo`, retrying the deferred RCPT at once;
/// the final reply's code.
fn send_one(c: &mut Client, n: u64, subject: &str) -> u16 {
    c.cmd(&format!("MAIL FROM:<sender{n}@a.test>"))
        .expect(250, "2.1.0");
    let rcpt = format!("RCPT TO:<rcpt{n}@b.test>");
    if c.cmd(&rcpt).code == 451 {
        c.cmd(&rcpt).expect(250, "2.1.5");
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(
        format!(
            "Subject: {subject}\r\nFrom: <sender{n}@a.test>\r\n\r\nbody of message {n}\r\n.\r\n"
        )
        .as_bytes(),
    );
    c.reply().code
}

/// Sends mail from two clients on 127.0.0.1 (one with a hostile EHLO
/// name) until `stop`, at most `max` messages (fewer than the sink
/// keeps); counts them in `sent`.
fn traffic(addr: SocketAddr, stop: &AtomicBool, sent: &AtomicU64, max: u64) {
    let names = ["alpha.test", "<b>beta</b>.test"];
    let mut clients: Vec<Client> = names
        .iter()
        .map(|n| {
            let mut c = Client::connect(addr);
            assert_eq!(c.cmd(&format!("EHLO {n}")).code, 250);
            c
        })
        .collect();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && n < max {
        let subject = if n == 7 {
            "needle-7 <img src=x onerror=alert(1)>".to_owned()
        } else {
            format!("hello {n}")
        };
        assert_eq!(send_one(&mut clients[(n % 2) as usize], n, &subject), 250);
        n += 1;
        sent.store(n, Ordering::Relaxed);
        // Pacing (not synchronisation): about 200 messages a second keeps
        // the charts moving for a few seconds without loading the machine.
        if n.is_multiple_of(10) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    for mut c in clients {
        c.cmd("QUIT");
    }
}

/// Sets the plan editor's text and applies it; waits for the outcome.
fn apply(b: &mut cdp::Browser, yaml: &str) -> String {
    let js = format!(
        "(() => {{ const t = document.getElementById('plan-text'); t.value = {}; \
         t.dispatchEvent(new Event('input')); document.getElementById('plan-status').removeAttribute('data-result'); \
         document.getElementById('plan-apply').click(); return true; }})()",
        serde_json::to_string(yaml).unwrap()
    );
    b.eval(&js);
    b.wait_for(
        "the plan to be applied or refused",
        "document.getElementById('plan-status').hasAttribute('data-result')",
    );
    b.eval("document.getElementById('plan-status').getAttribute('data-result')")
        .as_str()
        .unwrap()
        .to_owned()
}

fn texts(b: &mut cdp::Browser, selector: &str) -> Vec<String> {
    let v = b.eval(&format!(
        "Array.from(document.querySelectorAll({})).map(e => e.textContent)",
        serde_json::to_string(selector).unwrap()
    ));
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn dashboard_live_in_chromium() {
    let Some(chrome) = cdp::chromium() else {
        return;
    };
    let (sink, ctl) = sink(None);
    put_plan(ctl, OLD_PLAN);
    let mut b = cdp::Browser::start(&chrome, &shots());
    b.navigate(&format!("http://{ctl}/"));
    b.wait_for(
        "the page to render",
        "document.getElementById('dashboard').getAttribute('data-rendered') === 'true'",
    );

    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        let t = s.spawn(|| traffic(sink.local_addr(), &stop, &sent, 450));
        // The charts hold several samples with a non-zero rate, read from
        // the sink while the mail flows.
        b.wait_for(
            "the throughput chart to receive data",
            "(() => { const c = document.getElementById('chart-throughput'); \
             return Number(c.dataset.points) >= 3 && Number(c.dataset.max) > 0; })()",
        );
        b.wait_for(
            "the faults chart to receive data",
            "Number(document.getElementById('chart-replies').dataset.max) > 0",
        );
        assert!(
            b.eval("document.querySelectorAll('#chart-throughput canvas').length")
                .as_u64()
                >= Some(1)
        );
        b.screenshot(&shots().join("sink-dashboard-live.png"));
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    });
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent >= 8, "only {sent} messages sent");
    common::wait_for("all messages counted", || {
        sink.stats().messages_accepted == sent
    });

    // Figures catch up with the sink's own counters.
    b.wait_for(
        "the accepted figure",
        &format!(
            "document.getElementById('fig-accepted').textContent === {}",
            serde_json::to_string(&format_num(sent)).unwrap()
        ),
    );
    // Faults by rule: every message's first RCPT was deferred by the rule.
    b.wait_for(
        "the faults table",
        &format!("(() => {{ const r = document.querySelector('#faults tr[data-rule=\"old-defer-first\"]'); \
                 return !!r && r.lastChild.textContent === {}; }})()", serde_json::to_string(&format_num(sent)).unwrap()),
    );
    // Replies by stage x code: the 451s at rcpt.
    let replies = texts(&mut b, "#replies tr");
    assert!(replies.iter().any(|r| r.starts_with("rcpt")), "{replies:?}");
    assert!(texts(&mut b, "#replies th").contains(&"451".to_owned()));

    // Clients: two entries from 127.0.0.1, the hostile name as text.
    b.wait_for(
        "both clients",
        "document.querySelectorAll('#clients tr[data-client]').length === 2",
    );
    let rows = texts(&mut b, "#clients tr[data-client] td:first-child");
    assert_eq!(rows, ["<b>beta</b>.test", "alpha.test"]);
    let addrs = texts(&mut b, "#clients tr[data-client] td:nth-child(2)");
    assert_eq!(addrs, ["127.0.0.1", "127.0.0.1"]);
    assert_eq!(
        b.eval("document.querySelectorAll('#dashboard b, #dashboard img').length"),
        0
    );
    // The verdict: both retried a 451 at once, which the default policy
    // (retry_4xx_min_interval>=1s) fails.
    // No DNS queries: they would count under the IP's entry.
    let dns = texts(&mut b, "#clients tr[data-client] td:nth-child(7)");
    assert_eq!(dns, ["0", "0"]);
    let retry = texts(&mut b, "#clients tr[data-client] td:nth-child(8)");
    assert!(retry.iter().all(|t| t.starts_with('✗')), "{retry:?}");
    let verdicts = texts(&mut b, "#clients tr[data-client] td:last-child");
    assert!(
        verdicts
            .iter()
            .all(|v| v.starts_with("fail") && v.contains("retry_4xx_min_interval")),
        "{verdicts:?}"
    );

    // A bad plan: refused, its error at line 4, the old plan kept.
    let bad =
        "seed: 3\nrules:\n  - name: new-a\n    stage: bogus\n    action: {reply: {code: 451}}\n";
    assert_eq!(apply(&mut b, bad), "error");
    assert_eq!(texts(&mut b, "#plan-bad-line"), ["4"]);
    assert_eq!(
        texts(&mut b, "#plan-backdrop div.bad"),
        ["    stage: bogus"]
    );
    let status = texts(&mut b, "#plan-status").remove(0);
    assert!(
        status.starts_with("line 4, column 12: rules[0].stage: unknown variant `bogus`"),
        "{status}"
    );
    assert!(status.contains("unchanged"));
    assert!(http(ctl, "GET", "/plan", b"")
        .text()
        .contains("old-defer-first"));
    assert_eq!(texts(&mut b, "#plan-rules li"), ["old-defer-first (rcpt)"]);
    b.eval("document.getElementById('plan-section').scrollIntoView()");
    b.screenshot(&shots().join("sink-dashboard-bad-plan.png"));

    // A good plan: applied, its rules shown, the error mark gone.
    let good = "seed: 3\nrules:\n  - name: new-a\n    stage: mail\n    probability: 0.5\n    action: {reply: {code: 451}}\n  - name: new-b\n    stage: data_end\n    action: {delay: 1ms}\n";
    assert_eq!(apply(&mut b, good), "applied");
    b.wait_for(
        "the new rules",
        "document.querySelectorAll('#plan-rules li').length === 2",
    );
    assert_eq!(
        texts(&mut b, "#plan-rules li"),
        ["new-a (mail)", "new-b (data_end)"]
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#plan-gutter .bad').length"),
        0
    );
    assert!(http(ctl, "GET", "/plan", b"").text().contains("new-b"));

    // Search the kept messages, open one.
    b.eval("(() => { const s = document.getElementById('msg-search'); s.value = 'NEEDLE-7'; s.dispatchEvent(new Event('input')); return true; })()");
    b.wait_for(
        "the search result",
        "document.querySelectorAll('#messages tr[data-id]').length === 1",
    );
    assert!(texts(&mut b, "#messages-count")[0].starts_with(&format!("1 of {sent} kept")));
    b.eval("document.querySelector('#messages tr[data-id] button').click()");
    b.wait_for(
        "the message to open",
        "!document.getElementById('message-view').hidden",
    );
    let headers = texts(&mut b, "#message-headers").remove(0);
    assert!(
        headers.contains("Subject: needle-7 <img src=x onerror=alert(1)>"),
        "{headers}"
    );
    assert!(headers.contains("X-Mailstorm-"), "{headers}");
    assert_eq!(texts(&mut b, "#message-body"), ["body of message 7\r\n"]);
    assert_eq!(
        b.eval("document.querySelectorAll('#dashboard img').length"),
        0
    );
    b.eval("document.getElementById('message-view').scrollIntoView()");
    b.screenshot(&shots().join("sink-dashboard-message.png"));

    // No script error, nothing on the console. The one expected log line
    // is the browser's note of the refused PUT /plan (HTTP 400).
    assert_eq!(b.eval("document.getElementById('errors').hidden"), true);
    let problems = b.problems(|e| {
        let entry = &e["params"]["entry"];
        entry["source"] == "network"
            && entry["url"].as_str().is_some_and(|u| u.ends_with("/plan"))
            && entry["text"].as_str().is_some_and(|t| t.contains("400"))
    });
    assert!(problems.is_empty(), "console: {problems:#?}");
}

fn format_num(n: u64) -> String {
    // en-US grouping, as the page's toLocaleString.
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_token_protects_the_page_and_every_call() {
    let (_sink, ctl) = sink(Some(TOKEN));
    // Without the token: the page is a 401 with a token form, data calls
    // a plain 401.
    let (st, _, body) = request(ctl, "GET", "/", &[], b"");
    assert_eq!(st, 401);
    assert!(
        body.contains("name=\"token\"") && !body.contains("MailstormSink"),
        "{body}"
    );
    for path in [
        "/dashboard.json",
        "/plan",
        "/messages",
        "/clients",
        "/verdicts",
        "/stats",
        "/messages/1",
    ] {
        assert_eq!(request(ctl, "GET", path, &[], b"").0, 401, "{path}");
    }
    assert_eq!(
        request(ctl, "PUT", "/plan", &[], OLD_PLAN.as_bytes()).0,
        401
    );
    // A wrong token: 401 again, said so, no cookie.
    let (st, h, body) = request(ctl, "GET", "/?token=nope", &[], b"");
    assert_eq!(st, 401);
    assert!(body.contains("Wrong token"));
    assert!(!h.iter().any(|(k, _)| k == "set-cookie"));
    // A wrong cookie is no better.
    let bad_cookie = [("Cookie", "mailstorm_control=6e6f7065")];
    assert_eq!(
        request(ctl, "GET", "/dashboard.json", &bad_cookie, b"").0,
        401
    );

    // The right token once: a 303 to / with an HttpOnly, SameSite=Strict
    // cookie, which then opens the page and its calls.
    let q: String = TOKEN
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (st, h, _) = request(ctl, "GET", &format!("/?token={q}"), &[], b"");
    assert_eq!(st, 303);
    let get = |k: &str| {
        h.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("location"), "/");
    let cookie = get("set-cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with = [("Cookie", pair.as_str())];
    let (st, _, body) = request(ctl, "GET", "/", &with, b"");
    assert_eq!(st, 200);
    assert!(body.contains("MailstormSink.boot("));
    for path in [
        "/dashboard.json",
        "/plan",
        "/messages",
        "/clients",
        "/verdicts",
    ] {
        assert_eq!(request(ctl, "GET", path, &with, b"").0, 200, "{path}");
    }
    assert_eq!(
        request(ctl, "PUT", "/plan", &with, OLD_PLAN.as_bytes()).0,
        204
    );
    // Bearer keeps working for the API, the dashboard feed included.
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    for path in ["/stats", "/dashboard.json", "/plan"] {
        assert_eq!(request(ctl, "GET", path, &auth, b"").0, 200, "{path}");
    }
    assert_eq!(request(ctl, "GET", "/healthz", &[], b"").0, 200);

    // In a browser: the token in the URL once, then the cookie (which the
    // page's script cannot read) carries the feed.
    let Some(chrome) = cdp::chromium() else {
        return;
    };
    let mut b = cdp::Browser::start(&chrome, &shots());
    b.navigate(&format!("http://{ctl}/"));
    assert!(b
        .eval("document.body.textContent")
        .as_str()
        .unwrap()
        .contains("protected by a token"));
    b.navigate(&format!("http://{ctl}/?token={q}"));
    b.wait_for(
        "the feed",
        "Number(document.getElementById('dashboard')?.dataset.polls) >= 2",
    );
    assert_eq!(b.eval("location.search + '|' + document.cookie"), "|");
    assert_eq!(texts(&mut b, "#plan-rules li"), ["old-defer-first (rcpt)"]);
}

#[test]
fn clients_on_one_address_are_told_apart_by_ehlo_name() {
    let (sink, ctl) = sink(None);
    // The referee watches while a plan is loaded.
    put_plan(ctl, OLD_PLAN);
    for (n, name) in (0..).zip(["one.test", "two.test"]) {
        let mut c = Client::connect(sink.local_addr());
        assert_eq!(c.cmd(&format!("EHLO {name}")).code, 250);
        assert_eq!(send_one(&mut c, n, name), 250);
        c.cmd("QUIT");
    }
    // And one that never greets: known by its address.
    let mut c = Client::connect(sink.local_addr());
    c.cmd("QUIT");
    common::wait_for("three clients closed", || {
        let f = feed(ctl, "");
        f["clients"]
            .as_array()
            .is_some_and(|l| l.len() == 3 && l.iter().all(|c| c["open"] == 0))
    });
    let f = feed(ctl, "");
    let list = f["clients"].as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["127.0.0.1", "one.test", "two.test"]);
    for c in list {
        assert_eq!(c["ips"], serde_json::json!(["127.0.0.1"]), "{c}");
    }
    assert_eq!(list[1]["messages"], 1);
    assert_eq!(list[1]["faults"], 1);
    assert_eq!(list[1]["verdict"], "fail");
    assert_eq!(f["clients_total"], 3);
    // Faults by rule: one deferral per message.
    assert_eq!(f["faults"][0]["name"], "old-defer-first");
    assert_eq!(f["faults"][0]["faults"], 2);
    // The message search: bounded, by subject, sender or recipient.
    assert_eq!(feed(ctl, "?q=TWO.test")["messages"]["matched"], 1);
    assert_eq!(
        feed(ctl, "?q=rcpt0%40b")["messages"]["messages"][0]["subject"],
        "one.test"
    );
    assert_eq!(
        feed(ctl, "?limit=100000")["messages"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(http(ctl, "GET", "/dashboard.json?nope=1", b"").status, 400);
}
