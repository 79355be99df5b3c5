//! Flows and the [cloud] table: phases, probes, checks and the credentials they use.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::model::*;
use super::raw::*;
use super::*;
use crate::error::Result;

impl Loader<'_> {
    pub(super) fn flow(
        &self,
        name: &Name,
        raw: &RawFlow,
        machines: &[Machine],
        vars: &BTreeMap<String, Var>,
        secrets: &BTreeMap<String, SecretSpec>,
    ) -> Result<Flow> {
        self.check_name(name, "flow")?;
        let find_machine = |m: &Name| -> Result<&Machine> {
            machines.iter().find(|x| x.name == *m.get_ref()).map_or_else(
                || {
                    let known: Vec<&str> = machines.iter().map(|x| x.name.as_str()).collect();
                    self.err(m.span().start, format!("flow names machine `{}`, which this environment does not define; machines: {}", m.get_ref(), known.join(", ")))
                },
                Ok,
            )
        };
        let default_machine = match &raw.machine {
            Some(m) => find_machine(m)?,
            None if machines.len() == 1 => &machines[0],
            None => return self.err(name.span().start, "this environment has several machines: say which one the flow acts on with `machine = \"NAME\"`"),
        };
        let stage_scope = Scope {
            vars,
            ports: None,
            probe_secrets: None,
        };
        let version = |v: &Option<Spanned<String>>| -> Result<Option<String>> {
            let Some(v) = v else { return Ok(None) };
            self.check_placeholders(v, &stage_scope)?;
            Ok(Some(
                template::render(v.get_ref(), |n| vars.get(n).map(|x| x.value.clone()))
                    .expect("validated"),
            ))
        };
        let mut phases: Vec<Phase> = Vec::new();
        for raw_phase in &raw.phases {
            let p = raw_phase.get_ref();
            self.check_name(&p.name, "phase")?;
            if phases.iter().any(|x| x.name == *p.name.get_ref()) {
                return self.err(
                    p.name.span().start,
                    format!(
                        "flow `{}` has two phases named `{}`",
                        name.get_ref(),
                        p.name.get_ref()
                    ),
                );
            }
            let machine = match &p.machine {
                Some(m) => find_machine(m)?,
                None => default_machine,
            };
            let runtime = Scope {
                vars,
                ports: Some(&machine.ports),
                probe_secrets: None,
            };
            let services = |list: &[Name]| -> Result<Vec<String>> {
                if list.is_empty() {
                    return self.err(
                        p.action.span().start,
                        format!("`{}` needs services = [\"NAME\", ...]", p.action.get_ref()),
                    );
                }
                list.iter()
                    .map(|s| {
                        if machine.services.iter().any(|x| x.name == *s.get_ref()) {
                            Ok(s.get_ref().clone())
                        } else {
                            let known: Vec<&str> =
                                machine.services.iter().map(|x| x.name.as_str()).collect();
                            self.err(
                                s.span().start,
                                format!(
                                    "machine `{}` has no service `{}`; its services: {}",
                                    machine.name,
                                    s.get_ref(),
                                    known.join(", ")
                                ),
                            )
                        }
                    })
                    .collect()
            };
            let command = |c: &Spanned<String>| -> Result<String> {
                let what = format!("a command of phase `{}`", p.name.get_ref());
                Ok(self.shell_command(c, &runtime, &what)?.0)
            };
            let run = p.run.iter().map(command).collect::<Result<Vec<_>>>()?;
            let action =
                match p.action.get_ref().as_str() {
                    "up" => PhaseAction::Up,
                    "down" => PhaseAction::Down,
                    "run" if !run.is_empty() => PhaseAction::Run(run),
                    "run" => {
                        return self.err(
                            p.action.span().start,
                            "a `run` phase needs run = [\"command\", ...]",
                        );
                    }
                    "stop" => PhaseAction::Stop(services(&p.services)?),
                    "start" => PhaseAction::Start(services(&p.services)?),
                    "restart" => PhaseAction::Restart(services(&p.services)?),
                    other => return self.err(
                        p.action.span().start,
                        format!(
                            "unknown action `{other}`; allowed: up, down, run, stop, start, restart"
                        ),
                    ),
                };
            let mut env = BTreeMap::new();
            for (key, value) in &p.env {
                self.check_placeholders(value, &runtime)?;
                env.insert(key.get_ref().clone(), value.get_ref().clone());
            }
            let cleanup = p.cleanup.iter().map(command).collect::<Result<Vec<_>>>()?;
            let resume = match &p.resume {
                None => phases.len(),
                Some(target) => match phases.iter().position(|x| x.name == *target.get_ref()) {
                    Some(i) => i,
                    None if target.get_ref() == p.name.get_ref() => phases.len(),
                    None => {
                        return self.err(
                            target.span().start,
                            format!(
                                "resume names `{}`, which is not an earlier phase of this flow",
                                target.get_ref()
                            ),
                        );
                    }
                },
            };
            phases.push(Phase {
                name: p.name.get_ref().clone(),
                description: p.description.clone(),
                action,
                machine: machine.name.clone(),
                env,
                probes: p.probes,
                retries: p.retries,
                cleanup,
                resume,
                timeout: self.duration(p.timeout.as_ref(), Duration::from_secs(3600))?,
            });
        }
        if phases.is_empty() {
            return self.err(
                name.span().start,
                format!("flow `{}` has no phases", name.get_ref()),
            );
        }
        let mut probes: Vec<FlowProbe> = Vec::new();
        for raw_probe in &raw.probes {
            let r = raw_probe.get_ref();
            if probes.iter().any(|x| x.name == *r.name.get_ref()) {
                return self.err(
                    r.name.span().start,
                    format!(
                        "flow `{}` has two probes named `{}`",
                        name.get_ref(),
                        r.name.get_ref()
                    ),
                );
            }
            probes.push(self.probe(r, default_machine, vars, secrets)?);
        }
        // The flow's clean-up runs in the machine of its first phase.
        let first = machines
            .iter()
            .find(|m| m.name == phases[0].machine)
            .expect("phases name machines of the environment");
        let first_scope = Scope {
            vars,
            ports: Some(&first.ports),
            probe_secrets: None,
        };
        let cleanup = raw
            .cleanup
            .iter()
            .map(|c| Ok(self.shell_command(c, &first_scope, "a clean-up command")?.0))
            .collect::<Result<Vec<_>>>()?;
        if !probes.is_empty() && !phases.iter().any(|p| p.probes) {
            return self.err(
                name.span().start,
                "the flow declares probes but no phase has `probes = true`",
            );
        }
        Ok(Flow {
            name: name.get_ref().clone(),
            description: raw.description.clone(),
            default: raw.default,
            from_version: version(&raw.from_version)?,
            to_version: version(&raw.to_version)?,
            budget: self.budget(
                raw.max_failed_requests.as_ref(),
                raw.max_down_time.as_ref(),
                raw.min_uptime_pct.as_ref(),
            )?,
            cleanup,
            phases,
            probes,
        })
    }

    pub(super) fn cloud(
        &self,
        raw: &RawCloud,
        machines: &[Machine],
        vars: &BTreeMap<String, Var>,
        secrets: &BTreeMap<String, SecretSpec>,
    ) -> Result<Cloud> {
        let Some(machine) = machines.iter().find(|m| m.name == *raw.machine.get_ref()) else {
            let known: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
            return self.err(
                raw.machine.span().start,
                format!("[cloud] names machine `{}`, which this environment does not define; machines: {}", raw.machine.get_ref(), known.join(", ")),
            );
        };
        self.check_placeholders(
            &raw.auth_url,
            &Scope {
                vars,
                ports: Some(&machine.ports),
                probe_secrets: None,
            },
        )?;
        if !secrets.contains_key(raw.password_secret.get_ref()) {
            return self.err(
                raw.password_secret.span().start,
                format!(
                    "[cloud] password_secret `{}` is not declared in [secrets]",
                    raw.password_secret.get_ref()
                ),
            );
        }
        Ok(Cloud {
            machine: machine.name.clone(),
            auth_url: raw.auth_url.get_ref().clone(),
            username: raw.username.clone(),
            password_secret: raw.password_secret.get_ref().clone(),
            project: raw.project.clone(),
            user_domain: raw.user_domain.clone().unwrap_or_else(|| "Default".into()),
            project_domain: raw
                .project_domain
                .clone()
                .unwrap_or_else(|| "Default".into()),
            region: raw.region.clone().unwrap_or_else(|| "RegionOne".into()),
        })
    }

    /// An availability budget of a flow or a probe: a count, a duration (0 allowed), a share.
    pub(super) fn budget(
        &self,
        max_failed_requests: Option<&Spanned<i64>>,
        max_down_time: Option<&Spanned<toml::Value>>,
        min_uptime_pct: Option<&Spanned<toml::Value>>,
    ) -> Result<Budget> {
        let max_failed_requests = match max_failed_requests {
            Some(n) if *n.get_ref() < 0 => {
                return self.err(
                    n.span().start,
                    "max_failed_requests is a number of requests, 0 or more",
                );
            }
            n => n.map(|n| *n.get_ref() as u64),
        };
        let max_down_time = match max_down_time {
            None => None,
            Some(raw) => Some(match raw.get_ref() {
                toml::Value::Integer(n) if *n >= 0 => Duration::from_secs(*n as u64),
                toml::Value::String(s) => match humantime::parse_duration(s) {
                    Ok(d) => d,
                    Err(_) if s.trim() == "0" => Duration::ZERO,
                    Err(_) => return self.err(raw.span().start, format!("max_down_time `{s}` is not a duration: write seconds (0 or more) or a string like \"0s\", \"5s\", \"2m\"")),
                },
                other => return self.err(raw.span().start, format!("max_down_time `{other}` is not a duration: write seconds (0 or more) or a string like \"0s\", \"5s\", \"2m\"")),
            }),
        };
        let min_uptime_pct = match min_uptime_pct {
            None => None,
            Some(raw) => match raw.get_ref() {
                toml::Value::Integer(n) if (0..=100).contains(n) => Some(*n as f64),
                toml::Value::Float(x) if (0.0..=100.0).contains(x) => Some(*x),
                other => return self.err(raw.span().start, format!("min_uptime_pct `{other}` is a percentage of successful requests, from 0 to 100 (e.g. 99.5)")),
            },
        };
        Ok(Budget {
            max_failed_requests,
            max_down_time,
            min_uptime_pct,
        })
    }
}
