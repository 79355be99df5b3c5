//! The results history through the real binary: every `envbuild test` recorded in
//! STATE/history.sqlite, `envbuild runs`, `envbuild report --history` (its page in headless
//! Chromium under Jenkins' default Content-Security-Policy), and report.html's "vs previous".
//! A small local environment: a Python web server on loopback; no PyPI, no VM.

mod common;

use std::path::{Path, PathBuf};

use common::Project;
use common::browser::{self, CspServer, JENKINS_CSP, chromium_console};

/// Writes environment `name`: a web server under one probe, and a flow whose `hold` phase runs
/// `hold` (probed) between deploy and clean-up.
fn site(project: &Project, name: &str, hold: &str) {
    project.write(
        &format!("{name}.toml"),
        &format!(
            r#"
{web}
[flows.check]
default = true
from_version = "1"
to_version = "2"
cleanup = ["down"]

[[flows.check.probes]]
name = "index"
url = "http://127.0.0.1:{{{{ ports.http }}}}/index.html"
rate = 20.0

[[flows.check.phases]]
name = "deploy"
action = "up"

[[flows.check.phases]]
name = "hold"
action = "run"
run = [{hold:?}]
probes = true
"#,
            web = common::WEB_MACHINE
        ),
    );
}

/// Runs `envbuild test ENV` into a fresh folder; returns the exit code, stdout, stderr and the
/// folder.
fn test(project: &Project, env: &str) -> (Option<i32>, String, String, PathBuf) {
    let out = project.path().join(format!("run-{}", uuid_like()));
    let output = project.run(&["test", env, "--out", out.to_str().unwrap()]);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        out,
    )
}

/// A name no other run folder of this process has.
fn uuid_like() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{}-{n}", std::process::id())
}

fn runs(project: &Project, env: &str) -> Vec<serde_json::Value> {
    project
        .json(&["runs", env, "--json"])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn two_runs_are_listed_and_the_second_report_compares_with_the_first() {
    let project = Project::new();
    site(&project, "site", "sleep 1");
    let (code, stdout, stderr, first) = test(&project, "site");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("history: run 1 (`envbuild runs site`)"),
        "{stdout}"
    );
    let (code, stdout, _, second) = test(&project, "site");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("history: run 2"), "{stdout}");

    let lines = runs(&project, "site");
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, (id, out)) in lines.iter().zip([(1, &first), (2, &second)]) {
        assert_eq!(line["id"], id);
        assert_eq!(
            (&line["env"], &line["flow"]),
            (&"site".into(), &"check".into())
        );
        assert_eq!(line["verdict"], "passed");
        assert_eq!(
            (&line["from_version"], &line["to_version"]),
            (&"1".into(), &"2".into())
        );
        assert_eq!(line["worst_probe"], "index");
        assert!(line["worst_uptime_pct"].as_f64().unwrap() > 99.0, "{line}");
        assert_eq!(line["down_time_s"], 0.0);
        assert_eq!(line["stages"], 1);
        assert_eq!(line["run_dir"], out.to_str().unwrap());
    }
    // The first run built the stage; the second restored it from the store.
    assert_eq!(
        (&lines[0]["cache_hits"], &lines[1]["cache_hits"]),
        (&0.into(), &1.into())
    );

    // The table: a header, then one line per run.
    let table = project.ok(&["runs"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].contains("N -> N+1") && rows[0].contains("worst uptime"),
        "{table}"
    );
    assert!(rows[2].contains("passed") && rows[2].contains("1 -> 2") && rows[2].contains("1/1"));
    assert_eq!(project.ok(&["runs", "elsewhere"]).trim(), "no run recorded");

    let html = |out: &Path| std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html(&first).contains("no earlier run of site check in the results history"));
    let compared = html(&second);
    assert!(compared.contains("<h2>vs previous</h2>"));
    assert!(compared.contains("<th class=\"n\">run 1 ("), "{compared}");
    assert!(compared.contains("<td>stages from the store (of 1)</td><td class=\"n\">1</td><td class=\"n\">0</td><td class=\"n\">+1</td>"));
}

