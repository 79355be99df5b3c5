//! `envbuild runs [ENV]`: the runs of the results history, oldest first.

use clap::Args;

use super::{Global, print_json};
use crate::error::Result;
use crate::ops;

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Environment name [default: every environment]
    env: Option<String>,
    /// Machine-readable output: one object per run
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: RunsArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let lines = ops::history::lines(&ws, args.env.as_deref())?;
    if args.json {
        print_json(&lines);
        return Ok(0);
    }
    if lines.is_empty() {
        println!("no run recorded");
        return Ok(0);
    }
    println!(
        "{:>4}  {:<12} {:<10} {:<20} {:>8}  {:<10} {:<18} {:>12} {:>8} {:>6}",
        "id",
        "env",
        "flow",
        "started",
        "duration",
        "verdict",
        "N -> N+1",
        "worst uptime",
        "down",
        "cache"
    );
    for l in &lines {
        let worst = l
            .worst_uptime_pct
            .map_or("-".to_string(), |pct| format!("{pct:.2}%"));
        println!(
            "{:>4}  {:<12} {:<10} {:<20} {:>7.1}s  {:<10} {:<18} {:>12} {:>7.1}s {:>6}",
            l.id,
            l.env,
            l.flow,
            l.started,
            l.duration_s,
            l.verdict.as_str(),
            if l.from_version.is_empty() && l.to_version.is_empty() {
                "-".to_string()
            } else {
                format!("{} -> {}", l.from_version, l.to_version)
            },
            worst,
            l.down_time_s,
            format!("{}/{}", l.cache_hits, l.stages)
        );
    }
    Ok(0)
}
