//! `ssh` and `ssh-config`: reach a running machine with the environment's key and its pinned
//! host key; machines that share a private link with the environment's bastion
//! (`bastion = true`) are reached through it.

use crate::backend::SshTarget;
use crate::engine::{MachineHandle, Workspace};
use crate::error::{Error, Result};
use crate::spec::model::{Environment, Machine};

/// The SSH target of a running machine.
pub fn target(ws: &Workspace, env: &Environment, name: &str) -> Result<SshTarget> {
    let machine = env.machine(name).ok_or_else(|| {
        let known: Vec<&str> = env.machines.iter().map(|m| m.name.as_str()).collect();
        Error::Input(format!(
            "environment `{}` has no machine `{name}`; machines: {}",
            env.name,
            known.join(", ")
        ))
    })?;
    let handle = MachineHandle::new(ws, env, machine)?;
    handle
        .backend
        .ssh_target(&handle.context())?
        .ok_or_else(|| {
            Error::input(
                format!(
                    "machine `{name}` is a {} machine, not a VM",
                    machine.backend.as_str()
                ),
                format!("use `envbuild exec {} {name} -- CMD`", env.name),
            )
        })
}

/// An OpenSSH config block for every machine of `env` that has SSH: a `Host ENV-MACHINE` for
/// each running one, a comment for each that is not up.
pub fn config(ws: &Workspace, env: &Environment) -> Result<String> {
    let mut targets = Vec::new();
    // Machines of a kind this envbuild has no backend for have no SSH here.
    for machine in env
        .machines
        .iter()
        .filter(|m| ws.backends.get(m.backend).is_ok())
    {
        let handle = MachineHandle::new(ws, env, machine)?;
        match handle.backend.ssh_target(&handle.context()) {
            Ok(None) => {}
            Ok(Some(target)) => targets.push((machine, Some(target))),
            Err(_) => targets.push((machine, None)),
        }
    }
    Ok(render_config(env, &targets))
}

/// The config text; `None`: the machine has SSH but is not up.
fn render_config(env: &Environment, targets: &[(&Machine, Option<SshTarget>)]) -> String {
    let bastion = targets
        .iter()
        .find(|(m, t)| m.vm.bastion && t.is_some())
        .map(|(m, _)| *m);
    let mut out = format!(
        "# envbuild ssh-config {0}: use with `ssh -F FILE {0}-MACHINE`\n",
        env.name
    );
    for (machine, target) in targets {
        let Some(target) = target else {
            out.push_str(&format!(
                "\n# {}-{}: not up (envbuild up {})\n",
                env.name, machine.name, env.name
            ));
            continue;
        };
        // Behind the bastion: the machine's private address on a link they share.
        let via_bastion = bastion.filter(|b| b.name != machine.name).and_then(|b| {
            machine
                .vm
                .links
                .iter()
                .find(|(link, _)| b.vm.links.contains_key(*link))
                .map(|(_, address)| address.split('/').next().unwrap_or(address).to_string())
                .map(|address| (b, address))
        });
        let (host, port) = match &via_bastion {
            Some((_, address)) => (address.clone(), 22),
            None => ("127.0.0.1".to_string(), target.port),
        };
        out.push_str(&format!(
            "\nHost {env}-{machine}\n  HostName {host}\n  Port {port}\n  User {user}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  HostKeyAlias {alias}\n",
            env = env.name,
            machine = machine.name,
            user = target.user,
            key = target.identity.display(),
            known = target.known_hosts.display(),
            alias = target.alias,
        ));
        if let Some((bastion, _)) = via_bastion {
            out.push_str(&format!("  ProxyJump {}-{}\n", env.name, bastion.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `machines` ("NAME: KEY = VALUE; KEY = VALUE" per line: libvirt machines) as
    /// environment `lab`.
    fn lab(machines: &str) -> Environment {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for (name, extra) in machines.lines().filter_map(|l| l.split_once(':')) {
            text.push_str(&format!(
                "[machines.{name}]\nbackend = \"libvirt\"\nbase = {{ debootstrap = {{ suite = \"bookworm\" }} }}\n{}\n\n",
                extra.trim().replace("; ", "\n")
            ));
        }
        std::fs::write(dir.path().join("lab.toml"), text).unwrap();
        crate::spec::load(dir.path(), "lab", &[]).unwrap()
    }

    fn target(port: u16) -> Option<SshTarget> {
        Some(SshTarget {
            port,
            user: "root".into(),
            identity: "/s/id_ed25519".into(),
            known_hosts: "/s/known_hosts".into(),
            alias: format!("alias-{port}"),
            argv: Vec::new(),
        })
    }

    #[test]
    fn machines_behind_the_bastion_are_reached_through_it_on_their_private_address() {
        // The bastion is not called "jumpbox": the spec's `bastion = true` decides.
        let lab = lab("gate: bastion = true; networks = { lan = \"10.0.0.1/24\" }
db: networks = { lan = \"10.0.0.2/24\" }
lone:
jumpbox:");
        let ports = [target(2201), target(2202), target(2203), None];
        let by_name = |name: &str| lab.machines.iter().position(|m| m.name == name).unwrap();
        let targets: Vec<_> = ["gate", "db", "lone", "jumpbox"]
            .iter()
            .zip(ports)
            .map(|(name, t)| (&lab.machines[by_name(name)], t))
            .collect();
        let text = render_config(&lab, &targets);
        let block = |host: &str| {
            let start = text.find(&format!("Host lab-{host}\n")).expect(host);
            text[start..].split("\n\n").next().unwrap().to_string()
        };
        assert!(
            block("gate").contains("HostName 127.0.0.1\n  Port 2201"),
            "{text}"
        );
        assert!(!block("gate").contains("ProxyJump"), "{text}");
        let db = block("db");
        assert!(db.contains("HostName 10.0.0.2\n  Port 22\n"), "{db}");
        assert!(db.contains("ProxyJump lab-gate"), "{db}");
        assert!(block("lone").contains("Port 2203") && !block("lone").contains("ProxyJump"));
        assert!(text.contains("# lab-jumpbox: not up"), "{text}");
    }

    #[test]
    fn without_a_bastion_every_machine_is_reached_on_loopback() {
        let lab = lab("jumpbox: networks = { lan = \"10.0.0.1/24\" }
db: networks = { lan = \"10.0.0.2/24\" }");
        let targets: Vec<_> = lab.machines.iter().zip([target(1), target(2)]).collect();
        let text = render_config(&lab, &targets);
        assert!(!text.contains("ProxyJump"), "{text}");
        assert!(text.contains("HostName 127.0.0.1\n  Port 2\n"), "{text}");
    }
}
