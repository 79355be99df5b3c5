//! The history page (`envbuild report --history ENV`): the recorded runs of one environment side
//! by side: verdicts, uptime and down time per probe per run, phase durations, which stages were
//! cache hits.
//!
//! One file and nothing else: no stylesheet, no script, no inline style (Jenkins' default
//! Content-Security-Policy refuses inline styles, and the page must survive being mailed or
//! archived alone). Colour and layout come from SVG presentation attributes and HTML table
//! attributes, which no policy governs.

use std::fmt::Write;

use super::compare::union;
use super::{number, seconds, text};
use crate::history::RecordedRun;

/// Colours of the verdicts, as report.css gives them to badges.
fn verdict_colour(verdict: &str) -> &'static str {
    match verdict {
        "passed" => "#2e7d32",
        "failed" => "#c62828",
        "incomplete" => "#e65100",
        _ => "#5b6670",
    }
}

/// Phase colours, by the phase's place among every phase name of the page.
const PALETTE: [&str; 8] = [
    "#1f5fa8", "#6a9fd4", "#2e7d32", "#8bc34a", "#e65100", "#ffb74d", "#6a1b9a", "#ba68c8",
];
const WIDTH: f64 = 1000.0;
const LEFT: f64 = 70.0;
const FONT: &str = "font-family=\"system-ui, sans-serif\" font-size=\"11\" fill=\"#44505c\"";
const TABLE: &str = "<table border=\"1\" cellspacing=\"0\" cellpadding=\"4\">";

