//! Booting a VM: the seed disk, the domain under a guard, waiting for SSH with the pinned host
//! key, copying a stage's inputs in, and a clean power-off.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::error::{Error, IoContext, Result};
use crate::process;
use crate::spec::model::Machine;
use crate::state::MachineState;
use domain::{Boot, DomainSpec, LinkNic};
use image::BaseImage;
use ssh::Trust;
use virsh::Virsh;

pub(super) const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(180);

/// Says once per process that VMs run under TCG, and why.
pub(super) fn accelerator() -> bool {
    static SAID: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let (kvm, why) = virsh::kvm_usable();
    if !kvm {
        SAID.get_or_init(|| {
            eprintln!("note: no usable KVM ({why}): VMs run under TCG emulation, which is slower")
        });
    }
    kvm
}

pub(super) struct BootPlan<'a> {
    pub(super) uri: &'a str,
    pub(super) domain: &'a str,
    pub(super) env: &'a str,
    pub(super) machine: &'a Machine,
    pub(super) state: &'a MachineState,
    pub(super) disk: &'a Path,
    pub(super) base: &'a BaseImage,
    /// "build" or "up": names the seed, XML and console files.
    pub(super) kind: &'a str,
    pub(super) forwards: &'a BTreeMap<String, u16>,
    pub(super) links: &'a [(LinkNic, String)],
    pub(super) guard_removes: Vec<PathBuf>,
}

pub(super) struct Booted {
    pub(super) ssh_port: u16,
    pub(super) forwarded: BTreeMap<String, u16>,
    pub(super) trust: Trust,
    pub(super) guard: Guard,
}

