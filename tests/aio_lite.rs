//! aio-lite end to end: real keystone, Tempest and Rally from PyPI, real NGINX, on loopback. Up,
//! a token through NGINX with the generated credentials, down leaves nothing, warm up replays;
//! the rolling upgrade with validation and probes, twice, and with every probe at 20 Hz; the
//! all-at-once upgrade's outage. Needs nginx, memcached and python3-venv (dev/setup installs
//! them) and PyPI; fails, never skips, without.

mod common;

use std::io::{Read, Write};

use common::{Project, processes_mentioning};

/// The tests here run one at a time: keystone on 2 cores is slow enough without three
/// deployments competing for the cores (and for the probes' latency). They share one store:
/// whichever runs first builds every stage from PyPI, the others replay.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn project() -> (Project, std::sync::MutexGuard<'static, ()>) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    (Project::on_repository_envs("aio-lite-store"), guard)
}

/// A project whose aio-lite is a copy of the repository's with every probe at `rate` Hz (the
/// stage keys are the same: inputs count by content, flows not at all).
fn project_at_rate(rate: &str) -> (Project, std::sync::MutexGuard<'static, ()>) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let project = Project::new();
    let repo = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/environments"));
    copy_tree(&repo.join("aio-lite"), &project.envs().join("aio-lite"));
    let spec = std::fs::read_to_string(repo.join("aio-lite.toml")).unwrap();
    assert_eq!(
        spec.matches("\nrate = 1.0\n").count(),
        3,
        "the rolling flow's probes"
    );
    project.write(
        "aio-lite.toml",
        &spec.replace("\nrate = 1.0\n", &format!("\nrate = {rate}\n")),
    );
    std::fs::create_dir_all(shared_store()).unwrap();
    std::os::unix::fs::symlink(shared_store(), project.store()).unwrap();
    (project, guard)
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn shared_store() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("aio-lite-store")
}

/// One HTTP/1.1 request over loopback; returns (status, headers, body).
fn http(url: &str, method: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let mut request = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// Issues a token with the credentials `envbuild creds` prints; returns the token.
fn issue_token(openrc: &str) -> (u16, Option<String>) {
    let value = |name: &str| -> String {
        let line = openrc
            .lines()
            .find(|l| l.starts_with(&format!("export {name}=")))
            .unwrap();
        line.split_once('=')
            .unwrap()
            .1
            .trim_matches('\'')
            .to_string()
    };
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": value("OS_USERNAME"), "domain": {"name": value("OS_USER_DOMAIN_NAME")}, "password": value("OS_PASSWORD")}}},
        "scope": {"project": {"name": value("OS_PROJECT_NAME"), "domain": {"name": value("OS_PROJECT_DOMAIN_NAME")}}}
    }});
    let url = format!("{}/auth/tokens", value("OS_AUTH_URL"));
    let (status, head, _) = http(
        &url,
        "POST",
        &[("Content-Type", "application/json")],
        &body.to_string(),
    );
    let token = head.lines().find_map(|l| {
        l.strip_prefix("X-Subject-Token: ")
            .or_else(|| l.strip_prefix("x-subject-token: "))
    });
    (status, token.map(str::to_string))
}

