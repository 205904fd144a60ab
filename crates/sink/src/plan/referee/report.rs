//! The referee's report (`GET /clients`) and its Prometheus form.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::dns_record::DnsClientRecord;
use super::{lock, Client, Referee};
use crate::filter::ClientFilter;

/// A per-client metric: name, help, getter.
type Metric = (&'static str, &'static str, fn(&Client) -> u64);

/// A client id as a Prometheus label value (escaped).
fn label(id: &str) -> String {
    id.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The referee's report (`GET /clients`): what each client did in reply
/// to the faults, and the retry and reconnect intervals. The JSON form is
/// this struct serialized; readers (the scenario runner) deserialize it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefereeReport {
    /// Per client id: the EHLO name of the client's sessions
    /// (lower-case), or the IP address of sessions that never greeted.
    pub clients: BTreeMap<String, ClientRecord>,
    /// Intervals (ms) between an injected failure and the retry, by the
    /// failure's reply code.
    pub retry_interval_ms_by_code: BTreeMap<u16, HistogramSummary>,
    /// Time (ms) from an injected 421 to the client's next connection.
    pub reconnect_after_421_ms: HistogramSummary,
    /// Messages per connection, over closed connections.
    pub messages_per_connection: HistogramSummary,
    /// The latest retries (at most 200), oldest first.
    pub recent_retries: Vec<RetryRecord>,
}

/// What one client did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Connections opened.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Most connections open at once.
    pub max_concurrent: u64,
    /// Messages accepted.
    pub messages: u64,
    /// `messages / connections`.
    pub messages_per_connection: f64,
    /// Sessions in which the client pipelined.
    pub sessions_pipelined: u64,
    /// Sessions in which the client used BDAT.
    pub sessions_bdat: u64,
    /// Faults injected for this client.
    pub faults: u64,
    /// Injected 421 replies.
    pub replies_421: u64,
    /// Commands sent after a 421 (QUIT excluded).
    pub commands_after_421: u64,
    /// QUITs sent after a 421.
    pub quit_after_421: u64,
    /// Requests retried after an injected failure.
    pub retries: u64,
    /// Requests sent again after a 5xx (should have bounced).
    pub resent_after_5xx: u64,
    /// The IP addresses the client connected from (at most 8).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// Sender and recipient domains the client used (at most 16).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Injected 4xx replies (421 included).
    #[serde(default)]
    pub replies_4xx: u64,
    /// Injected 5xx replies.
    #[serde(default)]
    pub replies_5xx: u64,
    /// MAIL commands sent.
    #[serde(default)]
    pub mails: u64,
    /// MAIL `SIZE=` above the announced limit, or data above the declared
    /// `SIZE=` (or the limit).
    #[serde(default)]
    pub size_violations: u64,
    /// Sessions that pipelined without PIPELINING announced.
    #[serde(default)]
    pub pipelined_unannounced: u64,
    /// Sessions closed.
    #[serde(default)]
    pub sessions_closed: u64,
    /// Sessions the client closed without QUIT.
    #[serde(default)]
    pub unclean_quits: u64,
    /// DNS queries to the sink's responder (`--dns`). A query carries no
    /// EHLO name, so they are counted under the entry of the client's IP
    /// address (`"127.0.0.1"`); a client id that is an EHLO name has none
    /// (match it to the IP entry through its `ips`).
    #[serde(default)]
    pub dns: DnsClientRecord,
}

impl ClientRecord {
    pub(crate) fn of(c: &Client) -> ClientRecord {
        ClientRecord {
            connections: c.connections,
            open: c.open,
            max_concurrent: c.max_concurrent,
            messages: c.messages,
            messages_per_connection: if c.connections > 0 {
                c.messages as f64 / c.connections as f64
            } else {
                0.0
            },
            sessions_pipelined: c.sessions_pipelined,
            sessions_bdat: c.sessions_bdat,
            faults: c.faults,
            replies_421: c.replies_421,
            commands_after_421: c.commands_after_421,
            quit_after_421: c.quit_after_421,
            retries: c.retries,
            resent_after_5xx: c.resent_after_5xx,
            ips: c.ips.clone(),
            domains: c.domains().map(str::to_owned).collect(),
            replies_4xx: c.replies_4xx,
            replies_5xx: c.replies_5xx,
            mails: c.mails,
            size_violations: c.size_violations,
            pipelined_unannounced: c.pipelined_unannounced,
            sessions_closed: c.sessions_closed,
            unclean_quits: c.unclean_quits,
            dns: c.dns,
        }
    }
}

/// A histogram's summary (all zero when empty), without `p999`: the
/// referee's report has never carried it.
pub type HistogramSummary = mailstorm_sample::HistSummary;

fn summary(h: &Histogram<u64>) -> HistogramSummary {
    HistogramSummary {
        p999: None,
        ..HistogramSummary::of(h)
    }
}

