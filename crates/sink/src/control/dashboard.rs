//! The sink dashboard: `GET /` serves the page (from `mailstorm-web`, every
//! asset inline), `GET /dashboard.json` the one feed it polls each second,
//! and, with a control token, the browser's way in.
//!
//! A browser cannot send `Authorization: Bearer` when it loads a page, so
//! `GET /?token=T` exchanges a good token for an `HttpOnly; SameSite=Strict`
//! cookie and redirects to `/` (the token leaves the address bar). The
//! cookie then authorizes the page and every call it makes, like the
//! Bearer header; SameSite=Strict keeps other sites' pages from riding on
//! it (no CSRF on `PUT /plan`). Without either, `/` answers 401 with a
//! form asking for the token, and the data calls a plain 401.
//!
//! The feed is built only when asked: the sink does no work for the
//! dashboard while no browser polls it.

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{Backend, ControlBackend};
use crate::filter::ClientFilter;

/// The cookie that carries the token (hex-encoded, so any token fits).
const COOKIE: &str = "mailstorm_control";

/// Most kept messages one search returns.
pub const MAX_SEARCH_RESULTS: usize = 100;

/// Messages the feed lists when the page gives no `limit`.
const DEFAULT_SEARCH_RESULTS: usize = 50;

/// Most clients the feed lists (the referee keeps more; the page says how
/// many were left out).
pub const MAX_CLIENTS_LISTED: usize = 200;

/// Most pieces of evidence the feed gives per verdict rule.
const MAX_EVIDENCE: usize = 3;

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Whether a `Cookie` header carries the token.
pub(super) fn cookie_matches(headers: &HeaderMap, token: &str) -> bool {
    let want = hex(token);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .any(|(k, v)| {
            k == COOKIE && mailstorm_proto::sasl::constant_time_eq(v.as_bytes(), want.as_bytes())
        })
}

/// The `token` query parameter of `GET /`, if any.
fn query_token(req: &Request) -> Option<String> {
    let q = req.uri().query()?;
    token_param(q)
}

