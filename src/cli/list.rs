//! `envbuild list`

use clap::Args;

use super::{Global, print_json};
use crate::error::Result;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Listed {
    name: String,
    description: Option<String>,
    machines: Vec<String>,
    stages: usize,
}

pub fn run(global: &Global, args: ListArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let mut listed = Vec::new();
    for name in crate::spec::list_names(ws.envs()?)? {
        let env = ws.load(&name, &[])?;
        listed.push(Listed {
            stages: env.machines.iter().map(|m| m.stages.len()).sum(),
            machines: env.machines.iter().map(|m| m.name.clone()).collect(),
            description: env.description,
            name,
        });
    }
    if args.json {
        print_json(&listed);
    } else {
        for env in &listed {
            println!(
                "{:<22} {:<28} {}",
                env.name,
                env.machines.join(","),
                env.description.as_deref().unwrap_or("")
            );
        }
    }
    Ok(0)
}
