//! The tables of report.html: phases (with their logs), probe figures against their budgets,
//! smoke tests, persistent resources, Rally figures side by side, the build cache.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::harness::budget::seconds as ms_seconds;
use crate::harness::record::TestCounts;
use crate::harness::stats::ProbeSummary;
use crate::harness::summary::RunSummary;
use crate::harness::verdict::{CheckKind, CheckStatus};

use super::{attr, number, seconds, text};

pub fn badge(status: &str) -> String {
    format!(
        "<span class=\"badge {}\">{}</span>",
        attr(status),
        text(&status.replace('_', " "))
    )
}

/// The policy's status of check `kind`/`name`, as a badge.
fn check_badge(summary: &RunSummary, kind: CheckKind, name: &str) -> String {
    let status = summary
        .checks
        .iter()
        .find(|c| c.kind == kind && c.name == name)
        .map_or(CheckStatus::Skipped, |c| c.status);
    badge(status.as_str())
}

pub fn phases_table(page: &mut String, summary: &RunSummary, logs: &[String]) {
    page.push_str(
        "<h2>Phases</h2>\n<table>\n<tr><th class=\"n\">#</th><th>phase</th><th>status</th>\
         <th class=\"n\">duration</th><th class=\"n\">attempts</th><th>log</th><th>error</th>\
         </tr>\n",
    );
    for (n, phase) in summary.phases.iter().enumerate() {
        let log = format!("logs/{}.log", phase.name);
        let link = if logs.contains(&log) {
            format!("<a href=\"{}\">{}.log</a>", attr(&log), text(&phase.name))
        } else {
            String::new()
        };
        let _ = writeln!(
            page,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{link}</td><td class=\"err\">{}</td></tr>",
            n + 1,
            text(&phase.name),
            badge(phase.status.as_str()),
            seconds(phase.duration_s),
            phase.attempts,
            text(phase.error.as_deref().unwrap_or(""))
        );
    }
    page.push_str("</table>\n");
}

/// The one-line figures above a probe's chart.
pub fn probe_line(probe: &ProbeSummary) -> String {
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    format!(
        "{} · uptime <b>{:.2} %</b> ({} of {} requests ok) · availability {:.2} % · down {} in {} \
         outage{} · latency p50 / p95 / p99: {} / {} / {} ms",
        text(&probe.rate_line()),
        probe.uptime_pct,
        probe.successful,
        probe.total,
        probe.availability_pct,
        ms_seconds(probe.down_time_ms),
        probe.outages.len(),
        if probe.outages.len() == 1 { "" } else { "s" },
        ms(probe.latency_p50_ms),
        ms(probe.latency_p95_ms),
        ms(probe.latency_p99_ms),
    )
}

pub fn probes_table(page: &mut String, summary: &RunSummary) {
    if summary.probes.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Probe figures</h2>\n<table>\n<tr><th>probe</th><th>verdict</th><th>budget</th>\
         <th class=\"n\">requests</th><th class=\"n\">failed</th><th class=\"n\">uptime</th>\
         <th class=\"n\">availability</th><th class=\"n\">down time</th>\
         <th class=\"n\">longest outage</th><th>outages (s)</th><th class=\"n\">p50</th>\
         <th class=\"n\">p95</th><th class=\"n\">p99</th></tr>\n",
    );
    for p in &summary.probes {
        let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1} ms"));
        let outages: Vec<String> = p
            .outages
            .iter()
            .map(|o| {
                format!(
                    "{}–{}",
                    number(o.start_ms as f64 / 1000.0),
                    number(o.end_ms as f64 / 1000.0)
                )
            })
            .collect();
        let budget = summary
            .checks
            .iter()
            .find(|c| c.kind == CheckKind::Probe && c.name == p.probe)
            .and_then(|c| c.budget)
            .filter(|b| !b.is_empty())
            .map_or(
                "<span class=\"muted\">none: not judged</span>".to_string(),
                |b| text(&b.describe()),
            );
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{budget}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{:.2} %</td><td class=\"n\">{:.2} %</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            text(&p.probe),
            check_badge(summary, CheckKind::Probe, &p.probe),
            p.total,
            p.failed,
            p.uptime_pct,
            p.availability_pct,
            ms_seconds(p.down_time_ms),
            ms_seconds(p.longest_outage_ms),
            if outages.is_empty() {
                "<span class=\"muted\">none</span>".to_string()
            } else {
                outages.join(", ")
            },
            ms(p.latency_p50_ms),
            ms(p.latency_p95_ms),
            ms(p.latency_p99_ms),
        );
    }
    page.push_str(
        "</table>\n<p class=\"meta\">Outage times are seconds since the start of the run.</p>\n",
    );
    scenario_phases_table(page, summary);
}

