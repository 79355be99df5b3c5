//! Broken environment specs: every fixture under `fixtures/broken/<case>/environments/` must be
//! rejected by the real binary with exit code 2, an error that points at the exact place at fault
//! (`file:line[:col]:`), a message that says what is allowed or how to fix it, and nothing written:
//! no store, no state folder.
//!
//! Adding a case: create `fixtures/broken/<case>/environments/<case>.toml` (plus a `<case>/` folder
//! for inputs and templates when needed) and add one row to `CASES`.

mod common;

use std::path::{Path, PathBuf};

/// One broken spec and what envbuild must say about it.
struct Case {
    /// Folder under `fixtures/broken/`; also the environment name.
    name: &'static str,
    /// Extra arguments after `build <name>`.
    args: &'static [&'static str],
    /// Where the error must point, relative to the case's `environments/` folder.
    /// A leading `:` is shorthand for `<name>.toml:` (e.g. `":7:10"`); `None` for errors with no
    /// source position. Line-only (`":5"`) where the column is not deterministic.
    location: Option<&'static str>,
    /// Phrases stderr must contain: what is allowed, or how to fix it.
    phrases: &'static [&'static str],
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // TOML and shape (serde) errors. The syntax error column is the TOML parser's choice, so line only.
    Case { name: "spec-not-utf8", args: &[], location: Some(":1:19"), phrases: &["is not UTF-8", "byte offset 18", "save the file as UTF-8"] },
    Case { name: "toml-syntax", args: &[], location: Some(":5"), phrases: &["expected `\"`"] },
    Case { name: "unknown-top-level-key", args: &[], location: Some(":2:1"), phrases: &["unknown field `colour`", "expected one of `description`, `vars`, `secrets`, `machines`, `cloud`"] },
    Case { name: "stage-unknown-key", args: &[], location: Some(":6:1"), phrases: &["unknown field `stpes`", "expected one of `name`, `description`, `after`, `inputs`, `templates`, `sources`, `vars`, `env`, `steps`, `timeout`"] },
    Case { name: "steps-wrong-type", args: &[], location: Some(":6:9"), phrases: &["expected a sequence"] },
    Case { name: "no-machines", args: &[], location: Some(":1:1"), phrases: &["add a [machines.NAME] table"] },
    // Names and uniqueness.
    Case { name: "duplicate-stage", args: &[], location: Some(":10:8"), phrases: &["two stages named `install`", "stage names must be unique"] },
    Case { name: "duplicate-service", args: &[], location: Some(":10:8"), phrases: &["has two services named `web`"] },
    Case { name: "name-too-long", args: &[], location: Some(":6:8"), phrases: &["is not a valid stage name", "at most 60 characters"] },
    Case { name: "var-names-collide", args: &[], location: Some(":5:1"), phrases: &["vars `db-host` and `db_host` would both be $ENVBUILD_VAR_DB_HOST", "rename one"] },
    Case { name: "machine-invalid-name", args: &[], location: Some(":3:11"), phrases: &["`WebServer` is not a valid machine name", "use lowercase letters, digits, `-` and `_`, starting with a letter"] },
    // Machine settings.
    Case { name: "unknown-backend", args: &[], location: Some(":4:11"), phrases: &["unknown backend `docker`", "allowed: local, libvirt, vagrant"] },
    Case { name: "vagrant-networks", args: &[], location: Some(":6:14"), phrases: &["private links (`networks`) are for libvirt machines"] },
    Case { name: "image-without-sha256", args: &[], location: Some(":5:18"), phrases: &["add sha256 = \"<64 hex digits>\""] },
    Case { name: "image-not-http", args: &[], location: Some(":5:18"), phrases: &["an image URL starts with http:// or https://"] },
    Case { name: "bad-port", args: &[], location: Some(":4:17"), phrases: &["a number from 1 to 65535"] },
    Case { name: "unknown-stop-signal", args: &[], location: Some(":8:15"), phrases: &["allowed: TERM, INT, QUIT, HUP, KILL"] },
    Case { name: "bad-stop-timeout", args: &[], location: Some(":8:16"), phrases: &["`\"soon\"` is not a duration", "a string like \"90s\""] },
    Case { name: "service-after-unknown", args: &[], location: Some(":12:16"), phrases: &["`after` names `cache`, which is not a service listed before `web` in machine `app`", "listed above: db"] },
    Case { name: "service-after-later", args: &[], location: Some(":8:10"), phrases: &["`after` names `db`, which is not a service listed before `web`", "starts after services listed above it", "listed above: none"] },
    Case { name: "service-after-self", args: &[], location: Some(":8:10"), phrases: &["service `web` cannot start after itself"] },
    Case { name: "bad-duration", args: &[], location: Some(":8:11"), phrases: &["a positive number of seconds or a string like \"90s\""] },
    Case { name: "snapshot-unknown", args: &[], location: Some(":6:12"), phrases: &["unknown snapshot `frozen`", "allowed: \"disk\" (the default), \"running\""] },
    Case { name: "snapshot-on-local", args: &[], location: Some(":4:12"), phrases: &["keeps a VM's memory", "add backend = \"libvirt\""] },
    Case { name: "snapshot-running-with-networks", args: &[], location: Some(":7:12"), phrases: &["not possible on a machine with `networks`", "remove one or the other"] },
    Case { name: "bastion-on-local", args: &[], location: Some(":2:11"), phrases: &["`bastion` are for VM machines", "add backend = \"libvirt\""] },
    Case { name: "two-bastions", args: &[], location: Some(":8:11"), phrases: &["machine `a` is the bastion already", "at most one `bastion = true`"] },
    // `after` references and ordering.
    Case { name: "after-unknown-machine", args: &[], location: Some(":7:10"), phrases: &["names machine `db`, which this environment does not define", "machines: app"] },
    Case { name: "after-unknown-stage", args: &[], location: Some(":7:10"), phrases: &["machine `db` has no stage `schemas`", "its stages: schema"] },
    Case { name: "after-second-entry-bad", args: &[], location: Some(":9:5"), phrases: &["names machine `cache`", "machines: app, db"] },
    Case { name: "after-cycle", args: &[], location: Some(":7:10"), phrases: &["in a cycle (api -> db", "remove one `after`"] },
    Case { name: "after-cycle-three", args: &[], location: Some(":14:10"), phrases: &["in a cycle (db -> mq", "remove one `after`"] },
    // Inputs and pins.
    Case { name: "input-missing", args: &[], location: Some(":7:11"), phrases: &["input `scripts/install.sh` does not exist: expected"] },
    Case { name: "input-dotdot", args: &[], location: Some(":7:11"), phrases: &["must be a relative path inside", "without `..`"] },
    Case { name: "input-symlink-outside", args: &[], location: Some(":7:11"), phrases: &["input `hostname` leads out of", "`hostname` is a link to /etc/hostname"] },
    Case { name: "input-through-symlinked-folder", args: &[], location: Some(":7:21"), phrases: &["input `etcdir/hostname` leads out of", "`etcdir` is a link to /etc"] },
    Case { name: "input-folder-link-outside", args: &[], location: Some(":8:3"), phrases: &["`scripts/sub/leak` is a link to ../../../../../../../../../../../../etc/hostname, which leads out of input `scripts`", "a relative link"] },
    Case { name: "template-symlink-outside", args: &[], location: Some(":10:14"), phrases: &["template `app.conf` leads out of", "`app.conf` is a link to /etc/hostname"] },
    Case { name: "input-absolute", args: &[], location: Some(":7:11"), phrases: &["input `/etc/hostname` must be a relative path inside"] },
    Case { name: "source-bad-sha256", args: &[], location: Some(":8:81"), phrases: &["expected 64 hexadecimal digits, got 16 characters"] },
    Case { name: "source-git-and-url", args: &[], location: Some(":8:27"), phrases: &["`url` (a file) or `git` (a repository), not both"] },
    Case { name: "source-git-bad-rev", args: &[], location: Some(":8:68"), phrases: &["`--upload-pack=evil` is not a branch, tag or commit name"] },
    Case { name: "source-lock-bad-commit", args: &[], location: Some("source-lock-bad-commit.lock:6:10"), phrases: &["`main` is not a full commit id", "rerun `envbuild lock`"] },
    // Placeholders in the spec.
    Case { name: "step-undeclared-var", args: &[], location: Some(":10:50"), phrases: &["`{{ verison }}` names nothing defined here", "allowed: version"] },
    Case { name: "step-undeclared-var-multiline", args: &[], location: Some(":14:18"), phrases: &["`{{ release }}` names nothing defined here", "allowed: version"] },
    Case { name: "step-undeclared-var-after-escape", args: &[], location: Some(":10:28"), phrases: &["`{{ nope }}` names nothing defined here", "allowed: version"] },
    Case { name: "step-undeclared-var-line-continuation", args: &[], location: Some(":13:17"), phrases: &["`{{ plugin_version }}` names nothing defined here", "allowed: version"] },
    Case { name: "step-undeclared-var-crlf", args: &[], location: Some(":14:18"), phrases: &["`{{ release }}` names nothing defined here", "allowed: version"] },
    Case { name: "unclosed-placeholder", args: &[], location: Some(":10:28"), phrases: &["`{{` is never closed by `}}`"] },
    Case { name: "secret-in-step", args: &[], location: Some(":10:16"), phrases: &["secrets are never rendered", "read $ENVBUILD_SECRET_ADMIN instead"] },
    Case { name: "secret-in-service", args: &[], location: Some(":10:29"), phrases: &["secrets are never rendered", "read $ENVBUILD_SECRET_ADMIN instead"] },
    Case { name: "stage-unknown-var", args: &[], location: Some(":10:20"), phrases: &["stage uses var `nope` but [vars] does not declare it"] },
    Case { name: "stage-empty-step", args: &[], location: Some(":7:18"), phrases: &["step 2 of stage `install` is empty"] },
    Case { name: "stage-no-steps", args: &[], location: Some(":6:8"), phrases: &["stage `install` has no steps", "add steps = [\"...\"]"] },
    // Placeholders in template files: the location is inside the template file.
    Case { name: "template-undeclared-var", args: &[], location: Some("template-undeclared-var/app.conf.tmpl:3:11"), phrases: &["`{{ workers }}` is not a declared var", "allowed: port"] },
    Case { name: "template-unclosed-placeholder", args: &[], location: Some("template-unclosed-placeholder/templates/nginx.conf.in:3:10"), phrases: &["`{{` is never closed by `}}`"] },
    // Secrets and cloud.
    Case { name: "secret-unknown-generator", args: &[], location: Some(":4:12"), phrases: &["unknown secret generator `uuid`", "allowed: \"password\""] },
    // Flows.
    Case { name: "flow-unknown-action", args: &[], location: Some(":15:10"), phrases: &["unknown action `reboot`", "allowed: up, down, run, stop, start, restart"] },
    Case { name: "flow-restart-unknown-service", args: &[], location: Some(":16:13"), phrases: &["machine `web` has no service `keystone`", "its services: http"] },
    Case { name: "flow-resume-later-phase", args: &[], location: Some(":17:10"), phrases: &["resume names `upgrade`, which is not an earlier phase"] },
    Case { name: "flow-probes-never-run", args: &[], location: Some(":12:8"), phrases: &["no phase has `probes = true`"] },
    Case { name: "flow-budget-bad-down-time", args: &[], location: Some(":9:17"), phrases: &["max_down_time `soon` is not a duration", "\"0s\", \"5s\""] },
    Case { name: "flow-budget-bad-uptime", args: &[], location: Some(":19:18"), phrases: &["min_uptime_pct `101` is a percentage of successful requests, from 0 to 100"] },
    Case { name: "flow-probe-max-in-flight", args: &[], location: Some(":21:17"), phrases: &["max_in_flight is from 1 to 1000"] },
    Case { name: "flow-probe-unknown-secret", args: &[], location: Some(":22:9"), phrases: &["`{{ secrets.nope }}` names nothing defined here", "ports.http, token"] },
    Case { name: "flow-probe-unknown-kind", args: &[], location: Some(":20:8"), phrases: &["unknown probe kind `script`", "allowed: http (default), program"] },
    Case { name: "flow-program-probe-url", args: &[], location: Some(":22:7"), phrases: &["`url` is a key of HTTP probes", "a program probe runs `command`"] },
    Case { name: "flow-program-probe-no-command", args: &[], location: Some(":19:8"), phrases: &["a program probe needs command = \"...\""] },
    Case { name: "flow-probe-command-without-kind", args: &[], location: Some(":21:11"), phrases: &["`command` is a key of program probes", "add kind = \"program\""] },
    Case { name: "flow-http-probe-no-url", args: &[], location: Some(":19:8"), phrases: &["an HTTP probe needs url = \"http://...\""] },
    Case { name: "flow-program-probe-secret", args: &[], location: Some(":24:35"), phrases: &["secrets are never rendered", "read $ENVBUILD_SECRET_ADMIN instead"] },
    Case { name: "cloud-unknown-machine", args: &[], location: Some(":13:11"), phrases: &["[cloud] names machine `controller`, which this environment does not define", "machines: keystone"] },
    // Command line.
    Case { name: "var-override-undeclared", args: &["--var", "nope=1"], location: None, phrases: &["--var nope", "declares no var `nope`", "declared vars: release, version"] },
    Case { name: "var-override-twice", args: &["--var", "version=1.1", "--var", "version=1.2"], location: None, phrases: &["--var version is given twice", "version=1.1", "version=1.2", "give --var version=... once"] },
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("broken")
}

