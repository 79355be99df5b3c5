//! The verdict policy, in one place: what passed, what failed and whose fault it was, from which
//! the run's verdict, its completeness and its exit code follow. summary.json, junit.xml,
//! report.html, the ElasticSearch summary and the exit code all read the [`Judgement`]; none of
//! them judges anything itself.
//!
//! The rules (docs/harness.md, "Verdicts"):
//! - A failure is the upgrade's (`Blame::Upgrade`) or the test bed's (`Blame::Infrastructure`).
//!   A phase before the first probed phase (deploying N, validating N), probes that could not
//!   start, smoke tests or Rally *before* the upgrade and resource checks of those phases are the
//!   test bed's; everything from the first probed phase on is the upgrade's. A flow without
//!   probes has no "before": each failure is the upgrade's.
//! - A declared probe is judged against its budget (its own keys, else the flow's). Without any
//!   budget key its figures are reported and *not judged*: the headline says so.
//! - A probe that never sampled while probes ran, or that has too few samples to judge (fewer
//!   than [`MIN_SAMPLES`], or fewer than [`MIN_RATE_SHARE`] of what its rate asks for over the
//!   time probes ran), is a test-bed failure: it proves nothing, so the run is incomplete.
//! - SIGINT/SIGTERM make the run `aborted`: the interrupted phase is `aborted`, later ones
//!   skipped, probes not judged, and no check fails because of the interruption.
//! - Verdict: aborted, else `failed` if any check failed by the upgrade's fault, else
//!   `incomplete` if any failed by the test bed's or a phase did not run, else `passed`.

use serde::{Deserialize, Serialize};

use super::budget::{Budget, DeclaredProbe, seconds};
use super::record::{PhaseResult, PhaseStatus, Rally, ResourceCheck, Smoke, TestCounts};
use super::stats::ProbeSummary;

/// Fewer samples than this say nothing about uptime (each one is a 20 % step).
pub const MIN_SAMPLES: u64 = 5;
/// A probe with fewer than this share of the requests its rate asks for over the time probes
/// ran was blind for most of it (requests that hang, a probe thread that stalled).
pub const MIN_RATE_SHARE: f64 = 0.25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Passed,
    /// The upgrade broke something: a phase from the first probed one on, a probe over its
    /// budget, validation after the upgrade.
    Failed,
    /// The run says nothing about the upgrade and should be run again: deploying or validating
    /// N failed, or a probe never ran or has too few samples.
    Incomplete,
    /// SIGINT or SIGTERM stopped the run; its clean-up ran.
    Aborted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Incomplete => "incomplete",
            Verdict::Aborted => "aborted",
        }
    }

    /// `envbuild test`'s exit code (README, "Exit codes"): Jenkins maps 1 to UNSTABLE, 3 to
    /// FAILURE and 130 to ABORTED.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Passed => 0,
            Verdict::Failed => 1,
            Verdict::Incomplete => 3,
            Verdict::Aborted => 130,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Phase,
    Probe,
    Resource,
    Smoke,
    Rally,
    /// The flow as a whole: did it run to its end.
    Flow,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Phase => "phase",
            CheckKind::Probe => "probe",
            CheckKind::Resource => "resource",
            CheckKind::Smoke => "smoke",
            CheckKind::Rally => "rally",
            CheckKind::Flow => "flow",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Failed,
    /// Did not run.
    Skipped,
    /// Ran and was measured, but nothing says what it must achieve (no budget), or the run was
    /// aborted before it could be judged.
    NotJudged,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passed => "passed",
            CheckStatus::Failed => "failed",
            CheckStatus::Skipped => "skipped",
            CheckStatus::NotJudged => "not_judged",
        }
    }
}

/// Whose failure a failed check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Blame {
    Upgrade,
    Infrastructure,
}

/// One thing the policy judged: a JUnit test case, a row of the HTML page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub kind: CheckKind,
    /// The phase, probe or resource (`phase/resource`); `before`/`after` for smoke and Rally;
    /// `complete` for the flow.
    pub name: String,
    pub status: CheckStatus,
    /// For failed checks.
    pub blame: Option<Blame>,
    /// One line saying why, when the check did not pass.
    pub message: String,
    /// The budget a probe was judged against (probes only).
    pub budget: Option<Budget>,
}

