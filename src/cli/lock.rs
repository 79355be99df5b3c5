//! `envbuild lock [ENV]`: pin the floating sources into ENV.lock and make the files of
//! `[[locks]]`; and `--allow-unlocked`, the flag of the commands that refuse an unlocked source.

use clap::Args;

use super::{Global, VarArgs, print_json};
use crate::engine::Workspace;
use crate::error::{Error, Result};
use crate::ops::lock::{self, LockOptions};
use crate::spec::model::Environment;

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Environment name [default: every environment]
    env: Option<String>,
    /// Resolve every floating source again (branches move) and rerun every [[locks]] command
    #[arg(long, conflicts_with = "check")]
    update: bool,
    /// Change and fetch nothing: exit 2 if a lock file or a [[locks]] file is missing or stale
    #[arg(long)]
    check: bool,
    /// Print a JSON report of what was pinned and made
    #[arg(long)]
    json: bool,
    /// `--var` chooses the files of [[locks]] (e.g. --var keystone_version=27.1.0)
    #[command(flatten)]
    vars: VarArgs,
}

/// `--allow-unlocked`, for `build`, `up` and `test`.
#[derive(Debug, Args, Clone)]
pub struct UnlockedArgs {
    /// Run even though a floating source is not in ENV.lock: resolve it now, for this run only
    /// (with a warning); `envbuild lock ENV` pins it for good
    #[arg(long)]
    allow_unlocked: bool,
}

impl UnlockedArgs {
    /// Refuses (exit 2) an environment with an unlocked floating source, unless the flag.
    pub fn check(&self, ws: &Workspace, env: &mut Environment) -> Result<()> {
        lock::require_locked(ws, env, self.allow_unlocked, &ws.progress())
    }
}

pub fn run(global: &Global, args: LockArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let names = match &args.env {
        Some(name) => vec![name.clone()],
        None if !args.vars.vars.is_empty() => {
            return Err(Error::input(
                "--var needs an environment: vars belong to one spec",
                "name it: envbuild lock ENV --var NAME=VALUE",
            ));
        }
        None => crate::spec::list_names(ws.envs()?)?,
    };
    let options = LockOptions {
        update: args.update,
        check: args.check,
    };
    let progress = ws.progress();
    let mut reports = Vec::new();
    for name in &names {
        reports.push(lock::lock(&ws, name, &args.vars.vars, options, &progress)?);
    }
    if args.json {
        print_json(&reports);
        return Ok(0);
    }
    for report in &reports {
        for pin in &report.pins {
            let how = if pin.resolved { "locked" } else { "kept" };
            println!("{}: {how} {} -> {}", report.env, pin.reference, pin.pin);
        }
        for file in &report.made {
            println!("{}: made {file}", report.env);
        }
        if !global.quiet {
            let what = match (&report.lock_file, report.changed) {
                (Some(file), true) => format!("wrote {file}"),
                (Some(file), false) => format!("{file} is up to date"),
                (None, _) => "no floating source, no lock file".to_string(),
            };
            eprintln!("{}: {what}", report.env);
        }
    }
    Ok(0)
}
