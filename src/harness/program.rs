//! Program probes: a command run once per iteration (a scenario: create a server, wait until
//! it is ACTIVE, delete it, ...), scheduled like an HTTP request (harness/probe.rs).
//!
//! The contract (docs/harness.md, "Program probes"): the command runs as `sh -ec COMMAND` in
//! the machine root with the runtime environment, prints exactly one JSON line on stdout,
//! `{"ok": true|false, "detail": "one line", "phases": {"NAME_s": seconds, ...}}`, and exits 0
//! when ok, 1 when not. Anything else (no line, several, bad JSON, another exit status, killed
//! at the probe's timeout) is a failed sample that says which.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::stats::Sample;
use crate::process::{self, Captured, StepEnd};

/// A program probe with its command rendered and its environment made.
#[derive(Debug, Clone)]
pub struct Program {
    pub command: String,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Where every iteration's stderr and stdout line go (the run folder's logs/).
    pub log: PathBuf,
}

/// Output kept from one iteration, per stream: enough for the line and the errors that matter.
const MAX_OUTPUT: usize = 64 * 1024;
/// Characters of stderr a failed sample's error quotes.
const STDERR_QUOTED: usize = 300;

/// Runs iteration `iteration` of probe `name`, due at `due`; its sample.
pub fn run_once(
    name: &str,
    program: &Program,
    timeout: Duration,
    due: Instant,
    t_ms: u64,
    iteration: u32,
    log: &Mutex<()>,
) -> Sample {
    let mut env = program.env.clone();
    env.insert("ENVBUILD_PROBE".into(), name.to_string());
    env.insert("ENVBUILD_ITERATION".into(), iteration.to_string());
    let ran = process::run_captured(
        &program.command,
        &program.cwd,
        &env,
        Instant::now() + timeout,
        MAX_OUTPUT,
    );
    let latency_ms = due.elapsed().as_secs_f64() * 1000.0;
    let outcome = match &ran {
        Ok((end, captured)) => judge(end, captured, timeout),
        Err(e) => Outcome::failed(format!("could not run the probe's command: {e}")),
    };
    if let Ok(_guard) = log.lock()
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&program.log)
    {
        let (stdout, stderr) = ran
            .as_ref()
            .map(|(_, c)| (text(&c.stdout), text(&c.stderr)))
            .unwrap_or_default();
        let _ = writeln!(
            file,
            "--- iteration {iteration} due at {t_ms} ms: {} in {:.3} s\n{stderr}{stdout}",
            if outcome.ok { "ok" } else { "FAILED" },
            latency_ms / 1000.0,
        );
    }
    Sample {
        t_ms,
        probe: name.to_string(),
        ok: outcome.ok,
        status: None,
        latency_ms,
        error: outcome.error,
        phases: outcome.phases,
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    ok: bool,
    error: Option<String>,
    phases: BTreeMap<String, f64>,
}

