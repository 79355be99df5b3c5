//! `status`: each machine's stage, and whether it runs, as its backend sees it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::backend::MachineContext;
use crate::engine::Workspace;
use crate::error::Result;

#[derive(Debug, Serialize)]
pub struct MachineStatus {
    pub env: String,
    pub machine: String,
    pub stage: Option<String>,
    pub key: Option<String>,
    pub built: bool,
    /// Everything `up` started still runs (a VM: its domain exists).
    pub up: bool,
    pub ports: BTreeMap<String, u16>,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub pid: i32,
    pub running: bool,
    pub url: Option<String>,
    pub log: PathBuf,
}

/// The machines of `env`, or of every environment.
pub fn status(ws: &Workspace, env: Option<&str>) -> Result<Vec<MachineStatus>> {
    let names = match env {
        Some(name) => vec![name.to_string()],
        None => crate::spec::list_names(ws.envs()?)?,
    };
    let mut out = Vec::new();
    for name in names {
        let env = ws.load(&name, &[])?;
        for machine in &env.machines {
            let state = ws.machine_state(&env, machine)?;
            let marker = state.marker();
            let running = state.services();
            // A kind of machine this envbuild has no backend for is never up.
            let up = match (&running, ws.backends.get(machine.backend)) {
                (Some(running), Ok(backend)) => backend.is_up(
                    &MachineContext {
                        env: &env.name,
                        machine,
                        state: &state,
                    },
                    running,
                ),
                _ => false,
            };
            let running = running.unwrap_or_default();
            out.push(MachineStatus {
                env: env.name.clone(),
                machine: machine.name.clone(),
                built: marker.key.is_some(),
                stage: marker.stage,
                key: marker.key,
                up,
                ports: running.ports,
                services: running
                    .services
                    .into_iter()
                    .map(|s| ServiceStatus {
                        // A service is a process group of its own (state.rs).
                        running: crate::process::group_alive(s.pid),
                        name: s.name,
                        pid: s.pid,
                        url: s.url,
                        log: s.log,
                    })
                    .collect(),
            });
        }
    }
    Ok(out)
}
