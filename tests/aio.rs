//! aio end to end (docs/aio.md): OpenStack N from PyPI (keystone, glance, placement, nova,
//! neutron, swift) on Debian's MariaDB, RabbitMQ, memcached and HAProxy, on loopback. From an
//! empty store shared by the tests here: `up aio`, the real `openstack` and `swift` clients
//! with `envbuild creds`, `down` leaves nothing; all-at-once, which builds nothing, validates N
//! and N+1 (Tempest smoke, Rally) and shows the outage; the rolling upgrade with every probe
//! failing nothing (keystone and swift at 20 Hz, nova at 5 Hz, the scenario programs). Needs
//! the host packages docs/aio.md lists (dev/setup installs them), root and PyPI; fails, never
//! skips, without. dev/test runs the file in its own lane and the rolling test alone after the
//! lanes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Project, processes_mentioning};

/// One at a time: a whole OpenStack on 2 cores is load enough. Whichever test runs first
/// builds every stage (PyPI), the other replays them.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn project() -> (Project, std::sync::MutexGuard<'static, ()>) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    (Project::on_repository_envs("aio-store"), guard)
}

fn root(project: &Project) -> PathBuf {
    project.state().join("envs/aio/aio/root")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The variables an openrc exports.
fn exports(openrc: &str) -> Vec<(String, String)> {
    openrc
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(name, value)| (name.to_string(), value.trim_matches('\'').to_string()))
        .collect()
}

