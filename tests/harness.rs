//! `envbuild test` on a small real environment (a Python HTTP server on loopback): phases,
//! probes at 20 Hz, retries that resume at an earlier phase, clean-up on failure, results and
//! the ElasticSearch push, and the verdict policy: budgets, too few samples, aborted runs, exit
//! codes.

mod common;

use common::{Project, count_lines, processes_mentioning};

fn web_flow(project: &Project, extra_phase: &str) -> std::path::PathBuf {
    web_flow_with(project, "", extra_phase)
}

/// `NAME.toml`: one machine `box` whose stage `s` runs `steps` (a TOML array), and a default
/// flow `check` that brings it up (`deploy`), runs `phases` (TOML) and takes it down.
fn box_flow(project: &Project, name: &str, steps: &str, phases: &str) {
    project.write(
        &format!("{name}.toml"),
        &format!(
            r#"
[machines.box]
[[machines.box.stages]]
name = "s"
steps = {steps}

[flows.check]
default = true
cleanup = ["down"]

[[flows.check.phases]]
name = "deploy"
action = "up"
{phases}"#
        ),
    );
}

/// The web flow with `flow_keys` in its `[flows.check]` table (budgets) and `extra_phase`
/// appended to its phases.
fn web_flow_with(project: &Project, flow_keys: &str, extra_phase: &str) -> std::path::PathBuf {
    let counter = project.path().join("phases-run");
    project.write(
        "web.toml",
        &format!(
            r#"
[vars]
validation = "smoke"

[secrets.admin_password]
generate = "password"

{web}
[flows.check]
default = true
description = "a flow over a web server"
from_version = "1"
to_version = "2"
cleanup = ["down"]
{flow_keys}

[[flows.check.probes]]
name = "index"
url = "http://127.0.0.1:{{{{ ports.http }}}}/index.html"
rate = 20.0

[[flows.check.phases]]
name = "deploy"
action = "up"

[[flows.check.phases]]
name = "prepare"
action = "run"
run = ["echo prepare >> {c}"]

[[flows.check.phases]]
name = "probed"
action = "run"
run = ["echo probed >> {c}", "sleep 1"]
probes = true
retries = 1
resume = "prepare"
cleanup = ["echo cleanup >> {c}"]

[[flows.check.phases]]
name = "restart"
action = "restart"
services = ["http"]
probes = true

[[flows.check.phases]]
name = "report"
action = "run"
run = ["[ {{{{ validation }}}} = none ] || echo '{{\"smoke\": {{\"passed\": 3, \"failed\": 0, \"skipped\": 1}}, \"when\": \"after\"}}' > $ENVBUILD_RESULT"]
{extra_phase}
"#,
            web = common::WEB_MACHINE,
            c = counter.display()
        ),
    );
    counter
}