/// Writes the seed and the domain, starts it under a guard, and waits until SSH answers with the
/// pinned host key.
pub(super) fn boot(plan: &BootPlan) -> Result<Booted> {
    // Probed before the clock starts: boot-times.log holds the guest's boot-to-SSH only.
    let kvm = accelerator();
    let started = Instant::now();
    let state = plan.state;
    let root = state.root();
    std::fs::create_dir_all(state.logs()).ctx(|| format!("creating {}", state.logs().display()))?;
    let trust = Trust::ensure(&env_dir(state), &state.dir, plan.env, &plan.machine.name)?;
    let (seed, boot_from) = match (&plan.base.kernel, &plan.base.initrd) {
        (Some(kernel), Some(initrd)) => {
            let seed = root.join(format!("seed-{}.tar", plan.kind));
            write_seed(&seed, &trust, &plan.machine.name, plan.links, &[])?;
            let (kernel, initrd) = (kernel.clone(), initrd.clone());
            (seed, Boot::Kernel { kernel, initrd })
        }
        _ => {
            let seed = root.join(format!("seed-{}.iso", plan.kind));
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let instance_id = format!("{}-{nanos}", plan.domain);
            cloud_init::write_seed(&seed, &trust, &plan.machine.name, &instance_id, plan.links)?;
            (seed, Boot::Disk)
        }
    };
    // The seed holds the private host key: it goes once the guest has read it (QEMU keeps its
    // open file for a reboot), or with the guard if the boot fails or envbuild is killed.
    let _seed_gone = crate::store::RemoveOnDrop(seed.clone());
    let virsh = Virsh {
        uri: plan.uri.to_string(),
    };
    if virsh.exists(plan.domain) {
        return Err(Error::Input(format!(
            "a domain named {} already exists on {}; stop it (`envbuild down {}` or `virsh -c {} destroy {}`)",
            plan.domain, plan.uri, plan.env, plan.uri, plan.domain
        )));
    }
    let ports = free_ports(1 + plan.forwards.len())?;
    let ssh_port = ports[0];
    let forwarded: BTreeMap<String, u16> = plan
        .forwards
        .keys()
        .cloned()
        .zip(ports[1..].iter().copied())
        .collect();
    let mut forwards = vec![(ssh_port, 22)];
    forwards.extend(
        plan.forwards
            .iter()
            .map(|(name, guest)| (forwarded[name], *guest)),
    );
    let console = state.logs().join(format!("console-{}.log", plan.kind));
    let _ = std::fs::remove_file(&console);
    let spec = DomainSpec {
        name: plan.domain.to_string(),
        kvm,
        vcpus: plan.machine.resources.cpus,
        memory_mib: plan.machine.resources.memory_mib,
        boot: boot_from,
        disk: plan.disk.to_path_buf(),
        seed: seed.clone(),
        console_log: console.clone(),
        forwards,
        links: plan.links.iter().map(|(nic, _)| nic.clone()).collect(),
        // SAFETY: getuid/getgid have no preconditions.
        run_as: (!is_session(plan.uri)).then(|| unsafe { (libc::getuid(), libc::getgid()) }),
    };
    let xml = root.join(format!("{}.xml", plan.kind));
    std::fs::write(&xml, spec.xml()).ctx(|| format!("writing {}", xml.display()))?;
    let mut removes = plan.guard_removes.clone();
    removes.push(seed.clone());
    let guard = Guard::spawn(plan.uri, plan.domain, &removes)?;
    virsh.create(&xml)?;
    let deadline = started + BOOT_TIMEOUT;
    loop {
        // SIGINT/SIGTERM (caught by `up` and `build`): the guard destroys the VM as we return.
        if process::aborting() {
            return Err(Error::Aborted(format!(
                "interrupted while VM {} booted; it is destroyed",
                plan.domain
            )));
        }
        if !virsh.is_running(plan.domain) {
            return Err(Error::Failed(format!(
                "VM {} stopped while booting.\n  last console lines:\n{}\n  console: {}",
                plan.domain,
                process::tail(&console, 20),
                console.display()
            )));
        }
        let probe = trust
            .ssh(ssh_port, "true")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if probe.is_ok_and(|s| s.success()) {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "VM {} did not answer SSH within {}s.\n  last console lines:\n{}\n  console: {}",
                plan.domain,
                BOOT_TIMEOUT.as_secs(),
                process::tail(&console, 20),
                console.display()
            )));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(domain = plan.domain, seconds, "booted to SSH");
    let times = state.logs().join("boot-times.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&times)
    {
        let _ = writeln!(
            f,
            "{} {} {seconds:.1}",
            plan.kind,
            crate::clock::now_rfc3339()
        );
    }
    Ok(Booted {
        ssh_port,
        forwarded,
        trust,
        guard,
    })
}

/// Clean shutdown: `poweroff` in the guest, then wait for QEMU to exit. An error if it does not
/// (the caller destroys the domain; a build commits nothing).
pub(super) fn power_off(virsh: &Virsh, domain: &str, trust: &Trust, port: u16) -> Result<()> {
    let _ = trust
        .ssh(port, "systemctl poweroff")
        .stdin(std::process::Stdio::null())
        .output();
    if virsh.wait_gone(domain, SHUTDOWN_TIMEOUT) {
        return Ok(());
    }
    virsh.destroy(domain);
    Err(Error::Failed(format!(
        "VM {domain} did not power off within {}s; it was destroyed and nothing was committed",
        SHUTDOWN_TIMEOUT.as_secs()
    )))
}

