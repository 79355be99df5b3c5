//! `status`: each machine's stage, and whether it runs, as its backend sees it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::backend::MachineContext;
use crate::engine::Workspace;
use crate::error::Result;
use crate::ops::memory::{self, Memory};

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
    /// The services' processes together (their PSS adds up; their RSS counts shared pages once
    /// per process).
    pub memory: Memory,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub pid: i32,
    pub running: bool,
    pub url: Option<String>,
    pub log: PathBuf,
    /// Its process group's processes now (none once it stopped).
    pub memory: Memory,
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
            let groups: Vec<i32> = running
                .services
                .iter()
                .map(|s| s.pid)
                .filter(|&p| p > 0)
                .collect();
            let held = memory::of_groups(&groups);
            let services: Vec<ServiceStatus> = running
                .services
                .into_iter()
                .map(|s| ServiceStatus {
                    // A service is a process group of its own (state.rs).
                    running: crate::process::group_alive(s.pid),
                    memory: held.get(&s.pid).copied().unwrap_or_default(),
                    name: s.name,
                    pid: s.pid,
                    url: s.url,
                    log: s.log,
                })
                .collect();
            let mut total = Memory::default();
            for s in &services {
                total.add(s.memory);
            }
            out.push(MachineStatus {
                env: env.name.clone(),
                machine: machine.name.clone(),
                built: marker.key.is_some(),
                stage: marker.stage,
                key: marker.key,
                up,
                ports: running.ports,
                services,
                memory: total,
            });
        }
    }
    Ok(out)
}
