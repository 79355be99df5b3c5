//! Plans and runs builds: compute keys, find what the store has, restore the newest cached stage
//! of each machine, run the missing stages and commit each one, then start services.

pub mod progress;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::backend::{self, Backend, RuntimeContext, StepContext};
use crate::error::{Error, IoContext, Result};
use crate::key::explain::{Reason, explain};
use crate::key::fingerprint::FingerprintCache;
use crate::key::{self, StageKey};
use crate::process::StepEnd;
use crate::spec::model::{Environment, Machine, Stage};
use crate::spec::var_env_name;
use crate::state::{MachineState, Marker, RunningServices, State};
use crate::store::lock::FileLock;
use crate::store::{self, Entry, Manifest, Store, remove_tree};
use progress::Progress;

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
        if pid.is_none_or(|pid| !store::process_alive(pid)) {
            let _ = remove_tree(&item.path());
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub env: String,
    pub machines: Vec<MachinePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MachinePlan {
    pub name: String,
    pub description: Option<String>,
    pub backend: String,
    pub base: crate::spec::model::Base,
    pub resources: crate::spec::model::Resources,
    pub stages: Vec<StagePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    pub name: String,
    pub description: Option<String>,
    pub key: String,
    pub cached: bool,
    /// The first remote cache (in lookup order) that has it, when the local store does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Why it will be built; filled for stages that are not cached when explaining.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

pub fn plan(
    ws: &Workspace,
    env: &Environment,
    keys: &[StageKey],
    with_reasons: bool,
) -> Result<Plan> {
    let index = ws.store.index()?;
    let machines = env
        .machines
        .iter()
        .map(|machine| MachinePlan {
            name: machine.name.clone(),
            description: machine.description.clone(),
            backend: machine.backend.as_str().to_string(),
            base: machine.base.clone(),
            resources: machine.resources.clone(),
            stages: keys
                .iter()
                .filter(|k| k.machine == machine.name)
                .map(|k| {
                    let cached = index.contains_key(&k.key);
                    let remote = if cached {
                        None
                    } else {
                        ws.remotes.holder(&k.key).map(|r| r.url.to_string())
                    };
                    let reasons = if with_reasons && !cached {
                        let before = ws.store.newest_for(&index, &env.name, &k.machine, &k.stage);
                        explain(before.as_ref().map(|m| &m.material), &k.material)
                    } else {
                        Vec::new()
                    };
                    StagePlan {
                        name: k.stage.clone(),
                        description: machine
                            .stages
                            .iter()
                            .find(|s| s.name == k.stage)
                            .and_then(|s| s.description.clone()),
                        key: k.key.clone(),
                        cached,
                        remote,
                        reasons,
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Plan {
        env: env.name.clone(),
        machines,
    })
}

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
    env: &Environment,
    keys: &[StageKey],
    progress: &Progress,
) -> Result<BuildReport> {
    let started = Instant::now();
    for machine in &env.machines {
        let backend = backend::for_kind(machine.backend)?;
        backend.check_host(machine)?;
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
fn waves(env: &Environment) -> Vec<Vec<&Machine>> {
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
    let backend = backend::for_kind(machine.backend)?;
    let state = ws.state.machine(&env.name, &machine.name)?;
    let label = format!("{}/{}", env.name, machine.name);
    let _machine_lock = FileLock::acquire(&state.lock_file(), || {
        progress.note(&format!(
            "{label}: waiting for another envbuild using this machine"
        ))
    })?;
    if state.services().is_some_and(|s| {
        s.services
            .iter()
            .any(|s| crate::process::group_alive(s.pid))
    }) {
        return Err(Error::Input(format!(
            "{label} is running; stop it first with `envbuild down {}`",
            env.name
        )));
    }
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
        &ws.store,
        &ws.remotes,
        &keys,
        progress,
        backend
            .chained()
            .then_some(&|entry: &Entry| backend.check_pulled(&state, entry)),
    );
    // Replay: the newest stage the store has (or the live machine already holds).
    let marker = state.marker();
    let index = ws.store.index()?;
    let mut start = 0;
    for (i, stage_key) in keys.iter().enumerate().rev() {
        let Some(entry) = index.get(&stage_key.key) else {
            continue;
        };
        let t = Instant::now();
        let current = marker.pristine
            && marker.key.as_deref() == Some(stage_key.key.as_str())
            && state.root().is_dir();
        if !current && !restore_or_quarantine(ws, backend, &state, entry, progress)? {
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
        backend.reset(&state)?;
    }

    for i in start..keys.len() {
        let stage_key = keys[i];
        let stage = &machine.stages[i];
        let t = Instant::now();
        let _key_lock = ws.store.lock(&stage_key.key, || {
            progress.note(&format!(
                "{label}/{}: waiting for another build of this stage",
                stage.name
            ))
        })?;
        if let Some(entry) = ws.store.find(&stage_key.key)? {
            if restore_or_quarantine(ws, backend, &state, &entry, progress)? {
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
                    backend.reset(&state)?;
                    true
                }
                Some(p) => match ws.store.find(&keys[p].key)? {
                    Some(parent) => restore_or_quarantine(ws, backend, &state, &parent, progress)?,
                    None => false,
                },
            };
            if !parent_restored {
                return Err(Error::Failed(format!(
                    "{label}/{}: a cached entry was damaged and quarantined, and the stage before it could not be restored; run the build again",
                    stage.name
                )));
            }
        }
        let parent = if i == 0 {
            None
        } else {
            ws.store.find(&keys[i - 1].key)?
        };
        let steps_run = build_stage(
            ws,
            backend,
            env,
            machine,
            stage,
            stage_key,
            parent.as_ref(),
            &state,
            progress,
        )?;
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
    ws: &Workspace,
    backend: &dyn Backend,
    state: &MachineState,
    entry: &Entry,
    _progress: &Progress,
) -> Result<bool> {
    state.set_marker(&Marker::default())?;
    if backend.restore(state, entry)? {
        return Ok(true);
    }
    let (moved, problems) = ws.store.quarantine_damaged(entry)?;
    // Straight to stderr so that -q does not hide it, until the engine has a warning channel.
    eprintln!(
        "warning: cache entry {} does not match its digests (tampered or damaged): {}; moved to {} and not used, the stage is built again",
        entry.name,
        problems.join("; "),
        moved.display()
    );
    Ok(false)
}

static INPUTS_SEQ: AtomicU64 = AtomicU64::new(0);

#[allow(clippy::too_many_arguments)]
fn build_stage(
    ws: &Workspace,
    backend: &dyn Backend,
    env: &Environment,
    machine: &Machine,
    stage: &Stage,
    stage_key: &StageKey,
    parent: Option<&Entry>,
    state: &MachineState,
    progress: &Progress,
) -> Result<usize> {
    let started = Instant::now();
    let label = format!("{}/{}/{}", env.name, machine.name, stage.name);
    state.set_marker(&Marker::default())?;
    let pending = ws.store.begin(&stage_key.key)?;
    let inputs = ws.state.root.join("tmp").join(format!(
        "inputs.{}.{}",
        std::process::id(),
        INPUTS_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _inputs_guard = RemoveOnDrop(inputs.clone());
    prepare_inputs(ws, env, stage, &inputs)?;

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
        state,
        inputs: &inputs,
        env: step_env,
        deadline: started + stage.timeout,
    };

    let mut log = store::log::StageLog::create(&pending.log())?;
    let bar = progress.stage(label.clone(), "building");
    for (n, step) in stage.steps.iter().enumerate() {
        use std::io::Write;
        let _ = writeln!(log, "$ {step}");
        let end = backend.run_step(&ctx, step, &mut |line: &str| {
            let _ = writeln!(log, "{line}");
            bar.line(line);
        })?;
        if end != StepEnd::Exited(0) {
            let _ = log.finish();
            backend.abandon(state);
            bar.finish("failed");
            let kept = state.logs().join(format!("{}.failed.log", stage.name));
            let _ = std::fs::create_dir_all(state.logs());
            let _ = std::fs::copy(pending.log(), &kept);
            let why = match end {
                StepEnd::TimedOut => format!("timed out after {}s", stage.timeout.as_secs()),
                StepEnd::Aborted => "was interrupted".to_string(),
                StepEnd::Exited(code) => format!("exited with status {code}"),
            };
            return Err(Error::Failed(format!(
                "stage {label} failed: step {} `{}` {why}.\n  last lines:\n{}\n  full log: {}\n  Nothing was cached for this stage; earlier stages stay cached.",
                n + 1,
                step.lines().next().unwrap_or(""),
                crate::process::tail(&kept, 15),
                kept.display()
            )));
        }
    }
    log.finish()
        .ctx(|| format!("writing {}", pending.log().display()))?;
    let (tree, size) = backend.snapshot(state, &pending, parent)?;
    let manifest = Manifest {
        key: stage_key.key.clone(),
        parent: stage_key.material.parent.clone(),
        env: env.name.clone(),
        machine: machine.name.clone(),
        stage: stage.name.clone(),
        backend: machine.backend.as_str().to_string(),
        material: stage_key.material.clone(),
        artifact_digest: crate::key::digest::tree_digest(&tree),
        files: tree.len() as u64,
        size,
        created: store::now_rfc3339(),
        created_unix: store::now_unix(),
        duration_ms: started.elapsed().as_millis() as u64,
        envbuild_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let entry = ws.store.commit(pending, &manifest, &tree)?;
    backend.committed(state, &entry)?;
    state.set_marker(&Marker {
        key: Some(stage_key.key.clone()),
        stage: Some(stage.name.clone()),
        pristine: true,
    })?;
    bar.finish("built");
    Ok(stage.steps.len())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}

/// Copies the stage's inputs, renders its templates and fetches its sources into `dir`.
fn prepare_inputs(ws: &Workspace, env: &Environment, stage: &Stage, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    for input in &stage.inputs {
        let from = env.dir.join(input);
        let to = dir.join(input);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        }
        if from.is_dir() {
            std::fs::create_dir_all(&to).ctx(|| format!("creating {}", to.display()))?;
            crate::key::digest::walk(&from, &mut |relative, full, meta| {
                let out = to.join(relative);
                if meta.is_dir() {
                    std::fs::create_dir_all(&out).ctx(|| format!("creating {}", out.display()))
                } else if meta.file_type().is_symlink() {
                    let target =
                        std::fs::read_link(full).ctx(|| format!("reading {}", full.display()))?;
                    std::os::unix::fs::symlink(target, &out)
                        .ctx(|| format!("creating {}", out.display()))
                } else {
                    std::fs::copy(full, &out)
                        .map(|_| ())
                        .ctx(|| format!("copying {}", full.display()))
                }
            })?;
        } else {
            std::fs::copy(&from, &to).ctx(|| format!("copying {}", from.display()))?;
        }
    }
    for (relative, text) in key::rendered_templates(env, stage)? {
        let to = dir.join(&relative);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&to, text).ctx(|| format!("writing {}", to.display()))?;
    }
    for source in &stage.sources {
        let path = fetch_source(ws, source)?;
        let to = dir.join("sources").join(&source.name);
        std::fs::create_dir_all(dir.join("sources")).ctx(|| "creating sources/".into())?;
        std::fs::copy(&path, &to).ctx(|| format!("copying {}", path.display()))?;
    }
    Ok(())
}

/// A pinned source, downloaded once into the store's sources/ folder and checked by sha256.
fn fetch_source(ws: &Workspace, source: &crate::spec::model::Source) -> Result<PathBuf> {
    let dir = ws.store.root.join(store::LAYOUT).join("sources");
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let path = dir.join(&source.sha256);
    if path.is_file() && crate::key::digest::sha256_file(&path)? == source.sha256 {
        return Ok(path);
    }
    let partial = dir.join(format!("{}.{}.part", source.sha256, std::process::id()));
    let _guard = RemoveOnDrop(partial.clone());
    if let Some(local) = source.url.strip_prefix("file://") {
        std::fs::copy(local, &partial).ctx(|| format!("copying source {}", source.url))?;
    } else {
        let curl = crate::process::find_program("curl")
            .ok_or_else(|| Error::Input("http(s) sources are downloaded with curl, which is missing.\n  fix: apt-get install curl".into()))?;
        let ok = std::process::Command::new(curl)
            .args(["-fsSL", "-o"])
            .arg(&partial)
            .arg(&source.url)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(Error::Failed(format!(
                "downloading source {} from {} failed",
                source.name, source.url
            )));
        }
    }
    let got = crate::key::digest::sha256_file(&partial)?;
    if got != source.sha256 {
        return Err(Error::Input(format!(
            "source {} from {} has sha256 {got}, but the spec pins {}.\n  fix: check the URL, or update the pin if the new file is trusted",
            source.name, source.url, source.sha256
        )));
    }
    std::fs::rename(&partial, &path).ctx(|| format!("storing {}", path.display()))?;
    Ok(path)
}

/// Builds, then starts every machine's services. An environment that is already up with its
/// current build is left as it is; one running an older build must be taken down first.
pub fn up(
    ws: &Workspace,
    env: &Environment,
    keys: &[StageKey],
    progress: &Progress,
) -> Result<(BuildReport, Vec<(String, RunningServices)>)> {
    if let Some(running) = already_up(ws, env, keys)? {
        progress.note(&format!("{} is already up", env.name));
        return Ok((
            BuildReport {
                env: env.name.clone(),
                ..Default::default()
            },
            running,
        ));
    }
    let report = build(ws, env, keys, progress)?;
    let secrets = ws.state.secrets(env)?;
    let vars: BTreeMap<String, String> = env
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let mut started: Vec<Started> = Vec::new();
    // VMs that do not wait for each other boot in parallel (a minute or more each); local
    // machines start one after the other, in the spec's order, as before.
    for wave in waves(env) {
        let is_vm = |m: &Machine| m.backend == crate::spec::model::BackendKind::Libvirt;
        let results: Vec<Result<Option<Started>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .filter(|m| is_vm(m))
                .map(|machine| {
                    let (vars, secrets) = (vars.clone(), secrets.clone());
                    scope.spawn(move || start_machine(ws, env, machine, vars, secrets, progress))
                })
                .collect();
            let mut results = Vec::new();
            for machine in wave.iter().filter(|m| !is_vm(m)) {
                let result =
                    start_machine(ws, env, machine, vars.clone(), secrets.clone(), progress);
                let failed = result.is_err();
                results.push(result);
                if failed {
                    break;
                }
            }
            results.extend(
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a machine start panicked")),
            );
            results
        });
        let mut failure = None;
        for result in results {
            match result {
                Ok(Some(up)) => started.push(up),
                Ok(None) => {}
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            // Leave nothing half up: stop what this `up` started.
            for (earlier, state, running) in started.iter().rev() {
                if let Ok(their_backend) = backend::for_kind(earlier.backend) {
                    their_backend.stop(state, running);
                }
                let _ = state.set_services(None);
            }
            return Err(e);
        }
    }
    Ok((
        report,
        started
            .into_iter()
            .map(|(machine, _, running)| (machine.name.clone(), running))
            .collect(),
    ))
}

/// A machine `up` started, with what `down` needs to stop it.
type Started<'a> = (&'a Machine, MachineState, RunningServices);

/// Starts one machine's services (a VM: boots it); `None` for a machine with nothing to start.
fn start_machine<'a>(
    ws: &Workspace,
    env: &Environment,
    machine: &'a Machine,
    vars: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    progress: &Progress,
) -> Result<Option<Started<'a>>> {
    // A VM is started by `up` even without services: it is the machine.
    if machine.services.is_empty()
        && machine.prestart.is_empty()
        && machine.backend != crate::spec::model::BackendKind::Libvirt
    {
        return Ok(None);
    }
    let backend = backend::for_kind(machine.backend)?;
    let state = ws.state.machine(&env.name, &machine.name)?;
    let mut marker = state.marker();
    marker.pristine = false;
    state.set_marker(&marker)?;
    let bar = progress.stage(
        format!("{}/{}", env.name, machine.name),
        "starting services",
    );
    let ctx = RuntimeContext {
        machine,
        state: &state,
        vars,
        secrets,
    };
    match backend.start(&ctx) {
        Ok(running) => {
            state.set_services(Some(&running))?;
            bar.finish("up");
            Ok(Some((machine, state, running)))
        }
        Err(e) => {
            bar.finish("failed");
            Err(e)
        }
    }
}

/// The running services of `env` if every machine with services runs them all, from the build
/// its spec describes now.
fn already_up(
    ws: &Workspace,
    env: &Environment,
    keys: &[StageKey],
) -> Result<Option<Vec<(String, RunningServices)>>> {
    let mut running = Vec::new();
    let started_by_up = |m: &Machine| {
        !m.services.is_empty() || m.backend == crate::spec::model::BackendKind::Libvirt
    };
    for machine in env.machines.iter().filter(|m| started_by_up(m)) {
        let state = ws.state.machine(&env.name, &machine.name)?;
        let Some(services) = state.services() else {
            return Ok(None);
        };
        if !backend::for_kind(machine.backend)?.is_running(&state, &services) {
            return Ok(None);
        }
        let last = keys
            .iter()
            .rfind(|k| k.machine == machine.name)
            .map(|k| k.key.as_str());
        if last.is_some() && state.marker().key.as_deref() != last {
            return Err(Error::Input(format!(
                "{}/{} is running an older build; run `envbuild down {}` first",
                env.name, machine.name, env.name
            )));
        }
        running.push((machine.name.clone(), services));
    }
    Ok((!running.is_empty()).then_some(running))
}

/// Stops every service of `env`; returns (machine, service) pairs that had to be killed.
pub fn down(ws: &Workspace, env: &Environment) -> Result<Vec<(String, String)>> {
    let mut killed = Vec::new();
    for machine in env.machines.iter().rev() {
        let backend = backend::for_kind(machine.backend)?;
        let state = ws.state.machine(&env.name, &machine.name)?;
        if let Some(running) = state.services() {
            for name in backend.stop(&state, &running) {
                killed.push((machine.name.clone(), name));
            }
            state.set_services(None)?;
        }
    }
    Ok(killed)
}
