//! JUnit XML for Jenkins' junit plugin: one test suite per run, one test case per check of the
//! verdict policy (harness/verdict.rs: each phase, each declared probe, each resource check, smoke
//! tests and the Rally task when they ran, the flow's completeness), so a red build names what
//! broke. The outcome of every case is the policy's; this file only renders it.
//!
//! - failed checks are `<failure>`; skipped and not-judged ones (a probe without a budget, an
//!   aborted run) are `<skipped>` with the reason, so an aborted run has no failure;
//! - every classname is `<env>.<flow>.<kind>`, so Jenkins shows one package per run with a class
//!   per kind (phase, probe, resource, smoke, rally, flow);
//! - the output validates against the JUnit XSD of Jenkins' xunit plugin
//!   (fixtures/junit/junit-10.xsd; tests/ci_formats.rs checks it with xmllint).

use std::fmt::Write;

use crate::harness::stats::ProbeSummary;
use crate::harness::summary::RunSummary;
use crate::harness::verdict::{Check, CheckKind, CheckStatus};
use crate::report::escape_markup;

pub fn junit_xml(summary: &RunSummary) -> String {
    let prefix = format!("{}.{}", summary.env, summary.flow);
    let cases: Vec<Case> = summary
        .checks
        .iter()
        .map(|check| case(summary, &prefix, check))
        .collect();
    render(summary, &prefix, &cases)
}

struct Case<'a> {
    classname: String,
    check: &'a Check,
    time_s: f64,
    /// The failure's text beside its one-line message.
    detail: String,
    out: String,
}

fn case<'a>(summary: &RunSummary, prefix: &str, check: &'a Check) -> Case<'a> {
    let mut case = Case {
        classname: format!("{prefix}.{}", check.kind.as_str()),
        check,
        time_s: 0.0,
        detail: check.message.clone(),
        out: String::new(),
    };
    match check.kind {
        CheckKind::Phase => {
            if let Some(phase) = summary.phases.iter().find(|p| p.name == check.name) {
                case.time_s = phase.duration_s;
                case.out = format!("attempts: {}", phase.attempts);
                if let Some(error) = &phase.error {
                    case.detail = error.clone();
                }
            }
        }
        CheckKind::Probe => {
            if let Some(probe) = summary.probes.iter().find(|p| p.probe == check.name) {
                case.time_s = secs(probe.end_ms - probe.start_ms);
                case.out = probe_figures(probe, check);
                if !probe.outages.is_empty() {
                    let outages: Vec<String> = probe
                        .outages
                        .iter()
                        .map(|o| format!("{:.1}s-{:.1}s", secs(o.start_ms), secs(o.end_ms)))
                        .collect();
                    case.detail = format!("outages: {}", outages.join(", "));
                }
            }
        }
        CheckKind::Resource => {
            if let Some(resource) = summary
                .resources
                .iter()
                .find(|r| format!("{}/{}", r.phase, r.resource) == check.name)
            {
                case.out = resource.detail.clone();
            }
        }
        CheckKind::Smoke => {
            let counts = match check.name.as_str() {
                "before" => summary.smoke.before,
                _ => summary.smoke.after,
            };
            if let Some(c) = counts {
                case.out = format!(
                    "passed {}, failed {}, skipped {}",
                    c.passed, c.failed, c.skipped
                );
                case.detail = case.out.clone();
            }
        }
        CheckKind::Rally => {
            let figures = match check.name.as_str() {
                "before" => &summary.rally.before,
                _ => &summary.rally.after,
            };
            case.out = rally_lines(figures.as_ref());
            case.detail = case.out.clone();
        }
        CheckKind::Flow => {
            case.time_s = summary.duration_s;
            case.out = format!(
                "verdict: {}\navailability: {}",
                summary.verdict.as_str(),
                summary.headline
            );
            case.detail = summary.reasons.join("\n");
        }
    }
    case
}

fn probe_figures(probe: &ProbeSummary, check: &Check) -> String {
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
    let budget = match check.budget {
        Some(b) if !b.is_empty() => b.describe(),
        _ => "none (not judged)".to_string(),
    };
    format!(
        "requests: {} ok, {} failed\nrate: {}\nuptime: {:.2} %\navailability: {:.2} %\n\
         down time: {:.1} s (longest outage {:.1} s)\nlatency p50/p95/p99: {} / {} / {}\n\
         budget: {budget}",
        probe.successful,
        probe.failed,
        probe.rate_line(),
        probe.uptime_pct,
        probe.availability_pct,
        secs(probe.down_time_ms),
        secs(probe.longest_outage_ms),
        ms(probe.latency_p50_ms),
        ms(probe.latency_p95_ms),
        ms(probe.latency_p99_ms),
    )
}