/// One observed retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRecord {
    /// The request key (client, sender, recipients).
    pub key: String,
    /// The injected reply code it retried after.
    pub after_code: u16,
    /// The request's attempt number.
    pub attempt: u32,
    /// Time since the failure.
    pub interval_ms: u64,
}

impl Referee {
    /// `GET /clients`: the records of the clients `filter` selects. The
    /// histograms and recent retries are over all clients unless a filter
    /// is given, in which case only the recent retries are filtered.
    pub(crate) fn report(&self, filter: &ClientFilter) -> RefereeReport {
        let clients: BTreeMap<String, ClientRecord> = self.selected(filter, |list| {
            list.iter()
                .map(|(id, c)| (id.to_string(), ClientRecord::of(c)))
                .collect()
        });
        let h = lock(&self.hists);
        let retry_interval_ms_by_code = h
            .retry_by_code
            .iter()
            .map(|(code, h)| (*code, summary(h)))
            .collect();
        let recent_retries = lock(&self.recent)
            .iter()
            .filter(|r| filter.is_all() || clients.contains_key(&*r.client))
            .map(|r| RetryRecord {
                key: r.key.clone(),
                after_code: r.after_code,
                attempt: r.attempt,
                interval_ms: r.interval.as_millis() as u64,
            })
            .collect();
        RefereeReport {
            clients,
            retry_interval_ms_by_code,
            reconnect_after_421_ms: summary(&h.reconnect_after_421),
            messages_per_connection: summary(&h.messages_per_connection),
            recent_retries,
        }
    }

    /// The same figures as Prometheus text.
    pub(crate) fn to_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let map = lock(&self.clients).clone();
        let metrics: [Metric; 10] = [
            ("connections_total", "Connections per client", |c| {
                c.connections
            }),
            (
                "max_concurrent_connections",
                "Most concurrent connections per client",
                |c| c.max_concurrent,
            ),
            ("messages_total", "Messages accepted per client", |c| {
                c.messages
            }),
            ("sessions_pipelined_total", "Sessions that pipelined", |c| {
                c.sessions_pipelined
            }),
            ("sessions_bdat_total", "Sessions that used BDAT", |c| {
                c.sessions_bdat
            }),
            ("faults_total", "Faults injected per client", |c| c.faults),
            (
                "dns_queries_total",
                "DNS queries per client (under its IP address)",
                |c| c.dns.queries,
            ),
            (
                "commands_after_421_total",
                "Commands sent after a 421 (violations)",
                |c| c.commands_after_421,
            ),
            (
                "retries_total",
                "Retries of requests that got an injected 4xx/5xx",
                |c| c.retries,
            ),
            (
                "resent_after_5xx_total",
                "Requests re-sent after a 5xx (violations)",
                |c| c.resent_after_5xx,
            ),
        ];
        for (name, help, get) in metrics {
            let _ = writeln!(out, "# HELP mailstorm_sink_client_{name} {help}.");
            let _ = writeln!(
                out,
                "# TYPE mailstorm_sink_client_{name} {}",
                if name.starts_with("max") {
                    "gauge"
                } else {
                    "counter"
                }
            );
            for (id, c) in &map {
                let _ = writeln!(
                    out,
                    "mailstorm_sink_client_{name}{{client=\"{}\"}} {}",
                    label(id),
                    get(c)
                );
            }
        }
        let h = lock(&self.hists);
        let _ = writeln!(out, "# HELP mailstorm_sink_retry_interval_seconds Client retry interval after an injected failure, by the reply code that caused it.");
        let _ = writeln!(out, "# TYPE mailstorm_sink_retry_interval_seconds summary");
        for (code, hh) in &h.retry_by_code {
            quantiles(
                out,
                "mailstorm_sink_retry_interval_seconds",
                &format!("code=\"{code}\","),
                hh,
            );
        }
        let _ = writeln!(out, "# HELP mailstorm_sink_reconnect_after_421_seconds Time from an injected 421 to the client's next connection.");
        let _ = writeln!(
            out,
            "# TYPE mailstorm_sink_reconnect_after_421_seconds summary"
        );
        quantiles(
            out,
            "mailstorm_sink_reconnect_after_421_seconds",
            "",
            &h.reconnect_after_421,
        );
    }
}

fn quantiles(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    use std::fmt::Write as _;
    for q in [0.5, 0.9, 0.99] {
        let _ = writeln!(
            out,
            "{name}{{{labels}quantile=\"{q}\"}} {}",
            h.value_at_quantile(q) as f64 / 1000.0
        );
    }
    let sum = h.mean() * h.len() as f64 / 1000.0;
    let l = labels.trim_end_matches(',');
    let braces = if l.is_empty() {
        String::new()
    } else {
        format!("{{{l}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {sum}");
    let _ = writeln!(out, "{name}_count{braces} {}", h.len());
}
