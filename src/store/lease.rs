//! Leases: a command that computed stage keys (build, up, test, push, export...) holds a lease
//! on them for as long as it runs, and `cache gc` removes no entry a live lease names, nor any
//! entry committed since the oldest live lease began (what a running build has just made).
//!
//! ```text
//! STORE/v1/leases/<pid>.<n>.json   {"started_unix": ..., "keys": [...]}, flock'd by its holder
//! STORE/v1/locks/gc.lock           held exclusively by gc while it decides and removes, and
//!                                  shared by a command while it writes its lease
//! ```
//! So a lease is either written before gc looks (and gc keeps what it names) or after gc is
//! done (and the command finds the store as gc left it, and builds what is gone). A killed
//! command's lease is free of its flock: gc deletes it.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lock::FileLock;
use crate::clock::now_unix;
use crate::error::{Error, IoContext, Result};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    started_unix: u64,
    keys: BTreeSet<String>,
}

/// This process's lease; dropped (the command ends), it is gone.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    /// Open and flock'd for as long as the lease lives: what tells gc it is live.
    file: File,
    record: Record,
}

impl Lease {
    /// A new, empty lease in `dir`.
    pub(super) fn take(dir: &Path, name: String) -> Result<Lease> {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        let lock = FileLock::try_acquire(&path)?.ok_or_else(|| {
            Error::Failed(format!("{} is held by another process", path.display()))
        })?;
        let mut lease = Lease {
            path,
            file: lock.into_file(),
            record: Record {
                started_unix: now_unix(),
                keys: BTreeSet::new(),
            },
        };
        lease.write()?;
        Ok(lease)
    }

    /// Adds `keys`; the caller holds gc.lock shared while this writes.
    pub(super) fn extend(&mut self, keys: impl IntoIterator<Item = String>) -> Result<()> {
        self.record.keys.extend(keys);
        self.write()
    }

    fn write(&mut self) -> Result<()> {
        let bytes = serde_json::to_vec(&self.record).expect("a lease serializes");
        self.file
            .set_len(0)
            .and_then(|_| self.file.rewind())
            .and_then(|_| self.file.write_all(&bytes))
            .ctx(|| format!("writing {}", self.path.display()))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the live leases of a store hold, as gc sees them (it holds gc.lock exclusively).
#[derive(Debug, Default)]
pub struct Held {
    pub keys: HashSet<String>,
    /// When the oldest live lease began: entries committed since are kept.
    pub since: Option<u64>,
}

/// Reads the live leases in `dir` but this process's own (gc's: what it holds it references)
/// and deletes the dead ones.
pub(super) fn held(dir: &Path) -> Held {
    let mut held = Held::default();
    let own = format!("{}.", std::process::id());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&own) {
            continue;
        }
        let path = entry.path();
        match FileLock::try_acquire(&path) {
            // Free: its command is gone.
            Ok(Some(_dead)) => {
                let _ = std::fs::remove_file(&path);
            }
            Ok(None) => {
                // Live but unreadable (being created): keep everything younger than now.
                let record: Record = std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .unwrap_or_else(|| Record {
                        started_unix: now_unix(),
                        keys: BTreeSet::new(),
                    });
                held.since = Some(
                    held.since
                        .map_or(record.started_unix, |s| s.min(record.started_unix)),
                );
                held.keys.extend(record.keys);
            }
            Err(_) => {}
        }
    }
    held
}
