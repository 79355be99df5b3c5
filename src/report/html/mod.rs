//! report.html: one page for people, with its stylesheet in report.css beside it. No script,
//! no inline style, nothing fetched from elsewhere: it works under Jenkins' default
//! Content-Security-Policy for archived and published files (`sandbox; default-src 'none';
//! img-src 'self'; style-src 'self';`), from a mail or an air-gapped lab alike.
//!
//! The verdict comes first with its availability headline and what made it, then the run's
//! phases on a wall-clock axis, a chart per probe, and the tables (timeline.rs, tables.rs).
//! Every judgement on the page is the verdict policy's (harness/verdict.rs).

mod compare;
mod history;
mod tables;
mod timeline;

pub use history::history_page;

use std::fmt::Write;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::harness::stats::Sample;
use crate::harness::summary::RunSummary;
use crate::harness::verdict::{CheckKind, CheckStatus, Verdict};
use crate::history::RecordedRun;
use crate::report::escape_markup;

pub const PAGE_FILE: &str = "report.html";
pub const STYLESHEET_FILE: &str = "report.css";
const STYLESHEET: &str = include_str!("report.css");

/// Files of the run folder the page links to, when they are there.
const RESULT_FILES: [&str; 3] = ["summary.json", "junit.xml", "status.jsonl"];

/// Writes report.html and report.css into the run folder `dir`, linking the run's logs;
/// `previous` is the run it is compared with.
pub fn write(
    dir: &Path,
    summary: &RunSummary,
    samples: &[Sample],
    previous: Option<&RecordedRun>,
) -> Result<()> {
    let mut logs: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| format!("logs/{}", e.file_name().to_string_lossy()))
        .collect();
    logs.sort();
    for (name, bytes) in [
        (STYLESHEET_FILE, STYLESHEET.to_string()),
        (PAGE_FILE, html_report(summary, samples, &logs, previous)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).ctx(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The page; `logs` are the run folder's log files, relative to it (`logs/deploy.log`);
/// `previous`, the previous run of the same environment and flow in the results history.
pub fn html_report(
    summary: &RunSummary,
    samples: &[Sample],
    logs: &[String],
    previous: Option<&RecordedRun>,
) -> String {
    let mut page = String::new();
    let title = format!(
        "{} {}: {} → {}",
        summary.env, summary.flow, summary.from_version, summary.to_version
    );
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} — {}</title>\n<link rel=\"stylesheet\" href=\"{STYLESHEET_FILE}\">\n\
         </head>\n<body>\n",
        text(summary.verdict.as_str()),
        text(&title)
    );
    verdict(&mut page, summary, &title);
    files(&mut page, logs);
    let clock = timeline::Clock::new(&summary.started);
    timeline::run_chart(&mut page, summary, &clock);
    timeline::probe_charts(&mut page, summary, samples, &clock);
    tables::phases_table(&mut page, summary, logs);
    tables::probes_table(&mut page, summary);
    compare::vs_previous(&mut page, summary, previous);
    tables::smoke_table(&mut page, summary);
    tables::resources_table(&mut page, summary);
    tables::rally_table(&mut page, summary);
    tables::cache_table(&mut page, summary);
    page.push_str("</body>\n</html>\n");
    page
}

fn text(s: &str) -> String {
    escape_markup(s, false)
}

fn attr(s: &str) -> String {
    escape_markup(s, true)
}

fn verdict(page: &mut String, summary: &RunSummary, title: &str) {
    let verdict = summary.verdict.as_str();
    // A pass whose availability nobody judged does not get the green of an earned one.
    let unjudged = summary.verdict == Verdict::Passed
        && summary
            .checks
            .iter()
            .any(|c| c.kind == CheckKind::Probe && c.status == CheckStatus::NotJudged);
    let _ = write!(
        page,
        "<h1>envbuild upgrade test</h1>\n<div class=\"verdict {verdict}{}\">\
         <div class=\"word\">{}</div><div class=\"what\">{}</div>\
         <div class=\"headline\">{}</div></div>\n",
        if unjudged { " unjudged" } else { "" },
        verdict.to_uppercase(),
        text(title),
        text(&summary.headline)
    );
    let vars: Vec<String> = summary
        .vars
        .iter()
        .map(|(k, v)| format!("<code>{}={}</code>", text(k), text(v)))
        .collect();
    let build = summary.ci.get("BUILD_URL").map_or(String::new(), |url| {
        format!(" · <a href=\"{}\">CI build</a>", attr(url))
    });
    let _ = writeln!(
        page,
        "<p class=\"meta\">started {} · finished {} · {} · envbuild {}{build}</p>",
        text(&summary.started),
        text(&summary.finished),
        seconds(summary.duration_s),
        text(&summary.envbuild_version)
    );
    if !vars.is_empty() {
        let _ = writeln!(page, "<p class=\"meta\">vars: {}</p>", vars.join(" "));
    }
    if !summary.reasons.is_empty() {
        page.push_str("<ul class=\"findings\">\n");
        for reason in &summary.reasons {
            let _ = writeln!(page, "<li>{}</li>", text(reason));
        }
        page.push_str("</ul>\n");
    }
}

/// Links to the machine-readable results and every log of the run folder.
fn files(page: &mut String, logs: &[String]) {
    page.push_str("<p class=\"files\">results:");
    for file in RESULT_FILES {
        let _ = write!(page, " <a href=\"{file}\">{file}</a>");
    }
    page.push_str("</p>\n");
    if !logs.is_empty() {
        page.push_str("<p class=\"files\">logs:");
        for log in logs {
            let name = log.strip_prefix("logs/").unwrap_or(log);
            let _ = write!(page, " <a href=\"{}\">{}</a>", attr(log), text(name));
        }
        page.push_str("</p>\n");
    }
}

