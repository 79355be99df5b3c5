//! The libvirt backend: a machine is a QEMU VM driven through libvirt (virsh) and qemu-img.
//!
//! Each stage's disk is a qcow2 overlay on its parent's (the first stage's on the base image):
//! replaying a cached stage creates one thin overlay, never a copy. A stage is built in a
//! transient build VM booted on a fresh overlay of the stage below; its steps run over SSH; the
//! guest is powered off cleanly and the overlay becomes the entry's artifact, with `chain.json`
//! recording the parent disk and its sha256. A chain whose parent is missing or changed is
//! refused (exit 2), never booted.
//!
//! Overlays name their backing file relative to their own folder, inside the store
//! (`../../../entries/<parent>/artifact/disk.qcow2`, or `../../../images/<id>/disk.qcow2` for the
//! base image), so an entry means the same in any store: `cache export`/`import` and the remote
//! cache move libvirt stages between machines and store paths unchanged. A base image kept in
//! another images folder (`--images`) is linked into `STORE/v1/images/<id>`. `up` boots the machine on a fresh top overlay of its newest
//! stage, so the store is never written by a running VM. See docs/backends.md.
//!
//! ```text
//! mod.rs        the backend: restore, build VMs, snapshot, start and stop
//! chain.rs      chain.json and the check of an overlay chain down to the base image
//! boot.rs       seed, domain, boot to SSH, inputs in, power off
//! steps.rs      the build VM of a stage, and one step over SSH in a guest
//! links.rs      private links between VMs (UDP socket pairs on loopback)
//! host.rs       doctor's checks of this host
//! image.rs      base images (debootstrap recipes, pinned images); qemu_img.rs: overlays, info
//! memory.rs     memory snapshots (`snapshot = "running"`): save at commit, resume at `up`
//! domain.rs     domain XML; cloud_init.rs, ssh.rs, virsh.rs: what their names say
//! ```
//!
//! Files of a machine (STATE/envs/<env>/<machine>/):
//! ```text
//! root/current.json   the disk the machine holds now (a store entry's or the base image's)
//! root/build.qcow2    the overlay a build VM writes (moved into the entry at commit)
//! root/live.qcow2     the overlay of the running machine (`up`), removed by `down`
//! root/running.json   the running domain: URI, name, ports
//! root/resume.xml     the saved domain's XML as the last resume rewrote it (memory.rs)
//! root/seed-*.tar|iso seed disks (private keys, 0600), only while a VM boots
//! root/*.xml          domain XML of the last boots
//! logs/console*.log   serial consoles
//! ssh/                host key (see ssh.rs)
//! ```

pub(crate) mod boot;
mod chain;
pub mod cloud_init;
pub mod domain;
pub(crate) mod host;
mod host_ca;
pub mod image;
mod links;
mod memory;
mod qemu_img;
pub mod ssh;
mod steps;
pub mod virsh;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{
    Backend, Check, MachineContext, Runtime, ServiceControl, SshTarget, StartOrder, StepContext,
};
use crate::error::{Error, IoContext, Result};
use crate::key::digest::sha256_file;
use crate::process::{self, StepEnd};
use crate::settings::Settings;
use crate::spec::model::{Machine, Snapshot};
use crate::state::{MachineState, RunningServices};
use crate::store::{Entry, Pending, TreeEntry};
use host_ca::HostCas;
use image::BaseImage;
use ssh::{Trust, quote};
use virsh::{Guard, Virsh};

use boot::{BootPlan, boot, copy_inputs, power_off};
use chain::{BaseRef, Chain, Current, backing_path, check_chain, disk_sha256, image_id};
use links::link_nics;
pub(crate) use steps::run_guest_step;

pub const DEFAULT_URI: &str = "qemu:///system";
/// Where a stage's inputs are copied in the guest ($ENVBUILD_INPUTS).
const GUEST_INPUTS: &str = "/var/lib/envbuild/inputs";

/// The layout of libvirt entries; part of every libvirt stage key (src/key), so entries of an
/// older layout are never read as this one.
const ENTRY_LAYOUT: &str = "relative-chain-2";

/// A per-user session daemon (`qemu:///session`, `qemu+ssh://host/session`).
pub(crate) fn is_session(uri: &str) -> bool {
    uri.split('?').next().unwrap_or(uri).ends_with("/session")
}

