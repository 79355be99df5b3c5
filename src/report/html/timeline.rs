//! The charts of report.html, inline SVG on a wall-clock (UTC) time axis: the run's phases as
//! spans, one row each; then per probe its availability band (red where it was down) and the
//! latency of its successful requests, with the phases shaded behind and labelled above.
//!
//! The latency line breaks at every failed request and wherever the probe was not sampling (a
//! gap of more than [`GAP_FACTOR`] typical intervals), so no line is drawn across an outage.

use std::fmt::Write;

use crate::harness::record::{PhaseStatus, Span};
use crate::harness::stats::{ProbeSummary, Sample};
use crate::harness::summary::RunSummary;

use super::{number, text};

const UP: &str = "#2e7d32";
const DOWN: &str = "#c62828";
const LATENCY: &str = "#1f5fa8";
const PHASE_SHADES: [&str; 2] = ["#e3ebf3", "#f1f4f7"];
/// A pause between two samples longer than this many typical intervals is a gap in the line.
pub const GAP_FACTOR: u64 = 3;

// Geometry, in SVG user units (one per CSS pixel at 1160 px wide).
const WIDTH: f64 = 1160.0;
const RIGHT: f64 = 14.0;

/// Turns milliseconds since the run's start into wall-clock labels.
pub struct Clock {
    /// The run's start, in milliseconds since the Unix epoch (None: `started` did not parse,
    /// labels count seconds from the start instead).
    started_ms: Option<u64>,
}

impl Clock {
    pub fn new(started: &str) -> Clock {
        let started_ms = humantime::parse_rfc3339_weak(started)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        Clock { started_ms }
    }

    /// "10:04:05" (UTC), or "+245 s" without a start time.
    pub fn label(&self, t_ms: u64) -> String {
        match self.started_ms {
            Some(start) => {
                let day_s = (start + t_ms) / 1000 % 86_400;
                format!(
                    "{:02}:{:02}:{:02}",
                    day_s / 3600,
                    day_s / 60 % 60,
                    day_s % 60
                )
            }
            None => format!("+{} s", number(t_ms as f64 / 1000.0)),
        }
    }

    /// Tick times inside `[start_ms, end_ms]` on round wall-clock seconds, about `max` of them.
    fn ticks(&self, start_ms: u64, end_ms: u64, max: u64) -> Vec<u64> {
        const STEPS_S: [u64; 14] = [
            1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
        ];
        let span_s = (end_ms - start_ms) / 1000;
        let step_ms = 1000
            * STEPS_S
                .into_iter()
                .find(|step| span_s / step <= max)
                .unwrap_or(14_400);
        let offset = self.started_ms.unwrap_or(0);
        let first = (offset + start_ms).div_ceil(step_ms) * step_ms - offset;
        (0..)
            .map(|n| first + n * step_ms)
            .take_while(|t| *t <= end_ms)
            .collect()
    }
}

/// A time axis from `start_ms` to `end_ms` drawn between `left` and the right margin.
struct Axis {
    start_ms: u64,
    end_ms: u64,
    left: f64,
}

impl Axis {
    fn x(&self, t_ms: u64) -> f64 {
        let span = (self.end_ms - self.start_ms).max(1) as f64;
        let t = t_ms.clamp(self.start_ms, self.end_ms) - self.start_ms;
        self.left + (WIDTH - self.left - RIGHT) * t as f64 / span
    }

    /// `span` overlaps the axis for more than an instant.
    fn overlaps(&self, span: &Span) -> bool {
        span.end_ms > self.start_ms && span.start_ms < self.end_ms
    }

    /// Wall-clock ticks and their labels below `bottom`, with a caption.
    fn draw(&self, page: &mut String, clock: &Clock, bottom: f64) {
        for t in clock.ticks(self.start_ms, self.end_ms, 10) {
            let x = self.x(t);
            let _ = writeln!(
                page,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{bottom}\" y2=\"{}\" stroke=\"#8a939c\"/>\
                 <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                bottom + 5.0,
                bottom + 18.0,
                clock.label(t)
            );
        }
        let right = WIDTH - RIGHT;
        let _ = writeln!(
            page,
            "<line x1=\"{}\" x2=\"{right}\" y1=\"{bottom}\" y2=\"{bottom}\" stroke=\"#8a939c\"/>\
             <text x=\"{right}\" y=\"{}\" text-anchor=\"end\">time (UTC)</text>",
            self.left,
            bottom + 31.0
        );
    }
}

const RUN_LABEL_WIDTH: f64 = 190.0;
const ROW_HEIGHT: f64 = 20.0;

