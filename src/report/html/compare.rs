//! The "vs previous" section of report.html: the run beside the previous run of the same
//! environment and flow in the results history (src/history), figure by figure.

use std::fmt::Write;

use super::{seconds, text};
use crate::harness::summary::RunSummary;
use crate::history::RecordedRun;

/// One compared figure: its value in this run and in the previous one.
struct Row {
    what: String,
    this: Option<f64>,
    previous: Option<f64>,
    show: fn(f64) -> String,
    /// The change as it reads (`+1.5 s`), from `this - previous`.
    change: fn(f64) -> String,
}

pub(super) fn vs_previous(page: &mut String, summary: &RunSummary, previous: Option<&RecordedRun>) {
    page.push_str("<h2>vs previous</h2>\n");
    let Some(previous) = previous else {
        let _ = writeln!(
            page,
            "<p class=\"muted\">no earlier run of {} {} in the results history</p>",
            text(&summary.env),
            text(&summary.flow)
        );
        return;
    };
    let before = &previous.summary;
    let _ = write!(
        page,
        "<table>\n<tr><th></th><th class=\"n\">this run</th><th class=\"n\">run {} ({})</th>\
         <th class=\"n\">change</th></tr>\n<tr><td>verdict</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
        previous.id,
        text(&before.started),
        badge(summary.verdict.as_str()),
        badge(before.verdict.as_str()),
        if summary.verdict == before.verdict {
            "same"
        } else {
            "changed"
        }
    );
    for row in rows(summary, before) {
        let cell = |v: Option<f64>| v.map_or("—".to_string(), row.show);
        let change = match (row.this, row.previous) {
            (Some(this), Some(previous)) => (row.change)(this - previous),
            _ => "—".into(),
        };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{change}</td></tr>",
            text(&row.what),
            cell(row.this),
            cell(row.previous)
        );
    }
    page.push_str("</table>\n");
}

fn badge(verdict: &str) -> String {
    format!("<span class=\"badge {verdict}\">{verdict}</span>")
}

fn rows(this: &RunSummary, previous: &RunSummary) -> Vec<Row> {
    let duration = |what: String, this: Option<f64>, previous: Option<f64>| Row {
        what,
        this,
        previous,
        show: seconds,
        change: |d| format!("{d:+.1} s"),
    };
    let mut rows = vec![duration(
        "duration".into(),
        Some(this.duration_s),
        Some(previous.duration_s),
    )];
    for name in union(
        this.phases.iter().map(|p| &p.name),
        previous.phases.iter().map(|p| &p.name),
    ) {
        let of = |s: &RunSummary| {
            s.phases
                .iter()
                .find(|p| p.name == name && !p.spans.is_empty())
                .map(|p| p.duration_s)
        };
        rows.push(duration(format!("phase {name}"), of(this), of(previous)));
    }
    for name in union(
        this.probes.iter().map(|p| &p.probe),
        previous.probes.iter().map(|p| &p.probe),
    ) {
        let of = |s: &RunSummary| {
            s.probes
                .iter()
                .find(|p| p.probe == name && p.total > 0)
                .cloned()
        };
        let (now, then) = (of(this), of(previous));
        rows.push(Row {
            what: format!("probe {name} uptime"),
            this: now.as_ref().map(|p| p.uptime_pct),
            previous: then.as_ref().map(|p| p.uptime_pct),
            show: |v| format!("{v:.2} %"),
            change: |d| format!("{d:+.2} pp"),
        });
        rows.push(duration(
            format!("probe {name} down time"),
            now.map(|p| p.down_time_ms as f64 / 1000.0),
            then.map(|p| p.down_time_ms as f64 / 1000.0),
        ));
    }
    let hits = |s: &RunSummary| s.cache.iter().filter(|u| u.came_from_store()).count() as f64;
    rows.push(Row {
        what: format!("stages from the store (of {})", this.cache.len()),
        this: Some(hits(this)),
        previous: Some(hits(previous)),
        show: |v| format!("{v:.0}"),
        change: |d| format!("{d:+.0}"),
    });
    rows
}

/// The names of `a`, then those only in `b`, each once.
pub(super) fn union<'a>(
    a: impl Iterator<Item = &'a String>,
    b: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in a.chain(b) {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::summary::fixture::run;

    #[test]
    fn the_run_is_set_beside_the_previous_one() {
        let (summary, _) = run();
        let mut before = summary.clone();
        before.duration_s = 60.0;
        before.probes[0].uptime_pct = 100.0;
        before.probes[0].down_time_ms = 0;
        before.cache[1].action = "restored".into();
        let previous = RecordedRun {
            id: 4,
            run_dir: "/runs/4".into(),
            summary: before,
        };
        let mut page = String::new();
        vs_previous(&mut page, &summary, Some(&previous));
        assert!(page.contains("<th class=\"n\">run 4 (2025-03-01T10:00:00Z)</th>"));
        assert!(page.contains("<td>duration</td><td class=\"n\">65.0 s</td><td class=\"n\">60.0 s</td><td class=\"n\">+5.0 s</td>"));
        assert!(page.contains("<td>probe keystone uptime</td><td class=\"n\">80.00 %</td><td class=\"n\">100.00 %</td><td class=\"n\">-20.00 pp</td>"));
        assert!(page.contains("<td>probe keystone down time</td><td class=\"n\">4.0 s</td><td class=\"n\">0.0 s</td><td class=\"n\">+4.0 s</td>"));
        assert!(page.contains("<td>stages from the store (of 2)</td><td class=\"n\">1</td><td class=\"n\">2</td><td class=\"n\">-1</td>"));
        // The skipped phase has no duration to compare.
        assert!(page.contains("<td>phase resources-cleanup</td><td class=\"n\">—</td><td class=\"n\">—</td><td class=\"n\">—</td>"));

        let mut first = String::new();
        vs_previous(&mut first, &summary, None);
        assert!(first.contains("no earlier run of aio-lite upgrade in the results history"));
    }
}
