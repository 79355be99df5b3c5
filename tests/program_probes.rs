//! Program probes (`kind = "program"`): a command run once per iteration on schedule, one JSON
//! line per run, each iteration one sample judged by the same verdict policy and budgets as an
//! HTTP request; sub-phase timings in the results; an interrupt stops iterations in flight.

mod common;

use std::time::{Duration, Instant};

use common::{Project, processes_mentioning};

/// An environment whose flow probes with `probe.py` (written by the test) and `probe_keys`,
/// over a probed phase that runs `probed`.
fn scenario_flow(project: &Project, probe_keys: &str, probed: &str) {
    project.write(
        "scn.toml",
        &format!(
            r#"
[vars]
greeting = "hello"

[machines.box]
ports = {{ http = "auto" }}

[[machines.box.stages]]
name = "probe"
inputs = ["probe.py"]
steps = ["cp $ENVBUILD_INPUTS/probe.py ."]

[[machines.box.services]]
name = "idle"
command = "exec sleep 600"

[flows.check]
max_failed_requests = 0
cleanup = ["down"]

[[flows.check.probes]]
name = "scenario"
kind = "program"
command = "python3 probe.py {{{{ greeting }}}} {{{{ ports.http }}}}"
{probe_keys}

[[flows.check.phases]]
name = "deploy"
action = "up"

[[flows.check.phases]]
name = "upgrade"
action = "run"
run = ["{probed}"]
probes = true
"#
        ),
    );
}

/// A probe program: one JSON line with two phases; fails while the file `failing` exists in
/// the machine root, sleeps while `slow` does; appends what it saw to `seen.txt`.
const PROBE: &str = r#"
import json, os, sys, time
start = time.monotonic()
with open("seen.txt", "a") as f:
    f.write(" ".join([sys.argv[1], sys.argv[2], os.environ["ENVBUILD_PORT_HTTP"],
                      os.environ["ENVBUILD_PROBE"], os.environ["ENVBUILD_ITERATION"]]) + "\n")
print("a warning on stderr", file=sys.stderr)
if os.path.exists("slow"):
    time.sleep(30)
ok = not os.path.exists("failing")
time.sleep(0.05)
print(json.dumps({"ok": ok, "detail": "built" if ok else "server went to ERROR",
                  "phases": {"build_s": 0.05, "total_s": time.monotonic() - start}}))
sys.exit(0 if ok else 1)
"#;

/// A word unique to one test of this process, to find its iterations among running processes.
fn marker(test: &str) -> String {
    format!("scenario-{}-{test}", std::process::id())
}