fn summary(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn a_passing_flow_writes_every_result_and_cleans_up() {
    let project = Project::new();
    web_flow(&project, "");
    let out = project.path().join("run");
    let stdout = project.ok(&["test", "web", "--out", out.to_str().unwrap()]);
    assert!(stdout.contains("web check: PASSED"), "{stdout}");
    let s = summary(&out);
    for field in [
        "env",
        "flow",
        "from_version",
        "to_version",
        "started",
        "finished",
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
    ] {
        assert!(s.get(field).is_some(), "summary.json lacks {field}");
    }
    assert_eq!(s["verdict"], "passed");
    assert_eq!(s["complete"], true);
    assert_eq!(s["smoke"]["after"]["passed"], 3);
    assert_eq!(s["cache"][0]["stage"], "site");
    // 20 Hz probes over the probed phases (a second of sleep and a restart at least).
    let probe = &s["probes"][0];
    assert!(probe["total"].as_u64().unwrap() >= 10, "{probe}");
    let lines = std::fs::read_to_string(out.join("status.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        probe["total"].as_u64().unwrap()
    );
    // JUnit that a strict XML parser reads, one case per phase at least.
    let parsed = std::process::Command::new("python3")
        .args(["-c", "import sys,xml.etree.ElementTree as E; print(len(list(E.parse(sys.argv[1]).getroot().iter('testcase'))))"])
        .arg(out.join("junit.xml"))
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let cases: usize = String::from_utf8_lossy(&parsed.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(cases >= 5, "{cases} test cases");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("PASSED") && html.contains("<svg"));
    // Clean-up ran: nothing of the environment is left running.
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
}

#[test]
fn a_phase_that_fails_once_is_retried_from_its_resume_phase() {
    let project = Project::new();
    let counter = web_flow(&project, "");
    let out = project.path().join("run");
    let result = project
        .cmd()
        .env("ENVBUILD_FAIL_ONCE", "probed")
        .args(["test", "web", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    // prepare ran twice (resume), the failed attempt's clean-up ran, probed ran once for real.
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "prepare\ncleanup\nprepare\nprobed\n"
    );
    let s = summary(&out);
    let phase = |name: &str| {
        s["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(phase("probed")["attempts"], 2);
    assert_eq!(phase("probed")["status"], "passed");
    assert_eq!(phase("prepare")["attempts"], 2);
    assert_eq!(
        phase("deploy")["attempts"],
        1,
        "deploy is before the resume point and not redone"
    );
    assert_eq!(s["verdict"], "passed");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("2 attempts"), "{stdout}");
}

#[test]
fn a_failing_phase_fails_the_run_and_still_cleans_up() {
    let project = Project::new();
    web_flow(
        &project,
        r#"
[[flows.check.phases]]
name = "breaks"
action = "run"
run = ["echo going down; exit 7"]
retries = 1

[[flows.check.phases]]
name = "never"
action = "run"
run = ["true"]
"#,
    );
    let out = project.path().join("run");
    let result = project.run(&["test", "web", "--out", out.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(1));
    let s = summary(&out);
    assert_eq!(s["verdict"], "failed");
    assert_eq!(s["complete"], false);
    let phases = s["phases"].as_array().unwrap();
    let breaks = phases.iter().find(|p| p["name"] == "breaks").unwrap();
    assert_eq!(breaks["status"], "failed");
    assert_eq!(breaks["attempts"], 2);
    assert!(
        breaks["error"]
            .as_str()
            .unwrap()
            .contains("exited with status 7")
    );
    assert_eq!(
        phases.iter().find(|p| p["name"] == "never").unwrap()["status"],
        "skipped"
    );
    assert!(String::from_utf8_lossy(&result.stdout).contains("INCOMPLETE"));
    assert!(
        std::fs::read_to_string(out.join("logs/breaks.log"))
            .unwrap()
            .contains("going down")
    );
    assert!(
        processes_mentioning(&project.state().display().to_string()).is_empty(),
        "clean-up ran after the failure"
    );
}

#[test]
fn results_are_pushed_to_elasticsearch_with_the_bulk_api() {
    let project = Project::new();
    web_flow(&project, "");
    let out = project.path().join("run");
    let (url, server) = common::es::fake_es(r#"{"took":3,"errors":false,"items":[]}"#);
    let result = project
        .cmd()
        .env("JOB_NAME", "envbuild-ci")
        .env("BUILD_NUMBER", "17")
        .env_remove("BUILD_URL")
        .args([
            "test",
            "web",
            "--out",
            out.to_str().unwrap(),
            "--es-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let request = server.join().unwrap();
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /_bulk HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-ndjson")
    );
    let lines: Vec<&str> = body.split_terminator('\n').collect();
    assert!(body.ends_with('\n'));
    let samples = count_lines(&out.join("status.jsonl"));
    assert_eq!(
        lines.len(),
        2 + 2 * samples,
        "an action and a document per summary and sample"
    );
    assert!(
        lines[0].contains("\"_index\":\"web_upgrade_test\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[2].contains("\"_index\":\"web_upgrade_status_log\""),
        "{}",
        lines[2]
    );
    let summary_doc: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(summary_doc["verdict"], "passed");
    // The seed's dashboards read these names: flat uptime figures per probe, phase times, vars,
    // the CI's metadata; `service`, `status` (0/1) and `timestamp` per sample.
    assert!(summary_doc["index_uptime_pct"].is_number(), "{summary_doc}");
    assert!(summary_doc["index_total_requests"].as_u64().unwrap() > 0);
    assert!(summary_doc["phase_deploy_start"].is_string());
    assert!(summary_doc["phase_deploy_end"].is_string());
    assert_eq!(summary_doc["vars"]["validation"], "smoke");
    assert_eq!(summary_doc["job_name"], "envbuild-ci");
    assert_eq!(summary_doc["build_number"], "17");
    let sample: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
    assert_eq!(sample["service"], "index");
    assert!(sample["status"] == 1 || sample["status"] == 0, "{sample}");
    assert!(
        sample["timestamp"].as_str().unwrap().ends_with('Z'),
        "{sample}"
    );
    assert!(
        sample.get("ok").is_none() && sample.get("probe").is_none(),
        "{sample}"
    );
}

#[test]
fn a_failed_push_is_reported_and_the_results_stay() {
    let project = Project::new();
    web_flow(&project, "");
    let out = project.path().join("run");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let result = project.run(&[
        "test",
        "web",
        "--out",
        out.to_str().unwrap(),
        "--es-url",
        &format!("http://127.0.0.1:{closed}"),
    ]);
    assert!(
        result.status.success(),
        "the verdict decides the exit code, not the push"
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("pushing results to ElasticSearch failed"),
        "{stderr}"
    );
    assert_eq!(summary(&out)["verdict"], "passed");
    assert!(out.join("junit.xml").is_file() && out.join("report.html").is_file());
}

#[test]
fn unknown_flow_is_bad_input() {
    let project = Project::new();
    web_flow(&project, "");
    let result = project.run(&["test", "web", "nope"]);
    assert_eq!(result.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&result.stderr).contains("has no flow `nope`; flows: check"));
}

/// A probed phase long enough for a slow probe to gather samples.
const LONGER: &str = r#"
[[flows.check.phases]]
name = "longer"
action = "run"
run = ["sleep 3"]
probes = true
"#;

#[test]
fn probe_rate_runs_a_probe_at_another_rate_and_the_summary_says_so() {
    let project = Project::new();
    web_flow(&project, LONGER);
    // A name the flow does not have, or a rate that is none, is bad input before anything runs.
    let result = project.run(&["test", "web", "--probe-rate", "ghost=5"]);
    assert_eq!(result.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("flow `check` has no probe `ghost`") && stderr.contains("index"),
        "{stderr}"
    );
    for bad in ["index=0", "index=fast", "index"] {
        let result = project.run(&["test", "web", "--probe-rate", bad]);
        assert_eq!(result.status.code(), Some(2), "{bad}");
    }
    assert!(!project.state().join("runs").exists());

    // The spec asks 20 Hz; at 5 Hz over the same phases the probe sends a quarter of that.
    let (code, stdout, s, junit, html) = test_web(&project, &["--probe-rate", "index=5"]);
    assert_eq!(code, Some(0), "{stdout}");
    let probe = &s["probes"][0];
    assert_eq!(probe["rate_hz"], 5.0, "{probe}");
    let achieved = probe["achieved_rate_hz"].as_f64().unwrap();
    assert!(achieved > 3.0 && achieved < 7.0, "{probe}");
    assert!(stdout.contains("5 Hz"), "{stdout}");
    assert!(junit.contains("rate: 5 Hz asked, "), "{junit}");
    assert!(html.contains("5 Hz asked, "), "the HTML report");
}

/// A flow whose probed phases take the web server down for a second: the probes see it.
const OUTAGE: &str = r#"
[[flows.check.phases]]
name = "outage"
action = "stop"
services = ["http"]
probes = true

[[flows.check.phases]]
name = "down-a-while"
action = "run"
run = ["sleep 1"]
probes = true

[[flows.check.phases]]
name = "back"
action = "start"
services = ["http"]
probes = true
"#;

/// Runs `envbuild test web` into `project/run`: (exit code, stdout, summary.json, junit.xml,
/// report.html).
fn test_web(
    project: &Project,
    extra: &[&str],
) -> (Option<i32>, String, serde_json::Value, String, String) {
    let out = project.path().join("run");
    let result = project
        .cmd()
        .args(["test", "web", "--out", out.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    (
        result.status.code(),
        String::from_utf8_lossy(&result.stdout).into_owned(),
        summary(&out),
        read("junit.xml"),
        read("report.html"),
    )
}

fn check<'a>(summary: &'a serde_json::Value, kind: &str, name: &str) -> &'a serde_json::Value {
    summary["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind && c["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} check {name}: {}", summary["checks"]))
}

/// The `<testcase>` element of `name` in `junit`, up to its end.
fn junit_case<'a>(junit: &'a str, name: &str) -> &'a str {
    let start = junit
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no case {name} in {junit}"));
    let end = start + junit[start..].find("</testcase>").unwrap();
    &junit[start..end]
}

#[test]
fn an_outage_over_the_budget_fails_the_upgrade_in_every_report() {
    let project = Project::new();
    web_flow_with(&project, "max_failed_requests = 0", OUTAGE);
    let (code, stdout, s, junit, html) = test_web(&project, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(s["verdict"], "failed");
    let index = check(&s, "probe", "index");
    assert_eq!(index["status"], "failed");
    assert_eq!(index["blame"], "upgrade");
    let failed = s["probes"][0]["failed"].as_u64().unwrap();
    assert!(failed > 0, "{}", s["probes"][0]);
    let message = format!(
        "{failed} of {} requests failed (at most 0 allowed)",
        s["probes"][0]["total"]
    );
    assert_eq!(index["message"], message.as_str());
    // JUnit and the page say the same; the exit code is the verdict's.
    assert!(
        junit_case(&junit, "index").contains(&format!("<failure message=\"{message}\"")),
        "{junit}"
    );
    assert!(html.contains("<div class=\"verdict failed\">"));
    assert!(html.contains(&format!("<li>probe `index`: {message}</li>")));
    assert!(stdout.contains("web check: FAILED"), "{stdout}");
    assert!(
        stdout.contains("over the availability budget: downtime"),
        "{stdout}"
    );
}

#[test]
fn failed_requests_within_the_budget_pass_in_every_report() {
    let project = Project::new();
    web_flow_with(&project, "max_failed_requests = 100000", OUTAGE);
    let (code, stdout, s, junit, html) = test_web(&project, &[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(s["probes"][0]["failed"].as_u64().unwrap() > 0);
    assert_eq!(check(&s, "probe", "index")["status"], "passed");
    // The page does not flag what the budget allows (it listed every failed request before).
    assert!(html.contains("<div class=\"verdict passed\">"), "{html}");
    assert!(!html.contains("<ul class=\"findings\">"), "{html}");
    let case = junit_case(&junit, "index");
    assert!(
        !case.contains("<failure") && !case.contains("<skipped"),
        "{case}"
    );
    assert!(
        s["headline"]
            .as_str()
            .unwrap()
            .starts_with("within the availability budget: downtime")
    );
}

#[test]
fn without_a_budget_the_outage_is_measured_and_not_judged() {
    let project = Project::new();
    web_flow_with(&project, "", OUTAGE);
    let (code, stdout, s, junit, html) = test_web(&project, &[]);
    assert_eq!(code, Some(0), "{stdout}");
    let headline = s["headline"].as_str().unwrap();
    assert!(
        headline.starts_with("no availability budget: downtime ")
            && headline.contains(" s measured, not judged"),
        "{headline}"
    );
    assert_eq!(check(&s, "probe", "index")["status"], "not_judged");
    assert!(stdout.contains(headline), "{stdout}");
    assert!(junit.contains(&format!(
        "<property name=\"availability\" value=\"{headline}\"/>"
    )));
    assert!(
        junit_case(&junit, "index").contains("<skipped message=\"no availability budget: downtime")
    );
    // Not the green of a judged pass, and the headline is on the page.
    assert!(
        html.contains("<div class=\"verdict passed unjudged\">"),
        "{html}"
    );
    assert!(html.contains(&format!("<div class=\"headline\">{headline}</div>")));
}

#[test]
fn down_time_and_uptime_budgets_judge_each_probe_with_its_own_keys_first() {
    let project = Project::new();
    web_flow_with(
        &project,
        "max_down_time = \"0.2s\"\nmin_uptime_pct = 100",
        &format!(
            r#"{OUTAGE}
[[flows.check.probes]]
name = "tolerant"
url = "http://127.0.0.1:{{{{ ports.http }}}}/index.html"
rate = 20.0
max_down_time = "1m"
min_uptime_pct = 0
"#
        ),
    );
    let (code, stdout, s, junit, _) = test_web(&project, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    let index = check(&s, "probe", "index");
    let message = index["message"].as_str().unwrap();
    assert!(
        message.starts_with("down ") && message.contains(" s (at most 0.2 s allowed); uptime "),
        "{message}"
    );
    assert!(
        message.ends_with(" % (at least 100 % required)"),
        "{message}"
    );
    assert_eq!(
        index["budget"],
        serde_json::json!({"max_failed_requests": null, "max_down_time_ms": 200,
            "min_uptime_pct": 100.0})
    );
    // The same outage, within the probe's own budget.
    let tolerant = check(&s, "probe", "tolerant");
    assert_eq!(tolerant["status"], "passed", "{tolerant}");
    assert_eq!(tolerant["budget"]["max_down_time_ms"], 60_000);
    assert!(
        junit_case(&junit, "tolerant").contains("budget: at most 60.0 s down, at least 0 % uptime")
    );
}

#[test]
fn a_probe_with_too_few_samples_makes_the_run_incomplete() {
    let project = Project::new();
    web_flow_with(
        &project,
        "",
        r#"
[[flows.check.probes]]
name = "slow"
url = "http://127.0.0.1:{{ ports.http }}/index.html"
rate = 0.05
"#,
    );
    let (code, stdout, s, junit, _) = test_web(&project, &[]);
    assert_eq!(code, Some(3), "{stdout}");
    assert_eq!(
        (&s["verdict"], &s["complete"]),
        (&"incomplete".into(), &false.into())
    );
    // Both declared probes are in the summary; the slow one sampled once or twice.
    assert_eq!(s["probes"].as_array().unwrap().len(), 2);
    let slow = check(&s, "probe", "slow");
    assert_eq!(slow["blame"], "infrastructure");
    assert!(
        slow["message"]
            .as_str()
            .unwrap()
            .starts_with("too few samples to judge: "),
        "{slow}"
    );
    assert!(junit_case(&junit, "slow").contains("<failure message=\"too few samples to judge"));
    assert!(
        s["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("probe `slow`: too few samples")
    );
}

#[test]
fn a_failure_before_the_upgrade_is_an_infrastructure_failure() {
    let project = Project::new();
    let counter = web_flow(&project, "");
    // `prepare` (before the probed phases) fails on its first and only attempt.
    let spec = std::fs::read_to_string(project.envs().join("web.toml"))
        .unwrap()
        .replace(
            &format!("run = [\"echo prepare >> {}\"]", counter.display()),
            "run = [\"exit 4\"]",
        );
    project.write("web.toml", &spec);
    let (code, stdout, s, junit, _) = test_web(&project, &[]);
    assert_eq!(code, Some(3), "{stdout}");
    assert_eq!(s["verdict"], "incomplete");
    assert_eq!(check(&s, "phase", "prepare")["blame"], "infrastructure");
    // The probe did not run because the flow stopped first: skipped, not a second failure.
    assert_eq!(check(&s, "probe", "index")["status"], "skipped");
    assert!(junit.contains("classname=\"web.check.flow\" name=\"complete\""));
}

#[test]
fn a_run_that_cannot_be_carried_out_exits_3() {
    let project = Project::new();
    web_flow(&project, "");
    // The results folder cannot be made: a file stands where its parent should be.
    let blocker = project.path().join("not-a-folder");
    std::fs::write(&blocker, "").unwrap();
    let out = blocker.join("run");
    let result = project.run(&["test", "web", "--out", out.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("the run could not be carried out (infrastructure failure, exit 3)"),
        "{stderr}"
    );
}

#[test]
fn validation_none_is_recorded_and_leaves_no_skipped_smoke_or_rally_case() {
    let project = Project::new();
    web_flow(&project, "");
    let (code, _, s, junit, html) = test_web(&project, &["--var", "validation=none"]);
    assert_eq!(code, Some(0));
    assert_eq!(s["vars"]["validation"], "none");
    assert_eq!(s["smoke"]["after"], serde_json::Value::Null);
    assert!(junit.contains("<property name=\"var.validation\" value=\"none\"/>"));
    assert!(
        !junit.contains("web.check.smoke") && !junit.contains("web.check.rally"),
        "{junit}"
    );
    assert!(html.contains("<code>validation=none</code>"));

    // With validation, the smoke tests that ran have a case; none is left skipped for ever.
    let (_, _, s, junit, _) = test_web(&project, &[]);
    assert_eq!(s["vars"]["validation"], "smoke");
    assert!(junit.contains("classname=\"web.check.smoke\" name=\"after\""));
    assert!(!junit.contains("name=\"before\""), "{junit}");
    assert!(!junit.contains("web.check.rally"), "{junit}");
}

#[test]
fn an_interrupted_run_is_aborted_stops_its_step_and_cleans_up() {
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        interrupt_the_long_phase(signal, name);
    }
}

fn interrupt_the_long_phase(signal: libc::c_int, name: &str) {
    let project = Project::new();
    let marker = format!("envbuild-interrupt-{}-{name}", std::process::id());
    web_flow(
        &project,
        &format!(
            r#"
[[flows.check.phases]]
name = "long"
action = "run"
run = ["sleep 120 # {marker}"]
probes = true

[[flows.check.phases]]
name = "after-long"
action = "run"
run = ["true"]
"#
        ),
    );
    let out = project.path().join("run");
    let mut child = project
        .process()
        .args(["test", "web", "--out", out.to_str().unwrap(), "-q"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_processes(&marker, 2);
    // SAFETY: signalling the child we spawned, as Ctrl-C or Jenkins' abort would.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{name}");
    let s = summary(&out);
    assert_eq!(
        (&s["verdict"], &s["complete"]),
        (&"aborted".into(), &false.into())
    );
    assert_eq!(
        s["reasons"][0],
        format!("aborted by {name} during phase `long`").as_str()
    );
    let phase = |phase: &str| {
        s["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == phase)
            .unwrap()
            .clone()
    };
    assert_eq!(phase("long")["status"], "aborted");
    assert!(
        phase("long")["error"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{}",
        phase("long")
    );
    assert_eq!(phase("after-long")["status"], "skipped");
    // No JUnit failure for an abort: the interrupted phase, the probe and the flow are skipped.
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(junit_case(&junit, "long").contains(&format!("<skipped message=\"aborted by {name}")));
    assert!(junit.contains("failures=\"0\""));
    assert!(
        common::processes_with(&marker).is_empty(),
        "the step outlived the interrupt"
    );
    assert!(
        processes_mentioning(&project.state().display().to_string()).is_empty(),
        "clean-up did not run"
    );
}

/// A second SIGTERM while the clean-up's `down` waits for a service that ignores SIGTERM (CI's
/// abort, then its second signal a moment later) still leaves nothing running: `down` kills it
/// at its stop timeout and goes on to the services before it, whatever more signals come; only
/// the clean-up's own command steps are cut short.
#[test]
fn a_second_interrupt_during_the_clean_up_still_stops_every_service() {
    let project = Project::new();
    let marker = format!("envbuild-second-signal-{}", std::process::id());
    let stopping = project.path().join("stopping");
    project.write(
        "slow.toml",
        &format!(
            r#"
[machines.box]
[[machines.box.stages]]
name = "s"
steps = ["true"]

[[machines.box.services]]
name = "first"
command = "exec sh -c 'while :; do sleep 1; done' {marker}"

# Stopped first (reverse order); ignores SIGTERM, so `down` waits its stop_timeout and kills it.
[[machines.box.services]]
name = "deaf"
command = "exec sh -c 'trap \"touch {stopping}\" TERM; while :; do sleep 0.2; done' {marker}"
stop_timeout = "3s"

[flows.check]
default = true
cleanup = ["echo first clean-up step", "down"]

[[flows.check.phases]]
name = "deploy"
action = "up"

[[flows.check.phases]]
name = "long"
action = "run"
run = ["sleep 120 # {marker}"]
"#,
            stopping = stopping.display()
        ),
    );
    let out = project.path().join("run");
    let mut child = project
        .process()
        .args(["test", "slow", "--out", out.to_str().unwrap(), "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Both services (one process each) and the long step (two).
    common::wait_for_processes(&marker, 4);
    // SAFETY: signalling the child we spawned, twice, as a CI abort and then its kill would.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !stopping.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the clean-up never signalled the deaf service"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: as above; `down` is waiting out the deaf service's 3 s stop timeout.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(summary(&out)["verdict"], "aborted");
    assert!(
        common::processes_with(&marker).is_empty(),
        "left running: {:?}",
        common::processes_with(&marker)
    );
    assert!(
        processes_mentioning(&project.state().display().to_string()).is_empty(),
        "a service of the environment outlived the run"
    );
    assert_eq!(service_pids(&project, "slow"), Vec::<u64>::new());
}

/// The pids of the environment's running services, as `status` lists them.
fn service_pids(project: &Project, env: &str) -> Vec<u64> {
    project.json(&["status", env, "--json"])[0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pid"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_test_deploys_what_it_tests_and_never_reuses_an_environment_that_is_up() {
    let project = Project::new();
    web_flow(&project, "");
    let out = project.path().join("run");
    let out = out.to_str().unwrap();
    // Brought up by hand: the test refuses (exit 2, the fix named) and leaves it running.
    project.ok(&["up", "web"]);
    let before = service_pids(&project, "web");
    let refused = project.run(&["test", "web", "--out", out]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("web is up (web/web)"), "{stderr}");
    assert!(stderr.contains("`envbuild down web`"), "{stderr}");
    assert!(stderr.contains("--replace"), "{stderr}");
    assert_eq!(service_pids(&project, "web"), before, "the clean-up ran");
    assert!(!std::path::Path::new(out).join("summary.json").exists());

    // --replace: taken down, then deployed by the test from the cached stage, and cleaned up.
    let replaced = project.run(&["test", "web", "--out", out, "--replace"]);
    assert!(
        replaced.status.success(),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    assert!(String::from_utf8_lossy(&replaced.stderr).contains("--replace: taking down web"));
    let s = summary(std::path::Path::new(out));
    assert_eq!(s["verdict"], "passed");
    assert_eq!(s["cache"][0]["action"], "restored");
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());

    // Kept by a test: the next test refuses as well, and does not pass on what it did not make.
    project.ok(&["test", "web", "--out", out, "--keep"]);
    let kept = service_pids(&project, "web");
    let again = project.run(&["test", "web", "--out", out]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(service_pids(&project, "web"), kept);
    project.ok(&["down", "web"]);
}

#[test]
fn two_tests_at_once_never_share_an_environment_or_orphan_a_service() {
    let project = Project::new();
    let gate = project.path().join("gate");
    let marker = format!("envbuild-two-tests-{}", std::process::id());
    web_flow(
        &project,
        &format!(
            r#"
[[flows.check.phases]]
name = "hold"
action = "run"
run = ["while [ ! -f {} ]; do sleep 0.1; done # {marker}"]
"#,
            gate.display()
        ),
    );
    let spawn = |name: &str, extra: &[&str]| {
        let mut test = project.process();
        test.args(["test", "web", "--out"])
            .arg(project.path().join(name))
            .args(extra);
        common::Background::spawn(test)
    };
    let first = spawn("first", &[]);
    common::wait_for_processes(&marker, 1);
    let pids = service_pids(&project, "web");

    // The second refuses at once, naming the first; it probes and starts nothing.
    let second = project.run(&["test", "web", "--out", "second"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "web is in use by another envbuild (pid {}: envbuild test web, since",
            first.id()
        )),
        "{stderr}"
    );
    // A third waits for the first, then deploys afresh and passes on its own services.
    let third = spawn("third", &["--wait"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(service_pids(&project, "web"), pids);
    std::fs::write(&gate, "").unwrap();
    for (run, child) in [("first", first), ("third", third)] {
        let out = child.finish();
        assert!(
            out.status.success(),
            "{run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(summary(&project.path().join(run))["verdict"], "passed");
    }
    let third = summary(&project.path().join("third"));
    assert_eq!(third["cache"][0]["action"], "restored");
    // Each run's clean-up took down its own services: nothing is left, orphaned or not.
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
}

#[test]
fn off_a_terminal_a_long_phase_says_it_is_alive_and_q_keeps_it_quiet() {
    let project = Project::new();
    web_flow(
        &project,
        r#"
[[flows.check.phases]]
name = "slow"
action = "run"
run = ["echo tempest-is-working; sleep 3"]
"#,
    );
    let run = |extra: &[&str]| {
        let out = project
            .cmd()
            .env("ENVBUILD_HEARTBEAT", "1s")
            .args(["test", "web", "--out"])
            .arg(project.path().join("run"))
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let stderr = run(&[]);
    let beat = stderr
        .lines()
        .find(|l| l.starts_with("==> check/slow: running ") && l.contains("tempest-is-working"))
        .unwrap_or_else(|| panic!("no heartbeat of the slow phase in:\n{stderr}"));
    assert!(beat.contains(" 1 lines; last ("), "{beat}");
    assert!(!run(&["-q"]).contains("running"));
}

#[test]
fn an_up_phase_leaves_its_heartbeat_to_the_stages_it_builds() {
    // The stage's own heartbeat tells what the phase does; one for the phase would only repeat
    // "0 lines; no output yet" beside it.
    let project = Project::new();
    box_flow(&project, "slowbuild", r#"["echo compiling; sleep 3"]"#, "");
    let out = project
        .cmd()
        .env("ENVBUILD_HEARTBEAT", "1s")
        .args(["test", "slowbuild", "--out", "run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("==> slowbuild/box/s: running ") && l.contains("compiling")),
        "{stderr}"
    );
    assert!(!stderr.contains("check/deploy: running"), "{stderr}");
    assert!(stderr.contains("==> check/deploy: passed"), "{stderr}");
}

#[test]
fn a_relative_out_reaches_the_phases_as_an_absolute_path() {
    let project = Project::new();
    box_flow(
        &project,
        "rel",
        r#"["true"]"#,
        r#"
[[flows.check.phases]]
name = "write"
action = "run"
run = ["printf '%s' \"$ENVBUILD_OUT\" > \"$ENVBUILD_OUT/where.txt\""]
"#,
    );
    // The command runs in the project folder; the phase runs in the machine root.
    project.ok(&["test", "rel", "--out", "rel-run"]);
    let written = std::fs::read_to_string(project.path().join("rel-run/where.txt")).unwrap();
    assert_eq!(
        std::path::Path::new(&written),
        project.path().join("rel-run")
    );
}

#[test]
fn a_run_goes_on_when_its_binary_is_replaced_under_it() {
    // A rebuild or a package upgrade during a long run replaces the file envbuild was started
    // from; the steps it starts after that must still be supervised by the running envbuild.
    let project = Project::new();
    let copy = project.path().join("envbuild-copy");
    std::fs::copy(assert_cmd::cargo::cargo_bin("envbuild"), &copy).unwrap();
    box_flow(
        &project,
        "swap",
        r#"["true"]"#,
        &format!(
            r#"
[[flows.check.phases]]
name = "replace"
action = "run"
run = ["rm {c} && printf '#!/bin/sh\nexit 97\n' > {c} && chmod +x {c}"]

[[flows.check.phases]]
name = "after"
action = "run"
run = ["echo after > $ENVBUILD_OUT/after.txt"]
"#,
            c = copy.display()
        ),
    );
    let out = project
        .process_of(&copy)
        .args(["test", "swap", "--out", "run"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read_to_string(project.path().join("run/after.txt")).unwrap();
    assert_eq!(after, "after\n");
}
