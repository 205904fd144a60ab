//! `--junit FILE`: scenario verdicts as JUnit XML, so CI systems show each
//! scenario as a test case (failed expectations as its failure).

use std::fmt::Write as _;

/// One scenario's verdict.
#[derive(Debug, Clone, Default)]
pub struct Case {
    /// Scenario name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Failed expectations with their measured values.
    pub failures: Vec<String>,
    /// The scenario could not run (bad file, unreachable target).
    pub error: Option<String>,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no representation for most control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The JUnit XML document for `cases` (one `testsuite` named `suite`).
pub fn to_xml(suite: &str, cases: &[Case]) -> String {
    let failures = cases.iter().filter(|c| !c.failures.is_empty()).count();
    let errors = cases.iter().filter(|c| c.error.is_some()).count();
    let total: f64 = cases.iter().map(|c| c.seconds).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total:.3}\">",
        cases.len()
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total:.3}\">",
        escape(suite),
        cases.len()
    );
    for c in cases {
        let _ = write!(
            x,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            escape(&c.name),
            escape(&c.file),
            c.seconds
        );
        if c.failures.is_empty() && c.error.is_none() {
            x.push_str("/>\n");
            continue;
        }
        x.push_str(">\n");
        if let Some(e) = &c.error {
            let _ = writeln!(x, "      <error message=\"{}\"/>", escape(e));
        }
        if !c.failures.is_empty() {
            let _ = writeln!(
                x,
                "      <failure message=\"{} expectation(s) failed\">{}</failure>",
                c.failures.len(),
                escape(&c.failures.join("\n"))
            );
        }
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_failures_and_errors() {
        let x = to_xml(
            "mailstorm",
            &[
                Case {
                    name: "ok".into(),
                    file: "a.yaml".into(),
                    seconds: 1.5,
                    ..Case::default()
                },
                Case {
                    name: "bad <one>".into(),
                    file: "b.yaml".into(),
                    failures: vec!["delivered == 200 (measured 150)".into()],
                    ..Case::default()
                },
                Case {
                    name: "broken".into(),
                    error: Some("no such file".into()),
                    ..Case::default()
                },
            ],
        );
        assert!(x.contains("<testsuites tests=\"3\" failures=\"1\" errors=\"1\""));
        assert!(x.contains("<testcase name=\"ok\" classname=\"a.yaml\" time=\"1.500\"/>"));
        assert!(x.contains("name=\"bad &lt;one&gt;\""));
        assert!(x.contains(">delivered == 200 (measured 150)</failure>"));
        assert!(x.contains("<error message=\"no such file\"/>"));
    }
}
