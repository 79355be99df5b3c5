//! Memory snapshots (`snapshot = "running"`): the committed stage keeps its VM's memory and
//! device state beside its disk overlay, and `up` resumes the machine instead of booting it.
//!
//! At commit the build VM is saved with `virsh save`: QEMU pauses the guest, flushes the overlay
//! and writes RAM and device state to `memory.save`, and the domain ends. The overlay is then
//! exactly the disk that state expects. `memory.json` records what the state may be resumed on:
//! the sha256 of that overlay, the hypervisor's version, the machine type and the SSH keys the
//! guest trusts. Both files are in the entry's tree, content-addressed like the disk.
//!
//! `up` resumes with `virsh restore --xml`, the saved domain XML rewritten for this run: the
//! fresh top overlay, an empty seed disk, the console, new port forwards on 127.0.0.1. libvirt
//! refuses a restore under another domain name or UUID, so the build VM of such a stage already
//! has the name the machine has when it is up. A state that does not match (its file changed,
//! another disk, QEMU version, machine type or SSH keys), or a resume that fails, is refused with
//! a warning and the machine boots from its disk: never a resume onto a changed disk.
//!
//! ```text
//! ENTRY/artifact/memory.save   the `virsh save` image (0444)
//! ENTRY/artifact/memory.json   MemoryState
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::boot::{Booted, free_ports};
use super::domain::{escape, mgmt_netdev};
use super::ssh::Trust;
use super::virsh::{Guard, Virsh};
use crate::error::{Error, IoContext, Result};
use crate::key::digest::{sha256_bytes, sha256_file};
use crate::process;
use crate::state::MachineState;
use crate::store::{Entry, TreeEntry};

pub(super) const STATE_FILE: &str = "memory.save";
pub(super) const META_FILE: &str = "memory.json";

/// How long a resumed guest may take to answer SSH before it is given up for a boot.
const RESUME_TIMEOUT: Duration = Duration::from_secs(300);

/// `artifact/memory.json`: what a memory state may be resumed on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct MemoryState {
    /// sha256 of the entry's disk.qcow2: the overlay the guest's memory was saved with.
    pub(super) disk_sha256: String,
    /// The hypervisor as libvirt names it ("QEMU 7.2.22").
    pub(super) hypervisor: String,
    /// The machine type the guest ran on ("pc-i440fx-7.2").
    pub(super) machine_type: String,
    /// The domain type: "qemu" (TCG) or "kvm".
    pub(super) virt_type: String,
    /// sha256 of the SSH host key and client key the guest holds (they are not written again).
    pub(super) keys_sha256: String,
}

/// What `up` can do with the newest stage's memory state.
pub(super) enum Resume {
    /// The stage keeps no memory.
    Nothing,
    /// The state may not be resumed, and why.
    Refused(String),
    /// The state checked out: resume from this file.
    Ready(PathBuf),
}

/// Saves the running build VM into `file` (the domain ends) and tells what it runs on; the
/// caller records the digest of the overlay once it is committed.
pub(super) fn save(virsh: &Virsh, domain: &str, trust: &Trust, file: &Path) -> Result<MemoryState> {
    let path = file.display().to_string();
    virsh.run(&["save", domain, &path])?;
    let xml = virsh.run(&["save-image-dumpxml", &path])?;
    let saved = |what: &str, found: Option<&str>| {
        found.map(str::to_string).ok_or_else(|| {
            Error::Failed(format!("the saved domain XML of {domain} names no {what}"))
        })
    };
    Ok(MemoryState {
        disk_sha256: String::new(),
        hypervisor: hypervisor(virsh)?,
        machine_type: saved("machine type", attribute(&xml, "<type ", "machine"))?,
        virt_type: saved("domain type", attribute(&xml, "<domain ", "type"))?,
        keys_sha256: keys_sha256(trust)?,
    })
}