/// The whole run: one row per phase with a bar per attempt (an attempt that a retry followed
/// failed), and a row for the times probes ran.
pub fn run_chart(page: &mut String, summary: &RunSummary, clock: &Clock) {
    let end_ms = (summary.duration_s * 1000.0) as u64;
    let axis = Axis {
        start_ms: 0,
        end_ms: summary
            .phases
            .iter()
            .filter_map(|p| p.span())
            .map(|s| s.end_ms)
            .max()
            .unwrap_or(0)
            .max(end_ms),
        left: RUN_LABEL_WIDTH,
    };
    let rows = summary.phases.len() + usize::from(!summary.probe_windows.is_empty());
    let bottom = 10.0 + ROW_HEIGHT * rows as f64;
    let _ = writeln!(
        page,
        "<h2>Run timeline</h2>\n<svg viewBox=\"0 0 {WIDTH} {}\" role=\"img\" \
         aria-label=\"phases of the run on a time axis\">",
        bottom + 36.0
    );
    let row_y = |row: usize| 10.0 + ROW_HEIGHT * row as f64;
    for (row, phase) in summary.phases.iter().enumerate() {
        let y = row_y(row);
        let name: String = if phase.name.chars().count() > 28 {
            phase.name.chars().take(27).chain(['…']).collect()
        } else {
            phase.name.clone()
        };
        let _ = writeln!(
            page,
            "<text class=\"label\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\"><title>{}</title>{}\
             </text>",
            RUN_LABEL_WIDTH - 8.0,
            y + 13.0,
            text(&phase.name),
            text(&name)
        );
        if phase.spans.is_empty() {
            let _ = writeln!(
                page,
                "<text x=\"{}\" y=\"{:.1}\" class=\"muted\">{}</text>",
                RUN_LABEL_WIDTH + 4.0,
                y + 13.0,
                phase.status.as_str()
            );
        }
        for (n, span) in phase.spans.iter().enumerate() {
            let last = n + 1 == phase.spans.len();
            let fill = match phase.status {
                PhaseStatus::Passed if last => UP,
                PhaseStatus::Aborted if last => "#5b6670",
                _ => DOWN,
            };
            let (x1, x2) = (axis.x(span.start_ms), axis.x(span.end_ms));
            let _ = writeln!(
                page,
                "<rect x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"{fill}\">\
                 <title>{} attempt {}: {} to {}</title></rect>",
                y + 3.0,
                (x2 - x1).max(2.0),
                ROW_HEIGHT - 6.0,
                text(&phase.name),
                n + 1,
                clock.label(span.start_ms),
                clock.label(span.end_ms)
            );
        }
    }
    if !summary.probe_windows.is_empty() {
        let y = row_y(summary.phases.len());
        let _ = writeln!(
            page,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">probes running</text>",
            RUN_LABEL_WIDTH - 8.0,
            y + 13.0
        );
        for window in &summary.probe_windows {
            let (x1, x2) = (axis.x(window.start_ms), axis.x(window.end_ms));
            let _ = writeln!(
                page,
                "<rect x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{}\" \
                 fill=\"{LATENCY}\"/>",
                y + 6.0,
                (x2 - x1).max(2.0),
                ROW_HEIGHT - 12.0
            );
        }
    }
    axis.draw(page, clock, bottom);
    page.push_str("</svg>\n");
}

const LEFT: f64 = 58.0;
/// Phase labels take three rows above the band, so that close phases keep readable names.
const LABEL_ROWS: usize = 3;
const BAND_TOP: f64 = 50.0;
const BAND_HEIGHT: f64 = 14.0;
const PLOT_TOP: f64 = 76.0;
const PLOT_HEIGHT: f64 = 150.0;
const HEIGHT: f64 = PLOT_TOP + PLOT_HEIGHT + 40.0;

/// A chart per probe, on one axis: from when the probes first ran to when they last stopped.
pub fn probe_charts(page: &mut String, summary: &RunSummary, samples: &[Sample], clock: &Clock) {
    if summary.probes.is_empty() {
        return;
    }
    page.push_str("<h2>Probes during the run</h2>\n");
    let windows = &summary.probe_windows;
    let axis = Axis {
        start_ms: windows
            .iter()
            .map(|w| w.start_ms)
            .min()
            .or_else(|| samples.iter().map(|s| s.t_ms).min())
            .unwrap_or(0),
        end_ms: windows
            .iter()
            .map(|w| w.end_ms)
            .max()
            .or_else(|| samples.iter().map(|s| s.t_ms).max())
            .unwrap_or(0),
        left: LEFT,
    };
    for probe in &summary.probes {
        let mut mine: Vec<&Sample> = samples.iter().filter(|s| s.probe == probe.probe).collect();
        mine.sort_by_key(|s| s.t_ms);
        let _ = writeln!(
            page,
            "<h3>{}</h3>\n<p class=\"probe-line\">{}</p>",
            text(&probe.probe),
            super::tables::probe_line(probe)
        );
        probe_svg(page, &axis, summary, probe, &mine, clock);
        page.push_str(
            "<p class=\"legend\"><i class=\"up\"></i>up<i class=\"down\"></i>down\
             <i class=\"latency\"></i>latency of successful requests (ms)\
             <i class=\"phase-a\"></i><i class=\"phase-b\"></i>phases</p>\n",
        );
    }
}