pub struct LibvirtBackend {
    /// `--libvirt-uri`: overrides every machine's `uri`.
    uri: Option<String>,
    /// Where base images are built and kept (`--images`).
    images: PathBuf,
    /// The store's `v1/images`: entries find their base image there.
    store_images: PathBuf,
    /// Running build VMs by machine state folder.
    builds: Mutex<BTreeMap<PathBuf, BuildVm>>,
    /// What the last `start` of a machine (by state folder) has to tell a person.
    warnings: Mutex<BTreeMap<PathBuf, Vec<String>>>,
    /// The host's CAs build VMs trust (host_ca.rs).
    host_cas: HostCas,
}

struct BuildVm {
    domain: String,
    uri: String,
    port: u16,
    trust: Trust,
    /// The stage keeps the VM's memory (`snapshot = "running"`): it is saved, not powered off.
    keep_memory: bool,
    /// The host's CAs are in the guest's store (taken out again before commit).
    host_cas: bool,
    /// Their record for the stage log, written with the first step's output.
    provenance: Option<String>,
    _guard: Guard,
}

/// What a step in a build VM needs to know of it.
struct StepTarget {
    port: u16,
    trust: Trust,
    host_cas: bool,
    provenance: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Running {
    uri: String,
    domain: String,
    ssh_port: u16,
}

/// The environment's state folder (its SSH keys and private links are shared by its machines).
fn env_dir(state: &MachineState) -> PathBuf {
    state
        .dir
        .parent()
        .expect("machine state lives in its environment's folder")
        .to_path_buf()
}

/// The virtual size of an overlay straight on a pinned image: `resources.disk` (image.rs checks
/// it is no smaller). Overlays on a stage keep their parent's size; a debootstrap image is built
/// at `resources.disk` already.
fn first_overlay_mib(machine: &Machine, current: &Current) -> Option<u64> {
    (current.entry.is_none() && machine.base.image.is_some()).then_some(machine.resources.disk_mib)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    crate::state::write_json(path, value, 0o644)
}

fn running(state: &MachineState) -> Option<Running> {
    read_json(&state.root().join("running.json"))
}

/// The domain of a machine that is up. A build VM whose memory is kept has this name too:
/// libvirt restores a saved domain under its own name only.
fn up_domain(env: &str, machine: &Machine) -> String {
    format!("envbuild-{env}-{}", machine.name)
}

/// The entry holding the machine's disk (None for the base image).
fn entry_of(current: &Current) -> Option<Entry> {
    Some(Entry {
        name: current.entry.clone()?,
        dir: current
            .disk
            .parent()
            .and_then(Path::parent)
            .expect("an entry disk lives in ENTRY/artifact/")
            .to_path_buf(),
    })
}

impl LibvirtBackend {
    pub fn new(settings: &Settings) -> LibvirtBackend {
        LibvirtBackend {
            uri: settings.libvirt.uri.clone(),
            images: settings.libvirt.images.clone(),
            store_images: settings.store.join(crate::store::LAYOUT).join("images"),
            builds: Mutex::new(BTreeMap::new()),
            warnings: Mutex::new(BTreeMap::new()),
            host_cas: HostCas::collect(
                Path::new(host_ca::HOST_DIR),
                settings.remotes.http.ca_file(),
            ),
        }
    }

    /// The URI a machine is driven through: `--libvirt-uri`, else the spec's `uri`, else the
    /// default.
    fn uri_for(&self, machine: &Machine) -> String {
        self.uri
            .clone()
            .or_else(|| machine.vm.uri.clone())
            .unwrap_or_else(|| DEFAULT_URI.to_string())
    }

    fn refuse_if_running(&self, m: &MachineContext) -> Result<()> {
        if let Some(running) = running(m.state)
            && (Virsh { uri: running.uri }).exists(&running.domain)
        {
            return Err(Error::input(
                format!("{} is up (domain {})", m.label(), running.domain),
                format!("stop it first with `envbuild down {}`", m.env),
            ));
        }
        Ok(())
    }

    /// Drops a build VM left by a failed stage: its guard destroys the domain and the overlay.
    fn abandon_build(&self, state: &MachineState) {
        let vm = self.builds.lock().unwrap().remove(&state.dir);
        drop(vm);
    }