/// Checks an entry's memory state against its tree, its disk and this host, reading the state
/// file whole (it is verified like every store file before QEMU reads it).
pub(super) fn check(entry: &Entry, virsh: &Virsh, trust: &Trust) -> Result<Resume> {
    let artifact = entry.artifact();
    if !artifact.join(META_FILE).exists() {
        return Ok(Resume::Nothing);
    }
    let tree = entry.tree()?;
    let recorded = |name: &str| {
        tree.iter().find_map(|e| match e {
            TreeEntry::File {
                path, size, sha256, ..
            } if path == name => Some((*size, sha256.clone())),
            _ => None,
        })
    };
    for name in [META_FILE, STATE_FILE] {
        let path = artifact.join(name);
        let found = std::fs::metadata(&path)
            .ok()
            .map(|m| m.len())
            .zip(sha256_file(&path).ok());
        if found.is_none() || found != recorded(name) {
            return Ok(Resume::Refused(format!(
                "its {name} is not the file the stage committed (changed or damaged; `envbuild cache verify` names it)"
            )));
        }
    }
    let Ok(state) = serde_json::from_slice::<MemoryState>(
        &std::fs::read(artifact.join(META_FILE)).unwrap_or_default(),
    ) else {
        return Ok(Resume::Refused(format!("its {META_FILE} does not parse")));
    };
    if Some(&state.disk_sha256) != recorded("disk.qcow2").map(|(_, sha)| sha).as_ref() {
        return Ok(Resume::Refused(
            "it was saved with another disk than the stage's overlay".into(),
        ));
    }
    let now = hypervisor(virsh)?;
    if now != state.hypervisor {
        return Ok(Resume::Refused(format!(
            "it was saved under {} and libvirt runs {now}",
            state.hypervisor
        )));
    }
    let machine = current_machine_type(virsh, &state.virt_type)?;
    if machine != state.machine_type {
        return Ok(Resume::Refused(format!(
            "it was saved on machine type {} and QEMU's `pc` is {machine} now",
            state.machine_type
        )));
    }
    if keys_sha256(trust)? != state.keys_sha256 {
        return Ok(Resume::Refused(
            "the guest in it holds other SSH keys than this machine's".into(),
        ));
    }
    Ok(Resume::Ready(artifact.join(STATE_FILE)))
}

pub(super) struct ResumePlan<'a> {
    pub(super) uri: &'a str,
    pub(super) domain: &'a str,
    pub(super) state: &'a MachineState,
    pub(super) file: &'a Path,
    /// The top overlay the guest writes (a fresh overlay of the entry's disk).
    pub(super) disk: &'a Path,
    pub(super) forwards: &'a BTreeMap<String, u16>,
    pub(super) trust: Trust,
}