fn probe_svg(
    page: &mut String,
    axis: &Axis,
    summary: &RunSummary,
    probe: &ProbeSummary,
    mine: &[&Sample],
    clock: &Clock,
) {
    let _ = writeln!(
        page,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{} over time\">",
        text(&probe.probe)
    );
    let plot_bottom = PLOT_TOP + PLOT_HEIGHT;
    phase_spans(page, axis, summary, clock, plot_bottom);
    if mine.is_empty() {
        let _ = writeln!(
            page,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no sample</text></svg>",
            WIDTH / 2.0,
            PLOT_TOP + PLOT_HEIGHT / 2.0
        );
        return;
    }
    let segments = sampling_segments(mine);

    // Availability band: green where the probe sampled, red over each outage (at least 3 px:
    // a one-second outage in an hour is what the reader looks for).
    let _ = writeln!(
        page,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">status</text>",
        LEFT - 6.0,
        BAND_TOP + 11.0
    );
    for segment in &segments {
        let (first, last) = (segment[0].t_ms, segment[segment.len() - 1].t_ms);
        let (x1, x2) = (axis.x(first), axis.x(last));
        let _ = writeln!(
            page,
            "<rect x=\"{x1:.1}\" y=\"{BAND_TOP}\" width=\"{:.1}\" height=\"{BAND_HEIGHT}\" \
             fill=\"{UP}\"/>",
            (x2 - x1).max(1.5)
        );
    }
    for outage in &probe.outages {
        let (x1, x2) = (axis.x(outage.start_ms), axis.x(outage.end_ms));
        let _ = writeln!(
            page,
            "<rect x=\"{x1:.1}\" y=\"{BAND_TOP}\" width=\"{:.1}\" height=\"{BAND_HEIGHT}\" \
             fill=\"{DOWN}\"><title>down {} to {}</title></rect>",
            (x2 - x1).max(3.0),
            clock.label(outage.start_ms),
            clock.label(outage.end_ms)
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
            "<line x1=\"{LEFT}\" x2=\"{right}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#d5dbe1\" \
             stroke-dasharray=\"2 3\"/><text x=\"{1}\" y=\"{2:.1}\" text-anchor=\"end\">{3}</text>",
            y(tick),
            LEFT - 6.0,
            y(tick) + 4.0,
            number(tick),
            right = WIDTH - RIGHT
        );
        tick += y_step;
    }
    let _ = writeln!(
        page,
        "<text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">latency \
         (ms)</text>",
        PLOT_TOP + PLOT_HEIGHT / 2.0
    );
    axis.draw(page, clock, plot_bottom);

    for run in latency_runs(&segments) {
        let points: Vec<String> = run
            .iter()
            .map(|s| format!("{:.1},{:.1}", axis.x(s.t_ms), y(s.latency_ms)))
            .collect();
        if let [point] = points.as_slice() {
            let _ = writeln!(
                page,
                "<circle cx=\"{}\" r=\"2\" fill=\"{LATENCY}\"/>",
                point.replace(',', "\" cy=\"")
            );
        } else {
            let _ = writeln!(
                page,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{LATENCY}\" \
                 stroke-width=\"1.5\" stroke-linejoin=\"round\"/>",
                points.join(" ")
            );
        }
    }
    page.push_str("</svg>\n");
}