    fn set_current(&self, state: &MachineState, current: &Current) -> Result<()> {
        std::fs::create_dir_all(state.root())
            .ctx(|| format!("creating {}", state.root().display()))?;
        write_json(&state.root().join("current.json"), current)
    }

    /// The disk the machine holds, its chain checked again: what is about to boot must still sit
    /// on the parents it was built on.
    fn current(&self, m: &MachineContext) -> Result<Current> {
        let label = m.label();
        let current: Current =
            read_json(&m.state.root().join("current.json")).ok_or_else(|| {
                Error::input(
                    format!("{label} is not built yet"),
                    format!("run `envbuild build {}`", m.env),
                )
            })?;
        match entry_of(&current) {
            Some(entry) if check_chain(&entry)?.is_none() => {
                return Err(Error::input(
                    format!("{label}: cached stage {} is missing or damaged", entry.name),
                    "run `envbuild cache verify`, then build again",
                ));
            }
            Some(_) => {}
            None if !current.disk.is_file() => {
                return Err(Error::input(
                    format!(
                        "{label}: its base image {} is missing",
                        current.disk.display()
                    ),
                    "build again to make it",
                ));
            }
            None => {}
        }
        Ok(current)
    }

    /// Resumes the machine from its newest stage's memory state, if it keeps one that fits; a
    /// state refused or a resume that fails is a warning, and `None` lets the caller boot.
    fn resume(
        &self,
        m: &MachineContext,
        current: &Current,
        uri: &str,
        domain: &str,
        live: &Path,
    ) -> Option<boot::Booted> {
        let entry = entry_of(current)?;
        let virsh = Virsh {
            uri: uri.to_string(),
        };
        let attempt = || -> Result<Option<boot::Booted>> {
            let trust = Trust::ensure(&env_dir(m.state), &m.state.dir, m.env, &m.machine.name)?;
            let file = match memory::check(&entry, &virsh, &trust)? {
                memory::Resume::Nothing => return Ok(None),
                memory::Resume::Refused(why) => {
                    return Err(Error::Failed(format!("its memory state is refused: {why}")));
                }
                memory::Resume::Ready(file) => file,
            };
            image::create_overlay(&current.disk, live, None)?;
            memory::resume(memory::ResumePlan {
                uri,
                domain,
                state: m.state,
                file: &file,
                disk: live,
                forwards: &m.machine.vm.forward,
                trust,
            })
            .map(Some)
        };
        match attempt() {
            Ok(resumed) => resumed,
            Err(e) => {
                // The guard of a failed resume has destroyed its domain and removed the overlay.
                let _ = std::fs::remove_file(live);
                self.warnings
                    .lock()
                    .unwrap()
                    .entry(m.state.dir.clone())
                    .or_default()
                    .push(format!(
                        "{}: not resumed from cached stage {} ({e}); booting it from its disk",
                        m.label(),
                        entry.name
                    ));
                None
            }
        }
    }

    /// The machine's base image (built or fetched first if need be), as the store sees it:
    /// `STORE/v1/images/<id>`, a link to the images folder's copy when `--images` is elsewhere.
    fn base_in_store(&self, machine: &Machine) -> Result<BaseImage> {
        let base = image::ensure(&self.images, machine, &|text| eprintln!("{text}"))?;
        let id = image_id(&base);
        let images = &self.store_images;
        let linked = images.join(&id);
        if std::fs::symlink_metadata(&linked).is_err() {
            std::fs::create_dir_all(images).ctx(|| format!("creating {}", images.display()))?;
            let target = std::fs::canonicalize(base.disk.parent().unwrap_or(Path::new("/")))
                .ctx(|| format!("resolving {}", base.disk.display()))?;
            // Machines of one environment are prepared on parallel threads: a name of its own each.
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let tmp = images.join(format!(
                "{id}.link.{}.{}",
                std::process::id(),
                SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp)
                .ctx(|| format!("linking {} to {}", tmp.display(), target.display()))?;
            std::fs::rename(&tmp, &linked).ctx(|| format!("linking {}", linked.display()))?;
        }
        image::load(&linked)?.ok_or_else(|| {
            Error::Failed(format!("{} holds no image.json", linked.display()))
                .fix("remove it and build again")
        })
    }
}

impl Backend for LibvirtBackend {
    fn base_material(&self, machine: &Machine) -> Vec<String> {
        let mut lines = Vec::new();
        if machine.base.image.is_some() {
            // What envbuild's cloud-init seed configures ends up on the stage disks too.
            lines.push(format!("cloud-init={}", cloud_init::recipe_digest()));
            // The first overlay is grown to this size, and the guest's root file system with it.
            lines.push(format!("disk_mib={}", machine.resources.disk_mib));
        }
        lines.push(format!("layout={ENTRY_LAYOUT}"));
        if machine.base.debootstrap.is_some() {
            lines.push(format!("debootstrap={}", image::recipe_digest(machine)));
        }
        lines
    }

