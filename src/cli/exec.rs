//! `envbuild exec ENV MACHINE -- CMD...`

use clap::Args;

use super::Global;
use crate::backend::RuntimeContext;
use crate::backend::local::runtime_env;
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
    let state = ws.state.machine(&env.name, &machine.name)?;
    if !state.root().is_dir() {
        return Err(Error::Input(format!(
            "{}/{} is not built yet; run `envbuild build {}`",
            env.name, machine.name, env.name
        )));
    }
    let ports = state.services().map(|s| s.ports).unwrap_or_default();
    let ctx = RuntimeContext {
        machine,
        state: &state,
        vars: env
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect(),
        secrets: ws.state.secrets(&env)?,
    };
    let status = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .current_dir(state.root())
        .env_clear()
        .envs(runtime_env(&ctx, &ports))
        .status()
        .ctx(|| format!("running {}", args.command[0]))?;
    Ok(status.code().unwrap_or(1))
}
