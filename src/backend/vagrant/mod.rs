//! The vagrant backend: a machine is a Vagrant machine of the libvirt provider (vagrant-libvirt),
//! one libvirt domain that lives across stages, each finished stage saved as an internal
//! snapshot (disk and RAM) named by its stage key and exported into the store as a standalone
//! qcow2 (docs/backends.md, "vagrant").
//!
//! - **Boot**: envbuild writes the Vagrantfile (vagrantfile.rs) and runs `vagrant up` once per
//!   machine: on the box (boxes.rs) for a first stage, or on an overlay of a stage's exported
//!   disk when the domain is gone. Steps then run over plain SSH with the pinned host key (a
//!   `vagrant ssh -c` costs 6-12 s of Ruby).
//! - **Commit**: the stage key is written into the guest (`/var/lib/envbuild/stage-key`), then
//!   `virsh snapshot-create-as DOMAIN KEY` (the snapshot Vagrant lists), then `qemu-img convert
//!   -U -l snapshot.name=KEY` of the domain's disk into the entry (`disk.qcow2`) with
//!   `vagrant.json` (key, box digest, domain, snapshot creation time).
//! - **Replay** reverts to the snapshot when the domain still has it and its identity matches
//!   (name, libvirt's creation time as recorded when it was saved, the box digest, then the key
//!   file read in the guest), and sets the guest clock from the host's; otherwise the snapshot is
//!   a miss and the machine boots the entry's exported disk (checked against its digest).
//! - **Down**, a failed stage and an abort remove the machine: `vagrant destroy -f`, the volumes of
//!   its pool, the pool (teardown.sh). A guard process does the same when envbuild dies.
//!
//! Files of a machine (STATE/envs/<env>/<machine>/):
//! ```text
//! vagrant/Vagrantfile  vagrant/.vagrant/   the Vagrant project
//! root/machine.json    the domain, its pool, ports, box digest, the snapshots it holds
//! root/pool/           the machine's storage pool (box volume, domain disk)
//! root/seed.tar        the seed disk: SSH keys, read by the guest at every boot (0600)
//! root/running.json    written by `up`
//! logs/console.log     the serial console; logs/vagrant.log: what Vagrant printed
//! ```

mod boxes;
mod guard;
mod guest;
mod host;
mod vagrantfile;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::libvirt::image;
use super::libvirt::ssh::{Trust, quote};
use super::libvirt::virsh::Virsh;
use super::libvirt::{self as lv};
use super::{
    Backend, Check, MachineContext, Runtime, ServiceControl, SshTarget, StartOrder, StepContext,
};
use crate::error::{Error, IoContext, Result};
use crate::key::digest::sha256_file;
use crate::process::{self, StepEnd};
use crate::settings::{Settings, VagrantNetwork};
use crate::spec::model::Machine;
use crate::state::{MachineState, RunningServices};
use crate::store::{Entry, Pending, TreeEntry};
use guard::{Guard, pool_name, teardown_args};
use guest::{guest_output, short, snapshot_created, sync_clock, vagrant_tail, wait_ssh};
use host::hand_to_qemu;
use vagrantfile::{Disk, Plan, domain_name};

/// Where a stage's inputs are copied in the guest ($ENVBUILD_INPUTS).
const GUEST_INPUTS: &str = "/var/lib/envbuild/inputs";
/// The stage key of the snapshot the guest holds, written before each snapshot.
const GUEST_KEY: &str = "/var/lib/envbuild/stage-key";
/// The layout of vagrant entries; part of every vagrant stage key.
const ENTRY_LAYOUT: &str = "vagrant-snapshot-1";
/// Vagrant waits as long (`config.vm.boot_timeout`): a TCG guest on a loaded host is slow.
const SSH_TIMEOUT: Duration = Duration::from_secs(1800);

pub struct VagrantBackend {
    /// `--libvirt-uri`: overrides every machine's `uri`.
    uri: Option<String>,
    images: PathBuf,
    /// `--vagrant-network`: the set-up of every machine this run boots.
    network: VagrantNetwork,
    /// Guards and the inputs copied in, by machine state folder, for machines this run drives.
    live: Mutex<BTreeMap<PathBuf, Live>>,
}

#[derive(Default)]
struct Live {
    guard: Option<Guard>,
    /// The stage inputs folder last copied into the guest.
    inputs: Option<PathBuf>,
}