    fn check_host(&self, m: &MachineContext) -> Result<()> {
        let machine = m.machine;
        for (program, package) in [
            ("virsh", "libvirt-clients"),
            ("qemu-img", "qemu-utils"),
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("ssh", "openssh-client"),
            ("ssh-keygen", "openssh-client"),
        ] {
            if process::find_program(program).is_none() {
                return Err(Error::MissingTool {
                    machine: machine.name.clone(),
                    what: format!("program `{program}`"),
                    fix: format!("apt-get install {package} (or run dev/setup)"),
                });
            }
        }
        if machine.base.image.is_some() {
            for (program, package, why) in [
                ("curl", "curl", "to fetch its pinned image"),
                ("genisoimage", "genisoimage", "to write its cloud-init seed"),
            ] {
                if process::find_program(program).is_none() {
                    return Err(Error::MissingTool {
                        machine: machine.name.clone(),
                        what: format!("program `{program}` ({why})"),
                        fix: format!("apt-get install {package} (or run dev/setup)"),
                    });
                }
            }
        }
        // The KVM probe (up to 1.5 s) waits for the first boot: a replay boots nothing.
        Virsh {
            uri: self.uri_for(machine),
        }
        .check_reachable()
    }

    fn host_checks(&self, folders: &[&Path]) -> Vec<Check> {
        let mut folders = folders.to_vec();
        folders.push(&self.images);
        host::host_checks(self.uri.as_deref().unwrap_or(DEFAULT_URI), &folders)
    }

    fn start_order(&self) -> StartOrder {
        StartOrder::Parallel
    }

    fn starts_without_services(&self) -> bool {
        true
    }

    fn chained(&self) -> bool {
        true
    }

    fn needs_entry(&self, entry: &Entry) -> Option<String> {
        let chain: Chain =
            serde_json::from_slice(&std::fs::read(entry.artifact().join("chain.json")).ok()?)
                .ok()?;
        chain.parent_entry
    }

    fn check_pulled(&self, m: &MachineContext, entry: &Entry) -> Result<()> {
        self.base_in_store(m.machine)?;
        check_chain(entry)?
            .map(|_| ())
            .ok_or_else(|| Error::Failed(format!("pulled stage {} is damaged", entry.name)))
    }

    fn restore(&self, m: &MachineContext, entry: &Entry) -> Result<bool> {
        self.refuse_if_running(m)?;
        self.abandon_build(m.state);
        // An entry imported or pulled into this store finds its base image here.
        self.base_in_store(m.machine)?;
        // The checks `cache verify` makes but for hashing the disk, whose chain is checked next.
        if crate::store::verify::check_all_but_contents(entry).is_err() {
            return Ok(false);
        }
        let Some(checked) = check_chain(entry)? else {
            return Ok(false);
        };
        self.set_current(m.state, &checked)?;
        Ok(true)
    }

    fn reset(&self, m: &MachineContext) -> Result<()> {
        self.refuse_if_running(m)?;
        self.abandon_build(m.state);
        let base = self.base_in_store(m.machine)?;
        self.set_current(
            m.state,
            &Current {
                disk: base.disk.clone(),
                sha256: base.sha256.clone(),
                entry: None,
                base,
            },
        )
    }

