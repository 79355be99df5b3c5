//! The TOML shape of an environment file, exactly as written. Only `spec::load` sees these types;
//! the rest of the program works on the validated model in `spec::model`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub type Name = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    pub description: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<Name, Spanned<toml::Value>>,
    #[serde(default)]
    pub secrets: BTreeMap<Name, RawSecret>,
    #[serde(default)]
    pub machines: BTreeMap<Name, RawMachine>,
    pub cloud: Option<Spanned<RawCloud>>,
    #[serde(default)]
    pub flows: BTreeMap<Name, RawFlow>,
    #[serde(default)]
    pub locks: Vec<Spanned<RawLockRecipe>>,
}

/// A test flow: ordered phases over the environment, probes during some of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlow {
    pub description: Option<String>,
    #[serde(default)]
    pub default: bool,
    /// The machine `run`, `stop`, `start` and `restart` phases act on unless they name another.
    pub machine: Option<Name>,
    pub from_version: Option<Spanned<String>>,
    pub to_version: Option<Spanned<String>>,
    /// The availability budget of every probe of the flow (default: none, figures reported and
    /// not judged): a probe over any key fails the run.
    pub max_failed_requests: Option<Spanned<i64>>,
    pub max_down_time: Option<Spanned<toml::Value>>,
    pub min_uptime_pct: Option<Spanned<toml::Value>>,
    /// Runs at the end whatever happened (unless --keep): e.g. ["down"].
    #[serde(default)]
    pub cleanup: Vec<Spanned<String>>,
    #[serde(default)]
    pub phases: Vec<Spanned<RawPhase>>,
    #[serde(default)]
    pub probes: Vec<Spanned<RawProbe>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhase {
    pub name: Name,
    pub description: Option<String>,
    /// up | down | run | stop | start | restart
    pub action: Spanned<String>,
    pub machine: Option<Name>,
    /// Commands for `run` (in the machine, with its runtime environment and $ENVBUILD_OUT).
    #[serde(default)]
    pub run: Vec<Spanned<String>>,
    /// Services for stop/start/restart.
    #[serde(default)]
    pub services: Vec<Name>,
    /// Extra environment for `run` commands and for services (re)started by this phase.
    #[serde(default)]
    pub env: BTreeMap<Name, Spanned<String>>,
    /// Probes run while this phase runs (from the first such phase to the last).
    #[serde(default)]
    pub probes: bool,
    #[serde(default)]
    pub retries: u32,
    /// What to do before a retry: "down", or a command run in the machine.
    #[serde(default)]
    pub cleanup: Vec<Spanned<String>>,
    /// Where a retry starts again (an earlier phase); default: this phase.
    pub resume: Option<Name>,
    pub timeout: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub name: Name,
    /// `http` (default): one request per due time; `program`: one run of `command`.
    pub kind: Option<Spanned<String>>,
    /// A program probe's command: one iteration, one JSON line on stdout (docs/harness.md).
    pub command: Option<Spanned<String>>,
    pub method: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    pub body: Option<Spanned<String>>,
    /// Expected HTTP status.
    pub expect: Option<Spanned<i64>>,
    /// Requests per second (default 1).
    pub rate: Option<Spanned<f64>>,
    pub timeout: Option<Spanned<toml::Value>>,
    /// This probe's budget keys, over the flow's.
    pub max_failed_requests: Option<Spanned<i64>>,
    pub max_down_time: Option<Spanned<toml::Value>>,
    pub min_uptime_pct: Option<Spanned<toml::Value>>,
    /// Requests waiting for an answer at once, at most.
    pub max_in_flight: Option<Spanned<i64>>,
}