/// Runs one case; returns what is wrong with envbuild's answer, if anything.
fn check(case: &Case) -> Vec<String> {
    let envs = fixtures().join(case.name).join("environments");
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = tmp.path().join("store");
    let state = tmp.path().join("state");
    let output = common::envbuild(tmp.path())
        .env_remove("ENVBUILD_LOG")
        .arg("--envs")
        .arg(&envs)
        .arg("--store")
        .arg(&store)
        .arg("--state")
        .arg(&state)
        .args(["build", case.name])
        .args(case.args)
        .output()
        .expect("run envbuild");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut problems = Vec::new();

    if output.status.code() != Some(2) {
        problems.push(format!("exit code {:?}, expected 2", output.status.code()));
    }
    if stderr.contains("panicked") {
        problems.push("envbuild panicked".to_string());
    }
    if let Some(location) = case.location {
        let place = match location.strip_prefix(':') {
            Some(rest) => format!("{}/{}.toml:{rest}", envs.display(), case.name),
            None => format!("{}/{location}", envs.display()),
        };
        // The trailing `:` keeps `:5` from matching `:51`, and still lets a line-only location
        // match `:5:16:`.
        let expected = format!("error: {place}:");
        if !stderr.contains(&expected) {
            problems.push(format!("expected the error at `{place}`"));
        }
    }
    for phrase in case.phrases {
        if !stderr.contains(phrase) {
            problems.push(format!("stderr lacks `{phrase}`"));
        }
    }
    if store.exists() {
        problems.push(format!("{} was created", store.display()));
    }
    if state.join("envs").exists() {
        problems.push(format!("{} was created", state.join("envs").display()));
    }
    if !problems.is_empty() {
        problems.push(format!("stderr was:\n{}", stderr.trim_end()));
    }
    problems
}

#[test]
fn broken_specs_are_rejected_precisely_and_build_nothing() {
    let mut failures = Vec::new();
    for case in CASES {
        let problems = check(case);
        if !problems.is_empty() {
            failures.push(format!("{}:\n  - {}", case.name, problems.join("\n  - ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} broken specs were not rejected as expected:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_fixture_has_exactly_one_case() {
    let mut folders: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures/broken exists")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut names: Vec<String> = CASES.iter().map(|c| c.name.to_string()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "a case appears twice in CASES");
    assert_eq!(
        folders, names,
        "fixtures/broken/ folders and CASES rows differ"
    );
    for name in &names {
        let spec = fixtures()
            .join(name)
            .join("environments")
            .join(format!("{name}.toml"));
        assert!(spec.is_file(), "{} is missing", spec.display());
    }
    assert!(CASES.len() >= 20);
}
