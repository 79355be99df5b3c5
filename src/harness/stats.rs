//! Probe accounting: from the samples of one probe to its uptime, outages and latency figures.
//!
//! Definitions (all times are milliseconds since the start of the run):
//! - Samples are taken in time order (a stable sort, so equal times keep their recorded order).
//! - An *outage* starts at the first failed sample after a successful one (or at the first sample
//!   if that one fails) and ends at the next successful sample's time; if the run ends down it ends
//!   at the last sample's time. Outages are half-open, `[start_ms, end_ms)`, so a failure seen
//!   only by the very last sample is an outage of 0 ms: nothing says how long it lasted.
//! - `down_time_ms` is the sum of the outages' lengths; `longest_outage_ms` the largest one.
//! - `uptime_pct = 100 * successful / total`: the share of requests that succeeded, which is what
//!   the original CI reported and what a user sending requests experiences; it does not depend on
//!   the probe interval being regular.
//! - `availability_pct = 100 * (1 - down_time / (end - start))`: the share of the observed time
//!   the service was up. It differs from `uptime_pct` when samples are irregular (a probe that
//!   waits for a timeout samples a down service less often). With a single sample the observed
//!   time is empty and it is 100 or 0 after that sample.
//! - Latency percentiles are nearest-rank over the latencies of *successful* samples only (a
//!   failure's latency is mostly its timeout): the p-th percentile of n sorted values is the value
//!   at rank `ceil(p * n / 100)`, so it is always a latency that was measured. `None` when no
//!   sample succeeded.
//! - No samples at all give 0 % uptime and availability: a probe that never ran proves nothing
//!   (harness/verdict.rs fails the run for it, and for a probe with too few samples).
//! - `achieved_rate_hz`: the requests sent per second (every sample but those `not_sent`, whose
//!   error starts with [`NOT_SENT`]) over the probe's running time, the span from its first
//!   to its last sample plus one mean interval; `None` below two samples. Probes send on
//!   schedule, so it falls short of the declared rate only when the in-flight bound was hit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One request (or program iteration) of one probe: a line of status.jsonl.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Milliseconds since the start of the run.
    pub t_ms: u64,
    pub probe: String,
    pub ok: bool,
    /// The HTTP status, when the request got an answer.
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
    /// A program probe's sub-phase timings in seconds, as it printed them (`build_s`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases: BTreeMap<String, f64>,
}

/// One sub-phase of a program probe over its successful samples: nearest-rank percentiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseFigures {
    pub samples: u64,
    pub p50_s: f64,
    pub p95_s: f64,
    pub max_s: f64,
}

/// A sample's `error` starts with this when its request could not be sent at its time.
pub const NOT_SENT: &str = "not sent:";

/// A time the probe saw the service down: `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Outage {
    pub fn duration_ms(&self) -> u64 {
        self.end_ms - self.start_ms
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub probe: String,
    pub total: u64,
    pub successful: u64,
    pub failed: u64,
    pub uptime_pct: f64,
    pub availability_pct: f64,
    pub down_time_ms: u64,
    pub longest_outage_ms: u64,
    pub outages: Vec<Outage>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Time of the first and the last sample (0 when there is none).
    pub start_ms: u64,
    pub end_ms: u64,
    /// The rate the probe was asked for (the spec's `rate`, or `--probe-rate`); `None` in a
    /// summary made from samples alone.
    #[serde(default)]
    pub rate_hz: Option<f64>,
    #[serde(default)]
    pub achieved_rate_hz: Option<f64>,
    /// Samples whose request was not sent (the probe's in-flight bound was reached).
    #[serde(default)]
    pub not_sent: u64,
    /// A program probe's sub-phases (`build_s`, `total_s`, ...) over its successful samples.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases: BTreeMap<String, PhaseFigures>,
}

impl ProbeSummary {
    /// "5 Hz asked, 4.98 Hz sent", the line every report gives a probe's rate in.
    pub fn rate_line(&self) -> String {
        let asked = self.rate_hz.map_or("rate not recorded".to_string(), |hz| {
            format!("{hz} Hz asked")
        });
        match self.achieved_rate_hz {
            Some(sent) => format!("{asked}, {sent:.2} Hz sent"),
            None => asked,
        }
    }
}

