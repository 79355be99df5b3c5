//! Runs a flow: its phases in order, with retries that resume at a chosen phase (a cached stage
//! makes resuming cheap), probes during the phases that ask for them, clean-up that always runs,
//! and a result folder that says everything that happened (docs/harness.md).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::backend::local::runtime_env;
use crate::backend::{MachineContext, Runtime, ServiceControl};
use crate::clock::now_rfc3339;
use crate::engine::{self, EnvLock, IfUp, Workspace};
use crate::error::{Error, IoContext, Result};
use crate::key::StageKey;
use crate::process::{self, StepEnd};
use crate::spec::model::{self as spec_model, Environment, Flow, Phase, PhaseAction, ProbeKind};
use crate::spec::template::{self, RuntimeValues};
use crate::ui::Progress;

use super::budget::{Budget, DeclaredProbe};
use super::probe::{self, Action, Request, ResolvedProbe, RunningProbes};
use super::program::Program;
use super::record::{
    PhaseResult, PhaseStatus, Rally, ResourceCheck, Smoke, Span, StageUse, TestCounts,
};
use super::stats::{ProbeSummary, Sample, summarize};
use super::summary::{RunSummary, ci_metadata};
use super::verdict::{Evidence, judge};

/// Names a phase whose first attempt fails on purpose (tests of the retry policy).
pub const FAIL_ONCE_VAR: &str = "ENVBUILD_FAIL_ONCE";

pub struct Outcome {
    pub summary: RunSummary,
    pub samples: Vec<Sample>,
}

struct Runner<'a> {
    ws: &'a Workspace,
    lock: &'a EnvLock,
    env: &'a Environment,
    flow: &'a Flow,
    keys: &'a [StageKey],
    progress: &'a Progress,
    out: &'a Path,
    t0: Instant,
    secrets: BTreeMap<String, String>,
    vars: BTreeMap<String, String>,
    cache: Vec<StageUse>,
    smoke: Smoke,
    resources: Vec<ResourceCheck>,
    rally: Rally,
}

/// The probes running now, and when each run of them started and stopped.
#[derive(Default)]
struct Probing {
    running: Option<(RunningProbes, u64)>,
    samples: Vec<Sample>,
    windows: Vec<Span>,
}

impl Probing {
    fn start(&mut self, client: &crate::http::Client, resolved: Vec<ResolvedProbe>, t0: Instant) {
        let since = t0.elapsed().as_millis() as u64;
        self.running = Some((probe::start(client, resolved, t0), since));
    }

    /// Stops the probes if they run; true if they did.
    fn stop(&mut self, t0: Instant) -> bool {
        let Some((running, start_ms)) = self.running.take() else {
            return false;
        };
        self.samples.extend(running.stop());
        self.windows.push(Span {
            start_ms,
            end_ms: t0.elapsed().as_millis() as u64,
        });
        true
    }
}

/// The probes of `flow` as the verdict policy judges them: each with its budget over the flow's.
pub fn declared_probes(flow: &Flow) -> Vec<DeclaredProbe> {
    let budget = |b: &spec_model::Budget| Budget {
        max_failed_requests: b.max_failed_requests,
        max_down_time_ms: b.max_down_time.map(|d| d.as_millis() as u64),
        min_uptime_pct: b.min_uptime_pct,
    };
    flow.probes
        .iter()
        .map(|p| DeclaredProbe {
            name: p.name.clone(),
            rate_hz: p.rate_hz,
            budget: budget(&p.budget).or(budget(&flow.budget)),
        })
        .collect()
}

