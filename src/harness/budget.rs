//! Availability budgets: what a flow or one of its probes tolerates (docs/spec.md,
//! "[flows.NAME]"), and how a probe's figures measure up to one.

use serde::{Deserialize, Serialize};

use super::stats::ProbeSummary;

/// What a flow or a probe tolerates. Every key set must hold; none set means "not judged".
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub max_failed_requests: Option<u64>,
    pub max_down_time_ms: Option<u64>,
    pub min_uptime_pct: Option<f64>,
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        *self == Budget::default()
    }

    /// This budget, with each key it leaves unset taken from `fallback` (a probe's over its
    /// flow's).
    pub fn or(self, fallback: Budget) -> Budget {
        Budget {
            max_failed_requests: self.max_failed_requests.or(fallback.max_failed_requests),
            max_down_time_ms: self.max_down_time_ms.or(fallback.max_down_time_ms),
            min_uptime_pct: self.min_uptime_pct.or(fallback.min_uptime_pct),
        }
    }

    /// "at most 0 failed requests, at most 5.0 s down".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(max) = self.max_failed_requests {
            parts.push(format!("at most {max} failed requests"));
        }
        if let Some(max) = self.max_down_time_ms {
            parts.push(format!("at most {} down", seconds(max)));
        }
        if let Some(min) = self.min_uptime_pct {
            parts.push(format!("at least {min} % uptime"));
        }
        parts.join(", ")
    }

    /// What `probe` exceeded, one phrase per key.
    pub fn exceeded(&self, probe: &ProbeSummary) -> Vec<String> {
        let mut over = Vec::new();
        if let Some(max) = self.max_failed_requests.filter(|max| probe.failed > *max) {
            over.push(format!(
                "{} of {} requests failed (at most {max} allowed)",
                probe.failed, probe.total
            ));
        }
        if let Some(max) = self
            .max_down_time_ms
            .filter(|max| probe.down_time_ms > *max)
        {
            over.push(format!(
                "down {} (at most {} allowed)",
                seconds(probe.down_time_ms),
                seconds(max)
            ));
        }
        if let Some(min) = self.min_uptime_pct.filter(|min| probe.uptime_pct < *min) {
            over.push(format!(
                "uptime {:.2} % (at least {min} % required)",
                probe.uptime_pct
            ));
        }
        over
    }
}

/// A probe as the flow declares it: what it is judged against.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredProbe {
    pub name: String,
    pub rate_hz: f64,
    /// Its own keys over the flow's.
    pub budget: Budget,
}

/// "7.0 s", the way every report writes a duration in milliseconds.
pub fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::stats::{Sample, summarize};

    #[test]
    fn an_empty_budget_judges_nothing() {
        assert!(Budget::default().is_empty());
        assert_eq!(Budget::default().describe(), "");
        assert!(Budget::default().exceeded(&summarize("p", &[])).is_empty());
        assert_eq!(seconds(7_049), "7.0 s");
    }

    #[test]
    fn every_budget_key_is_judged_and_a_probe_overrides_its_flow() {
        // 100 samples at 10 Hz, down 1.0 s (samples 20..30 failed), 90 % uptime.
        let samples: Vec<Sample> = (0..100u64)
            .map(|i| Sample {
                phases: Default::default(),
                t_ms: i * 100,
                probe: "keystone".into(),
                ok: !(20..30).contains(&i),
                status: Some(200),
                latency_ms: 5.0,
                error: None,
            })
            .collect();
        let summary = summarize("keystone", &samples);
        let flow = Budget {
            max_failed_requests: Some(100),
            max_down_time_ms: Some(500),
            min_uptime_pct: Some(95.0),
        };
        assert_eq!(
            flow.exceeded(&summary),
            [
                "down 1.0 s (at most 0.5 s allowed)",
                "uptime 90.00 % (at least 95 % required)"
            ]
        );
        let own = Budget {
            max_down_time_ms: Some(2_000),
            ..Budget::default()
        };
        let effective = own.or(flow);
        assert_eq!(effective.max_down_time_ms, Some(2_000));
        assert_eq!(effective.max_failed_requests, Some(100));
        assert_eq!(
            effective.exceeded(&summary),
            ["uptime 90.00 % (at least 95 % required)"]
        );
        assert_eq!(
            effective.describe(),
            "at most 100 failed requests, at most 2.0 s down, at least 95 % uptime"
        );
    }
}
