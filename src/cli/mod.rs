//! The command line: argument types and one file per command. A command parses its arguments,
//! calls one operation (src/ops, or the engine for the simplest ones) and prints its answer; it
//! holds no policy. Flags become [`Settings`] here, once.

mod build;
mod cache;
mod creds;
mod doctor;
mod exec;
mod hash;
mod list;
mod lock;
mod plan;
mod report;
mod runs;
mod ssh;
mod status;
mod test;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::Workspace;
use crate::error::Result;
use crate::settings::{Flags, Settings};
use crate::spec::model::Environment;
use crate::spec::parse_var_override;

/// Reproducible, cached environments for testing OpenStack rolling upgrades.
///
/// Exit codes: 0 success, 1 the work failed (a step, a service, a check, a remote cache), 2 bad
/// input (a broken spec, an unknown name, a missing host tool, a rejected archive), 3 (test) an
/// incomplete run, 130 aborted.
#[derive(Debug, Parser)]
#[command(name = "envbuild", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Folder of environment specs [default: the nearest ./environments]
    #[arg(long, global = true, env = "ENVBUILD_ENVS", value_name = "DIR")]
    pub envs: Option<PathBuf>,
    /// Stage store [default: $XDG_CACHE_HOME/envbuild]
    #[arg(long, global = true, env = "ENVBUILD_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Live machines, secrets, running services [default: $XDG_STATE_HOME/envbuild]
    #[arg(long, global = true, env = "ENVBUILD_STATE", value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// The results history, kept across runs [default: STATE/history.sqlite]
    #[arg(
        long,
        global = true,
        env = "ENVBUILD_HISTORY_FILE",
        value_name = "FILE"
    )]
    pub history_file: Option<PathBuf>,
    /// Print only results and errors
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Off a terminal (a CI console), how often a running stage or phase prints its time and
    /// last output line [default: 30s]
    #[arg(long, global = true, env = "ENVBUILD_HEARTBEAT", value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat: Option<std::time::Duration>,
    #[command(flatten)]
    pub remote: cache::RemoteArgs,
    /// libvirt URI for VM machines, overriding their `uri` [default: qemu:///system]
    #[arg(long, global = true, env = "ENVBUILD_LIBVIRT_URI", value_name = "URI")]
    pub libvirt_uri: Option<String>,
    /// Base images of VM machines [default: STORE/v1/images]
    #[arg(long, global = true, env = "ENVBUILD_IMAGES", value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// How vagrant machines are networked: loopback (a user-mode NIC on 127.0.0.1 only) or
    /// management (also vagrant-libvirt's stock management network, as on a laptop)
    /// [default: loopback]
    #[arg(
        long,
        global = true,
        env = "ENVBUILD_VAGRANT_NETWORK",
        value_name = "KIND"
    )]
    pub vagrant_network: Option<crate::settings::VagrantNetwork>,
}

/// `--var name=value`, repeatable.
#[derive(Debug, Args, Clone)]
pub struct VarArgs {
    /// Override a var of the environment (changes the keys of exactly the stages that use it)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var_override)]
    pub vars: Vec<(String, String)>,
}