/// `figures` as validation/scripts/rally-keystone.sh leaves them: `{SCENARIO: {iterations,
/// failures, duration_avg, duration_p95}, "sla_passed": bool}`, one line per scenario.
fn rally_lines(figures: Option<&serde_json::Value>) -> String {
    let number = |v: &serde_json::Value, key: &str| v.get(key).and_then(|n| n.as_f64());
    let mut lines = Vec::new();
    for (scenario, f) in figures
        .and_then(|f| f.as_object())
        .into_iter()
        .flatten()
        .filter(|(_, f)| f.is_object())
    {
        let secs = |key| number(f, key).map_or("-".to_string(), |s| format!("{s:.3} s"));
        lines.push(format!(
            "{scenario}: {} iterations, {} failed, avg {}, p95 {}",
            number(f, "iterations").unwrap_or(0.0),
            number(f, "failures").unwrap_or(0.0),
            secs("duration_avg"),
            secs("duration_p95"),
        ));
    }
    lines.join("\n")
}

fn render(summary: &RunSummary, prefix: &str, cases: &[Case]) -> String {
    let count = |status: &[CheckStatus]| {
        cases
            .iter()
            .filter(|c| status.contains(&c.check.status))
            .count()
    };
    let failures = count(&[CheckStatus::Failed]);
    let skipped = count(&[CheckStatus::Skipped, CheckStatus::NotJudged]);
    let attr = |s: &str| escape_markup(s, true);
    let text = |s: &str| escape_markup(s, false);
    // The xunit XSD allows `skipped` on a suite only, not on <testsuites>.
    let counts = format!(
        "tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\"",
        cases.len(),
        summary.duration_s
    );

    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = attr(&format!("envbuild.{prefix}"));
    let _ = writeln!(xml, "<testsuites name=\"{suite}\" {counts}>");
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{suite}\" {counts} skipped=\"{skipped}\" timestamp=\"{}\">",
        attr(&summary.started)
    );
    xml.push_str("    <properties>\n");
    let mut properties: Vec<(String, &str)> = vec![
        ("from_version".into(), summary.from_version.as_str()),
        ("to_version".into(), &summary.to_version),
        ("started".into(), &summary.started),
        ("verdict".into(), summary.verdict.as_str()),
        ("availability".into(), &summary.headline),
        ("envbuild_version".into(), &summary.envbuild_version),
    ];
    properties.extend(
        summary
            .vars
            .iter()
            .map(|(k, v)| (format!("var.{k}"), v.as_str())),
    );
    properties.extend(
        summary
            .ci
            .iter()
            .map(|(k, v)| (format!("ci.{k}"), v.as_str())),
    );
    for (name, value) in properties {
        let _ = writeln!(
            xml,
            "      <property name=\"{}\" value=\"{}\"/>",
            attr(&name),
            attr(value)
        );
    }
    xml.push_str("    </properties>\n");
    for case in cases {
        let _ = writeln!(
            xml,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            attr(&case.classname),
            attr(&case.check.name),
            case.time_s
        );
        match case.check.status {
            CheckStatus::Passed => {}
            CheckStatus::Failed => {
                let _ = writeln!(
                    xml,
                    "      <failure message=\"{}\">{}</failure>",
                    attr(&case.check.message),
                    text(&case.detail)
                );
            }
            CheckStatus::Skipped | CheckStatus::NotJudged => {
                let _ = writeln!(
                    xml,
                    "      <skipped message=\"{}\"/>",
                    attr(&case.check.message)
                );
            }
        }
        if !case.out.is_empty() {
            let _ = writeln!(xml, "      <system-out>{}</system-out>", text(&case.out));
        }
        xml.push_str("    </testcase>\n");
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::budget::Budget;
    use crate::harness::record::PhaseStatus;
    use crate::harness::summary::fixture::{declared, rejudge, run};
    use serde_json::{Value, json};

    /// Parses `xml` with Python's expat-based ElementTree (a strict XML 1.0 parser) and returns
    /// the suite's attributes and each test case.
    fn parse(xml: &str) -> Value {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        std::fs::write(&path, xml).unwrap();
        let script = r#"
import json, sys, xml.etree.ElementTree as E
root = E.parse(sys.argv[1]).getroot()
suites = root.findall('testsuite')
def case(c):
    f = c.find('failure')
    return {'classname': c.get('classname'), 'name': c.get('name'), 'time': c.get('time'),
            'failure': None if f is None else f.get('message'),
            'failure_text': None if f is None else f.text,
            'skipped': c.find('skipped') is not None, 'out': c.findtext('system-out')}
print(json.dumps({'root': root.tag, 'root_attrs': root.attrib, 'suites': len(suites),
                  'suite': suites[0].attrib, 'cases': [case(c) for c in suites[0].iter('testcase')]}))
"#;
        let output = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "not well-formed XML: {}\n{xml}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn case<'a>(parsed: &'a Value, classname: &str, name: &str) -> &'a Value {
        parsed["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["classname"] == classname && c["name"] == name)
            .unwrap_or_else(|| panic!("no test case {classname} {name}"))
    }

    /// Validates `xml` against the xunit plugin's JUnit schema with xmllint.
    pub(crate) fn assert_valid_junit(xml: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        std::fs::write(&path, xml).unwrap();
        let xsd = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/junit/junit-10.xsd");
        let output = std::process::Command::new("xmllint")
            .args(["--noout", "--schema", xsd])
            .arg(&path)
            .output()
            .expect("xmllint (Debian libxml2-utils; dev/setup installs it)");
        assert!(
            output.status.success(),
            "junit.xml does not validate: {}\n{xml}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn one_case_per_check_with_the_policys_outcome() {
        let (summary, _) = run();
        let xml = junit_xml(&summary);
        assert_valid_junit(&xml);
        let parsed = parse(&xml);
        assert_eq!(parsed["root"], "testsuites");
        assert_eq!(parsed["suites"], 1);
        // 5 phases, 2 probes, 3 resource checks, smoke and Rally before and after, the flow.
        // Failed: validate-after, probe keystone (4 failed requests, budget 0), project demo,
        // smoke after, Rally after (SLA), the flow (a phase did not run). Skipped:
        // resources-cleanup.
        let suite = &parsed["suite"];
        assert_eq!(suite["name"], "envbuild.aio-lite.upgrade");
        assert_eq!(
            (&suite["tests"], &suite["failures"], &suite["errors"]),
            (&json!("15"), &json!("6"), &json!("0"))
        );
        assert_eq!(
            (&suite["skipped"], &suite["time"]),
            (&json!("1"), &json!("65.000"))
        );
        assert_eq!(suite["timestamp"], "2025-03-01T10:00:00Z");
        assert_eq!(parsed["root_attrs"]["tests"], "15");
        assert_eq!(parsed["root_attrs"].get("skipped"), None);
        assert_eq!(
            parsed["cases"].as_array().unwrap().len(),
            summary.checks.len()
        );

        let upgrade = case(&parsed, "aio-lite.upgrade.phase", "upgrade");
        assert_eq!(
            (&upgrade["time"], &upgrade["failure"]),
            (&json!("20.250"), &Value::Null)
        );
        assert_eq!(upgrade["out"], "attempts: 2");
        let failed = case(&parsed, "aio-lite.upgrade.phase", "validate-after");
        assert_eq!(
            failed["failure"],
            "smoke: 1 test failed: test_list_users <unexpected 500 & \"retry\">"
        );
        assert_eq!(
            case(&parsed, "aio-lite.upgrade.phase", "resources-cleanup")["skipped"],
            true
        );

        let keystone = case(&parsed, "aio-lite.upgrade.probe", "keystone");
        assert_eq!(
            keystone["failure"],
            "4 of 20 requests failed (at most 0 allowed)"
        );
        assert_eq!(
            keystone["failure_text"],
            "outages: 33.0s-36.0s, 40.0s-41.0s"
        );
        assert_eq!(keystone["time"], "19.000");
        let out = keystone["out"].as_str().unwrap();
        assert!(out.contains("uptime: 80.00 %"), "{out}");
        assert!(out.contains("budget: at most 0 failed requests"), "{out}");
        assert_eq!(
            case(&parsed, "aio-lite.upgrade.probe", "token")["failure"],
            Value::Null
        );

        let gone = case(
            &parsed,
            "aio-lite.upgrade.resource",
            "validate-after/project demo",
        );
        assert_eq!(gone["failure"], "gone after the upgrade");
        let after = case(&parsed, "aio-lite.upgrade.smoke", "after");
        assert_eq!(after["failure"], "1 of 13 smoke tests failed");
        assert_eq!(
            case(&parsed, "aio-lite.upgrade.smoke", "before")["failure"],
            Value::Null
        );
        let rally = case(&parsed, "aio-lite.upgrade.rally", "after");
        assert_eq!(rally["failure"], "the Rally SLA failed");
        assert_eq!(
            rally["out"],
            "KeystoneBasic.authenticate_user_and_validate_token: 6 iterations, 1 failed, \
             avg 0.470 s, p95 0.610 s"
        );
        // The flow's case sits in the run's package, beside the others.
        let flow = case(&parsed, "aio-lite.upgrade.flow", "complete");
        assert!(flow["failure"].as_str().unwrap().contains("run it again"));
        assert!(
            flow["out"]
                .as_str()
                .unwrap()
                .starts_with("verdict: failed\n")
        );
    }

    #[test]
    fn a_probe_without_budget_is_skipped_and_says_what_it_measured() {
        let (mut summary, _) = run();
        rejudge(&mut summary, &declared(Budget::default()), Some(2));
        let xml = junit_xml(&summary);
        assert_valid_junit(&xml);
        let parsed = parse(&xml);
        let keystone = case(&parsed, "aio-lite.upgrade.probe", "keystone");
        assert_eq!(keystone["skipped"], true);
        assert_eq!(keystone["failure"], Value::Null);
        assert!(xml.contains(
            "<skipped message=\"no availability budget: downtime 4.0 s measured, not judged\"/>"
        ));
        assert!(xml.contains(
            "<property name=\"availability\" value=\"no availability budget: downtime 4.0 s \
             measured (keystone), not judged (4 of 40 requests failed)\"/>"
        ));
    }

    #[test]
    fn smoke_and_rally_cases_exist_only_when_they_ran() {
        let (mut summary, _) = run();
        summary.smoke = Default::default();
        summary.rally = Default::default();
        summary.phases[3].status = PhaseStatus::Passed;
        rejudge(&mut summary, &declared(Budget::default()), Some(2));
        let parsed = parse(&junit_xml(&summary));
        let classes: Vec<&str> = parsed["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["classname"].as_str().unwrap())
            .collect();
        assert!(
            !classes
                .iter()
                .any(|c| c.ends_with(".smoke") || c.ends_with(".rally")),
            "{classes:?}"
        );
    }

    #[test]
    fn nasty_characters_survive_as_well_formed_xml() {
        let (mut summary, _) = run();
        let nasty = "a<b>&c\"d'e ]]> \u{0}\u{7}\u{1b}[31m\u{ffff} \u{1F600}\ttab";
        summary.phases[3].name = format!("phase {nasty}");
        summary.phases[3].error = Some(format!("first {nasty}\nsecond line"));
        summary.resources[2].detail = nasty.to_string();
        summary.from_version = nasty.to_string();
        rejudge(
            &mut summary,
            &declared(Budget {
                max_failed_requests: Some(0),
                ..Budget::default()
            }),
            Some(2),
        );
        let xml = junit_xml(&summary);
        assert_valid_junit(&xml);
        let parsed = parse(&xml);

        let cleaned = "a<b>&c\"d'e ]]> \u{fffd}\u{fffd}\u{fffd}[31m\u{fffd} \u{1F600}\ttab";
        let phase_name = format!("phase {cleaned}");
        let failed = case(&parsed, "aio-lite.upgrade.phase", &phase_name);
        // The message is the error's first line, the text all of it; tabs survive attributes.
        assert_eq!(failed["failure"], format!("first {cleaned}"));
        assert_eq!(
            failed["failure_text"],
            format!("first {cleaned}\nsecond line")
        );
        let resource = case(
            &parsed,
            "aio-lite.upgrade.resource",
            "validate-after/project demo",
        );
        assert_eq!(resource["failure"], cleaned);
        assert_eq!(resource["out"], cleaned);
        assert!(!xml.contains('\u{0}') && !xml.contains('\u{1b}'));
    }
}
