//! summary.json (one document per run) and status.jsonl (one line per probe sample): the run
//! folder's machine-readable results, from which every other report can be made again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::harness::stats::{ProbeSummary, Sample};

pub const SUMMARY_FILE: &str = "summary.json";
pub const STATUS_FILE: &str = "status.jsonl";

/// Everything a run found. Optional parts are written as `null` rather than left out, so that
/// every summary has the same fields (ElasticSearch maps a field from the first document that has
/// it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub env: String,
    pub flow: String,
    pub from_version: String,
    pub to_version: String,
    /// RFC 3339, UTC. Probe samples' `t_ms` count from this instant.
    pub started: String,
    pub finished: String,
    pub duration_s: f64,
    pub verdict: Verdict,
    /// Every phase ran (none was skipped because an earlier one failed).
    pub complete: bool,
    pub phases: Vec<PhaseResult>,
    pub probes: Vec<ProbeSummary>,
    pub smoke: Smoke,
    pub resources: Vec<ResourceCheck>,
    pub rally: Rally,
    pub cache: Vec<StageUse>,
    pub envbuild_version: String,
    /// `<machine>/<stage>` -> stage key, for every stage the environment was made of.
    pub stage_keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Passed,
    Failed,
    /// The flow stopped before its end without a test failing (a deployment failed, say): the
    /// run says nothing about the upgrade and should be run again.
    Incomplete,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Incomplete => "incomplete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseStatus {
    Passed,
    Failed,
    Skipped,
}

impl PhaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Passed => "passed",
            PhaseStatus::Failed => "failed",
            PhaseStatus::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    pub name: String,
    pub status: PhaseStatus,
    pub duration_s: f64,
    pub attempts: u32,
    /// The last attempt's error.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// Smoke tests before and after the upgrade; `None` when they did not run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Smoke {
    pub before: Option<TestCounts>,
    pub after: Option<TestCounts>,
}

/// A persistent resource (a server, a user, an object...) checked in one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceCheck {
    pub phase: String,
    pub resource: String,
    pub ok: bool,
    pub detail: String,
}

/// Rally's key figures (per scenario durations, success rates) before and after the upgrade, as
/// Rally reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rally {
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// How the build that the run stood on got one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageUse {
    pub machine: String,
    pub stage: String,
    pub key: String,
    /// The engine's action, lowercase: current, restored, cached, reused or built.
    pub action: String,
}

impl StageUse {
    /// The stage came from the store rather than from running its steps.
    pub fn came_from_store(&self) -> bool {
        self.action != "built"
    }
}

/// Writes `dir/summary.json`, replacing any previous one whole.
pub fn write_summary(dir: &Path, summary: &RunSummary) -> Result<PathBuf> {
    let mut bytes = serde_json::to_vec_pretty(summary).expect("a summary always serializes");
    bytes.push(b'\n');
    write_whole(&dir.join(SUMMARY_FILE), &bytes)
}

/// Writes `dir/status.jsonl`: one sample per line, in the order given.
pub fn write_status_jsonl(dir: &Path, samples: &[Sample]) -> Result<PathBuf> {
    let mut bytes = Vec::new();
    for sample in samples {
        serde_json::to_writer(&mut bytes, sample).expect("a sample always serializes");
        bytes.push(b'\n');
    }
    write_whole(&dir.join(STATUS_FILE), &bytes)
}

