//! `envbuild plan ENV [--explain]`

use clap::Args;

use super::{Global, VarArgs, load, print_json};
use crate::engine;
use crate::error::Result;
use crate::ops::lock;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Environment name
    env: String,
    /// Say for each stage that will be built why: which input, var or parent changed since its
    /// newest cached build
    #[arg(long)]
    explain: bool,
    /// Machine-readable output
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    vars: VarArgs,
}

pub fn run(global: &Global, args: PlanArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let env = load(&ws, &args.env, &args.vars)?;
    let keys = ws.keys(&env)?;
    let plan = engine::plan(&ws, &env, &keys, args.explain || args.json)?;
    let unlocked = lock::unlocked_sources(&env);
    if !unlocked.is_empty() {
        // The plan still shows the keys (with `unlocked` in them); build, up and test refuse.
        ws.progress().warn(&format!(
            "unlocked sources ({}): `envbuild build` refuses them; `envbuild lock {}` pins them",
            unlocked.join(", "),
            env.name
        ));
    }
    if args.json {
        print_json(&plan);
        return Ok(0);
    }
    for machine in &plan.machines {
        let about = machine
            .description
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        println!("{} ({}){about}", machine.name, machine.backend);
        let width = machine
            .stages
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        for stage in &machine.stages {
            let state = match (stage.cached, &stage.remote) {
                (true, _) => "cached",
                (false, Some(_)) => "remote",
                (false, None) => "build ",
            };
            let about = stage.description.as_deref().unwrap_or("");
            println!(
                "  {state} {:<width$} {}  {about}",
                stage.name,
                &stage.key[..16]
            );
            if let Some(url) = &stage.remote {
                println!("         - on remote cache {url}");
            }
            for reason in &stage.reasons {
                println!("         - {reason}");
            }
        }
    }
    Ok(0)
}