    fn run_step(
        &self,
        m: &MachineContext,
        ctx: &StepContext,
        step: &str,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<StepEnd> {
        let vm = self.build_vm(m, ctx)?;
        if let Some(record) = &vm.provenance {
            record.lines().for_each(&mut *on_line);
        }
        let cas: Vec<String> = if vm.host_cas {
            host_ca::STEP_VARIABLES
                .iter()
                .map(|name| format!("{name}={}", host_ca::GUEST_BUNDLE))
                .collect()
        } else {
            Vec::new()
        };
        run_guest_step(m, ctx, step, &vm.trust, vm.port, &cas, on_line)
    }

    fn snapshot(
        &self,
        m: &MachineContext,
        pending: &Pending,
        parent: Option<&Entry>,
    ) -> Result<(Vec<TreeEntry>, u64)> {
        let state = m.state;
        let vm = self
            .builds
            .lock()
            .unwrap()
            .remove(&state.dir)
            .ok_or_else(|| Error::Failed("no build VM ran this stage".into()))?;
        let current = self.current(m)?;
        // A committed disk must be consistent: drop the inputs, sync, and power off cleanly.
        let cleaned = vm
            .trust
            .ssh(
                vm.port,
                &format!(
                    "{}rm -rf {GUEST_INPUTS} && sync",
                    if vm.host_cas {
                        format!("{}; ", host_ca::REMOVE)
                    } else {
                        String::new()
                    }
                ),
            )
            .stdin(std::process::Stdio::null())
            .output()
            .ctx(|| "running ssh".into())?;
        if !cleaned.status.success() {
            return Err(Error::Failed(format!(
                "cleaning the build VM before commit failed: {}",
                String::from_utf8_lossy(&cleaned.stderr).trim()
            )));
        }
        let virsh = Virsh {
            uri: vm.uri.clone(),
        };
        let artifact = pending.artifact();
        // A kept memory is saved with the disk it expects: the guest's writes are synced, and QEMU
        // flushes the overlay as the domain ends. A boot from that disk recovers its journal.
        let memory = if vm.keep_memory {
            Some(memory::save(
                &virsh,
                &vm.domain,
                &vm.trust,
                &artifact.join(memory::STATE_FILE),
            )?)
        } else {
            power_off(&virsh, &vm.domain, &vm.trust, vm.port)?;
            None
        };
        // The overlay names its parent by the store-relative path it will have once committed
        // (a header rewrite: no data moves).
        let base = BaseRef::of(&current.base);
        let backing = backing_path(current.entry.as_deref(), &base);
        let overlay = state.root().join("build.qcow2");
        image::set_backing(&overlay, &backing)?;
        // Moved before the guard goes: it deletes the build overlay if it is still there.
        let disk = artifact.join("disk.qcow2");
        if std::fs::rename(&overlay, &disk).is_err() {
            std::fs::copy(&overlay, &disk).ctx(|| format!("copying {}", overlay.display()))?;
        }
        drop(vm);
        if let Some(parent) = parent {
            debug_assert_eq!(current.entry.as_deref(), Some(parent.name.as_str()));
        }
        let chain = Chain {
            backing,
            parent_sha256: current.sha256.clone(),
            parent_entry: current.entry.clone(),
            base,
        };
        let chain_file = artifact.join("chain.json");
        std::fs::write(
            &chain_file,
            serde_json::to_vec_pretty(&chain).expect("chain serializes"),
        )
        .ctx(|| format!("writing {}", chain_file.display()))?;
        let mut tree = Vec::new();
        let mut size = 0;
        let mut add = |name: &str| -> Result<String> {
            let path = artifact.join(name);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))
                .ctx(|| format!("making {} read-only", path.display()))?;
            let bytes = std::fs::metadata(&path)
                .ctx(|| format!("reading {}", path.display()))?
                .len();
            size += bytes;
            let sha256 = sha256_file(&path)?;
            tree.push(TreeEntry::File {
                path: name.to_string(),
                mode: 0o444,
                size: bytes,
                sha256: sha256.clone(),
            });
            Ok(sha256)
        };
        add("chain.json")?;
        let disk_sha256 = add("disk.qcow2")?;
        if let Some(memory) = memory {
            let meta = artifact.join(memory::META_FILE);
            let recorded = memory::MemoryState {
                disk_sha256,
                ..memory
            };
            std::fs::write(
                &meta,
                serde_json::to_vec_pretty(&recorded).expect("memory state serializes"),
            )
            .ctx(|| format!("writing {}", meta.display()))?;
            add(memory::META_FILE)?;
            add(memory::STATE_FILE)?;
        }
        Ok((tree, size))
    }