/// Writes through a temporary file and a rename: CI archives the run folder even when envbuild
/// was killed, and a half-written summary must not pass for a result.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("renaming {} into place", tmp.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::harness::stats::summarize;

    /// A run of aio-lite 28.1.0 -> 29.0.0 where the upgrade cost keystone 4 s and a smoke test;
    /// the other report formats are tested on it too.
    pub(crate) fn run() -> (RunSummary, Vec<Sample>) {
        let samples: Vec<Sample> = (0..20u64)
            .flat_map(|t| {
                let keystone_ok = !(8..11).contains(&t) && t != 15;
                [
                    Sample {
                        t_ms: t * 1000,
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
                        t_ms: t * 1000 + 500,
                        probe: "token".into(),
                        ok: true,
                        status: Some(201),
                        latency_ms: 80.0 + t as f64,
                        error: None,
                    },
                ]
            })
            .collect();
        let phase = |name: &str, status, duration_s, attempts, error: Option<&str>| PhaseResult {
            name: name.into(),
            status,
            duration_s,
            attempts,
            error: error.map(str::to_string),
        };
        let summary = RunSummary {
            env: "aio-lite".into(),
            flow: "upgrade".into(),
            from_version: "28.1.0".into(),
            to_version: "29.0.0".into(),
            started: "2025-03-01T10:00:00Z".into(),
            finished: "2025-03-01T10:01:05Z".into(),
            duration_s: 65.0,
            verdict: Verdict::Failed,
            complete: true,
            phases: vec![
                phase("deploy", PhaseStatus::Passed, 20.5, 1, None),
                phase("validate-before", PhaseStatus::Passed, 4.25, 1, None),
                phase("upgrade", PhaseStatus::Passed, 12.0, 2, None),
                phase(
                    "validate-after",
                    PhaseStatus::Failed,
                    3.0,
                    1,
                    Some("smoke: 1 test failed: test_list_users <unexpected 500 & \"retry\">"),
                ),
                phase("cleanup", PhaseStatus::Passed, 1.5, 1, None),
            ],
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
        (summary, samples)
    }

    #[test]
    fn summary_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (summary, _) = run();
        let path = write_summary(dir.path(), &summary).unwrap();
        assert_eq!(path, dir.path().join("summary.json"));
        let back: RunSummary = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, summary);
        // Nothing but the summary is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn every_field_is_present_even_when_empty() {
        let (mut summary, _) = run();
        summary.smoke = Smoke::default();
        summary.rally = Rally::default();
        summary.phases[0].error = None;
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(
            keys(&json),
            sorted(&[
                "env",
                "flow",
                "from_version",
                "to_version",
                "started",
                "finished",
                "duration_s",
                "verdict",
                "complete",
                "phases",
                "probes",
                "smoke",
                "resources",
                "rally",
                "cache",
                "envbuild_version",
                "stage_keys",
            ])
        );
        assert_eq!(json["verdict"], "failed");
        assert_eq!(
            json["smoke"],
            serde_json::json!({"before": null, "after": null})
        );
        assert_eq!(
            json["rally"],
            serde_json::json!({"before": null, "after": null})
        );
        assert_eq!(
            json["phases"][0],
            serde_json::json!({"name": "deploy", "status": "passed", "duration_s": 20.5,
                "attempts": 1, "error": null})
        );
        assert_eq!(
            keys(&json["probes"][0]),
            sorted(&[
                "probe",
                "total",
                "successful",
                "failed",
                "uptime_pct",
                "availability_pct",
                "down_time_ms",
                "longest_outage_ms",
                "outages",
                "latency_p50_ms",
                "latency_p95_ms",
                "latency_p99_ms",
                "start_ms",
                "end_ms",
                "achieved_rate_hz",
                "not_sent",
            ])
        );
        assert_eq!(
            json["resources"][2],
            serde_json::json!({"phase": "validate-after", "resource": "project demo", "ok": false,
                "detail": "gone after the upgrade"})
        );
        assert_eq!(
            json["cache"][1],
            serde_json::json!({"machine": "aio", "stage": "deploy-28", "key": "b".repeat(64),
                "action": "built"})
        );
    }

    fn keys(object: &serde_json::Value) -> Vec<String> {
        sorted(
            &object
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn status_jsonl_has_one_sample_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let (_, samples) = run();
        let path = write_status_jsonl(dir.path(), &samples).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.ends_with('\n'));
        let back: Vec<Sample> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(back, samples);
    }
}