/// Each phase attempt inside the axis, shaded behind the plot and labelled in the first label
/// row that is free where it starts.
fn phase_spans(page: &mut String, axis: &Axis, summary: &RunSummary, clock: &Clock, bottom: f64) {
    let mut row_ends = [f64::MIN; LABEL_ROWS];
    let spans = summary
        .phases
        .iter()
        .flat_map(|p| p.spans.iter().map(move |s| (p, s)))
        .filter(|(_, s)| axis.overlaps(s));
    for (n, (phase, span)) in spans.enumerate() {
        let (x1, x2) = (axis.x(span.start_ms), axis.x(span.end_ms));
        let label_width = 6.5 * phase.name.chars().count() as f64 + 6.0;
        let row = (0..LABEL_ROWS)
            .find(|&r| x1 >= row_ends[r])
            .unwrap_or_else(|| {
                (0..LABEL_ROWS)
                    .min_by(|&a, &b| row_ends[a].total_cmp(&row_ends[b]))
                    .unwrap_or(0)
            });
        let anchor_end = x1 + label_width > WIDTH;
        row_ends[row] = if anchor_end {
            WIDTH
        } else {
            x1 + label_width + 4.0
        };
        let label_y = 12.0 + 13.0 * row as f64;
        let _ = writeln!(
            page,
            "<g><title>{} from {} to {}</title><rect x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" \
             height=\"{:.1}\" fill=\"{}\"/><line x1=\"{x1:.1}\" x2=\"{x1:.1}\" y1=\"{:.1}\" \
             y2=\"{bottom}\" stroke=\"#8a939c\"/><text class=\"label\" x=\"{:.1}\" \
             y=\"{label_y}\" text-anchor=\"{}\">{}</text></g>",
            text(&phase.name),
            clock.label(span.start_ms),
            clock.label(span.end_ms),
            BAND_TOP - 4.0,
            (x2 - x1).max(1.0),
            bottom - BAND_TOP + 4.0,
            PHASE_SHADES[n % 2],
            label_y + 3.0,
            if anchor_end { x1 - 3.0 } else { x1 + 3.0 },
            if anchor_end { "end" } else { "start" },
            text(&phase.name)
        );
    }
}

/// `sorted` split where the probe did not sample for more than [`GAP_FACTOR`] times its median
/// interval (probes stopped for a retry, a request that hung).
fn sampling_segments<'a>(sorted: &[&'a Sample]) -> Vec<Vec<&'a Sample>> {
    let mut intervals: Vec<u64> = sorted.windows(2).map(|w| w[1].t_ms - w[0].t_ms).collect();
    intervals.sort_unstable();
    let gap = intervals
        .get(intervals.len() / 2)
        .map_or(u64::MAX, |median| GAP_FACTOR * (*median).max(1));
    let mut segments: Vec<Vec<&Sample>> = Vec::new();
    for sample in sorted {
        match segments.last_mut() {
            Some(segment) if sample.t_ms - segment[segment.len() - 1].t_ms <= gap => {
                segment.push(sample)
            }
            _ => segments.push(vec![sample]),
        }
    }
    segments
}

/// The runs of successful samples the latency line joins: a failure or a gap ends a run.
fn latency_runs<'a>(segments: &[Vec<&'a Sample>]) -> Vec<Vec<&'a Sample>> {
    segments
        .iter()
        .flat_map(|segment| segment.split(|s| !s.ok))
        .filter(|run| !run.is_empty())
        .map(|run| run.to_vec())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_ms: u64, ok: bool) -> Sample {
        Sample {
            phases: Default::default(),
            t_ms,
            probe: "p".into(),
            ok,
            status: Some(200),
            latency_ms: 10.0,
            error: None,
        }
    }

    #[test]
    fn the_latency_line_breaks_at_failures_and_sampling_gaps() {
        // 1 Hz; down at 3-4 s; the probes stopped from 6 s to 20 s (a retry), all up after.
        let samples: Vec<Sample> = [0, 1, 2, 3, 4, 5, 6, 20, 21, 22]
            .into_iter()
            .map(|t| sample(t * 1000, !(3..=4).contains(&t)))
            .collect();
        let sorted: Vec<&Sample> = samples.iter().collect();
        let segments = sampling_segments(&sorted);
        assert_eq!(segments.iter().map(Vec::len).collect::<Vec<_>>(), [7, 3]);
        let runs: Vec<Vec<u64>> = latency_runs(&segments)
            .iter()
            .map(|run| run.iter().map(|s| s.t_ms / 1000).collect())
            .collect();
        assert_eq!(runs, [vec![0, 1, 2], vec![5, 6], vec![20, 21, 22]]);
    }

    #[test]
    fn wall_clock_labels_and_round_ticks() {
        let clock = Clock::new("2025-03-01T10:00:00Z");
        assert_eq!(clock.label(0), "10:00:00");
        assert_eq!(clock.label(3_725_000), "11:02:05");
        // 65 s: ticks every 10 s on the wall clock.
        assert_eq!(
            clock.ticks(2_500, 65_000, 10),
            [10_000, 20_000, 30_000, 40_000, 50_000, 60_000]
        );
        // A start that is not on a round second still gets round labels.
        let clock = Clock::new("2025-03-01T10:00:07.250Z");
        let ticks = clock.ticks(0, 600_000, 10);
        assert_eq!(clock.label(ticks[0]), "10:01:00");
        assert_eq!(ticks[1] - ticks[0], 60_000);
        assert_eq!(Clock::new("yesterday").label(1500), "+1.5 s");
    }

    #[test]
    fn scales_are_round() {
        assert_eq!(nice_scale(35.0, 4), (40.0, 10.0));
        assert_eq!(nice_scale(19.0, 10), (20.0, 2.0));
        assert_eq!(nice_scale(3600.0, 10), (4000.0, 500.0));
    }
}