/// Runs a client of the environment's validation venv (`openstack`, `swift`: python-
/// openstackclient and python-swiftclient, locked with hashes in validation/rally.txt) in
/// `dir` with only `vars` (and PATH, HOME); panics with its output unless it succeeds.
fn client(
    project: &Project,
    vars: &[(String, String)],
    dir: &Path,
    program: &str,
    args: &[&str],
) -> String {
    // Through the venv's python: a console script's shebang names the folder the stage was
    // built in, which is gone once the stage is replayed elsewhere.
    let bin = root(project).join("venv-rally/bin");
    let out = std::process::Command::new(bin.join("python"))
        .arg(bin.join(program))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir)
        .envs(vars.iter().cloned())
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn up_aio_serves_the_openstack_and_swift_clients_and_down_leaves_nothing() {
    let (project, _serial) = project();
    let up = project.cmd().args(["up", "aio"]).output().unwrap();
    assert!(up.status.success(), "{}", text(&up));
    let state = project.state().display().to_string();

    let openrc = project.ok(&["creds", "aio"]);
    assert!(
        openrc.contains("export OS_AUTH_URL='http://127.0.0.1:"),
        "{openrc}"
    );
    let clouds = project.state().join("envs/aio/clouds.yaml");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // A 64 KiB raw image: the fake driver boots anything.
    let image: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(work.join("image.raw"), &image).unwrap();
    // openstack with the clouds.yaml alone (no OS_* variable but the file's name).
    let clouds_file = vec![(
        "OS_CLIENT_CONFIG_FILE".to_string(),
        clouds.display().to_string(),
    )];
    let cloud = |args: &[&str]| {
        let with_cloud: Vec<&str> = ["--os-cloud", "aio"].iter().chain(args).copied().collect();
        client(&project, &clouds_file, work, "openstack", &with_cloud)
    };
    cloud(&[
        "image",
        "create",
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--file",
        "image.raw",
        "cli-image",
    ]);
    cloud(&["image", "save", "--file", "image.back", "cli-image"]);
    assert_eq!(std::fs::read(work.join("image.back")).unwrap(), image);
    let server = cloud(&[
        "server",
        "create",
        "--flavor",
        "m1.nano",
        "--image",
        "cli-image",
        "--nic",
        "none",
        "--wait",
        "-f",
        "value",
        "-c",
        "status",
        "cli-server",
    ]);
    assert_eq!(server.trim(), "ACTIVE");
    // `--wait` ends when the server reads DELETED; the list drops it once nova-compute has
    // destroyed the record, a moment later.
    cloud(&["server", "delete", "--wait", "cli-server"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let servers = cloud(&["server", "list", "-f", "value", "-c", "Name"]);
        if !servers.contains("cli-server") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still listed 60 s after its delete: {servers}"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    cloud(&["image", "delete", "cli-image"]);

    // swift with the openrc's variables.
    std::fs::write(work.join("object.txt"), "an object through swift\n").unwrap();
    let openrc_vars = exports(&openrc);
    let swift = |args: &[&str]| client(&project, &openrc_vars, work, "swift", args);
    swift(&["upload", "cli-container", "object.txt"]);
    let listed = swift(&["list", "cli-container"]);
    assert_eq!(listed.trim(), "object.txt");
    swift(&[
        "download",
        "cli-container",
        "object.txt",
        "-o",
        "object.back",
    ]);
    assert_eq!(
        std::fs::read_to_string(work.join("object.back")).unwrap(),
        "an object through swift\n"
    );
    swift(&["delete", "cli-container"]);

    let down = project.cmd().args(["down", "aio"]).output().unwrap();
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        !String::from_utf8_lossy(&down.stderr).contains("was killed"),
        "every service stopped within its stop_timeout: {}",
        text(&down)
    );
    assert!(
        processes_mentioning(&state).is_empty(),
        "{:?}",
        processes_mentioning(&state)
    );
}

fn test_run(
    project: &Project,
    flow: &str,
    out: &Path,
    extra: &[&str],
) -> (Output, serde_json::Value) {
    let result = project
        .cmd()
        .args(["test", "aio", flow, "--out", out.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let summary = std::fs::read(out.join("summary.json"))
        .unwrap_or_else(|e| panic!("summary.json: {e}\n{}", text(&result)));
    (result, serde_json::from_slice(&summary).unwrap())
}

fn probe<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["probe"] == name)
        .unwrap_or_else(|| panic!("no probe {name} in {}", summary["probes"]))
}

const HTTP_PROBES: [&str; 4] = [
    "keystone-token-validate",
    "nova-servers-list",
    "swift-account-get",
    "swift-account-head",
];
const PROGRAM_PROBES: [&str; 3] = ["server-lifecycle", "object-lifecycle", "token-lifecycle"];

/// The rolling upgrade fails no probe request: keystone's and swift's HTTP probes at the
/// spec's 20 Hz, nova's servers list at 5 Hz, the scenario programs at theirs. Not 20 Hz for
/// nova: on the 2-core machines CI runs on, the four 20 Hz probes and the scenarios alone keep
/// both cores busy and nova-api falls behind before the first migration ends (docs/aio.md,
/// "Probe rates and machine size"); 5 Hz still resolves 200 ms, and the summary says 5. Run
/// alone by dev/test (another lane's CPU would show as latency), against the stages the aio
/// lane built. Validation runs in the all-at-once test.
#[test]
fn rolling_upgrade_fails_no_request() {
    let (project, _serial) = project();
    let state = project.state().display().to_string();
    let rolling_out = project.path().join("rolling");
    let (result, rolling) = test_run(
        &project,
        "rolling-upgrade",
        &rolling_out,
        &[
            "--var",
            "validation=none",
            "--probe-rate",
            "nova-servers-list=5",
        ],
    );
    assert!(result.status.success(), "{}", text(&result));
    assert_eq!(rolling["verdict"], "passed");
    assert_eq!(rolling["complete"], true);
    for name in HTTP_PROBES {
        let p = probe(&rolling, name);
        let rate = if name == "nova-servers-list" {
            5.0
        } else {
            20.0
        };
        assert_eq!(p["failed"], 0, "{p}");
        assert_eq!(p["not_sent"], 0, "{p}");
        assert_eq!(p["rate_hz"], rate, "{p}");
        assert!(p["achieved_rate_hz"].as_f64().unwrap() > 0.9 * rate, "{p}");
    }
    for name in PROGRAM_PROBES {
        let p = probe(&rolling, name);
        assert_eq!(p["failed"], 0, "{p}");
        assert!(p["total"].as_u64().unwrap() > 3, "{p}");
    }
    assert!(
        probe(&rolling, "server-lifecycle")["phases"]["build_s"]["p50_s"].is_number(),
        "the seed's build time: {}",
        probe(&rolling, "server-lifecycle")
    );
    let resources = rolling["resources"].as_array().unwrap();
    assert!(resources.iter().all(|r| r["ok"] == true), "{resources:?}");
    for resource in [
        "application_credential",
        "user",
        "image",
        "network",
        "server",
        "swift",
    ] {
        assert!(
            resources
                .iter()
                .any(|r| r["phase"] == "resources-verify" && r["resource"] == resource),
            "{resource} verified on N+1: {resources:?}"
        );
    }
    assert_eq!(rolling["vars"]["validation"], "none");
    assert!(processes_mentioning(&state).is_empty());
    eprintln!("aio rolling-upgrade: {:.0} s", rolling["duration_s"]);
}

/// A second run builds nothing before the upgrade: all-at-once replays every stage, validates
/// N and N+1 (Tempest smoke and Rally), and its probes see the outage the rolling procedure
/// avoids.
#[test]
fn all_at_once_replays_every_stage_validates_n_and_n1_and_shows_the_outage() {
    let (project, _serial) = project();
    let state = project.state().display().to_string();
    // Whichever test of the file ran first built the stages; this makes sure of it.
    let build = project.cmd().args(["build", "aio"]).output().unwrap();
    assert!(build.status.success(), "{}", text(&build));
    let once_out = project.path().join("all-at-once");
    let (result, once) = test_run(&project, "all-at-once", &once_out, &[]);
    assert!(result.status.success(), "{}", text(&result));
    let cache = once["cache"].as_array().unwrap();
    assert!(cache.len() >= 11, "{cache:?}");
    assert!(cache.iter().all(|s| s["action"] != "built"), "{cache:?}");
    for name in HTTP_PROBES {
        let p = probe(&once, name);
        assert!(
            p["down_time_ms"].as_u64().unwrap() > 0,
            "stopping every API shows: {p}"
        );
    }
    assert!(
        once["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ok"] == true),
        "{}",
        once["resources"]
    );
    for when in ["before", "after"] {
        let smoke = &once["smoke"][when];
        assert!(smoke["passed"].as_u64().unwrap() > 10, "{when}: {smoke}");
        assert_eq!(smoke["failed"], 0, "{when}: {smoke}");
        assert_eq!(
            once["rally"][when]["sla_passed"], true,
            "{when}: {}",
            once["rally"]
        );
    }
    assert!(processes_mentioning(&state).is_empty());
    eprintln!("aio all-at-once: {:.0} s", once["duration_s"]);
}
