//! SSH trust for VM machines.
//!
//! ```text
//! STATE/envs/<env>/ssh/id_ed25519        the environment's client key (0600), made by ssh-keygen
//! STATE/envs/<env>/ssh/known_hosts       one pinned line per machine: "envbuild-<env>-<machine> KEY"
//! STATE/envs/<env>/<machine>/ssh/host_ed25519_key   the machine's host key (0600)
//! ```
//! The host key is generated on this host and handed to the guest on its seed disk at every boot
//! (the guest keeps it in /run, never on its disk): the host key is known before the first boot,
//! so every connection uses `StrictHostKeyChecking=yes` against the pinned file, with
//! `HostKeyAlias` so the pin holds whatever port the machine got.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::store::lock::FileLock;

#[derive(Debug, Clone)]
pub struct Trust {
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    pub host_key: PathBuf,
    pub alias: String,
}

impl Trust {
    /// The keys of `machine` in `env`, generated on first use. `machine_dir` is its state folder.
    pub fn ensure(env_dir: &Path, machine_dir: &Path, env: &str, machine: &str) -> Result<Trust> {
        let ssh_dir = env_dir.join("ssh");
        let host_dir = machine_dir.join("ssh");
        for dir in [&ssh_dir, &host_dir] {
            std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .ctx(|| format!("setting mode of {}", dir.display()))?;
        }
        let trust = Trust {
            client_key: ssh_dir.join("id_ed25519"),
            known_hosts: ssh_dir.join("known_hosts"),
            host_key: host_dir.join("host_ed25519_key"),
            alias: alias(env, machine),
        };
        // Machines of one environment start in parallel and share the client key and known_hosts.
        let _lock = FileLock::acquire(&ssh_dir.join("lock"), || {})?;
        if !trust.client_key.is_file() {
            keygen(&trust.client_key, &format!("envbuild-{env}"))?;
        }
        if !trust.host_key.is_file() {
            keygen(&trust.host_key, &trust.alias)?;
        }
        let public = std::fs::read_to_string(trust.host_key.with_extension("pub"))
            .ctx(|| format!("reading {}.pub", trust.host_key.display()))?;
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        let line = format!("{} {}\n", trust.alias, key.join(" "));
        let existing = std::fs::read_to_string(&trust.known_hosts).unwrap_or_default();
        let mut lines: Vec<String> = existing
            .lines()
            .filter(|l| l.split_whitespace().next() != Some(trust.alias.as_str()))
            .map(|l| format!("{l}\n"))
            .collect();
        lines.push(line);
        std::fs::write(&trust.known_hosts, lines.concat())
            .ctx(|| format!("writing {}", trust.known_hosts.display()))?;
        Ok(trust)
    }

    /// The public half of the client key, for the guest's authorized_keys.
    pub fn authorized_key(&self) -> Result<String> {
        std::fs::read_to_string(self.client_key.with_extension("pub"))
            .ctx(|| format!("reading {}.pub", self.client_key.display()))
    }

    /// `-o` options for ssh and scp: the pinned host key, the environment's key, nothing else.
    pub fn options(&self) -> Vec<String> {
        [
            "-F".to_string(),
            "none".to_string(),
            "-i".to_string(),
            self.client_key.display().to_string(),
        ]
        .into_iter()
        .chain(
            [
                "IdentitiesOnly=yes".to_string(),
                "BatchMode=yes".to_string(),
                "StrictHostKeyChecking=yes".to_string(),
                format!("UserKnownHostsFile={}", self.known_hosts.display()),
                "GlobalKnownHostsFile=/dev/null".to_string(),
                format!("HostKeyAlias={}", self.alias),
                // A TCG guest on a loaded host can take many seconds to answer the banner.
                "ConnectTimeout=30".to_string(),
                "ServerAliveInterval=10".to_string(),
                "ServerAliveCountMax=12".to_string(),
                "LogLevel=ERROR".to_string(),
            ]
            .into_iter()
            .flat_map(|o| ["-o".to_string(), o]),
        )
        .collect()
    }

    /// What `envbuild ssh` and `ssh-config` need to reach the guest as root on `port`.
    pub fn ssh_target(self, port: u16) -> crate::backend::SshTarget {
        crate::backend::SshTarget {
            port,
            user: "root".into(),
            argv: self.ssh_argv(port, None),
            identity: self.client_key,
            known_hosts: self.known_hosts,
            alias: self.alias,
        }
    }

    /// The argv of `ssh ... root@127.0.0.1 -p PORT [COMMAND]`.
    pub fn ssh_argv(&self, port: u16, command: Option<&str>) -> Vec<String> {
        let mut argv = vec!["ssh".to_string()];
        argv.extend(self.options());
        argv.extend(["-p".to_string(), port.to_string()]);
        argv.push("root@127.0.0.1".to_string());
        if let Some(command) = command {
            argv.push("--".to_string());
            argv.push(command.to_string());
        }
        argv
    }

    pub fn ssh(&self, port: u16, command: &str) -> Command {
        let argv = self.ssh_argv(port, Some(command));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }
}

/// The name a machine's host key is pinned under.
pub fn alias(env: &str, machine: &str) -> String {
    format!("envbuild-{env}-{machine}")
}

fn keygen(path: &Path, comment: &str) -> Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .map_err(|_| Error::MissingTool {
            machine: comment.to_string(),
            what: "program `ssh-keygen`".into(),
            fix: "apt-get install openssh-client".into(),
        })?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "ssh-keygen {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .ctx(|| format!("setting mode of {}", path.display()))
}

/// Quotes `text` for a POSIX shell.
pub fn quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_shell() {
        for text in ["plain", "a b", "it's", "$HOME `x` \"y\"", ""] {
            let out = Command::new("sh")
                .args(["-c", &format!("printf %s {}", quote(text))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
        }
    }

    #[test]
    fn keys_are_private_and_the_host_key_is_pinned_under_its_alias() {
        let dir = tempfile::tempdir().unwrap();
        let env_dir = dir.path().join("envs/demo");
        let trust = Trust::ensure(&env_dir, &env_dir.join("box"), "demo", "box").unwrap();
        for key in [&trust.client_key, &trust.host_key] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let again = Trust::ensure(&env_dir, &env_dir.join("box"), "demo", "box").unwrap();
        let _other = Trust::ensure(&env_dir, &env_dir.join("web"), "demo", "web").unwrap();
        let known = std::fs::read_to_string(&again.known_hosts).unwrap();
        assert_eq!(known.lines().count(), 2, "{known}");
        let pub_key = std::fs::read_to_string(trust.host_key.with_extension("pub")).unwrap();
        let pinned = known
            .lines()
            .find(|l| l.starts_with("envbuild-demo-box "))
            .unwrap();
        assert!(pub_key.contains(pinned.split_whitespace().nth(2).unwrap()));
        let options = trust.options().join(" ");
        assert!(options.contains("StrictHostKeyChecking=yes"));
        assert!(!options.contains("StrictHostKeyChecking=no"));
        assert!(options.contains("HostKeyAlias=envbuild-demo-box"));
    }
}
