//! `cache ls|verify|gc|export|push|pull`: the store and the remote caches, as one operation each.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::Workspace;
use crate::error::{Error, IoContext, Result};
use crate::remote::{self, PushOutcome};
use crate::store::copy::HoleWriter;
use crate::store::gc::{self, Candidate, GcPlan};
use crate::store::{Entry, archive, remove_tree, tar_writer::Buffered};

/// One line of `cache ls`.
#[derive(Debug, Serialize)]
pub struct Listed {
    pub name: String,
    pub env: String,
    pub machine: String,
    pub stage: String,
    pub size: u64,
    pub created: String,
}

pub fn ls(ws: &Workspace) -> Result<Vec<Listed>> {
    let mut listed = Vec::new();
    for entry in ws.store()?.entries()? {
        let m = entry.manifest()?;
        listed.push(Listed {
            name: entry.name,
            env: m.env,
            machine: m.machine,
            stage: m.stage,
            size: m.size,
            created: m.created,
        });
    }
    Ok(listed)
}

/// An entry `cache verify` found bad.
pub struct Bad {
    pub entry: String,
    pub problems: Vec<String>,
    /// Where it was moved, with `--quarantine`.
    pub moved: Option<PathBuf>,
}

/// Checks every entry; returns how many were checked and the bad ones.
pub fn verify(ws: &Workspace, quarantine: bool) -> Result<(usize, Vec<Bad>)> {
    let store = ws.store()?;
    let entries = store.entries()?;
    let mut bad = Vec::new();
    for entry in &entries {
        let problems = store.verify(entry);
        if problems.is_empty() {
            continue;
        }
        let moved = if quarantine {
            Some(store.quarantine(entry)?)
        } else {
            None
        };
        bad.push(Bad {
            entry: entry.name.clone(),
            problems,
            moved,
        });
    }
    Ok((entries.len(), bad))
}

/// Removes the entries no current spec references, but those a running command holds (its
/// lease, or committed since it began), the `keep_recent` newest of the others and every entry
/// a kept one needs (store/gc.rs). `dry_run`: removes nothing.
pub fn gc(ws: &Workspace, keep_recent: usize, dry_run: bool) -> Result<GcPlan> {
    let mut referenced = HashSet::new();
    for name in crate::spec::list_names(ws.envs()?)? {
        let env = ws.load(&name, &[])?;
        referenced.extend(ws.keys(&env)?.into_iter().map(|k| k.key));
    }
    let store = ws.store()?;
    // Decided and detached under gc's lock, so no command writes a lease meanwhile; deleted
    // after it, so that a build starting now does not wait for the files to go.
    let (plan, doomed) = {
        let _gc = store.lock_for_gc(|| ws.progress().note("waiting for another `cache gc`"))?;
        let candidates = store
            .entries()?
            .into_iter()
            .map(|entry| Candidate {
                created: entry.manifest().map_or(0, |m| m.created_unix),
                needs: ws
                    .backends
                    .of_entry(&entry)
                    .and_then(|backend| backend.needs_entry(&entry)),
                entry,
            })
            .collect();
        let plan = gc::plan(candidates, &referenced, &store.held(), keep_recent);
        let doomed = if dry_run {
            Vec::new()
        } else {
            plan.remove
                .iter()
                .map(|entry| store.detach(entry))
                .collect::<Result<Vec<_>>>()?
        };
        (plan, doomed)
    };
    for dir in doomed {
        remove_tree(&dir).ctx(|| format!("removing {}", dir.display()))?;
    }
    Ok(plan)
}

/// Writes the cached entries of environment `name` to `output` (complete or not at all: a
/// temporary file renamed into place). Returns how many entries it holds.
pub fn export(ws: &Workspace, name: &str, output: &Path) -> Result<usize> {
    let env = ws.load(name, &[])?;
    let keys = ws.keys(&env)?;
    let index = ws.store()?.index()?;
    let entries: Vec<Entry> = keys
        .iter()
        .filter_map(|k| index.get(&k.key).cloned())
        .collect();
    if entries.is_empty() {
        return Err(Error::input(
            format!("nothing of `{}` is cached", env.name),
            format!("build it first: `envbuild build {}`", env.name),
        ));
    }
    let partial = output.with_extension("partial");
    let file = std::fs::File::create(&partial).ctx(|| format!("creating {}", partial.display()))?;
    if let Err(e) = archive::export(&entries, Buffered::new(HoleWriter::new(file))) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, output).ctx(|| format!("writing {}", output.display()))?;
    Ok(entries.len())
}

/// A 64-hex stage key, or the stage keys of an environment.
fn target_keys(ws: &Workspace, target: &str) -> Result<Vec<String>> {
    if target.len() == 64 && target.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(vec![target.to_ascii_lowercase()]);
    }
    let env = ws.load(target, &[])?;
    Ok(ws.keys(&env)?.into_iter().map(|k| k.key).collect())
}

/// Pushes the local entries of `target` (an environment or a stage key).
pub fn push(ws: &Workspace, target: &str) -> Result<Vec<PushOutcome>> {
    let keys = target_keys(ws, target)?;
    let outcomes = remote::push_keys(ws.store()?, &ws.remotes, &keys, &ws.progress())?;
    if outcomes.is_empty() {
        return Err(Error::input(
            format!("nothing of `{target}` is in the local store"),
            "build it first",
        ));
    }
    Ok(outcomes)
}

/// What `cache pull` did, key by key.
#[derive(Default)]
pub struct Pulled {
    /// Entries the local store had already.
    pub present: Vec<String>,
    pub pulled: Vec<String>,
    /// Keys no remote has.
    pub absent: usize,
    /// Remotes that refused or failed, in order.
    pub failures: Vec<Error>,
}

impl Pulled {
    /// The run's answer: the first failure, or an error when nothing was found at all.
    pub fn outcome(mut self, target: &str) -> Result<()> {
        if !self.failures.is_empty() {
            return Err(self.failures.remove(0));
        }
        if self.pulled.is_empty() && self.present.is_empty() {
            return Err(Error::input(
                format!("no remote cache has `{target}`"),
                "push it from a machine that built it (`envbuild cache push`), or build it here",
            ));
        }
        Ok(())
    }
}

/// Pulls the stages of `target` (an environment or a stage key) the store lacks.
pub fn pull(ws: &Workspace, target: &str) -> Result<Pulled> {
    if ws.remotes.pulling().next().is_none() {
        return Err(Error::input(
            "no remote cache to pull from",
            "give --cache-from URL, or add a [[cache.remote]] to the config file (docs/remote-cache.md)",
        ));
    }
    let keys = target_keys(ws, target)?;
    let store = ws.store()?;
    let index = store.index()?;
    let progress = ws.progress();
    let mut pulled = Pulled::default();
    for key in keys {
        if let Some(entry) = index.get(&key) {
            pulled.present.push(entry.name.clone());
            continue;
        }
        let (got, errors) = remote::pull_key(store, &ws.remotes, &key, &progress);
        match got {
            Some(name) => pulled.pulled.push(name),
            None if errors.is_empty() => pulled.absent += 1,
            None => {}
        }
        pulled.failures.extend(errors);
    }
    Ok(pulled)
}
