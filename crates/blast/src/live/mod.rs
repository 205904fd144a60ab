//! Live view of a run: `--metrics ADDR` (Prometheus text at `/metrics`)
//! and `--dashboard ADDR` (the HTML report's page at `/`, fed by
//! `/report.json`), served while the run lasts and `--linger-metrics`
//! after it.
//!
//! Data flow: the collector's once-per-interval [`Progress`] (the same
//! snapshots the progress line and the timeline read) is rendered into a
//! [`server::Snapshot`] and published; at the end the final [`RunResult`]
//! and the JSON report replace it, so the last scrape shows exactly the
//! report's figures. Requests only clone the latest snapshot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;

use crate::config::{format_duration, parse_duration, Config};
use crate::{BlastError, Progress, RunParams, RunResult, StopSignal};

pub mod dashboard;
pub mod metrics;
pub mod server;

use server::{Feed, Roles, Server, Snapshot};

/// The live-view flags (part of the run's flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LiveArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics while the run lasts
    /// (e.g. 127.0.0.1:9464; port 0 picks a free port; the address is
    /// printed at the start). Updated once per --interval; after the run
    /// they equal the JSON report's figures. The metrics are listed in the
    /// README ("Live metrics"). An ADDR that cannot be listened on is a
    /// usage error (exit 2), checked before the run.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Keep serving --metrics and --dashboard this long after the run
    /// ended, so a last scrape or look sees the final figures (e.g. 30s;
    /// SIGINT ends it early). Default 0.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub linger_metrics: Option<Duration>,
    /// Serve a live dashboard at http://ADDR/ while the run lasts: the
    /// --html report's page (offered vs achieved, latency over time,
    /// replies, errors, stages, thresholds as they stand), redrawn each
    /// --interval (at least once a second) from http://ADDR/report.json
    /// (the report model so far).
    /// May be the same ADDR as --metrics. Exit 2 when ADDR cannot be
    /// listened on, checked before the run.
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<String>,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

impl LiveArgs {
    /// Refuses the live flags where they do not apply (`what`: the mode).
    pub fn refuse(&self, what: &str) -> Result<(), BlastError> {
        for (given, flag) in [
            (self.metrics.is_some(), "--metrics"),
            (self.dashboard.is_some(), "--dashboard"),
            (self.linger_metrics.is_some(), "--linger-metrics"),
        ] {
            if given {
                return Err(BlastError::Config(format!(
                    "{flag} is for a plain run, not {what}"
                )));
            }
        }
        Ok(())
    }
}

/// The live outputs of one run (inert without the flags).
#[derive(Debug)]
pub struct Live {
    feed: Arc<Feed>,
    server: Option<Server>,
    metrics: bool,
    model: Option<dashboard::Model>,
    linger: Duration,
}

