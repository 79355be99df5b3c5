//! The files CI reads, checked by the tools that read them: a real run's junit.xml against the
//! JUnit schema of Jenkins' xunit plugin (xmllint), its report.html in headless Chromium under
//! Jenkins' default Content-Security-Policy, and the Jenkinsfile run by Groovy with the pipeline
//! steps stubbed (tests/fixtures/jenkinsfile-stubs.groovy). The tools come from Debian
//! (libxml2-utils, chromium, groovy; dev/setup installs them).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Project;
use common::browser::{self, CspServer, JENKINS_CSP, chromium_console};

/// Runs a flow over a web server whose probed restart costs the probe a few requests against a
/// budget of none, so the run fails with every part of the reports filled in. Returns the run
/// folder.
fn failed_run(project: &Project) -> PathBuf {
    project.write(
        "site.toml",
        r#"
[machines.site]
ports = { http = "auto" }

[[machines.site.stages]]
name = "pages"
steps = ["mkdir -p pages && echo up > pages/index.html"]

[[machines.site.services]]
name = "web"
command = "exec python3 -m http.server --bind 127.0.0.1 --directory pages {{ ports.http }}"
ready = { http = "http://127.0.0.1:{{ ports.http }}/", status = 200 }

[flows.restart]
from_version = "a"
to_version = "b"
max_failed_requests = 0
cleanup = ["down"]

[[flows.restart.probes]]
name = "front"
url = "http://127.0.0.1:{{ ports.http }}/index.html"
rate = 20.0

[[flows.restart.phases]]
name = "deploy"
action = "up"

[[flows.restart.phases]]
name = "warm-up"
action = "run"
run = ["echo warming up; sleep 0.5"]
probes = true

[[flows.restart.phases]]
name = "stop"
action = "stop"
services = ["web"]
probes = true

[[flows.restart.phases]]
name = "pause"
action = "run"
run = ["echo paused; sleep 0.5"]
probes = true

[[flows.restart.phases]]
name = "start"
action = "start"
services = ["web"]
probes = true
"#,
    );
    let out = project.path().join("run");
    let result = project.run(&["test", "site", "--out", out.to_str().unwrap()]);
    assert_eq!(
        result.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&result.stdout)
    );
    out
}

#[test]
fn junit_xml_of_a_run_validates_against_the_xunit_schema() {
    let project = Project::new();
    let out = failed_run(&project);
    let xsd = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/junit/junit-10.xsd");
    let check = Command::new("xmllint")
        .args(["--noout", "--schema", xsd])
        .arg(out.join("junit.xml"))
        .output()
        .expect("xmllint (libxml2-utils)");
    assert!(
        check.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&check.stderr),
        std::fs::read_to_string(out.join("junit.xml")).unwrap()
    );
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains("<failure message=\""), "{junit}");
    // Every case is in the run's package (site.restart), the flow's among them.
    for line in junit.lines().filter(|l| l.contains("<testcase ")) {
        assert!(line.contains("classname=\"site.restart."), "{line}");
    }
    assert!(junit.contains("classname=\"site.restart.flow\" name=\"complete\""));
}

