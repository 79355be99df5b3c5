//! What a run found: the summary every report renders (summary.json is its serialized form, and
//! every other report can be made again from it and status.jsonl).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::{PhaseResult, Rally, ResourceCheck, Smoke, Span, StageUse};
use super::stats::ProbeSummary;
use super::verdict::{Check, Verdict};

/// Everything a run found. Optional parts are written as `null` rather than left out, so that
/// every summary has the same fields (ElasticSearch maps a field from the first document that has
/// it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub env: String,
    pub flow: String,
    pub from_version: String,
    pub to_version: String,
    /// RFC 3339, UTC. Probe samples' `t_ms` and every span count from this instant.
    pub started: String,
    pub finished: String,
    pub duration_s: f64,
    pub verdict: Verdict,
    /// One line on availability: the outage the probes measured and what the budget made of it.
    pub headline: String,
    /// Why the verdict is not `passed`, one line each; empty when it is.
    pub reasons: Vec<String>,
    /// Every phase passed and every declared probe had enough samples to be judged.
    pub complete: bool,
    /// Everything the verdict policy judged (harness/verdict.rs), in report order.
    pub checks: Vec<Check>,
    /// The values of the environment's vars in this run (`--var` included).
    pub vars: BTreeMap<String, String>,
    /// CI metadata found in the environment (JOB_NAME, BUILD_NUMBER, BUILD_URL, NODE_NAME,
    /// GIT_COMMIT), by variable name.
    pub ci: BTreeMap<String, String>,
    pub phases: Vec<PhaseResult>,
    /// When the probes ran; more than one span when a retry stopped and restarted them.
    pub probe_windows: Vec<Span>,
    pub probes: Vec<ProbeSummary>,
    pub smoke: Smoke,
    pub resources: Vec<ResourceCheck>,
    pub rally: Rally,
    pub cache: Vec<StageUse>,
    pub envbuild_version: String,
    /// `<machine>/<stage>` -> stage key, for every stage the environment was made of.
    pub stage_keys: BTreeMap<String, String>,
}

/// The CI variables a summary records when they are set (Jenkins names them so).
pub const CI_VARIABLES: [&str; 5] = [
    "JOB_NAME",
    "BUILD_NUMBER",
    "BUILD_URL",
    "NODE_NAME",
    "GIT_COMMIT",
];

