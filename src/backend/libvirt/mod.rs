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
//! Files of a machine (STATE/envs/<env>/<machine>/):
//! ```text
//! root/current.json   the disk the machine holds now (a store entry's or the base image's)
//! root/build.qcow2    the overlay a build VM writes (moved into the entry at commit)
//! root/live.qcow2     the overlay of the running machine (`up`), removed by `down`
//! root/running.json   the running domain: URI, name, ports
//! root/seed-*.tar|iso seed disks (private keys, 0600), only while a VM boots
//! root/*.xml          domain XML of the last boots
//! logs/console*.log   serial consoles
//! ssh/                host key (see ssh.rs)
//! ```

pub mod cloud_init;
pub mod domain;
pub mod image;
pub mod ssh;
pub mod virsh;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Backend, RuntimeContext, ServiceControl, StepContext};
use crate::error::{Error, IoContext, Result};
use crate::key::digest::{TreeEntry, sha256_file};
use crate::process::{self, StepEnd};
use crate::spec::model::Machine;
use crate::state::{MachineState, RunningServices};
use crate::store::{Entry, Pending};
use domain::{Boot, DomainSpec, LinkNic};
use image::BaseImage;
use ssh::{Trust, quote};
use virsh::{Guard, Virsh};

pub const DEFAULT_URI: &str = "qemu:///system";
/// Where a stage's inputs are copied in the guest ($ENVBUILD_INPUTS).
const GUEST_INPUTS: &str = "/var/lib/envbuild/inputs";
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(180);

/// Settings from the command line (`--libvirt-uri`, `--images`, `--store`), set once by the CLI.
#[derive(Debug, Clone)]
pub struct Config {
    pub uri: Option<String>,
    pub images: PathBuf,
    /// The store's root: base images are linked into its `v1/images`.
    pub store: PathBuf,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

pub fn configure(config: Config) {
    let _ = CONFIG.set(config);
}

fn config() -> &'static Config {
    CONFIG.get_or_init(|| {
        let store = crate::store::Store::default_root();
        Config {
            uri: None,
            images: store.join(crate::store::LAYOUT).join("images"),
            store,
        }
    })
}

/// The layout of libvirt entries; part of every libvirt stage key (src/key), so entries of an
/// older layout are never read as this one.
pub const ENTRY_LAYOUT: &str = "relative-chain-2";

/// A per-user session daemon (`qemu:///session`, `qemu+ssh://host/session`).
fn is_session(uri: &str) -> bool {
    uri.split('?').next().unwrap_or(uri).ends_with("/session")
}

/// The URI a machine is driven through: `--libvirt-uri`, else the spec's `uri`, else the default.
pub fn uri_for(machine: &Machine) -> String {
    config()
        .uri
        .clone()
        .or_else(|| machine.vm.uri.clone())
        .unwrap_or_else(|| DEFAULT_URI.to_string())
}

pub struct LibvirtBackend {
    /// Machine specs by name, from `check_host` (the trait's step calls carry only the state).
    machines: Mutex<BTreeMap<String, Machine>>,
    /// Running build VMs by machine state folder.
    builds: Mutex<BTreeMap<PathBuf, BuildVm>>,
}

pub static BACKEND: LibvirtBackend = LibvirtBackend {
    machines: Mutex::new(BTreeMap::new()),
    builds: Mutex::new(BTreeMap::new()),
};

struct BuildVm {
    domain: String,
    uri: String,
    port: u16,
    trust: Trust,
    _guard: Guard,
}

/// The disk a machine holds: the top of its chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    disk: PathBuf,
    /// sha256 of `disk` (from its entry's tree, or the base image's record).
    sha256: String,
    /// The entry holding `disk`; None for the base image.
    entry: Option<String>,
    base: BaseImage,
}

/// `artifact/chain.json` of an entry: what its overlay sits on. Holds no absolute path: an
/// entry means the same in every store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// The overlay's backing file exactly as written in it: relative to the entry's artifact
    /// folder (see `backing_path`).
    pub backing: PathBuf,
    /// sha256 of the parent disk.
    pub parent_sha256: String,
    /// The parent entry's name; None when the parent is the base image.
    pub parent_entry: Option<String>,
    /// The base image at the bottom of the chain.
    pub base: BaseRef,
}

/// A base image as entries name it: its folder under `STORE/v1/images` and its disk's sha256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BaseRef {
    pub id: String,
    pub sha256: String,
}

impl BaseRef {
    fn of(base: &BaseImage) -> BaseRef {
        BaseRef {
            id: image_id(base),
            sha256: base.sha256.clone(),
        }
    }
}

