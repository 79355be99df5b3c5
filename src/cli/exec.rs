//! `envbuild exec ENV MACHINE -- CMD...`

use clap::Args;

use super::Global;
use crate::backend::local::runtime_env;
use crate::engine::MachineHandle;
use crate::error::{Error, IoContext, Result};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Environment name
    env: String,
    /// Machine name
    machine: String,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(global: &Global, args: ExecArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let env = ws.load(&args.env, &[])?;
    let machine = env.machine(&args.machine).ok_or_else(|| {
        let known: Vec<&str> = env.machines.iter().map(|m| m.name.as_str()).collect();
        Error::Input(format!(
            "environment `{}` has no machine `{}`; machines: {}",
            env.name,
            args.machine,
            known.join(", ")
        ))
    })?;
    let handle = MachineHandle::new(&ws, &env, machine)?;
    let state = &handle.state;
    if !state.root().is_dir() {
        return Err(Error::input(
            format!("{}/{} is not built yet", env.name, machine.name),
            format!("run `envbuild build {}`", env.name),
        ));
    }
    let ports = state.services().map(|s| s.ports).unwrap_or_default();
    let runtime = crate::engine::runtime(&ws, &env)?;
    let status = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .current_dir(state.root())
        .env_clear()
        .envs(runtime_env(&handle.context(), &runtime, &ports))
        .status()
        .ctx(|| format!("running {}", args.command[0]))?;
    Ok(status.code().unwrap_or(1))
}
