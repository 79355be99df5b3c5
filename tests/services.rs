//! up/down/status/exec/creds with real services on loopback.

mod common;

use common::{Background, Project, processes_mentioning, processes_with};

fn web_env(project: &Project, marker: &str) {
    project.write(
        "web.toml",
        &format!(
            r#"
description = "a web server and a tcp echo"

[secrets.admin_password]
generate = "password"

[machines.web]
ports = {{ http = "auto", other = "auto" }}
prestart = ["test -n \"$ENVBUILD_SECRET_ADMIN_PASSWORD\"", "echo $ENVBUILD_PORT_HTTP > $ENVBUILD_RUN/port"]

[[machines.web.stages]]
name = "site"
steps = ["mkdir -p site && echo hello-from-envbuild > site/index.html"]

[[machines.web.services]]
name = "http"
command = "exec python3 -m http.server --bind 127.0.0.1 --directory site {{{{ ports.http }}}} # {marker}"
url = "http://127.0.0.1:{{{{ ports.http }}}}/"
ready = {{ http = "http://127.0.0.1:{{{{ ports.http }}}}/index.html", status = 200, timeout = "30s" }}

[[machines.web.services]]
name = "second"
command = "exec python3 -m http.server --bind 127.0.0.1 $ENVBUILD_PORT_OTHER # {marker}"
ready = {{ tcp = "127.0.0.1:{{{{ ports.other }}}}" }}

[cloud]
machine = "web"
auth_url = "http://127.0.0.1:{{{{ ports.http }}}}/v3"
username = "admin"
password_secret = "admin_password"
project = "admin"
"#
        ),
    );
}