/// The folder name of a base image (its recipe digest, or the pinned image's id).
fn image_id(base: &BaseImage) -> String {
    base.disk
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The backing file an entry's overlay names: its parent entry's disk, or the base image's,
/// relative to the entry's artifact folder. The same from `v1/tmp/<pending>/artifact`, where
/// the overlay is written, and from `v1/entries/<name>/artifact`, where it is committed.
fn backing_path(parent_entry: Option<&str>, base: &BaseRef) -> PathBuf {
    match parent_entry {
        Some(name) => Path::new("../../../entries")
            .join(name)
            .join("artifact/disk.qcow2"),
        None => Path::new("../../../images")
            .join(&base.id)
            .join("disk.qcow2"),
    }
}

/// `v1/` of the store holding an entry (`v1/entries/<name>`).
fn layout_dir(entry: &Entry) -> PathBuf {
    entry
        .dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Running {
    uri: String,
    domain: String,
    ssh_port: u16,
}

fn names(state: &MachineState) -> (String, String) {
    let machine = state
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let env = state
        .dir
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    (env.unwrap_or_default(), machine.unwrap_or_default())
}

fn env_dir(state: &MachineState) -> PathBuf {
    state
        .dir
        .parent()
        .expect("machine state lives in its environment's folder")
        .to_path_buf()
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    crate::state::write_json(path, value, 0o644)
}

/// Says once per process that VMs run under TCG, and why.
fn accelerator() -> bool {
    static SAID: OnceLock<()> = OnceLock::new();
    let (kvm, why) = virsh::kvm_usable();
    if !kvm {
        SAID.get_or_init(|| {
            eprintln!("note: no usable KVM ({why}): VMs run under TCG emulation, which is slower")
        });
    }
    kvm
}

impl LibvirtBackend {
    fn machine(&self, state: &MachineState) -> Result<Machine> {
        let (_, name) = names(state);
        self.machines
            .lock()
            .unwrap()
            .get(&name)
            .cloned()
            .ok_or_else(|| Error::Failed(format!("libvirt machine `{name}` was not checked")))
    }

    fn refuse_if_running(&self, state: &MachineState) -> Result<()> {
        if let Some(running) = read_json::<Running>(&state.root().join("running.json"))
            && (Virsh { uri: running.uri }).exists(&running.domain)
        {
            let (env, machine) = names(state);
            return Err(Error::Input(format!(
                "{env}/{machine} is up (domain {}); stop it first with `envbuild down {env}`",
                running.domain
            )));
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
    fn current(&self, state: &MachineState) -> Result<Current> {
        let (env, machine) = names(state);
        let current: Current = read_json(&state.root().join("current.json")).ok_or_else(|| {
            Error::Input(format!(
                "{env}/{machine} is not built yet; run `envbuild build {env}`"
            ))
        })?;
        match &current.entry {
            Some(name) => {
                let entry = Entry {
                    name: name.clone(),
                    dir: current
                        .disk
                        .parent()
                        .and_then(Path::parent)
                        .expect("an entry disk lives in ENTRY/artifact/")
                        .to_path_buf(),
                };
                if check_chain(&entry)?.is_none() {
                    return Err(Error::Input(format!(
                        "{env}/{machine}: cached stage {name} is missing or damaged; run `envbuild cache verify`, then build again"
                    )));
                }
            }
            None if !current.disk.is_file() => {
                return Err(Error::Input(format!(
                    "{env}/{machine}: its base image {} is missing; build again to make it",
                    current.disk.display()
                )));
            }
            None => {}
        }
        Ok(current)
    }

    /// Boots the build VM for the stage being built, on a fresh overlay of the current disk.
    fn build_vm(&self, ctx: &StepContext) -> Result<(u16, Trust)> {
        if let Some(vm) = self.builds.lock().unwrap().get(&ctx.state.dir) {
            return Ok((vm.port, vm.trust.clone()));
        }
        let state = ctx.state;
        let machine = self.machine(state)?;
        let current = self.current(state)?;
        let (env, name) = names(state);
        let overlay = state.root().join("build.qcow2");
        image::create_overlay(&current.disk, &overlay)?;
        let uri = uri_for(&machine);
        let domain = format!("envbuild-{env}-{name}-build-{}", std::process::id());
        let booted = boot(&BootPlan {
            uri: &uri,
            domain: &domain,
            env: &env,
            machine: &machine,
            state,
            disk: &overlay,
            base: &current.base,
            kind: "build",
            forwards: &BTreeMap::new(),
            links: &[],
            guard_removes: vec![overlay.clone()],
        })?;
        copy_inputs(&booted.trust, booted.ssh_port, ctx.inputs)?;
        let result = (booted.ssh_port, booted.trust.clone());
        self.builds.lock().unwrap().insert(
            state.dir.clone(),
            BuildVm {
                domain,
                uri,
                port: booted.ssh_port,
                trust: booted.trust,
                _guard: booted.guard,
            },
        );
        Ok(result)
    }
}

impl Backend for LibvirtBackend {
    fn check_host(&self, machine: &Machine) -> Result<()> {
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
        Virsh {
            uri: uri_for(machine),
        }
        .check_reachable()?;
        // The KVM probe (up to 1.5 s) waits for the first boot: a replay boots nothing.
        self.machines
            .lock()
            .unwrap()
            .insert(machine.name.clone(), machine.clone());
        Ok(())
    }

    fn chained(&self) -> bool {
        true
    }

    fn check_pulled(&self, state: &MachineState, entry: &Entry) -> Result<()> {
        base_in_store(&self.machine(state)?)?;
        check_chain(entry)?
            .map(|_| ())
            .ok_or_else(|| Error::Failed(format!("pulled stage {} is damaged", entry.name)))
    }

    fn restore(&self, state: &MachineState, entry: &Entry) -> Result<bool> {
        self.refuse_if_running(state)?;
        self.abandon_build(state);
        // An entry imported or pulled into this store finds its base image here.
        base_in_store(&self.machine(state)?)?;
        // The checks `cache verify` makes but for hashing the disk, whose chain is checked next.
        if crate::store::verify::check_all_but_contents(entry).is_err() {
            return Ok(false);
        }
        let Some(checked) = check_chain(entry)? else {
            return Ok(false);
        };
        self.set_current(state, &checked)?;
        Ok(true)
    }

    fn reset(&self, state: &MachineState) -> Result<()> {
        self.refuse_if_running(state)?;
        self.abandon_build(state);
        let machine = self.machine(state)?;
        let base = base_in_store(&machine)?;
        self.set_current(
            state,
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
        ctx: &StepContext,
        step: &str,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<StepEnd> {
        let (port, trust) = self.build_vm(ctx)?;
        let mut exports = vec![
            format!("ENVBUILD_INPUTS={GUEST_INPUTS}"),
            "ENVBUILD_ROOT=/".to_string(),
            format!("PATH={}", process::SAFE_PATH),
            "HOME=/root".to_string(),
            "LANG=C.UTF-8".to_string(),
        ];
        exports.extend(ctx.env.iter().map(|(k, v)| format!("{k}={}", quote(v))));
        let remote = format!(
            "cd / && export {} && exec sh -ec {}",
            exports.join(" "),
            quote(step)
        );
        let local: Vec<String> = trust
            .ssh_argv(port, Some(&remote))
            .iter()
            .map(|a| quote(a))
            .collect();
        let env = process::base_env(&ctx.state.dir);
        process::run_step(
            &local.join(" "),
            &ctx.state.dir,
            &env,
            ctx.deadline,
            on_line,
        )
    }

    fn snapshot(
        &self,
        state: &MachineState,
        pending: &Pending,
        parent: Option<&Entry>,
    ) -> Result<(Vec<TreeEntry>, u64)> {
        let vm = self
            .builds
            .lock()
            .unwrap()
            .remove(&state.dir)
            .ok_or_else(|| Error::Failed("no build VM ran this stage".into()))?;
        let current = self.current(state)?;
        // A committed disk must be consistent: drop the inputs, sync, and power off cleanly.
        let cleaned = vm
            .trust
            .ssh(vm.port, &format!("rm -rf {GUEST_INPUTS} && sync"))
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
        power_off(&virsh, &vm.domain, &vm.trust, vm.port)?;
        // The overlay names its parent by the store-relative path it will have once committed
        // (a header rewrite: no data moves).
        let base = BaseRef::of(&current.base);
        let backing = backing_path(current.entry.as_deref(), &base);
        let overlay = state.root().join("build.qcow2");
        image::set_backing(&overlay, &backing)?;
        // Moved before the guard goes: it deletes the build overlay if it is still there.
        let disk = pending.artifact().join("disk.qcow2");
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
        let chain_file = pending.artifact().join("chain.json");
        std::fs::write(
            &chain_file,
            serde_json::to_vec_pretty(&chain).expect("chain serializes"),
        )
        .ctx(|| format!("writing {}", chain_file.display()))?;
        let mut tree = Vec::new();
        let mut size = 0;
        for (name, path) in [("chain.json", &chain_file), ("disk.qcow2", &disk)] {
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

    fn committed(&self, state: &MachineState, entry: &Entry) -> Result<()> {
        let current: Current = read_json(&state.root().join("current.json"))
            .ok_or_else(|| Error::Failed("the machine's current.json is gone".into()))?;
        let disk = entry.artifact().join("disk.qcow2");
        let sha256 = disk_sha256(entry)?;
        self.set_current(
            state,
            &Current {
                disk,
                sha256,
                entry: Some(entry.name.clone()),
                base: current.base,
            },
        )
    }

    fn abandon(&self, state: &MachineState) {
        self.abandon_build(state);
    }

    fn start(&self, ctx: &RuntimeContext) -> Result<RunningServices> {
        let state = ctx.state;
        let machine = ctx.machine;
        self.refuse_if_running(state)?;
        let current = self.current(state)?;
        let (env, name) = names(state);
        let live = state.root().join("live.qcow2");
        image::create_overlay(&current.disk, &live)?;
        let uri = uri_for(machine);
        let domain = format!("envbuild-{env}-{name}");
        let links = link_nics(&env_dir(state), &env, machine)?;
        let booted = boot(&BootPlan {
            uri: &uri,
            domain: &domain,
            env: &env,
            machine,
            state,
            disk: &live,
            base: &current.base,
            kind: "up",
            forwards: &machine.vm.forward,
            links: &links,
            guard_removes: vec![live.clone()],
        })?;
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
            started: crate::store::now_rfc3339(),
        })
    }

    fn is_running(&self, state: &MachineState, _running: &RunningServices) -> bool {
        read_json::<Running>(&state.root().join("running.json"))
            .is_some_and(|r| (Virsh { uri: r.uri }).exists(&r.domain))
    }

    fn control(
        &self,
        ctx: &RuntimeContext,
        _control: ServiceControl,
        _names: &[String],
        _extra_env: &BTreeMap<String, String>,
    ) -> Result<()> {
        Err(Error::Input(format!(
            "machine `{}` is a VM: its services are systemd units inside the guest; run `envbuild ssh ENV {} -- systemctl restart UNIT`",
            ctx.machine.name, ctx.machine.name
        )))
    }

    fn stop(&self, state: &MachineState, _running: &RunningServices) -> Vec<String> {
        let mut killed = Vec::new();
        let running_file = state.root().join("running.json");
        if let Some(running) = read_json::<Running>(&running_file) {
            let virsh = Virsh {
                uri: running.uri.clone(),
            };
            let (env, name) = names(state);
            let clean = Trust::ensure(&env_dir(state), &state.dir, &env, &name)
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
}

/// The machine's base image (built or fetched first if need be), as the store sees it:
/// `STORE/v1/images/<id>`, a link to the images folder's copy when `--images` is elsewhere.
fn base_in_store(machine: &Machine) -> Result<BaseImage> {
    let config = config();
    let base = image::ensure(&config.images, machine, &|text| eprintln!("{text}"))?;
    let id = image_id(&base);
    let images = config.store.join(crate::store::LAYOUT).join("images");
    let linked = images.join(&id);
    if std::fs::symlink_metadata(&linked).is_err() {
        std::fs::create_dir_all(&images).ctx(|| format!("creating {}", images.display()))?;
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
        Error::Failed(format!(
            "{} holds no image.json; remove it and build again",
            linked.display()
        ))
    })
}

/// The sha256 of an entry's disk, from its tree.
fn disk_sha256(entry: &Entry) -> Result<String> {
    entry
        .tree()?
        .iter()
        .find_map(|e| match e {
            TreeEntry::File { path, sha256, .. } if path == "disk.qcow2" => Some(sha256.clone()),
            _ => None,
        })
        .ok_or_else(|| Error::Failed(format!("{} has no disk.qcow2", entry.name)))
}

/// Checks an entry's overlay chain down to the base image without reading the disks: each
/// parent exists and still has the digest the child recorded, and the overlay's backing file
/// is the recorded parent. `Ok(None)`: the entry itself is damaged (quarantine it); a changed
/// or missing parent is refused with an error (exit 2).
fn check_chain(entry: &Entry) -> Result<Option<Current>> {
    let disk = entry.artifact().join("disk.qcow2");
    let Ok(chain) = serde_json::from_slice::<Chain>(
        &std::fs::read(entry.artifact().join("chain.json")).unwrap_or_default(),
    ) else {
        return Ok(None);
    };
    let Ok(sha256) = disk_sha256(entry) else {
        return Ok(None);
    };
    let size = entry.tree()?.iter().find_map(|e| match e {
        TreeEntry::File { path, size, .. } if path == "disk.qcow2" => Some(*size),
        _ => None,
    });
    if std::fs::metadata(&disk).map(|m| m.len()).ok() != size {
        return Ok(None);
    }
    let refuse = |why: String| {
        Error::Input(format!(
            "cached stage {} is refused: {why}. Its overlay would boot on the wrong disk.\n  fix: remove it and the entries built on it (`envbuild cache rm`, or delete the folder under the store's v1/entries) and build again",
            entry.name
        ))
    };
    let v1 = layout_dir(entry);
    if chain.backing != backing_path(chain.parent_entry.as_deref(), &chain.base) {
        return Err(refuse(format!(
            "its chain.json names backing file {} for parent {:?}",
            chain.backing.display(),
            chain.parent_entry
        )));
    }
    let mut child = chain.clone();
    loop {
        if child.base != chain.base {
            return Err(refuse(format!(
                "its chain names two base images ({} and {})",
                chain.base.id, child.base.id
            )));
        }
        match &child.parent_entry {
            Some(name) => {
                let parent = Entry {
                    name: name.clone(),
                    dir: v1.join("entries").join(name),
                };
                if !parent.artifact().join("disk.qcow2").is_file() {
                    return Err(refuse(format!(
                        "its parent {name} is missing from this store (cache import and pull need every stage below it too)"
                    )));
                }
                let actual = disk_sha256(&parent).unwrap_or_default();
                if actual != child.parent_sha256 {
                    return Err(refuse(format!(
                        "its parent {name} changed (disk sha256 {actual}, built on {})",
                        child.parent_sha256
                    )));
                }
                child = serde_json::from_slice(
                    &std::fs::read(parent.artifact().join("chain.json")).unwrap_or_default(),
                )
                .map_err(|_| refuse(format!("its parent {name} has no readable chain.json")))?;
            }
            None => {
                let folder = v1.join("images").join(&child.base.id);
                let Some(base) = image::load(&folder).ok().flatten() else {
                    return Err(Error::Input(format!(
                        "cached stage {} needs base image {} (disk sha256 {}), which is not in {}.\n  fix: build the machine here once so its base image exists (the same recipe gives the same image only on the machine that built it: a debootstrap image is not bit-for-bit reproducible), copy that folder from the machine that built the stage, or pin the base image (`base = {{ image = URL, sha256 = ... }}`) so every machine has the same bytes",
                        entry.name,
                        child.base.id,
                        child.base.sha256,
                        folder.display()
                    )));
                };
                if base.sha256 != child.parent_sha256 || base.sha256 != chain.base.sha256 {
                    return Err(refuse(format!(
                        "the base image {} is not the one it was built on (disk sha256 {}, built on {}): it was rebuilt, replaced, or the stage came from another machine",
                        folder.display(),
                        base.sha256,
                        child.parent_sha256
                    )));
                }
                let backing = image::backing_file(&disk).map_err(|e| refuse(e.to_string()))?;
                if backing.as_ref() != Some(&chain.backing) {
                    return Err(refuse(format!(
                        "its overlay's backing file is {backing:?}, but it was built on {}",
                        chain.backing.display()
                    )));
                }
                return Ok(Some(Current {
                    disk,
                    sha256,
                    entry: Some(entry.name.clone()),
                    base,
                }));
            }
        }
    }
}

struct BootPlan<'a> {
    uri: &'a str,
    domain: &'a str,
    env: &'a str,
    machine: &'a Machine,
    state: &'a MachineState,
    disk: &'a Path,
    base: &'a BaseImage,
    /// "build" or "up": names the seed, XML and console files.
    kind: &'a str,
    forwards: &'a BTreeMap<String, u16>,
    links: &'a [(LinkNic, String)],
    guard_removes: Vec<PathBuf>,
}

struct Booted {
    ssh_port: u16,
    forwarded: BTreeMap<String, u16>,
    trust: Trust,
    guard: Guard,
}

/// Writes the seed and the domain, starts it under a guard, and waits until SSH answers with the
/// pinned host key.
fn boot(plan: &BootPlan) -> Result<Booted> {
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
            write_seed(&seed, &trust, &plan.machine.name, plan.links)?;
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
    let _seed_gone = image::RemoveOnDrop(seed.clone());
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
            crate::store::now_rfc3339()
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
fn power_off(virsh: &Virsh, domain: &str, trust: &Trust, port: u16) -> Result<()> {
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
fn write_seed(
    path: &Path,
    trust: &Trust,
    hostname: &str,
    links: &[(LinkNic, String)],
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
fn copy_inputs(trust: &Trust, port: u16, inputs: &Path) -> Result<()> {
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
fn free_ports(n: usize) -> Result<Vec<u16>> {
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

/// The two UDP ports of each private link, chosen once per environment (`links.json`); the
/// first machine to join a link takes the first port as its own.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Links {
    links: BTreeMap<String, LinkPorts>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LinkPorts {
    ports: [u16; 2],
    members: Vec<String>,
}

fn link_nics(env_dir: &Path, env: &str, machine: &Machine) -> Result<Vec<(LinkNic, String)>> {
    if machine.vm.links.is_empty() {
        return Ok(Vec::new());
    }
    let _lock = crate::store::lock::FileLock::acquire(&env_dir.join("links.lock"), || {})?;
    let path = env_dir.join("links.json");
    let mut links: Links = read_json(&path).unwrap_or_default();
    let mut nics = Vec::new();
    for (link, address) in &machine.vm.links {
        if !links.links.contains_key(link) {
            let sockets: Vec<std::net::UdpSocket> = (0..2)
                .map(|_| {
                    std::net::UdpSocket::bind(("127.0.0.1", 0))
                        .ctx(|| "finding a free loopback UDP port".into())
                })
                .collect::<Result<_>>()?;
            let mut ports = [0u16; 2];
            for (i, s) in sockets.iter().enumerate() {
                ports[i] = s.local_addr().ctx(|| "reading a port".into())?.port();
            }
            links.links.insert(
                link.clone(),
                LinkPorts {
                    ports,
                    members: Vec::new(),
                },
            );
        }
        let entry = links.links.get_mut(link).expect("inserted above");
        if !entry.members.contains(&machine.name) {
            entry.members.push(machine.name.clone());
        }
        let me = entry
            .members
            .iter()
            .position(|m| *m == machine.name)
            .expect("just added");
        nics.push((
            LinkNic {
                mac: domain::link_mac(env, &machine.name, link),
                local_port: entry.ports[me % 2],
                peer_port: entry.ports[(me + 1) % 2],
            },
            address.clone(),
        ));
    }
    write_json(&path, &links)?;
    Ok(nics)
}

/// One finding of `envbuild doctor`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// What was found, or how to fix it.
    pub detail: String,
}

/// The host checks of the libvirt backend, for `envbuild doctor`.
pub fn host_checks(uri: &str, folders: &[&Path]) -> Vec<Check> {
    let mut checks = Vec::new();
    for (program, package, why) in [
        ("virsh", "libvirt-clients", "drives libvirt"),
        (
            "libvirtd",
            "libvirt-daemon-system",
            "the libvirt daemon (local hypervisor)",
        ),
        ("qemu-system-x86_64", "qemu-system-x86", "runs the VMs"),
        ("qemu-img", "qemu-utils", "makes qcow2 overlays"),
        ("ssh", "openssh-client", "runs steps in the VMs"),
        ("ssh-keygen", "openssh-client", "makes the SSH keys"),
        ("debootstrap", "debootstrap", "builds Debian base images"),
        ("curl", "curl", "fetches pinned cloud images"),
        (
            "genisoimage",
            "genisoimage",
            "writes cloud-init NoCloud seeds for pinned images",
        ),
        ("mkfs.ext4", "e2fsprogs", "writes base image file systems"),
    ] {
        let found = process::find_program(program);
        checks.push(Check {
            what: format!("{program} ({why})"),
            ok: found.is_some(),
            detail: match found {
                Some(path) => path.display().to_string(),
                None => format!("apt-get install {package} (or run dev/setup)"),
            },
        });
    }
    let virsh = Virsh {
        uri: uri.to_string(),
    };
    let reachable = process::find_program("virsh").is_some() && virsh.check_reachable().is_ok();
    checks.push(Check {
        what: format!("libvirt reachable at {uri}"),
        ok: reachable,
        detail: if reachable {
            virsh
                .run(&["version", "--daemon"])
                .unwrap_or_default()
                .lines()
                .find(|l| l.contains("daemon") || l.contains("hypervisor"))
                .unwrap_or("answers")
                .trim()
                .to_string()
        } else {
            "start it: `virtlogd -d && libvirtd -d` as root (no systemd), or `systemctl start libvirtd`; dev/setup does this".into()
        },
    });
    let (kvm, why) = if process::find_program("qemu-system-x86_64").is_some() {
        virsh::kvm_usable()
    } else {
        (false, "qemu-system-x86_64 is missing".into())
    };
    checks.push(Check {
        what: "accelerator".into(),
        ok: true,
        detail: if kvm {
            format!("KVM ({why})")
        } else {
            format!("TCG emulation: {why}. VMs work, slower (about 1-2 min to SSH for a small Debian guest)")
        },
    });
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    checks.push(Check {
        what: "root (to build debootstrap base images)".into(),
        ok: root,
        detail: if root {
            "yes".into()
        } else {
            "run the first build of a debootstrap base as root, or share an images folder (--images) that holds it".into()
        },
    });
    for folder in folders {
        let existing = folder
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let free = free_bytes(existing);
        checks.push(Check {
            what: format!("disk space at {}", folder.display()),
            ok: free.is_some_and(|b| b >= 10 << 30),
            detail: match free {
                Some(b) if b >= 10 << 30 => format!("{} GiB free", b >> 30),
                Some(b) => format!(
                    "only {} GiB free; a base image and a few stages need about 10 GiB",
                    b >> 30
                ),
                None => "cannot read".into(),
            },
        });
    }
    checks
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// What `envbuild ssh` and `ssh-config` need of a running machine.
pub struct SshTarget {
    pub trust: Trust,
    pub port: u16,
}

/// The SSH target of a running libvirt machine; an error says how to bring it up.
pub fn ssh_target(state: &MachineState) -> Result<SshTarget> {
    let (env, machine) = names(state);
    let running = read_json::<Running>(&state.root().join("running.json"))
        .filter(|r| Virsh { uri: r.uri.clone() }.is_running(&r.domain))
        .ok_or_else(|| {
            Error::Input(format!(
                "{env}/{machine} is not up; run `envbuild up {env}`"
            ))
        })?;
    Ok(SshTarget {
        trust: Trust::ensure(&env_dir(state), &state.dir, &env, &machine)?,
        port: running.ssh_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store-like layout: a base image and entries whose overlays chain onto it.
    struct Layout {
        _dir: tempfile::TempDir,
        root: PathBuf,
        base: BaseImage,
    }

    impl Layout {
        fn new() -> Layout {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            let images = root.join("images/abc");
            std::fs::create_dir_all(&images).unwrap();
            let raw = images.join("disk.raw");
            std::fs::write(&raw, vec![1u8; 1 << 20]).unwrap();
            let disk = images.join("disk.qcow2");
            assert!(
                std::process::Command::new("qemu-img")
                    .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                    .arg(&raw)
                    .arg(&disk)
                    .status()
                    .unwrap()
                    .success()
            );
            let sha256 = sha256_file(&disk).unwrap();
            std::fs::write(
                images.join("image.json"),
                serde_json::json!({ "recipe": "r", "sha256": sha256, "built": "", "seconds": 0.0 })
                    .to_string(),
            )
            .unwrap();
            let base = BaseImage {
                kernel: Some(images.join("vmlinuz")),
                initrd: Some(images.join("initrd.img")),
                disk,
                sha256,
            };
            Layout {
                _dir: dir,
                root,
                base,
            }
        }

        /// Commits an entry whose overlay sits on `parent` (None: the base image).
        fn entry(&self, name: &str, parent: Option<&Entry>) -> Entry {
            let dir = self.root.join("entries").join(name);
            std::fs::create_dir_all(dir.join("artifact")).unwrap();
            let entry = Entry {
                name: name.to_string(),
                dir,
            };
            let (parent_disk, parent_sha256) = match parent {
                Some(p) => (p.artifact().join("disk.qcow2"), disk_sha256(p).unwrap()),
                None => (self.base.disk.clone(), self.base.sha256.clone()),
            };
            let disk = entry.artifact().join("disk.qcow2");
            image::create_overlay(&parent_disk, &disk).unwrap();
            let base = BaseRef::of(&self.base);
            let backing = backing_path(parent.map(|p| p.name.as_str()), &base);
            image::set_backing(&disk, &backing).unwrap();
            let chain = Chain {
                backing,
                parent_sha256,
                parent_entry: parent.map(|p| p.name.clone()),
                base,
            };
            std::fs::write(
                entry.artifact().join("chain.json"),
                serde_json::to_vec(&chain).unwrap(),
            )
            .unwrap();
            let tree = vec![TreeEntry::File {
                path: "disk.qcow2".into(),
                mode: 0o444,
                size: std::fs::metadata(&disk).unwrap().len(),
                sha256: sha256_file(&disk).unwrap(),
            }];
            std::fs::write(
                entry.dir.join("tree.json"),
                serde_json::to_vec(&tree).unwrap(),
            )
            .unwrap();
            entry
        }
    }

    fn refusal(result: Result<Option<Current>>) -> String {
        match result {
            Err(e @ Error::Input(_)) => e.to_string(),
            other => panic!("expected a refusal (exit 2), got {other:?}"),
        }
    }

    #[test]
    fn a_sound_chain_is_restored_as_the_current_disk() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        let two = layout.entry("k2-e-m-two", Some(&one));
        let current = check_chain(&two).unwrap().unwrap();
        assert_eq!(current.disk, two.artifact().join("disk.qcow2"));
        assert_eq!(current.entry.as_deref(), Some("k2-e-m-two"));
        assert_eq!(current.sha256, disk_sha256(&two).unwrap());
        assert_eq!(current.base, layout.base);
    }

    #[test]
    fn session_uris_are_told_from_system_ones() {
        assert!(is_session("qemu:///session"));
        assert!(is_session("qemu+ssh://me@lab/session?keyfile=/k"));
        assert!(!is_session("qemu:///system"));
        assert!(!is_session(
            "qemu+ssh://root@lab/system?command=/w&no_tty=1"
        ));
    }

    #[test]
    fn entries_mean_the_same_in_a_store_at_another_path() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        layout.entry("k2-e-m-two", Some(&one));
        let elsewhere = tempfile::tempdir().unwrap();
        let moved = elsewhere.path().join("store/v1");
        std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
        assert!(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(&layout.root)
                .arg(&moved)
                .status()
                .unwrap()
                .success()
        );
        drop(layout); // the original store is gone: nothing may point into it
        let two = Entry {
            name: "k2-e-m-two".into(),
            dir: moved.join("entries/k2-e-m-two"),
        };
        let current = check_chain(&two).unwrap().unwrap();
        assert_eq!(current.base.disk, moved.join("images/abc/disk.qcow2"));
        let chain = image::backing_chain(&current.disk).unwrap();
        assert_eq!(chain.len(), 3, "{chain:?}");
        assert!(chain.iter().all(|p| p.starts_with(&moved)), "{chain:?}");
    }

    #[test]
    fn a_missing_base_image_names_the_ways_to_get_it() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        std::fs::remove_dir_all(layout.root.join("images/abc")).unwrap();
        let why = refusal(check_chain(&one));
        assert!(
            why.contains("needs base image abc") && why.contains("pin the base image"),
            "{why}"
        );
    }

    #[test]
    fn a_missing_parent_is_refused() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        let two = layout.entry("k2-e-m-two", Some(&one));
        std::fs::remove_dir_all(&one.dir).unwrap();
        let why = refusal(check_chain(&two));
        assert!(why.contains("refused") && why.contains("missing"), "{why}");
    }

    #[test]
    fn a_parent_whose_digest_changed_is_refused() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        let two = layout.entry("k2-e-m-two", Some(&one));
        // The parent entry now describes other bytes (rebuilt, or tampered and re-recorded).
        let mut tree = one.tree().unwrap();
        if let TreeEntry::File { sha256, .. } = &mut tree[0] {
            *sha256 = "0".repeat(64);
        }
        std::fs::write(
            one.dir.join("tree.json"),
            serde_json::to_vec(&tree).unwrap(),
        )
        .unwrap();
        let why = refusal(check_chain(&two));
        assert!(why.contains("k1-e-m-one changed"), "{why}");
    }

    #[test]
    fn a_rebuilt_base_image_is_refused_all_the_way_up() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        let two = layout.entry("k2-e-m-two", Some(&one));
        let record = layout.base.disk.parent().unwrap().join("image.json");
        std::fs::write(
            &record,
            serde_json::json!({ "recipe": "r", "sha256": "f".repeat(64), "built": "", "seconds": 0.0 })
                .to_string(),
        )
        .unwrap();
        let why = refusal(check_chain(&two));
        assert!(
            why.contains("base image") && why.contains("rebuilt"),
            "{why}"
        );
    }

    #[test]
    fn an_overlay_on_another_backing_file_is_refused() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        let two = layout.entry("k2-e-m-two", Some(&one));
        // Re-point the overlay at the base image, keeping the recorded size.
        let disk = two.artifact().join("disk.qcow2");
        assert!(
            std::process::Command::new("qemu-img")
                .args(["rebase", "-u", "-F", "qcow2", "-b"])
                .arg(&layout.base.disk)
                .arg(&disk)
                .status()
                .unwrap()
                .success()
        );
        let mut tree = two.tree().unwrap();
        if let TreeEntry::File { size, .. } = &mut tree[0] {
            *size = std::fs::metadata(&disk).unwrap().len();
        }
        std::fs::write(
            two.dir.join("tree.json"),
            serde_json::to_vec(&tree).unwrap(),
        )
        .unwrap();
        let why = refusal(check_chain(&two));
        assert!(why.contains("backing file"), "{why}");
    }

    #[test]
    fn a_damaged_entry_is_reported_for_quarantine_not_refused() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        std::fs::remove_file(one.artifact().join("disk.qcow2")).unwrap();
        assert!(check_chain(&one).unwrap().is_none());
        let other = layout.entry("k3-e-m-one", None);
        std::fs::remove_file(other.artifact().join("chain.json")).unwrap();
        assert!(check_chain(&other).unwrap().is_none());
    }

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
        write_seed(&seed, &trust, "m", &[(nic, "10.0.0.2/24".into())]).unwrap();
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
                "network/20-link0.network"
            ]
        );
        assert!(network.contains("MACAddress=52:54:01:00:00:01"));
        assert!(network.contains("Address=10.0.0.2/24"));
    }
}
