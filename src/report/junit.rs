//! JUnit XML for Jenkins' junit plugin: one test suite per run, one test case per thing that can
//! fail (each phase, each probe, each resource check, smoke before and after, the flow's
//! completeness), so a red build names what broke.
//!
//! Policies, beside a phase's own status:
//! - a probe fails when more than `max_failed_requests` of its requests failed, or when it has no
//!   sample at all (a probe that never ran proves nothing);
//! - smoke tests fail when one failed or none passed, and are skipped when they did not run;
//! - the Rally task fails when its SLA failed or an iteration failed, and is skipped when it did
//!   not run;
//! - "flow complete" fails when a phase was skipped: the run must be made again (an incomplete run
//!   otherwise shows as skipped cases only, which Jenkins does not mark).

use std::fmt::Write;

use crate::harness::stats::ProbeSummary;
use crate::report::escape_markup;
use crate::report::json::{PhaseStatus, RunSummary, TestCounts};

pub fn junit_xml(summary: &RunSummary, max_failed_requests: u64) -> String {
    let prefix = format!("{}.{}", summary.env, summary.flow);
    let mut cases: Vec<Case> = Vec::new();
    for phase in &summary.phases {
        let outcome = match phase.status {
            PhaseStatus::Passed => Outcome::Passed,
            PhaseStatus::Failed => {
                let error = phase.error.as_deref().unwrap_or("failed");
                Outcome::failed(error.lines().next().unwrap_or(error), error)
            }
            PhaseStatus::Skipped => Outcome::Skipped("not run: an earlier phase failed".into()),
        };
        cases.push(Case {
            classname: format!("{prefix}.phase"),
            name: phase.name.clone(),
            time_s: phase.duration_s,
            outcome,
            out: format!("attempts: {}", phase.attempts),
        });
    }
    for probe in &summary.probes {
        cases.push(probe_case(&prefix, probe, max_failed_requests));
    }
    for check in &summary.resources {
        cases.push(Case {
            classname: format!("{prefix}.resource"),
            name: format!("{}/{}", check.phase, check.resource),
            time_s: 0.0,
            outcome: if check.ok {
                Outcome::Passed
            } else {
                Outcome::failed(&check.detail, &check.detail)
            },
            out: check.detail.clone(),
        });
    }
    for (name, counts) in [
        ("before", summary.smoke.before),
        ("after", summary.smoke.after),
    ] {
        cases.push(smoke_case(&prefix, name, counts));
    }
    for (name, figures) in [
        ("before", &summary.rally.before),
        ("after", &summary.rally.after),
    ] {
        cases.push(rally_case(&prefix, name, figures.as_ref()));
    }
    cases.push(Case {
        classname: prefix.clone(),
        name: "flow complete".into(),
        time_s: summary.duration_s,
        outcome: if summary.complete {
            Outcome::Passed
        } else {
            let message = "the flow stopped before its end: run it again";
            Outcome::failed(message, message)
        },
        out: format!("verdict: {}", summary.verdict.as_str()),
    });
    render(summary, &prefix, &cases)
}

struct Case {
    classname: String,
    name: String,
    time_s: f64,
    outcome: Outcome,
    out: String,
}

enum Outcome {
    Passed,
    Failed { message: String, detail: String },
    Skipped(String),
}

impl Outcome {
    fn failed(message: &str, detail: &str) -> Self {
        Outcome::Failed {
            message: message.to_string(),
            detail: detail.to_string(),
        }
    }
}

fn probe_case(prefix: &str, probe: &ProbeSummary, max_failed_requests: u64) -> Case {
    let outcome = if probe.total == 0 {
        Outcome::failed("no sample: the probe never ran", "")
    } else if probe.failed > max_failed_requests {
        let message = format!(
            "{} of {} requests failed (at most {max_failed_requests} allowed)",
            probe.failed, probe.total
        );
        let outages: Vec<String> = probe
            .outages
            .iter()
            .map(|o| format!("{:.1}s-{:.1}s", secs(o.start_ms), secs(o.end_ms)))
            .collect();
        Outcome::failed(&message, &format!("outages: {}", outages.join(", ")))
    } else {
        Outcome::Passed
    };
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
    Case {
        classname: format!("{prefix}.probe"),
        name: probe.probe.clone(),
        time_s: secs(probe.end_ms - probe.start_ms),
        outcome,
        out: format!(
            "requests: {} ok, {} failed\nuptime: {:.2} %\navailability: {:.2} %\n\
             down time: {:.1} s (longest outage {:.1} s)\nlatency p50/p95/p99: {} / {} / {}",
            probe.successful,
            probe.failed,
            probe.uptime_pct,
            probe.availability_pct,
            secs(probe.down_time_ms),
            secs(probe.longest_outage_ms),
            ms(probe.latency_p50_ms),
            ms(probe.latency_p95_ms),
            ms(probe.latency_p99_ms),
        ),
    }
}

