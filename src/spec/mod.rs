//! Environment specs: find them, parse the TOML, validate, resolve.
//!
//! parse ([`raw`]) -> validate and resolve (this module) -> [`model::Environment`]. Every error
//! names the file, line and column and says what is allowed; nothing past this module sees raw
//! TOML.
//!
//! ```text
//! discovery.rs  the names of the specs in the environments folder
//! names.rs      the one rule every name follows
//! inputs.rs     where an input path leads, and that it stays inside the environment's folder
//! mod.rs        the loader: the top-level table, vars, secrets, placeholders, durations
//! machines.rs   [machines.NAME]: backend, base, resources, VM keys, ports, requires, services
//! stages.rs     [[machines.NAME.stages]]: steps, inputs, templates
//! lock.rs       sources (files, git trees), the lock file that pins floating ones, [[locks]]
//! flows.rs      [flows.NAME] and [cloud]
//! shell.rs      placeholders in shell text, as quoted references to environment variables
//! order.rs      `after` references, and machines sorted so each follows those it waits for
//! ```

pub mod literal;
pub mod lock;
pub mod model;
pub mod names;
pub mod raw;
pub mod shell;
pub mod template;

mod discovery;
mod flows;
mod inputs;
mod machines;
mod order;
mod probes;
mod stages;

pub use discovery::list_names;
pub use probes::{RATE_RANGE, is_rate};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::error::{Error, IoContext, Location, Result};
use model::*;
use raw::*;

const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping service gets after its stop signal before SIGKILL.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_SECRET_LENGTH: usize = 32;

/// Placeholders a service command, readiness check or prestart hook may use besides vars.
pub const RUNTIME_NAMES: [&str; 2] = ["root", "run"];

/// Loads and validates environment `name`, applying `--var` overrides.
pub fn load(dir: &Path, name: &str, overrides: &[(String, String)]) -> Result<Environment> {
    load_with(dir, name, overrides, false)
}

/// Loads `name` for `envbuild lock`: an input that one of its `[[locks]]` makes may be missing.
pub fn load_for_lock(
    dir: &Path,
    name: &str,
    overrides: &[(String, String)],
) -> Result<Environment> {
    load_with(dir, name, overrides, true)
}

