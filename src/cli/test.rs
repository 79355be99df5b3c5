//! `envbuild test ENV [FLOW]`: run a test flow (deploy, validate, probes, upgrade, validate,
//! report, clean up) and write its results folder. The exit code is the verdict's
//! (harness/verdict.rs): 0 passed, 1 the upgrade failed, 3 infrastructure failure or incomplete
//! run, 130 aborted, 2 bad input.

use std::path::PathBuf;

use clap::Args;

use super::{Global, VarArgs, WaitArgs, load};
use crate::engine;
use crate::error::{Error, Result};
use crate::harness::flow;
use crate::harness::verdict::CheckKind;
use crate::ops::history::RunHistory;
use crate::report::{self, es};
use crate::spec::model::Flow;

/// The exit code of a run that could not be carried out or reported (Jenkins: FAILURE).
const INFRASTRUCTURE_FAILURE: i32 = 3;

/// `NAME=HZ` as given to `--probe-rate`: a rate above 0 and at most 1000, as the spec's `rate`.
fn parse_probe_rate(text: &str) -> std::result::Result<(String, f64), String> {
    let (name, hz) = crate::spec::parse_var_override(text)
        .map_err(|_| format!("`{text}` is not NAME=HZ (e.g. nova-servers-list=5)"))?;
    match hz.trim().parse::<f64>() {
        Ok(hz) if crate::spec::is_rate(hz) => Ok((name, hz)),
        _ => Err(format!("`{hz}`: {}", crate::spec::RATE_RANGE)),
    }
}

