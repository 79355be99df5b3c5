//! report.html: one self-contained page for people (inline CSS and SVG, no script, no external
//! URL), so it can be archived by Jenkins and opened from a mail or an air-gapped lab alike.
//!
//! The verdict comes first with what made it, then a timeline per probe (availability band,
//! latency, phase boundaries), then the tables.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::harness::stats::{ProbeSummary, Sample};
use crate::report::escape_markup;
use crate::report::json::{PhaseStatus, RunSummary, TestCounts};

const UP: &str = "#2e7d32";
const DOWN: &str = "#c62828";

const STYLE: &str = "
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1d2329;
  max-width: 1160px; margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 15px; font-weight: 600; margin: 0 0 6px; color: #44505c; }
h2 { font-size: 19px; margin: 30px 0 10px; border-bottom: 1px solid #d9dee3; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 20px 0 4px; }
.verdict { color: #fff; border-radius: 8px; padding: 18px 24px; margin: 6px 0 12px; }
.verdict .word { font-size: 44px; font-weight: 800; letter-spacing: 2px; }
.verdict .what { font-size: 16px; opacity: .95; margin-top: 2px; }
.passed.verdict { background: #1b5e20; } .failed.verdict { background: #b71c1c; }
.incomplete.verdict { background: #e65100; }
.findings { margin: 0 0 8px; padding-left: 20px; } .findings li { margin: 2px 0; }
.meta { color: #5b6670; margin: 0 0 4px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 4px; }
th, td { text-align: left; padding: 5px 9px; border-bottom: 1px solid #e6e9ec; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; font-size: 13px; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; color: #fff; }
.badge.passed { background: #2e7d32; } .badge.failed { background: #c62828; }
.badge.skipped { background: #8a939c; }
.err { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; white-space: pre-wrap;
  color: #8e1b1b; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
.probe-line { color: #44505c; margin: 0 0 4px; }
.legend { color: #5b6670; font-size: 12px; margin: 2px 0 0; }
.legend i { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px;
  vertical-align: -1px; }
svg { display: block; width: 100%; height: auto; background: #fbfcfd; border: 1px solid #e6e9ec; border-radius: 4px; }
svg text { font: 11px system-ui, sans-serif; fill: #44505c; }
svg .mark text { fill: #1d2329; font-weight: 600; }
.muted { color: #8a939c; }
";

pub fn html_report(
    summary: &RunSummary,
    samples: &[Sample],
    phase_marks: &[(String, u64)],
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
         <title>{} — {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        text(summary.verdict.as_str()),
        text(&title)
    );
    verdict(&mut page, summary, &title);
    timelines(&mut page, summary, samples, phase_marks);
    phases_table(&mut page, summary);
    probes_table(&mut page, &summary.probes);
    smoke_table(&mut page, summary);
    resources_table(&mut page, summary);
    rally_table(&mut page, summary);
    cache_table(&mut page, summary);
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
    let _ = write!(
        page,
        "<h1>envbuild upgrade test</h1>\n<div class=\"verdict {verdict}\">\
         <div class=\"word\">{}</div><div class=\"what\">{}</div></div>\n",
        verdict.to_uppercase(),
        text(title)
    );
    let _ = writeln!(
        page,
        "<p class=\"meta\">started {} · finished {} · {} · envbuild {}</p>",
        text(&summary.started),
        text(&summary.finished),
        seconds(summary.duration_s),
        text(&summary.envbuild_version)
    );
    let findings = findings(summary);
    if !findings.is_empty() {
        page.push_str("<ul class=\"findings\">\n");
        for finding in findings {
            let _ = writeln!(page, "<li>{finding}</li>");
        }
        page.push_str("</ul>\n");
    }
}

/// What a reader needs to know about the verdict without reading on, as escaped HTML.
fn findings(summary: &RunSummary) -> Vec<String> {
    let mut findings = Vec::new();
    if !summary.complete {
        findings.push("<b>Incomplete:</b> not every phase ran; run the flow again.".to_string());
    }
    for phase in summary
        .phases
        .iter()
        .filter(|p| p.status == PhaseStatus::Failed)
    {
        findings.push(format!(
            "Phase <b>{}</b> failed after {} attempt{}: <span class=\"err\">{}</span>",
            text(&phase.name),
            phase.attempts,
            if phase.attempts == 1 { "" } else { "s" },
            text(phase.error.as_deref().unwrap_or("(no error recorded)"))
        ));
    }
    for probe in summary
        .probes
        .iter()
        .filter(|p| p.failed > 0 || p.total == 0)
    {
        findings.push(if probe.total == 0 {
            format!("Probe <b>{}</b> has no sample.", text(&probe.probe))
        } else {
            format!(
                "Probe <b>{}</b>: {} of {} requests failed, down {} in {} outage{} (longest {}).",
                text(&probe.probe),
                probe.failed,
                probe.total,
                seconds(probe.down_time_ms as f64 / 1000.0),
                probe.outages.len(),
                if probe.outages.len() == 1 { "" } else { "s" },
                seconds(probe.longest_outage_ms as f64 / 1000.0)
            )
        });
    }
    for (when, counts) in [
        ("before", summary.smoke.before),
        ("after", summary.smoke.after),
    ] {
        if let Some(c) = counts.filter(|c| c.failed > 0) {
            findings.push(format!(
                "Smoke tests {when} the upgrade: {} failed, {} passed.",
                c.failed, c.passed
            ));
        }
    }
    for check in summary.resources.iter().filter(|c| !c.ok) {
        findings.push(format!(
            "Resource <b>{}</b> ({}): {}",
            text(&check.resource),
            text(&check.phase),
            text(&check.detail)
        ));
    }
    findings
}

// Timeline geometry, in SVG user units (one per CSS pixel at 1200 px wide).
const WIDTH: f64 = 1160.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 14.0;
/// Phase labels take three rows above the band, so that close phases keep readable names.
const LABEL_ROWS: usize = 3;
const BAND_TOP: f64 = 56.0;
const BAND_HEIGHT: f64 = 14.0;
const PLOT_TOP: f64 = 84.0;
const PLOT_HEIGHT: f64 = 150.0;
const HEIGHT: f64 = PLOT_TOP + PLOT_HEIGHT + 34.0;

/// The x range shared by every probe's timeline, so they line up: from the first to the last
/// sample of any probe (phases before and after the probes ran are in the table).
struct TimeAxis {
    start_ms: u64,
    end_ms: u64,
}

impl TimeAxis {
    fn x(&self, t_ms: u64) -> f64 {
        let span = (self.end_ms - self.start_ms).max(1) as f64;
        let t = t_ms.clamp(self.start_ms, self.end_ms) - self.start_ms;
        LEFT + (WIDTH - LEFT - RIGHT) * t as f64 / span
    }
}

fn timelines(
    page: &mut String,
    summary: &RunSummary,
    samples: &[Sample],
    phase_marks: &[(String, u64)],
) {
    if summary.probes.is_empty() {
        return;
    }
    page.push_str("<h2>Probes during the run</h2>\n");
    let axis = TimeAxis {
        start_ms: samples.iter().map(|s| s.t_ms).min().unwrap_or(0),
        end_ms: samples.iter().map(|s| s.t_ms).max().unwrap_or(0),
    };
    for probe in &summary.probes {
        let mut mine: Vec<&Sample> = samples.iter().filter(|s| s.probe == probe.probe).collect();
        mine.sort_by_key(|s| s.t_ms);
        let _ = writeln!(
            page,
            "<h3>{}</h3>\n<p class=\"probe-line\">{}</p>",
            text(&probe.probe),
            probe_line(probe)
        );
        timeline_svg(page, &axis, &mine, phase_marks);
        let _ = writeln!(
            page,
            "<p class=\"legend\"><i style=\"background:{UP}\"></i>up<i style=\"background:{DOWN}\">\
             </i>down<i style=\"background:#1f5fa8;height:2px;vertical-align:3px\"></i>\
             latency of successful requests (ms)<i style=\"background:#555;width:1px\"></i>\
             phase start</p>"
        );
    }
}

fn probe_line(probe: &ProbeSummary) -> String {
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    format!(
        "uptime <b>{:.2} %</b> ({} of {} requests ok) · availability {:.2} % · down {} in {} \
         outage{} · latency p50 / p95 / p99: {} / {} / {} ms",
        probe.uptime_pct,
        probe.successful,
        probe.total,
        probe.availability_pct,
        seconds(probe.down_time_ms as f64 / 1000.0),
        probe.outages.len(),
        if probe.outages.len() == 1 { "" } else { "s" },
        ms(probe.latency_p50_ms),
        ms(probe.latency_p95_ms),
        ms(probe.latency_p99_ms),
    )
}

fn timeline_svg(page: &mut String, axis: &TimeAxis, mine: &[&Sample], marks: &[(String, u64)]) {
    let _ = writeln!(page, "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\">");
    let plot_bottom = PLOT_TOP + PLOT_HEIGHT;
    let right = WIDTH - RIGHT;
    if mine.is_empty() {
        let _ = writeln!(
            page,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no sample</text></svg>",
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return;
    }

    // Availability band: a sample's state holds until the next sample, as in the outage
    // definition. Red runs go over a green band and are at least 3 px wide: a one-second outage
    // in an hour is what the reader is looking for.
    let last = mine[mine.len() - 1].t_ms;
    // The last state lasts one sampling interval, as far as the axis goes.
    let band_end = axis.x(last + mine.len().checked_sub(2).map_or(0, |j| last - mine[j].t_ms));
    let band_start = axis.x(mine[0].t_ms);
    let _ = writeln!(
        page,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">status</text>\
         <rect x=\"{band_start:.1}\" y=\"{BAND_TOP}\" width=\"{:.1}\" height=\"{BAND_HEIGHT}\" \
         fill=\"{UP}\"/>",
        LEFT - 6.0,
        BAND_TOP + 11.0,
        (band_end - band_start).max(1.5)
    );
    let mut i = 0;
    while i < mine.len() {
        if mine[i].ok {
            i += 1;
            continue;
        }
        let down_from = axis.x(mine[i].t_ms);
        while i < mine.len() && !mine[i].ok {
            i += 1;
        }
        let down_to = mine.get(i).map_or(band_end, |next| axis.x(next.t_ms));
        let _ = writeln!(
            page,
            "<rect x=\"{down_from:.1}\" y=\"{BAND_TOP}\" width=\"{:.1}\" \
             height=\"{BAND_HEIGHT}\" fill=\"{DOWN}\"/>",
            (down_to - down_from).max(3.0)
        );
    }

    // Latency axis.
    let max_latency = mine
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.latency_ms)
        .fold(0.0, f64::max);
    let (y_max, y_step) = nice_scale(max_latency.max(1.0), 4);
    let y = |ms: f64| plot_bottom - PLOT_HEIGHT * ms.min(y_max) / y_max;
    let mut tick = 0.0;
    while tick <= y_max + y_step / 2.0 {
        let _ = writeln!(
            page,
            "<line x1=\"{LEFT}\" x2=\"{right}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#e3e7eb\"/>\
             <text x=\"{1}\" y=\"{2:.1}\" text-anchor=\"end\">{3}</text>",
            y(tick),
            LEFT - 6.0,
            y(tick) + 4.0,
            number(tick)
        );
        tick += y_step;
    }
    let _ = writeln!(
        page,
        "<text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">latency \
         (ms)</text>",
        PLOT_TOP + PLOT_HEIGHT / 2.0
    );

    // Time axis, in seconds since the start of the run.
    let span_s = (axis.end_ms - axis.start_ms) as f64 / 1000.0;
    let (_, x_step) = nice_scale(span_s.max(0.001), 10);
    let first = (axis.start_ms as f64 / 1000.0 / x_step).ceil() * x_step;
    let mut s = first;
    while s <= axis.end_ms as f64 / 1000.0 + 1e-9 {
        let x = axis.x((s * 1000.0).round() as u64);
        let _ = writeln!(
            page,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{plot_bottom}\" y2=\"{}\" stroke=\"#8a939c\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            plot_bottom + 5.0,
            plot_bottom + 18.0,
            number(s)
        );
        s += x_step;
    }
    let _ = writeln!(
        page,
        "<line x1=\"{LEFT}\" x2=\"{right}\" y1=\"{plot_bottom}\" y2=\"{plot_bottom}\" \
         stroke=\"#8a939c\"/><text x=\"{right}\" y=\"{}\" text-anchor=\"end\">seconds since \
         the start of the run</text>",
        plot_bottom + 31.0
    );

    // Latency of successful requests; a failure breaks the line, so an outage is a gap.
    for segment in mine.split(|s| !s.ok).filter(|seg| !seg.is_empty()) {
        let points: Vec<String> = segment
            .iter()
            .map(|s| format!("{:.1},{:.1}", axis.x(s.t_ms), y(s.latency_ms)))
            .collect();
        if points.len() == 1 {
            let _ = writeln!(
                page,
                "<circle cx=\"{}\" r=\"2\" fill=\"#1f5fa8\"/>",
                points[0].replace(',', "\" cy=\"")
            );
        } else {
            let _ = writeln!(
                page,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.5\" \
                 stroke-linejoin=\"round\"/>",
                points.join(" ")
            );
        }
    }

    // Phase boundaries inside the probes' time, labels on two rows so neighbours do not collide.
    let mut row_ends = [f64::MIN; LABEL_ROWS];
    for (name, t_ms) in marks
        .iter()
        .filter(|(_, t)| (axis.start_ms..=axis.end_ms).contains(t))
    {
        let x = axis.x(*t_ms);
        let label_width = 7.0 * name.chars().count() as f64 + 6.0;
        // The first row that is free here, else the one that frees first.
        let row = (0..LABEL_ROWS)
            .find(|&r| x >= row_ends[r])
            .unwrap_or_else(|| {
                (0..LABEL_ROWS)
                    .min_by(|&a, &b| row_ends[a].total_cmp(&row_ends[b]))
                    .unwrap_or(0)
            });
        let anchor_end = x + label_width > WIDTH;
        row_ends[row] = if anchor_end {
            WIDTH
        } else {
            x + label_width + 6.0
        };
        let label_y = 14.0 + 14.0 * row as f64;
        let _ = writeln!(
            page,
            "<g class=\"mark\"><title>{} at {} s</title><line x1=\"{x:.1}\" x2=\"{x:.1}\" \
             y1=\"{}\" y2=\"{plot_bottom}\" stroke=\"#555\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{:.1}\" y=\"{label_y}\" text-anchor=\"{}\">{}</text></g>",
            text(name),
            number(*t_ms as f64 / 1000.0),
            label_y + 4.0,
            if anchor_end { x - 3.0 } else { x + 3.0 },
            if anchor_end { "end" } else { "start" },
            text(name)
        );
    }
    page.push_str("</svg>\n");
}

/// A round upper bound for `max` and a round step (1, 2 or 5 times a power of ten) giving about
/// `ticks` intervals.
fn nice_scale(max: f64, ticks: u32) -> (f64, f64) {
    let rough = max / f64::from(ticks);
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * power);
    ((max / step).ceil() * step, step)
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

fn badge(status: &str) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", attr(status))
}

fn ok_badge(ok: bool) -> String {
    badge(if ok { "passed" } else { "failed" })
}

fn phases_table(page: &mut String, summary: &RunSummary) {
    page.push_str(
        "<h2>Phases</h2>\n<table>\n<tr><th class=\"n\">#</th><th>phase</th><th>status</th>\
         <th class=\"n\">duration</th><th class=\"n\">attempts</th><th>error</th></tr>\n",
    );
    for (n, phase) in summary.phases.iter().enumerate() {
        let _ = writeln!(
            page,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"err\">{}</td></tr>",
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

fn probes_table(page: &mut String, probes: &[ProbeSummary]) {
    if probes.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Probe figures</h2>\n<table>\n<tr><th>probe</th><th class=\"n\">requests</th>\
         <th class=\"n\">failed</th><th class=\"n\">uptime</th><th class=\"n\">availability</th>\
         <th class=\"n\">down time</th><th class=\"n\">longest outage</th><th>outages (s)</th>\
         <th class=\"n\">p50</th><th class=\"n\">p95</th><th class=\"n\">p99</th></tr>\n",
    );
    for p in probes {
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
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{:.2} %</td><td class=\"n\">{:.2} %</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>",
            text(&p.probe),
            p.total,
            p.failed,
            p.uptime_pct,
            p.availability_pct,
            seconds(p.down_time_ms as f64 / 1000.0),
            seconds(p.longest_outage_ms as f64 / 1000.0),
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
    page.push_str("</table>\n");
}

fn smoke_table(page: &mut String, summary: &RunSummary) {
    page.push_str(
        "<h2>Smoke tests</h2>\n<table>\n<tr><th>when</th><th>result</th><th class=\"n\">passed\
         </th><th class=\"n\">failed</th><th class=\"n\">skipped</th></tr>\n",
    );
    let row = |when: &str, counts: Option<TestCounts>| match counts {
        None => format!(
            "<tr><td>{when} the upgrade</td><td>{}</td><td class=\"n\" colspan=\"3\">\
             <span class=\"muted\">did not run</span></td></tr>\n",
            badge("skipped")
        ),
        Some(c) => format!(
            "<tr><td>{when} the upgrade</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
            ok_badge(c.failed == 0 && c.passed > 0),
            c.passed,
            c.failed,
            c.skipped
        ),
    };
    page.push_str(&row("before", summary.smoke.before));
    page.push_str(&row("after", summary.smoke.after));
    page.push_str("</table>\n");
}

fn resources_table(page: &mut String, summary: &RunSummary) {
    if summary.resources.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Persistent resources</h2>\n<table>\n<tr><th>phase</th><th>resource</th>\
         <th>result</th><th>detail</th></tr>\n",
    );
    for check in &summary.resources {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&check.phase),
            text(&check.resource),
            ok_badge(check.ok),
            text(&check.detail)
        );
    }
    page.push_str("</table>\n");
}

/// Rally figures side by side: nested objects are flattened to `a · b` paths so that each row is
/// one figure before and after.
fn rally_table(page: &mut String, summary: &RunSummary) {
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
    page.push_str(
        "<h2>Rally</h2>\n<table>\n<tr><th>figure</th><th class=\"n\">before</th>\
         <th class=\"n\">after</th></tr>\n",
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

fn cache_table(page: &mut String, summary: &RunSummary) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::json::Verdict;
    use crate::report::json::tests::run;

    fn marks() -> Vec<(String, u64)> {
        [
            ("probes on", 0),
            ("upgrade keystone", 6_000),
            ("restart", 8_000),
            ("validate-after", 16_000),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect()
    }

    #[test]
    fn report_is_self_contained_with_verdict_timelines_and_phases() {
        let (summary, samples) = run();
        let html = html_report(&summary, &samples, &marks());
        // To look at it: ENVBUILD_REPORT_SAMPLE=/tmp/report.html cargo test report::html
        if let Some(path) = std::env::var_os("ENVBUILD_REPORT_SAMPLE") {
            std::fs::write(path, &html).unwrap();
        }
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<div class=\"verdict failed\"><div class=\"word\">FAILED</div>"));
        // The verdict comes before everything else the body shows.
        assert!(html.find("FAILED").unwrap() < html.find("<svg").unwrap());
        assert_eq!(html.matches("<svg").count(), summary.probes.len());
        for (label, _) in marks() {
            assert!(
                html.contains(&format!(">{label}</text>")),
                "no mark {label}"
            );
        }
        for phase in &summary.phases {
            assert!(html.contains(&format!("<td>{}</td>", phase.name)));
        }
        // The keystone band: up 0-8 s, down 8-11 s, up, down 15-16 s, up.
        assert_eq!(html.matches(&format!("fill=\"{DOWN}\"")).count(), 2);
        assert!(html.contains("uptime <b>80.00 %</b> (16 of 20 requests ok)"));
        assert!(html.contains("8–11, 15–16"));
        assert!(html.contains("1 of 2 stages came from the store"));
        assert!(html.contains("<code>KeystoneBasic.authenticate_user_and_validate_token · duration_p95</code></td><td class=\"n\">0.52</td><td class=\"n\">0.61</td>"));
        // Self-contained: nothing is fetched, nothing runs.
        for outside in [
            "http:", "https:", "//", "<script", "src=", "url(", "@import",
        ] {
            assert!(!html.contains(outside), "the page refers to {outside}");
        }
        // Escaped: the failed phase's error holds < > & and quotes.
        assert!(html.contains("test_list_users &lt;unexpected 500 &amp; &quot;retry&quot;&gt;"));
        assert!(!html.contains("<unexpected"));
    }

    #[test]
    fn a_probe_without_samples_still_gets_its_timeline() {
        let (mut summary, samples) = run();
        summary.verdict = Verdict::Incomplete;
        summary.complete = false;
        summary
            .probes
            .push(crate::harness::stats::summarize("swift", &samples));
        let html = html_report(&summary, &samples, &[]);
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains(">no sample</text>"));
        assert!(html.contains("Probe <b>swift</b> has no sample."));
        assert!(html.contains("verdict incomplete"));
        assert!(html.contains("<b>Incomplete:</b>"));
    }

    #[test]
    fn scales_are_round() {
        assert_eq!(nice_scale(35.0, 4), (40.0, 10.0));
        assert_eq!(nice_scale(19.0, 10), (20.0, 2.0));
        assert_eq!(nice_scale(3600.0, 10), (4000.0, 500.0));
        assert_eq!(number(2.50), "2.5");
        assert_eq!(number(40.0), "40");
        assert_eq!(seconds(65.0), "65.0 s");
        assert_eq!(seconds(185.0), "3m 05s");
        assert_eq!(seconds(179.6), "3m 00s");
    }
}
