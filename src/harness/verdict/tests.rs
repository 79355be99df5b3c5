//! Unit tests of the verdict policy.

use super::*;
use crate::harness::stats::{Sample, summarize};

fn phase(name: &str, status: PhaseStatus) -> PhaseResult {
    PhaseResult {
        name: name.into(),
        status,
        duration_s: 1.0,
        attempts: u32::from(status != PhaseStatus::Skipped),
        error: (status == PhaseStatus::Failed).then(|| "exited with status 7\nmore".into()),
        spans: vec![],
    }
}

/// `n` samples of `probe` at 10 Hz, failing where `fails(i)`.
fn probe(name: &str, n: u64, fails: impl Fn(u64) -> bool) -> ProbeSummary {
    let samples: Vec<Sample> = (0..n)
        .map(|i| Sample {
            phases: Default::default(),
            t_ms: 1000 + i * 100,
            probe: name.into(),
            ok: !fails(i),
            status: Some(200),
            latency_ms: 5.0,
            error: None,
        })
        .collect();
    summarize(name, &samples)
}

fn declared(name: &str, budget: Budget) -> DeclaredProbe {
    DeclaredProbe {
        name: name.into(),
        rate_hz: 10.0,
        budget,
    }
}

fn zero_failures() -> Budget {
    Budget {
        max_failed_requests: Some(0),
        ..Budget::default()
    }
}

struct Case {
    phases: Vec<PhaseResult>,
    declared: Vec<DeclaredProbe>,
    probes: Vec<ProbeSummary>,
    probed_ms: u64,
    smoke: Smoke,
    aborted_by: Option<&'static str>,
}

impl Case {
    /// deploy, validate-before, upgrade (probed), validate-after; 100 samples in 10 s.
    fn passing() -> Case {
        Case {
            phases: ["deploy", "validate-before", "upgrade", "validate-after"]
                .map(|n| phase(n, PhaseStatus::Passed))
                .to_vec(),
            declared: vec![declared("keystone", zero_failures())],
            probes: vec![probe("keystone", 100, |_| false)],
            probed_ms: 10_000,
            smoke: Smoke::default(),
            aborted_by: None,
        }
    }

    fn judge(&self) -> Judgement {
        judge(&Evidence {
            phases: &self.phases,
            first_probed: Some(2),
            probes_failed_to_start: false,
            declared: &self.declared,
            probes: &self.probes,
            probed_ms: self.probed_ms,
            smoke: &self.smoke,
            rally: &Rally::default(),
            resources: &[],
            aborted_by: self.aborted_by,
        })
    }
}

fn check<'a>(j: &'a Judgement, kind: CheckKind, name: &str) -> &'a Check {
    j.checks
        .iter()
        .find(|c| c.kind == kind && c.name == name)
        .unwrap_or_else(|| panic!("no check {kind:?} {name}"))
}

#[test]
fn a_clean_run_passes_within_its_budget() {
    let j = Case::passing().judge();
    assert_eq!((j.verdict, j.complete), (Verdict::Passed, true));
    assert!(j.reasons.is_empty());
    assert_eq!(
        j.headline,
        "within the availability budget: downtime 0.0 s measured, 0 of 100 requests failed"
    );
    assert!(j.checks.iter().all(|c| c.status == CheckStatus::Passed));
    assert_eq!(j.checks.last().unwrap().name, "complete");
}

#[test]
fn a_probe_over_its_budget_fails_the_upgrade() {
    let mut case = Case::passing();
    // 7 of the 11 requests from 0.3 s on fail: the JUnit case that passed this is fixed.
    case.probes = vec![probe("keystone", 11, |i| i >= 4)];
    case.probed_ms = 1_100;
    let j = case.judge();
    assert_eq!(j.verdict, Verdict::Failed);
    assert_eq!(j.verdict.exit_code(), 1);
    let keystone = check(&j, CheckKind::Probe, "keystone");
    assert_eq!(keystone.status, CheckStatus::Failed);
    assert_eq!(keystone.blame, Some(Blame::Upgrade));
    assert_eq!(
        keystone.message,
        "7 of 11 requests failed (at most 0 allowed)"
    );
    assert_eq!(
        j.reasons,
        ["probe `keystone`: 7 of 11 requests failed (at most 0 allowed)"]
    );
    assert!(j.headline.starts_with("over the availability budget: "));
}

#[test]
fn no_budget_is_reported_and_not_judged() {
    let mut case = Case::passing();
    case.declared = vec![declared("keystone", Budget::default())];
    // 7 s down of 10 s.
    case.probes = vec![probe("keystone", 100, |i| (20..90).contains(&i))];
    let j = case.judge();
    assert_eq!(j.verdict, Verdict::Passed);
    assert_eq!(
        j.headline,
        "no availability budget: downtime 7.0 s measured, not judged (70 of 100 requests failed)"
    );
    let keystone = check(&j, CheckKind::Probe, "keystone");
    assert_eq!(keystone.status, CheckStatus::NotJudged);
    assert_eq!(
        keystone.message,
        "no availability budget: downtime 7.0 s measured, not judged"
    );
}