fn load_with(
    dir: &Path,
    name: &str,
    overrides: &[(String, String)],
    making: bool,
) -> Result<Environment> {
    let file = dir.join(format!("{name}.toml"));
    if !names::is_valid(name) || !file.is_file() {
        let known = list_names(dir)?;
        let problem = if names::is_valid(name) {
            format!("no environment `{name}` in {}", dir.display())
        } else {
            // Never a path: `../x` would load a spec from elsewhere and make state there.
            format!("`{name}` is not a valid environment name ({})", names::RULE)
        };
        return Err(Error::Input(format!(
            "{problem}.\n  known environments: {}",
            if known.is_empty() {
                "(none)".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let source = read_utf8(&file)?;
    Loader {
        file: &file,
        source: &source,
        dir: &dir.join(name),
        lock: lock::LockContext::new(&file, name, overrides, making)?,
    }
    .load(name, overrides)
}

/// A spec file's text; a file that is not UTF-8 is bad input located at its first bad byte.
fn read_utf8(file: &Path) -> Result<String> {
    let bytes = std::fs::read(file).ctx(|| format!("reading {}", file.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let bytes = e.into_bytes();
        let valid = std::str::from_utf8(&bytes[..offset]).expect("the prefix is valid");
        Error::spec(
            Location::at(file, valid, offset),
            format!(
                "the file is not UTF-8 text: byte 0x{:02X} at byte offset {offset} is not valid UTF-8",
                bytes[offset]
            ),
        )
        .fix("save the file as UTF-8")
    })
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
    lock: lock::LockContext,
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
        let recipes = self.lock_recipes(&raw, &vars)?;
        let _ = self.lock.recipes.set(recipes);
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
        self.check_bastion(&raw)?;
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
            description: raw.description,
            vars,
            secrets,
            machines,
            cloud,
            flows,
            lock_recipes: self.lock.recipes.get().cloned().unwrap_or_default(),
            lock_file: self.lock.file.clone(),
        })
    }

    fn check_name(&self, name: &Name, what: &str) -> Result<()> {
        if names::is_valid(name.get_ref()) {
            return Ok(());
        }
        self.err(
            name.span().start,
            format!(
                "`{}` is not a valid {what} name: {}",
                name.get_ref(),
                names::RULE
            ),
        )
    }

    /// Names that would share one environment variable (`db-host` and `db_host` are both
    /// `..._DB_HOST`) are refused at the second one.
    fn check_env_names<'n>(
        &self,
        names: impl IntoIterator<Item = &'n Name>,
        what: &str,
        variable: fn(&str) -> String,
    ) -> Result<()> {
        let mut seen: BTreeMap<String, &Name> = BTreeMap::new();
        for name in names {
            if let Some(first) = seen.insert(variable(name.get_ref()), name) {
                return self.err(
                    name.span().start,
                    format!(
                        "{what} `{}` and `{}` would both be ${}; rename one",
                        first.get_ref(),
                        name.get_ref(),
                        variable(name.get_ref())
                    ),
                );
            }
        }
        Ok(())
    }

    fn vars(
        &self,
        raw: &RawEnvironment,
        overrides: &[(String, String)],
    ) -> Result<BTreeMap<String, Var>> {
        let mut vars = BTreeMap::new();
        self.check_env_names(raw.vars.keys(), "vars", var_env_name)?;
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
        let mut given: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, value) in overrides {
            if let Some(first) = given.insert(name, value) {
                return Err(Error::input(
                    format!(
                        "--var {name} is given twice ({name}={first} and {name}={value}); which one is meant is not guessed"
                    ),
                    format!("give --var {name}=... once"),
                ));
            }
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
        self.check_env_names(raw.secrets.keys(), "secrets", secret_env_name)?;
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

    /// A command of the spec (a step, hook, service or readiness command, flow command): not
    /// empty, naming only what `scope` allows, and with each placeholder turned into a quoted
    /// reference to the environment variable that carries its value (shell.rs), so that a value
    /// is data and never code. Returns the command and the names it uses.
    fn shell_command(
        &self,
        text: &Spanned<String>,
        scope: &Scope,
        what: &str,
    ) -> Result<(String, Vec<String>)> {
        if text.get_ref().trim().is_empty() {
            return self.err(
                text.span().start,
                format!("{what} is empty; a command is shell text (remove it, or write `true`)"),
            );
        }
        let names = self.check_placeholders(text, scope)?;
        let command = shell::render(text.get_ref(), placeholder_env_name)
            .map_err(|e| Error::spec(self.at(self.inside(text.span(), e.offset)), e.message))?;
        Ok((command, names))
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
}

/// The environment variable that carries what placeholder `name` stands for in commands: a var,
/// `ports.NAME`, `root` or `run` (steps get their vars, runtime commands all of them).
fn placeholder_env_name(name: &str) -> String {
    match (name, name.strip_prefix("ports.")) {
        ("root", _) => "ENVBUILD_ROOT".into(),
        ("run", _) => "ENVBUILD_RUN".into(),
        (_, Some(port)) => port_env_name(port),
        _ => var_env_name(name),
    }
}

/// The environment variable that carries secret `name` to prestart hooks and services.
pub fn secret_env_name(name: &str) -> String {
    format!("ENVBUILD_SECRET_{}", names::env_suffix(name))
}

/// The environment variable that carries var `name` to steps.
pub fn var_env_name(name: &str) -> String {
    format!("ENVBUILD_VAR_{}", names::env_suffix(name))
}

/// The environment variable that carries the number of port `name` to services and hooks.
pub fn port_env_name(name: &str) -> String {
    format!("ENVBUILD_PORT_{}", names::env_suffix(name))
}
