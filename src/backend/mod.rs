//! Where machines live. One trait, one module per backend: local (host folders and processes),
//! libvirt (VMs with a qcow2 overlay per stage) and vagrant (a Vagrant machine of the libvirt
//! provider, a snapshot per stage).
//!
//! A backend is a value built once per run from the [`Settings`], and every method is told which
//! machine it is about ([`MachineContext`]: the environment's name, the validated machine, its
//! state folder). Everything the rest of envbuild needs to know about a kind of machine is a
//! method here; nothing outside `spec/` and `backend/` asks which backend it drives. Adding a
//! backend: a folder beside `local.rs` and `libvirt/`, and one line in [`make`]
//! (docs/backends.md).

pub mod libvirt;
pub mod local;
pub mod vagrant;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::spec::model::{BackendKind, Machine};
use crate::state::{MachineState, RunningServices};
use crate::store::{Entry, Pending, TreeEntry};

/// The one place that knows every backend: a new backend is a folder and a line here.
fn make(kind: BackendKind, settings: &Settings) -> Option<Box<dyn Backend>> {
    match kind {
        BackendKind::Local => Some(Box::new(local::LocalBackend::new(settings))),
        BackendKind::Libvirt => Some(Box::new(libvirt::LibvirtBackend::new(settings))),
        BackendKind::Vagrant => Some(Box::new(vagrant::VagrantBackend::new(settings))),
    }
}

/// The backends of this run, built from its settings.
pub struct Backends {
    built: Vec<(BackendKind, Box<dyn Backend>)>,
}

impl Backends {
    pub fn new(settings: &Settings) -> Backends {
        Backends {
            built: BackendKind::EVERY
                .into_iter()
                .filter_map(|kind| make(kind, settings).map(|backend| (kind, backend)))
                .collect(),
        }
    }

    /// The backend of `kind`; bad input when this envbuild has none.
    pub fn get(&self, kind: BackendKind) -> Result<&dyn Backend> {
        self.built
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, backend)| backend.as_ref())
            .ok_or_else(|| {
                let available: Vec<String> = self
                    .built
                    .iter()
                    .map(|(k, _)| format!("\"{}\"", k.as_str()))
                    .collect();
                Error::input(
                    format!(
                        "the {} backend is not available in this version of envbuild",
                        kind.as_str()
                    ),
                    format!("use backend = {}", available.join(" or ")),
                )
            })
    }

    /// Every available backend, in the spec's order of kinds (for `doctor`).
    pub fn all(&self) -> impl Iterator<Item = (BackendKind, &dyn Backend)> {
        self.built.iter().map(|(kind, b)| (*kind, b.as_ref()))
    }

    /// The backend that made a store entry, from its manifest's `backend` (None: unknown here).
    pub fn of_entry(&self, entry: &Entry) -> Option<&dyn Backend> {
        let kind = BackendKind::parse(&entry.manifest().ok()?.backend)?;
        self.get(kind).ok()
    }
}

/// One machine, as every backend method sees it.
#[derive(Clone, Copy)]
pub struct MachineContext<'a> {
    /// The environment's name.
    pub env: &'a str,
    pub machine: &'a Machine,
    pub state: &'a MachineState,
}

impl MachineContext<'_> {
    /// `env/machine`, as messages name a machine.
    pub fn label(&self) -> String {
        format!("{}/{}", self.env, self.machine.name)
    }
}

/// What a backend needs to run one stage's steps.
pub struct StepContext<'a> {
    /// The stage's inputs, templates and sources, as a read-only folder.
    pub inputs: &'a Path,
    pub env: BTreeMap<String, String>,
    pub deadline: Instant,
    /// What the stage's snapshot keeps (a VM's memory too, for `snapshot = "running"`).
    pub snapshot: crate::spec::model::Snapshot,
}

/// What services are started with: the environment's vars and its generated secrets.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    pub vars: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

/// How `up` starts the machines of a backend that do not wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOrder {
    /// All at once (VMs take a minute or more each to boot).
    Parallel,
    /// One after the other, in the spec's order.
    InOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceControl {
    Stop,
    Start,
    Restart,
}

/// One finding of `envbuild doctor`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// What was found, or how to fix it.
    pub detail: String,
}

/// How to reach a running machine over SSH with its pinned host key (`ssh`, `ssh-config`).
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// The port on 127.0.0.1.
    pub port: u16,
    pub user: String,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    /// The name the host key is pinned under (`HostKeyAlias`).
    pub alias: String,
    /// The whole `ssh` command line without the remote command.
    pub argv: Vec<String>,
}

/// The refusal of a service start/stop/restart on a VM machine: its services are the guest's
/// systemd units, reached over `envbuild ssh`.
pub fn vm_services_refused(m: &MachineContext) -> Error {
    Error::input(
        format!(
            "machine `{}` is a VM: its services are systemd units inside the guest",
            m.machine.name
        ),
        format!(
            "run `envbuild ssh {} {} -- systemctl restart UNIT`",
            m.env, m.machine.name
        ),
    )
}

