//! Where machines live. One trait, one module per backend: local (host folders and processes)
//! and libvirt (VMs with a qcow2 overlay per stage). Vagrant machines are accepted by the spec
//! and refused at build time with a clear message.

pub mod libvirt;
pub mod local;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::spec::model::{BackendKind, Machine};
use crate::state::{MachineState, RunningServices};
use crate::store::TreeEntry;
use crate::store::{Entry, Pending};

/// What a backend needs to run one stage's steps.
pub struct StepContext<'a> {
    pub state: &'a MachineState,
    /// The stage's inputs, templates and sources, as a read-only folder.
    pub inputs: &'a Path,
    pub env: BTreeMap<String, String>,
    pub deadline: Instant,
}

/// What a backend needs to start a machine's services.
pub struct RuntimeContext<'a> {
    pub machine: &'a Machine,
    pub state: &'a MachineState,
    pub vars: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

pub trait Backend: Sync {
    /// Checks that the host has what the machine needs; names the package to install if not.
    fn check_host(&self, machine: &Machine) -> Result<()>;
    /// Makes the machine hold exactly `entry` (a committed stage). `Ok(false)`: the entry is damaged.
    fn restore(&self, state: &MachineState, entry: &Entry) -> Result<bool>;
    /// True when an entry is usable only with the entries below it (libvirt overlays): a remote
    /// pull then fetches every missing stage from the first, never just the newest.
    fn chained(&self) -> bool {
        false
    }
    /// Checks that an entry just pulled from a remote can be used on this host (a libvirt
    /// overlay needs the very base image it was built on); an error says why not.
    fn check_pulled(&self, _state: &MachineState, _entry: &Entry) -> Result<()> {
        Ok(())
    }
    /// Makes the machine empty, as before its first stage.
    fn reset(&self, state: &MachineState) -> Result<()>;
    /// Runs one step; every output line goes to `on_line`. Returns the step's exit code.
    fn run_step(
        &self,
        ctx: &StepContext,
        step: &str,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<crate::process::StepEnd>;
    /// Writes the machine's current content into `pending`'s artifact.
    fn snapshot(
        &self,
        state: &MachineState,
        pending: &Pending,
        parent: Option<&Entry>,
    ) -> Result<(Vec<TreeEntry>, u64)>;
    /// Called once `entry` (built from the machine's current content) is committed: the machine
    /// now holds it. Nothing to do for backends whose machine is its own content.
    fn committed(&self, _state: &MachineState, _entry: &Entry) -> Result<()> {
        Ok(())
    }
    /// A stage failed: release what `run_step` set up for it (a build VM).
    fn abandon(&self, _state: &MachineState) {}
    /// Runs prestart hooks and starts services, waiting for each to be ready.
    fn start(&self, ctx: &RuntimeContext) -> Result<RunningServices>;
    /// Stops, starts or restarts some services of a running machine, one at a time, with extra
    /// environment (a rolling upgrade restarts each API on the new code this way).
    fn control(
        &self,
        ctx: &RuntimeContext,
        control: ServiceControl,
        names: &[String],
        extra_env: &BTreeMap<String, String>,
    ) -> Result<()>;
    /// True while everything `start` started still runs (`up` of an environment already up
    /// then leaves it as it is).
    fn is_running(&self, _state: &MachineState, running: &RunningServices) -> bool {
        !running.services.is_empty()
            && running
                .services
                .iter()
                .all(|s| crate::process::group_alive(s.pid))
    }
    /// Stops what `start` started. Returns the names of services that had to be killed.
    fn stop(&self, state: &MachineState, running: &RunningServices) -> Vec<String>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceControl {
    Stop,
    Start,
    Restart,
}

pub fn for_kind(kind: BackendKind) -> Result<&'static dyn Backend> {
    match kind {
        BackendKind::Local => Ok(&local::LocalBackend),
        BackendKind::Libvirt => Ok(&libvirt::BACKEND),
        other => Err(Error::Input(format!(
            "the {} backend is not available in this version of envbuild; use backend = \"local\" or \"libvirt\"",
            other.as_str()
        ))),
    }
}
