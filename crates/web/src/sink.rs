//! The sink dashboard: the same page shell, CSS and vendored uPlot as the
//! report, with its own script (`assets/sink.js`) that polls the sink's
//! `GET /dashboard.json` once a second and renders throughput, replies,
//! faults by rule, the referee's clients and verdicts, the kept messages
//! and the plan editor. Everything is inline: the page fetches no asset.

use crate::{escape_html, PAGE_CSS, PAGE_JS, UPLOT_CSS, UPLOT_JS};

/// The dashboard's script: `MailstormSink.boot()`.
pub const SINK_JS: &str = include_str!("../assets/sink.js");
/// The dashboard's stylesheet, on top of the report's.
pub const SINK_CSS: &str = include_str!("../assets/sink.css");

/// An empty inline icon: without it the browser asks the sink for
/// `/favicon.ico` (a 404 on its console).
const NO_ICON: &str = "<link rel=\"icon\" href=\"data:,\">";

/// The dashboard page, titled `title`, for a sink whose control API serves
/// it (its data calls are same-origin, relative URLs).
pub fn sink_page(title: &str) -> String {
    let title = escape_html(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n{NO_ICON}\n<style>\n{UPLOT_CSS}\n{PAGE_CSS}\n{SINK_CSS}\n</style>\n</head>\n\
         <body class=\"sink\">\n<header><h1>{title}</h1><span id=\"status\" class=\"muted\">connecting…</span></header>\n\
         <div id=\"errors\" class=\"errors\" hidden></div>\n\
         <noscript><p>The dashboard needs JavaScript; the same figures are at /stats, /clients, \
         /verdicts, /messages and /plan.</p></noscript>\n\
         <main id=\"dashboard\"></main>\n\
         <script>\n{UPLOT_JS}\n</script>\n<script>\n{PAGE_JS}\n</script>\n<script>\n{SINK_JS}\n</script>\n\
         <script>\nMailstormSink.boot(document.getElementById(\"dashboard\"));\n</script>\n\
         </body>\n</html>\n"
    )
}

/// The 401 page of a token-protected dashboard: a form that sends the
/// token once (`GET /?token=`), which the sink exchanges for a cookie.
/// `wrong`: a token was given and did not match.
pub fn token_page(wrong: bool) -> String {
    let note = if wrong {
        "<p class=\"errors\" id=\"token-wrong\">Wrong token.</p>\n"
    } else {
        ""
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>mailstorm-sink: token required</title>\n{NO_ICON}\n<style>\n{PAGE_CSS}\n</style>\n</head>\n\
         <body>\n<header><h1>mailstorm-sink</h1></header>\n{note}\
         <p>This control API is protected by a token (<code>--control-token</code>).</p>\n\
         <form method=\"get\" action=\"/\"><label>Token <input type=\"password\" name=\"token\" \
         id=\"token\" autocomplete=\"off\" autofocus></label> <button type=\"submit\">Open</button></form>\n\
         </body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_is_self_contained_and_escapes_its_title() {
        let p = sink_page("sink on <evil>\"host\"");
        assert!(p.contains("<title>sink on &lt;evil&gt;&quot;host&quot;</title>"));
        assert!(!p.contains("<evil>"));
        assert!(!p.contains(" src=\""));
        // The only link is the empty inline icon.
        assert_eq!(p.matches("<link ").count(), 1);
        assert!(p.contains(NO_ICON));
        assert!(p.contains("MailstormSink.boot("));
        assert_eq!(
            p.matches("</script>").count(),
            4,
            "uPlot, report.js, sink.js, boot"
        );
        let t = token_page(true);
        assert!(t.contains("Wrong token") && t.contains("name=\"token\""));
        assert!(!token_page(false).contains("Wrong token"));
    }
}
