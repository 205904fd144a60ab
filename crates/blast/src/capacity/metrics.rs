//! `--target-metrics URL`: the target's CPU and memory from a Prometheus
//! endpoint, scraped every interval (mailstorm-sink's `/metrics`, a
//! relay's exporter, or node_exporter for a whole host).
//!
//! Read: `process_cpu_seconds_total` and `process_resident_memory_bytes`
//! (the standard process metrics); failing those, node_exporter's
//! `node_cpu_seconds_total` summed over every mode but `idle` and
//! `node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes`.

use std::net::ToSocketAddrs;
use std::time::Duration;

use super::procstat::ProcSample;

/// A scrape, and the whole request, end within this.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest body read: node_exporter pages are a few hundred KiB.
const MAX_BODY: u64 = 8 << 20;

/// A Prometheus endpoint to scrape.
#[derive(Debug, Clone)]
pub struct Scraper {
    url: String,
    agent: ureq::Agent,
}

impl Scraper {
    /// Checks the URL (plain `http://`, loopback unless `allow_remote`)
    /// and scrapes it once, so a wrong URL fails before any load is sent.
    pub fn connect(url: &str, allow_remote: bool) -> Result<Scraper, String> {
        let bad = |why: String| format!("--target-metrics {url}: {why}");
        let uri: ureq::http::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// endpoints are scraped".into()));
        }
        let host = uri.host().ok_or_else(|| bad("no host".into()))?;
        let port = uri.port_u16().unwrap_or(80);
        let addrs: Vec<_> = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .map_err(|e| bad(format!("cannot resolve: {e}")))?
            .collect();
        if !allow_remote && addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(bad(
                "outside loopback: add --allow-remote if you mean to scrape it".into(),
            ));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        let s = Scraper {
            url: url.to_string(),
            agent,
        };
        s.sample().map_err(|e| bad(format!("cannot scrape: {e}")))?;
        Ok(s)
    }

    /// The target's CPU seconds and memory now.
    pub fn sample(&self) -> Result<ProcSample, String> {
        let mut resp = self
            .agent
            .get(&self.url)
            .call()
            .map_err(|e| e.to_string())?;
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        parse(&text).ok_or_else(|| {
            "no process_cpu_seconds_total / process_resident_memory_bytes (or node_exporter \
             CPU and memory) in the response"
                .to_string()
        })
    }
}

/// `name{labels} value [timestamp]` → (name, labels, value).
fn sample_line(line: &str) -> Option<(&str, &str, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (head, rest) = match line.find('{') {
        Some(b) => {
            let e = line[b..].find('}')? + b;
            (&line[..b], (&line[b + 1..e], &line[e + 1..]))
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], ("", &line[sp..]))
        }
    };
    let value = rest.1.split_whitespace().next()?.parse().ok()?;
    Some((head, rest.0, value))
}

/// CPU seconds and RSS from a Prometheus text page.
fn parse(text: &str) -> Option<ProcSample> {
    let (mut cpu, mut rss) = (None, None);
    let (mut node_cpu, mut mem_total, mut mem_avail) = (None::<f64>, None, None);
    for (name, labels, v) in text.lines().filter_map(sample_line) {
        match name {
            "process_cpu_seconds_total" => *cpu.get_or_insert(0.0) += v,
            "process_resident_memory_bytes" => *rss.get_or_insert(0.0) += v,
            "node_cpu_seconds_total" if !labels.contains("mode=\"idle\"") => {
                *node_cpu.get_or_insert(0.0) += v
            }
            "node_memory_MemTotal_bytes" => mem_total = Some(v),
            "node_memory_MemAvailable_bytes" => mem_avail = Some(v),
            _ => {}
        }
    }
    let node_mem = mem_total.zip(mem_avail).map(|(t, a)| t - a);
    let cpu = cpu.or(node_cpu)?;
    let rss = rss.or(node_mem).unwrap_or(0.0);
    Some(ProcSample {
        cpu_secs: cpu,
        rss_bytes: rss.max(0.0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_process_and_node_metrics() {
        let p = parse(
            "# HELP process_cpu_seconds_total CPU.\n# TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total 12.5\nprocess_resident_memory_bytes 1.048576e+07\n",
        )
        .unwrap();
        assert_eq!(p.cpu_secs, 12.5);
        assert_eq!(p.rss_bytes, 10_485_760);
        let n = parse(
            "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 100\n\
             node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 3\n\
             node_cpu_seconds_total{cpu=\"1\",mode=\"system\"} 2 1700000000\n\
             node_memory_MemTotal_bytes 1000\nnode_memory_MemAvailable_bytes 400\n",
        )
        .unwrap();
        assert_eq!(n.cpu_secs, 5.0);
        assert_eq!(n.rss_bytes, 600);
        assert!(parse("up 1\n").is_none());
    }

    #[test]
    fn refuses_bad_and_unreachable_urls_quickly() {
        let t0 = std::time::Instant::now();
        for (url, want) in [
            ("https://127.0.0.1:9/metrics", "only http://"),
            ("http://192.0.2.1:9100/metrics", "outside loopback"),
            ("not a url", "--target-metrics not a url"),
        ] {
            let e = Scraper::connect(url, false).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
        // Nothing listens on port 9 of loopback here: refused at once.
        let e = Scraper::connect("http://127.0.0.1:9/metrics", false).unwrap_err();
        assert!(e.contains("cannot scrape"), "{e}");
        assert!(t0.elapsed() < TIMEOUT * 2);
    }
}
