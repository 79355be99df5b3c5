//! `envbuild build ENV`, `envbuild up ENV`, `envbuild down ENV`

use clap::Args;

use super::{Global, VarArgs, WaitArgs, load, print_json};
use crate::engine::{self, Action, BuildReport, IfUp};
use crate::error::Result;
use crate::ops::{self, build::AfterBuild};
use crate::spec::model::Environment;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Environment name
    env: String,
    /// Print a JSON report of what was built, restored and cached (and, for up, the services)
    #[arg(long)]
    json: bool,
    /// Only these machines (comma-separated), e.g. the ones this host can run
    #[arg(long, value_name = "MACHINE,...", value_delimiter = ',')]
    only: Vec<String>,
    #[command(flatten)]
    vars: VarArgs,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    unlocked: super::lock::UnlockedArgs,
}

impl BuildArgs {
    /// The environment, or the part of it `--only` names; every floating source locked.
    fn environment(&self, ws: &crate::engine::Workspace) -> Result<Environment> {
        let mut env = load(ws, &self.env, &self.vars)?;
        if !self.only.is_empty() {
            env = ops::build::only(&env, &self.only)?;
        }
        self.unlocked.check(ws, &mut env)?;
        Ok(env)
    }
}

#[derive(Debug, Args)]
pub struct EnvArg {
    /// Environment name
    env: String,
    #[command(flatten)]
    wait: WaitArgs,
}

fn summary(report: &BuildReport) -> String {
    let count = |action: Action| report.stages.iter().filter(|s| s.action == action).count();
    format!(
        "{}: {} built, {} restored from cache, {} reused, {} already current ({:.1}s)",
        report.env,
        count(Action::Built),
        count(Action::Restored) + count(Action::Cached),
        count(Action::Reused),
        count(Action::Current),
        report.seconds
    )
}

pub fn run_build(global: &Global, args: BuildArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let env = args.environment(&ws)?;
    let keys = ws.keys(&env)?;
    crate::process::catch_interrupts();
    let lock = ws.lock(&env, "build", args.wait.wait(), &ws.progress())?;
    let (report, after) = ops::build::build(&ws, &lock, &env, &keys)?;
    if args.json {
        print_json(&report);
    } else if !global.quiet {
        eprintln!("{}", summary(&report));
    }
    match after {
        AfterBuild::NoPush => {}
        AfterBuild::ReadOnly => eprintln!("read-only cache mode: nothing pushed"),
        AfterBuild::Pushed(outcomes) => super::cache::print_pushed(&outcomes, global.quiet),
    }
    Ok(0)
}

#[derive(serde::Serialize)]
struct UpReport<'a> {
    build: &'a BuildReport,
    machines: Vec<serde_json::Value>,
}

pub fn run_up(global: &Global, args: BuildArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let env = args.environment(&ws)?;
    let keys = ws.keys(&env)?;
    let progress = ws.progress();
    crate::process::catch_interrupts();
    let lock = ws.lock(&env, "up", args.wait.wait(), &progress)?;
    let (report, running) = engine::up(&ws, &lock, &env, &keys, IfUp::Reuse, &progress)?;
    if args.json {
        let machines = running
            .iter()
            .map(|(name, r)| serde_json::json!({ "machine": name, "ports": r.ports, "services": r.services }))
            .collect();
        print_json(&UpReport {
            build: &report,
            machines,
        });
        return Ok(0);
    }
    if !global.quiet {
        eprintln!("{}", summary(&report));
    }
    for (machine, r) in &running {
        for service in &r.services {
            let url = service.url.as_deref().map(|u| format!(" at {u}"));
            let timing = match (service.spawned_at_s, service.ready_after_s) {
                (Some(at), Some(ready)) => format!(", started at +{at:.1}s, ready in {ready:.1}s"),
                _ => String::new(),
            };
            println!(
                "{}/{machine}/{}: running (pid {}){}{timing}",
                env.name,
                service.name,
                service.pid,
                url.unwrap_or_default(),
            );
        }
    }
    if env.cloud.is_some() && !global.quiet {
        eprintln!("credentials: envbuild creds {}", env.name);
    }
    Ok(0)
}

pub fn run_down(global: &Global, args: EnvArg) -> Result<i32> {
    let ws = global.workspace()?;
    let env = ws.load(&args.env, &[])?;
    let progress = ws.progress();
    let lock = ws.lock(&env, "down", args.wait.wait(), &progress)?;
    let killed = engine::down(&ws, &lock, &env)?;
    for (machine, service) in &killed {
        progress.warn(&format!(
            "{}/{machine}/{service} did not stop in time and was killed",
            env.name
        ));
    }
    if !global.quiet {
        eprintln!("{}: down", env.name);
    }
    Ok(0)
}
