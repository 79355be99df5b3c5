//! The content-addressed stage store.
//!
//! ```text
//! STORE/CACHEDIR.TAG
//! STORE/v1/entries/<key>-<env>-<machine>-<stage>/{manifest.json, tree.json, log.txt, artifact/}
//! STORE/v1/tmp/        entries being written (<key>.<pid>.<n>) and entries being deleted
//! STORE/v1/locks/      one flock file per key being built; gc.lock (lease.rs)
//! STORE/v1/leases/     one file per running command: the keys gc must keep (lease.rs)
//! STORE/v1/quarantine/ entries found tampered, kept for inspection, never used
//! ```
//! An entry appears by one rename of a complete, synced folder and never changes afterwards.
//! See docs/store.md.

pub mod archive;
pub mod copy;
pub mod gc;
pub mod lease;
pub mod live_index;
pub mod lock;
pub mod log;
mod machine;
mod path_map;
pub mod tar_writer;
pub mod tree;
pub mod verify;

pub use tree::TreeEntry;

pub use machine::{restore, snapshot};

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::clock::now_unix;
use crate::error::{Error, IoContext, Result};
use crate::key::KeyMaterial;
use crate::key::digest;
use crate::process::process_alive;
use lease::{Held, Lease};
use lock::FileLock;

pub const LAYOUT: &str = "v1";
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by envbuild.\n# For information about cache directory tags see https://bford.info/cachedir/\n";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub key: String,
    pub parent: Option<String>,
    pub env: String,
    pub machine: String,
    pub stage: String,
    pub backend: String,
    /// Everything the key was computed from: inputs and their digests, vars, steps, base.
    pub material: KeyMaterial,
    /// sha256 over tree.json's entries (see `tree::tree_digest`).
    pub artifact_digest: String,
    pub files: u64,
    pub size: u64,
    pub created: String,
    pub created_unix: u64,
    pub duration_ms: u64,
    pub envbuild_version: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
    base: PathBuf,
    /// This process's lease on the keys it works with (lease.rs), taken on first `hold`.
    lease: Arc<Mutex<Option<Lease>>>,
}

/// A committed entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub dir: PathBuf,
}

impl Entry {
    pub fn key(&self) -> &str {
        &self.name[..64.min(self.name.len())]
    }
    pub fn manifest(&self) -> Result<Manifest> {
        let path = self.dir.join("manifest.json");
        let bytes = std::fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Failed(format!("{} is not a valid manifest: {e}", path.display())))
    }
    pub fn tree(&self) -> Result<Vec<TreeEntry>> {
        let path = self.dir.join("tree.json");
        let bytes = std::fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Failed(format!("{} is not a valid tree: {e}", path.display())))
    }
    pub fn artifact(&self) -> PathBuf {
        self.dir.join("artifact")
    }
}

/// An entry being written in tmp/; dropped without `commit`, it is deleted.
#[derive(Debug)]
pub struct Pending {
    pub dir: PathBuf,
    committed: bool,
}

impl Pending {
    /// The stage key this entry is being written for (the folder is `KEY.PID.SEQ`).
    pub fn owner(&self) -> String {
        let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
        name.split('.').next().unwrap_or_default().to_string()
    }

    pub fn artifact(&self) -> PathBuf {
        self.dir.join("artifact")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log.txt")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}

static PENDING_SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store at `root` and removes leftovers of killed builds.
    pub fn open(root: &Path) -> Result<Store> {
        let base = root.join(LAYOUT);
        for dir in ["entries", "tmp", "locks", "leases", "quarantine"] {
            std::fs::create_dir_all(base.join(dir))
                .ctx(|| format!("creating store folder {}", base.join(dir).display()))?;
        }
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            std::fs::write(&tag, CACHEDIR_TAG).ctx(|| format!("writing {}", tag.display()))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            base,
            lease: Arc::default(),
        };
        store.clean_leftovers()?;
        Ok(store)
    }

    pub fn entries_dir(&self) -> PathBuf {
        self.base.join("entries")
    }

    /// The fingerprint cache of the store at `root` (readable before the store is opened).
    pub fn fingerprint_file(root: &Path) -> PathBuf {
        root.join(LAYOUT).join("fingerprints.json")
    }