/// `token=` from a query string, percent-decoded (`+` is a space).
fn token_param(q: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%' && i + 2 < b.len())
            .then(|| Some(hexval(b[i + 1])? * 16 + hexval(b[i + 2])?))
            .flatten();
        match (b[i], escaped) {
            (_, Some(v)) => {
                out.push(v);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (c, None) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// For a request the token check refused: the browser's way in on
/// `GET /` (a good `?token=` becomes the cookie; otherwise a 401 page with
/// a token form). `None` for other routes (their plain 401 stands).
pub(super) fn login(req: &Request, token: &str) -> Option<Response> {
    if req.uri().path() != "/" || req.method() != Method::GET {
        return None;
    }
    let given = query_token(req);
    if let Some(t) = &given {
        if mailstorm_proto::sasl::constant_time_eq(t.as_bytes(), token.as_bytes()) {
            return Some(exchange(token));
        }
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            mailstorm_web::sink::token_page(given.is_some()),
        )
            .into_response(),
    )
}

/// 303 to `/` with the token as an HttpOnly, SameSite=Strict cookie.
fn exchange(token: &str) -> Response {
    let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", hex(token));
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Whether `GET /?token=` must go through the exchange even when the
/// request is already authorized (so the token never stays in the URL).
pub(super) fn wants_exchange(req: &Request) -> bool {
    req.uri().path() == "/" && query_token(req).is_some()
}

/// `GET /`: the dashboard page.
pub(super) async fn page(State(b): State<Backend>) -> Response {
    let host = b
        .info_json()
        .and_then(|i| i.get("hostname").and_then(Value::as_str).map(str::to_owned));
    let title = match host {
        Some(h) => format!("mailstorm-sink on {h}"),
        None => "mailstorm-sink".to_owned(),
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        mailstorm_web::sink::sink_page(&title),
    )
        .into_response()
}

/// `GET /dashboard.json?q=TEXT&limit=N`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedQuery {
    /// Search text for the kept messages (sender, recipients, subject).
    #[serde(default)]
    q: String,
    /// Most messages to list (capped at [`MAX_SEARCH_RESULTS`]).
    limit: Option<usize>,
}

/// `GET /dashboard.json`: everything the page shows, in one call.
pub(super) async fn feed(State(b): State<Backend>, Query(q): Query<FeedQuery>) -> Json<Value> {
    let limit = q
        .limit
        .unwrap_or(DEFAULT_SEARCH_RESULTS)
        .min(MAX_SEARCH_RESULTS);
    Json(feed_json(&*b, &q.q, limit))
}

/// The feed: the stats snapshot, faults by rule, the referee's clients
/// with their verdicts, and the kept messages matching `query`.
pub fn feed_json(b: &dyn ControlBackend, query: &str, limit: usize) -> Value {
    let (clients, clients_total) = clients(b);
    json!({
        "schema": "mailstorm.sink-dashboard/1",
        "stats": b.stats_json(),
        "faults": b.faults_json(),
        "clients": clients,
        "clients_total": clients_total,
        "messages": b.search_messages(query, limit.min(MAX_SEARCH_RESULTS)),
    })
}

/// The referee's clients (at most [`MAX_CLIENTS_LISTED`]) with their
/// addresses, figures and verdicts, and how many there are in all.
fn clients(b: &dyn ControlBackend) -> (Value, usize) {
    let all = ClientFilter::all();
    let Some(report) = b.clients_json(&all) else {
        return (Value::Null, 0);
    };
    let mut verdicts: Map<String, Value> = b
        .verdicts_json(&all)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| Some((v.get("client")?.as_str()?.to_owned(), v)))
        .collect();
    let Some(map) = report.get("clients").and_then(Value::as_object) else {
        return (json!([]), 0);
    };
    let list = map
        .iter()
        .take(MAX_CLIENTS_LISTED)
        .map(|(id, c)| {
            let mut row = c.clone();
            if let Some(o) = row.as_object_mut() {
                o.insert("id".into(), id.clone().into());
                let v = verdicts.remove(id).unwrap_or(Value::Null);
                o.insert(
                    "verdict".into(),
                    v.get("verdict").cloned().unwrap_or_default(),
                );
                o.insert("rules".into(), trimmed_rules(&v));
            }
            row
        })
        .collect();
    (Value::Array(list), map.len())
}

/// A verdict's rules with at most [`MAX_EVIDENCE`] pieces of evidence each.
fn trimmed_rules(v: &Value) -> Value {
    let rules = v.get("rules").and_then(Value::as_array);
    Value::Array(
        rules
            .into_iter()
            .flatten()
            .map(|r| {
                let mut r = r.clone();
                if let Some(Value::Array(e)) = r.get_mut("evidence") {
                    e.truncate(MAX_EVIDENCE);
                }
                r
            })
            .collect(),
    )
}

/// The default message search of [`ControlBackend::search_messages`]:
/// the newest kept messages whose sender, recipients or subject contain
/// `query` (case-insensitive), at most `limit` of them.
pub fn search_in(list: &Value, query: &str, limit: usize) -> Value {
    let q = query.to_lowercase();
    let all = list.as_array().map(Vec::as_slice).unwrap_or_default();
    let hit = |m: &Value| {
        q.is_empty()
            || ["mail_from", "subject"]
                .iter()
                .filter_map(|k| m.get(*k).and_then(Value::as_str))
                .chain(
                    m.get("rcpt_to")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                )
                .any(|s| s.to_lowercase().contains(&q))
    };
    let mut matched = 0usize;
    let mut out = Vec::new();
    for m in all.iter().rev().filter(|m| hit(m)) {
        matched += 1;
        if out.len() < limit {
            out.push(m.clone());
        }
    }
    json!({ "kept": all.len(), "matched": matched, "messages": out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_queries_and_cookies() {
        assert_eq!(
            token_param("a=1&token=s%20e+c%2F").as_deref(),
            Some("s e c/")
        );
        assert_eq!(token_param("tokens=x"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=b"));
        assert!(!cookie_matches(&h, "tok;en"));
        let c = format!("x=y; {COOKIE}={}", hex("tok;en"));
        h.append(header::COOKIE, HeaderValue::from_str(&c).unwrap());
        assert!(cookie_matches(&h, "tok;en"));
        assert!(!cookie_matches(&h, "tok;en2"));
    }

    /// A backend without plan support: only the required methods.
    struct Bare;

    impl ControlBackend for Bare {
        fn stats_json(&self) -> Value {
            json!({"messages_accepted": 2})
        }
        fn metrics_text(&self) -> String {
            String::new()
        }
        fn reset(&self, _f: &ClientFilter) {}
        fn messages(&self, _f: &ClientFilter) -> Value {
            json!([{"id": 1, "mail_from": "a@x.test", "rcpt_to": ["b@y.test"], "subject": "one"},
                   {"id": 2, "mail_from": "c@x.test", "rcpt_to": ["d@y.test"], "subject": "two"}])
        }
        fn message_raw(&self, _id: u64) -> Option<Vec<u8>> {
            None
        }
        fn clear_messages(&self, _f: &ClientFilter) {}
    }

    #[test]
    fn the_feed_without_plan_support() {
        let f = feed_json(&Bare, "D@Y", 10);
        assert_eq!(f["stats"]["messages_accepted"], 2);
        assert_eq!(f["faults"], Value::Null);
        assert_eq!(f["clients"], Value::Null);
        assert_eq!(f["clients_total"], 0);
        assert_eq!(f["messages"]["matched"], 1);
        assert_eq!(f["messages"]["messages"][0]["id"], 2);
    }

    #[test]
    fn search_is_bounded_and_newest_first() {
        let list: Vec<Value> = (0..300)
            .map(|i| json!({"id": i, "mail_from": format!("s{i}@a.test"), "rcpt_to": ["r@b.test"], "subject": if i % 2 == 0 { "Even" } else { "odd" }}))
            .collect();
        let r = search_in(&Value::Array(list), "EVEN", 10);
        assert_eq!(r["kept"], 300);
        assert_eq!(r["matched"], 150);
        let m = r["messages"].as_array().unwrap();
        assert_eq!(m.len(), 10);
        assert_eq!(m[0]["id"], 298);
        let r = search_in(&r["messages"], "r@B.test", 3);
        assert_eq!(r["messages"].as_array().unwrap().len(), 3);
        assert_eq!(search_in(&json!([]), "", 5)["messages"], json!([]));
    }
}