impl Outcome {
    fn failed(error: String) -> Outcome {
        Outcome {
            ok: false,
            error: Some(error),
            phases: BTreeMap::new(),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The sample an iteration that ended as `end`, having printed `captured`, makes.
fn judge(end: &StepEnd, captured: &Captured, timeout: Duration) -> Outcome {
    let stderr = text(&captured.stderr);
    let stderr_tail = || {
        let last = stderr.trim_end();
        let start = last
            .char_indices()
            .rev()
            .nth(STDERR_QUOTED)
            .map_or(0, |(i, _)| i);
        match &last[start..] {
            "" => String::new(),
            tail => format!("; stderr: {}", tail.replace('\n', " | ")),
        }
    };
    let code = match end {
        StepEnd::Exited(code) => *code,
        StepEnd::TimedOut => {
            return Outcome::failed(format!(
                "killed after {} s (the probe's timeout){}",
                timeout.as_secs_f64(),
                stderr_tail()
            ));
        }
        StepEnd::Aborted => return Outcome::failed("interrupted".into()),
    };
    let stdout = text(&captured.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let line = match lines.as_slice() {
        [line] => *line,
        [] => {
            return Outcome::failed(format!(
                "exit status {code} and no JSON line on stdout{}",
                stderr_tail()
            ));
        }
        more => {
            return Outcome::failed(format!(
                "exit status {code} and {} lines on stdout, where the contract is one JSON line",
                more.len()
            ));
        }
    };
    let parsed: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            let shown: String = line.chars().take(200).collect();
            return Outcome::failed(format!(
                "exit status {code}, stdout is not a JSON line ({e}): {shown}"
            ));
        }
    };
    let Some(ok) = parsed.get("ok").and_then(serde_json::Value::as_bool) else {
        return Outcome::failed(format!(
            "exit status {code}, the JSON line has no boolean \"ok\""
        ));
    };
    let detail = parsed
        .get("detail")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_string();
    let phases = parsed
        .get("phases")
        .and_then(serde_json::Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let error = match (ok, code) {
        (true, 0) => None,
        (true, code) => Some(format!(
            "exit status {code} with \"ok\": true (the contract is exit 0 when ok){}",
            stderr_tail()
        )),
        (false, 1) => Some(or_unsaid(detail)),
        (false, code) => Some(format!("exit status {code}: {}", or_unsaid(detail))),
    };
    Outcome {
        ok: error.is_none(),
        error,
        phases,
    }
}

fn or_unsaid(detail: String) -> String {
    if detail.is_empty() {
        "failed (no detail)".into()
    } else {
        detail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(end: StepEnd, stdout: &str, stderr: &str) -> Outcome {
        let captured = Captured {
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        };
        judge(&end, &captured, Duration::from_secs(300))
    }

    #[test]
    fn an_ok_line_and_exit_0_is_a_success_with_its_phases() {
        let line = r#"{"ok": true, "detail": "built", "phases": {"build_s": 7.5, "total_s": 9.25, "x": "no"}}"#;
        let outcome = judged(StepEnd::Exited(0), &format!("\n{line}\n"), "warning\n");
        assert!(outcome.ok, "{outcome:?}");
        assert_eq!(outcome.error, None);
        assert_eq!(
            outcome.phases,
            BTreeMap::from([("build_s".into(), 7.5), ("total_s".into(), 9.25)])
        );
    }

    #[test]
    fn every_breach_of_the_contract_is_a_failed_sample_that_says_which() {
        let ok = r#"{"ok": true, "detail": "fine"}"#;
        let cases = [
            (
                judged(
                    StepEnd::Exited(1),
                    r#"{"ok": false, "detail": "no ACTIVE in 120 s"}"#,
                    "",
                ),
                "no ACTIVE in 120 s",
            ),
            (
                judged(StepEnd::Exited(3), r#"{"ok": false}"#, ""),
                "exit status 3: failed (no detail)",
            ),
            (
                judged(StepEnd::Exited(1), ok, ""),
                "exit status 1 with \"ok\": true",
            ),
            (
                judged(StepEnd::Exited(2), "", "Traceback\nImportError: x\n"),
                "exit status 2 and no JSON line on stdout; stderr: Traceback | ImportError: x",
            ),
            (
                judged(StepEnd::Exited(0), &format!("{ok}\n{ok}"), ""),
                "2 lines on stdout",
            ),
            (
                judged(StepEnd::Exited(0), "ok!", ""),
                "stdout is not a JSON line",
            ),
            (
                judged(StepEnd::Exited(0), r#"{"ok": "yes"}"#, ""),
                "no boolean \"ok\"",
            ),
            (
                judged(StepEnd::TimedOut, "", "waiting\n"),
                "killed after 300 s (the probe's timeout); stderr: waiting",
            ),
            (judged(StepEnd::Aborted, "", ""), "interrupted"),
        ];
        for (outcome, expected) in cases {
            assert!(!outcome.ok, "{outcome:?}");
            let error = outcome.error.unwrap();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn a_long_stderr_is_quoted_by_its_end() {
        let stderr = format!("{}THE END", "x".repeat(5000));
        let error = judged(StepEnd::Exited(2), "", &stderr).error.unwrap();
        assert!(error.ends_with("THE END"), "{error}");
        assert!(error.len() < 400, "{}", error.len());
    }
}
