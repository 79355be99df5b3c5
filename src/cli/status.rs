//! `envbuild status [ENV]`

use clap::Args;

use super::{Global, human_size, print_json};
use crate::error::Result;
use crate::ops;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Environment name [default: every environment]
    env: Option<String>,
    /// Machine-readable output: each machine's stage, whether it is up, each service with its URL
    /// and memory (processes, RSS and PSS in bytes)
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: StatusArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let out = ops::status::status(&ws, args.env.as_deref())?;
    if args.json {
        print_json(&out);
        return Ok(0);
    }
    for m in &out {
        let stage = m.stage.as_deref().unwrap_or("not built");
        let up = if m.up { " (up)" } else { "" };
        let held = if m.memory.processes > 0 {
            format!(
                ": {} processes, RSS {}, PSS {}",
                m.memory.processes,
                human_size(m.memory.rss_bytes),
                human_size(m.memory.pss_bytes)
            )
        } else {
            String::new()
        };
        println!("{}/{}: {stage}{up}{held}", m.env, m.machine);
        for s in &m.services {
            let state = if s.running { "running" } else { "stopped" };
            let rss = if s.memory.processes > 0 {
                format!("RSS {}", human_size(s.memory.rss_bytes))
            } else {
                String::new()
            };
            println!(
                "  {:<16} {state:<8} pid {:<8} {rss:<14} {}",
                s.name,
                s.pid,
                s.url.as_deref().unwrap_or("")
            );
        }
    }
    Ok(0)
}