#[test]
fn an_aborted_run_is_recorded_as_aborted() {
    let project = Project::new();
    let marker = format!("envbuild-history-abort-{}", std::process::id());
    site(&project, "site", &format!("sleep 120 # {marker}"));
    let out = project.path().join("run");
    let mut child = project
        .process()
        .args(["test", "site", "--out", out.to_str().unwrap(), "-q"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_processes(&marker, 2);
    // SAFETY: signalling the child we spawned, as Ctrl-C would.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let lines = runs(&project, "site");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["verdict"], "aborted");
    assert!(project.ok(&["runs"]).contains(" aborted "));
}

#[test]
fn the_history_can_live_outside_the_state_folder() {
    let project = Project::new();
    site(&project, "site", "sleep 0.5");
    let kept = project.path().join("kept/history.sqlite");
    let out = project.path().join("run");
    let output = project
        .cmd()
        .env("ENVBUILD_HISTORY_FILE", &kept)
        .args(["test", "site", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(kept.is_file());
    assert!(!project.state().join("history.sqlite").exists());
    assert!(runs(&project, "site").is_empty());
    let listed = project.json(&["runs", "--json", "--history-file", kept.to_str().unwrap()]);
    assert_eq!(listed[0]["run_dir"], out.to_str().unwrap());
}

#[test]
fn runs_that_end_together_are_both_recorded() {
    let project = Project::new();
    let go = project.path().join("go");
    for name in ["one", "two"] {
        let ready = project.path().join(format!("ready-{name}"));
        site(
            &project,
            name,
            &format!(
                "touch {}; while [ ! -e {} ]; do sleep 0.05; done; sleep 1",
                ready.display(),
                go.display()
            ),
        );
    }
    let runs_at_once: Vec<common::Background> = ["one", "two"]
        .iter()
        .map(|name| {
            let mut command = project.process();
            command.args(["test", name, "-q"]);
            common::Background::spawn(command)
        })
        .collect();
    // Both runs are in their probed phase; let them end at the same moment.
    let both_ready = || {
        ["one", "two"]
            .iter()
            .all(|name| project.path().join(format!("ready-{name}")).exists())
    };
    // A bound, not a timing: a run that failed early would leave this loop waiting for ever.
    for _ in 0..6000 {
        if both_ready() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(both_ready(), "both runs reach their probed phase");
    std::fs::write(&go, "").unwrap();
    for run in runs_at_once {
        let output = run.finish();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
    }
    let all = project.json(&["runs", "--json"]);
    let mut envs: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["env"].as_str().unwrap())
        .collect();
    envs.sort();
    assert_eq!(envs, ["one", "two"]);
}

#[test]
fn a_corrupt_history_is_an_error_to_list_and_set_aside_by_the_next_run() {
    let project = Project::new();
    site(&project, "site", "sleep 0.5");
    std::fs::create_dir_all(project.state()).unwrap();
    let database = project.state().join("history.sqlite");
    std::fs::write(&database, "this is not a database\n".repeat(200)).unwrap();

    let listed = project.run(&["runs"]);
    assert_eq!(listed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: the results history is unreadable",
            database.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("fix: move it aside"), "{stderr}");

    // The run reports all the same, and starts a new history.
    let (code, stdout, stderr, out) = test(&project, "site");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(out.join("report.html").is_file() && out.join("summary.json").is_file());
    assert!(
        stderr.contains("warning: ") && stderr.contains("set it aside as "),
        "{stderr}"
    );
    let aside: Vec<String> = common::file_names(&project.state())
        .into_iter()
        .filter(|n| n.starts_with("history.sqlite.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read_to_string(project.state().join(&aside[0])).unwrap(),
        "this is not a database\n".repeat(200)
    );
    assert_eq!(runs(&project, "site").len(), 1);
}

#[test]
fn the_history_page_compares_runs_and_works_under_jenkins_csp_in_chromium() {
    let project = Project::new();
    site(&project, "site", "sleep 0.5");
    for _ in 0..2 {
        assert_eq!(test(&project, "site").0, Some(0));
    }
    let page_dir = project.path().join("pages");
    let out = page_dir.join("history.html");
    let written = project.ok(&[
        "report",
        "--history",
        "site",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(written.contains("site: 2 runs compared in"), "{written}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("<h1>site: results history</h1>"));
    assert!(
        html.contains("2 runs, from ") && html.contains(": 2 passed</p>"),
        "{html}"
    );
    assert!(html.contains("<h3>index</h3>"));
    assert!(html.contains("<td>hit (restored)</td>") && html.contains("<td>built</td>"));
    assert!(
        html.contains("<title>run 2: deploy "),
        "phase durations per run"
    );

    browser::assert_the_policy_reports_inline_styles();
    for csp in JENKINS_CSP {
        let server = CspServer::start(&page_dir, csp);
        let url = format!("http://127.0.0.1:{}/history.html", server.port);
        let console = chromium_console(&url, None);
        let log = server.stop();
        assert!(
            console.is_empty(),
            "the console under `{csp}` says:\n{console}"
        );
        // The page alone: nothing else was asked for (but the icon every browser asks for).
        let requests: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"GET ") && !l.contains("/favicon.ico"))
            .collect();
        assert_eq!(requests.len(), 1, "under `{csp}`: {log}");
        assert!(
            requests[0].contains("\"GET /history.html HTTP/1.1\" 200"),
            "{log}"
        );
    }

    let missing = project.run(&["report", "--history", "elsewhere"]);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("has no run of elsewhere"), "{stderr}");
}
