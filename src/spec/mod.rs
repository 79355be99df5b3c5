//! Environment specs: find them, parse the TOML, validate, resolve.
//!
//! parse ([`raw`]) -> validate and resolve (this module) -> [`model::Environment`]. Every error
//! names the file, line and column and says what is allowed; nothing past this module sees raw
//! TOML.

pub mod literal;
pub mod model;
pub mod raw;
pub mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::error::{Error, IoContext, Location, Result};
use model::*;
use raw::*;

const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_SECRET_LENGTH: usize = 32;

/// Placeholders a service command, readiness check or prestart hook may use besides vars.
pub const RUNTIME_NAMES: [&str; 2] = ["root", "run"];

/// Finds the environments folder: the flag or ENVBUILD_ENVS if given, else the nearest
/// `environments/` in the current directory or one of its parents (as cargo finds Cargo.toml).
pub fn find_envs_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        if dir.is_dir() {
            return Ok(dir.to_path_buf());
        }
        return Err(Error::Input(format!(
            "environments folder {} does not exist.\n  fix: pass an existing folder with --envs or ENVBUILD_ENVS",
            dir.display()
        )));
    }
    let cwd = std::env::current_dir().ctx(|| "reading the current directory".into())?;
    for dir in cwd.ancestors() {
        let candidate = dir.join("environments");
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    Err(Error::Input(format!(
        "no environments/ folder in {} or any parent.\n  fix: run envbuild from a project with an environments/ folder, or pass --envs DIR",
        cwd.display()
    )))
}