/// Restores the saved domain on the plan's overlay under a guard, waits for SSH with the pinned
/// host key and sets the guest's clock from the host's.
pub(super) fn resume(plan: ResumePlan) -> Result<Booted> {
    let started = Instant::now();
    let state = plan.state;
    let root = state.root();
    let virsh = Virsh {
        uri: plan.uri.to_string(),
    };
    let file = plan.file.display().to_string();
    let saved = virsh.run(&["save-image-dumpxml", &file])?;
    // The guest read its seed at its first boot and never again; QEMU only needs a disk there.
    let seed = root.join("seed-up.tar");
    std::fs::File::create(&seed)
        .and_then(|f| f.set_len(1 << 20))
        .ctx(|| format!("writing {}", seed.display()))?;
    let _seed_gone = crate::store::RemoveOnDrop(seed.clone());
    let console = state.logs().join("console-up.log");
    let _ = std::fs::remove_file(&console);
    let ports = free_ports(1 + plan.forwards.len())?;
    let forwarded: BTreeMap<String, u16> = plan
        .forwards
        .keys()
        .cloned()
        .zip(ports[1..].iter().copied())
        .collect();
    let mut forwards = vec![(ports[0], 22)];
    forwards.extend(
        plan.forwards
            .iter()
            .map(|(n, guest)| (forwarded[n], *guest)),
    );
    let xml = rewrite(&saved, plan.disk, &seed, &console, &mgmt_netdev(&forwards))?;
    let xml_file = root.join("resume.xml");
    std::fs::write(&xml_file, xml).ctx(|| format!("writing {}", xml_file.display()))?;
    let guard = Guard::spawn(
        plan.uri,
        plan.domain,
        &[plan.disk.to_path_buf(), seed.clone()],
    )?;
    let restoring = Instant::now();
    virsh.run(&[
        "restore",
        &file,
        "--xml",
        &xml_file.display().to_string(),
        "--running",
    ])?;
    let restored = restoring.elapsed().as_secs_f64();
    let deadline = Instant::now() + RESUME_TIMEOUT;
    let trust = plan.trust;
    while !trust
        .ssh(ports[0], "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        if process::aborting() {
            return Err(Error::Aborted(format!(
                "interrupted while VM {} resumed; it is destroyed",
                plan.domain
            )));
        }
        if Instant::now() > deadline || !virsh.is_running(plan.domain) {
            return Err(Error::Failed(format!(
                "the resumed VM {} did not answer SSH",
                plan.domain
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let offset = set_clock(&trust, ports[0])?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        domain = plan.domain,
        seconds,
        restored,
        offset,
        "resumed to SSH"
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.logs().join("boot-times.log"))
    {
        // After the seconds: `virsh restore`'s share of them, the guest clock's offset left.
        let _ = writeln!(
            f,
            "resume {} {seconds:.1} restore={restored:.1} clock_offset={offset:.3}",
            crate::clock::now_rfc3339()
        );
    }
    Ok(Booted {
        ssh_port: ports[0],
        forwarded,
        trust,
        guard,
    })
}

/// The saved domain XML with this run's top overlay (vda), seed (vdb), console and management
/// netdev; an error if one of them is not where envbuild's domains have it (domain.rs).
fn rewrite(saved: &str, disk: &Path, seed: &Path, console: &Path, netdev: &str) -> Result<String> {
    let missing = |what: &str| Error::Failed(format!("the saved domain XML has no {what}"));
    let mut xml = saved.to_string();
    for (target, path) in [("vda", disk), ("vdb", seed)] {
        let block = xml
            .split("<disk ")
            .skip(1)
            .map(|b| &b[..b.find("</disk>").unwrap_or(b.len())])
            .find(|b| b.contains(&format!("<target dev='{target}'")))
            .ok_or_else(|| missing(target))?;
        let old = attribute(block, "<source ", "file").ok_or_else(|| missing(target))?;
        let rewritten = block.replace(
            &format!("file='{old}'"),
            &format!("file='{}'", escape(&path.display().to_string())),
        );
        xml = xml.replacen(block, &rewritten, 1);
    }
    let serial = xml
        .split("<serial ")
        .nth(1)
        .ok_or_else(|| missing("serial console"))?;
    let old = attribute(serial, "<source ", "path").ok_or_else(|| missing("console file"))?;
    // The serial port and the console that mirrors it name the same file.
    xml = xml.replace(
        &format!("path='{old}'"),
        &format!("path='{}'", escape(&console.display().to_string())),
    );
    let start = xml
        .find("<qemu:arg value='user,id=mgmt")
        .ok_or_else(|| missing("management netdev"))?
        + "<qemu:arg value='".len();
    let end = start
        + xml[start..]
            .find('\'')
            .ok_or_else(|| missing("netdev end"))?;
    xml.replace_range(start..end, &escape(netdev));
    Ok(xml)
}

/// The value of `name='...'` in the first tag of `xml` starting with `tag` (libvirt quotes
/// attributes with `'`).
fn attribute<'a>(xml: &'a str, tag: &str, name: &str) -> Option<&'a str> {
    let element = &xml[xml.find(tag)?..];
    let element = &element[..element.find('>')?];
    let value = &element[element.find(&format!(" {name}='"))? + name.len() + 3..];
    value.find('\'').map(|end| &value[..end])
}

/// "QEMU 7.2.22": the hypervisor behind the URI, as `virsh version` names it.
fn hypervisor(virsh: &Virsh) -> Result<String> {
    let out = virsh.run(&["version"])?;
    out.lines()
        .find_map(|l| l.strip_prefix("Running hypervisor:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| {
            Error::Failed(format!(
                "`virsh -c {} version` names no hypervisor",
                virsh.uri
            ))
        })
}

/// What the `pc` machine type of domain.rs resolves to on this hypervisor now.
fn current_machine_type(virsh: &Virsh, virt_type: &str) -> Result<String> {
    let caps = virsh.run(&[
        "domcapabilities",
        "--virttype",
        virt_type,
        "--arch",
        "x86_64",
        "--machine",
        "pc",
    ])?;
    let start = caps.find("<machine>").map(|i| i + "<machine>".len());
    start
        .and_then(|s| {
            caps[s..]
                .find("</machine>")
                .map(|e| caps[s..s + e].to_string())
        })
        .ok_or_else(|| Error::Failed("libvirt's domain capabilities name no machine type".into()))
}

/// The SSH keys a guest holds from its first boot: the host key it answers with and the client
/// key it lets in.
fn keys_sha256(trust: &Trust) -> Result<String> {
    let public = trust.host_key.with_extension("pub");
    let host = std::fs::read_to_string(&public).ctx(|| format!("reading {}", public.display()))?;
    let key = |line: &str| {
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    Ok(sha256_bytes(
        format!("{}\n{}\n", key(&host), key(&trust.authorized_key()?)).as_bytes(),
    ))
}

/// Sets the guest's clock from the host's (a resumed guest's clock stands where it was saved).
/// Once the SSH session is set up (seconds under TCG, which must not count), one round trip
/// through it is timed, and the guest is sent the host's time plus half of it, which `date -s`
/// sets. Returns the guest's clock minus the host's afterwards, as well as a round trip tells.
fn set_clock(trust: &Trust, port: u16) -> Result<f64> {
    let mut child = trust
        .ssh(
            port,
            "echo ready && read a && echo pong && read t && date -u -s \"@$t\" >/dev/null && date +%s.%N",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ctx(|| "running ssh".into())?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut exchange = |send: Option<String>| -> std::io::Result<String> {
        if let Some(text) = send {
            writeln!(stdin, "{text}")?;
            stdin.flush()?;
        }
        let mut line = String::new();
        out.read_line(&mut line)?;
        Ok(line.trim().to_string())
    };
    let mut offset = || -> std::io::Result<Option<f64>> {
        if exchange(None)? != "ready" {
            return Ok(None);
        }
        let sent = unix_now();
        if exchange(Some("ping".into()))? != "pong" {
            return Ok(None);
        }
        let half = (unix_now() - sent) / 2.0;
        let guest = exchange(Some(format!("{:.6}", unix_now() + half)))?;
        Ok(guest.parse::<f64>().ok().map(|g| g - (unix_now() - half)))
    };
    let offset = offset();
    let _ = child.kill();
    let status = child.wait().ctx(|| "running ssh".into())?;
    match offset {
        Ok(Some(offset)) => Ok(offset),
        _ => Err(Error::Failed(format!(
            "setting the resumed guest's clock over SSH failed ({status})"
        ))),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "<domain type='qemu' id='3'>
  <name>envbuild-demo-box</name>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/s/root/build.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/s/root/seed-build.tar'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <serial type='file'>
      <source path='/s/logs/console-build.log'/>
    </serial>
    <console type='file'>
      <source path='/s/logs/console-build.log'/>
    </console>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=mgmt,net=10.0.2.0/24,restrict=off,hostfwd=tcp:127.0.0.1:40001-:22'/>
  </qemu:commandline>
</domain>
";

    #[test]
    fn the_saved_xml_gets_this_runs_disk_seed_console_and_forwards_and_nothing_else() {
        let xml = rewrite(
            SAVED,
            Path::new("/s/root/live.qcow2"),
            Path::new("/s/root/seed-up.tar"),
            Path::new("/s/logs/console-up.log"),
            &mgmt_netdev(&[(41000, 22), (41001, 8080)]),
        )
        .unwrap();
        assert!(xml.contains("<source file='/s/root/live.qcow2'/>\n      <target dev='vda'"));
        assert!(xml.contains("<source file='/s/root/seed-up.tar'/>\n      <target dev='vdb'"));
        assert_eq!(xml.matches("path='/s/logs/console-up.log'").count(), 2);
        assert!(!xml.contains("-build"), "{xml}");
        assert!(xml.contains(
            "value='user,id=mgmt,net=10.0.2.0/24,restrict=off,hostfwd=tcp:127.0.0.1:41000-:22,hostfwd=tcp:127.0.0.1:41001-:8080'/>"
        ));
        // The name and the machine type are the saved ones: libvirt refuses others.
        assert!(xml.contains("<name>envbuild-demo-box</name>"));
        assert_eq!(attribute(&xml, "<type ", "machine"), Some("pc-i440fx-7.2"));
        assert_eq!(attribute(&xml, "<domain ", "type"), Some("qemu"));
    }

    #[test]
    fn a_saved_xml_without_envbuilds_devices_is_not_rewritten() {
        let no_seed = SAVED.replace("dev='vdb'", "dev='vdc'");
        let err = rewrite(
            &no_seed,
            Path::new("/d"),
            Path::new("/s"),
            Path::new("/c"),
            "user,id=mgmt",
        )
        .unwrap_err();
        assert!(err.to_string().contains("vdb"), "{err}");
        let no_netdev = SAVED.replace("user,id=mgmt", "socket,id=x");
        assert!(
            rewrite(
                &no_netdev,
                Path::new("/d"),
                Path::new("/s"),
                Path::new("/c"),
                "n"
            )
            .is_err()
        );
    }
}