#[test]
fn a_declared_probe_that_never_ran_makes_the_run_incomplete() {
    let mut case = Case::passing();
    case.declared.push(declared("nova", zero_failures()));
    case.probes.push(summarize("nova", &[]));
    let j = case.judge();
    assert_eq!((j.verdict, j.complete), (Verdict::Incomplete, false));
    assert_eq!(j.verdict.exit_code(), 3);
    let nova = check(&j, CheckKind::Probe, "nova");
    assert_eq!(nova.blame, Some(Blame::Infrastructure));
    assert_eq!(
        j.reasons,
        ["probe `nova`: no sample: the probe never ran, so it proves nothing"]
    );
    assert_eq!(
        check(&j, CheckKind::Flow, "complete").status,
        CheckStatus::Failed
    );
}

#[test]
fn too_few_samples_make_the_run_incomplete() {
    // Fewer than MIN_SAMPLES.
    let mut case = Case::passing();
    case.probes = vec![probe("keystone", 4, |_| false)];
    case.probed_ms = 400;
    let j = case.judge();
    assert_eq!(j.verdict, Verdict::Incomplete);
    assert!(
        check(&j, CheckKind::Probe, "keystone")
            .message
            .starts_with("too few samples to judge: 4, at least 5 needed"),
        "{:?}",
        j.checks
    );
    // A quarter of the rate: 10 Hz over 10 s asks for 100, 24 are too few, 25 enough.
    assert!(too_few_samples(10_000, 10.0, 24).is_some());
    assert_eq!(too_few_samples(10_000, 10.0, 25), None);
    assert_eq!(too_few_samples(1_000, 1.0, 5), None);
}

#[test]
fn a_failure_before_the_probes_is_the_test_beds() {
    let mut case = Case::passing();
    case.phases[1] = phase("validate-before", PhaseStatus::Failed);
    case.phases[2] = phase("upgrade", PhaseStatus::Skipped);
    case.phases[3] = phase("validate-after", PhaseStatus::Skipped);
    case.probes = vec![summarize("keystone", &[])];
    case.probed_ms = 0;
    let j = case.judge();
    assert_eq!(j.verdict, Verdict::Incomplete);
    assert_eq!(
        check(&j, CheckKind::Phase, "validate-before").blame,
        Some(Blame::Infrastructure)
    );
    // The probe did not run because the flow stopped first: skipped, not a second failure.
    assert_eq!(
        check(&j, CheckKind::Probe, "keystone").status,
        CheckStatus::Skipped
    );
    assert_eq!(j.reasons, ["phase `validate-before`: exited with status 7"]);
}

#[test]
fn a_failure_from_the_first_probed_phase_on_is_the_upgrades() {
    let mut case = Case::passing();
    case.phases[2] = phase("upgrade", PhaseStatus::Failed);
    case.phases[3] = phase("validate-after", PhaseStatus::Skipped);
    let j = case.judge();
    assert_eq!((j.verdict, j.complete), (Verdict::Failed, false));
    assert_eq!(j.reasons, ["phase `upgrade`: exited with status 7"]);
    // Smoke after the upgrade is the upgrade's, before it the test bed's.
    case.phases[2] = phase("upgrade", PhaseStatus::Passed);
    case.phases[3] = phase("validate-after", PhaseStatus::Passed);
    let bad = TestCounts {
        passed: 3,
        failed: 1,
        skipped: 0,
    };
    case.smoke.after = Some(bad);
    assert_eq!(case.judge().verdict, Verdict::Failed);
    case.smoke = Smoke {
        before: Some(bad),
        after: None,
    };
    let j = case.judge();
    assert_eq!(j.verdict, Verdict::Incomplete);
    assert_eq!(
        j.reasons,
        ["smoke tests before the upgrade: 1 of 4 smoke tests failed"]
    );
}

#[test]
fn an_aborted_run_is_aborted_and_fails_nothing() {
    let mut case = Case::passing();
    case.phases[2] = phase("upgrade", PhaseStatus::Aborted);
    case.phases[3] = phase("validate-after", PhaseStatus::Skipped);
    case.probes = vec![probe("keystone", 30, |i| i > 10)];
    case.aborted_by = Some("SIGTERM");
    let j = case.judge();
    assert_eq!((j.verdict, j.complete), (Verdict::Aborted, false));
    assert_eq!(j.verdict.exit_code(), 130);
    assert!(
        j.checks.iter().all(|c| c.status != CheckStatus::Failed),
        "{:?}",
        j.checks
    );
    assert_eq!(j.reasons, ["aborted by SIGTERM during phase `upgrade`"]);
    assert_eq!(
        check(&j, CheckKind::Probe, "keystone").status,
        CheckStatus::NotJudged
    );
}
