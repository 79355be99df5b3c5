//! `envbuild list`

use clap::Args;

use super::{Global, print_json};
use crate::error::{ExitCode, Result};

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
    /// Why the spec does not load (file:line:col and what is wrong); the others still list.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Lists every environment; a broken spec is listed as broken and its error printed, and the
/// exit code is then 2 (bad input), but it never hides the others.
pub fn run(global: &Global, args: ListArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let mut listed = Vec::new();
    let mut broken = Vec::new();
    for name in crate::spec::list_names(ws.envs()?)? {
        match ws.load(&name, &[]) {
            Ok(env) => listed.push(Listed {
                stages: env.machines.iter().map(|m| m.stages.len()).sum(),
                machines: env.machines.iter().map(|m| m.name.clone()).collect(),
                description: env.description,
                error: None,
                name,
            }),
            Err(e) => {
                listed.push(Listed {
                    name,
                    description: None,
                    machines: Vec::new(),
                    stages: 0,
                    error: Some(e.to_string()),
                });
                broken.push(e);
            }
        }
    }
    if args.json {
        print_json(&listed);
    } else {
        for env in &listed {
            let description = match &env.error {
                Some(_) => "(broken: see the error below)",
                None => env.description.as_deref().unwrap_or(""),
            };
            println!(
                "{:<22} {:<28} {description}",
                env.name,
                env.machines.join(",")
            );
        }
    }
    for error in &broken {
        eprintln!("error: {error}");
    }
    Ok(if broken.is_empty() {
        ExitCode::Success.code()
    } else {
        ExitCode::BadInput.code()
    })
}