fn get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    use std::io::{Read, Write};
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn up_serves_status_reports_and_down_leaves_nothing() {
    let project = Project::new();
    let marker = format!("envbuild-web-test-{}", std::process::id());
    web_env(&project, &marker);
    project.ok(&["up", "web"]);
    let state = project.state().display().to_string();
    assert_eq!(processes_mentioning(&state).len(), 2, "two services run");

    let status = project.json(&["status", "web", "--json"]);
    let machine = &status[0];
    assert_eq!(machine["stage"], "site");
    assert_eq!(
        machine["up"], true,
        "the backend says the machine is up: {status}"
    );
    let services = machine["services"].as_array().unwrap();
    assert!(services.iter().all(|s| s["running"] == true));
    let url = services[0]["url"].as_str().unwrap().to_string();
    assert!(
        get(&url).contains("hello-from-envbuild"),
        "the built site is served at {url}"
    );
    let port = machine["ports"]["http"].as_u64().unwrap();
    let root_run = project.state().join("envs/web/web/run/port");
    assert_eq!(
        std::fs::read_to_string(root_run).unwrap().trim(),
        port.to_string()
    );

    // A second up while running changes nothing; a build while running is refused.
    let out = project.run(&["up", "web"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("web is already up"));
    assert_eq!(processes_mentioning(&state).len(), 2);
    let out = project.run(&["build", "web"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("envbuild down web"));

    // creds: an openrc with the generated password, and a clouds.yaml readable only by us.
    let openrc = project.ok(&["creds", "web"]);
    assert!(
        openrc.contains(&format!("export OS_AUTH_URL='http://127.0.0.1:{port}/v3'")),
        "{openrc}"
    );
    assert!(openrc.contains("export OS_IDENTITY_API_VERSION=3"));
    let secrets: serde_json::Value = serde_json::from_slice(
        &std::fs::read(project.state().join("envs/web/secrets.json")).unwrap(),
    )
    .unwrap();
    let password = secrets["admin_password"].as_str().unwrap();
    assert_eq!(password.len(), 32);
    assert!(openrc.contains(&format!("export OS_PASSWORD='{password}'")));
    let clouds = project.state().join("envs/web/clouds.yaml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&clouds).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The password is in no spec, no store entry, no hash output.
    assert!(!project.ok(&["hash", "web", "--json"]).contains(password));
    let store_text = walk_text(&project.store());
    assert!(!store_text.contains(password));

    // exec runs in the machine with its runtime environment.
    let out = project.ok(&[
        "exec",
        "web",
        "web",
        "--",
        "sh",
        "-c",
        "cat site/index.html; echo port=$ENVBUILD_PORT_HTTP",
    ]);
    assert!(
        out.contains("hello-from-envbuild") && out.contains(&format!("port={port}")),
        "{out}"
    );

    project.ok(&["down", "web"]);
    assert!(
        processes_mentioning(&state).is_empty(),
        "{:?}",
        processes_mentioning(&state)
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok(),
        "port {port} still taken"
    );
    assert!(!project.state().join("envs/web/web/run").exists());

    // Up again: replayed from the cache, no step runs, a fresh password is not generated.
    let again = project.json(&["up", "web", "--json"]);
    assert_eq!(again["build"]["stages"][0]["action"], "restored");
    project.ok(&["down", "web"]);
    let secrets_after: serde_json::Value = serde_json::from_slice(
        &std::fs::read(project.state().join("envs/web/secrets.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(secrets_after["admin_password"], secrets["admin_password"]);
}

fn walk_text(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            text.push_str(&walk_text(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

#[test]
fn up_after_down_restores_what_services_changed() {
    let project = Project::new();
    project.write(
        "state.toml",
        r#"
[machines.m]
prestart = ["echo runtime > built.txt; echo junk > junk.txt; mkdir -p junkdir/x; rm gone.txt"]
[[machines.m.stages]]
name = "s"
steps = ["echo built > built.txt", "echo kept > gone.txt", "mkdir -p d && echo same > d/same.txt"]

[[machines.m.services]]
name = "idle"
command = "exec sleep 600"
"#,
    );
    let root = project.state().join("envs/state/m/root");
    project.ok(&["up", "state"]);
    assert_eq!(
        std::fs::read_to_string(root.join("built.txt")).unwrap(),
        "runtime\n"
    );
    project.ok(&["down", "state"]);
    let same_inode =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(root.join("d/same.txt")).unwrap());

    // The next build brings the machine back to exactly its cached stage.
    assert_eq!(project.build_actions("state", &[]), ["s:restored"]);
    assert_eq!(
        std::fs::read_to_string(root.join("built.txt")).unwrap(),
        "built\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("gone.txt")).unwrap(),
        "kept\n"
    );
    assert!(!root.join("junk.txt").exists() && !root.join("junkdir").exists());
    // An unchanged file is not copied again.
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(root.join("d/same.txt")).unwrap()),
        same_inode
    );
}

#[test]
fn a_service_that_never_gets_ready_fails_up_and_leaves_nothing() {
    let project = Project::new();
    let marker = format!("envbuild-notready-{}", std::process::id());
    behind_a_running_service(
        &project,
        "broken",
        &marker,
        ("never", "echo starting; exec sleep 600", "2s"),
    );
    let out = project.run(&["up", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("service `never` of machine `m` did not become ready"),
        "{stderr}"
    );
    assert!(
        stderr.contains("starting"),
        "shows the service's log: {stderr}"
    );
    let state = project.state().display().to_string();
    assert!(
        processes_mentioning(&state).is_empty(),
        "{:?}",
        processes_mentioning(&state)
    );
}

#[test]
fn missing_host_tool_names_the_package_and_exits_2() {
    let project = Project::new();
    project.write(
        "needs.toml",
        r#"
[machines.m]
requires = [{ program = "surely-not-installed-tool", package = "surely-not-installed" }]
[[machines.m.stages]]
name = "s"
steps = ["true"]
"#,
    );
    let out = project.run(&["build", "needs"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("apt-get install surely-not-installed"),
        "{stderr}"
    );
    assert!(project.entries().is_empty());
}

// Services here run `sleep` under their shell (no `exec`), so that the shell's command line,
// the service's first process, keeps the test's marker.

/// Environment `env`: a service `ok` that runs, then `(name, command, ready timeout)`, whose
/// readiness (a TCP port nobody opens) never comes.
fn behind_a_running_service(
    project: &Project,
    env: &str,
    marker: &str,
    second: (&str, &str, &str),
) {
    let (name, command, timeout) = second;
    project.write(
        &format!("{env}.toml"),
        &format!(
            r#"
[machines.m]
ports = {{ p = "auto" }}
[[machines.m.stages]]
name = "s"
steps = ["true"]

[[machines.m.services]]
name = "ok"
command = "sleep 600 # {marker}"

[[machines.m.services]]
name = "{name}"
command = "{command} # {marker}"
ready = {{ tcp = "127.0.0.1:{{{{ ports.p }}}}", timeout = "{timeout}" }}
"#
        ),
    );
}

#[test]
fn a_service_that_exits_at_once_is_reported_with_its_status_and_log() {
    for (command, status) in [
        (
            "echo boom-from-the-service >&2; exit 3",
            "exited with status 3",
        ),
        (
            "echo boom-from-the-service >&2; kill -9 $$",
            "was killed by signal 9 (SIGKILL)",
        ),
    ] {
        let project = Project::new();
        let marker = format!("envbuild-dying-{}", std::process::id());
        // Its readiness timeout is far longer than it takes to notice the exit.
        behind_a_running_service(&project, "dying", &marker, ("dies", command, "90s"));
        let out = project.run(&["up", "dying"]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Its exit, not a readiness timeout (90 s) after the fact, with the end of its log.
        assert!(
            stderr.contains(&format!("service `dies` of machine `m` {status} ")),
            "{stderr}"
        );
        assert!(stderr.contains("before it was ready"), "{stderr}");
        assert!(stderr.contains("boom-from-the-service"), "{stderr}");
        let state = project.state().display().to_string();
        assert!(processes_mentioning(&state).is_empty(), "{stderr}");
        assert!(!project.state().join("envs/dying/m/services.json").exists());
    }
}

#[test]
fn sigint_or_sigterm_while_services_wait_for_readiness_stops_them_all() {
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let project = Project::new();
        let marker = format!("envbuild-never-{}-{name}", std::process::id());
        behind_a_running_service(&project, "never", &marker, ("never", "sleep 601", "600s"));
        let child = Background::spawn({
            let mut up = project.process();
            up.args(["up", "never"]);
            up
        });
        common::wait_for_processes(&marker, 2);
        // SAFETY: signalling the child we spawned, as Ctrl-C or a CI abort would.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.finish();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("interrupted by {name} while service `never`")),
            "{stderr}"
        );
        assert!(common::processes_with(&marker).is_empty(), "{name}");
        assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
        let machine = project.state().join("envs/never/m");
        assert!(!machine.join("services.json").exists(), "{name}");
        assert!(!machine.join("run").exists(), "{name}");
    }
}

#[test]
fn two_ups_at_once_never_share_an_environment() {
    let project = Project::new();
    let marker = format!("envbuild-gate-{}", std::process::id());
    // Ready once the test creates `go` in the machine: the first `up` holds the environment
    // until then.
    project.write(
        "gate.toml",
        &format!(
            r#"
[machines.m]
[[machines.m.stages]]
name = "s"
steps = ["true"]

[[machines.m.services]]
name = "svc"
command = "sleep 600 # {marker}"
ready = {{ command = "test -f go", timeout = "300s" }}
"#
        ),
    );
    let up = |extra: &[&str]| {
        let mut up = project.process();
        up.args(["up", "gate"]).args(extra);
        Background::spawn(up)
    };
    let first = up(&[]);
    common::wait_for_processes(&marker, 1);

    // A second up refuses at once and names the run that holds the environment.
    let out = project.run(&["up", "gate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "gate is in use by another envbuild (pid {}: envbuild up gate, since ",
            first.id()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--wait"), "{stderr}");
    // So does down: it does not stop what another run is starting.
    assert_eq!(project.run(&["down", "gate"]).status.code(), Some(2));
    assert_eq!(common::processes_with(&marker).len(), 1);

    // With --wait it waits for the first, then finds the environment up.
    let waiting = up(&["--wait=5m"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    std::fs::write(project.state().join("envs/gate/m/root/go"), "").unwrap();
    assert!(first.finish().status.success());
    let waited = waiting.finish();
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(waited.status.success(), "{stderr}");
    assert!(stderr.contains("waiting for it to end"), "{stderr}");
    assert!(stderr.contains("gate is already up"), "{stderr}");

    // One service ran all along, the one status lists and down stops: nothing orphaned.
    let pids = common::processes_with(&marker);
    let status = project.json(&["status", "gate", "--json"]);
    assert_eq!(pids.len(), 1);
    assert_eq!(status[0]["services"][0]["pid"], pids[0]);
    project.ok(&["down", "gate"]);
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
}

/// Services `left` and `right` are each ready only once the other has started: listed one
/// after the other they could never both get ready, so `up` passing shows that services with
/// `after = []` start at once. `app` starts after `db` and `left` are ready; `down` stops it
/// before them.
#[test]
fn after_starts_independent_services_at_once_and_dependents_once_ready() {
    let project = Project::new();
    project.write(
        "graph.toml",
        r#"
[machines.m]
[[machines.m.stages]]
name = "s"
steps = ["true"]

[[machines.m.services]]
name = "db"
command = "trap 'echo db >> stopped; exit 0' TERM; sleep 1; touch db-ready; sleep 600 & wait"
ready = { command = "test -f db-ready", timeout = "30s" }

[[machines.m.services]]
name = "left"
after = []
command = "trap 'echo left >> stopped; exit 0' TERM; touch left-started; sleep 600 & wait"
ready = { command = "test -f right-started", timeout = "30s" }

[[machines.m.services]]
name = "right"
after = []
command = "trap 'echo right >> stopped; exit 0' TERM; touch right-started; sleep 600 & wait"
ready = { command = "test -f left-started", timeout = "30s" }

[[machines.m.services]]
name = "app"
after = ["db", "left"]
command = "trap 'echo app >> stopped; exit 0' TERM; test -f db-ready && test -f right-started && touch app-saw-them; sleep 600 & wait"
"#,
    );
    project.ok(&["up", "graph"]);
    let root = project.state().join("envs/graph/m/root");
    assert!(
        root.join("app-saw-them").exists(),
        "app started after db was ready"
    );
    let status = project.json(&["status", "graph", "--json"]);
    let names: Vec<&str> = status[0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "left", "right", "app"], "the spec's order");

    project.ok(&["down", "graph"]);
    let stopped = std::fs::read_to_string(root.join("stopped")).unwrap();
    let at = |name: &str| stopped.lines().position(|l| l == name).unwrap();
    assert_eq!(stopped.lines().count(), 4, "{stopped}");
    assert!(at("app") < at("db") && at("app") < at("left"), "{stopped}");
    let state = project.state().display().to_string();
    assert!(processes_mentioning(&state).is_empty());
}

/// `stop_timeout`: a service that takes 3 s to exit after SIGTERM is killed after its 1 s,
/// while one with the default (15 s) exits on its own.
#[test]
fn stop_timeout_is_how_long_a_service_gets_before_sigkill() {
    let project = Project::new();
    project.write(
        "slow.toml",
        r#"
[machines.m]
[[machines.m.stages]]
name = "s"
steps = ["true"]

[[machines.m.services]]
name = "patient"
command = "trap 'sleep 3; touch patient-exited; exit 0' TERM; touch patient-up; sleep 600 & wait"
ready = { command = "test -f patient-up" }

[[machines.m.services]]
name = "hurried"
stop_timeout = "1s"
command = "trap 'sleep 3; touch hurried-exited; exit 0' TERM; touch hurried-up; sleep 600 & wait"
ready = { command = "test -f hurried-up" }
"#,
    );
    project.ok(&["up", "slow"]);
    let out = project.run(&["down", "slow"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("slow/m/hurried did not stop in time and was killed"),
        "{stderr}"
    );
    assert!(!stderr.contains("patient did not stop"), "{stderr}");
    let root = project.state().join("envs/slow/m/root");
    assert!(root.join("patient-exited").exists(), "patient ended itself");
    assert!(!root.join("hurried-exited").exists(), "hurried was killed");
    let state = project.state().display().to_string();
    assert!(processes_mentioning(&state).is_empty());
}

/// A service that exits while others start beside it (`after = []`) fails `up` with its own
/// exit, at once: the others' readiness waits are cut short and nothing is left running.
#[test]
fn a_failure_among_services_starting_at_once_stops_them_all() {
    let project = Project::new();
    let marker = format!("envbuild-parallel-fail-{}", std::process::id());
    project.write(
        "par.toml",
        &format!(
            r#"
[machines.m]
ports = {{ p = "auto" }}
[[machines.m.stages]]
name = "s"
steps = ["true"]

[[machines.m.services]]
name = "runs"
command = "sleep 600 # {marker}"

[[machines.m.services]]
name = "waits"
after = []
command = "sleep 600 # {marker}"
ready = {{ tcp = "127.0.0.1:{{{{ ports.p }}}}", timeout = "90s" }}

[[machines.m.services]]
name = "dies"
after = []
command = "sleep 1; echo boom-beside-the-others >&2; exit 4 # {marker}"
ready = {{ tcp = "127.0.0.1:{{{{ ports.p }}}}", timeout = "90s" }}
"#
        ),
    );
    let out = project.run(&["up", "par"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("service `dies` of machine `m` exited with status 4"),
        "{stderr}"
    );
    assert!(stderr.contains("boom-beside-the-others"), "{stderr}");
    assert!(!stderr.contains("did not become ready"), "{stderr}");
    assert!(processes_with(&marker).is_empty(), "{stderr}");
    assert!(!project.state().join("envs/par/m/services.json").exists());
}
