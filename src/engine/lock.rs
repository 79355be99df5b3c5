//! One lock per environment (`STATE/envs/ENV/env.lock`, flock): `build`, `up`, `down` and `test`
//! hold it for their whole run, so two runs never share (or orphan) one environment's machines
//! and services. The kernel releases it when its holder dies, so a killed run leaves no stale
//! lock. A second run refuses at once, naming the holder, or with `--wait` waits for it.
//!
//! The engine's functions that change machines take `&EnvLock`: nothing can start or stop an
//! environment without holding its lock.

use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use super::Workspace;
use crate::error::{Error, IoContext, Result};
use crate::spec::model::Environment;
use crate::store::lock::FileLock;
use crate::ui::Progress;

/// How a run that finds its environment locked behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Refuse at once (the default).
    No,
    /// Wait for the holder to finish, at most this long (`None`: as long as it takes).
    For(Option<Duration>),
}

/// Proof that this process holds environment `env`'s lock.
#[derive(Debug)]
pub struct EnvLock {
    pub env: String,
    _file: FileLock,
}

/// How often a waiting run tries the lock again.
const RETRY: Duration = Duration::from_millis(200);

impl Workspace {
    /// Takes `env`'s lock, refusing or waiting (`wait`) while another envbuild holds it; records
    /// this run in the lock file (pid, `command`, since) for the one that comes next.
    pub fn lock(
        &self,
        env: &Environment,
        command: &str,
        wait: Wait,
        progress: &Progress,
    ) -> Result<EnvLock> {
        let dir = self.state.env_dir(&env.name);
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let path = dir.join("env.lock");
        let started = Instant::now();
        let mut told = false;
        let file = loop {
            if let Some(file) = FileLock::try_acquire(&path)? {
                break file;
            }
            let holder = holder(&path);
            let limit = match wait {
                Wait::No => {
                    return Err(Error::input(
                        format!("{} is in use by another envbuild ({holder})", env.name),
                        "wait until it ends, or pass --wait to wait for it (--wait=30m: at most 30 minutes)",
                    ));
                }
                Wait::For(limit) => limit,
            };
            if !told {
                progress.note(&format!(
                    "{} is in use by another envbuild ({holder}); waiting for it to end",
                    env.name
                ));
                told = true;
            }
            if let Some(limit) = limit
                && started.elapsed() >= limit
            {
                return Err(Error::input(
                    format!(
                        "{} is still in use by another envbuild ({holder}) after {}",
                        env.name,
                        humantime::format_duration(limit)
                    ),
                    "wait longer (--wait with a longer limit or none), or end that run",
                ));
            }
            if crate::process::aborting() {
                return Err(Error::Aborted(format!(
                    "interrupted while waiting for {}'s lock; nothing was started",
                    env.name
                )));
            }
            std::thread::sleep(RETRY);
        };
        if told {
            progress.note(&format!(
                "{}: the other envbuild ended, going on after {:.0}s",
                env.name,
                started.elapsed().as_secs_f64()
            ));
        }
        record_holder(&file, &format!("{command} {}", env.name));
        Ok(EnvLock {
            env: env.name.clone(),
            _file: file,
        })
    }
}

/// Writes who holds the lock into the lock file (a hint for messages; the flock is the lock).
/// Only the command and the environment: a command line may hold a remote's credentials.
fn record_holder(lock: &FileLock, what: &str) {
    let line = format!(
        "pid {}: envbuild {what}, since {}\n",
        std::process::id(),
        crate::clock::now_rfc3339()
    );
    let mut file = lock.file();
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = file.write_all(line.as_bytes());
}

/// Who holds the lock, as its holder recorded it.
fn holder(path: &std::path::Path) -> String {
    let mut text = String::new();
    let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    match text.trim() {
        "" => "its pid is not recorded yet".to_string(),
        line => line.to_string(),
    }
}