fn summary(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

fn samples(out: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("status.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn each_iteration_is_a_sample_with_its_phases_judged_by_the_budget() {
    let project = Project::new();
    project.write("scn/probe.py", PROBE);
    // Iterations every 200 ms; the probed phase fails them for a while in the middle.
    scenario_flow(
        &project,
        "rate = 5.0\ntimeout = \"20s\"",
        "sleep 2; touch failing; sleep 1.5; rm failing; sleep 2",
    );
    let out = project.path().join("run");
    let run = project.run(&["test", "scn", "--out", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}");
    let s = summary(&out);
    assert_eq!(s["verdict"], "failed");
    let probe = &s["probes"][0];
    let (total, failed) = (
        probe["total"].as_u64().unwrap(),
        probe["failed"].as_u64().unwrap(),
    );
    // About 5.5 s at 5 Hz: the schedule holds although each iteration starts a Python.
    assert!(total >= 15, "{probe}");
    assert!(failed >= 2 && failed < total, "{probe}");
    assert!(probe["down_time_ms"].as_u64().unwrap() > 0, "{probe}");
    assert_eq!(probe["not_sent"], 0);
    // Sub-phases over the successful iterations.
    let build = &probe["phases"]["build_s"];
    assert_eq!(build["samples"], total - failed, "{probe}");
    assert_eq!(build["p50_s"], 0.05);
    assert!(probe["phases"]["total_s"]["max_s"].as_f64().unwrap() >= 0.05);
    // The check blames the upgrade, with the flow's budget, like an HTTP probe's.
    let check = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "probe")
        .unwrap();
    assert_eq!(
        (&check["status"], &check["blame"]),
        (&"failed".into(), &"upgrade".into())
    );
    // status.jsonl: one line per iteration, the failed ones with the program's detail.
    let lines = samples(&out);
    assert_eq!(lines.len() as u64, total);
    let bad: Vec<_> = lines.iter().filter(|l| l["ok"] == false).collect();
    assert!(
        bad.iter().all(|l| l["error"] == "server went to ERROR"),
        "{bad:?}"
    );
    assert!(lines.iter().all(|l| l["phases"]["build_s"] == 0.05));
    // The program saw the rendered command, the runtime environment and its iteration.
    let root = project.state().join("envs/scn/box/root");
    let seen = std::fs::read_to_string(root.join("seen.txt")).unwrap();
    let first = seen.lines().next().unwrap();
    let words: Vec<&str> = first.split(' ').collect();
    assert_eq!(words[0], "hello");
    assert_eq!(words[1], words[2], "{first}");
    assert_eq!(&words[3..], ["scenario", "0"]);
    // Each iteration's stderr and line in the probe's log.
    let log = std::fs::read_to_string(out.join("logs/probe-scenario.log")).unwrap();
    assert!(log.contains("--- iteration 0 due at"), "{log}");
    assert!(log.contains("a warning on stderr"));
    assert!(log.contains("FAILED"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Scenario phases") && html.contains("build_s"));
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
}

#[test]
fn iterations_past_the_in_flight_bound_are_not_started_and_count_as_failed() {
    let project = Project::new();
    project.write("scn/probe.py", PROBE);
    scenario_flow(
        &project,
        "rate = 2.0\nmax_in_flight = 1\ntimeout = \"1s\"\nmax_failed_requests = 100",
        "touch slow; sleep 4",
    );
    let out = project.path().join("run");
    let marker = marker("bound");
    let greeting = format!("greeting={marker}");
    let run = project.run(&[
        "test",
        "scn",
        "--out",
        out.to_str().unwrap(),
        "--var",
        &greeting,
    ]);
    let s = summary(&out);
    assert_eq!(run.status.code(), Some(0), "{s}");
    let probe = &s["probes"][0];
    // Every iteration runs into its 1 s timeout; the ones due meanwhile are not started.
    assert!(probe["not_sent"].as_u64().unwrap() >= 2, "{probe}");
    assert_eq!(probe["successful"], 0);
    let lines = samples(&out);
    assert!(lines.iter().any(|l| {
        l["error"]
            .as_str()
            .unwrap()
            .starts_with("not sent: 1 iterations are still running")
    }));
    assert!(lines.iter().any(|l| {
        l["error"]
            .as_str()
            .unwrap()
            .starts_with("killed after 1 s (the probe's timeout)")
    }));
    assert!(processes_mentioning(&marker).is_empty());
}

#[test]
fn an_interrupt_stops_the_iterations_in_flight_and_nothing_is_left() {
    let project = Project::new();
    project.write("scn/probe.py", PROBE);
    scenario_flow(&project, "rate = 1.0", "touch slow; sleep 120");
    let out = project.path().join("run");
    let marker = marker("interrupt");
    let mut child = project
        .process()
        .args(["test", "scn", "--out", out.to_str().unwrap(), "-q"])
        .args(["--var", &format!("greeting={marker}")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let root = project.state().join("envs/scn/box/root");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(root.join("seen.txt")).is_ok_and(|s| s.lines().count() >= 2) {
        assert!(Instant::now() < deadline, "no iteration started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling the child we spawned, as Ctrl-C would.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let s = summary(&out);
    assert_eq!(s["verdict"], "aborted");
    // The iterations in flight (each asleep for 30 s) were stopped, not waited for.
    let lines = samples(&out);
    assert!(
        lines.iter().any(|l| l["error"] == "interrupted"),
        "{lines:?}"
    );
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
    assert!(
        processes_mentioning(&marker).is_empty(),
        "an iteration outlived the run"
    );
}
