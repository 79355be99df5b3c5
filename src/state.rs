//! Per-environment state that is not cache: live machine roots, generated secrets, running
//! services and their ports. Default $XDG_STATE_HOME/envbuild (~/.local/state/envbuild; see
//! src/settings.rs).
//!
//! ```text
//! STATE/envs/<env>/secrets.json            generated secrets (0600), never in the store
//! STATE/envs/<env>/env.lock                held by the run that uses the environment (engine/lock.rs)
//! STATE/envs/<env>/clouds.yaml             written by `creds`
//! STATE/envs/<env>/<machine>/root/         the live machine
//! STATE/envs/<env>/<machine>/marker.json   which stage key root/ holds, and whether it is pristine
//! STATE/envs/<env>/<machine>/run/          runtime files of services ($ENVBUILD_RUN)
//! STATE/envs/<env>/<machine>/logs/         one log per service
//! STATE/envs/<env>/<machine>/services.json running services: pid, ports
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::spec::model::Environment;

#[derive(Debug, Clone)]
pub struct State {
    pub root: PathBuf,
}

/// Which stage a live machine root holds. `pristine` is false once services ran in it (they
/// change it: databases, logs), so it is restored from the store before the next use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub key: Option<String>,
    pub stage: Option<String>,
    pub pristine: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunningServices {
    pub ports: BTreeMap<String, u16>,
    pub services: Vec<RunningService>,
    pub started: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningService {
    pub name: String,
    /// Also the process group: services are started in a session of their own.
    pub pid: i32,
    pub stop_signal: i32,
    /// Seconds between the stop signal and SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u64,
    /// The services it started after (`None`, in a state written before `after` existed: the
    /// one recorded before it); `down` stops it before them.
    #[serde(default)]
    pub after: Option<Vec<String>>,
    pub log: PathBuf,
    pub url: Option<String>,
    /// Seconds from the start of its machine's services until it was spawned (waiting for the
    /// services it starts after), and from then until its ready check passed: where an `up`
    /// spends its time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawned_at_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_after_s: Option<f64>,
}

fn default_stop_timeout() -> u64 {
    15
}

/// Paths of one machine's state.
#[derive(Debug, Clone)]
pub struct MachineState {
    pub dir: PathBuf,
}

impl MachineState {
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    /// What the root held when envbuild last made it equal to an entry (`store::live_index`).
    pub fn live_index(&self) -> PathBuf {
        self.dir.join("live-index")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn marker(&self) -> Marker {
        read_json(&self.dir.join("marker.json")).unwrap_or_default()
    }

    pub fn set_marker(&self, marker: &Marker) -> Result<()> {
        write_json(&self.dir.join("marker.json"), marker, 0o644)
    }

    pub fn services(&self) -> Option<RunningServices> {
        read_json(&self.dir.join("services.json"))
    }

    pub fn set_services(&self, services: Option<&RunningServices>) -> Result<()> {
        let path = self.dir.join("services.json");
        match services {
            Some(s) => write_json(&path, s, 0o644),
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).ctx(|| format!("removing {}", path.display()))
                }
                _ => Ok(()),
            },
        }
    }
}

impl State {
    pub fn env_dir(&self, env: &str) -> PathBuf {
        self.root.join("envs").join(env)
    }

    /// The state of one machine, its folder created if need be.
    pub fn machine(&self, env: &str, machine: &str) -> Result<MachineState> {
        let state = self.locate(env, machine);
        std::fs::create_dir_all(&state.dir).ctx(|| format!("creating {}", state.dir.display()))?;
        Ok(state)
    }

    /// Where the state of one machine lives, creating nothing.
    pub fn locate(&self, env: &str, machine: &str) -> MachineState {
        MachineState {
            dir: self.env_dir(env).join(machine),
        }
    }

    /// The environment's secrets, generating (and saving, 0600) any that do not exist yet.
    pub fn secrets(&self, env: &Environment) -> Result<BTreeMap<String, String>> {
        let path = self.env_dir(&env.name).join("secrets.json");
        let mut secrets: BTreeMap<String, String> = read_json(&path).unwrap_or_default();
        let mut changed = false;
        for (name, spec) in &env.secrets {
            if !secrets.contains_key(name) {
                secrets.insert(name.clone(), generate_password(spec.length)?);
                changed = true;
            }
        }
        if changed {
            std::fs::create_dir_all(self.env_dir(&env.name))
                .ctx(|| format!("creating {}", self.env_dir(&env.name).display()))?;
            write_json(&path, &secrets, 0o600)?;
        }
        Ok(secrets)
    }
}

/// A password of `length` characters from [A-Za-z0-9], drawn from the kernel's CSPRNG without
/// modulo bias.
pub fn generate_password(length: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut urandom = std::fs::File::open("/dev/urandom").ctx(|| "opening /dev/urandom".into())?;
    let mut out = String::with_capacity(length);
    let mut buffer = [0u8; 64];
    while out.len() < length {
        urandom
            .read_exact(&mut buffer)
            .ctx(|| "reading /dev/urandom".into())?;
        for byte in buffer {
            // 248 = 4 * 62: bytes above it would favour the first characters.
            if byte < 248 && out.len() < length {
                out.push(ALPHABET[(byte % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Writes JSON atomically (temp file + rename) with the given mode.
pub fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> Result<()> {
    let dir = path.parent().expect("state files live in a folder");
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .ctx(|| format!("writing {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(value).map_err(|e| Error::Failed(e.to_string()))?)
        .and_then(|_| file.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_have_the_length_and_alphabet_and_differ() {
        let a = super::generate_password(32).unwrap();
        let b = super::generate_password(32).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