/// Summarizes the samples of `probe` in `samples` (samples of other probes are ignored, so the
/// whole of status.jsonl can be passed).
pub fn summarize(probe: &str, samples: &[Sample]) -> ProbeSummary {
    let mut mine: Vec<&Sample> = samples.iter().filter(|s| s.probe == probe).collect();
    mine.sort_by_key(|s| s.t_ms);

    let total = mine.len() as u64;
    let successful = mine.iter().filter(|s| s.ok).count() as u64;
    let outages = outages(&mine);
    let down_time_ms: u64 = outages.iter().map(Outage::duration_ms).sum();
    let (start_ms, end_ms) = match (mine.first(), mine.last()) {
        (Some(first), Some(last)) => (first.t_ms, last.t_ms),
        _ => (0, 0),
    };
    let availability_pct = match mine.last() {
        None => 0.0,
        Some(_) if end_ms > start_ms => {
            100.0 * (1.0 - down_time_ms as f64 / (end_ms - start_ms) as f64)
        }
        Some(last) if last.ok => 100.0,
        Some(_) => 0.0,
    };
    let not_sent = mine
        .iter()
        .filter(|s| s.error.as_deref().is_some_and(|e| e.starts_with(NOT_SENT)))
        .count() as u64;
    let achieved_rate_hz = (total >= 2 && end_ms > start_ms).then(|| {
        let span_s = (end_ms - start_ms) as f64 / 1000.0;
        let running_s = span_s * total as f64 / (total - 1) as f64;
        (total - not_sent) as f64 / running_s
    });
    let mut latencies: Vec<f64> = mine.iter().filter(|s| s.ok).map(|s| s.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);

    ProbeSummary {
        probe: probe.to_string(),
        total,
        successful,
        failed: total - successful,
        uptime_pct: if total == 0 {
            0.0
        } else {
            100.0 * successful as f64 / total as f64
        },
        availability_pct,
        down_time_ms,
        longest_outage_ms: outages.iter().map(Outage::duration_ms).max().unwrap_or(0),
        outages,
        latency_p50_ms: nearest_rank(&latencies, 50),
        latency_p95_ms: nearest_rank(&latencies, 95),
        latency_p99_ms: nearest_rank(&latencies, 99),
        start_ms,
        end_ms,
        rate_hz: None,
        achieved_rate_hz,
        not_sent,
        phases: phase_figures(&mine),
    }
}

/// Per sub-phase name, its figures over the successful samples that report it.
fn phase_figures(sorted: &[&Sample]) -> BTreeMap<String, PhaseFigures> {
    let mut seconds: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for sample in sorted.iter().filter(|s| s.ok) {
        for (name, value) in &sample.phases {
            seconds.entry(name).or_default().push(*value);
        }
    }
    seconds
        .into_iter()
        .map(|(name, mut values)| {
            values.sort_by(f64::total_cmp);
            let figures = PhaseFigures {
                samples: values.len() as u64,
                p50_s: nearest_rank(&values, 50).unwrap_or(0.0),
                p95_s: nearest_rank(&values, 95).unwrap_or(0.0),
                max_s: values.last().copied().unwrap_or(0.0),
            };
            (name.to_string(), figures)
        })
        .collect()
}

fn outages(sorted: &[&Sample]) -> Vec<Outage> {
    let mut outages = Vec::new();
    let mut down_since = None;
    for sample in sorted {
        match (sample.ok, down_since) {
            (false, None) => down_since = Some(sample.t_ms),
            (true, Some(start_ms)) => {
                outages.push(Outage {
                    start_ms,
                    end_ms: sample.t_ms,
                });
                down_since = None;
            }
            _ => {}
        }
    }
    if let (Some(start_ms), Some(last)) = (down_since, sorted.last()) {
        outages.push(Outage {
            start_ms,
            end_ms: last.t_ms,
        });
    }
    outages
}