/// `flow` with the rates `--probe-rate` gives; a name that is not one of its probes is bad
/// input.
fn with_probe_rates(flow: &Flow, rates: &[(String, f64)]) -> Result<Flow> {
    let mut flow = flow.clone();
    for (name, hz) in rates {
        let probe = flow.probes.iter_mut().find(|p| &p.name == name);
        let Some(probe) = probe else {
            let known: Vec<&str> = flow.probes.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::input(
                format!(
                    "--probe-rate {name}={hz}: flow `{}` has no probe `{name}`",
                    flow.name
                ),
                format!(
                    "name one of its probes: {}",
                    if known.is_empty() {
                        "(it has none)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        probe.rate_hz = *hz;
    }
    Ok(flow)
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Environment name
    env: String,
    /// Flow name [default: the flow marked default]
    flow: Option<String>,
    /// Results folder [default: STATE/runs/ENV/<time>-FLOW]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Leave the environment up at the end instead of running the flow's clean-up
    #[arg(long)]
    keep: bool,
    /// If the environment is up (an `envbuild up`, a `test --keep`), take it down first instead
    /// of refusing: a test always deploys what it tests itself
    #[arg(long)]
    replace: bool,
    /// Push the summary and every probe sample to ElasticSearch (bulk API) at this URL
    #[arg(long, value_name = "URL")]
    es_url: Option<String>,
    /// ElasticSearch index for the summary [default: ENV_upgrade_test]
    #[arg(long, value_name = "NAME")]
    es_summary_index: Option<String>,
    /// ElasticSearch index for probe samples [default: ENV_upgrade_status_log]
    #[arg(long, value_name = "NAME")]
    es_status_index: Option<String>,
    /// Run probe NAME at HZ requests (or iterations) per second instead of its spec's `rate`,
    /// e.g. on a machine too small for the spec's rate; the summary records the rate each probe
    /// ran at (repeatable)
    #[arg(long, value_name = "NAME=HZ", value_parser = parse_probe_rate)]
    probe_rate: Vec<(String, f64)>,
    #[command(flatten)]
    vars: VarArgs,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    unlocked: super::lock::UnlockedArgs,
}

pub fn run(global: &Global, args: TestArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let mut env = load(&ws, &args.env, &args.vars)?;
    args.unlocked.check(&ws, &mut env)?;
    let flow = env.flow(args.flow.as_deref()).ok_or_else(|| {
        let known: Vec<&str> = env.flows.iter().map(|f| f.name.as_str()).collect();
        Error::Input(match &args.flow {
            Some(name) => format!(
                "environment `{}` has no flow `{name}`; flows: {}",
                env.name,
                if known.is_empty() {
                    "(none)".into()
                } else {
                    known.join(", ")
                }
            ),
            None => format!(
                "environment `{}` has no default flow; name one of: {}",
                env.name,
                if known.is_empty() {
                    "(none)".into()
                } else {
                    known.join(", ")
                }
            ),
        })
    })?;
    let flow = &with_probe_rates(flow, &args.probe_rate)?;
    let keys = ws.keys(&env)?;
    let progress = ws.progress();
    crate::process::catch_interrupts();
    // The whole run holds the environment: no other envbuild starts, stops or probes it.
    let lock = ws.lock(&env, "test", args.wait.wait(), &progress)?;
    let up = engine::up_machines(&ws, &env)?;
    if !up.is_empty() {
        if !args.replace {
            return Err(Error::input(
                format!(
                    "{} is up ({}): a test deploys what it tests itself, from the cached stages, and its clean-up would take down what it did not start",
                    env.name,
                    up.join(", ")
                ),
                format!(
                    "take it down first (`envbuild down {0}`), or run `envbuild test {0} --replace` to have the test do it",
                    env.name
                ),
            ));
        }
        progress.note(&format!(
            "--replace: taking down {} ({}) to deploy it afresh",
            env.name,
            up.join(", ")
        ));
        engine::down(&ws, &lock, &env)?;
    }
    let stamp = crate::clock::now_rfc3339().replace(':', "");
    // Absolute: phases run from the machine root, and they get $ENVBUILD_OUT.
    let out = match &args.out {
        Some(out) => std::path::absolute(out)
            .map_err(|e| Error::input(format!("--out {}: {e}", out.display()), "pass a path"))?,
        None => ws
            .state
            .root
            .join("runs")
            .join(&env.name)
            .join(format!("{stamp}-{}", flow.name)),
    };
    progress.note(&format!(
        "{} {}: {}",
        env.name,
        flow.name,
        flow.description.as_deref().unwrap_or("(no description)")
    ));
    // Past this point the input was good: what fails is the test bed, not the upgrade.
    let infrastructure = |e: Error| -> Result<i32> {
        if e.exit_code() == 2 {
            return Err(e);
        }
        eprintln!(
            "error: {e}\n  {} {}: the run could not be carried out (infrastructure failure, exit {INFRASTRUCTURE_FAILURE})",
            env.name, flow.name
        );
        Ok(INFRASTRUCTURE_FAILURE)
    };
    let outcome = match flow::run(&ws, &lock, &env, flow, &keys, &out, args.keep, &progress) {
        Ok(outcome) => outcome,
        Err(e) => return infrastructure(e),
    };
    let summary = &outcome.summary;
    let mut history = RunHistory::open(&ws, &progress);
    let previous = history.previous(summary);
    let written = report::write_all(&out, summary, &outcome.samples, previous.as_ref());
    let recorded = history.record(summary, &out);
    if let Err(e) = written {
        return infrastructure(e);
    }

    if let Some(url) = &args.es_url {
        let (default_summary, default_status) = es::default_indices(&env.name);
        let run_id = format!("{}-{}-{stamp}", env.name, flow.name);
        let body = es::bulk_body(
            summary,
            &outcome.samples,
            args.es_summary_index.as_deref().unwrap_or(&default_summary),
            args.es_status_index.as_deref().unwrap_or(&default_status),
            &run_id,
        )?;
        match es::post_bulk(&ws.remotes.http, url, &body) {
            Ok(pushed) => eprintln!("pushed {} documents to {url}", pushed.items),
            Err(e) => eprintln!(
                "warning: pushing results to ElasticSearch failed: {e}\n  the results in {} are complete",
                out.display()
            ),
        }
    }

    print_summary(summary);
    println!("  results: {}", out.display());
    if let Some(id) = recorded {
        println!("  history: run {id} (`envbuild runs {}`)", env.name);
    }
    Ok(summary.verdict.exit_code())
}

fn print_summary(summary: &crate::harness::summary::RunSummary) {
    println!(
        "{} {}: {} ({:.0}s)",
        summary.env,
        summary.flow,
        summary.verdict.as_str().to_uppercase(),
        summary.duration_s
    );
    println!("  {}", summary.headline);
    for phase in &summary.phases {
        let attempts = if phase.attempts > 1 {
            format!(", {} attempts", phase.attempts)
        } else {
            String::new()
        };
        println!(
            "  phase {:<22} {:<8} {:>6.1}s{attempts}",
            phase.name,
            phase.status.as_str(),
            phase.duration_s
        );
    }
    for probe in &summary.probes {
        let verdict = summary
            .checks
            .iter()
            .find(|c| c.kind == CheckKind::Probe && c.name == probe.probe)
            .map_or("", |c| c.status.as_str());
        println!(
            "  probe {:<22} {:<10} {:>7} uptime {:>6.2}%  {} of {} failed  down {:.1}s  p95 {:.0} ms",
            probe.probe,
            verdict,
            probe.rate_hz.map_or(String::new(), |hz| format!("{hz} Hz")),
            probe.uptime_pct,
            probe.failed,
            probe.total,
            probe.down_time_ms as f64 / 1000.0,
            probe.latency_p95_ms.unwrap_or(0.0)
        );
        if !probe.phases.is_empty() {
            let phases: Vec<String> = probe
                .phases
                .iter()
                .map(|(name, f)| format!("{name} p50 {:.1} p95 {:.1}", f.p50_s, f.p95_s))
                .collect();
            println!("        {}", phases.join(", "));
        }
    }
    if !summary.complete {
        println!("  INCOMPLETE: not every phase passed or a probe could not be judged");
    }
    for reason in &summary.reasons {
        println!("  - {reason}");
    }
}