#[test]
fn aio_lite_up_token_down_and_warm_up() {
    let (project, _serial) = project();

    // The shared store: empty when this test runs first (then everything is built from PyPI,
    // as in CI's clean clone), else its stages come from it (new ones are built).
    let fresh = std::fs::read_dir(shared_store().join("v1/entries"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    let cold = project.json(&["up", "aio-lite", "--json"]);
    let stages = cold["build"]["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 10);
    let allowed: &[&str] = if fresh {
        &["built"]
    } else {
        &["built", "cached"]
    };
    assert!(
        stages[..9]
            .iter()
            .all(|s| allowed.contains(&s["action"].as_str().unwrap())),
        "{cold}"
    );
    let services = cold["machines"][0]["services"].as_array().unwrap();
    assert_eq!(services.len(), 4);

    // A token through NGINX with the generated admin password, then an authenticated call.
    let openrc = project.ok(&["creds", "aio-lite"]);
    let public = cold["machines"][0]["ports"]["public"].as_u64().unwrap();
    assert!(
        openrc.contains(&format!("OS_AUTH_URL='http://127.0.0.1:{public}/v3'")),
        "{openrc}"
    );
    let (status, token) = issue_token(&openrc);
    assert_eq!(status, 201);
    let token = token.expect("X-Subject-Token");
    let (status, _, body) = http(
        &format!("http://127.0.0.1:{public}/v3/projects"),
        "GET",
        &[("X-Auth-Token", &token)],
        "",
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("\"name\": \"admin\"") || body.contains("\"name\":\"admin\""),
        "{body}"
    );
    // A wrong password is refused (401), not an error.
    let wrong = openrc
        .lines()
        .map(|l| {
            if l.starts_with("export OS_PASSWORD=") {
                "export OS_PASSWORD='wrong'"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(issue_token(&wrong).0, 401);

    // Status lists each service with its URL and what its processes hold in memory.
    let status = project.json(&["status", "aio-lite", "--json"]);
    let listed = status[0]["services"].as_array().unwrap();
    assert!(listed.iter().all(|s| s["running"] == true));
    for s in listed {
        let memory = &s["memory"];
        let (rss, pss) = (memory["rss_bytes"].as_u64(), memory["pss_bytes"].as_u64());
        assert!(memory["processes"].as_u64() >= Some(1), "{s}");
        assert!(rss > Some(0) && pss > Some(0) && pss <= rss, "{s}");
    }
    let total = status[0]["memory"]["processes"].as_u64().unwrap();
    let each: u64 = listed
        .iter()
        .map(|s| s["memory"]["processes"].as_u64().unwrap())
        .sum();
    assert_eq!(total, each);
    assert!(
        listed
            .iter()
            .any(|s| s["url"] == format!("http://127.0.0.1:{public}/v3"))
    );

    // The password is nowhere in the store or the hash dump.
    let password = openrc
        .lines()
        .find_map(|l| l.strip_prefix("export OS_PASSWORD="))
        .unwrap()
        .trim_matches('\'')
        .to_string();
    assert!(
        !project
            .ok(&["hash", "aio-lite", "--json"])
            .contains(&password)
    );
    let grep = std::process::Command::new("grep")
        .args(["-rqF", &password])
        .arg(project.store())
        .status()
        .unwrap();
    assert!(!grep.success(), "the admin password leaked into the store");

    // Down: no process, no port.
    project.ok(&["down", "aio-lite"]);
    let state = project.state().display().to_string();
    assert!(
        processes_mentioning(&state).is_empty(),
        "left running: {:?}",
        processes_mentioning(&state)
    );
    for port in cold["machines"][0]["ports"].as_object().unwrap().values() {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port.as_u64().unwrap() as u16)).is_ok(),
            "port {port} still taken"
        );
    }

    // Warm: replayed from the cache, no step runs, a token works again (same password).
    let warm = project.json(&["up", "aio-lite", "--json"]);
    let actions: Vec<&str> = warm["build"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "cached", "cached", "cached", "cached", "cached", "cached", "cached", "cached",
            "cached", "restored"
        ]
    );
    assert!(
        warm["build"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["steps_run"] == 0)
    );
    let openrc = project.ok(&["creds", "aio-lite"]);
    assert!(openrc.contains(&password));
    assert_eq!(issue_token(&openrc).0, 201);
    project.ok(&["down", "aio-lite"]);
    assert!(processes_mentioning(&state).is_empty());
    project.ok(&["cache", "verify"]);
}

fn test_run(
    project: &Project,
    flow: &str,
    out: &std::path::Path,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let result = project
        .cmd()
        .args(["test", "aio-lite", flow, "--out", out.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let summary =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .unwrap();
    (result, summary)
}

#[test]
fn rolling_upgrade_keeps_keystone_up_and_the_second_run_builds_nothing() {
    let (project, _serial) = project();
    let first_out = project.path().join("run-1");
    let (result, first) = test_run(&project, "rolling-upgrade", &first_out, &[]);
    assert!(
        result.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(first["verdict"], "passed");
    assert_eq!(first["complete"], true);
    assert_eq!(first["from_version"], "28.1.0");
    assert_eq!(first["to_version"], "29.1.0");
    // Every probe saw every request succeed (max_failed_requests = 0 made that the verdict).
    let probes = first["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 3);
    for probe in probes {
        assert_eq!(probe["failed"], 0, "{probe}");
        assert_eq!(probe["uptime_pct"], 100.0);
        assert!(probe["total"].as_u64().unwrap() > 10, "{probe}");
    }
    // The persistent resources were created before, verified after (the application credential
    // authenticates on N+1) and deleted.
    let resources = first["resources"].as_array().unwrap();
    assert!(
        resources.iter().any(|r| r["phase"] == "resources-verify"
            && r["resource"] == "application_credential"
            && r["ok"] == true),
        "{resources:?}"
    );
    assert!(resources.iter().all(|r| r["ok"] == true), "{resources:?}");
    // Tempest's identity smoke tests and the Rally Keystone task passed on N and on N+1; their
    // raw outputs are in the run folder, their figures in the summary and in junit.xml.
    for when in ["before", "after"] {
        let smoke = &first["smoke"][when];
        assert!(smoke["passed"].as_u64().unwrap() > 0, "{smoke}");
        assert_eq!(smoke["failed"], 0, "{smoke}");
        let rally = &first["rally"][when];
        assert_eq!(rally["sla_passed"], true, "{rally}");
        let auth = &rally["KeystoneBasic.authenticate_user_and_validate_token"];
        assert!(auth["iterations"].as_u64().unwrap() > 0, "{rally}");
        assert_eq!(auth["failures"], 0, "{rally}");
        let tempest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(first_out.join(when).join("tempest/results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(tempest["passed"], smoke["passed"]);
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(first_out.join(when).join("rally/report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(report["tasks"][0]["pass_sla"], true);
    }
    // The expand step really migrated the schema (28 -> 29 has pending expand steps).
    let expand = std::fs::read_to_string(first_out.join("logs/expand.log")).unwrap();
    assert!(expand.contains("Running upgrade"), "{expand}");
    // junit.xml parses; every case passed, smoke and Rally among them.
    let parsed = std::process::Command::new("python3")
        .args(["-c", "import sys,xml.etree.ElementTree as E\nfor c in E.parse(sys.argv[1]).getroot().iter('testcase'):\n bad = [t for t in ('failure', 'error', 'skipped') if c.find(t) is not None]\n print(c.get('classname'), c.get('name'), bad[0] if bad else 'passed')"])
        .arg(first_out.join("junit.xml"))
        .output()
        .unwrap();
    assert!(parsed.status.success());
    let cases = String::from_utf8(parsed.stdout).unwrap();
    for case in [
        "aio-lite.rolling-upgrade.smoke after",
        "aio-lite.rolling-upgrade.rally before",
        "aio-lite.rolling-upgrade.phase validate-after",
    ] {
        assert!(
            cases.contains(&format!("{case} passed\n")),
            "{case} in {cases}"
        );
    }
    assert!(cases.lines().all(|l| l.ends_with(" passed")), "{cases}");
    assert!(
        std::fs::read_to_string(first_out.join("report.html"))
            .unwrap()
            .contains("PASSED")
    );
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());

    // Second run: every stage before the upgrade comes from the cache.
    let second_out = project.path().join("run-2");
    let (result, second) = test_run(
        &project,
        "rolling-upgrade",
        &second_out,
        &["--var", "validation=none"],
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stdout)
    );
    let cache = second["cache"].as_array().unwrap();
    assert_eq!(cache.len(), 10);
    assert!(cache.iter().all(|s| s["action"] != "built"), "{cache:?}");
    // validation = none: the phases ran and said so; nothing was counted.
    assert_eq!(second["smoke"]["before"], serde_json::Value::Null);
    eprintln!(
        "rolling-upgrade wall time: first {:.0} s, second {:.0} s",
        first["duration_s"], second["duration_s"]
    );
}

#[test]
fn all_at_once_upgrade_measures_the_outage() {
    let (project, _serial) = project();
    let out = project.path().join("run");
    let (result, summary) = test_run(&project, "all-at-once", &out, &[]);
    assert!(
        result.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    let probes = summary["probes"].as_array().unwrap();
    assert!(
        probes
            .iter()
            .all(|p| p["down_time_ms"].as_u64().unwrap() > 0),
        "stopping every API must show: {probes:?}"
    );
    assert!(
        probes
            .iter()
            .all(|p| p["uptime_pct"].as_f64().unwrap() < 100.0)
    );
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
}

#[test]
fn rolling_upgrade_with_probes_at_20_hz_fails_no_request() {
    let (project, _serial) = project_at_rate("20.0");
    let out = project.path().join("run");
    let (result, summary) = test_run(
        &project,
        "rolling-upgrade",
        &out,
        &["--var", "validation=none"],
    );
    let probes = summary["probes"].as_array().unwrap();
    let figures: Vec<String> = probes
        .iter()
        .map(|p| {
            format!(
                "{}: {} sent, {} failed, {} not sent, {:.1} Hz, p95 {:.0} ms",
                p["probe"],
                p["total"],
                p["failed"],
                p["not_sent"],
                p["achieved_rate_hz"],
                p["latency_p95_ms"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    eprintln!("20 Hz rolling upgrade: {figures:?}");
    assert!(
        result.status.success(),
        "{figures:?}\n{}",
        String::from_utf8_lossy(&result.stdout)
    );
    assert_eq!(probes.len(), 3);
    for probe in probes {
        assert_eq!(probe["failed"], 0, "{probe}");
        assert_eq!(probe["not_sent"], 0, "{probe}");
        // Open loop: the rate asked is the rate sent.
        assert!(
            probe["achieved_rate_hz"].as_f64().unwrap() > 19.0,
            "{probe}"
        );
    }
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
}
