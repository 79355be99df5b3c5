//! The places a command works with (specs, store, state, remote caches), opened once.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::key::fingerprint::FingerprintCache;
use crate::key::{self, StageKey};
use crate::spec::model::Environment;
use crate::state::State;
use crate::store::{Store, remove_tree};

/// The places a command works with, opened once.
pub struct Workspace {
    pub envs: PathBuf,
    pub store: Store,
    pub state: State,
    pub fingerprints: FingerprintCache,
    /// Remote caches asked for stages the store lacks (docs/remote-cache.md).
    pub remotes: crate::remote::Remotes,
}

impl Workspace {
    pub fn open(envs: PathBuf, store_root: PathBuf, state_root: PathBuf) -> Result<Workspace> {
        let store = Store::open(&store_root)?;
        let fingerprints = FingerprintCache::load(store.fingerprint_file());
        let state = State { root: state_root };
        clean_stale_tmp(&state.root.join("tmp"));
        Ok(Workspace {
            envs,
            store,
            state,
            fingerprints,
            remotes: Default::default(),
        })
    }

    pub fn load(&self, name: &str, overrides: &[(String, String)]) -> Result<Environment> {
        crate::spec::load(&self.envs, name, overrides)
    }

    pub fn keys(&self, env: &Environment) -> Result<Vec<StageKey>> {
        let keys = key::stage_keys(env, &self.fingerprints)?;
        tracing::debug!(env = %env.name, files_read = *self.fingerprints.reads.lock().unwrap(), "computed stage keys");
        self.fingerprints.save();
        Ok(keys)
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