impl Check {
    fn new(kind: CheckKind, name: &str, status: CheckStatus, message: String) -> Check {
        Check {
            kind,
            name: name.to_string(),
            status,
            blame: None,
            message,
            budget: None,
        }
    }

    fn failed(kind: CheckKind, name: &str, blame: Blame, message: String) -> Check {
        Check {
            blame: Some(blame),
            ..Check::new(kind, name, CheckStatus::Failed, message)
        }
    }

    fn passed(kind: CheckKind, name: &str) -> Check {
        Check::new(kind, name, CheckStatus::Passed, String::new())
    }

    /// "phase `upgrade`", "probe `keystone`", "smoke tests after the upgrade".
    pub fn subject(&self) -> String {
        match self.kind {
            CheckKind::Smoke => format!("smoke tests {} the upgrade", self.name),
            CheckKind::Rally => format!("the Rally task {} the upgrade", self.name),
            CheckKind::Flow => "the flow".to_string(),
            kind => format!("{} `{}`", kind.as_str(), self.name),
        }
    }
}

/// What the flow runner saw, for [`judge`].
pub struct Evidence<'a> {
    pub phases: &'a [PhaseResult],
    /// Index of the first phase with `probes = true`.
    pub first_probed: Option<usize>,
    /// The probes could not start (a token could not be issued, say) at the first probed phase.
    pub probes_failed_to_start: bool,
    pub declared: &'a [DeclaredProbe],
    /// One summary per declared probe (a probe without sample has `total` 0).
    pub probes: &'a [ProbeSummary],
    /// How long probes ran, over all their windows.
    pub probed_ms: u64,
    pub smoke: &'a Smoke,
    pub rally: &'a Rally,
    pub resources: &'a [ResourceCheck],
    /// The signal that aborted the run ("SIGINT", "SIGTERM"), if one did while phases ran.
    pub aborted_by: Option<&'a str>,
}

/// The policy's answer: every report renders this.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub complete: bool,
    pub reasons: Vec<String>,
    pub headline: String,
    pub checks: Vec<Check>,
}

pub fn judge(evidence: &Evidence) -> Judgement {
    let mut checks: Vec<Check> = evidence
        .phases
        .iter()
        .enumerate()
        .map(|(i, phase)| phase_check(evidence, i, phase))
        .collect();
    checks.extend(
        evidence
            .declared
            .iter()
            .map(|declared| probe_check(evidence, declared)),
    );
    for resource in evidence.resources {
        let name = format!("{}/{}", resource.phase, resource.resource);
        checks.push(if resource.ok {
            Check::passed(CheckKind::Resource, &name)
        } else {
            let position = evidence
                .phases
                .iter()
                .position(|p| p.name == resource.phase);
            let blame = blame_at(evidence, position.unwrap_or(usize::MAX));
            Check::failed(CheckKind::Resource, &name, blame, resource.detail.clone())
        });
    }
    for (when, counts) in [
        ("before", evidence.smoke.before),
        ("after", evidence.smoke.after),
    ] {
        if let Some(counts) = counts {
            checks.push(smoke_check(evidence, when, counts));
        }
    }
    for (when, figures) in [
        ("before", &evidence.rally.before),
        ("after", &evidence.rally.after),
    ] {
        if let Some(figures) = figures {
            checks.push(rally_check(evidence, when, figures));
        }
    }

    let aborted = evidence.aborted_by.is_some();
    let unjudged_probe = checks.iter().any(|c| {
        c.kind == CheckKind::Probe
            && c.status == CheckStatus::Failed
            && c.blame == Some(Blame::Infrastructure)
    });
    let complete = !aborted
        && !unjudged_probe
        && evidence
            .phases
            .iter()
            .all(|p| p.status == PhaseStatus::Passed);
    checks.push(match evidence.aborted_by {
        Some(signal) => Check::new(
            CheckKind::Flow,
            "complete",
            CheckStatus::Skipped,
            format!("aborted by {signal}: clean-up ran, nothing after the interruption was judged"),
        ),
        None if complete => Check::passed(CheckKind::Flow, "complete"),
        None => Check::failed(
            CheckKind::Flow,
            "complete",
            Blame::Infrastructure,
            "the flow did not run to its end or a probe could not be judged: run it again"
                .to_string(),
        ),
    });

    let failed = |blame| {
        checks
            .iter()
            .filter(move |c| c.status == CheckStatus::Failed && c.blame == Some(blame))
    };
    let verdict = if aborted {
        Verdict::Aborted
    } else if failed(Blame::Upgrade).next().is_some() {
        Verdict::Failed
    } else if !complete || failed(Blame::Infrastructure).next().is_some() {
        Verdict::Incomplete
    } else {
        Verdict::Passed
    };
    let mut reasons: Vec<String> = Vec::new();
    if let Some(signal) = evidence.aborted_by {
        let during = evidence
            .phases
            .iter()
            .find(|p| p.status == PhaseStatus::Aborted)
            .map_or(String::new(), |p| format!(" during phase `{}`", p.name));
        reasons.push(format!("aborted by {signal}{during}"));
    }
    // The flow check restates the others: it is a reason only when nothing else is.
    let specific: Vec<String> = failed(Blame::Upgrade)
        .chain(failed(Blame::Infrastructure))
        .filter(|c| c.kind != CheckKind::Flow)
        .map(|c| format!("{}: {}", c.subject(), c.message))
        .collect();
    if specific.is_empty() {
        reasons.extend(
            failed(Blame::Infrastructure).map(|c| format!("{}: {}", c.subject(), c.message)),
        );
    }
    reasons.extend(specific);
    Judgement {
        verdict,
        complete,
        reasons,
        headline: headline(evidence),
        checks,
    }
}