    fn committed(&self, m: &MachineContext, entry: &Entry) -> Result<()> {
        let current: Current = read_json(&m.state.root().join("current.json"))
            .ok_or_else(|| Error::Failed("the machine's current.json is gone".into()))?;
        let disk = entry.artifact().join("disk.qcow2");
        let sha256 = disk_sha256(entry)?;
        self.set_current(
            m.state,
            &Current {
                disk,
                sha256,
                entry: Some(entry.name.clone()),
                base: current.base,
            },
        )
    }

    fn abandon(&self, m: &MachineContext) {
        self.abandon_build(m.state);
    }

    fn start(&self, m: &MachineContext, _runtime: &Runtime) -> Result<RunningServices> {
        let (state, machine) = (m.state, m.machine);
        self.refuse_if_running(m)?;
        let current = self.current(m)?;
        let live = state.root().join("live.qcow2");
        let uri = self.uri_for(machine);
        let domain = up_domain(m.env, machine);
        let booted = match self.resume(m, &current, &uri, &domain, &live) {
            Some(resumed) => resumed,
            None => {
                image::create_overlay(&current.disk, &live, first_overlay_mib(machine, &current))?;
                let links = link_nics(&env_dir(state), m.env, machine)?;
                boot(&BootPlan {
                    uri: &uri,
                    domain: &domain,
                    env: m.env,
                    machine,
                    state,
                    disk: &live,
                    base: &current.base,
                    kind: "up",
                    forwards: &machine.vm.forward,
                    links: &links,
                    guard_removes: vec![live.clone()],
                })?
            }
        };
        write_json(
            &state.root().join("running.json"),
            &Running {
                uri,
                domain,
                ssh_port: booted.ssh_port,
            },
        )?;
        booted.guard.keep();
        let mut ports = booted.forwarded;
        ports.insert("ssh".to_string(), booted.ssh_port);
        Ok(RunningServices {
            ports,
            services: Vec::new(),
            started: crate::clock::now_rfc3339(),
        })
    }

    fn warnings(&self, m: &MachineContext) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap()
            .remove(&m.state.dir)
            .unwrap_or_default()
    }

    fn is_up(&self, m: &MachineContext, _running: &RunningServices) -> bool {
        running(m.state).is_some_and(|r| (Virsh { uri: r.uri }).exists(&r.domain))
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
        let state = m.state;
        let mut killed = Vec::new();
        let running_file = state.root().join("running.json");
        if let Some(running) = running(state) {
            let virsh = Virsh {
                uri: running.uri.clone(),
            };
            let clean = Trust::ensure(&env_dir(state), &state.dir, m.env, &m.machine.name)
                .and_then(|trust| power_off(&virsh, &running.domain, &trust, running.ssh_port));
            if clean.is_err() {
                virsh.destroy(&running.domain);
                killed.push("vm".to_string());
            }
        }
        let _ = std::fs::remove_file(&running_file);
        let _ = std::fs::remove_file(state.root().join("live.qcow2"));
        for seed in ["seed-up.tar", "seed-up.iso"] {
            let _ = std::fs::remove_file(state.root().join(seed));
        }
        killed
    }

    fn ssh_target(&self, m: &MachineContext) -> Result<Option<SshTarget>> {
        let running = running(m.state)
            .filter(|r| Virsh { uri: r.uri.clone() }.is_running(&r.domain))
            .ok_or_else(|| {
                Error::input(
                    format!("{} is not up", m.label()),
                    format!("run `envbuild up {}`", m.env),
                )
            })?;
        let trust = Trust::ensure(&env_dir(m.state), &m.state.dir, m.env, &m.machine.name)?;
        Ok(Some(trust.ssh_target(running.ssh_port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_uris_are_told_from_system_ones() {
        assert!(is_session("qemu:///session"));
        assert!(is_session("qemu+ssh://me@lab/session?keyfile=/k"));
        assert!(!is_session("qemu:///system"));
        assert!(!is_session(
            "qemu+ssh://root@lab/system?command=/w&no_tty=1"
        ));
    }
}
