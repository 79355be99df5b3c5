//! summary.json (one document per run) and status.jsonl (one line per probe sample): the run
//! folder's machine-readable results, from which every other report can be made again.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::harness::stats::Sample;
use crate::harness::summary::RunSummary;

pub const SUMMARY_FILE: &str = "summary.json";
pub const STATUS_FILE: &str = "status.jsonl";

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
mod tests {
    use super::*;
    use crate::harness::record::{Rally, Smoke};
    use crate::harness::summary::fixture::run;

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
                "headline",
                "reasons",
                "complete",
                "checks",
                "vars",
                "ci",
                "phases",
                "probe_windows",
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
                "attempts": 1, "error": null, "spans": [{"start_ms": 0, "end_ms": 20_500}]})
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
                "rate_hz",
                "achieved_rate_hz",
                "not_sent",
            ])
        );
        assert_eq!(
            json["vars"],
            serde_json::json!({"validation": "tempest rally"})
        );
        assert_eq!(
            json["checks"][5],
            serde_json::json!({"kind": "probe", "name": "keystone", "status": "failed",
                "blame": "upgrade", "message": "4 of 20 requests failed (at most 0 allowed)",
                "budget": {"max_failed_requests": 0, "max_down_time_ms": null,
                    "min_uptime_pct": null}})
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