/// Nearest-rank percentile of ascending `sorted` values; integer arithmetic so that the rank of,
/// say, p50 of 10 values is exactly 5.
fn nearest_rank(sorted: &[f64], percent: usize) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (percent * n).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample per second for `seconds` s; failing at the listed seconds; latency 10 + t ms.
    fn timeline(seconds: u64, failing: &[u64]) -> Vec<Sample> {
        (0..seconds)
            .map(|t| sample(t * 1000, !failing.contains(&t), 10.0 + t as f64))
            .collect()
    }

    fn sample(t_ms: u64, ok: bool, latency_ms: f64) -> Sample {
        Sample {
            phases: Default::default(),
            t_ms,
            probe: "keystone".into(),
            ok,
            status: if ok { Some(200) } else { Some(503) },
            latency_ms,
            error: (!ok).then(|| "503 Service Unavailable".into()),
        }
    }

    fn outage(start_ms: u64, end_ms: u64) -> Outage {
        Outage { start_ms, end_ms }
    }

    #[test]
    fn two_outages_in_ten_seconds() {
        let s = summarize("keystone", &timeline(10, &[3, 4, 5, 8]));
        assert_eq!(s.total, 10);
        assert_eq!(s.successful, 6);
        assert_eq!(s.failed, 4);
        assert_eq!(s.outages, vec![outage(3000, 6000), outage(8000, 9000)]);
        assert_eq!(s.down_time_ms, 4000);
        assert_eq!(s.longest_outage_ms, 3000);
        assert_eq!(s.uptime_pct, 60.0);
        // 4 s down out of the 9 s between the first and the last sample.
        assert!((s.availability_pct - 100.0 * 5.0 / 9.0).abs() < 1e-9);
        assert_eq!((s.start_ms, s.end_ms), (0, 9000));
        assert_eq!((s.achieved_rate_hz, s.not_sent), (Some(1.0), 0));
        // Successful latencies: 10, 11, 12, 16, 17, 19 ms.
        assert_eq!(s.latency_p50_ms, Some(12.0));
        assert_eq!(s.latency_p95_ms, Some(19.0));
        assert_eq!(s.latency_p99_ms, Some(19.0));
    }

    #[test]
    fn a_run_that_ends_down_ends_its_outage_at_the_last_sample() {
        let s = summarize("keystone", &timeline(10, &[7, 8, 9]));
        assert_eq!(s.outages, vec![outage(7000, 9000)]);
        assert_eq!(s.down_time_ms, 2000);
        assert_eq!(s.uptime_pct, 70.0);

        let s = summarize("keystone", &timeline(10, &[9]));
        assert_eq!(s.outages, vec![outage(9000, 9000)]);
        assert_eq!((s.down_time_ms, s.failed), (0, 1));
        assert_eq!(s.availability_pct, 100.0);
    }

    #[test]
    fn a_run_that_starts_down_starts_its_outage_at_the_first_sample() {
        let s = summarize("keystone", &timeline(5, &[0, 1]));
        assert_eq!(s.outages, vec![outage(0, 2000)]);
        assert_eq!(s.availability_pct, 50.0);
    }

    #[test]
    fn all_ok() {
        let s = summarize("keystone", &timeline(100, &[]));
        assert_eq!((s.total, s.successful, s.failed), (100, 100, 0));
        assert!(s.outages.is_empty());
        assert_eq!((s.down_time_ms, s.longest_outage_ms), (0, 0));
        assert_eq!((s.uptime_pct, s.availability_pct), (100.0, 100.0));
        // Latencies 10..=109 ms: ranks 50, 95 and 99.
        assert_eq!(s.latency_p50_ms, Some(59.0));
        assert_eq!(s.latency_p95_ms, Some(104.0));
        assert_eq!(s.latency_p99_ms, Some(108.0));
    }

    #[test]
    fn all_failed() {
        let s = summarize("keystone", &timeline(4, &[0, 1, 2, 3]));
        assert_eq!(s.outages, vec![outage(0, 3000)]);
        assert_eq!((s.down_time_ms, s.longest_outage_ms), (3000, 3000));
        assert_eq!((s.uptime_pct, s.availability_pct), (0.0, 0.0));
        assert_eq!(s.latency_p50_ms, None);
        assert_eq!(s.latency_p99_ms, None);
    }

    #[test]
    fn no_samples() {
        let s = summarize("keystone", &[]);
        assert_eq!((s.total, s.successful, s.failed), (0, 0, 0));
        assert_eq!((s.uptime_pct, s.availability_pct), (0.0, 0.0));
        assert_eq!((s.start_ms, s.end_ms, s.down_time_ms), (0, 0, 0));
        assert!(s.outages.is_empty());
        assert_eq!(s.latency_p50_ms, None);
        assert_eq!(s.achieved_rate_hz, None);
    }

    #[test]
    fn unsent_requests_lower_the_achieved_rate() {
        let mut samples = timeline(10, &[6, 7]);
        for s in &mut samples[6..8] {
            s.status = None;
            s.error = Some(format!("{NOT_SENT} 4 requests in flight"));
        }
        let s = summarize("keystone", &samples);
        assert_eq!((s.failed, s.not_sent), (2, 2));
        assert_eq!(s.achieved_rate_hz, Some(0.8));
    }

    #[test]
    fn single_sample() {
        let up = summarize("keystone", &[sample(1500, true, 42.0)]);
        assert_eq!((up.uptime_pct, up.availability_pct), (100.0, 100.0));
        assert_eq!((up.start_ms, up.end_ms), (1500, 1500));
        assert_eq!(up.latency_p50_ms, Some(42.0));
        assert_eq!(up.latency_p99_ms, Some(42.0));

        let down = summarize("keystone", &[sample(1500, false, 42.0)]);
        assert_eq!(down.outages, vec![outage(1500, 1500)]);
        assert_eq!((down.uptime_pct, down.availability_pct), (0.0, 0.0));
    }

    #[test]
    fn unsorted_input_is_taken_in_time_order() {
        let mut samples = timeline(10, &[3, 4, 5, 8]);
        samples.reverse();
        samples.swap(2, 7);
        assert_eq!(
            summarize("keystone", &samples),
            summarize("keystone", &timeline(10, &[3, 4, 5, 8]))
        );
    }

    #[test]
    fn other_probes_are_ignored() {
        let mut samples = timeline(10, &[3]);
        samples.extend((0..4).map(|t| Sample {
            probe: "nova".into(),
            ..sample(t * 500, t != 2, 5.0)
        }));
        let keystone = summarize("keystone", &samples);
        assert_eq!((keystone.total, keystone.failed), (10, 1));

        let nova = summarize("nova", &samples);
        assert_eq!(nova.outages, vec![outage(1000, 1500)]);
        assert_eq!(nova.uptime_pct, 75.0);
    }

    #[test]
    fn irregular_sampling_separates_uptime_from_availability() {
        // Up at 0 and 1 s, then a request that hangs: the next sample is 10 s later, failed,
        // and the service answers again at 12 s.
        let samples = [
            sample(0, true, 10.0),
            sample(1000, true, 10.0),
            sample(11_000, false, 10_000.0),
            sample(12_000, true, 10.0),
        ];
        let s = summarize("keystone", &samples);
        assert_eq!(s.outages, vec![outage(11_000, 12_000)]);
        assert_eq!(s.uptime_pct, 75.0);
        assert!((s.availability_pct - 100.0 * 11.0 / 12.0).abs() < 1e-9);
        // The failure's 10 s latency is not in the percentiles.
        assert_eq!(s.latency_p99_ms, Some(10.0));
    }

    #[test]
    fn sample_is_one_json_line() {
        let line = serde_json::to_string(&sample(3000, false, 1.5)).unwrap();
        assert_eq!(
            line,
            r#"{"t_ms":3000,"probe":"keystone","ok":false,"status":503,"latency_ms":1.5,"error":"503 Service Unavailable"}"#
        );
        assert_eq!(
            serde_json::from_str::<Sample>(&line).unwrap(),
            sample(3000, false, 1.5)
        );
    }
}
