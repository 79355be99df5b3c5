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
//! links.rs      private links between VMs (UDP socket pairs on loopback)
//! host.rs       doctor's checks of this host
//! image.rs      base images (debootstrap recipes, pinned images) and qemu-img
//! domain.rs     domain XML; cloud_init.rs, ssh.rs, virsh.rs: what their names say
//! ```
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

mod boot;
mod chain;
pub mod cloud_init;
pub mod domain;
mod host;
pub mod image;
mod links;
pub mod ssh;
pub mod virsh;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::{Backend, RuntimeContext, ServiceControl, StepContext};
use crate::error::{Error, IoContext, Result};
use crate::key::digest::sha256_file;
use crate::process::{self, StepEnd};
use crate::spec::model::Machine;
use crate::state::{MachineState, RunningServices};
use crate::store::TreeEntry;
use crate::store::{Entry, Pending};
use image::BaseImage;
use ssh::{Trust, quote};
use virsh::{Guard, Virsh};

use boot::{BootPlan, boot, copy_inputs, power_off};
use chain::{BaseRef, Chain, Current, backing_path, check_chain, disk_sha256, image_id};
pub use host::{Check, host_checks};
use links::link_nics;

pub const DEFAULT_URI: &str = "qemu:///system";
/// Where a stage's inputs are copied in the guest ($ENVBUILD_INPUTS).
const GUEST_INPUTS: &str = "/var/lib/envbuild/inputs";
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
            started: crate::clock::now_rfc3339(),
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
