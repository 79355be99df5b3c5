//! Starting and stopping an environment's machines (`up`, `down`).

use super::Workspace;
use super::build::{BuildReport, build, waves};
use super::lock::EnvLock;
use super::workspace::MachineHandle;
use crate::backend::{Runtime, StartOrder};
use crate::error::{Error, Result};
use crate::key::StageKey;
use crate::spec::model::Environment;
use crate::state::RunningServices;
use crate::ui::Progress;

/// What services of `env` are started with: its vars and its generated secrets.
pub fn runtime(ws: &Workspace, env: &Environment) -> Result<Runtime> {
    Ok(Runtime {
        vars: env
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect(),
        secrets: ws.state.secrets(env)?,
    })
}

/// What `up` does with an environment that is already up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfUp {
    /// Leave it as it is when it runs its current build (`envbuild up`).
    Reuse,
    /// Fail: the caller must start services itself (a test's deploy phase).
    Refuse,
}

/// Builds, then starts every machine's services. An environment that is already up with its
/// current build is left as it is (`IfUp::Reuse`) or refused; one running an older build must
/// be taken down first.
pub fn up(
    ws: &Workspace,
    lock: &EnvLock,
    env: &Environment,
    keys: &[StageKey],
    if_up: IfUp,
    progress: &Progress,
) -> Result<(BuildReport, Vec<(String, RunningServices)>)> {
    debug_assert_eq!(lock.env, env.name);
    if if_up == IfUp::Refuse
        && let Some(machines) = up_machines(ws, env)?.first()
    {
        return Err(Error::Failed(format!(
            "{machines} is already up: this run did not start it, so it cannot deploy it"
        ))
        .fix(format!("take it down first (`envbuild down {}`)", env.name)));
    }
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
    let report = build(ws, lock, env, keys, progress)?;
    let runtime = runtime(ws, env)?;
    let mut started: Vec<(MachineHandle, RunningServices)> = Vec::new();
    // Machines of a backend that starts in parallel (VMs: a minute or more each to boot) start
    // at once; the others one after the other, in the spec's order.
    for wave in waves(env) {
        let handles = wave
            .iter()
            .map(|machine| MachineHandle::new(ws, env, machine))
            .collect::<Result<Vec<_>>>()?;
        let parallel = |h: &MachineHandle| h.backend.start_order() == StartOrder::Parallel;
        let results: Vec<Result<Option<(MachineHandle, RunningServices)>>> =
            std::thread::scope(|scope| {
                let (at_once, in_order): (Vec<_>, Vec<_>) =
                    handles.into_iter().partition(|h| parallel(h));
                let spawned: Vec<_> = at_once
                    .into_iter()
                    .map(|handle| {
                        let runtime = &runtime;
                        scope.spawn(move || start_machine(handle, runtime, progress))
                    })
                    .collect();
                let mut results = Vec::new();
                for handle in in_order {
                    let result = start_machine(handle, &runtime, progress);
                    let failed = result.is_err();
                    results.push(result);
                    if failed {
                        break;
                    }
                }
                results.extend(
                    spawned
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
            for (handle, running) in started.iter().rev() {
                handle.backend.stop(&handle.context(), running);
                let _ = handle.state.set_services(None);
            }
            return Err(e);
        }
    }
    Ok((
        report,
        started
            .into_iter()
            .map(|(handle, running)| (handle.machine.name.clone(), running))
            .collect(),
    ))
}

/// Whether `up` starts this machine: it has services or prestart hooks, or its backend starts
/// a machine without them (a VM is the machine).
fn started_by_up(handle: &MachineHandle) -> bool {
    !handle.machine.services.is_empty()
        || !handle.machine.prestart.is_empty()
        || handle.backend.starts_without_services()
}

/// Starts one machine's services (a VM: boots it); `None` for a machine with nothing to start.
fn start_machine<'a>(
    handle: MachineHandle<'a>,
    runtime: &Runtime,
    progress: &Progress,
) -> Result<Option<(MachineHandle<'a>, RunningServices)>> {
    if !started_by_up(&handle) {
        return Ok(None);
    }
    let state = &handle.state;
    let mut marker = state.marker();
    marker.pristine = false;
    state.set_marker(&marker)?;
    let bar = progress.stage(handle.context().label(), "starting services");
    let started = handle.backend.start(&handle.context(), runtime);
    for warning in handle.backend.warnings(&handle.context()) {
        progress.warn(&warning);
    }
    match started {
        Ok(running) => {
            state.set_services(Some(&running))?;
            bar.finish("up");
            Ok(Some((handle, running)))
        }
        Err(e) => {
            bar.finish("failed");
            Err(e)
        }
    }
}

/// The running services of `env` if every machine `up` starts runs them all, from the build
/// its spec describes now.
fn already_up(
    ws: &Workspace,
    env: &Environment,
    keys: &[StageKey],
) -> Result<Option<Vec<(String, RunningServices)>>> {
    let mut running = Vec::new();
    for machine in &env.machines {
        let handle = MachineHandle::new(ws, env, machine)?;
        // Prestart hooks alone do not make a machine count here, as before.
        if machine.services.is_empty() && !handle.backend.starts_without_services() {
            continue;
        }
        let Some(services) = handle.state.services() else {
            return Ok(None);
        };
        if !handle.backend.is_up(&handle.context(), &services) {
            return Ok(None);
        }
        let last = keys
            .iter()
            .rfind(|k| k.machine == machine.name)
            .map(|k| k.key.as_str());
        if last.is_some() && handle.state.marker().key.as_deref() != last {
            return Err(Error::input(
                format!("{} is running an older build", handle.context().label()),
                format!("run `envbuild down {}` first", env.name),
            ));
        }
        running.push((machine.name.clone(), services));
    }
    Ok((!running.is_empty()).then_some(running))
}

/// The machines of `env` (as `env/machine`) where anything `up` started still runs.
pub fn up_machines(ws: &Workspace, env: &Environment) -> Result<Vec<String>> {
    let mut up = Vec::new();
    for machine in &env.machines {
        let handle = MachineHandle::new(ws, env, machine)?;
        if let Some(services) = handle.state.services()
            && handle.backend.runs_anything(&handle.context(), &services)
        {
            up.push(handle.context().label());
        }
    }
    Ok(up)
}

/// Stops every service of `env`; returns (machine, service) pairs that had to be killed.
pub fn down(ws: &Workspace, lock: &EnvLock, env: &Environment) -> Result<Vec<(String, String)>> {
    debug_assert_eq!(lock.env, env.name);
    let mut killed = Vec::new();
    for machine in env.machines.iter().rev() {
        let handle = MachineHandle::new(ws, env, machine)?;
        if let Some(running) = handle.state.services() {
            for name in handle.backend.stop(&handle.context(), &running) {
                killed.push((machine.name.clone(), name));
            }
            handle.state.set_services(None)?;
        } else {
            handle.backend.release(&handle.context());
        }
    }
    Ok(killed)
}
