//! The places a command works with (specs, store, state, remote caches, backends), opened once
//! from the run's [`Settings`].
//!
//! The store is created by the first operation that uses it, never by opening the workspace:
//! a command refused for bad input (an unknown environment, a broken spec) leaves no store
//! behind.

use std::path::Path;
use std::sync::OnceLock;

use crate::backend::{Backends, MachineContext};
use crate::error::Result;
use crate::key::fingerprint::FingerprintCache;
use crate::key::{self, StageKey};
use crate::remote::Remotes;
use crate::settings::Settings;
use crate::spec::model::{Environment, Machine};
use crate::state::{MachineState, State};
use crate::store::{Store, remove_tree};
use crate::ui::Progress;

pub struct Workspace {
    pub settings: Settings,
    store: OnceLock<Store>,
    pub state: State,
    pub fingerprints: FingerprintCache,
    /// Remote caches asked for stages the store lacks (docs/remote-cache.md).
    pub remotes: Remotes,
    pub backends: Backends,
}

impl Workspace {
    pub fn open(mut settings: Settings) -> Result<Workspace> {
        let state = State {
            root: settings.state.clone(),
        };
        clean_stale_tmp(&state.root.join("tmp"));
        Ok(Workspace {
            fingerprints: FingerprintCache::load(Store::fingerprint_file(&settings.store)),
            backends: Backends::new(&settings),
            remotes: std::mem::take(&mut settings.remotes),
            store: OnceLock::new(),
            state,
            settings,
        })
    }

    /// The stage store, created on first use.
    pub fn store(&self) -> Result<&Store> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let store = Store::open(&self.settings.store)?;
        Ok(self.store.get_or_init(|| store))
    }

    /// The environments folder.
    pub fn envs(&self) -> Result<&Path> {
        self.settings.envs()
    }

    pub fn progress(&self) -> Progress {
        Progress::new(self.settings.quiet, self.settings.heartbeat)
    }

    pub fn load(&self, name: &str, overrides: &[(String, String)]) -> Result<Environment> {
        crate::spec::load(self.envs()?, name, overrides)
    }

    pub fn keys(&self, env: &Environment) -> Result<Vec<StageKey>> {
        // A kind of machine this envbuild has no backend for adds nothing: `plan` and `hash`
        // still answer, `build` refuses it.
        let material = |machine: &Machine| {
            self.backends
                .get(machine.backend)
                .map(|b| b.base_material(machine))
                .unwrap_or_default()
        };
        let keys = key::stage_keys(env, &self.fingerprints, &material)?;
        tracing::debug!(env = %env.name, files_read = *self.fingerprints.reads.lock().unwrap(), "computed stage keys");
        // Held until the command ends: `cache gc` beside it keeps these entries (and what it
        // commits), which it restores from, builds on, pushes or exports (store/lease.rs).
        self.store()?.hold(keys.iter().map(|k| k.key.clone()))?;
        self.fingerprints.save();
        Ok(keys)
    }

    /// The state folder of one machine (created if need be).
    pub fn machine_state(&self, env: &Environment, machine: &Machine) -> Result<MachineState> {
        self.state.machine(&env.name, &machine.name)
    }
}

/// The fingerprints learnt before the store existed are saved once it does.
impl Drop for Workspace {
    fn drop(&mut self) {
        if self.store.get().is_some() {
            self.fingerprints.save();
        }
    }
}

/// A machine of the workspace with its state folder and its backend, ready for backend calls.
pub struct MachineHandle<'a> {
    pub state: MachineState,
    pub env: &'a Environment,
    pub machine: &'a Machine,
    pub backend: &'a dyn crate::backend::Backend,
}

impl<'a> MachineHandle<'a> {
    pub fn new(ws: &'a Workspace, env: &'a Environment, machine: &'a Machine) -> Result<Self> {
        Ok(MachineHandle {
            state: ws.machine_state(env, machine)?,
            env,
            machine,
            backend: ws.backends.get(machine.backend)?,
        })
    }

    pub fn context(&self) -> MachineContext<'_> {
        MachineContext {
            env: &self.env.name,
            machine: self.machine,
            state: &self.state,
        }
    }
}

/// Removes `inputs.<pid>.<n>` folders of processes that no longer exist.
fn clean_stale_tmp(dir: &Path) {
    let Ok(items) = std::fs::read_dir(dir) else {
        return;
    };
    for item in items.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let pid = name.split('.').nth(1).and_then(|p| p.parse::<i32>().ok());
        if pid.is_none_or(|pid| !crate::process::process_alive(pid)) {
            let _ = remove_tree(&item.path());
        }
    }
}
