//! Talking to the guest and to libvirt about it: snapshots, commands over SSH, the clock.

use std::path::Path;
use std::process::Stdio;

use super::*;

pub(super) fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

/// libvirt's creation time of a snapshot, None when the domain has none of that name.
pub(super) fn snapshot_created(virsh: &Virsh, domain: &str, name: &str) -> Option<i64> {
    let xml = virsh.run(&["snapshot-dumpxml", domain, name]).ok()?;
    let start = xml.find("<creationTime>")? + "<creationTime>".len();
    let end = xml[start..].find("</creationTime>")? + start;
    xml[start..end].trim().parse().ok()
}

pub(super) fn guest_output(trust: &Trust, port: u16, command: &str) -> Result<String> {
    let out = trust
        .ssh(port, command)
        .stdin(Stdio::null())
        .output()
        .ctx(|| "running ssh".into())?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "`{command}` in the guest failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A restored snapshot rewinds the guest clock to when it was saved: set it from the host's.
/// The guest's timers catch up for a while after a revert under TCG, so it is set again until
/// it stays within a second of the host's.
pub(super) fn sync_clock(trust: &Trust, port: u16) -> Result<()> {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let mut skew = f64::MAX;
    for _ in 0..5 {
        guest_output(trust, port, &format!("date -u -s @{:.3} >/dev/null", now()))?;
        std::thread::sleep(Duration::from_secs(2));
        let guest: f64 = guest_output(trust, port, "date +%s.%N")?
            .trim()
            .parse()
            .unwrap_or(0.0);
        skew = (guest - now()).abs();
        if skew < 1.0 {
            return Ok(());
        }
    }
    tracing::warn!(
        skew,
        "the guest clock does not stay in step with the host's"
    );
    Ok(())
}

pub(super) fn wait_ssh(trust: &Trust, port: u16, console: &Path) -> Result<()> {
    let deadline = Instant::now() + SSH_TIMEOUT;
    loop {
        if process::aborting() {
            return Err(Error::Aborted("interrupted while waiting for SSH".into()));
        }
        let ok = trust
            .ssh(port, "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "the machine did not answer SSH within {}s.\n  last console lines:\n{}",
                SSH_TIMEOUT.as_secs(),
                process::tail(console, 20)
            )));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The last lines of Vagrant's log without its progress bars.
pub(super) fn vagrant_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t = l.trim();
            !t.is_empty() && !t.contains("Progress:") && !t.starts_with("from ")
        })
        .collect();
    lines[lines.len().saturating_sub(15)..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}
