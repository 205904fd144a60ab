//! The one mailstorm front end: a single page that renders a report model
//! (a blaster run report `mailstorm.report/2` or a capacity report
//! `mailstorm.capacity/1`) with charts from the vendored uPlot library.
//!
//! Every asset is embedded at build time (`include_str!`), so a report is
//! one self-contained file that opens offline, and a binary serving a live
//! dashboard fetches nothing at run time. [`report_page`] inlines the
//! model as JSON; a dashboard can serve [`PAGE_JS`], [`UPLOT_JS`] and the
//! CSS itself and feed the same `render(model)` entry point.
#![deny(missing_docs)]

pub mod live;
pub mod sink;

/// uPlot 1.6.32, minified IIFE build, preceded by its MIT licence in a
/// `/*! */` comment: the licence asks that its notice go with every copy,
/// and every page or report that embeds the script is such a copy.
pub const UPLOT_JS: &str = concat!(
    "/*! uPlot 1.6.32 (https://github.com/leeoniya/uPlot)\n",
    include_str!("../assets/vendor/uplot/LICENSE"),
    "*/\n",
    include_str!("../assets/vendor/uplot/uPlot.iife.min.js")
);
/// uPlot's stylesheet.
pub const UPLOT_CSS: &str = include_str!("../assets/vendor/uplot/uPlot.min.css");
/// uPlot's licence (also at the head of [`UPLOT_JS`]).
pub const UPLOT_LICENSE: &str = include_str!("../assets/vendor/uplot/LICENSE");
/// The page's own script: `MailstormReport.render(model, element)`.
pub const PAGE_JS: &str = include_str!("../assets/report.js");
/// The page's own stylesheet.
pub const PAGE_CSS: &str = include_str!("../assets/report.css");

/// Makes text safe inside an HTML element or attribute.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// JSON for a `<script type="application/json">` block: `<` is written as
/// `\u003c` (only possible inside JSON strings), so no value can close the
/// script element early.
fn embeddable_json(model: &serde_json::Value) -> String {
    model.to_string().replace('<', "\\u003c")
}

/// One self-contained HTML page showing `model`, titled `title`.
pub fn report_page(title: &str, model: &serde_json::Value) -> String {
    let title = escape_html(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{UPLOT_CSS}\n{PAGE_CSS}\n</style>\n</head>\n<body>\n\
         <header><h1>{title}</h1></header>\n\
         <div id=\"errors\" class=\"errors\" hidden></div>\n\
         <noscript><p>This report draws its charts with JavaScript; the raw figures are in \
         the JSON block of this file.</p></noscript>\n\
         <main id=\"report\"></main>\n\
         <script type=\"application/json\" id=\"report-data\">{json}</script>\n\
         <script>\n{UPLOT_JS}\n</script>\n<script>\n{PAGE_JS}\n</script>\n\
         <script>\nMailstormReport.boot();\n</script>\n</body>\n</html>\n",
        json = embeddable_json(model),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_carries_the_uplot_licence() {
        let m = serde_json::json!({"schema": "x"});
        assert!(UPLOT_LICENSE.contains("Permission is hereby granted"));
        assert!(
            !UPLOT_LICENSE.contains("*/"),
            "the licence must not end its comment"
        );
        for page in [
            report_page("r", &m),
            sink::sink_page("s"),
            live::live_page("l", "/report.json", std::time::Duration::from_secs(1)),
        ] {
            assert!(page.contains(UPLOT_LICENSE), "no licence notice");
            assert!(page.contains("Copyright (c) 2022 Leon Sorokin"));
        }
    }

    #[test]
    fn page_is_self_contained_and_the_model_cannot_escape() {
        let m = serde_json::json!({"schema": "x", "evil": "</script><script>alert(1)</script>"});
        let p = report_page("a <b> run", &m);
        assert!(p.contains("<title>a &lt;b&gt; run</title>"));
        assert_eq!(
            p.matches("</script>").count(),
            4,
            "only the page's own scripts close"
        );
        // Nothing is fetched: no src= or href= to anything.
        assert!(!p.contains(" src=\""));
        assert!(!p.contains("<link "));
        let start = p.find("id=\"report-data\">").unwrap() + 17;
        let end = start + p[start..].find("</script>").unwrap();
        let back: serde_json::Value = serde_json::from_str(&p[start..end]).unwrap();
        assert_eq!(back, m);
    }
}