    /// Removes tmp/ folders nobody is writing: a pending entry's key lock is held for as long as
    /// it is being written, so a folder whose key lock is free belongs to a dead build.
    fn clean_leftovers(&self) -> Result<usize> {
        let tmp = self.base.join("tmp");
        let mut removed = 0;
        for entry in std::fs::read_dir(&tmp).ctx(|| format!("reading {}", tmp.display()))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('.');
            let (owner, pid) = (
                parts.next().unwrap_or(""),
                parts.next().and_then(|p| p.parse::<i32>().ok()),
            );
            let stale = if owner.len() == 64 {
                self.try_lock(owner)?.is_some()
            } else {
                pid.is_none_or(|pid| !process_alive(pid))
            };
            if stale && remove_tree(&entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn lock(&self, key: &str, on_wait: impl FnOnce()) -> Result<FileLock> {
        FileLock::acquire(
            &self.base.join("locks").join(format!("{key}.lock")),
            on_wait,
        )
    }

    fn try_lock(&self, key: &str) -> Result<Option<FileLock>> {
        FileLock::try_acquire(&self.base.join("locks").join(format!("{key}.lock")))
    }

    /// Leases `keys` for as long as this process runs: `cache gc` keeps their entries, and
    /// every entry committed after the first call (store/lease.rs).
    pub fn hold(&self, keys: impl IntoIterator<Item = String>) -> Result<()> {
        let _written_beside_no_gc = FileLock::acquire_shared(&self.gc_lock_file(), || {
            tracing::info!("waiting for `cache gc` to finish");
        })?;
        let mut lease = self.lease.lock().expect("the lease is not poisoned");
        if lease.is_none() {
            let name = format!(
                "{}.{}.json",
                std::process::id(),
                PENDING_SEQ.fetch_add(1, Ordering::Relaxed)
            );
            *lease = Some(Lease::take(&self.base.join("leases"), name)?);
        }
        lease.as_mut().expect("taken above").extend(keys)
    }

    /// gc's lock: while it is held no command writes a lease (`hold` waits).
    pub fn lock_for_gc(&self, on_wait: impl FnOnce()) -> Result<FileLock> {
        FileLock::acquire(&self.gc_lock_file(), on_wait)
    }

    /// What running commands hold; only meaningful under [`Store::lock_for_gc`].
    pub fn held(&self) -> Held {
        lease::held(&self.base.join("leases"))
    }

    fn gc_lock_file(&self) -> PathBuf {
        self.base.join("locks").join("gc.lock")
    }

    /// Every committed entry, by key.
    pub fn index(&self) -> Result<HashMap<String, Entry>> {
        let dir = self.entries_dir();
        let mut index = HashMap::new();
        for item in std::fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let item = item.ctx(|| format!("reading {}", dir.display()))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.len() > 65 && name.as_bytes()[64] == b'-' {
                index.insert(
                    name[..64].to_string(),
                    Entry {
                        name: name.clone(),
                        dir: item.path(),
                    },
                );
            }
        }
        Ok(index)
    }

    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut entries: Vec<Entry> = self.index()?.into_values().collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    pub fn find(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.index()?.remove(key))
    }

    /// The newest entry built for (env, machine, stage), whatever its key: what `plan --explain`
    /// compares against.
    pub fn newest_for(
        &self,
        index: &HashMap<String, Entry>,
        env: &str,
        machine: &str,
        stage: &str,
    ) -> Option<Manifest> {
        let suffix = format!("-{env}-{machine}-{stage}");
        index
            .values()
            .filter(|e| e.name.ends_with(&suffix) && e.name.len() == 64 + suffix.len())
            .filter_map(|e| e.manifest().ok())
            .max_by_key(|m| m.created_unix)
    }

    /// A fresh path in tmp/ owned by this process: `<owner>.<pid>.<n>`.
    pub fn tmp_path(&self, owner: &str) -> PathBuf {
        let seq = PENDING_SEQ.fetch_add(1, Ordering::Relaxed);
        self.base
            .join("tmp")
            .join(format!("{owner}.{}.{seq}", std::process::id()))
    }

    pub fn begin(&self, key: &str) -> Result<Pending> {
        let dir = self.tmp_path(key);
        std::fs::create_dir_all(dir.join("artifact"))
            .ctx(|| format!("creating {}", dir.display()))?;
        Ok(Pending {
            dir,
            committed: false,
        })
    }