/// `--wait[=DURATION]`: what a run does when another envbuild holds its environment.
#[derive(Debug, Args, Clone)]
pub struct WaitArgs {
    /// If another envbuild is using the environment, wait for it to end (at most DURATION, e.g.
    /// --wait=30m) instead of refusing
    #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true, value_parser = parse_duration)]
    wait: Option<Option<std::time::Duration>>,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}` is not a duration: write e.g. 90s, 30m, 1h"))
}

impl WaitArgs {
    pub fn wait(&self) -> crate::engine::Wait {
        match self.wait {
            None => crate::engine::Wait::No,
            Some(limit) => crate::engine::Wait::For(limit),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the environments
    List(list::ListArgs),
    /// Show which stages are cached and which will be built (and why, with --explain)
    Plan(plan::PlanArgs),
    /// Build every stage of an environment, replaying cached stages
    Build(build::BuildArgs),
    /// Build, then start the environment's services and wait until they are ready
    Up(build::BuildArgs),
    /// Stop the environment's services, leaving no process or port behind
    Down(build::EnvArg),
    /// Show what is built and running
    Status(status::StatusArgs),
    /// Run a command inside a machine (its root, its runtime environment)
    Exec(exec::ExecArgs),
    /// Run a test flow (e.g. a rolling upgrade under live probes) and write its results
    Test(test::TestArgs),
    /// List the runs of the results history (every `test` is recorded)
    Runs(runs::RunsArgs),
    /// Write one HTML page comparing the recorded runs of an environment
    Report(report::ReportArgs),
    /// Print the stage keys of an environment
    Hash(hash::HashArgs),
    /// Pin the floating sources (branches, tags, URLs without a digest) into ENV.lock and
    /// make the files of the environment's [[locks]]
    Lock(lock::LockArgs),
    /// Print an openrc for the environment's cloud and write a clouds.yaml
    Creds(creds::CredsArgs),
    /// Open a shell (or run a command) in a running VM machine over its pinned SSH
    Ssh(ssh::SshArgs),
    /// Print an OpenSSH config block for the environment's running VMs
    SshConfig(ssh::SshConfigArgs),
    /// Check the host for each backend and say what to install or start
    Doctor(doctor::DoctorArgs),
    /// Inspect and maintain the stage store
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// (internal) run a step so that nothing it starts outlives it
    #[command(hide = true)]
    Supervise {
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// (internal) destroy a build VM when the envbuild that started it ends
    #[command(hide = true)]
    LibvirtGuard {
        #[arg(long)]
        uri: String,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        remove: Vec<PathBuf>,
    },
}

impl Global {
    /// The raw flags, for [`Settings::resolve`].
    fn flags(&self) -> Flags {
        Flags {
            envs: self.envs.clone(),
            store: self.store.clone(),
            state: self.state.clone(),
            history: self.history_file.clone(),
            quiet: self.quiet,
            heartbeat: self.heartbeat,
            libvirt_uri: self.libvirt_uri.clone(),
            images: self.images.clone(),
            vagrant_network: self.vagrant_network,
            remote: self.remote.overrides(),
        }
    }

    /// The workspace of this run, from its resolved settings.
    pub fn workspace(&self) -> Result<Workspace> {
        Workspace::open(Settings::resolve(self.flags())?)
    }
}

/// Loads an environment (with overrides) from the workspace.
fn load(ws: &Workspace, name: &str, vars: &VarArgs) -> Result<Environment> {
    ws.load(name, &vars.vars)
}

/// A size for people: `1.5 GiB`.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

pub fn print_json(value: &impl serde::Serialize) {
    let text = serde_json::to_string_pretty(value).expect("output serializes");
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        // A reader that stopped early (`| head`, `| jq -e ... | head`) is no failure of ours:
        // end as quietly as a program killed by SIGPIPE would, with its status.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let global = &cli.global;
    match cli.command {
        Command::List(args) => list::run(global, args),
        Command::Plan(args) => plan::run(global, args),
        Command::Build(args) => build::run_build(global, args),
        Command::Up(args) => build::run_up(global, args),
        Command::Down(args) => build::run_down(global, args),
        Command::Status(args) => status::run(global, args),
        Command::Exec(args) => exec::run(global, args),
        Command::Test(args) => test::run(global, args),
        Command::Runs(args) => runs::run(global, args),
        Command::Report(args) => report::run(global, args),
        Command::Hash(args) => hash::run(global, args),
        Command::Lock(args) => lock::run(global, args),
        Command::Creds(args) => creds::run(global, args),
        Command::Cache(command) => cache::run(global, command),
        Command::Ssh(args) => ssh::run(global, args),
        Command::SshConfig(args) => ssh::run_config(global, args),
        Command::Doctor(args) => doctor::run(global, args),
        Command::Supervise { command } => Ok(crate::process::supervise(&command)),
        Command::LibvirtGuard {
            uri,
            domain,
            remove,
        } => Ok(crate::backend::libvirt::virsh::guard_main(
            &uri, &domain, &remove,
        )),
    }
}
