//! `envbuild status [ENV]`

use clap::Args;

use super::{Global, print_json};
use crate::error::Result;
use crate::process::group_alive;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Environment name [default: every environment]
    env: Option<String>,
    /// Machine-readable output: each machine's stage and each service with its URL
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct MachineStatus {
    env: String,
    machine: String,
    stage: Option<String>,
    key: Option<String>,
    built: bool,
    ports: std::collections::BTreeMap<String, u16>,
    services: Vec<ServiceStatus>,
}

#[derive(serde::Serialize)]
struct ServiceStatus {
    name: String,
    pid: i32,
    running: bool,
    url: Option<String>,
    log: std::path::PathBuf,
}

pub fn run(global: &Global, args: StatusArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let names = match args.env {
        Some(name) => vec![name],
        None => crate::spec::list_names(&ws.envs)?,
    };
    let mut out = Vec::new();
    for name in names {
        let env = ws.load(&name, &[])?;
        for machine in &env.machines {
            let state = ws.state.machine(&env.name, &machine.name)?;
            let marker = state.marker();
            let running = state.services().unwrap_or_default();
            out.push(MachineStatus {
                env: env.name.clone(),
                machine: machine.name.clone(),
                built: marker.key.is_some(),
                stage: marker.stage,
                key: marker.key,
                ports: running.ports,
                services: running
                    .services
                    .into_iter()
                    .map(|s| ServiceStatus {
                        running: group_alive(s.pid),
                        name: s.name,
                        pid: s.pid,
                        url: s.url,
                        log: s.log,
                    })
                    .collect(),
            });
        }
    }
    if args.json {
        print_json(&out);
        return Ok(0);
    }
    for m in &out {
        let stage = m.stage.as_deref().unwrap_or("not built");
        println!("{}/{}: {stage}", m.env, m.machine);
        for s in &m.services {
            let state = if s.running { "running" } else { "stopped" };
            println!(
                "  {:<16} {state:<8} pid {:<8} {}",
                s.name,
                s.pid,
                s.url.as_deref().unwrap_or("")
            );
        }
    }
    Ok(0)
}