    /// Writes the manifest and tree, syncs, and renames the pending folder into place.
    pub fn commit(
        &self,
        mut pending: Pending,
        manifest: &Manifest,
        tree: &[TreeEntry],
    ) -> Result<Entry> {
        let name = entry_name(
            &manifest.key,
            &manifest.env,
            &manifest.machine,
            &manifest.stage,
        );
        write_synced(
            &pending.dir.join("tree.json"),
            &serde_json::to_vec(tree).expect("tree serializes"),
        )?;
        write_synced(
            &pending.dir.join("manifest.json"),
            &serde_json::to_vec_pretty(manifest).expect("manifest serializes"),
        )?;
        sync_filesystem(&pending.dir)?;
        let target = self.entries_dir().join(&name);
        if target.exists() {
            // Built twice by builds that did not share a lock (another store path?): keep the first.
            return Ok(Entry { name, dir: target });
        }
        std::fs::rename(&pending.dir, &target)
            .ctx(|| format!("committing {}", target.display()))?;
        pending.committed = true;
        sync_dir(&self.entries_dir())?;
        Ok(Entry { name, dir: target })
    }

    /// Removes an entry: one rename makes it disappear, then the files go.
    pub fn remove(&self, entry: &Entry) -> Result<()> {
        let doomed = self.detach(entry)?;
        remove_tree(&doomed).ctx(|| format!("removing {}", doomed.display()))
    }

    /// Makes an entry disappear by one rename into tmp/; returns where it went, for the caller
    /// to delete (a `removing.<pid>.<n>` folder left by a killed process is cleaned up).
    pub fn detach(&self, entry: &Entry) -> Result<PathBuf> {
        let doomed = self.tmp_path("removing");
        std::fs::rename(&entry.dir, &doomed).ctx(|| format!("removing {}", entry.dir.display()))?;
        Ok(doomed)
    }

    /// Moves a damaged entry out of the way; it is never used again but kept for inspection.
    pub fn quarantine(&self, entry: &Entry) -> Result<PathBuf> {
        let target = self
            .base
            .join("quarantine")
            .join(format!("{}.{}", entry.name, now_unix()));
        std::fs::rename(&entry.dir, &target)
            .ctx(|| format!("quarantining {}", entry.dir.display()))?;
        Ok(target)
    }

    /// Quarantines an entry a restore found damaged; returns where it went and its problems
    /// (as `cache verify` lists them), for the warning.
    pub fn quarantine_damaged(&self, entry: &Entry) -> Result<(PathBuf, Vec<String>)> {
        let mut problems = self.verify(entry);
        if problems.is_empty() {
            problems.push("a file did not match its digest as it was copied".into());
        }
        Ok((self.quarantine(entry)?, problems))
    }

    /// Recomputes every digest of `entry` (see `verify`); returns the problems found (empty:
    /// the entry is sound).
    pub fn verify(&self, entry: &Entry) -> Vec<String> {
        self.verify_with(entry, &HashMap::new())
    }

    /// As `verify`, but files that this process has just written into a private folder are
    /// taken at the digest of the bytes it wrote (`written`: full path -> sha256) instead of
    /// being read back: an import hashes while it unpacks.
    pub fn verify_with(&self, entry: &Entry, written: &verify::Written) -> Vec<String> {
        verify::check(entry, verify::Contents::Hashed(written))
            .err()
            .unwrap_or_default()
    }
}

pub fn entry_name(key: &str, env: &str, machine: &str, stage: &str) -> String {
    format!("{key}-{env}-{machine}-{stage}")
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(path).ctx(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .ctx(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .ctx(|| format!("syncing {}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing {}", dir.display()))
}

/// One syncfs for the whole pending folder instead of an fsync per file: a venv has thousands.
fn sync_filesystem(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
    // SAFETY: syncfs takes a valid descriptor we own for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| format!("syncing {}", path.display()));
    }
    Ok(())
}

/// Removes a half-made folder or file when the work that made it ends, however it ends.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove_any(&self.0);
    }
}

/// Removes a folder (however its modes are set) or a file; a path that is not there is fine.
pub fn remove_any(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        let _ = remove_tree(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// Removes a folder tree, making read-only folders writable first (a venv or a failed build may
/// leave some).
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            let _ = digest::walk(path, &mut |_, full, meta| {
                if meta.is_dir() {
                    let _ = std::fs::set_permissions(full, std::fs::Permissions::from_mode(0o700));
                }
                Ok(())
            });
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
            std::fs::remove_dir_all(path)
        }
    }
}