#[test]
fn report_html_works_under_jenkins_default_csp_in_chromium() {
    let project = Project::new();
    let out = failed_run(&project);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();

    browser::assert_the_policy_reports_inline_styles();

    for csp in JENKINS_CSP {
        let server = CspServer::start(&out, csp);
        let url = format!("http://127.0.0.1:{}/report.html", server.port);
        let screenshot = std::env::var_os("ENVBUILD_REPORT_SCREENSHOT").map(PathBuf::from);
        let console = chromium_console(&url, screenshot.as_deref());
        let log = server.stop();
        assert!(
            console.is_empty(),
            "the console under `{csp}` says:\n{console}"
        );
        // The stylesheet was fetched, so the policy let it in.
        assert!(
            log.contains("\"GET /report.css HTTP/1.1\" 200"),
            "under `{csp}`: {log}"
        );
    }

    // Every link of the page is a file of the run folder: the logs among them.
    let links: Vec<&str> = html
        .split("href=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert!(links.contains(&"logs/warm-up.log"), "{links:?}");
    for link in links {
        assert!(out.join(link).is_file(), "{link} is not in the run folder");
    }
}

/// Runs the Jenkinsfile once per `(exit code of envbuild test, branch, ES credential id)`.
fn jenkinsfile(scenarios: &[(i32, &str, &str)]) -> Vec<serde_json::Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("groovy")
        .arg(format!("{root}/tests/fixtures/jenkinsfile-stubs.groovy"))
        .arg(format!("{root}/Jenkinsfile"))
        .args(
            scenarios
                .iter()
                .map(|(code, branch, es)| format!("{code}:{branch}:{es}")),
        )
        .output()
        .expect("groovy (Debian groovy)");
    assert!(
        output.status.success(),
        "the Jenkinsfile does not run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn steps<'a>(run: &'a serde_json::Value, name: &str) -> Vec<&'a serde_json::Value> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == name)
        .map(|s| &s["args"][0])
        .collect()
}

#[test]
fn the_jenkinsfile_maps_exit_codes_and_publishes_the_run_folder() {
    let codes = [
        (0, "SUCCESS"),
        (1, "UNSTABLE"),
        (3, "FAILURE"),
        (130, "ABORTED"),
        (2, "FAILURE"),
    ];
    let mut scenarios: Vec<(i32, &str, &str)> =
        codes.iter().map(|(code, _)| (*code, "main", "")).collect();
    scenarios.extend([(0, "feature-x", ""), (0, "main", "es-lab-url")]);
    let runs = jenkinsfile(&scenarios);
    for ((code, result), run) in codes.into_iter().zip(&runs) {
        assert_eq!(run["result"], result, "exit {code}: {run}");
        // A state folder per build; the results folder is archived, published and read.
        assert_eq!(
            run["env"]["ENVBUILD_STATE"],
            "/var/lib/jenkins/workspace/envbuild/.envbuild/state-41"
        );
        assert_eq!(run["env"]["RUN_DIR"], "runs/41");
        assert_eq!(
            steps(run, "junit"),
            [&serde_json::json!({"testResults": "runs/41/junit.xml", "allowEmptyResults": true})]
        );
        assert_eq!(steps(run, "archiveArtifacts")[0]["artifacts"], "runs/41/**");
        let html = &steps(run, "publishHTML")[0]["target"];
        assert_eq!(
            (&html["reportDir"], &html["reportFiles"]),
            (&"runs/41".into(), &"report.html".into())
        );
        assert_eq!(
            steps(run, "timeout")[0],
            &serde_json::json!({"time": 3, "unit": "HOURS"})
        );
        // main pushes what it built unless the test stage stopped the build: a failed upgrade
        // (UNSTABLE) says nothing against the stages it stood on.
        let pushed = run["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "Push (main only)");
        assert_eq!(pushed, code <= 1, "exit {code}: {}", run["stages"]);
    }
    let unstable = &runs[1];
    assert_eq!(steps(unstable, "unstable").len(), 1);
    assert!(steps(unstable, "error").is_empty());
    let aborted = &runs[3];
    assert!(
        aborted["errors"][0]
            .as_str()
            .unwrap()
            .contains("aborted (exit 130)")
    );

    // The ElasticSearch URL: from the parameter through the environment, or from a credential.
    let branch = &runs[5];
    assert!(
        !branch["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "Push (main only)")
    );
    assert_eq!(
        steps(branch, "withEnv")[0],
        &serde_json::json!(["ENVBUILD_ES_URL="])
    );
    let test = steps(branch, "sh")
        .into_iter()
        .find(|s| {
            s["script"]
                .as_str()
                .is_some_and(|s| s.starts_with("envbuild test"))
        })
        .unwrap()
        .clone();
    assert_eq!(
        test["script"],
        "envbuild test aio-lite \"$FLOW\" --out \"$RUN_DIR\" ${ENVBUILD_ES_URL:+--es-url \"$ENVBUILD_ES_URL\"}"
    );
    let credential = &runs[6];
    assert_eq!(
        steps(credential, "withCredentials")[0],
        &serde_json::json!([{"step": "string", "args": [{"credentialsId": "es-lab-url", "variable": "ENVBUILD_ES_URL"}]}])
    );
}