/// The machine as libvirt holds it (root/machine.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    uri: String,
    /// The network set-up the domain was defined with: another one is a miss (a new boot).
    #[serde(default)]
    network: VagrantNetwork,
    domain: String,
    pool: String,
    /// The domain's disk, in the pool.
    disk: PathBuf,
    /// Name -> host port on 127.0.0.1; "ssh" is always there.
    ports: BTreeMap<String, u16>,
    box_sha256: String,
    /// Snapshot (= stage key) -> libvirt's creation time, as read when envbuild saved it.
    snapshots: BTreeMap<String, i64>,
}

/// The stage the machine holds (root/current.json): what `up` brings back, also after `down`
/// removed the domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    key: String,
    entry: PathBuf,
}

/// What a vagrant entry records besides its disk (artifact/vagrant.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    key: String,
    box_sha256: String,
    domain: String,
    created: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Running {
    domain: String,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn record_path(state: &MachineState) -> PathBuf {
    state.root().join("machine.json")
}

fn record(state: &MachineState) -> Option<Record> {
    read_json(&record_path(state))
}

fn save_record(state: &MachineState, record: &Record) -> Result<()> {
    crate::state::write_json(&record_path(state), record, 0o644)
}

fn project_dir(state: &MachineState) -> PathBuf {
    state.dir.join("vagrant")
}

fn env_dir(state: &MachineState) -> PathBuf {
    state
        .dir
        .parent()
        .expect("machine state lives in its environment's folder")
        .to_path_buf()
}

fn trust(m: &MachineContext) -> Result<Trust> {
    Trust::ensure(&env_dir(m.state), &m.state.dir, m.env, &m.machine.name)
}

/// An append-mode log file for a child's output.
pub(crate) fn log_file(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ctx(|| format!("opening {}", path.display()))
}

/// `vagrant` in the machine's project, never phoning home (no checkpoint, no box update check).
fn vagrant(state: &MachineState) -> Command {
    let mut cmd = Command::new("vagrant");
    cmd.env("VAGRANT_CWD", project_dir(state))
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .env("VAGRANT_BOX_UPDATE_CHECK_DISABLE", "1")
        .env("VAGRANT_NO_COLOR", "1")
        .env("VAGRANT_DEFAULT_PROVIDER", "libvirt")
        .stdin(Stdio::null());
    cmd
}

impl VagrantBackend {
    pub fn new(settings: &Settings) -> VagrantBackend {
        VagrantBackend {
            uri: settings.libvirt.uri.clone(),
            images: settings.libvirt.images.clone(),
            network: settings.libvirt.vagrant_network,
            live: Mutex::new(BTreeMap::new()),
        }
    }

    fn uri_for(&self, machine: &Machine) -> String {
        self.uri
            .clone()
            .or_else(|| machine.vm.uri.clone())
            .unwrap_or_else(|| lv::DEFAULT_URI.to_string())
    }

    /// Tells the machine's guard what to do if envbuild ends now (starting the guard first).
    fn guard(&self, m: &MachineContext, word: &str) -> Result<()> {
        let mut live = self.live.lock().unwrap();
        let entry = live.entry(m.state.dir.clone()).or_default();
        if entry.guard.is_none() {
            let args = teardown_args(m.state, &self.uri_for(m.machine), m.env, &m.machine.name);
            entry.guard = Some(Guard::spawn(&args)?);
        }
        entry.guard.as_mut().expect("just set").say(word);
        Ok(())
    }

    /// Removes the machine now (teardown.sh), and tells its guard there is nothing left to do.
    fn teardown(&self, m: &MachineContext) {
        let args = teardown_args(m.state, &self.uri_for(m.machine), m.env, &m.machine.name);
        guard::run_teardown(&args);
        let _ = std::fs::remove_file(record_path(m.state));
        let _ = std::fs::remove_file(m.state.root().join("running.json"));
        let mut live = self.live.lock().unwrap();
        if let Some(mut entry) = live.remove(&m.state.dir)
            && let Some(guard) = entry.guard.as_mut()
        {
            guard.say("keep");
        }
    }

    fn virsh(&self, record: &Record) -> Virsh {
        Virsh {
            uri: record.uri.clone(),
        }
    }

    /// Brings a new machine up with `vagrant up` on `disk`; the previous one, if any, is removed.
    fn boot(&self, m: &MachineContext, disk: BootDisk) -> Result<Record> {
        let (state, machine) = (m.state, m.machine);
        self.teardown(m);
        let started = Instant::now();
        let uri = self.uri_for(machine);
        let trust = trust(m)?;
        let root = state.root();
        let pool_dir = root.join("pool");
        std::fs::create_dir_all(&pool_dir).ctx(|| format!("creating {}", pool_dir.display()))?;
        let seed = root.join("seed.tar");
        let dhcp: &[&str] = match self.network {
            VagrantNetwork::Loopback => &[],
            VagrantNetwork::Management => &[vagrantfile::MANAGEMENT_MAC],
        };
        lv::boot::write_seed(&seed, &trust, &machine.name, &[], dhcp)?;
        hand_to_qemu(&seed, &uri)?;
        let pool = pool_name(m.env, &machine.name);
        let virsh = Virsh { uri: uri.clone() };
        self.guard(m, "teardown")?;
        // A transient pool: libvirt forgets it when it stops; teardown.sh destroys it.
        if virsh.run(&["pool-info", &pool]).is_err() {
            virsh.run(&[
                "pool-create-as",
                &pool,
                "dir",
                "--target",
                &pool_dir.display().to_string(),
            ])?;
        }
        let domain = domain_name(m.env, &machine.name);
        let (disk_spec, disk_path, box_sha256) = match &disk {
            BootDisk::Box(record) => {
                boxes::add(record, &state.logs().join("vagrant.log"))?;
                (
                    Disk::Box(record.name.clone()),
                    pool_dir.join(format!("{domain}.img")),
                    record.sha256.clone(),
                )
            }
            BootDisk::Export { disk, box_sha256 } => {
                let volume = format!("{domain}-disk.qcow2");
                let path = pool_dir.join(&volume);
                image::create_overlay(disk, &path, None)?;
                virsh.run(&["pool-refresh", &pool])?;
                (Disk::Volume(volume), path, box_sha256.clone())
            }
        };
        let ports = lv::boot::free_ports(1 + machine.vm.forward.len())?;
        let plan = Plan {
            uri: uri.clone(),
            env: m.env.to_string(),
            machine: machine.name.clone(),
            disk: disk_spec,
            cpus: machine.resources.cpus,
            memory_mib: machine.resources.memory_mib,
            pool: pool.clone(),
            pool_dir: pool_dir.clone(),
            ssh_port: ports[0],
            forwards: vagrantfile::forwards(&ports, &machine.vm.forward),
            identity: trust.client_key.clone(),
            seed: seed.clone(),
            console_log: state.logs().join("console.log"),
            kvm: lv::virsh::kvm_usable().0,
            network: self.network,
        };
        let project = project_dir(state);
        std::fs::create_dir_all(&project).ctx(|| format!("creating {}", project.display()))?;
        std::fs::create_dir_all(state.logs())
            .ctx(|| format!("creating {}", state.logs().display()))?;
        let vagrantfile = project.join("Vagrantfile");
        std::fs::write(&vagrantfile, plan.text())
            .ctx(|| format!("writing {}", vagrantfile.display()))?;
        let mut record = Record {
            uri,
            network: self.network,
            domain: domain.clone(),
            pool,
            disk: disk_path,
            ports: std::iter::once("ssh".to_string())
                .chain(machine.vm.forward.keys().cloned())
                .zip(ports.iter().copied())
                .collect(),
            box_sha256,
            snapshots: BTreeMap::new(),
        };
        save_record(state, &record)?;
        self.vagrant_up(m)?;
        wait_ssh(
            &trust,
            record.ports["ssh"],
            &state.logs().join("console.log"),
        )?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(domain, seconds, "vagrant machine up");
        let _ = writeln!(
            log_file(&state.logs().join("boot-times.log"))?,
            "vagrant-up {} {seconds:.1}",
            crate::clock::now_rfc3339()
        );
        record.snapshots.clear();
        save_record(state, &record)?;
        Ok(record)
    }

    /// `vagrant up`, its output in logs/vagrant.log (progress bars dropped), stopped on SIGINT.
    fn vagrant_up(&self, m: &MachineContext) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let log = m.state.logs().join("vagrant.log");
        let mut cmd = vagrant(m.state);
        cmd.args(["up", "--provider", "libvirt", "--no-provision"])
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?);
        // SAFETY: prctl in the child between fork and exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().ctx(|| "running vagrant up".into())?;
        loop {
            if let Some(status) = child.try_wait().ctx(|| "waiting for vagrant up".into())? {
                if status.success() {
                    return Ok(());
                }
                return Err(Error::Failed(format!(
                    "`vagrant up` of {} failed.\n  last lines of {}:\n{}",
                    m.label(),
                    log.display(),
                    vagrant_tail(&log)
                )));
            }
            if process::aborting() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Aborted(format!(
                    "interrupted while `vagrant up` of {} ran; the machine is removed",
                    m.label()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Reverts the running or stopped domain to the snapshot `key` if its identity matches what
    /// envbuild recorded; `Ok(None)` with why not when it is a miss.
    fn revert(&self, m: &MachineContext, saved: &Saved) -> Result<std::result::Result<(), String>> {
        let Some(record) = record(m.state) else {
            return Ok(Err("the machine is not defined".into()));
        };
        let virsh = self.virsh(&record);
        if !virsh.exists(&record.domain) {
            return Ok(Err(format!("domain {} is gone", record.domain)));
        }
        if record.network != self.network {
            return Ok(Err(format!(
                "the domain was defined for the {} network set-up, this run asks for {}",
                record.network.as_str(),
                self.network.as_str()
            )));
        }
        if record.box_sha256 != saved.box_sha256 {
            return Ok(Err("the domain runs another box".into()));
        }
        let Some(&recorded) = record.snapshots.get(&saved.key) else {
            return Ok(Err(format!(
                "the domain has no snapshot {} of envbuild's",
                short(&saved.key)
            )));
        };
        match snapshot_created(&virsh, &record.domain, &saved.key) {
            None => return Ok(Err(format!("snapshot {} vanished", short(&saved.key)))),
            Some(t) if t != recorded => {
                return Ok(Err(format!(
                    "snapshot {} was replaced (created at {t}, envbuild saved it at {recorded})",
                    short(&saved.key)
                )));
            }
            Some(_) => {}
        }
        self.guard(m, "teardown")?;
        virsh.run(&["snapshot-revert", &record.domain, &saved.key, "--running"])?;
        let trust = trust(m)?;
        let port = record.ports["ssh"];
        wait_ssh(&trust, port, &m.state.logs().join("console.log"))?;
        let key = guest_output(&trust, port, &format!("cat {GUEST_KEY}"))?;
        if key.trim() != saved.key {
            return Ok(Err(format!(
                "the guest holds stage key {:?}, not {}",
                short(key.trim()),
                short(&saved.key)
            )));
        }
        sync_clock(&trust, port)?;
        Ok(Ok(()))
    }

    fn set_current(&self, m: &MachineContext, key: &str, entry: &Path) -> Result<()> {
        crate::state::write_json(
            &m.state.root().join("current.json"),
            &Current {
                key: key.to_string(),
                entry: entry.to_path_buf(),
            },
            0o644,
        )
    }

    /// The machine running the stage `entry` holds: reverted if the domain has its snapshot,
    /// else booted from its exported disk and saved again. `Ok(false)`: the entry is damaged.
    fn bring_up(&self, m: &MachineContext, entry: &Entry) -> Result<bool> {
        let Some(saved) = read_json::<Saved>(&entry.artifact().join("vagrant.json")) else {
            return Ok(false);
        };
        match self.revert(m, &saved)? {
            Ok(()) => {
                self.set_current(m, &saved.key, &entry.dir)?;
                return Ok(true);
            }
            Err(why) => eprintln!(
                "{}: {why}: a miss; booting the stage's exported disk",
                m.label()
            ),
        }
        // The export is what boots: every digest of the entry is checked first.
        if crate::store::verify::check(
            entry,
            crate::store::verify::Contents::Hashed(&Default::default()),
        )
        .is_err()
        {
            return Ok(false);
        }
        let record = self.boot(
            m,
            BootDisk::Export {
                disk: entry.artifact().join("disk.qcow2"),
                box_sha256: saved.box_sha256.clone(),
            },
        )?;
        let trust = trust(m)?;
        let key = guest_output(&trust, record.ports["ssh"], &format!("cat {GUEST_KEY}"))?;
        if key.trim() != saved.key {
            self.teardown(m);
            return Ok(false);
        }
        // Saved again in this domain: the next replay reverts in seconds.
        self.save_snapshot(m, &saved.key)?;
        self.set_current(m, &saved.key, &entry.dir)?;
        Ok(true)
    }

    /// Writes the key into the guest and saves the snapshot; records its creation time.
    fn save_snapshot(&self, m: &MachineContext, key: &str) -> Result<i64> {
        let mut record = record_or_fail(m)?;
        let trust = trust(m)?;
        guest_output(
            &trust,
            record.ports["ssh"],
            &format!(
                "rm -rf {GUEST_INPUTS} && mkdir -p /var/lib/envbuild && echo {} > {GUEST_KEY} && sync",
                quote(key)
            ),
        )?;
        let virsh = self.virsh(&record);
        if snapshot_created(&virsh, &record.domain, key).is_some() {
            virsh.run(&["snapshot-delete", &record.domain, key])?;
        }
        virsh.run(&[
            "snapshot-create-as",
            &record.domain,
            key,
            "--description",
            &format!("envbuild stage {key}"),
        ])?;
        let created = snapshot_created(&virsh, &record.domain, key).ok_or_else(|| {
            Error::Failed(format!("snapshot {} is not listed once saved", short(key)))
        })?;
        record.snapshots.insert(key.to_string(), created);
        save_record(m.state, &record)?;
        Ok(created)
    }
}

enum BootDisk {
    Box(boxes::BoxRecord),
    Export { disk: PathBuf, box_sha256: String },
}

impl Backend for VagrantBackend {
    fn base_material(&self, machine: &Machine) -> Vec<String> {
        let mut lines = vec![
            format!("layout={ENTRY_LAYOUT}"),
            format!("box={}", boxes::recipe_digest()),
        ];
        if machine.base.debootstrap.is_some() {
            lines.push(format!("debootstrap={}", image::recipe_digest(machine)));
        }
        lines
    }

    fn check_host(&self, m: &MachineContext) -> Result<()> {
        host::check_host(&self.uri_for(m.machine), self.network, m.machine)
    }

    fn host_checks(&self, folders: &[&Path]) -> Vec<Check> {
        let mut folders = folders.to_vec();
        folders.push(&self.images);
        host::host_checks(self.uri.as_deref().unwrap_or(lv::DEFAULT_URI), &folders)
    }

    fn start_order(&self) -> StartOrder {
        StartOrder::Parallel
    }

    fn starts_without_services(&self) -> bool {
        true
    }

    fn restore(&self, m: &MachineContext, entry: &Entry) -> Result<bool> {
        if m.state.root().join("running.json").is_file() && self.is_up(m, &Default::default()) {
            return Err(Error::input(
                format!("{} is up", m.label()),
                format!("stop it first with `envbuild down {}`", m.env),
            ));
        }
        if crate::store::verify::check_all_but_contents(entry).is_err() {
            return Ok(false);
        }
        let restored = self.bring_up(m, entry)?;
        if restored {
            self.guard(m, "stop")?;
        }
        Ok(restored)
    }

    fn reset(&self, m: &MachineContext) -> Result<()> {
        self.teardown(m);
        Ok(())
    }

    fn run_step(
        &self,
        m: &MachineContext,
        ctx: &StepContext,
        step: &str,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<StepEnd> {
        let running = record(m.state).filter(|r| self.virsh(r).is_running(&r.domain));
        let record = match running {
            Some(record) => record,
            None => {
                let boxed = boxes::ensure(&self.images, m.machine, &|t| eprintln!("{t}"))?;
                self.boot(m, BootDisk::Box(boxed))?
            }
        };
        self.guard(m, "teardown")?;
        let trust = trust(m)?;
        let port = record.ports["ssh"];
        let copied = self
            .live
            .lock()
            .unwrap()
            .get(&m.state.dir)
            .and_then(|l| l.inputs.clone());
        if copied.as_deref() != Some(ctx.inputs) {
            lv::boot::copy_inputs(&trust, port, ctx.inputs)?;
            self.live
                .lock()
                .unwrap()
                .entry(m.state.dir.clone())
                .or_default()
                .inputs = Some(ctx.inputs.to_path_buf());
        }
        lv::run_guest_step(m, ctx, step, &trust, port, &[], on_line)
    }

    fn snapshot(
        &self,
        m: &MachineContext,
        pending: &Pending,
        _parent: Option<&Entry>,
    ) -> Result<(Vec<TreeEntry>, u64)> {
        let key = pending.owner();
        let created = self.save_snapshot(m, &key)?;
        let record = record_or_fail(m)?;
        let disk = pending.artifact().join("disk.qcow2");
        // The domain runs on: -U reads the snapshot's clusters, which nothing writes any more.
        let out = Command::new("qemu-img")
            .args(["convert", "-U", "-O", "qcow2", "-l"])
            .arg(format!("snapshot.name={key}"))
            .arg(&record.disk)
            .arg(&disk)
            .stdin(Stdio::null())
            .output()
            .ctx(|| "running qemu-img convert".into())?;
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "exporting snapshot {} failed: {}",
                short(&key),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        boxes::mend_boot_block(&record.disk, &disk)?;
        let saved = Saved {
            key: key.clone(),
            box_sha256: record.box_sha256.clone(),
            domain: record.domain.clone(),
            created,
        };
        let saved_file = pending.artifact().join("vagrant.json");
        std::fs::write(
            &saved_file,
            serde_json::to_vec_pretty(&saved).expect("vagrant.json serializes"),
        )
        .ctx(|| format!("writing {}", saved_file.display()))?;
        let mut tree = Vec::new();
        let mut size = 0;
        for (name, path) in [("disk.qcow2", &disk), ("vagrant.json", &saved_file)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))
                .ctx(|| format!("making {} read-only", path.display()))?;
            let bytes = std::fs::metadata(path)
                .ctx(|| format!("reading {}", path.display()))?
                .len();
            size += bytes;
            tree.push(TreeEntry::File {
                path: name.to_string(),
                mode: 0o444,
                size: bytes,
                sha256: sha256_file(path)?,
            });
        }
        Ok((tree, size))
    }

    fn committed(&self, m: &MachineContext, entry: &Entry) -> Result<()> {
        let saved: Saved = read_json(&entry.artifact().join("vagrant.json"))
            .ok_or_else(|| Error::Failed(format!("{} has no vagrant.json", entry.name)))?;
        self.set_current(m, &saved.key, &entry.dir)?;
        if let Some(live) = self.live.lock().unwrap().get_mut(&m.state.dir) {
            live.inputs = None;
        }
        self.guard(m, "stop")
    }

    fn abandon(&self, m: &MachineContext) {
        self.teardown(m);
    }

    fn start(&self, m: &MachineContext, _runtime: &Runtime) -> Result<RunningServices> {
        let running = record(m.state).filter(|r| self.virsh(r).is_running(&r.domain));
        if running.is_none() {
            // Stopped at the end of a build, or removed by `down`: back to the stage it holds
            // (a snapshot's RAM and all when the domain still has it).
            let current: Current =
                read_json(&m.state.root().join("current.json")).ok_or_else(|| {
                    Error::input(
                        format!("{} is not built yet", m.label()),
                        format!("run `envbuild build {}`", m.env),
                    )
                })?;
            let entry = Entry {
                name: current
                    .entry
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                dir: current.entry,
            };
            if !self.bring_up(m, &entry)? {
                return Err(Error::Failed(format!(
                    "{}: cached stage {} is damaged",
                    m.label(),
                    entry.name
                ))
                .fix("run `envbuild cache verify`, then build again"));
            }
        }
        let record = record_or_fail(m)?;
        crate::state::write_json(
            &m.state.root().join("running.json"),
            &Running {
                domain: record.domain.clone(),
            },
            0o644,
        )?;
        self.guard(m, "keep")?;
        Ok(RunningServices {
            ports: record.ports.clone(),
            services: Vec::new(),
            started: crate::clock::now_rfc3339(),
        })
    }

    fn is_up(&self, m: &MachineContext, _running: &RunningServices) -> bool {
        m.state.root().join("running.json").is_file()
            && record(m.state).is_some_and(|r| self.virsh(&r).is_running(&r.domain))
    }

    fn runs_anything(&self, m: &MachineContext, running: &RunningServices) -> bool {
        self.is_up(m, running)
    }

    fn control(
        &self,
        m: &MachineContext,
        _runtime: &Runtime,
        _control: ServiceControl,
        _names: &[String],
        _extra_env: &BTreeMap<String, String>,
    ) -> Result<()> {
        Err(super::vm_services_refused(m))
    }

    fn stop(&self, m: &MachineContext, _running: &RunningServices) -> Vec<String> {
        self.teardown(m);
        Vec::new()
    }

    fn release(&self, m: &MachineContext) {
        if record_path(m.state).is_file() || project_dir(m.state).join(".vagrant").exists() {
            self.teardown(m);
        }
    }

    fn ssh_target(&self, m: &MachineContext) -> Result<Option<SshTarget>> {
        let record = record(m.state)
            .filter(|r| self.virsh(r).is_running(&r.domain))
            .ok_or_else(|| {
                Error::input(
                    format!("{} is not up", m.label()),
                    format!("run `envbuild up {}`", m.env),
                )
            })?;
        let trust = trust(m)?;
        Ok(Some(trust.ssh_target(record.ports["ssh"])))
    }
}

fn record_or_fail(m: &MachineContext) -> Result<Record> {
    record(m.state).ok_or_else(|| Error::Failed(format!("{}: machine.json is gone", m.label())))
}