impl SshTarget {
    /// The `ssh` command line that runs `command` (read by the guest's shell, as with ssh), or
    /// opens an interactive shell on a terminal.
    pub fn command_line(&self, command: Option<&str>) -> Vec<String> {
        let mut argv = self.argv.clone();
        match command {
            Some(command) => argv.extend(["--".to_string(), command.to_string()]),
            None => argv.insert(1, "-t".into()),
        }
        argv
    }
}

pub trait Backend: Sync {
    /// Lines this backend adds to the base digest of a machine (docs/hashing.md), after the
    /// backend's name and the pinned image, before the host tools.
    fn base_material(&self, _machine: &Machine) -> Vec<String> {
        Vec::new()
    }
    /// Checks that the host has what the machine needs; names the package to install if not.
    fn check_host(&self, m: &MachineContext) -> Result<()>;
    /// What `envbuild doctor` checks for this backend; `folders` are the store and state folders.
    fn host_checks(&self, folders: &[&Path]) -> Vec<Check>;
    /// How `up` starts this backend's machines.
    fn start_order(&self) -> StartOrder {
        StartOrder::InOrder
    }
    /// True when `up` starts a machine that has neither services nor prestart hooks (a VM is
    /// the machine itself).
    fn starts_without_services(&self) -> bool {
        false
    }
    /// Makes the machine hold exactly `entry` (a committed stage). `Ok(false)`: the entry is damaged.
    fn restore(&self, m: &MachineContext, entry: &Entry) -> Result<bool>;
    /// True when an entry is usable only with the entries below it (libvirt overlays): a remote
    /// pull then fetches every missing stage from the first, never just the newest.
    fn chained(&self) -> bool {
        false
    }
    /// The store entry `entry`'s artifact cannot be used without (an overlay's parent disk);
    /// `cache gc` never removes it while `entry` stays.
    fn needs_entry(&self, _entry: &Entry) -> Option<String> {
        None
    }
    /// Checks that an entry just pulled from a remote can be used on this host (a libvirt
    /// overlay needs the very base image it was built on); an error says why not.
    fn check_pulled(&self, _m: &MachineContext, _entry: &Entry) -> Result<()> {
        Ok(())
    }
    /// Makes the machine empty, as before its first stage.
    fn reset(&self, m: &MachineContext) -> Result<()>;
    /// Runs one step; every output line goes to `on_line`. Returns the step's exit code.
    fn run_step(
        &self,
        m: &MachineContext,
        ctx: &StepContext,
        step: &str,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<crate::process::StepEnd>;
    /// Writes the machine's current content into `pending`'s artifact.
    fn snapshot(
        &self,
        m: &MachineContext,
        pending: &Pending,
        parent: Option<&Entry>,
    ) -> Result<(Vec<TreeEntry>, u64)>;
    /// Called once `entry` (built from the machine's current content) is committed: the machine
    /// now holds it. Nothing to do for backends whose machine is its own content.
    fn committed(&self, _m: &MachineContext, _entry: &Entry) -> Result<()> {
        Ok(())
    }
    /// A stage failed: release what `run_step` set up for it (a build VM).
    fn abandon(&self, _m: &MachineContext) {}
    /// What the last `start` of the machine has to tell a person (a memory state refused, the
    /// machine booted instead), printed as warnings; each is said once.
    fn warnings(&self, _m: &MachineContext) -> Vec<String> {
        Vec::new()
    }
    /// Runs prestart hooks and starts services, waiting for each to be ready.
    fn start(&self, m: &MachineContext, runtime: &Runtime) -> Result<RunningServices>;
    /// Stops, starts or restarts some services of a running machine, one at a time, with extra
    /// environment (a rolling upgrade restarts each API on the new code this way).
    fn control(
        &self,
        m: &MachineContext,
        runtime: &Runtime,
        control: ServiceControl,
        names: &[String],
        extra_env: &BTreeMap<String, String>,
    ) -> Result<()>;
    /// True while everything `start` started still runs (`up` of an environment already up
    /// then leaves it as it is; `status` says "up").
    fn is_up(&self, _m: &MachineContext, running: &RunningServices) -> bool {
        !running.services.is_empty()
            && running
                .services
                .iter()
                .all(|s| crate::process::group_alive(s.pid))
    }
    /// True while anything `start` started still runs (a build of the machine is refused).
    fn runs_anything(&self, _m: &MachineContext, running: &RunningServices) -> bool {
        running
            .services
            .iter()
            .any(|s| crate::process::group_alive(s.pid))
    }
    /// `down` of a machine that was built but never started: removes what the build kept of it
    /// outside the store (vagrant: the stopped domain holding its snapshots).
    fn release(&self, _m: &MachineContext) {}
    /// Stops what `start` started. Returns the names of services that had to be killed.
    fn stop(&self, m: &MachineContext, running: &RunningServices) -> Vec<String>;
    /// How to reach the running machine over SSH. `Ok(None)`: this backend's machines have no
    /// SSH (run commands with `envbuild exec`); an error says how to bring the machine up.
    fn ssh_target(&self, _m: &MachineContext) -> Result<Option<SshTarget>> {
        Ok(None)
    }
}
