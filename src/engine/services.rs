//! Starting and stopping an environment's machines (`up`, `down`).

use std::collections::BTreeMap;

use super::Workspace;
use super::build::{BuildReport, build, waves};
use crate::backend::{self, RuntimeContext};
use crate::error::{Error, Result};
use crate::key::StageKey;
use crate::spec::model::{Environment, Machine};
use crate::state::{MachineState, RunningServices};
use crate::ui::Progress;

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