/// The page for `env`'s recorded runs, oldest first.
pub fn history_page(env: &str, runs: &[RecordedRun]) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{0}: results history</title>\n</head>\n<body>\n\
         <h1>{0}: results history</h1>\n",
        text(env)
    );
    let (first, last) = match (runs.first(), runs.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => {
            page.push_str("<p>no run recorded</p>\n</body>\n</html>\n");
            return page;
        }
    };
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for run in runs {
        let verdict = run.summary.verdict.as_str();
        match counts.iter_mut().find(|(v, _)| *v == verdict) {
            Some((_, n)) => *n += 1,
            None => counts.push((verdict, 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(v, n)| format!("{n} {v}")).collect();
    let _ = writeln!(
        page,
        "<p>{} runs, from {} (run {}) to {} (run {}): {}</p>",
        runs.len(),
        text(&first.summary.started),
        first.id,
        text(&last.summary.started),
        last.id,
        counts.join(", ")
    );
    verdicts(&mut page, runs);
    runs_table(&mut page, runs);
    probes(&mut page, runs);
    phases(&mut page, runs);
    cache(&mut page, runs);
    page.push_str("</body>\n</html>\n");
    page
}

fn svg_open(page: &mut String, height: f64, label: &str) {
    let _ = writeln!(
        page,
        "<svg viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" \
         height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        text(label)
    );
}

/// One square per run in the colour of its verdict.
fn verdicts(page: &mut String, runs: &[RecordedRun]) {
    page.push_str("<h2>Verdicts</h2>\n");
    let step = ((WIDTH - LEFT) / runs.len() as f64).min(60.0);
    svg_open(page, 66.0, "verdict of each run");
    for (i, run) in runs.iter().enumerate() {
        let x = LEFT + i as f64 * step;
        let verdict = run.summary.verdict.as_str();
        let _ = writeln!(
            page,
            "<rect x=\"{x:.1}\" y=\"4\" width=\"{:.1}\" height=\"24\" fill=\"{}\">\
             <title>run {}: {verdict}, {}</title></rect>",
            bar_width(step),
            verdict_colour(verdict),
            run.id,
            text(&run.summary.started),
        );
        if labelled(i, step) {
            let _ = writeln!(
                page,
                "<text x=\"{:.1}\" y=\"42\" text-anchor=\"middle\" {FONT}>{}</text>",
                x + bar_width(step) / 2.0,
                run.id
            );
        }
    }
    let _ = writeln!(page, "<text x=\"0\" y=\"20\" {FONT}>verdict</text>");
    for (i, verdict) in ["passed", "failed", "incomplete", "aborted"]
        .iter()
        .enumerate()
    {
        let x = WIDTH - 340.0 + i as f64 * 85.0;
        let _ = writeln!(
            page,
            "<rect x=\"{x:.1}\" y=\"52\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"61\" {FONT}>{verdict}</text>",
            verdict_colour(verdict),
            x + 14.0
        );
    }
    page.push_str("</svg>\n");
}

fn runs_table(page: &mut String, runs: &[RecordedRun]) {
    page.push_str("<h2>Runs</h2>\n");
    let _ = writeln!(
        page,
        "{TABLE}\n<tr><th>run</th><th>flow</th><th>started</th><th>versions</th><th>duration</th>\
         <th>verdict</th><th>worst uptime</th><th>down time</th><th>cache hits</th><th>folder</th></tr>"
    );
    for run in runs {
        let line = run.line();
        let worst = match (&line.worst_probe, line.worst_uptime_pct) {
            (Some(probe), Some(pct)) => format!("{pct:.2} % ({})", text(probe)),
            _ => "—".into(),
        };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td>\
             <td>{worst}</td><td>{}</td><td>{} of {}</td><td><code>{}</code></td></tr>",
            line.id,
            text(&line.flow),
            text(&line.started),
            text(&line.from_version),
            text(&line.to_version),
            seconds(line.duration_s),
            line.verdict.as_str(),
            seconds(line.down_time_s),
            line.cache_hits,
            line.stages,
            text(&line.run_dir)
        );
    }
    page.push_str("</table>\n");
}

/// A bar per run: `value` of each, on an axis from 0 to `max`.
fn bar_chart(
    page: &mut String,
    label: &str,
    bars: &[(i64, Option<f64>)],
    max: f64,
    show: fn(f64) -> String,
) {
    let (height, top, bottom) = (160.0, 26.0, 22.0);
    let plot = height - top - bottom;
    let max = if max > 0.0 { max } else { 1.0 };
    let step = ((WIDTH - LEFT) / bars.len() as f64).min(60.0);
    svg_open(page, height, label);
    let _ = writeln!(
        page,
        "<text x=\"0\" y=\"{:.1}\" {FONT}>{}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" {FONT}>{}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" {FONT}>0</text>\
         <line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{WIDTH}\" y2=\"{:.1}\" stroke=\"#8a939c\"/>",
        top + plot / 2.0,
        text(label),
        LEFT - 4.0,
        top + 4.0,
        show(max),
        LEFT - 4.0,
        top + plot,
        top + plot,
        top + plot
    );
    for (i, (id, value)) in bars.iter().enumerate() {
        let x = LEFT + 2.0 + i as f64 * step;
        let middle = x + bar_width(step) / 2.0;
        if labelled(i, step) {
            let _ = writeln!(
                page,
                "<text x=\"{middle:.1}\" y=\"{:.1}\" text-anchor=\"middle\" {FONT}>{id}</text>",
                height - 6.0
            );
        }
        let Some(value) = value else {
            let _ = writeln!(
                page,
                "<text x=\"{middle:.1}\" y=\"{:.1}\" text-anchor=\"middle\" {FONT}>n/a</text>",
                top + plot - 4.0
            );
            continue;
        };
        let h = (value / max).clamp(0.0, 1.0) * plot;
        let _ = writeln!(
            page,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#1f5fa8\">\
             <title>run {id}: {}</title></rect>",
            top + plot - h,
            bar_width(step),
            show(*value)
        );
        // The figure over its bar, where bars are wide enough to carry it.
        if step >= 40.0 {
            let _ = writeln!(
                page,
                "<text x=\"{middle:.1}\" y=\"{:.1}\" text-anchor=\"middle\" {FONT}>{}</text>",
                top + plot - h - 3.0,
                show(*value)
            );
        }
    }
    page.push_str("</svg>\n");
}

/// The width of a run's bar or square: its `step` less a gap.
fn bar_width(step: f64) -> f64 {
    step - (step * 0.1).min(4.0)
}

/// Whether the run at `i` gets its id under the axis: all of them, unless `step` (the width of
/// a run) is too narrow for that; then one in every few.
fn labelled(i: usize, step: f64) -> bool {
    i.is_multiple_of(((30.0 / step).ceil() as usize).max(1))
}

fn probes(page: &mut String, runs: &[RecordedRun]) {
    page.push_str("<h2>Probes: uptime and down time per run</h2>\n");
    let names = runs.iter().fold(Vec::new(), |names: Vec<String>, run| {
        union(names.iter(), run.summary.probes.iter().map(|p| &p.probe))
    });
    if names.is_empty() {
        page.push_str("<p>no probe ran</p>\n");
    }
    for name in names {
        let figures: Vec<(i64, Option<(f64, f64)>)> = runs
            .iter()
            .map(|run| {
                let probe = run
                    .summary
                    .probes
                    .iter()
                    .find(|p| p.probe == name && p.total > 0);
                (
                    run.id,
                    probe.map(|p| (p.uptime_pct, p.down_time_ms as f64 / 1000.0)),
                )
            })
            .collect();
        let _ = writeln!(page, "<h3>{}</h3>", text(&name));
        let uptime: Vec<(i64, Option<f64>)> = figures
            .iter()
            .map(|(id, f)| (*id, f.map(|f| f.0)))
            .collect();
        bar_chart(page, "uptime", &uptime, 100.0, |v| format!("{v:.2} %"));
        let down: Vec<(i64, Option<f64>)> = figures
            .iter()
            .map(|(id, f)| (*id, f.map(|f| f.1)))
            .collect();
        let max = down.iter().filter_map(|(_, v)| *v).fold(0.0, f64::max);
        bar_chart(page, "down time", &down, max, |v| {
            format!("{} s", number(v))
        });
    }
}

fn phases(page: &mut String, runs: &[RecordedRun]) {
    page.push_str("<h2>Phase durations</h2>\n");
    let names = runs.iter().fold(Vec::new(), |names: Vec<String>, run| {
        union(names.iter(), run.summary.phases.iter().map(|p| &p.name))
    });
    let total = |run: &RecordedRun| run.summary.phases.iter().map(|p| p.duration_s).sum::<f64>();
    let max = runs.iter().map(total).fold(0.0, f64::max).max(0.001);
    let row = 22.0;
    let height = 30.0 + row * runs.len() as f64;
    svg_open(page, height, "phase durations of each run");
    let mut x = LEFT;
    for (i, name) in names.iter().enumerate() {
        let _ = writeln!(
            page,
            "<rect x=\"{x:.1}\" y=\"4\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"13\" {FONT}>{}</text>",
            PALETTE[i % PALETTE.len()],
            x + 14.0,
            text(name)
        );
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
    for (r, run) in runs.iter().enumerate() {
        let y = 24.0 + r as f64 * row;
        let _ = writeln!(
            page,
            "<text x=\"0\" y=\"{:.1}\" {FONT}>run {}</text>",
            y + 13.0,
            run.id
        );
        let mut x = LEFT;
        for phase in &run.summary.phases {
            let w = phase.duration_s / max * (WIDTH - LEFT - 80.0);
            let colour = names.iter().position(|n| *n == phase.name).unwrap_or(0);
            let _ = writeln!(
                page,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>run {}: {} {} ({})</title></rect>",
                row - 6.0,
                PALETTE[colour % PALETTE.len()],
                run.id,
                text(&phase.name),
                seconds(phase.duration_s),
                phase.status.as_str()
            );
            x += w;
        }
        let _ = writeln!(
            page,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT}>{}</text>",
            x + 4.0,
            y + 13.0,
            seconds(total(run))
        );
    }
    page.push_str("</svg>\n");
    let _ = write!(page, "{TABLE}\n<tr><th>run</th>");
    for name in &names {
        let _ = write!(page, "<th>{}</th>", text(name));
    }
    page.push_str("</tr>\n");
    for run in runs {
        let _ = write!(page, "<tr><td>{}</td>", run.id);
        for name in &names {
            let cell = run
                .summary
                .phases
                .iter()
                .find(|p| p.name == *name)
                .map_or("—".to_string(), |p| {
                    format!("{} {}", seconds(p.duration_s), p.status.as_str())
                });
            let _ = write!(page, "<td>{cell}</td>");
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
}

fn cache(page: &mut String, runs: &[RecordedRun]) {
    page.push_str("<h2>Stages: cache hits</h2>\n");
    let stages = runs.iter().fold(Vec::new(), |names: Vec<String>, run| {
        let mine: Vec<String> = run
            .summary
            .cache
            .iter()
            .map(|u| format!("{}/{}", u.machine, u.stage))
            .collect();
        union(names.iter(), mine.iter())
    });
    let _ = write!(page, "{TABLE}\n<tr><th>run</th>");
    for stage in &stages {
        let _ = write!(page, "<th>{}</th>", text(stage));
    }
    page.push_str("</tr>\n");
    for run in runs {
        let _ = write!(page, "<tr><td>{}</td>", run.id);
        for stage in &stages {
            let used = run
                .summary
                .cache
                .iter()
                .find(|u| format!("{}/{}", u.machine, u.stage) == *stage);
            let cell = match used {
                Some(u) if u.came_from_store() => format!("hit ({})", text(&u.action)),
                Some(_) => "built".into(),
                None => "—".into(),
            };
            let _ = write!(page, "<td>{cell}</td>");
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::summary::fixture::run;
    use crate::harness::verdict::Verdict;

    fn recorded() -> Vec<RecordedRun> {
        let (summary, _) = run();
        let mut second = summary.clone();
        second.verdict = Verdict::Aborted;
        second.probes.truncate(1);
        second.probes[0].down_time_ms = 1500;
        second.cache[1].action = "restored".into();
        vec![
            RecordedRun {
                id: 1,
                run_dir: "/runs/one".into(),
                summary,
            },
            RecordedRun {
                id: 2,
                run_dir: "/runs/two".into(),
                summary: second,
            },
        ]
    }

    #[test]
    fn the_page_compares_verdicts_probes_phases_and_cache_hits() {
        let html = history_page("aio-lite", &recorded());
        // To look at it: ENVBUILD_HISTORY_SAMPLE=/tmp/history.html cargo test report::html::history
        if let Some(path) = std::env::var_os("ENVBUILD_HISTORY_SAMPLE") {
            std::fs::write(path, &html).unwrap();
        }
        assert!(html.contains("2 runs, from 2025-03-01T10:00:00Z (run 1)"));
        assert!(html.contains("1 failed, 1 aborted"), "{html}");
        assert!(html.contains("<title>run 2: aborted, 2025-03-01T10:00:00Z</title>"));
        // keystone ran in both runs, token only in the first.
        assert!(html.contains("<title>run 1: 80.00 %</title>"));
        assert!(html.contains("<title>run 2: 1.5 s</title>"));
        assert!(html.contains(">n/a</text>"), "token has no figure in run 2");
        assert!(html.contains("<title>run 1: upgrade 20.2 s (passed)</title>"));
        assert!(html.contains("<td>built</td>") && html.contains("<td>hit (restored)</td>"));
        // One file: nothing fetched, run or styled inline.
        for forbidden in [
            "<link", "<script", "src=", "url(", "@import", "<style", "style=",
        ] {
            assert!(!html.contains(forbidden), "the page contains {forbidden}");
        }
    }

    #[test]
    fn many_runs_get_narrow_bars_and_one_id_in_a_few() {
        let one = recorded().remove(0);
        let runs: Vec<RecordedRun> = (1..=200)
            .map(|id| RecordedRun { id, ..one.clone() })
            .collect();
        let html = history_page("aio-lite", &runs);
        assert!(!html.contains("width=\"-"), "no negative width");
        assert!(html.contains(">200 runs, from ") || html.contains("<p>200 runs, from "));
        // 200 runs in 930 px: 4.65 px each, an id every 7th run.
        assert!(html.contains(">1</text>") && html.contains(">8</text>"));
        assert!(!html.contains(">2</text>"), "ids every run would overlap");
    }

    #[test]
    fn a_page_without_runs_says_so() {
        assert!(history_page("elk", &[]).contains("<p>no run recorded</p>"));
    }
}
