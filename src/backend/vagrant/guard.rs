//! The machine's removal (teardown.sh) and the guard that runs it when envbuild dies.

use std::process::{Command, Stdio};

use super::*;

pub(super) const TEARDOWN: &str = include_str!("teardown.sh");

/// The `teardown.sh` arguments of a machine.
pub(super) fn teardown_args(
    state: &MachineState,
    uri: &str,
    env: &str,
    machine: &str,
) -> Vec<String> {
    vec![
        uri.to_string(),
        domain_name(env, machine),
        pool_name(env, machine),
        state.root().join("pool").display().to_string(),
        project_dir(state).display().to_string(),
        state.root().join("seed.tar").display().to_string(),
    ]
}

pub(super) fn pool_name(env: &str, machine: &str) -> String {
    format!("envbuild-{env}-{machine}")
}

/// A guard process per machine: when envbuild ends (SIGKILL included) its pipe closes and the
/// guard acts on the last word it was told: `keep` (leave the machine running: `up`), `stop`
/// (stop the domain, keep it and its snapshots: a build ended on a saved stage) or nothing
/// (remove the machine: a stage was under way). In a process group of its own.
pub(super) struct Guard {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Guard {
    pub(super) fn spawn(args: &[String]) -> Result<Guard> {
        use std::os::unix::process::CommandExt;
        let script = format!(
            "trap '' INT HUP TERM\nmode=teardown\nwhile read -r word; do mode=$word; done\ncase $mode in\n  keep) exit 0 ;;\n  stop) virsh -q -c \"$1\" destroy \"$2\" >/dev/null 2>&1; exit 0 ;;\nesac\n{TEARDOWN}"
        );
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("envbuild-vagrant-guard")
            .args(args)
            .env("PATH", process::SAFE_PATH)
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ctx(|| "starting the vagrant guard".into())?;
        let stdin = child.stdin.take();
        Ok(Guard { child, stdin })
    }

    pub(super) fn say(&mut self, word: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{word}");
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// Removes the machine now (teardown.sh with `args`).
pub(super) fn run_teardown(args: &[String]) {
    let _ = Command::new("/bin/sh")
        .arg("-c")
        .arg(TEARDOWN)
        .arg("envbuild-vagrant-teardown")
        .args(args)
        .env("PATH", process::SAFE_PATH)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