fn smoke_case(prefix: &str, name: &str, counts: Option<TestCounts>) -> Case {
    let (outcome, out) = match counts {
        None => (
            Outcome::Skipped("smoke tests did not run".into()),
            String::new(),
        ),
        Some(c) => {
            let out = format!(
                "passed {}, failed {}, skipped {}",
                c.passed, c.failed, c.skipped
            );
            let outcome = if c.failed > 0 {
                let message = format!(
                    "{} of {} smoke tests failed",
                    c.failed,
                    c.passed + c.failed + c.skipped
                );
                Outcome::failed(&message, &out)
            } else if c.passed == 0 {
                Outcome::failed("no smoke test passed", &out)
            } else {
                Outcome::Passed
            };
            (outcome, out)
        }
    };
    Case {
        classname: format!("{prefix}.smoke"),
        name: name.to_string(),
        time_s: 0.0,
        outcome,
        out,
    }
}

/// `figures` as validation/scripts/rally-keystone.sh leaves them: `{SCENARIO: {iterations,
/// failures, duration_avg, duration_p95}, "sla_passed": bool}`.
fn rally_case(prefix: &str, name: &str, figures: Option<&serde_json::Value>) -> Case {
    let classname = format!("{prefix}.rally");
    let Some(figures) = figures else {
        return Case {
            classname,
            name: name.to_string(),
            time_s: 0.0,
            outcome: Outcome::Skipped("the Rally task did not run".into()),
            out: String::new(),
        };
    };
    let number = |v: &serde_json::Value, key: &str| v.get(key).and_then(|n| n.as_f64());
    let mut lines = Vec::new();
    let mut failures = 0.0;
    if let Some(map) = figures.as_object() {
        for (scenario, f) in map.iter().filter(|(_, f)| f.is_object()) {
            let failed = number(f, "failures").unwrap_or(0.0);
            failures += failed;
            let secs = |key| number(f, key).map_or("-".to_string(), |s| format!("{s:.3} s"));
            lines.push(format!(
                "{scenario}: {} iterations, {failed} failed, avg {}, p95 {}",
                number(f, "iterations").unwrap_or(0.0),
                secs("duration_avg"),
                secs("duration_p95"),
            ));
        }
    }
    let out = lines.join("\n");
    let sla = figures.get("sla_passed").and_then(|v| v.as_bool());
    let outcome = if sla != Some(true) {
        Outcome::failed("the Rally SLA failed", &out)
    } else if failures > 0.0 {
        Outcome::failed(&format!("{failures} Rally iterations failed"), &out)
    } else {
        Outcome::Passed
    };
    Case {
        classname,
        name: name.to_string(),
        time_s: 0.0,
        outcome,
        out,
    }
}

