//! The results of an upgrade test run, in the formats their readers speak: summary.json and
//! status.jsonl for machines, JUnit XML for Jenkins, bulk NDJSON for ElasticSearch, and an HTML
//! page (with its stylesheet) for people; and one page comparing the recorded runs of an
//! environment (html/history.rs). Each renders the harness's `RunSummary`, judged once by
//! harness/verdict.rs.

pub mod es;
pub mod html;
pub mod json;
pub mod junit;

use std::path::Path;

use crate::error::{IoContext, Result};
use crate::harness::stats::Sample;
use crate::harness::summary::RunSummary;
use crate::history::RecordedRun;

/// Writes every file report of the run into its folder `dir`; report.html compares the run with
/// `previous`, the previous run of its environment and flow in the results history.
pub fn write_all(
    dir: &Path,
    summary: &RunSummary,
    samples: &[Sample],
    previous: Option<&RecordedRun>,
) -> Result<()> {
    json::write_summary(dir, summary)?;
    json::write_status_jsonl(dir, samples)?;
    let junit = dir.join("junit.xml");
    std::fs::write(&junit, junit::junit_xml(summary))
        .ctx(|| format!("writing {}", junit.display()))?;
    html::write(dir, summary, samples, previous)
}

/// Escapes text for XML 1.0 and HTML, in text and in quoted attributes alike.
///
/// Characters XML 1.0 forbids (C0 controls other than tab, newline and carriage return; U+FFFE,
/// U+FFFF) become U+FFFD: a probe's error message can carry any byte a server sent, and one such
/// character makes Jenkins reject the whole report. With `in_attribute`, tab, newline and carriage
/// return are written as references, since XML parsers turn them into spaces in attributes.
pub(crate) fn escape_markup(text: &str, in_attribute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' if in_attribute => out.push_str(&format!("&#{};", c as u32)),
            '\t' | '\n' | '\r' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_replaces_forbidden_characters() {
        assert_eq!(
            escape_markup("a<b>&\"c\" 'd'", false),
            "a&lt;b&gt;&amp;&quot;c&quot; &#39;d&#39;"
        );
        assert_eq!(
            escape_markup("x\u{0}y\u{1b}z\u{ffff}", false),
            "x\u{fffd}y\u{fffd}z\u{fffd}"
        );
        assert_eq!(escape_markup("l1\nl2\tx", false), "l1\nl2\tx");
        assert_eq!(escape_markup("l1\nl2\tx\r", true), "l1&#10;l2&#9;x&#13;");
        assert_eq!(escape_markup("ünïcode ✓", true), "ünïcode ✓");
    }
}