impl Live {
    /// Binds the listeners (errors name the flag and its value) and starts
    /// serving an empty run of `cfg`.
    pub fn start(args: &LiveArgs, cfg: &Config) -> Result<Live, BlastError> {
        let mut live = Live {
            feed: Arc::new(Feed::default()),
            server: None,
            metrics: args.metrics.is_some(),
            model: None,
            linger: args.linger_metrics.unwrap_or(Duration::ZERO),
        };
        if args.linger_metrics.is_some() && args.metrics.is_none() && args.dashboard.is_none() {
            return Err(BlastError::Config(
                "--linger-metrics is for --metrics or --dashboard".into(),
            ));
        }
        let mut listeners = Vec::new();
        let same = args.metrics.is_some() && args.metrics == args.dashboard;
        if let Some(a) = &args.metrics {
            let roles = Roles {
                metrics: true,
                dashboard: same,
            };
            listeners.push((server::bind("--metrics", a)?, roles));
        }
        if let (Some(a), false) = (&args.dashboard, same) {
            let roles = Roles {
                metrics: false,
                dashboard: true,
            };
            listeners.push((server::bind("--dashboard", a)?, roles));
        }
        if listeners.is_empty() {
            return Ok(live);
        }
        let target = cfg.target.clone().unwrap_or_else(|| "embedded sink".into());
        if args.dashboard.is_some() {
            live.model = Some(dashboard::Model::new(cfg, &target));
        }
        live.publish_start(cfg, &target);
        for (l, roles) in &listeners {
            let at = l
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string());
            if roles.metrics {
                eprintln!("metrics: http://{at}/metrics");
            }
            if roles.dashboard {
                eprintln!("dashboard: http://{at}/");
            }
        }
        let page = mailstorm_web::live::live_page(
            "mailstorm-blast run (live)",
            mailstorm_web::live::FEED_PATH,
            cfg.interval.min(Duration::from_secs(1)),
        );
        live.server = Some(Server::start(listeners, live.feed.clone(), page.into())?);
        Ok(live)
    }

    /// What is served before the first interval: nothing counted yet.
    fn publish_start(&mut self, cfg: &Config, target: &str) {
        let empty = crate::stats::Stats::default();
        let metrics = self.metrics.then(|| {
            metrics::encode(&metrics::View {
                totals: &empty,
                elapsed: Duration::ZERO,
                last: None,
                running: true,
                config: cfg,
                target,
                resilience: None,
            })
        });
        let report = self.model.as_mut().map(dashboard::Model::render);
        self.feed.publish(snapshot(metrics, report));
    }

    /// Publishes one interval (on the collector's thread).
    pub fn interval(&mut self, params: &RunParams, p: &Progress<'_>) {
        if self.server.is_none() {
            return;
        }
        let summary = p.resilience.map(|(r, t)| r.summary(t.clone()));
        let metrics = self.metrics.then(|| {
            metrics::encode(&metrics::View {
                totals: p.totals,
                elapsed: p.elapsed,
                last: Some((p.row, p.interval)),
                running: true,
                config: &params.config,
                target: &params.target,
                resilience: summary.as_ref(),
            })
        });
        let report = self.model.as_mut().map(|m| {
            m.interval(&params.target, p, summary);
            m.render()
        });
        self.feed.publish(snapshot(metrics, report));
    }

    /// Publishes the final figures (the report `json` as written), serves
    /// them for `--linger-metrics` (a stop requested after the run ends
    /// it early), then stops serving.
    pub fn end(&mut self, result: &RunResult, json: &serde_json::Value, stop: &StopSignal) {
        if self.server.is_none() {
            return;
        }
        let metrics = self.metrics.then(|| {
            metrics::encode(&metrics::View {
                totals: &result.totals,
                elapsed: result.elapsed,
                last: result.rows.last().map(|r| (r, result.config.interval)),
                running: false,
                config: &result.config,
                target: &result.target,
                resilience: result.resilience.as_ref(),
            })
        });
        let report = self
            .model
            .is_some()
            .then(|| serde_json::to_vec(json).unwrap_or_default());
        self.feed.publish(snapshot(metrics, report));
        if !self.linger.is_zero() {
            eprintln!(
                "live: serving the final figures for {} (--linger-metrics; SIGINT ends it)",
                format_duration(self.linger)
            );
            let stopped_before = stop.is_triggered();
            let until = Instant::now() + self.linger;
            // A flag check every 50 ms: the signal handler's thread sets
            // it, and a linger has no finer deadline than that.
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                if left.is_zero() || (!stopped_before && stop.is_triggered()) {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(50)));
            }
        }
        if let Some(mut s) = self.server.take() {
            s.shutdown();
        }
    }
}

fn snapshot(metrics: Option<String>, report: Option<Vec<u8>>) -> Snapshot {
    Snapshot {
        metrics: metrics.map(Bytes::from).unwrap_or_default(),
        report: report.map(Bytes::from).unwrap_or_default(),
    }
}