/// Names of the environments in `dir` (every `*.toml`), sorted.
pub fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let path = entry.ctx(|| format!("reading {}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "toml")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Loads and validates environment `name`, applying `--var` overrides.
pub fn load(dir: &Path, name: &str, overrides: &[(String, String)]) -> Result<Environment> {
    let file = dir.join(format!("{name}.toml"));
    if !file.is_file() {
        let known = list_names(dir)?;
        return Err(Error::Input(format!(
            "no environment `{name}` in {}.\n  known environments: {}",
            dir.display(),
            if known.is_empty() {
                "(none)".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let source = std::fs::read_to_string(&file).ctx(|| format!("reading {}", file.display()))?;
    Loader {
        file: &file,
        source: &source,
        dir: &dir.join(name),
    }
    .load(name, overrides)
}

/// Parses `name=value` as given to `--var`.
pub fn parse_var_override(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("`{text}` is not name=value")),
    }
}

struct Loader<'a> {
    file: &'a Path,
    source: &'a str,
    dir: &'a Path,
}

/// What a placeholder may name in a given place.
struct Scope<'a> {
    vars: &'a BTreeMap<String, Var>,
    ports: Option<&'a [Port]>,
    /// Probes only: `{{ token }}` and `{{ secrets.NAME }}` (rendered in memory, never logged).
    probe_secrets: Option<&'a BTreeMap<String, SecretSpec>>,
}

impl Scope<'_> {
    fn allows(&self, name: &str) -> bool {
        if self.vars.contains_key(name) {
            return true;
        }
        if let Some(secrets) = self.probe_secrets
            && (name == "token"
                || name
                    .strip_prefix("secrets.")
                    .is_some_and(|s| secrets.contains_key(s)))
        {
            return true;
        }
        let Some(ports) = self.ports else {
            return false;
        };
        if RUNTIME_NAMES.contains(&name) {
            return true;
        }
        name.strip_prefix("ports.")
            .is_some_and(|p| ports.iter().any(|port| port.name == p))
    }

    fn describe(&self) -> String {
        let mut names: Vec<String> = self.vars.keys().cloned().collect();
        if let Some(ports) = self.ports {
            names.extend(RUNTIME_NAMES.iter().map(|s| s.to_string()));
            names.extend(ports.iter().map(|p| format!("ports.{}", p.name)));
        }
        if let Some(secrets) = self.probe_secrets {
            names.push("token".into());
            names.extend(secrets.keys().map(|s| format!("secrets.{s}")));
        }
        if names.is_empty() {
            "nothing (declare vars in [vars])".into()
        } else {
            names.join(", ")
        }
    }
}

impl Loader<'_> {
    fn at(&self, offset: usize) -> Location {
        Location::at(self.file, self.source, offset)
    }

    fn err<T>(&self, offset: usize, message: impl Into<String>) -> Result<T> {
        Err(Error::spec(self.at(offset), message))
    }

    /// Source offset of byte `index` of the decoded string whose literal spans `span`.
    fn inside(&self, span: std::ops::Range<usize>, index: usize) -> usize {
        let offsets = literal::decoded_offsets(self.source, span.start);
        offsets
            .get(index)
            .or(offsets.last())
            .copied()
            .unwrap_or(span.start)
    }

    fn load(&self, name: &str, overrides: &[(String, String)]) -> Result<Environment> {
        let raw: RawEnvironment = toml::from_str(self.source).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            Error::spec(self.at(offset), e.message().trim().to_string())
        })?;
        let vars = self.vars(&raw, overrides)?;
        let secrets = self.secrets(&raw)?;
        if raw.machines.is_empty() {
            return self.err(
                0,
                "the environment defines no machines; add a [machines.NAME] table",
            );
        }
        let mut machines = Vec::new();
        for (machine_name, raw_machine) in &raw.machines {
            machines.push(self.machine(machine_name, raw_machine, &vars)?);
        }
        self.check_links(&raw)?;
        let machines = self.order_machines(machines, &raw)?;
        let mut flows = Vec::new();
        for (flow_name, raw_flow) in &raw.flows {
            flows.push(self.flow(flow_name, raw_flow, &machines, &vars, &secrets)?);
        }
        if flows.iter().filter(|f| f.default).count() > 1 {
            let second = raw
                .flows
                .iter()
                .filter(|(_, f)| f.default)
                .nth(1)
                .map_or(0, |(n, _)| n.span().start);
            return self.err(second, "only one flow may be `default = true`");
        }
        let cloud = match &raw.cloud {
            None => None,
            Some(cloud) => Some(self.cloud(cloud.get_ref(), &machines, &vars, &secrets)?),
        };
        Ok(Environment {
            name: name.to_string(),
            dir: self.dir.to_path_buf(),
            description: raw.description,
            vars,
            secrets,
            machines,
            cloud,
            flows,
        })
    }

    fn flow(
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
            for command in &p.run {
                self.check_placeholders(command, &runtime)?;
            }
            let action =
                match p.action.get_ref().as_str() {
                    "up" => PhaseAction::Up,
                    "down" => PhaseAction::Down,
                    "run" if !p.run.is_empty() => {
                        PhaseAction::Run(p.run.iter().map(|c| c.get_ref().clone()).collect())
                    }
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
            for step in &p.cleanup {
                self.check_placeholders(step, &runtime)?;
            }
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
                cleanup: p.cleanup.iter().map(|c| c.get_ref().clone()).collect(),
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
        let mut probes: Vec<HttpProbe> = Vec::new();
        let probe_scope = Scope {
            vars,
            ports: Some(&default_machine.ports),
            probe_secrets: Some(secrets),
        };
        for raw_probe in &raw.probes {
            let r = raw_probe.get_ref();
            self.check_name(&r.name, "probe")?;
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
            self.check_placeholders(&r.url, &probe_scope)?;
            if !["http://", "https://"]
                .iter()
                .any(|s| r.url.get_ref().starts_with(s))
            {
                return self.err(
                    r.url.span().start,
                    "a probe URL starts with http:// or https://",
                );
            }
            for value in r.headers.values() {
                self.check_placeholders(value, &probe_scope)?;
            }
            if let Some(body) = &r.body {
                self.check_placeholders(body, &probe_scope)?;
            }
            let method = r
                .method
                .as_ref()
                .map_or("GET".to_string(), |m| m.get_ref().to_uppercase());
            if !["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"].contains(&method.as_str()) {
                return self.err(
                    r.method.as_ref().unwrap().span().start,
                    "method is one of GET, POST, PUT, DELETE, HEAD, PATCH",
                );
            }
            let expect = match &r.expect {
                None => 200,
                Some(s) if (100..=599).contains(s.get_ref()) => *s.get_ref() as u16,
                Some(s) => {
                    return self.err(s.span().start, "expect is an HTTP status code (100-599)");
                }
            };
            let rate_hz = match &r.rate {
                None => 1.0,
                Some(rate) if *rate.get_ref() > 0.0 && *rate.get_ref() <= 1000.0 => *rate.get_ref(),
                Some(rate) => {
                    return self.err(
                        rate.span().start,
                        "rate is requests per second, above 0 and at most 1000",
                    );
                }
            };
            probes.push(HttpProbe {
                name: r.name.get_ref().clone(),
                method,
                url: r.url.get_ref().clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                    .collect(),
                body: r.body.as_ref().map(|b| b.get_ref().clone()),
                expect,
                rate_hz,
                timeout: self.duration(r.timeout.as_ref(), Duration::from_secs(5))?,
                max_in_flight: match &r.max_in_flight {
                    None => None,
                    Some(n) if (1..=1000).contains(n.get_ref()) => Some(*n.get_ref() as usize),
                    Some(n) => {
                        return self.err(n.span().start, "max_in_flight is from 1 to 1000");
                    }
                },
                machine: default_machine.name.clone(),
            });
        }
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
            max_failed_requests: match &raw.max_failed_requests {
                None => None,
                Some(n) if *n.get_ref() >= 0 => Some(*n.get_ref() as u64),
                Some(n) => {
                    return self.err(
                        n.span().start,
                        "max_failed_requests is a number of requests, 0 or more",
                    );
                }
            },
            cleanup: raw.cleanup.iter().map(|c| c.get_ref().clone()).collect(),
            phases,
            probes,
        })
    }

    fn cloud(
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

    fn check_name(&self, name: &Name, what: &str) -> Result<()> {
        let valid = name
            .get_ref()
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid {
            return Ok(());
        }
        self.err(
            name.span().start,
            format!(
                "`{}` is not a valid {what} name: use lowercase letters, digits, `-` and `_`, starting with a letter",
                name.get_ref()
            ),
        )
    }

    fn vars(
        &self,
        raw: &RawEnvironment,
        overrides: &[(String, String)],
    ) -> Result<BTreeMap<String, Var>> {
        let mut vars = BTreeMap::new();
        for (name, value) in &raw.vars {
            self.check_name(name, "var")?;
            let text = match value.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return self.err(
                        value.span().start,
                        format!(
                            "var `{}` is a {}; a var is a string, number or boolean",
                            name.get_ref(),
                            other.type_str()
                        ),
                    );
                }
            };
            vars.insert(
                name.get_ref().clone(),
                Var {
                    value: text,
                    overridden: false,
                },
            );
        }
        for (name, value) in overrides {
            let Some(var) = vars.get_mut(name) else {
                let declared: Vec<&str> = vars.keys().map(String::as_str).collect();
                return Err(Error::Input(format!(
                    "--var {name}: environment file {} declares no var `{name}`.\n  declared vars: {}",
                    self.file.display(),
                    if declared.is_empty() {
                        "(none)".into()
                    } else {
                        declared.join(", ")
                    }
                )));
            };
            *var = Var {
                value: value.clone(),
                overridden: true,
            };
        }
        Ok(vars)
    }

    fn secrets(&self, raw: &RawEnvironment) -> Result<BTreeMap<String, SecretSpec>> {
        let mut secrets = BTreeMap::new();
        for (name, secret) in &raw.secrets {
            self.check_name(name, "secret")?;
            if secret.generate.get_ref() != "password" {
                return self.err(
                    secret.generate.span().start,
                    format!(
                        "unknown secret generator `{}`; allowed: \"password\"",
                        secret.generate.get_ref()
                    ),
                );
            }
            let length = match &secret.length {
                None => DEFAULT_SECRET_LENGTH,
                Some(l) if (16..=128).contains(l.get_ref()) => *l.get_ref() as usize,
                Some(l) => {
                    return self.err(
                        l.span().start,
                        "a secret's length must be between 16 and 128",
                    );
                }
            };
            secrets.insert(name.get_ref().clone(), SecretSpec { length });
        }
        Ok(secrets)
    }

    fn machine(
        &self,
        name: &Name,
        raw: &RawMachine,
        vars: &BTreeMap<String, Var>,
    ) -> Result<Machine> {
        self.check_name(name, "machine")?;
        let backend = match &raw.backend {
            None => BackendKind::Local,
            Some(b) => match b.get_ref().as_str() {
                "local" => BackendKind::Local,
                "libvirt" => BackendKind::Libvirt,
                "vagrant" => BackendKind::Vagrant,
                other => {
                    return self.err(
                        b.span().start,
                        format!(
                            "unknown backend `{other}`; allowed: {}",
                            BackendKind::ALL.join(", ")
                        ),
                    );
                }
            },
        };
        let vm = self.vm(name, raw, backend)?;
        let mut ports = self.ports(&raw.ports)?;
        ports.extend(vm.forward.keys().map(|name| Port {
            name: name.clone(),
            fixed: None,
        }));
        let runtime = Scope {
            vars,
            ports: Some(&ports),
            probe_secrets: None,
        };
        let mut prestart = Vec::new();
        for hook in &raw.prestart {
            self.check_placeholders(hook, &runtime)?;
            prestart.push(hook.get_ref().clone());
        }
        let mut stages = Vec::new();
        for stage in &raw.stages {
            if let Some(first) = stages
                .iter()
                .position(|s: &Stage| s.name == *stage.get_ref().name.get_ref())
            {
                let _ = first;
                return self.err(
                    stage.get_ref().name.span().start,
                    format!(
                        "machine `{}` has two stages named `{}`; stage names must be unique",
                        name.get_ref(),
                        stage.get_ref().name.get_ref()
                    ),
                );
            }
            stages.push(self.stage(stage.get_ref(), vars)?);
        }
        // A VM with no stages is its base image, booted by `up`.
        if stages.is_empty() && raw.services.is_empty() && backend != BackendKind::Libvirt {
            return self.err(
                name.span().start,
                format!("machine `{}` has no stages and no services", name.get_ref()),
            );
        }
        let mut services: Vec<Service> = Vec::new();
        for service in &raw.services {
            let service = service.get_ref();
            self.check_name(&service.name, "service")?;
            if services.iter().any(|s| s.name == *service.name.get_ref()) {
                return self.err(
                    service.name.span().start,
                    format!(
                        "machine `{}` has two services named `{}`",
                        name.get_ref(),
                        service.name.get_ref()
                    ),
                );
            }
            services.push(self.service(service, &runtime)?);
        }
        Ok(Machine {
            name: name.get_ref().clone(),
            description: raw.description.clone(),
            backend,
            base: self.base(raw.base.as_ref(), backend)?,
            resources: self.resources(raw.resources.as_ref())?,
            requires: self.requires(&raw.requires)?,
            ports,
            prestart,
            stages,
            services,
            vm,
        })
    }

    /// A private link is a point-to-point QEMU UDP socket pair: exactly two machines join it.
    fn check_links(&self, raw: &RawEnvironment) -> Result<()> {
        let mut members: BTreeMap<&str, Vec<&Name>> = BTreeMap::new();
        for machine in raw.machines.values() {
            for link in machine.networks.keys() {
                members.entry(link.get_ref()).or_default().push(link);
            }
        }
        for (link, names) in members {
            if names.len() != 2 {
                return self.err(
                    names[names.len() - 1].span().start,
                    format!(
                        "network `{link}` is joined by {} machine(s); a private link joins exactly two (a point-to-point QEMU UDP link on loopback)",
                        names.len()
                    ),
                );
            }
        }
        Ok(())
    }

    /// The VM keys of a machine: only libvirt machines take them, and they take no host
    /// services (their services are units inside the guest, reached through `forward`).
    fn vm(&self, name: &Name, raw: &RawMachine, backend: BackendKind) -> Result<VmSpec> {
        let mut vm = VmSpec::default();
        if backend != BackendKind::Libvirt {
            let first = raw
                .uri
                .as_ref()
                .map(|u| u.span().start)
                .or(raw.forward.keys().next().map(|k| k.span().start))
                .or(raw.networks.keys().next().map(|k| k.span().start));
            if let Some(offset) = first {
                return self.err(
                    offset,
                    "`uri`, `forward` and `networks` are for VM machines: add backend = \"libvirt\"",
                );
            }
            return Ok(vm);
        }
        if let Some(hook) = raw.prestart.first() {
            return self.err(
                hook.span().start,
                "a libvirt machine has no host-side prestart hooks: do the work in a stage, or in a unit inside the guest",
            );
        }
        if let Some(service) = raw.services.first() {
            return self.err(
                service.span().start,
                "a libvirt machine runs its services inside the guest: enable a systemd unit in a stage and reach it with `forward = { NAME = GUEST_PORT }`",
            );
        }
        if let Some((port, _)) = raw.ports.iter().next() {
            return self.err(
                port.span().start,
                "a libvirt machine's host ports are its forwarded guest ports: use `forward = { NAME = GUEST_PORT }` instead of `ports`",
            );
        }
        match &raw.base {
            Some(base)
                if base.get_ref().image.is_some() || base.get_ref().debootstrap.is_some() => {}
            _ => {
                return self.err(
                    name.span().start,
                    format!(
                        "libvirt machine `{}` needs a base: base = {{ image = \"URL\", sha256 = \"...\" }} or base = {{ debootstrap = {{ suite = \"bookworm\" }} }}",
                        name.get_ref()
                    ),
                );
            }
        }
        if let Some(uri) = &raw.uri {
            let u = uri.get_ref();
            if !(u.starts_with("qemu:") || u.starts_with("qemu+")) {
                return self.err(
                    uri.span().start,
                    format!("`{u}` is not a QEMU libvirt URI: use qemu:///system, qemu:///session or qemu+ssh://HOST/system"),
                );
            }
            vm.uri = Some(u.clone());
        }
        for (port_name, guest) in &raw.forward {
            self.check_name(port_name, "forwarded port")?;
            let Ok(port) = u16::try_from(*guest.get_ref()) else {
                return self.err(
                    guest.span().start,
                    "a guest port is a number from 1 to 65535",
                );
            };
            if port == 0 {
                return self.err(
                    guest.span().start,
                    "a guest port is a number from 1 to 65535",
                );
            }
            if port_name.get_ref() == "ssh" {
                return self.err(
                    port_name.span().start,
                    "`ssh` is forwarded by envbuild itself (guest port 22); pick another name",
                );
            }
            vm.forward.insert(port_name.get_ref().clone(), port);
        }
        for (link, address) in &raw.networks {
            self.check_name(link, "network")?;
            if !is_ipv4_cidr(address.get_ref()) {
                return self.err(
                    address.span().start,
                    format!(
                        "`{}` is not an IPv4 address with a prefix length, e.g. \"10.0.0.2/24\"",
                        address.get_ref()
                    ),
                );
            }
            vm.links
                .insert(link.get_ref().clone(), address.get_ref().clone());
        }
        Ok(vm)
    }

    fn base(&self, raw: Option<&Spanned<RawBase>>, backend: BackendKind) -> Result<Base> {
        let Some(raw) = raw else {
            return Ok(Base::default());
        };
        let mut base = Base::default();
        for tool in &raw.get_ref().host_tools {
            if !tool.get_ref().starts_with('/') {
                return self.err(
                    tool.span().start,
                    "a host tool is an absolute path, e.g. \"/usr/bin/python3\"",
                );
            }
            base.host_tools.push(PathBuf::from(tool.get_ref()));
        }
        if let Some(recipe) = &raw.get_ref().debootstrap {
            if backend != BackendKind::Libvirt {
                return self.err(
                    recipe.span().start,
                    "a debootstrap base is a VM disk image: add backend = \"libvirt\"",
                );
            }
            if let Some(image) = &raw.get_ref().image {
                return self.err(
                    image.span().start,
                    "a base is either a pinned image or a debootstrap recipe, not both",
                );
            }
            let recipe = recipe.get_ref();
            let mut packages = Vec::new();
            for package in &recipe.packages {
                let p = package.get_ref();
                if p.is_empty()
                    || !p
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
                {
                    return self.err(
                        package.span().start,
                        format!("`{p}` is not a Debian package name"),
                    );
                }
                packages.push(p.clone());
            }
            let suite = recipe.suite.get_ref();
            if suite.is_empty() || !suite.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return self.err(
                    recipe.suite.span().start,
                    format!("`{suite}` is not a Debian suite name (e.g. \"bookworm\")"),
                );
            }
            base.debootstrap = Some(Debootstrap {
                suite: suite.clone(),
                mirror: recipe.mirror.as_ref().map_or_else(
                    || "http://deb.debian.org/debian".to_string(),
                    |m| m.get_ref().clone(),
                ),
                packages,
            });
        }
        match (&raw.get_ref().image, &raw.get_ref().sha256) {
            (None, None) => {}
            (Some(url), Some(sha)) => {
                self.check_sha256(sha)?;
                if backend == BackendKind::Local {
                    return self.err(
                        url.span().start,
                        "the local backend runs on this host and takes no image; use host_tools",
                    );
                }
                if !(url.get_ref().starts_with("http://") || url.get_ref().starts_with("https://"))
                {
                    return self.err(
                        url.span().start,
                        "an image URL starts with http:// or https:// (serve a local file from http://127.0.0.1:PORT/)",
                    );
                }
                base.image = Some(PinnedImage {
                    url: url.get_ref().clone(),
                    sha256: sha.get_ref().to_lowercase(),
                    pinned_at: self.at(sha.span().start).to_string(),
                });
            }
            (Some(url), None) => {
                return self.err(
                    url.span().start,
                    "an image needs its sha256 pin: add sha256 = \"<64 hex digits>\"",
                );
            }
            (None, Some(sha)) => {
                return self.err(
                    sha.span().start,
                    "sha256 pins an image: add image = \"URL\"",
                );
            }
        }
        Ok(base)
    }

    fn check_sha256(&self, sha: &Spanned<String>) -> Result<()> {
        let s = sha.get_ref();
        if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(());
        }
        self.err(
            sha.span().start,
            format!(
                "`{s}` is not a sha256: expected 64 hexadecimal digits, got {} characters",
                s.len()
            ),
        )
    }

    fn resources(&self, raw: Option<&RawResources>) -> Result<Resources> {
        let mut resources = Resources {
            cpus: 1,
            memory_mib: 1024,
            disk_mib: 8192,
        };
        let Some(raw) = raw else { return Ok(resources) };
        if let Some(cpus) = &raw.cpus {
            if !(1..=256).contains(cpus.get_ref()) {
                return self.err(cpus.span().start, "cpus must be between 1 and 256");
            }
            resources.cpus = *cpus.get_ref() as u32;
        }
        if let Some(memory) = &raw.memory {
            resources.memory_mib = self.size_mib(memory)?;
        }
        if let Some(disk) = &raw.disk {
            resources.disk_mib = self.size_mib(disk)?;
        }
        Ok(resources)
    }

    fn size_mib(&self, text: &Spanned<String>) -> Result<u64> {
        let s = text.get_ref().trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let factor = match unit.trim() {
            "MiB" | "M" => Some(1),
            "GiB" | "G" => Some(1024),
            "TiB" | "T" => Some(1024 * 1024),
            _ => None,
        };
        match (number.parse::<u64>(), factor) {
            (Ok(n), Some(f)) if n > 0 => Ok(n * f),
            _ => self.err(
                text.span().start,
                format!("`{s}` is not a size: write e.g. \"512MiB\" or \"4GiB\""),
            ),
        }
    }

    fn requires(&self, raw: &[Spanned<RawRequirement>]) -> Result<Vec<Requirement>> {
        raw.iter()
            .map(|r| {
                let probe = match (&r.get_ref().program, &r.get_ref().command) {
                    (Some(p), None) => Probe::Program(p.get_ref().clone()),
                    (None, Some(c)) => Probe::Command(c.get_ref().clone()),
                    _ => return self.err(
                        r.span().start,
                        "a requirement has exactly one of `program` or `command`, and a `package`",
                    ),
                };
                Ok(Requirement {
                    probe,
                    package: r.get_ref().package.get_ref().clone(),
                })
            })
            .collect()
    }

    fn ports(&self, raw: &BTreeMap<Name, Spanned<toml::Value>>) -> Result<Vec<Port>> {
        let mut ports: Vec<Port> = Vec::new();
        for (name, value) in raw {
            self.check_name(name, "port")?;
            let fixed = match value.get_ref() {
                toml::Value::String(s) if s == "auto" => None,
                toml::Value::Integer(n) if (1..=65535).contains(n) => {
                    let n = *n as u16;
                    if ports.iter().any(|p| p.fixed == Some(n)) {
                        return self.err(
                            value.span().start,
                            format!("port {n} is used twice in this machine"),
                        );
                    }
                    Some(n)
                }
                _ => return self.err(
                    value.span().start,
                    "a port is \"auto\" (a free loopback port at up) or a number from 1 to 65535",
                ),
            };
            ports.push(Port {
                name: name.get_ref().clone(),
                fixed,
            });
        }
        Ok(ports)
    }

    fn check_placeholders(&self, text: &Spanned<String>, scope: &Scope) -> Result<Vec<String>> {
        let found = template::placeholders(text.get_ref())
            .map_err(|e| Error::spec(self.at(self.inside(text.span(), e.offset)), e.message))?;
        let mut names = Vec::new();
        for placeholder in found {
            if placeholder.name.starts_with("secrets.") && scope.probe_secrets.is_none() {
                return self.err(
                    self.inside(text.span(), placeholder.offset),
                    format!(
                        "secrets are never rendered into specs or commands; read ${} instead",
                        secret_env_name(placeholder.name.trim_start_matches("secrets."))
                    ),
                );
            }
            if !scope.allows(&placeholder.name) {
                return self.err(
                    self.inside(text.span(), placeholder.offset),
                    format!(
                        "`{{{{ {} }}}}` names nothing defined here; allowed: {}",
                        placeholder.name,
                        scope.describe()
                    ),
                );
            }
            names.push(placeholder.name);
        }
        Ok(names)
    }

    /// An input or template path with its `{{ var }}` placeholders rendered (e.g. a lock file
    /// per version); the vars it names count as used by the stage.
    fn rendered_path(
        &self,
        path: &Spanned<String>,
        scope: &Scope,
        used: &mut BTreeSet<String>,
    ) -> Result<Spanned<String>> {
        let names = self.check_placeholders(path, scope)?;
        if names.is_empty() {
            return Ok(path.clone());
        }
        used.extend(names);
        let rendered = template::render(path.get_ref(), |n| {
            scope.vars.get(n).map(|v| v.value.clone())
        })
        .expect("placeholders were validated");
        Ok(Spanned::new(path.span(), rendered))
    }

    fn relative_input(&self, path: &Spanned<String>, what: &str) -> Result<String> {
        let p = Path::new(path.get_ref());
        let clean = !path.get_ref().is_empty()
            && p.is_relative()
            && p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !clean {
            return self.err(
                path.span().start,
                format!(
                    "{what} `{}` must be a relative path inside {} without `..`",
                    path.get_ref(),
                    self.dir.display()
                ),
            );
        }
        let full = self.dir.join(p);
        if std::fs::symlink_metadata(&full).is_err() {
            return self.err(
                path.span().start,
                format!(
                    "{what} `{}` does not exist: expected {}",
                    path.get_ref(),
                    full.display()
                ),
            );
        }
        Ok(path.get_ref().trim_end_matches('/').to_string())
    }

    fn stage(&self, raw: &RawStage, vars: &BTreeMap<String, Var>) -> Result<Stage> {
        self.check_name(&raw.name, "stage")?;
        let scope = Scope {
            vars,
            ports: None,
            probe_secrets: None,
        };
        let mut used = BTreeSet::new();
        for var in &raw.vars {
            if !vars.contains_key(var.get_ref()) {
                let declared: Vec<&str> = vars.keys().map(String::as_str).collect();
                return self.err(
                    var.span().start,
                    format!(
                        "stage uses var `{}` but [vars] does not declare it; declared vars: {}",
                        var.get_ref(),
                        if declared.is_empty() {
                            "(none)".to_string()
                        } else {
                            declared.join(", ")
                        }
                    ),
                );
            }
            used.insert(var.get_ref().clone());
        }
        let mut after = Vec::new();
        for reference in &raw.after {
            match reference.get_ref().split_once('.') {
                Some((m, s)) if !m.is_empty() && !s.is_empty() => {
                    after.push((m.to_string(), s.to_string()))
                }
                _ => {
                    return self.err(
                        reference.span().start,
                        "`after` names a stage of another machine as \"machine.stage\"",
                    );
                }
            }
        }
        let mut inputs = Vec::new();
        for input in &raw.inputs {
            let input = self.rendered_path(input, &scope, &mut used)?;
            inputs.push(self.relative_input(&input, "input")?);
        }
        let mut templates = Vec::new();
        for template in &raw.templates {
            let template = &self.rendered_path(template, &scope, &mut used)?;
            let relative = self.relative_input(template, "template")?;
            used.extend(self.template_file_vars(&relative, template, &scope)?);
            templates.push(relative);
        }
        let mut sources = Vec::new();
        for source in &raw.sources {
            let s = source.get_ref();
            self.check_sha256(&s.sha256)?;
            let url = s.url.get_ref();
            if !(url.starts_with("https://")
                || url.starts_with("http://")
                || url.starts_with("file://"))
            {
                return self.err(
                    s.url.span().start,
                    "a source url starts with https://, http:// or file://",
                );
            }
            if s.name.get_ref().contains('/') || s.name.get_ref().starts_with('.') {
                return self.err(s.name.span().start, "a source name is a plain file name");
            }
            sources.push(Source {
                name: s.name.get_ref().clone(),
                url: url.clone(),
                sha256: s.sha256.get_ref().to_lowercase(),
            });
        }
        let mut env = BTreeMap::new();
        for (key, value) in &raw.env {
            let valid = key
                .get_ref()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid || key.get_ref().starts_with("ENVBUILD_") {
                return self.err(key.span().start, format!("`{}` is not a usable variable name (letters, digits, `_`; ENVBUILD_ is reserved)", key.get_ref()));
            }
            used.extend(self.check_placeholders(value, &scope)?);
            env.insert(key.get_ref().clone(), value.get_ref().clone());
        }
        if raw.steps.is_empty() {
            return self.err(
                raw.name.span().start,
                format!(
                    "stage `{}` has no steps; add steps = [\"...\"]",
                    raw.name.get_ref()
                ),
            );
        }
        for step in &raw.steps {
            used.extend(self.check_placeholders(step, &scope)?);
        }
        let lookup = |n: &str| vars.get(n).map(|v| v.value.clone());
        let render = |s: &str| template::render(s, lookup).expect("placeholders were validated");
        Ok(Stage {
            name: raw.name.get_ref().clone(),
            description: raw.description.clone(),
            after,
            inputs,
            templates,
            sources,
            vars: used
                .into_iter()
                .map(|n| {
                    let v = vars[&n].value.clone();
                    (n, v)
                })
                .collect(),
            env: env.iter().map(|(k, v)| (k.clone(), render(v))).collect(),
            steps: raw.steps.iter().map(|s| render(s.get_ref())).collect(),
            env_template: env,
            steps_template: raw.steps.iter().map(|s| s.get_ref().clone()).collect(),
            timeout: self.duration(raw.timeout.as_ref(), DEFAULT_STAGE_TIMEOUT)?,
        })
    }

    /// Vars named by a template file's placeholders; errors point into the template file itself.
    fn template_file_vars(
        &self,
        relative: &str,
        declared: &Spanned<String>,
        scope: &Scope,
    ) -> Result<Vec<String>> {
        let path = self.dir.join(relative);
        if !path.is_file() {
            return self.err(
                declared.span().start,
                format!("template `{relative}` must be a file"),
            );
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::spec(
                self.at(declared.span().start),
                format!("template `{relative}` is not readable UTF-8 text: {e}"),
            )
        })?;
        let found = template::placeholders(&text)
            .map_err(|e| Error::spec(Location::at(&path, &text, e.offset), e.message))?;
        let mut names = Vec::new();
        for placeholder in found {
            if !scope.allows(&placeholder.name) {
                return Err(Error::spec(
                    Location::at(&path, &text, placeholder.offset),
                    format!(
                        "`{{{{ {} }}}}` is not a declared var; allowed: {}",
                        placeholder.name,
                        scope.describe()
                    ),
                ));
            }
            names.push(placeholder.name);
        }
        Ok(names)
    }

    fn service(&self, raw: &RawService, scope: &Scope) -> Result<Service> {
        self.check_placeholders(&raw.command, scope)?;
        let stop_signal = match raw.stop_signal.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("TERM") => libc::SIGTERM,
            Some("INT") => libc::SIGINT,
            Some("QUIT") => libc::SIGQUIT,
            Some("HUP") => libc::SIGHUP,
            Some("KILL") => libc::SIGKILL,
            Some(other) => {
                return self.err(
                    raw.stop_signal.as_ref().unwrap().span().start,
                    format!("unknown stop_signal `{other}`; allowed: TERM, INT, QUIT, HUP, KILL"),
                );
            }
        };
        let ready = match &raw.ready {
            None => None,
            Some(ready) => {
                let r = ready.get_ref();
                let check = match (&r.tcp, &r.http, &r.command) {
                    (Some(addr), None, None) => {
                        self.check_placeholders(addr, scope)?;
                        ReadyCheck::Tcp(addr.get_ref().clone())
                    }
                    (None, Some(url), None) => {
                        self.check_placeholders(url, scope)?;
                        if !["http://", "https://"]
                            .iter()
                            .any(|s| url.get_ref().starts_with(s))
                        {
                            return self.err(
                                url.span().start,
                                "a readiness URL starts with http:// or https://",
                            );
                        }
                        let status = match &r.status {
                            None => 200,
                            Some(s) if (100..=599).contains(s.get_ref()) => *s.get_ref() as u16,
                            Some(s) => {
                                return self.err(
                                    s.span().start,
                                    "status is an HTTP status code (100-599)",
                                );
                            }
                        };
                        ReadyCheck::Http {
                            url: url.get_ref().clone(),
                            status,
                        }
                    }
                    (None, None, Some(command)) => {
                        self.check_placeholders(command, scope)?;
                        ReadyCheck::Command(command.get_ref().clone())
                    }
                    _ => {
                        return self.err(
                            ready.span().start,
                            "a readiness check has exactly one of `tcp`, `http` or `command`",
                        );
                    }
                };
                Some(Ready {
                    check,
                    timeout: self.duration(r.timeout.as_ref(), DEFAULT_READY_TIMEOUT)?,
                })
            }
        };
        if let Some(url) = &raw.url {
            self.check_placeholders(url, scope)?;
        }
        Ok(Service {
            name: raw.name.get_ref().clone(),
            command: raw.command.get_ref().clone(),
            url: raw.url.as_ref().map(|u| u.get_ref().clone()),
            ready,
            stop_signal,
        })
    }

    fn duration(&self, raw: Option<&Spanned<toml::Value>>, default: Duration) -> Result<Duration> {
        let Some(raw) = raw else { return Ok(default) };
        let parsed = match raw.get_ref() {
            toml::Value::Integer(n) if *n > 0 => Some(Duration::from_secs(*n as u64)),
            toml::Value::String(s) => humantime::parse_duration(s).ok().filter(|d| !d.is_zero()),
            _ => None,
        };
        parsed.map_or_else(
            || self.err(raw.span().start, format!("`{}` is not a duration: write a positive number of seconds or a string like \"90s\", \"10m\", \"1h 30m\"", raw.get_ref())),
            Ok,
        )
    }

    /// Checks `after` references and orders machines so that each follows those it waits for.
    fn order_machines(&self, machines: Vec<Machine>, raw: &RawEnvironment) -> Result<Vec<Machine>> {
        // Where `machine.stage` says `after = [.., "target", ..]`; `target` None: its first entry.
        let span_of = |machine: &str, stage: &str, target: Option<&str>| -> usize {
            raw.machines
                .iter()
                .find(|(n, _)| n.get_ref() == machine)
                .and_then(|(_, m)| {
                    m.stages
                        .iter()
                        .find(|s| s.get_ref().name.get_ref() == stage)
                })
                .and_then(|s| {
                    let after = &s.get_ref().after;
                    match target {
                        Some(t) => after
                            .iter()
                            .find(|a| a.get_ref() == t || a.get_ref().split('.').next() == Some(t)),
                        None => after.first(),
                    }
                })
                .map_or(0, |a| a.span().start)
        };
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for machine in &machines {
            let entry = deps.entry(machine.name.clone()).or_default();
            for stage in &machine.stages {
                for (other, other_stage) in &stage.after {
                    let at = span_of(
                        &machine.name,
                        &stage.name,
                        Some(&format!("{other}.{other_stage}")),
                    );
                    if *other == machine.name {
                        return self.err(at, format!("`after = \"{other}.{other_stage}\"` names this machine; stages of one machine already run in order"));
                    }
                    let Some(target) = machines.iter().find(|m| m.name == *other) else {
                        let known: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
                        return self.err(at, format!("`after` names machine `{other}`, which this environment does not define; machines: {}", known.join(", ")));
                    };
                    if !target.stages.iter().any(|s| s.name == *other_stage) {
                        let known: Vec<&str> =
                            target.stages.iter().map(|s| s.name.as_str()).collect();
                        return self.err(
                            at,
                            format!(
                                "machine `{other}` has no stage `{other_stage}`; its stages: {}",
                                known.join(", ")
                            ),
                        );
                    }
                    entry.insert(other.clone());
                }
            }
        }
        let mut ordered: Vec<Machine> = Vec::new();
        let mut pending = machines;
        while !pending.is_empty() {
            let ready = pending.iter().position(|m| {
                deps[&m.name]
                    .iter()
                    .all(|d| ordered.iter().any(|o| o.name == *d))
            });
            match ready {
                Some(i) => ordered.push(pending.remove(i)),
                None => {
                    // Walk from a stuck machine until a machine repeats: that loop is the cycle.
                    let mut path: Vec<String> = vec![pending[0].name.clone()];
                    loop {
                        let current = path.last().expect("path starts non-empty");
                        let next = deps[current]
                            .iter()
                            .find(|d| pending.iter().any(|p| p.name == **d))
                            .expect("a stuck machine waits for a pending one")
                            .clone();
                        if let Some(at) = path.iter().position(|m| *m == next) {
                            let mut cycle = path.split_off(at);
                            cycle.push(next);
                            let (from, to) = (&cycle[0], &cycle[1]);
                            let machine = pending
                                .iter()
                                .find(|m| m.name == *from)
                                .expect("cycle members are pending");
                            let stage = machine
                                .stages
                                .iter()
                                .find(|s| s.after.iter().any(|(m, _)| m == to))
                                .expect("an edge has a stage");
                            return self.err(
                                span_of(from, &stage.name, Some(to)),
                                format!("machines wait for each other in a cycle ({}); remove one `after`", cycle.join(" -> ")),
                            );
                        }
                        path.push(next);
                    }
                }
            }
        }
        Ok(ordered)
    }
}

/// The environment variable that carries secret `name` to prestart hooks and services.
fn is_ipv4_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    address.parse::<std::net::Ipv4Addr>().is_ok()
        && prefix.parse::<u8>().is_ok_and(|p| (8..=30).contains(&p))
}

pub fn secret_env_name(name: &str) -> String {
    format!("ENVBUILD_SECRET_{}", name.to_uppercase().replace('-', "_"))
}

/// The environment variable that carries var `name` to steps.
pub fn var_env_name(name: &str) -> String {
    format!("ENVBUILD_VAR_{}", name.to_uppercase().replace('-', "_"))
}