/// The OpenStack cloud the environment runs, for `envbuild creds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloud {
    pub machine: Name,
    pub auth_url: Spanned<String>,
    pub username: String,
    pub password_secret: Name,
    pub project: String,
    pub user_domain: Option<String>,
    pub project_domain: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    pub generate: Spanned<String>,
    pub length: Option<Spanned<i64>>,
    /// Documentation only: what the secret is for.
    #[allow(dead_code)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMachine {
    pub description: Option<String>,
    pub backend: Option<Spanned<String>>,
    pub base: Option<Spanned<RawBase>>,
    pub resources: Option<RawResources>,
    #[serde(default)]
    pub requires: Vec<Spanned<RawRequirement>>,
    #[serde(default)]
    pub ports: BTreeMap<Name, Spanned<toml::Value>>,
    #[serde(default)]
    pub prestart: Vec<Spanned<String>>,
    #[serde(default)]
    pub stages: Vec<Spanned<RawStage>>,
    #[serde(default)]
    pub services: Vec<Spanned<RawService>>,
    /// libvirt: the hypervisor, e.g. "qemu:///system" or "qemu+ssh://host/system".
    pub uri: Option<Spanned<String>>,
    /// libvirt: guest TCP ports forwarded from a free 127.0.0.1 port at each boot, by name.
    #[serde(default)]
    pub forward: BTreeMap<Name, Spanned<i64>>,
    /// libvirt: private links this machine joins, with its address on each ("10.0.0.2/24").
    #[serde(default)]
    pub networks: BTreeMap<Name, Spanned<String>>,
    /// libvirt: `ssh-config` reaches the other machines through this one.
    pub bastion: Option<Spanned<bool>>,
    /// libvirt: build VMs trust the host's extra CA certificates (default true).
    pub trust_host_ca: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBase {
    /// Host programs whose bytes the stages depend on (the local backend's "image").
    #[serde(default)]
    pub host_tools: Vec<Spanned<String>>,
    pub image: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    /// libvirt: a Debian image built on this host with debootstrap.
    pub debootstrap: Option<Spanned<RawDebootstrap>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDebootstrap {
    pub suite: Spanned<String>,
    pub mirror: Option<Spanned<String>>,
    #[serde(default)]
    pub packages: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    pub cpus: Option<Spanned<i64>>,
    pub memory: Option<Spanned<String>>,
    pub disk: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    pub program: Option<Spanned<String>>,
    pub command: Option<Spanned<String>>,
    pub package: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub name: Name,
    pub description: Option<String>,
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    #[serde(default)]
    pub inputs: Vec<Spanned<String>>,
    #[serde(default)]
    pub templates: Vec<Spanned<String>>,
    #[serde(default)]
    pub sources: Vec<Spanned<RawSource>>,
    #[serde(default)]
    pub vars: Vec<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<Name, Spanned<String>>,
    #[serde(default)]
    pub steps: Vec<Spanned<String>>,
    pub timeout: Option<Spanned<toml::Value>>,
    /// What the committed stage keeps: "disk" (default) or "running" (a VM's memory too).
    pub snapshot: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub name: Name,
    /// A file: `url` with its `sha256`, or `url` alone (floating: `envbuild lock` pins it).
    pub url: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    /// A git tree: the repository and a branch, tag or full commit id.
    pub git: Option<Spanned<String>>,
    pub rev: Option<Spanned<String>>,
    /// An apt repository, "URL SUITE [COMPONENT...]", with its signing `key` URL (pinned by
    /// `envbuild lock`).
    pub apt: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

/// A file `envbuild lock` makes by running `command` in the environment's folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLockRecipe {
    pub file: Spanned<String>,
    pub command: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Name,
    pub command: Spanned<String>,
    /// What `status` shows as the service's address.
    pub url: Option<Spanned<String>>,
    pub ready: Option<Spanned<RawReady>>,
    pub stop_signal: Option<Spanned<String>>,
    /// How long a stop waits after `stop_signal` before SIGKILL.
    pub stop_timeout: Option<Spanned<toml::Value>>,
    /// Services of the same machine this one starts after (each ready); absent: the one listed
    /// before it.
    pub after: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReady {
    pub tcp: Option<Spanned<String>>,
    pub http: Option<Spanned<String>>,
    pub status: Option<Spanned<i64>>,
    pub command: Option<Spanned<String>>,
    pub timeout: Option<Spanned<toml::Value>>,
}
