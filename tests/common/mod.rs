//! Shared helpers for behaviour tests: a throwaway project (environments/, store, state) and the
//! real envbuild binary.
#![allow(dead_code)]

pub mod browser;
pub mod es;
pub mod nginx;
pub mod tls;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The real envbuild binary, run in `dir` and isolated from the developer's environment: none
/// of their folders, remote-cache config or signing key, no XDG folder of theirs, no colour.
/// (ENVBUILD_LOG, and the VM tests' ENVBUILD_IMAGES and ENVBUILD_LIBVIRT_URI, pass through.)
/// Every behaviour test runs the binary through this, or through [`Project`], which adds its
/// store and state.
pub fn envbuild(dir: &Path) -> Command {
    envbuild_at(&assert_cmd::cargo::cargo_bin("envbuild"), dir)
}

/// [`envbuild`] with the binary at `program` (a copy of it, say).
pub fn envbuild_at(program: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    for name in [
        "ENVBUILD_ENVS",
        "ENVBUILD_STORE",
        "ENVBUILD_STATE",
        "ENVBUILD_HISTORY_FILE",
        "ENVBUILD_CONFIG",
        "ENVBUILD_SIGNING_KEY",
    ] {
        cmd.env_remove(name);
    }
    cmd.env("XDG_CONFIG_HOME", dir.join("xdg/config"))
        .env("XDG_CACHE_HOME", dir.join("xdg/cache"))
        .env("XDG_STATE_HOME", dir.join("xdg/state"))
        .env("NO_COLOR", "1");
    cmd
}

pub struct Project {
    pub dir: tempfile::TempDir,
}

/// A test that fails half-way must not leave services running: take every environment down.
impl Drop for Project {
    fn drop(&mut self) {
        if !self.state().join("envs").is_dir() {
            return;
        }
        for entry in std::fs::read_dir(self.envs())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(env) = name.strip_suffix(".toml") {
                let _ = self.cmd().args(["down", env, "-q"]).output();
            }
        }
    }
}

impl Project {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("environments")).unwrap();
        Project { dir }
    }

    /// A project on the repository's environments/ whose store is `CARGO_TARGET_TMPDIR/store`,
    /// shared by the tests of one binary: whichever builds a stage first, the others replay it.
    pub fn on_repository_envs(store: &str) -> Self {
        let project = Project::new();
        std::fs::remove_dir(project.envs()).unwrap();
        std::os::unix::fs::symlink(
            concat!(env!("CARGO_MANIFEST_DIR"), "/environments"),
            project.envs(),
        )
        .unwrap();
        let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join(store);
        std::fs::create_dir_all(&shared).unwrap();
        std::os::unix::fs::symlink(&shared, project.store()).unwrap();
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn envs(&self) -> PathBuf {
        self.path().join("environments")
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// Writes `environments/<rel>`.
    pub fn write(&self, rel: &str, text: &str) {
        let path = self.envs().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// The binary on this project's store and state.
    pub fn process(&self) -> Command {
        self.process_of(&assert_cmd::cargo::cargo_bin("envbuild"))
    }

    /// [`Project::process`] with the binary at `program`.
    pub fn process_of(&self, program: &Path) -> Command {
        let mut cmd = envbuild_at(program, self.path());
        cmd.env("ENVBUILD_STORE", self.store())
            .env("ENVBUILD_STATE", self.state());
        cmd
    }

    pub fn cmd(&self) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.process())
    }

    /// An "agent" of this project (another CI machine): its own store, state and config file
    /// (`store-NAME/`, `state-NAME/`, `NAME.toml` in the project folder).
    pub fn agent(&self, name: &str) -> Command {
        let mut cmd = envbuild(self.path());
        cmd.env("ENVBUILD_STORE", self.path().join(format!("store-{name}")))
            .env("ENVBUILD_STATE", self.path().join(format!("state-{name}")))
            .env("ENVBUILD_CONFIG", self.path().join(format!("{name}.toml")));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "envbuild {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    /// `build --json` and the action of each stage, as "stage:action".
    pub fn build_actions(&self, env: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["build", env, "--json"];
        args.extend_from_slice(extra);
        let report = self.json(&args);
        report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}:{}",
                    s["stage"].as_str().unwrap(),
                    s["action"].as_str().unwrap()
                )
            })
            .collect()
    }

    pub fn entries(&self) -> Vec<String> {
        file_names(&self.store().join("v1/entries"))
    }

    pub fn tmp_leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.store().join("v1/tmp"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Lines of a counter file that steps append to (one line per executed step).
/// The names in a folder, sorted; none when it does not exist.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Pids of processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) && pid != std::process::id() as i32 {
                found.push(pid);
            }
        }
    }
    found
}

/// Waits (at most two minutes) until `n` processes have `marker` on their command line.
pub fn wait_for_processes(marker: &str, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while processes_with(marker).len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} processes with {marker} never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Pids of processes whose command line or environment contains `needle` (services `exec` away
/// their command line; their environment names the project's state folder).
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut found = processes_with(needle);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(environ) = std::fs::read(entry.path().join("environ"))
            && String::from_utf8_lossy(&environ).contains(needle)
            && pid != std::process::id() as i32
            && !found.contains(&pid)
        {
            found.push(pid);
        }
    }
    found
}

/// A run of the binary in the background that a failing test does not leave behind: dropped
/// before it ended, it gets SIGTERM (and cleans up, as on a CI abort) and is waited for.
pub struct Background(Option<std::process::Child>);

impl Background {
    pub fn spawn(mut command: Command) -> Background {
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Background(Some(command.spawn().expect("envbuild starts")))
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// Waits for the end of the run: its status and output.
    pub fn finish(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: signalling the child this test spawned.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// A machine `web` serving `site/index.html` with Python's http.server on an auto port, ready
/// when it answers 200: the small real service most behaviour tests probe. TOML, for a spec
/// built with `format!` (`{web}`, `web = WEB_MACHINE`).
pub const WEB_MACHINE: &str = r#"[machines.web]
ports = { http = "auto" }

[[machines.web.stages]]
name = "site"
steps = ["mkdir -p site && echo ok > site/index.html"]

[[machines.web.services]]
name = "http"
command = "exec python3 -m http.server --bind 127.0.0.1 --directory site {{ ports.http }}"
ready = { http = "http://127.0.0.1:{{ ports.http }}/", status = 200 }
"#;
