//! A cache of file digests keyed by (device, inode, size, mtime, ctime), like cargo's and git's
//! stat caches: an unchanged large input is not read again.
//!
//! Racy entries are never trusted: a file whose mtime is within two seconds of the moment it was
//! hashed could be rewritten in the same timestamp tick, so its digest is not remembered.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::key::digest::sha256_file;

const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// What `stat` says of a file; a file whose stat is unchanged since it was hashed was not
/// written since (its ctime moves on every change, and user space cannot set it back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Stat {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Stat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }

    /// Whether a digest taken now can be remembered: the file was last changed more than the
    /// racy window ago, so a later write in the same timestamp tick cannot hide behind it.
    pub fn settled(&self, now: SystemTime) -> bool {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        now - self.mtime_ns.max(self.ctime_ns) > RACY_WINDOW_NS
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Known {
    stat: Stat,
    sha256: String,
}

/// The cache, loaded once per command and saved if it learnt something.
#[derive(Debug, Default)]
pub struct FingerprintCache {
    file: Option<PathBuf>,
    entries: Mutex<HashMap<PathBuf, Known>>,
    changed: Mutex<bool>,
    /// How many files were actually read (for tests and benchmarks).
    pub reads: Mutex<u64>,
}

impl FingerprintCache {
    /// Loads the cache at `file`; a missing or unreadable cache is an empty one (it is only a cache).
    pub fn load(file: PathBuf) -> Self {
        let entries = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        FingerprintCache {
            file: Some(file),
            entries: Mutex::new(entries),
            ..Default::default()
        }
    }

    pub fn digest(&self, path: &Path, meta: &std::fs::Metadata) -> Result<String> {
        let stat = Stat::of(meta);
        if let Some(known) = self.entries.lock().unwrap().get(path)
            && known.stat == stat
        {
            return Ok(known.sha256.clone());
        }
        let sha256 = sha256_file(path)?;
        *self.reads.lock().unwrap() += 1;
        if stat.settled(SystemTime::now()) {
            self.entries.lock().unwrap().insert(
                path.to_path_buf(),
                Known {
                    stat,
                    sha256: sha256.clone(),
                },
            );
            *self.changed.lock().unwrap() = true;
        }
        Ok(sha256)
    }

    /// Writes the cache back if it changed (atomically; a failure only costs a re-read later).
    pub fn save(&self) {
        let Some(file) = &self.file else { return };
        if !*self.changed.lock().unwrap() {
            return;
        }
        let entries = self.entries.lock().unwrap();
        let Ok(bytes) = serde_json::to_vec(&*entries) else {
            return;
        };
        let Some(dir) = file.parent() else { return };
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) {
            use std::io::Write;
            if tmp.write_all(&bytes).is_ok() {
                let _ = tmp.persist(file);
            }
        }
    }
}