/// Program probes' sub-phases (a server's build time, ...) over their successful iterations.
fn scenario_phases_table(page: &mut String, summary: &RunSummary) {
    if summary.probes.iter().all(|p| p.phases.is_empty()) {
        return;
    }
    page.push_str(
        "<h2>Scenario phases</h2>\n<table>\n<tr><th>probe</th><th>phase</th>\
         <th class=\"n\">iterations</th><th class=\"n\">p50</th><th class=\"n\">p95</th>\
         <th class=\"n\">max</th></tr>\n",
    );
    for p in &summary.probes {
        for (name, f) in &p.phases {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2} s</td>\
                 <td class=\"n\">{:.2} s</td><td class=\"n\">{:.2} s</td></tr>",
                text(&p.probe),
                text(name),
                f.samples,
                f.p50_s,
                f.p95_s,
                f.max_s
            );
        }
    }
    page.push_str("</table>\n");
}

pub fn smoke_table(page: &mut String, summary: &RunSummary) {
    let ran: Vec<(&str, TestCounts)> = [
        ("before", summary.smoke.before),
        ("after", summary.smoke.after),
    ]
    .into_iter()
    .filter_map(|(when, counts)| Some((when, counts?)))
    .collect();
    if ran.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Smoke tests</h2>\n<table>\n<tr><th>when</th><th>result</th><th class=\"n\">passed\
         </th><th class=\"n\">failed</th><th class=\"n\">skipped</th></tr>\n",
    );
    for (when, c) in ran {
        let _ = writeln!(
            page,
            "<tr><td>{when} the upgrade</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            check_badge(summary, CheckKind::Smoke, when),
            c.passed,
            c.failed,
            c.skipped
        );
    }
    page.push_str("</table>\n");
}

pub fn resources_table(page: &mut String, summary: &RunSummary) {
    if summary.resources.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Persistent resources</h2>\n<table>\n<tr><th>phase</th><th>resource</th>\
         <th>result</th><th>detail</th></tr>\n",
    );
    for check in &summary.resources {
        let name = format!("{}/{}", check.phase, check.resource);
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&check.phase),
            text(&check.resource),
            check_badge(summary, CheckKind::Resource, &name),
            text(&check.detail)
        );
    }
    page.push_str("</table>\n");
}

/// Rally figures side by side: nested objects are flattened to `a · b` paths so that each row is
/// one figure before and after.
pub fn rally_table(page: &mut String, summary: &RunSummary) {
    let (before, after) = (&summary.rally.before, &summary.rally.after);
    if before.is_none() && after.is_none() {
        return;
    }
    let mut rows: BTreeMap<String, [String; 2]> = BTreeMap::new();
    for (column, figures) in [before, after].into_iter().enumerate() {
        if let Some(figures) = figures {
            let mut leaves = Vec::new();
            flatten("", figures, &mut leaves);
            for (path, value) in leaves {
                rows.entry(path).or_default()[column] = value;
            }
        }
    }
    let _ = writeln!(
        page,
        "<h2>Rally</h2>\n<p class=\"meta\">before {} · after {}</p>\n<table>\n<tr><th>figure\
         </th><th class=\"n\">before</th><th class=\"n\">after</th></tr>",
        check_badge(summary, CheckKind::Rally, "before"),
        check_badge(summary, CheckKind::Rally, "after")
    );
    for (path, [before, after]) in rows {
        let _ = writeln!(
            page,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            text(&path),
            text(&before),
            text(&after)
        );
    }
    page.push_str("</table>\n");
}

fn flatten(path: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path} · {key}")
                };
                flatten(&path, value, out);
            }
        }
        serde_json::Value::String(s) => out.push((path.to_string(), s.clone())),
        other => out.push((path.to_string(), other.to_string())),
    }
}

pub fn cache_table(page: &mut String, summary: &RunSummary) {
    if summary.cache.is_empty() {
        return;
    }
    let hits = summary.cache.iter().filter(|s| s.came_from_store()).count();
    let _ = writeln!(
        page,
        "<h2>Build cache</h2>\n<p class=\"meta\">{hits} of {} stages came from the store.</p>\n\
         <table>\n<tr><th>machine</th><th>stage</th><th>action</th><th>key</th></tr>",
        summary.cache.len()
    );
    for stage in &summary.cache {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code title=\"{}\">{}</code></td></tr>",
            text(&stage.machine),
            text(&stage.stage),
            text(&stage.action),
            attr(&stage.key),
            text(&stage.key[..stage.key.len().min(16)])
        );
    }
    page.push_str("</table>\n");
}
