//! `envbuild ssh ENV MACHINE [-- CMD...]` and `envbuild ssh-config ENV`: reach a running VM with
//! the environment's key and its pinned host key.

use std::os::unix::process::CommandExt;

use clap::Args;

use super::Global;
use crate::backend::libvirt;
use crate::error::{Error, Result};
use crate::spec::model::{BackendKind, Environment, Machine};

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Environment name
    env: String,
    /// Machine name
    machine: String,
    /// A command to run instead of an interactive shell (read by the guest's shell, as with ssh)
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// Environment name
    env: String,
}

fn vm<'a>(env: &'a Environment, name: &str) -> Result<&'a Machine> {
    let machine = env.machine(name).ok_or_else(|| {
        let known: Vec<&str> = env.machines.iter().map(|m| m.name.as_str()).collect();
        Error::Input(format!(
            "environment `{}` has no machine `{name}`; machines: {}",
            env.name,
            known.join(", ")
        ))
    })?;
    if machine.backend != BackendKind::Libvirt {
        return Err(Error::Input(format!(
            "machine `{name}` is a {} machine, not a VM; use `envbuild exec {} {name} -- CMD`",
            machine.backend.as_str(),
            env.name
        )));
    }
    Ok(machine)
}

pub fn run(global: &Global, args: SshArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let env = ws.load(&args.env, &[])?;
    let machine = vm(&env, &args.machine)?;
    let state = ws.state.machine(&env.name, &machine.name)?;
    let target = libvirt::ssh_target(&state)?;
    // Like ssh itself: the words are joined with spaces and read by the guest's shell, so
    // `envbuild ssh e m -- 'a && b'` runs both.
    let command = (!args.command.is_empty()).then(|| args.command.join(" "));
    let mut argv = target.trust.ssh_argv(target.port, command.as_deref());
    if command.is_none() {
        argv.insert(1, "-t".into());
    }
    let error = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(Error::Input(format!(
        "cannot run ssh: {error}\n  fix: apt-get install openssh-client"
    )))
}

pub fn run_config(global: &Global, args: SshConfigArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let env = ws.load(&args.env, &[])?;
    let jumpbox = env
        .machines
        .iter()
        .find(|m| m.name == "jumpbox" && m.backend == BackendKind::Libvirt);
    let mut out = format!(
        "# envbuild ssh-config {0}: use with `ssh -F FILE {0}-MACHINE`\n",
        env.name
    );
    for machine in env
        .machines
        .iter()
        .filter(|m| m.backend == BackendKind::Libvirt)
    {
        let state = ws.state.machine(&env.name, &machine.name)?;
        let target = match libvirt::ssh_target(&state) {
            Ok(target) => target,
            Err(_) => {
                out.push_str(&format!(
                    "\n# {}-{}: not up (envbuild up {})\n",
                    env.name, machine.name, env.name
                ));
                continue;
            }
        };
        // Behind a jumpbox: reach the machine on its private address through the jumpbox.
        let via_jumpbox = jumpbox.filter(|j| j.name != machine.name).and_then(|j| {
            machine
                .vm
                .links
                .iter()
                .find(|(link, _)| j.vm.links.contains_key(*link))
                .map(|(_, address)| address.split('/').next().unwrap_or(address).to_string())
        });
        let (host, port) = match &via_jumpbox {
            Some(address) => (address.clone(), 22),
            None => ("127.0.0.1".to_string(), target.port),
        };
        out.push_str(&format!(
            "\nHost {env}-{machine}\n  HostName {host}\n  Port {port}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  HostKeyAlias {alias}\n",
            env = env.name,
            machine = machine.name,
            key = target.trust.client_key.display(),
            known = target.trust.known_hosts.display(),
            alias = target.trust.alias,
        ));
        if via_jumpbox.is_some() {
            out.push_str(&format!("  ProxyJump {}-jumpbox\n", env.name));
        }
    }
    print!("{out}");
    Ok(0)
}
