//! The live dashboard: the same page as the static report, fed by a
//! running program instead of an embedded model.
//!
//! The page's embedded model is only a pointer to the feed (schema
//! [`LIVE_SCHEMA`]); `MailstormReport.boot()` sees it and starts
//! `MailstormReport.live(feed, pollMs)`, which fetches the report model
//! from the feed and re-renders it with the same `render(model)` until the
//! model's outcome is no longer `running`.

use std::time::Duration;

/// Schema of a live page's embedded model: where and how often to poll.
pub const LIVE_SCHEMA: &str = "mailstorm.live/1";

/// The feed's path beside the page (relative in the page, so the
/// dashboard also works behind a path prefix).
pub const FEED_PATH: &str = "report.json";

/// The slowest the page polls: at least once a second.
pub const MAX_POLL: Duration = Duration::from_secs(1);

/// The live page titled `title`, polling `feed` (a URL relative to the
/// page) every `poll` (at most [`MAX_POLL`], at least 100 ms).
pub fn live_page(title: &str, feed: &str, poll: Duration) -> String {
    let poll_ms = poll.clamp(Duration::from_millis(100), MAX_POLL).as_millis() as u64;
    crate::report_page(
        title,
        &serde_json::json!({ "schema": LIVE_SCHEMA, "feed": feed, "poll_ms": poll_ms }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_page_is_the_report_page_pointing_at_its_feed() {
        let p = live_page("run <live>", FEED_PATH, Duration::from_secs(5));
        assert!(p.contains("<title>run &lt;live&gt;</title>"));
        for part in [
            r#""schema":"mailstorm.live/1""#,
            r#""feed":"report.json""#,
            r#""poll_ms":1000"#,
        ] {
            assert!(p.contains(part), "{part}");
        }
        assert!(p.contains("MailstormReport.boot();"));
        assert!(p.contains("live: live"), "report.js exports live()");
        assert!(!p.contains(" src=\""), "nothing fetched but the feed");
        let fast = live_page("x", FEED_PATH, Duration::from_millis(10));
        assert!(fast.contains("\"poll_ms\":100"));
    }
}