/// The fault of a failure at phase `index`: the test bed's before the first probed phase.
fn blame_at(evidence: &Evidence, index: usize) -> Blame {
    let before_upgrade = match evidence.first_probed {
        Some(first) => index < first || (index == first && evidence.probes_failed_to_start),
        None => false,
    };
    if before_upgrade {
        Blame::Infrastructure
    } else {
        Blame::Upgrade
    }
}

fn phase_check(evidence: &Evidence, index: usize, phase: &PhaseResult) -> Check {
    match phase.status {
        PhaseStatus::Passed => Check::passed(CheckKind::Phase, &phase.name),
        PhaseStatus::Failed => {
            let error = phase.error.as_deref().unwrap_or("failed");
            let first_line = error.lines().next().unwrap_or(error).to_string();
            Check::failed(
                CheckKind::Phase,
                &phase.name,
                blame_at(evidence, index),
                first_line,
            )
        }
        PhaseStatus::Skipped => Check::new(
            CheckKind::Phase,
            &phase.name,
            CheckStatus::Skipped,
            if evidence.aborted_by.is_some() {
                "not run: the run was aborted".to_string()
            } else {
                "not run: an earlier phase failed".to_string()
            },
        ),
        PhaseStatus::Aborted => Check::new(
            CheckKind::Phase,
            &phase.name,
            CheckStatus::Skipped,
            format!(
                "aborted by {} while it ran",
                evidence.aborted_by.unwrap_or("a signal")
            ),
        ),
    }
}

fn probe_check(evidence: &Evidence, declared: &DeclaredProbe) -> Check {
    let name = declared.name.as_str();
    let Some(probe) = evidence.probes.iter().find(|p| p.probe == name) else {
        return Check::failed(
            CheckKind::Probe,
            name,
            Blame::Infrastructure,
            "no summary: the probe never ran, so it proves nothing".into(),
        );
    };
    let mut check = if let Some(signal) = evidence.aborted_by {
        Check::new(
            CheckKind::Probe,
            name,
            CheckStatus::NotJudged,
            format!(
                "aborted by {signal}: {} samples recorded, not judged",
                probe.total
            ),
        )
    } else if evidence.probed_ms == 0 {
        Check::new(
            CheckKind::Probe,
            name,
            CheckStatus::Skipped,
            "not run: the flow stopped before its probed phases".into(),
        )
    } else if let Some(why) = too_few_samples(evidence.probed_ms, declared.rate_hz, probe.total) {
        Check::failed(CheckKind::Probe, name, Blame::Infrastructure, why)
    } else if declared.budget.is_empty() {
        Check::new(
            CheckKind::Probe,
            name,
            CheckStatus::NotJudged,
            format!(
                "no availability budget: downtime {} measured, not judged",
                seconds(probe.down_time_ms)
            ),
        )
    } else {
        let over = declared.budget.exceeded(probe);
        if over.is_empty() {
            Check::passed(CheckKind::Probe, name)
        } else {
            Check::failed(CheckKind::Probe, name, Blame::Upgrade, over.join("; "))
        }
    };
    check.budget = Some(declared.budget);
    check
}

