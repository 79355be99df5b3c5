//! Builds machines: replay the newest cached stage, run the missing stages, commit each one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::Workspace;
use super::inputs::prepare_inputs;
use super::lock::EnvLock;
use super::workspace::MachineHandle;
use crate::backend::{MachineContext, StepContext};
use crate::error::{Error, IoContext, Result, StageFailure};
use crate::key::StageKey;
use crate::process::StepEnd;
use crate::spec::model::{Environment, Machine, Stage};
use crate::spec::var_env_name;
use crate::state::Marker;
use crate::store::RemoveOnDrop;
use crate::store::{Entry, Manifest, Store};
use crate::ui::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The live machine already held this stage.
    Current,
    /// Restored from the store (replay).
    Restored,
    /// Cached, and below the stage that was restored: nothing to do.
    Cached,
    /// Built by another envbuild while this one waited for the stage's lock.
    Reused,
    Built,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageOutcome {
    pub machine: String,
    pub stage: String,
    pub key: String,
    pub action: Action,
    pub seconds: f64,
    pub steps_run: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct BuildReport {
    pub env: String,
    pub stages: Vec<StageOutcome>,
    pub seconds: f64,
}

/// Builds every machine of `env`: machines that do not wait for each other in parallel.
pub fn build(
    ws: &Workspace,
    lock: &EnvLock,
    env: &Environment,
    keys: &[StageKey],
    progress: &Progress,
) -> Result<BuildReport> {
    debug_assert_eq!(lock.env, env.name);
    let started = Instant::now();
    for machine in &env.machines {
        let state = ws.state.locate(&env.name, &machine.name);
        ws.backends
            .get(machine.backend)?
            .check_host(&MachineContext {
                env: &env.name,
                machine,
                state: &state,
            })?;
    }
    let mut report = BuildReport {
        env: env.name.clone(),
        ..Default::default()
    };
    for wave in waves(env) {
        let results: Vec<Result<Vec<StageOutcome>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .map(|machine| scope.spawn(move || build_machine(ws, env, machine, keys, progress)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a machine build panicked"))
                .collect()
        });
        for result in results {
            report.stages.extend(result?);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Groups machines so that each group only waits for earlier groups.
pub(super) fn waves(env: &Environment) -> Vec<Vec<&Machine>> {
    let mut level: HashMap<&str, usize> = HashMap::new();
    for machine in &env.machines {
        let depth = machine
            .stages
            .iter()
            .flat_map(|s| s.after.iter())
            .map(|(m, _)| level.get(m.as_str()).map_or(0, |l| l + 1))
            .max()
            .unwrap_or(0);
        level.insert(&machine.name, depth);
    }
    let depth = level.values().copied().max().unwrap_or(0);
    (0..=depth)
        .map(|d| {
            env.machines
                .iter()
                .filter(|m| level[m.name.as_str()] == d)
                .collect()
        })
        .collect()
}

fn build_machine(
    ws: &Workspace,
    env: &Environment,
    machine: &Machine,
    keys: &[StageKey],
    progress: &Progress,
) -> Result<Vec<StageOutcome>> {
    let handle = MachineHandle::new(ws, env, machine)?;
    let (backend, state, m) = (handle.backend, &handle.state, handle.context());
    let label = m.label();
    if state
        .services()
        .is_some_and(|running| backend.runs_anything(&m, &running))
    {
        return Err(Error::input(
            format!("{label} is running"),
            format!("stop it first with `envbuild down {}`", env.name),
        ));
    }
    let store = ws.store()?;
    let keys: Vec<&StageKey> = keys.iter().filter(|k| k.machine == machine.name).collect();
    let mut outcomes: Vec<StageOutcome> = Vec::new();
    let outcome = |stage: &StageKey, action: Action, seconds: f64, steps_run: usize| StageOutcome {
        machine: machine.name.clone(),
        stage: stage.stage.clone(),
        key: stage.key.clone(),
        action,
        seconds,
        steps_run,
    };

    crate::remote::pull_through(
        store,
        &ws.remotes,
        &keys,
        progress,
        backend
            .chained()
            .then_some(&|entry: &Entry| backend.check_pulled(&m, entry)),
    );
    // Replay: the newest stage the store has (or the live machine already holds).
    let marker = state.marker();
    let index = store.index()?;
    let mut start = 0;
    for (i, stage_key) in keys.iter().enumerate().rev() {
        let Some(entry) = index.get(&stage_key.key) else {
            continue;
        };
        let t = Instant::now();
        let current = marker.pristine
            && marker.key.as_deref() == Some(stage_key.key.as_str())
            && state.root().is_dir();
        if !current && !restore_or_quarantine(store, &handle, entry, progress)? {
            continue;
        }
        state.set_marker(&Marker {
            key: Some(stage_key.key.clone()),
            stage: Some(stage_key.stage.clone()),
            pristine: true,
        })?;
        for earlier in &keys[..i] {
            outcomes.push(outcome(earlier, Action::Cached, 0.0, 0));
        }
        let action = if current {
            Action::Current
        } else {
            Action::Restored
        };
        outcomes.push(outcome(stage_key, action, t.elapsed().as_secs_f64(), 0));
        start = i + 1;
        break;
    }
    if start == 0 {
        backend.reset(&m)?;
    }

    for i in start..keys.len() {
        let stage_key = keys[i];
        let stage = &machine.stages[i];
        let t = Instant::now();
        let _key_lock = store.lock(&stage_key.key, || {
            progress.note(&format!(
                "{label}/{}: waiting for another build of this stage",
                stage.name
            ))
        })?;
        if let Some(entry) = store.find(&stage_key.key)? {
            if restore_or_quarantine(store, &handle, &entry, progress)? {
                state.set_marker(&Marker {
                    key: Some(stage_key.key.clone()),
                    stage: Some(stage.name.clone()),
                    pristine: true,
                })?;
                outcomes.push(outcome(
                    stage_key,
                    Action::Reused,
                    t.elapsed().as_secs_f64(),
                    0,
                ));
                continue;
            }
            // A damaged entry was quarantined: back to the stage before it, then build this one.
            let parent_restored = match i.checked_sub(1) {
                None => {
                    backend.reset(&m)?;
                    true
                }
                Some(p) => match store.find(&keys[p].key)? {
                    Some(parent) => restore_or_quarantine(store, &handle, &parent, progress)?,
                    None => false,
                },
            };
            if !parent_restored {
                return Err(Error::Failed(format!(
                    "{label}/{}: a cached entry was damaged and quarantined, and the stage before it could not be restored",
                    stage.name
                ))
                .fix("run the build again"));
            }
        }
        let parent = if i == 0 {
            None
        } else {
            store.find(&keys[i - 1].key)?
        };
        let steps_run = build_stage(ws, &handle, stage, stage_key, parent.as_ref(), progress)?;
        outcomes.push(outcome(
            stage_key,
            Action::Built,
            t.elapsed().as_secs_f64(),
            steps_run,
        ));
    }
    Ok(outcomes)
}

fn restore_or_quarantine(
    store: &Store,
    handle: &MachineHandle,
    entry: &Entry,
    progress: &Progress,
) -> Result<bool> {
    handle.state.set_marker(&Marker::default())?;
    if handle.backend.restore(&handle.context(), entry)? {
        return Ok(true);
    }
    let (moved, problems) = store.quarantine_damaged(entry)?;
    progress.warn(&format!(
        "cache entry {} does not match its digests (tampered or damaged): {}; moved to {} and not used, the stage is built again",
        entry.name,
        problems.join("; "),
        moved.display()
    ));
    Ok(false)
}

static INPUTS_SEQ: AtomicU64 = AtomicU64::new(0);

fn build_stage(
    ws: &Workspace,
    handle: &MachineHandle,
    stage: &Stage,
    stage_key: &StageKey,
    parent: Option<&Entry>,
    progress: &Progress,
) -> Result<usize> {
    let started = Instant::now();
    let (backend, state, m) = (handle.backend, &handle.state, handle.context());
    let (env, machine) = (handle.env, handle.machine);
    let label = format!("{}/{}", m.label(), stage.name);
    state.set_marker(&Marker::default())?;
    let store = ws.store()?;
    let pending = store.begin(&stage_key.key)?;
    let inputs = ws.state.root.join("tmp").join(format!(
        "inputs.{}.{}",
        std::process::id(),
        INPUTS_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _inputs_guard = RemoveOnDrop(inputs.clone());
    prepare_inputs(ws, stage, &inputs)?;

    let mut step_env = BTreeMap::from([
        ("ENVBUILD_ENV".to_string(), env.name.clone()),
        ("ENVBUILD_MACHINE".to_string(), machine.name.clone()),
        ("ENVBUILD_STAGE".to_string(), stage.name.clone()),
    ]);
    for (name, value) in &stage.vars {
        step_env.insert(var_env_name(name), value.clone());
    }
    step_env.extend(stage.env.clone());
    let ctx = StepContext {
        inputs: &inputs,
        env: step_env,
        deadline: started + stage.timeout,
        snapshot: stage.snapshot,
    };

    let mut log = crate::store::log::StageLog::create(&pending.log())?;
    let bar = progress.stage(label.clone(), "building");
    for (n, step) in stage.steps.iter().enumerate() {
        use std::io::Write;
        let _ = writeln!(log, "$ {step}");
        let end = backend.run_step(&m, &ctx, step, &mut |line: &str| {
            let _ = writeln!(log, "{line}");
            bar.line(line);
        })?;
        if end != StepEnd::Exited(0) {
            let _ = log.finish();
            backend.abandon(&m);
            bar.finish("failed");
            let kept = state.logs().join(format!("{}.failed.log", stage.name));
            let _ = std::fs::create_dir_all(state.logs());
            let _ = std::fs::copy(pending.log(), &kept);
            let why = match end {
                StepEnd::TimedOut => format!("timed out after {}s", stage.timeout.as_secs()),
                StepEnd::Aborted => {
                    return Err(Error::Aborted(format!(
                        "stage {label} was interrupted at step {}; nothing was cached for it (log: {})",
                        n + 1,
                        kept.display()
                    )));
                }
                StepEnd::Exited(code) => format!("exited with status {code}"),
            };
            return Err(Error::Stage(Box::new(StageFailure {
                stage: label,
                step: n + 1,
                command: step.lines().next().unwrap_or("").to_string(),
                why,
                tail: crate::process::tail(&kept, 15),
                log: kept,
            })));
        }
    }
    log.finish()
        .ctx(|| format!("writing {}", pending.log().display()))?;
    let (tree, size) = backend.snapshot(&m, &pending, parent)?;
    let manifest = Manifest {
        key: stage_key.key.clone(),
        parent: stage_key.material.parent.clone(),
        env: env.name.clone(),
        machine: machine.name.clone(),
        stage: stage.name.clone(),
        backend: machine.backend.as_str().to_string(),
        material: stage_key.material.clone(),
        artifact_digest: crate::store::tree::tree_digest(&tree),
        files: tree.len() as u64,
        size,
        created: crate::clock::now_rfc3339(),
        created_unix: crate::clock::now_unix(),
        duration_ms: started.elapsed().as_millis() as u64,
        envbuild_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let entry = store.commit(pending, &manifest, &tree)?;
    backend.committed(&m, &entry)?;
    state.set_marker(&Marker {
        key: Some(stage_key.key.clone()),
        stage: Some(stage.name.clone()),
        pristine: true,
    })?;
    bar.finish("built");
    Ok(stage.steps.len())
}