/// The CI variables set (and not empty) in this process's environment.
pub fn ci_metadata() -> BTreeMap<String, String> {
    CI_VARIABLES
        .iter()
        .filter_map(|name| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
            Some((name.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use crate::harness::budget::{Budget, DeclaredProbe};
    use crate::harness::record::{PhaseStatus, TestCounts};
    use crate::harness::stats::{Sample, summarize};
    use crate::harness::verdict::{Evidence, judge};

    /// A run of aio-lite 28.1.0 -> 29.0.0 where the upgrade cost keystone 4 s (its budget is no
    /// failed request) and a smoke test; every report format is tested on it.
    ///
    /// Phases: deploy 0-20.5 s, validate-before -24.75 s, upgrade (probed, 2 attempts) -45 s,
    /// validate-after (failed) -48 s, resources-cleanup (skipped). Probes ran 25-45 s.
    pub(crate) fn run() -> (RunSummary, Vec<Sample>) {
        let samples: Vec<Sample> = (0..20u64)
            .flat_map(|t| {
                let keystone_ok = !(8..11).contains(&t) && t != 15;
                [
                    Sample {
                        phases: Default::default(),
                        t_ms: 25_000 + t * 1000,
                        probe: "keystone".into(),
                        ok: keystone_ok,
                        status: Some(if keystone_ok { 200 } else { 502 }),
                        latency_ms: if keystone_ok {
                            20.0 + (t % 4) as f64 * 5.0
                        } else {
                            3.0
                        },
                        error: (!keystone_ok).then(|| "502 Bad Gateway".into()),
                    },
                    Sample {
                        phases: Default::default(),
                        t_ms: 25_500 + t * 1000,
                        probe: "token".into(),
                        ok: true,
                        status: Some(201),
                        latency_ms: 80.0 + t as f64,
                        error: None,
                    },
                ]
            })
            .collect();
        let phase = |name: &str, status, spans: &[(u64, u64)], error: Option<&str>| PhaseResult {
            name: name.into(),
            status,
            duration_s: spans
                .iter()
                .fold(0.0, |sum, (a, b)| sum + (b - a) as f64 / 1000.0),
            attempts: spans.len() as u32,
            error: error.map(str::to_string),
            spans: spans
                .iter()
                .map(|&(start_ms, end_ms)| Span { start_ms, end_ms })
                .collect(),
        };
        let mut summary = RunSummary {
            env: "aio-lite".into(),
            flow: "upgrade".into(),
            from_version: "28.1.0".into(),
            to_version: "29.0.0".into(),
            started: "2025-03-01T10:00:00Z".into(),
            finished: "2025-03-01T10:01:05Z".into(),
            duration_s: 65.0,
            verdict: Verdict::Passed,
            headline: String::new(),
            reasons: vec![],
            complete: true,
            checks: vec![],
            vars: BTreeMap::from([("validation".into(), "tempest rally".into())]),
            ci: BTreeMap::from([
                ("BUILD_NUMBER".into(), "41".into()),
                ("JOB_NAME".into(), "envbuild/main".into()),
            ]),
            phases: vec![
                phase("deploy", PhaseStatus::Passed, &[(0, 20_500)], None),
                phase(
                    "validate-before",
                    PhaseStatus::Passed,
                    &[(20_500, 24_750)],
                    None,
                ),
                phase(
                    "upgrade",
                    PhaseStatus::Passed,
                    &[(24_750, 30_000), (30_000, 45_000)],
                    None,
                ),
                phase(
                    "validate-after",
                    PhaseStatus::Failed,
                    &[(45_000, 48_000)],
                    Some("smoke: 1 test failed: test_list_users <unexpected 500 & \"retry\">"),
                ),
                phase("resources-cleanup", PhaseStatus::Skipped, &[], None),
            ],
            probe_windows: vec![Span {
                start_ms: 25_000,
                end_ms: 45_000,
            }],
            probes: vec![
                summarize("keystone", &samples),
                summarize("token", &samples),
            ],
            smoke: Smoke {
                before: Some(TestCounts {
                    passed: 12,
                    failed: 0,
                    skipped: 1,
                }),
                after: Some(TestCounts {
                    passed: 11,
                    failed: 1,
                    skipped: 1,
                }),
            },
            resources: vec![
                ResourceCheck {
                    phase: "validate-before".into(),
                    resource: "user demo".into(),
                    ok: true,
                    detail: "created".into(),
                },
                ResourceCheck {
                    phase: "validate-after".into(),
                    resource: "user demo".into(),
                    ok: true,
                    detail: "still there, same id".into(),
                },
                ResourceCheck {
                    phase: "validate-after".into(),
                    resource: "project demo".into(),
                    ok: false,
                    detail: "gone after the upgrade".into(),
                },
            ],
            rally: Rally {
                before: Some(serde_json::json!({
                    "KeystoneBasic.authenticate_user_and_validate_token":
                        {"iterations": 6, "failures": 0, "duration_avg": 0.41, "duration_p95": 0.52},
                    "sla_passed": true,
                })),
                after: Some(serde_json::json!({
                    "KeystoneBasic.authenticate_user_and_validate_token":
                        {"iterations": 6, "failures": 1, "duration_avg": 0.47, "duration_p95": 0.61},
                    "sla_passed": false,
                })),
            },
            cache: vec![
                StageUse {
                    machine: "aio".into(),
                    stage: "base".into(),
                    key: "a".repeat(64),
                    action: "restored".into(),
                },
                StageUse {
                    machine: "aio".into(),
                    stage: "deploy-28".into(),
                    key: "b".repeat(64),
                    action: "built".into(),
                },
            ],
            envbuild_version: "0.1.0".into(),
            stage_keys: BTreeMap::from([
                ("aio/base".into(), "a".repeat(64)),
                ("aio/deploy-28".into(), "b".repeat(64)),
            ]),
        };
        let budget = Budget {
            max_failed_requests: Some(0),
            ..Budget::default()
        };
        rejudge(&mut summary, &declared(budget), Some(2));
        (summary, samples)
    }

    /// The fixture's two probes at 1 Hz, with `budget`.
    pub(crate) fn declared(budget: Budget) -> [DeclaredProbe; 2] {
        ["keystone", "token"].map(|name| DeclaredProbe {
            name: name.into(),
            rate_hz: 1.0,
            budget,
        })
    }

    /// Fills `summary`'s verdict, checks, headline and completeness from its figures.
    pub(crate) fn rejudge(
        summary: &mut RunSummary,
        declared: &[DeclaredProbe],
        first_probed: Option<usize>,
    ) {
        let judgement = judge(&Evidence {
            phases: &summary.phases,
            first_probed,
            probes_failed_to_start: false,
            declared,
            probes: &summary.probes,
            probed_ms: summary.probe_windows.iter().map(Span::duration_ms).sum(),
            smoke: &summary.smoke,
            rally: &summary.rally,
            resources: &summary.resources,
            aborted_by: None,
        });
        summary.verdict = judgement.verdict;
        summary.complete = judgement.complete;
        summary.reasons = judgement.reasons;
        summary.headline = judgement.headline;
        summary.checks = judgement.checks;
    }
}
