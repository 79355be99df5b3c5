//! Talking to libvirt (through `virsh`) and to the host: is KVM usable, is the daemon reachable,
//! and the guard that destroys a build VM when envbuild dies.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

pub struct Virsh {
    pub uri: String,
}

impl Virsh {
    fn command(&self) -> Command {
        let mut cmd = Command::new("virsh");
        cmd.args(["-q", "-c", &self.uri]);
        cmd
    }

    /// Runs `virsh ARGS`, returning stdout; an error quotes virsh's message.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ctx(|| "running virsh (apt-get install libvirt-clients)".into())?;
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "virsh -c {} {} failed: {}",
                self.uri,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a transient domain from XML (see domain.rs).
    pub fn create(&self, xml_file: &Path) -> Result<()> {
        self.run(&["create", &xml_file.display().to_string()])
            .map(|_| ())
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.run(&["domstate", name])
            .is_ok_and(|s| s.trim() == "running")
    }

    pub fn exists(&self, name: &str) -> bool {
        self.run(&["domstate", name]).is_ok()
    }

    pub fn destroy(&self, name: &str) {
        let _ = self.run(&["destroy", name]);
    }

    /// Waits until the domain is gone (a transient domain vanishes when QEMU exits).
    pub fn wait_gone(&self, name: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.exists(name) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        !self.exists(name)
    }

    /// Checks the daemon answers; the error says how to start it.
    pub fn check_reachable(&self) -> Result<()> {
        self.run(&["version"]).map(|_| ()).map_err(|e| {
            Error::input(format!("libvirt at {} is not reachable: {e}", self.uri), "start the daemon (`libvirtd -d` and `virtlogd -d` as root, or `systemctl start libvirtd`), or pick another URI with --libvirt-uri; `envbuild doctor` checks the host")
        })
    }
}

/// Whether KVM really runs guests here, probed once per process: a 512-byte boot sector that
/// writes to QEMU's debug-exit port is run under TCG, then under KVM, which must make QEMU exit
/// within three times TCG's time plus 0.2 s (and never over 1.5 s). A working KVM is at least as
/// fast as TCG; a /dev/kvm that exists but crawls (broken nested virtualisation: 1.3-1.6 s here
/// with QEMU 7.2, 4-12 s with QEMU 10, against 0.1-0.2 s under TCG; its real guests then hang
/// with no console output) counts as absent.
pub fn kvm_usable() -> (bool, String) {
    static PROBE: OnceLock<(bool, String)> = OnceLock::new();
    PROBE.get_or_init(probe_kvm).clone()
}

fn probe_kvm() -> (bool, String) {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return (false, "/dev/kvm is absent or not accessible".into());
    }
    let Ok(dir) = tempfile::tempdir() else {
        return (false, "no temp dir to probe KVM".into());
    };
    let image = dir.path().join("boot.img");
    // mov al,1; out 0xf4,al; jmp $  + boot signature: QEMU exits with status (1 << 1) | 1 = 3.
    let mut sector = vec![0xB0, 0x01, 0xE6, 0xF4, 0xEB, 0xFE];
    sector.resize(510, 0);
    sector.extend([0x55, 0xAA]);
    if std::fs::write(&image, sector).is_err() {
        return (false, "could not write the KVM probe".into());
    }
    let tcg = match boot_probe(&image, "tcg", Duration::from_secs(10)) {
        Ok(t) => t,
        Err(why) => {
            return (
                false,
                format!("the KVM probe could not run under TCG: {why}"),
            );
        }
    };
    match boot_probe(&image, "kvm", kvm_deadline(tcg)) {
        Ok(t) => (
            true,
            format!(
                "KVM works ({:.2}s probe, TCG {:.2}s)",
                t.as_secs_f64(),
                tcg.as_secs_f64()
            ),
        ),
        Err(why) => (
            false,
            format!(
                "/dev/kvm exists but a 512-byte boot test {why} (TCG: {:.2}s)",
                tcg.as_secs_f64()
            ),
        ),
    }
}

/// How long the probe may take under KVM, given its time under TCG: a working KVM is at least
/// as fast as TCG, so three times TCG plus QEMU's start-up, and never over 1.5 s.
fn kvm_deadline(tcg: Duration) -> Duration {
    (tcg * 3 + Duration::from_millis(200)).min(Duration::from_millis(1500))
}

/// How long QEMU takes to run the probe's boot sector under `accel`, or why it did not within
/// `limit`.
fn boot_probe(image: &Path, accel: &str, limit: Duration) -> std::result::Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            &format!("pc,accel={accel}"),
            "-display",
            "none",
            "-nodefaults",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive",
        ])
        .arg(format!("file={},format=raw,if=ide", image.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|_| "could not start: qemu-system-x86_64 is missing".to_string())?;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return if status.code() == Some(3) {
                Ok(started.elapsed())
            } else {
                Err(format!("failed under {accel} ({status})"))
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "did not finish in {:.2}s under {accel}",
                limit.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A guard process: when envbuild ends (normally, by an error, or killed with SIGKILL) the pipe
/// to the guard closes, and it destroys the domain and removes the files, unless envbuild told it
/// to keep them. In a process group of its own, so Ctrl-C reaches envbuild, not the guard.
pub struct Guard {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Guard {
    pub fn spawn(uri: &str, domain: &str, remove: &[PathBuf]) -> Result<Guard> {
        use std::os::unix::process::CommandExt;
        let mut cmd = crate::process::own_command();
        cmd.args(["libvirt-guard", "--uri", uri, "--domain", domain]);
        for path in remove {
            cmd.arg("--remove").arg(path);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ctx(|| "starting the VM guard".into())?;
        let stdin = child.stdin.take();
        Ok(Guard { child, stdin })
    }

    /// The VM is meant to outlive envbuild (`up`): the guard leaves it alone.
    pub fn keep(mut self) {
        use std::io::Write;
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"keep\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// The hidden `envbuild libvirt-guard`: waits for its stdin to close, then cleans up.
pub fn guard_main(uri: &str, domain: &str, remove: &[PathBuf]) -> i32 {
    // SAFETY: ignoring SIGINT/SIGHUP so a terminal's Ctrl-C does not skip the clean-up.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let mut said = String::new();
    let _ = std::io::stdin().read_to_string(&mut said);
    if said.trim() == "keep" {
        return 0;
    }
    let virsh = Virsh {
        uri: uri.to_string(),
    };
    virsh.destroy(domain);
    for path in remove {
        let _ = std::fs::remove_file(path);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kvm_slower_than_three_times_tcg_is_not_kvm() {
        let ms = Duration::from_millis;
        // This host: TCG 0.06-0.18 s, its broken KVM 1.3-1.6 s: refused.
        assert!(kvm_deadline(ms(100)) < ms(1300));
        assert!(kvm_deadline(ms(180)) < ms(1300));
        // A working KVM (about TCG's time) passes, also on a loaded host.
        assert!(kvm_deadline(ms(100)) > ms(150));
        assert!(kvm_deadline(ms(400)) > ms(600));
        // However slow TCG is, KVM never gets more than 1.5 s.
        assert_eq!(kvm_deadline(Duration::from_secs(5)), ms(1500));
    }
}