/// The seed disk: a tar archive the guest unpacks into /run/envbuild at boot (configure-base.sh).
pub(crate) fn write_seed(
    path: &Path,
    trust: &Trust,
    hostname: &str,
    links: &[(LinkNic, String)],
    dhcp: &[&str],
) -> Result<()> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |name: &str, mode: u32, data: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        archive
            .append_data(&mut header, name, data)
            .ctx(|| format!("writing {name} into the seed"))
    };
    add("authorized_keys", 0o600, trust.authorized_key()?.as_bytes())?;
    let host_key =
        std::fs::read(&trust.host_key).ctx(|| format!("reading {}", trust.host_key.display()))?;
    add("ssh_host_ed25519_key", 0o600, &host_key)?;
    add("hostname", 0o644, format!("{hostname}\n").as_bytes())?;
    for (i, (nic, address)) in links.iter().enumerate() {
        let unit = format!(
            "[Match]\nMACAddress={}\n\n[Network]\nAddress={address}\n",
            nic.mac
        );
        add(
            &format!("network/20-link{i}.network"),
            0o644,
            unit.as_bytes(),
        )?;
    }
    for (i, mac) in dhcp.iter().enumerate() {
        let unit = format!("[Match]\nMACAddress={mac}\n\n[Network]\nDHCP=ipv4\n");
        add(
            &format!("network/30-dhcp{i}.network"),
            0o644,
            unit.as_bytes(),
        )?;
    }
    let mut bytes = archive
        .into_inner()
        .ctx(|| "finishing the seed archive".into())?;
    // A disk is a whole number of sectors.
    bytes.resize(bytes.len().div_ceil(65536) * 65536, 0);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("writing {}", path.display()))?;
    file.write_all(&bytes)
        .ctx(|| format!("writing {}", path.display()))
}

use std::os::unix::fs::OpenOptionsExt;

/// Copies a stage's inputs into the guest's $ENVBUILD_INPUTS (tar over the pinned SSH).
pub(crate) fn copy_inputs(trust: &Trust, port: u16, inputs: &Path) -> Result<()> {
    let remote =
        format!("rm -rf {GUEST_INPUTS} && mkdir -p {GUEST_INPUTS} && tar -xf - -C {GUEST_INPUTS}");
    let ssh: Vec<String> = trust
        .ssh_argv(port, Some(&remote))
        .iter()
        .map(|a| quote(a))
        .collect();
    let command = format!(
        "tar -C {} -cf - . | {}",
        quote(&inputs.display().to_string()),
        ssh.join(" ")
    );
    let out = std::process::Command::new("/bin/sh")
        .args(["-ec", &command])
        .stdin(std::process::Stdio::null())
        .output()
        .ctx(|| "copying inputs into the VM".into())?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "copying the stage's inputs into the VM failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Free TCP ports on 127.0.0.1, all held until every one is chosen.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| {
            std::net::TcpListener::bind(("127.0.0.1", 0))
                .ctx(|| "finding a free loopback port".into())
        })
        .collect::<Result<_>>()?;
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .ctx(|| "reading a port".into())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_seed_is_a_sector_aligned_tar_with_keys_and_link_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let env_dir = dir.path().join("envs/e");
        let trust = Trust::ensure(&env_dir, &env_dir.join("m"), "e", "m").unwrap();
        let seed = dir.path().join("seed.tar");
        let nic = LinkNic {
            mac: "52:54:01:00:00:01".into(),
            local_port: 1,
            peer_port: 2,
        };
        write_seed(
            &seed,
            &trust,
            "m",
            &[(nic, "10.0.0.2/24".into())],
            &["52:54:00:0e:b0:02"],
        )
        .unwrap();
        let bytes = std::fs::read(&seed).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let mode = std::fs::metadata(&seed).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut names = Vec::new();
        let mut network = String::new();
        for file in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let mut file = file.unwrap();
            let name = file.path().unwrap().display().to_string();
            if name.starts_with("network/") {
                std::io::Read::read_to_string(&mut file, &mut network).unwrap();
            }
            names.push(name);
        }
        assert_eq!(
            names,
            vec![
                "authorized_keys",
                "ssh_host_ed25519_key",
                "hostname",
                "network/20-link0.network",
                "network/30-dhcp0.network"
            ]
        );
        assert!(network.contains("MACAddress=52:54:01:00:00:01"));
        assert!(network.contains("MACAddress=52:54:00:0e:b0:02\n\n[Network]\nDHCP=ipv4"));
        assert!(network.contains("Address=10.0.0.2/24"));
    }
}