/// Runs `flow` and returns what happened, judged (harness/verdict.rs); writes logs into
/// `out/logs`. Reports are written by the caller from the outcome.
#[allow(clippy::too_many_arguments)]
pub fn run(
    ws: &Workspace,
    lock: &EnvLock,
    env: &Environment,
    flow: &Flow,
    keys: &[StageKey],
    out: &Path,
    keep: bool,
    progress: &Progress,
) -> Result<Outcome> {
    for dir in ["logs", "results"] {
        std::fs::create_dir_all(out.join(dir))
            .ctx(|| format!("creating {}", out.join(dir).display()))?;
    }
    process::catch_interrupts();
    let started = now_rfc3339();
    let mut runner = Runner {
        ws,
        lock,
        env,
        flow,
        keys,
        progress,
        out,
        t0: Instant::now(),
        secrets: ws.state.secrets(env)?,
        vars: env
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect(),
        cache: Vec::new(),
        smoke: Smoke::default(),
        resources: Vec::new(),
        rally: Rally::default(),
    };
    let t0 = runner.t0;
    let phases = &flow.phases;
    let mut results: Vec<PhaseResult> = phases
        .iter()
        .map(|p| PhaseResult {
            name: p.name.clone(),
            status: PhaseStatus::Skipped,
            duration_s: 0.0,
            attempts: 0,
            error: None,
            spans: Vec::new(),
        })
        .collect();
    let first_probed = phases.iter().position(|p| p.probes);
    let last_probed = phases.iter().rposition(|p| p.probes);
    let mut fail_once = std::env::var(FAIL_ONCE_VAR).ok();
    let mut probing = Probing::default();
    let mut probes_failed_to_start = false;
    let mut i = 0;
    while i < phases.len() {
        if process::interrupted_by().is_some() {
            progress.note("interrupted: stopping after the current phase and cleaning up");
            break;
        }
        let phase = &phases[i];
        if Some(i) == first_probed && probing.running.is_none() && !flow.probes.is_empty() {
            match runner.resolve_probes() {
                Ok(resolved) => {
                    progress.note(&format!(
                        "probes started: {}",
                        resolved
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    probing.start(&ws.remotes.http, resolved, t0);
                }
                Err(e) => {
                    results[i].error = Some(format!("probes could not start: {e}"));
                    results[i].status = PhaseStatus::Failed;
                    probes_failed_to_start = true;
                    break;
                }
            }
        }
        results[i].attempts += 1;
        let about = phase
            .description
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let label = format!("{}/{}", flow.name, phase.name);
        let what = format!("attempt {}{about}", results[i].attempts);
        let bar = match phase.action {
            PhaseAction::Up | PhaseAction::Down => progress.step(label, &what),
            _ => progress.stage(label, &what),
        };
        let start_ms = t0.elapsed().as_millis() as u64;
        let attempt = if fail_once.as_deref() == Some(phase.name.as_str()) {
            fail_once = None;
            Err(Error::Failed(format!(
                "injected failure ({FAIL_ONCE_VAR}={})",
                phase.name
            )))
        } else {
            runner.run_phase(phase, &|line| bar.line(line))
        };
        let span = Span {
            start_ms,
            end_ms: t0.elapsed().as_millis() as u64,
        };
        results[i].spans.push(span);
        results[i].duration_s += span.duration_ms() as f64 / 1000.0;
        match attempt {
            Ok(()) => {
                bar.finish("passed");
                results[i].status = PhaseStatus::Passed;
                results[i].error = None;
                if Some(i) == last_probed && probing.stop(t0) {
                    progress.note("probes stopped");
                }
                i += 1;
            }
            Err(e) if process::interrupted_by().is_some() => {
                bar.finish("aborted");
                results[i].error = Some(e.to_string());
                results[i].status = PhaseStatus::Aborted;
                break;
            }
            Err(e) => {
                bar.finish("failed");
                results[i].error = Some(e.to_string());
                if results[i].attempts <= phase.retries {
                    progress.note(&format!(
                        "phase {} failed (attempt {} of {}): {e}\n  cleaning up and resuming at phase {}",
                        phase.name,
                        results[i].attempts,
                        phase.retries + 1,
                        phases[phase.resume].name
                    ));
                    for step in &phase.cleanup {
                        if let Err(e) = runner.cleanup_step(step, phase) {
                            progress.note(&format!("warning: clean-up `{step}` failed: {e}"));
                        }
                    }
                    if first_probed.is_some_and(|f| phase.resume < f) {
                        probing.stop(t0);
                    }
                    i = phase.resume;
                    continue;
                }
                results[i].status = PhaseStatus::Failed;
                break;
            }
        }
    }
    probing.stop(t0);
    // An interrupt that came after the last phase ended cut nothing short.
    let aborted_by = process::interrupted_by()
        .filter(|_| results.iter().any(|r| r.status != PhaseStatus::Passed));
    // Clean-up runs even after Ctrl-C: only a second interrupt stops its steps.
    process::ABORT.store(false, Ordering::SeqCst);
    if keep {
        progress.note("--keep: leaving the environment as it is (run `envbuild down` when done)");
    } else {
        for step in &flow.cleanup {
            if let Err(e) = runner.cleanup_step(step, &phases[0]) {
                progress.note(&format!("warning: clean-up `{step}` failed: {e}"));
            }
        }
    }

    let declared = declared_probes(flow);
    let probes: Vec<_> = declared
        .iter()
        .map(|d| ProbeSummary {
            rate_hz: Some(d.rate_hz),
            ..summarize(&d.name, &probing.samples)
        })
        .collect();
    let judgement = judge(&Evidence {
        phases: &results,
        first_probed,
        probes_failed_to_start,
        declared: &declared,
        probes: &probes,
        probed_ms: probing.windows.iter().map(Span::duration_ms).sum(),
        smoke: &runner.smoke,
        rally: &runner.rally,
        resources: &runner.resources,
        aborted_by,
    });
    let stage_keys = runner
        .keys
        .iter()
        .map(|k| (format!("{}/{}", k.machine, k.stage), k.key.clone()))
        .collect();
    let summary = RunSummary {
        env: env.name.clone(),
        flow: flow.name.clone(),
        from_version: flow.from_version.clone().unwrap_or_default(),
        to_version: flow.to_version.clone().unwrap_or_default(),
        started,
        finished: now_rfc3339(),
        duration_s: t0.elapsed().as_secs_f64(),
        verdict: judgement.verdict,
        headline: judgement.headline,
        reasons: judgement.reasons,
        complete: judgement.complete,
        checks: judgement.checks,
        vars: runner.vars,
        ci: ci_metadata(),
        phases: results,
        probe_windows: probing.windows,
        probes,
        smoke: runner.smoke,
        resources: runner.resources,
        rally: runner.rally,
        cache: runner.cache,
        envbuild_version: env!("CARGO_PKG_VERSION").to_string(),
        stage_keys,
    };
    Ok(Outcome {
        summary,
        samples: probing.samples,
    })
}

impl Runner<'_> {
    fn machine_context<'m>(
        &'m self,
        phase: &Phase,
        state: &'m crate::state::MachineState,
    ) -> MachineContext<'m> {
        MachineContext {
            env: &self.env.name,
            machine: self
                .env
                .machine(&phase.machine)
                .expect("spec checked the machine"),
            state,
        }
    }

    fn runtime(&self) -> Runtime {
        Runtime {
            vars: self.vars.clone(),
            secrets: self.secrets.clone(),
        }
    }

    fn render(
        &self,
        text: &str,
        ports: &BTreeMap<String, u16>,
        root: &Path,
        run: &Path,
    ) -> Result<String> {
        RuntimeValues {
            vars: &self.vars,
            ports,
            dirs: Some((root, run)),
        }
        .render(text)
        .map_err(|e| Error::Failed(format!("`{text}`: {}", e.message)))
    }

    /// Runs one attempt of `phase`; its commands' output lines also go to `on_line`.
    fn run_phase(&mut self, phase: &Phase, on_line: &(dyn Fn(&str) + Sync)) -> Result<()> {
        match &phase.action {
            PhaseAction::Up => {
                let (report, _) = engine::up(
                    self.ws,
                    self.lock,
                    self.env,
                    self.keys,
                    IfUp::Refuse,
                    self.progress,
                )?;
                if self.cache.is_empty() && !report.stages.is_empty() {
                    self.cache = report
                        .stages
                        .iter()
                        .map(|s| StageUse {
                            machine: s.machine.clone(),
                            stage: s.stage.clone(),
                            key: s.key.clone(),
                            action: serde_json::to_value(s.action)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                        })
                        .collect();
                }
                Ok(())
            }
            PhaseAction::Down => engine::down(self.ws, self.lock, self.env).map(|_| ()),
            PhaseAction::Run(commands) => {
                for command in commands {
                    self.run_command(phase, command, on_line)?;
                }
                self.collect_results(phase);
                Ok(())
            }
            PhaseAction::Stop(names) | PhaseAction::Start(names) | PhaseAction::Restart(names) => {
                let control = match &phase.action {
                    PhaseAction::Stop(_) => ServiceControl::Stop,
                    PhaseAction::Start(_) => ServiceControl::Start,
                    _ => ServiceControl::Restart,
                };
                let state = self.ws.state.machine(&self.env.name, &phase.machine)?;
                let ctx = self.machine_context(phase, &state);
                let ports = state.services().map(|s| s.ports).unwrap_or_default();
                let mut env = BTreeMap::new();
                for (key, value) in &phase.env {
                    env.insert(
                        key.clone(),
                        self.render(value, &ports, &state.root(), &state.run_dir())?,
                    );
                }
                let backend = self.ws.backends.get(ctx.machine.backend)?;
                backend.control(&ctx, &self.runtime(), control, names, &env)
            }
        }
    }

    /// Runs one command in the phase's machine, with its runtime environment, ENVBUILD_OUT (the
    /// run folder) and ENVBUILD_RESULT (where the command may leave results for the summary).
    fn run_command(
        &self,
        phase: &Phase,
        command: &str,
        on_line: &(dyn Fn(&str) + Sync),
    ) -> Result<()> {
        let state = self.ws.state.machine(&self.env.name, &phase.machine)?;
        let ctx = self.machine_context(phase, &state);
        let ports = state.services().map(|s| s.ports).unwrap_or_default();
        let mut env = runtime_env(&ctx, &self.runtime(), &ports);
        for (key, value) in &phase.env {
            env.insert(
                key.clone(),
                self.render(value, &ports, &state.root(), &state.run_dir())?,
            );
        }
        env.insert("ENVBUILD_OUT".into(), self.out.display().to_string());
        env.insert("ENVBUILD_PHASE".into(), phase.name.clone());
        env.insert(
            "ENVBUILD_RESULT".into(),
            self.result_file(phase).display().to_string(),
        );
        let command = self.render(command, &ports, &state.root(), &state.run_dir())?;
        let log_path = self.out.join("logs").join(format!("{}.log", phase.name));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .ctx(|| format!("opening {}", log_path.display()))?;
        let _ = writeln!(log, "--- {} $ {command}", now_rfc3339());
        let end = process::run_step(
            &command,
            &state.root(),
            &env,
            Instant::now() + phase.timeout,
            |line| {
                let _ = writeln!(log, "{line}");
                on_line(line);
            },
        )?;
        match end {
            StepEnd::Exited(0) => Ok(()),
            other => Err(Error::Failed(format!(
                "`{command}` {}.\n  last lines:\n{}\n  full log: {}",
                match other {
                    StepEnd::TimedOut => format!("timed out after {}s", phase.timeout.as_secs()),
                    StepEnd::Aborted => "was interrupted".to_string(),
                    StepEnd::Exited(code) => format!("exited with status {code}"),
                },
                process::tail(&log_path, 12),
                log_path.display()
            ))),
        }
    }

    fn result_file(&self, phase: &Phase) -> PathBuf {
        self.out
            .join("results")
            .join(format!("{}.json", phase.name))
    }

    /// Reads what a phase left in $ENVBUILD_RESULT: smoke counts, resource checks, Rally figures.
    fn collect_results(&mut self, phase: &Phase) {
        let Ok(bytes) = std::fs::read(self.result_file(phase)) else {
            return;
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            self.progress.note(&format!(
                "warning: {} is not JSON; ignored",
                self.result_file(phase).display()
            ));
            return;
        };
        let after = value.get("when").and_then(|w| w.as_str()) == Some("after");
        if let Some(smoke) = value
            .get("smoke")
            .and_then(|s| serde_json::from_value::<TestCounts>(s.clone()).ok())
        {
            if after {
                self.smoke.after = Some(smoke)
            } else {
                self.smoke.before = Some(smoke)
            }
        }
        if let Some(rally) = value.get("rally") {
            if after {
                self.rally.after = Some(rally.clone())
            } else {
                self.rally.before = Some(rally.clone())
            }
        }
        if let Some(items) = value.get("resources").and_then(|r| r.as_array()) {
            for item in items {
                self.resources.push(ResourceCheck {
                    phase: phase.name.clone(),
                    resource: item
                        .get("resource")
                        .and_then(|v| v.as_str())
                        .unwrap_or("?")
                        .to_string(),
                    ok: item.get("ok").and_then(|v| v.as_bool()).unwrap_or(false),
                    detail: item
                        .get("detail")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string(),
                });
            }
        }
    }

    /// A clean-up step: "down" takes the environment down; anything else runs in the machine.
    fn cleanup_step(&self, step: &str, phase: &Phase) -> Result<()> {
        if step == "down" {
            return engine::down(self.ws, self.lock, self.env).map(|_| ());
        }
        self.run_command(phase, step, &|_| {})
    }

    /// Renders the probes against the running machine: ports, vars, secrets and, if an HTTP
    /// probe names `{{ token }}`, a token issued now with the environment's [cloud]
    /// credentials. A program probe gets the runtime environment of a `run` phase.
    fn resolve_probes(&self) -> Result<Vec<ResolvedProbe>> {
        let machine = &self.flow.probes[0].machine;
        let state = self.ws.state.machine(&self.env.name, machine)?;
        let ports = state
            .services()
            .map(|s| s.ports)
            .ok_or_else(|| Error::Failed(format!("machine `{machine}` is not up")))?;
        let names_token = |text: &str| {
            template::placeholders(text).is_ok_and(|found| found.iter().any(|p| p.name == "token"))
        };
        let needs_token = self.flow.probes.iter().any(|p| match &p.kind {
            ProbeKind::Http(r) => {
                names_token(&r.url)
                    || r.headers.values().any(|v| names_token(v))
                    || r.body.as_deref().is_some_and(names_token)
            }
            ProbeKind::Program { .. } => false,
        });
        let token = if needs_token {
            Some(self.issue_token(&ports)?)
        } else {
            None
        };
        let values = RuntimeValues {
            vars: &self.vars,
            ports: &ports,
            dirs: None,
        };
        // HTTP probes also name the token and secrets (rendered in memory only).
        let lookup = |name: &str| -> Option<String> {
            match (name, name.strip_prefix("secrets.")) {
                ("token", _) => token.clone(),
                (_, Some(secret)) => self.secrets.get(secret).cloned(),
                _ => values.get(name),
            }
        };
        let render =
            |text: &str| template::render(text, lookup).map_err(|e| Error::Failed(e.message));
        self.flow
            .probes
            .iter()
            .map(|p| {
                let action = match &p.kind {
                    ProbeKind::Http(r) => Action::Http(Request {
                        method: r.method.clone(),
                        url: render(&r.url)?,
                        headers: r
                            .headers
                            .iter()
                            .map(|(k, v)| Ok((k.clone(), render(v)?)))
                            .collect::<Result<_>>()?,
                        body: r.body.as_deref().map(render).transpose()?,
                        expect: r.expect,
                    }),
                    ProbeKind::Program { command } => {
                        Action::Program(self.program(&p.name, command, &state, &ports)?)
                    }
                };
                let program = matches!(action, Action::Program(_));
                Ok(ResolvedProbe {
                    name: p.name.clone(),
                    action,
                    interval: Duration::from_secs_f64(1.0 / p.rate_hz),
                    timeout: p.timeout,
                    max_in_flight: p.max_in_flight.unwrap_or_else(|| {
                        probe::default_max_in_flight(program, p.rate_hz, p.timeout)
                    }),
                })
            })
            .collect()
    }

    /// A program probe's command, rendered, with the environment a `run` phase's command gets
    /// (but no ENVBUILD_PHASE or ENVBUILD_RESULT: it runs across phases).
    fn program(
        &self,
        name: &str,
        command: &str,
        state: &crate::state::MachineState,
        ports: &BTreeMap<String, u16>,
    ) -> Result<Program> {
        let machine = self
            .env
            .machine(&self.flow.probes[0].machine)
            .expect("spec checked the machine");
        let ctx = MachineContext {
            env: &self.env.name,
            machine,
            state,
        };
        let mut env = runtime_env(&ctx, &self.runtime(), ports);
        env.insert("ENVBUILD_OUT".into(), self.out.display().to_string());
        Ok(Program {
            command: self.render(command, ports, &state.root(), &state.run_dir())?,
            cwd: state.root(),
            env,
            log: self.out.join("logs").join(format!("probe-{name}.log")),
        })
    }

    fn issue_token(&self, ports: &BTreeMap<String, u16>) -> Result<String> {
        let cloud = self.env.cloud.as_ref().ok_or_else(|| {
            Error::Input("a probe uses {{ token }} but the environment declares no [cloud]".into())
        })?;
        let auth_url = RuntimeValues {
            vars: &self.vars,
            ports,
            dirs: None,
        }
        .render(&cloud.auth_url)
        .map_err(|e| Error::Failed(e.message))?;
        let body = serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": cloud.username, "domain": {"name": cloud.user_domain},
                "password": self.secrets.get(&cloud.password_secret).cloned().unwrap_or_default()}}},
            "scope": {"project": {"name": cloud.project, "domain": {"name": cloud.project_domain}}}}});
        let request = Request {
            method: "POST".into(),
            url: format!("{}/auth/tokens", auth_url.trim_end_matches('/')),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Some(body.to_string()),
            expect: 201,
        };
        let answer = probe::exchange(&self.ws.remotes.http, &request, Duration::from_secs(30))
            .map_err(|e| Error::Failed(format!("issuing a token for the probes: {e}")))?;
        if answer.status != 201 {
            return Err(Error::Failed(format!(
                "issuing a token for the probes: HTTP {}",
                answer.status
            )));
        }
        answer
            .header("x-subject-token")
            .map(str::to_string)
            .ok_or_else(|| {
                Error::Failed("issuing a token for the probes: no X-Subject-Token".into())
            })
    }
}