fn render(summary: &RunSummary, prefix: &str, cases: &[Case]) -> String {
    let failures = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed { .. }))
        .count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
        .count();
    let attr = |s: &str| escape_markup(s, true);
    let text = |s: &str| escape_markup(s, false);
    let counts = format!(
        "tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\"",
        cases.len(),
        summary.duration_s
    );

    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = attr(&format!("envbuild.{prefix}"));
    let _ = writeln!(xml, "<testsuites name=\"{suite}\" {counts}>");
    let _ = writeln!(xml, "  <testsuite name=\"{suite}\" {counts}>");
    xml.push_str("    <properties>\n");
    for (name, value) in [
        ("from_version", summary.from_version.as_str()),
        ("to_version", &summary.to_version),
        ("started", &summary.started),
        ("verdict", summary.verdict.as_str()),
        ("envbuild_version", &summary.envbuild_version),
    ] {
        let _ = writeln!(
            xml,
            "      <property name=\"{name}\" value=\"{}\"/>",
            attr(value)
        );
    }
    xml.push_str("    </properties>\n");
    for case in cases {
        let _ = writeln!(
            xml,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            attr(&case.classname),
            attr(&case.name),
            case.time_s
        );
        match &case.outcome {
            Outcome::Passed => {}
            Outcome::Failed { message, detail } => {
                let _ = writeln!(
                    xml,
                    "      <failure message=\"{}\">{}</failure>",
                    attr(message),
                    text(detail)
                );
            }
            Outcome::Skipped(message) => {
                let _ = writeln!(xml, "      <skipped message=\"{}\"/>", attr(message));
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
    use crate::report::json::tests::run;
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

    #[test]
    fn one_suite_with_a_case_per_phase_probe_resource_and_smoke() {
        let (summary, _) = run();
        let parsed = parse(&junit_xml(&summary, 0));
        assert_eq!(parsed["root"], "testsuites");
        assert_eq!(parsed["suites"], 1);
        // 5 phases, 2 probes, 3 resource checks, smoke and Rally before and after, flow complete.
        // Failed: validate-after, probe keystone (4 failed requests), project demo, smoke after,
        // Rally after (SLA).
        let suite = &parsed["suite"];
        assert_eq!(suite["name"], "envbuild.aio-lite.upgrade");
        assert_eq!(
            (&suite["tests"], &suite["failures"], &suite["errors"]),
            (&json!("15"), &json!("5"), &json!("0"))
        );
        assert_eq!(
            (&suite["skipped"], &suite["time"]),
            (&json!("0"), &json!("65.000"))
        );
        assert_eq!(parsed["root_attrs"]["tests"], "15");
        assert_eq!(parsed["cases"].as_array().unwrap().len(), 15);

        let upgrade = case(&parsed, "aio-lite.upgrade.phase", "upgrade");
        assert_eq!(
            (&upgrade["time"], &upgrade["failure"]),
            (&json!("12.000"), &Value::Null)
        );
        assert_eq!(upgrade["out"], "attempts: 2");
        let failed = case(&parsed, "aio-lite.upgrade.phase", "validate-after");
        assert_eq!(
            failed["failure"],
            "smoke: 1 test failed: test_list_users <unexpected 500 & \"retry\">"
        );

        let keystone = case(&parsed, "aio-lite.upgrade.probe", "keystone");
        assert_eq!(
            keystone["failure"],
            "4 of 20 requests failed (at most 0 allowed)"
        );
        assert_eq!(keystone["failure_text"], "outages: 8.0s-11.0s, 15.0s-16.0s");
        assert_eq!(keystone["time"], "19.000");
        assert!(
            keystone["out"]
                .as_str()
                .unwrap()
                .contains("uptime: 80.00 %")
        );
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
        assert_eq!(
            case(&parsed, "aio-lite.upgrade.rally", "before")["failure"],
            Value::Null
        );
        assert_eq!(
            case(&parsed, "aio-lite.upgrade", "flow complete")["failure"],
            Value::Null
        );
    }

    #[test]
    fn failed_request_budget_skipped_phases_and_incomplete_runs() {
        let (mut summary, _) = run();
        summary.phases[3].status = PhaseStatus::Passed;
        summary.phases[4].status = PhaseStatus::Skipped;
        summary.complete = false;
        summary.smoke.after = None;
        summary.rally.after = None;
        summary.resources.pop();
        let parsed = parse(&junit_xml(&summary, 4));
        let suite = &parsed["suite"];
        assert_eq!(
            (&suite["tests"], &suite["failures"], &suite["skipped"]),
            (&json!("14"), &json!("1"), &json!("3"))
        );
        assert_eq!(
            case(&parsed, "aio-lite.upgrade.rally", "after")["skipped"],
            true
        );
        assert_eq!(
            case(&parsed, "aio-lite.upgrade.probe", "keystone")["failure"],
            Value::Null
        );
        assert_eq!(
            case(&parsed, "aio-lite.upgrade.phase", "cleanup")["skipped"],
            true
        );
        assert_eq!(
            case(&parsed, "aio-lite.upgrade.smoke", "after")["skipped"],
            true
        );
        assert_eq!(
            case(&parsed, "aio-lite.upgrade", "flow complete")["failure"],
            "the flow stopped before its end: run it again"
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
        let xml = junit_xml(&summary, 0);
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
