//! The validated, resolved environment. Everything here has been checked: names are unique,
//! references resolve, inputs exist, templates only name what is defined. The engine trusts it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Local,
    Libvirt,
    Vagrant,
}

impl BackendKind {
    pub const EVERY: [BackendKind; 3] = [
        BackendKind::Local,
        BackendKind::Libvirt,
        BackendKind::Vagrant,
    ];
    /// The kinds a spec may name.
    pub const IMPLEMENTED: [&'static str; 3] = ["local", "libvirt", "vagrant"];

    /// The kind named `name` (as `backend = "..."` and manifests write it).
    pub fn parse(name: &str) -> Option<BackendKind> {
        BackendKind::EVERY.into_iter().find(|k| k.as_str() == name)
    }

    /// Machines that are VMs (VM keys, a disk image base, services inside the guest).
    pub fn is_vm(self) -> bool {
        matches!(self, BackendKind::Libvirt | BackendKind::Vagrant)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Libvirt => "libvirt",
            BackendKind::Vagrant => "vagrant",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub description: Option<String>,
    pub vars: BTreeMap<String, Var>,
    pub secrets: BTreeMap<String, SecretSpec>,
    /// In dependency order: a machine comes after every machine its stages wait for.
    pub machines: Vec<Machine>,
    pub cloud: Option<Cloud>,
    pub flows: Vec<Flow>,
    /// `[[locks]]`: the files `envbuild lock` makes.
    pub lock_recipes: Vec<LockRecipe>,
    /// Its lock file (`environments/NAME.lock`), whether or not it exists yet.
    pub lock_file: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct Cloud {
    pub machine: String,
    /// Holds runtime placeholders (`{{ ports.x }}`), rendered against the running machine.
    pub auth_url: String,
    pub username: String,
    pub password_secret: String,
    pub project: String,
    pub user_domain: String,
    pub project_domain: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub value: String,
    /// True when `--var` replaced the spec's default.
    pub overridden: bool,
}

#[derive(Debug, Clone)]
pub struct SecretSpec {
    pub length: usize,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub description: Option<String>,
    pub backend: BackendKind,
    pub base: Base,
    pub resources: Resources,
    pub requires: Vec<Requirement>,
    pub ports: Vec<Port>,
    pub prestart: Vec<String>,
    pub stages: Vec<Stage>,
    pub services: Vec<Service>,
    /// What only VM backends use (empty for local machines).
    pub vm: VmSpec,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VmSpec {
    /// The libvirt URI from the spec; `--libvirt-uri` overrides it.
    pub uri: Option<String>,
    /// Name -> guest TCP port, forwarded from a free 127.0.0.1 port at each boot.
    pub forward: BTreeMap<String, u16>,
    /// Private link name -> this machine's address on it, as "10.0.0.2/24".
    pub links: BTreeMap<String, String>,
    /// `ssh-config` reaches the machines that share a link with this one through it
    /// (`ProxyJump`); at most one machine of an environment is the bastion.
    pub bastion: bool,
    /// Build VMs trust the host's extra CAs (`trust_host_ca`, default true; host_ca.rs).
    pub trust_host_ca: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Base {
    /// Absolute host paths hashed into the base digest (for the local backend: the interpreters
    /// and tools the stages run).
    pub host_tools: Vec<PathBuf>,
    pub image: Option<PinnedImage>,
    pub debootstrap: Option<Debootstrap>,
}

/// A Debian base image built on this host (docs/backends.md): debootstrap --variant=minbase with
/// the packages envbuild's guests need plus `packages`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Debootstrap {
    pub suite: String,
    pub mirror: String,
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PinnedImage {
    pub url: String,
    pub sha256: String,
    /// Where the pin is written (`file:line:col`), for the error when a download does not match.
    #[serde(skip)]
    pub pinned_at: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Resources {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
}

#[derive(Debug, Clone)]
pub enum Probe {
    Program(String),
    Command(String),
}

#[derive(Debug, Clone)]
pub struct Requirement {
    pub probe: Probe,
    pub package: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// None: pick a free loopback port at `up`.
    pub fixed: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub description: Option<String>,
    /// Stages of other machines this one waits for, as (machine, stage).
    pub after: Vec<(String, String)>,
    /// Files or folders of the environment's folder (src/spec/inputs.rs).
    pub inputs: Vec<InputPath>,
    pub templates: Vec<InputPath>,
    pub sources: Vec<Source>,
    /// Every var the stage uses: listed in `vars` or named by a placeholder in its steps, env or
    /// templates. Only these reach its key, so overriding another var leaves the key alone.
    pub vars: BTreeMap<String, String>,
    /// Env values and steps as written (placeholders and all): what the key hashes, next to
    /// `vars`, so that `plan --explain` blames the var and not every step that names it.
    pub env_template: BTreeMap<String, String>,
    pub steps_template: Vec<String>,
    /// What runs: env values with placeholders rendered, steps with each placeholder a quoted
    /// reference to the variable that carries its value (src/spec/shell.rs).
    pub env: BTreeMap<String, String>,
    pub steps: Vec<String>,
    pub timeout: Duration,
    pub snapshot: Snapshot,
}

/// What a committed stage keeps of its machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Snapshot {
    /// Its files (a VM: its disk, the guest powered off cleanly).
    #[default]
    Disk,
    /// A VM's disk and its memory and device state: `up` resumes the machine instead of
    /// booting it (src/backend/libvirt/memory.rs).
    Running,
}

/// An input or template: its path as the spec writes it (its name in the key and under
/// $ENVBUILD_INPUTS) and where that leads inside the environment's folder, every link on the way
/// followed (src/spec/inputs.rs).
#[derive(Debug, Clone)]
pub struct InputPath {
    pub name: String,
    pub source: PathBuf,
}

/// A download or a git tree, copied to `$ENVBUILD_INPUTS/sources/NAME` (src/spec/lock.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub origin: Origin,
    /// The file's sha256 or the tree's commit id, from the spec or from the lock file; `None`:
    /// a floating reference that `envbuild lock` has not pinned (build refuses it).
    pub pin: Option<String>,
    /// True when the spec leaves the pin to the lock file.
    pub floating: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Url {
        url: String,
    },
    Git {
        url: String,
        rev: String,
    },
    /// `repo` as the spec writes it ("URL SUITE [COMPONENT...]"), `key` its signing key's URL.
    Apt {
        repo: String,
        key: String,
    },
}

/// A file `envbuild lock` makes (e.g. a Python lock file per release): its path in the
/// environment's folder and the shell command that writes it, both rendered with the vars.
#[derive(Debug, Clone)]
pub struct LockRecipe {
    pub file: String,
    /// Shell text, placeholders as references to `ENVBUILD_VAR_*` (src/spec/shell.rs).
    pub command: String,
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    /// Still holds runtime placeholders (`{{ ports.x }}`, `{{ root }}`), rendered at `up`.
    pub command: String,
    pub url: Option<String>,
    pub ready: Option<Ready>,
    pub stop_signal: i32,
    /// SIGKILL this long after `stop_signal` if the service is still running.
    pub stop_timeout: Duration,
    /// Indices (in `Machine::services`, all before this one) of the services it starts after.
    pub after: Vec<usize>,
}

#[derive(Debug, Clone)]
pub enum ReadyCheck {
    Tcp(String),
    Http { url: String, status: u16 },
    Command(String),
}

#[derive(Debug, Clone)]
pub struct Ready {
    pub check: ReadyCheck,
    pub timeout: Duration,
}

impl Environment {
    pub fn machine(&self, name: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.name == name)
    }
}

/// A test flow (docs/harness.md): phases in order, probes during some of them.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub description: Option<String>,
    pub default: bool,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    /// What every probe tolerates unless it sets a key itself.
    pub budget: Budget,
    pub cleanup: Vec<String>,
    pub phases: Vec<Phase>,
    pub probes: Vec<FlowProbe>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhaseAction {
    Up,
    Down,
    Run(Vec<String>),
    Stop(Vec<String>),
    Start(Vec<String>),
    Restart(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub description: Option<String>,
    pub action: PhaseAction,
    pub machine: String,
    pub env: BTreeMap<String, String>,
    pub probes: bool,
    pub retries: u32,
    pub cleanup: Vec<String>,
    /// Index of the phase a retry starts from.
    pub resume: usize,
    pub timeout: Duration,
}

/// A probe of a flow: what it does at each due time, and its schedule and budget.
#[derive(Debug, Clone)]
pub struct FlowProbe {
    pub name: String,
    pub kind: ProbeKind,
    /// Requests or iterations started per second, on schedule.
    pub rate_hz: f64,
    /// One request's whole exchange, or one iteration of a program.
    pub timeout: Duration,
    /// `None`: the harness's default for the kind, rate and timeout.
    pub max_in_flight: Option<usize>,
    pub machine: String,
    /// Its own budget keys (the flow's fill in the others).
    pub budget: Budget,
}

#[derive(Debug, Clone)]
pub enum ProbeKind {
    Http(HttpRequest),
    /// A command run in the machine root per iteration (runtime placeholders rendered at start).
    Program {
        command: String,
    },
}

/// What an HTTP probe sends. These hold runtime placeholders (ports, `token`, `secrets.x`),
/// rendered when probes start.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub expect: u16,
}

/// An availability budget (docs/spec.md, flows): each key set must hold; none set means the
/// probes' figures are reported and not judged.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    pub max_failed_requests: Option<u64>,
    pub max_down_time: Option<Duration>,
    pub min_uptime_pct: Option<f64>,
}

impl Environment {
    /// The flow called `name`, or the default one.
    pub fn flow(&self, name: Option<&str>) -> Option<&Flow> {
        match name {
            Some(name) => self.flows.iter().find(|f| f.name == name),
            None => self
                .flows
                .iter()
                .find(|f| f.default)
                .or(if self.flows.len() == 1 {
                    self.flows.first()
                } else {
                    None
                }),
        }
    }
}
