//! `build`, then push what it built to the remote caches that take pushes.

use crate::engine::{self, BuildReport, EnvLock, Workspace};
use crate::error::Result;
use crate::key::StageKey;
use crate::remote::{self, PushOutcome};
use crate::spec::model::Environment;

/// What happened to the stages of a build after it, on the remote caches.
pub enum AfterBuild {
    /// No remote cache takes pushes.
    NoPush,
    /// Remote caches take pushes, but this run is read-only.
    ReadOnly,
    Pushed(Vec<PushOutcome>),
}

/// Builds `env`, then pushes its entries to every remote cache that takes pushes.
pub fn build(
    ws: &Workspace,
    lock: &EnvLock,
    env: &Environment,
    keys: &[StageKey],
) -> Result<(BuildReport, AfterBuild)> {
    let progress = ws.progress();
    let report = engine::build(ws, lock, env, keys, &progress)?;
    let remotes = &ws.remotes;
    let after = if remotes.read_only && remotes.remotes.iter().any(|r| r.push) {
        AfterBuild::ReadOnly
    } else if remotes.pushing().next().is_some() {
        let keys: Vec<String> = keys.iter().map(|k| k.key.clone()).collect();
        AfterBuild::Pushed(remote::push_keys(ws.store()?, remotes, &keys, &progress)?)
    } else {
        AfterBuild::NoPush
    };
    Ok((report, after))
}