/// Why `total` samples are too few to judge a probe that ran `probed_ms` at `rate_hz`, if they
/// are.
fn too_few_samples(probed_ms: u64, rate_hz: f64, total: u64) -> Option<String> {
    let asked = rate_hz * probed_ms as f64 / 1000.0;
    let needed = (MIN_SAMPLES as f64).max((asked * MIN_RATE_SHARE).ceil()) as u64;
    if total >= needed {
        return None;
    }
    Some(if total == 0 {
        "no sample: the probe never ran, so it proves nothing".to_string()
    } else {
        format!(
            "too few samples to judge: {total}, at least {needed} needed (at least \
             {MIN_SAMPLES}, and a quarter of the {asked:.0} its rate of {rate_hz} Hz asks for \
             over {} of probing)",
            seconds(probed_ms)
        )
    })
}

fn smoke_check(evidence: &Evidence, when: &str, counts: TestCounts) -> Check {
    let message = if counts.failed > 0 {
        format!(
            "{} of {} smoke tests failed",
            counts.failed,
            counts.passed + counts.failed + counts.skipped
        )
    } else if counts.passed == 0 {
        "no smoke test passed".to_string()
    } else {
        return Check::passed(CheckKind::Smoke, when);
    };
    Check::failed(
        CheckKind::Smoke,
        when,
        validation_blame(evidence, when),
        message,
    )
}

/// `figures` as validation/scripts/rally-keystone.sh leaves them: `{SCENARIO: {iterations,
/// failures, ...}, "sla_passed": bool}`.
fn rally_check(evidence: &Evidence, when: &str, figures: &serde_json::Value) -> Check {
    let failures: f64 = figures
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, f)| f.get("failures")?.as_f64())
        .sum();
    let message = if figures.get("sla_passed").and_then(|v| v.as_bool()) != Some(true) {
        "the Rally SLA failed".to_string()
    } else if failures > 0.0 {
        format!("{failures} Rally iterations failed")
    } else {
        return Check::passed(CheckKind::Rally, when);
    };
    Check::failed(
        CheckKind::Rally,
        when,
        validation_blame(evidence, when),
        message,
    )
}

/// Validation before the upgrade is the test bed's (N must work), after it the upgrade's; in a
/// flow without probes there is no "before".
fn validation_blame(evidence: &Evidence, when: &str) -> Blame {
    if when == "before" && evidence.first_probed.is_some() {
        Blame::Infrastructure
    } else {
        Blame::Upgrade
    }
}

/// One line on availability, the same in every report: the worst outage measured and what the
/// budget made of it.
fn headline(evidence: &Evidence) -> String {
    if evidence.declared.is_empty() {
        return "no probes: availability not measured".to_string();
    }
    let total: u64 = evidence.probes.iter().map(|p| p.total).sum();
    if total == 0 {
        return "availability not measured: no probe sample".to_string();
    }
    let failed: u64 = evidence.probes.iter().map(|p| p.failed).sum();
    let worst = evidence
        .probes
        .iter()
        .max_by_key(|p| (p.down_time_ms, p.failed))
        .expect("some probe has samples");
    let measured = format!(
        "downtime {} measured{}",
        seconds(worst.down_time_ms),
        if worst.down_time_ms > 0 && evidence.probes.len() > 1 {
            format!(" ({})", worst.probe)
        } else {
            String::new()
        }
    );
    let requests = format!("{failed} of {total} requests failed");
    if evidence.declared.iter().all(|d| d.budget.is_empty()) {
        return format!("no availability budget: {measured}, not judged ({requests})");
    }
    let over = evidence.declared.iter().any(|d| {
        evidence
            .probes
            .iter()
            .find(|p| p.probe == d.name)
            .is_some_and(|p| !d.budget.exceeded(p).is_empty())
    });
    let judged = if evidence.aborted_by.is_some() {
        "not judged (aborted)"
    } else if over {
        "over the availability budget"
    } else {
        "within the availability budget"
    };
    format!("{judged}: {measured}, {requests}")
}

#[cfg(test)]
mod tests;