/// A number without trailing zeros: 5, 0.5, 12.25.
fn number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn seconds(s: f64) -> String {
    if s >= 120.0 {
        let s = s.round() as u64;
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::budget::Budget;
    use crate::harness::record::{PhaseStatus, Span};
    use crate::harness::summary::fixture::{declared, rejudge, run};

    fn logs() -> Vec<String> {
        vec!["logs/upgrade.log".into(), "logs/validate-after.log".into()]
    }

    #[test]
    fn report_has_verdict_timelines_tables_and_links() {
        let (summary, samples) = run();
        let html = html_report(&summary, &samples, &logs(), None);
        // To look at it: ENVBUILD_REPORT_SAMPLE=/tmp/report.html cargo test report::html
        if let Some(path) = std::env::var_os("ENVBUILD_REPORT_SAMPLE") {
            std::fs::write(&path, &html).unwrap();
            std::fs::write(Path::new(&path).with_file_name(STYLESHEET_FILE), STYLESHEET).unwrap();
        }
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<div class=\"verdict failed\"><div class=\"word\">FAILED</div>"));
        assert!(html.contains(
            "<div class=\"headline\">over the availability budget: downtime 4.0 s measured \
             (keystone), 4 of 40 requests failed</div>"
        ));
        // The verdict and its reasons come before everything else the body shows.
        assert!(html.find("FAILED").unwrap() < html.find("<svg").unwrap());
        assert!(
            html.contains("<li>probe `keystone`: 4 of 20 requests failed (at most 0 allowed)</li>")
        );
        // The run chart and one chart per probe.
        assert_eq!(html.matches("<svg").count(), 1 + summary.probes.len());
        // Wall-clock axis: the probes ran 10:00:25-10:00:45.
        assert!(html.contains(">10:00:30</text>"), "no wall-clock tick");
        assert!(html.contains(">time (UTC)</text>"));
        // Phases are spans with their names, attempts included.
        assert!(html.contains("<title>upgrade attempt 2: 10:00:30 to 10:00:45</title>"));
        assert!(html.contains("<title>upgrade from 10:00:30 to 10:00:45</title>"));
        for phase in &summary.phases {
            assert!(html.contains(&format!("<td>{}</td>", phase.name)));
        }
        // The keystone band: down 33-36 s and 40-41 s.
        assert_eq!(html.matches("<title>down ").count(), 2);
        assert!(html.contains("<title>down 10:00:33 to 10:00:36</title>"));
        // Links to the results and the logs, relative to the run folder.
        assert!(html.contains("<a href=\"logs/upgrade.log\">upgrade.log</a>"));
        assert!(html.contains("<a href=\"junit.xml\">junit.xml</a>"));
        assert!(html.contains("uptime <b>80.00 %</b> (16 of 20 requests ok)"));
        assert!(html.contains("33–36, 40–41"));
        assert!(html.contains("at most 0 failed requests"));
        assert!(html.contains("1 of 2 stages came from the store"));
        assert!(html.contains("<code>validation=tempest rally</code>"));
        // Nothing is fetched but the stylesheet beside it, nothing runs, nothing is styled
        // inline (Jenkins' CSP refuses both).
        assert!(html.contains("<link rel=\"stylesheet\" href=\"report.css\">"));
        for forbidden in [
            "http:", "https:", "//", "<script", "src=", "url(", "@import", "<style", "style=",
        ] {
            assert!(!html.contains(forbidden), "the page contains {forbidden}");
        }
        // Escaped: the failed phase's error holds < > & and quotes.
        assert!(html.contains("test_list_users &lt;unexpected 500 &amp; &quot;retry&quot;&gt;"));
        assert!(!html.contains("<unexpected"));
    }

    #[test]
    fn a_pass_without_budget_is_not_green_and_says_so() {
        let (mut summary, samples) = run();
        summary.phases[3].status = PhaseStatus::Passed;
        summary.phases[3].error = None;
        summary.phases[4].status = PhaseStatus::Passed;
        summary.phases[4].spans = vec![Span {
            start_ms: 48_000,
            end_ms: 49_000,
        }];
        summary.smoke.after = summary.smoke.before;
        summary.rally.after = summary.rally.before.clone();
        summary.resources.pop();
        rejudge(&mut summary, &declared(Budget::default()), Some(2));
        assert_eq!(summary.verdict, Verdict::Passed);
        let html = html_report(&summary, &samples, &[], None);
        assert!(html.contains("<div class=\"verdict passed unjudged\">"));
        assert!(
            html.contains("no availability budget: downtime 4.0 s measured (keystone), not judged")
        );
        assert!(html.contains("none: not judged"));
        assert!(html.contains("<span class=\"badge not_judged\">not judged</span>"));
    }

    #[test]
    fn a_probe_without_samples_still_gets_its_chart() {
        let (mut summary, samples) = run();
        summary
            .probes
            .push(crate::harness::stats::summarize("swift", &samples));
        let html = html_report(&summary, &samples, &[], None);
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains(">no sample</text>"));
    }

    #[test]
    fn the_stylesheet_styles_every_verdict() {
        for verdict in ["passed", "failed", "incomplete", "aborted"] {
            assert!(
                STYLESHEET.contains(&format!(".{verdict}.verdict {{")),
                "{verdict}"
            );
        }
        assert_eq!(number(2.50), "2.5");
        assert_eq!(number(40.0), "40");
        assert_eq!(seconds(65.0), "65.0 s");
        assert_eq!(seconds(185.0), "3m 05s");
    }
}
