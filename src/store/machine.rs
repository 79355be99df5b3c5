//! A machine folder into an entry (`snapshot`) and back (`restore`). Both keep holes (see
//! `copy`); a restore uses an entry only once it passes `verify::check`, and hashes every file it
//! copies against the tree.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::key::digest;
use crate::store::tree::TreeEntry;

use super::copy::{copy_hashing, sha256_file};
use super::live_index::{self, IndexWriter, LiveIndex, Recorded};
use super::path_map::{self, PathMap};
use super::verify::{self, REFUSED_MODE_BITS};
use super::{Entry, remove_tree};

/// Copies the folder `source` into `target` (a new folder), hashing every file on the way.
/// A file with the same path, mode and content in `previous` (the parent entry's artifact) is
/// hard-linked instead of copied: entries never change, so sharing their files is safe.
///
/// A file the machine's live index (`index_file`) says is unchanged since it held the previous
/// entry's content is linked without being read; the index is then rewritten for the entry
/// being made (`key`).
///
/// Setuid, setgid and world-write bits are cleared, in the machine too, so the machine is what
/// its snapshot holds: a machine folder is the user's, and a store may be shared (see
/// `verify::REFUSED_MODE_BITS`).
pub fn snapshot(
    source: &Path,
    target: &Path,
    previous: Option<(&Path, &[TreeEntry])>,
    index_file: &Path,
    key: &str,
) -> Result<(Vec<TreeEntry>, u64)> {
    let index = LiveIndex::load(index_file);
    live_index::forget(index_file);
    let mut writer = IndexWriter::new(key);
    let previous_files: HashMap<&str, (u32, &str)> = previous
        .map(|(_, tree)| {
            tree.iter()
                .filter_map(|e| match e {
                    TreeEntry::File {
                        path, mode, sha256, ..
                    } => Some((path.as_str(), (*mode, sha256.as_str()))),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tree = Vec::new();
    let mut size = 0u64;
    let mut dirs = Vec::new();
    digest::walk(source, &mut |relative, full, meta| {
        let out = target.join(relative);
        let file_type = meta.file_type();
        let mut mode = meta.permissions().mode() & 0o7777;
        if !file_type.is_symlink() && mode & REFUSED_MODE_BITS != 0 {
            mode &= !REFUSED_MODE_BITS;
            std::fs::set_permissions(full, std::fs::Permissions::from_mode(mode))
                .ctx(|| format!("clearing setuid/setgid/world-write on {}", full.display()))?;
        }
        if file_type.is_dir() {
            std::fs::create_dir(&out).ctx(|| format!("creating {}", out.display()))?;
            dirs.push((out, mode));
            tree.push(TreeEntry::Dir {
                path: relative.to_string(),
                mode,
            });
        } else if file_type.is_symlink() {
            let link =
                std::fs::read_link(full).ctx(|| format!("reading link {}", full.display()))?;
            std::os::unix::fs::symlink(&link, &out)
                .ctx(|| format!("creating link {}", out.display()))?;
            tree.push(TreeEntry::Link {
                path: relative.to_string(),
                target: link.to_string_lossy().into_owned(),
            });
        } else if file_type.is_file() {
            let unchanged = |old: &str| -> Result<bool> {
                Ok(match index.sha256(relative, meta) {
                    Some(known) => known == old,
                    None => sha256_file(full)? == old,
                })
            };
            let sha256 = match (previous, previous_files.get(relative)) {
                (Some((previous_dir, _)), Some((old_mode, old)))
                    if *old_mode == mode && unchanged(old)? =>
                {
                    std::fs::hard_link(previous_dir.join(relative), &out)
                        .ctx(|| format!("linking {}", out.display()))?;
                    old.to_string()
                }
                _ => copy_hashing(full, &out, mode, meta.modified().ok())?,
            };
            size += meta.size();
            writer.record(relative, meta, &sha256);
            tree.push(TreeEntry::File {
                path: relative.to_string(),
                mode,
                size: meta.size(),
                sha256,
            });
        } else {
            return Err(Error::Failed(format!(
                "{} is a socket, fifo or device; a machine snapshot holds only files, folders and links (stop the process that made it, or make it outside the machine root)",
                full.display()
            )));
        }
        Ok(())
    })?;
    for (dir, mode) in dirs.into_iter().rev() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .ctx(|| format!("setting mode of {}", dir.display()))?;
    }
    writer.save(index_file);
    Ok((tree, size))
}

/// Makes `target` hold exactly the entry's artifact, and says whether the entry is sound.
///
/// The entry must first pass `verify::check` (manifest, tree, every path's kind, mode and size).
/// Then a file already in `target` is kept when its size and mode are the tree's and either the
/// machine's live index (`index_file`, see `live_index`) says it has not been written since it
/// held the tree's sha256, or, like rsync's quick check, its mtime is that of the store's copy
/// (restores and snapshots carry mtimes over). Every other file is copied from the store and
/// its sha256 checked against the tree on the way, so no byte reaches the machine that the tree
/// does not name. Paths the entry does not have are removed. So a machine that services changed
/// in a few places (a database, a pid file) is brought back in a second or two.
///
/// When the live index says `target` was last made equal to this very entry, which was then
/// checked whole, the artifact is not walked again: the tree and manifest are checked, and
/// only the files that changed are read from the artifact, each hashed. A fresh machine, or
/// one last restored from another entry, gets the whole check.
///
/// `Ok(false)`: the entry is damaged; the caller quarantines it and builds instead. A restore
/// that fails (a full disk) clears `target`: the machine is marked dirty before a restore, and
/// what was written is not left taking the space.
pub fn restore(entry: &Entry, target: &Path, index_file: &Path) -> Result<bool> {
    let walk_artifact = LiveIndex::key_of(index_file) != entry.key();
    let mut stored: Vec<Option<std::fs::Metadata>> = Vec::new();
    let mut seen = |at: usize, meta: &std::fs::Metadata| {
        if stored.len() <= at {
            stored.resize(at + 1, None);
        }
        stored[at] = Some(meta.clone());
    };
    // The walk of what the machine holds now is the longest part; the entry's check and the
    // index's load read other files meanwhile.
    let (checked, index, live) = std::thread::scope(|scope| {
        let live = scope.spawn(|| live_tree(target));
        let contents = if walk_artifact {
            verify::Contents::OnCopy(&mut seen)
        } else {
            verify::Contents::Unwalked
        };
        let mut checked = verify::check(entry, contents);
        let index = LiveIndex::load(index_file);
        if !walk_artifact && index.key != entry.key() {
            // Its first line named this entry but the rest did not parse: check the artifact
            // as for a folder with no index.
            checked = verify::check(entry, verify::Contents::OnCopy(&mut seen));
        }
        (
            checked,
            index,
            live.join().expect("the walk of a machine panicked"),
        )
    });
    // From here until the end of a successful restore the folder equals no entry.
    live_index::forget(index_file);
    let Ok(tree) = checked else {
        return Ok(false);
    };
    let mut writer = IndexWriter::new(entry.key());
    let known = Known {
        index: &index,
        stored: &stored,
    };
    let copied = live.and_then(|live| copy_in(entry, &tree, &known, live, target, &mut writer));
    match copied {
        Ok(true) => {
            writer.save(index_file);
            Ok(true)
        }
        Ok(false) => Ok(false),
        Err(e) => {
            let cleared = match remove_tree(target) {
                Ok(()) => format!("{} was cleared", target.display()),
                Err(c) => format!("clearing {} failed too: {c}", target.display()),
            };
            Err(Error::Failed(format!(
                "restoring {} failed: {e}\n  {cleared}; the store is unchanged, build again once the cause is fixed",
                entry.name
            )))
        }
    }
}

/// Every path under `target` with its metadata, by path relative to it (none if it is missing:
/// nothing is written before the entry passed its check).
///
/// This walk is most of a warm restore (aio's machine: 114k paths, one `statx` each), and the
/// kernel's side of it scales with threads, so it is shared out: breadth first until there are
/// `SHARED_FOLDERS` folders (a venv's site-packages gets split into its packages), then each
/// thread takes whole folders from that list until none is left.
fn live_tree(target: &Path) -> Result<PathMap<String, std::fs::Metadata>> {
    const SHARED_FOLDERS: usize = 256;
    let mut live = PathMap::default();
    if !target.is_dir() {
        return Ok(live);
    }
    let mut frontier = vec![String::new()];
    while !frontier.is_empty() && frontier.len() < SHARED_FOLDERS {
        let mut next = Vec::new();
        for dir in &frontier {
            read_folder(target, dir, &mut live, &mut next)?;
        }
        frontier = next;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let taken = std::sync::atomic::AtomicUsize::new(0);
    let parts: Vec<Result<PathMap<String, std::fs::Metadata>>> = std::thread::scope(|scope| {
        let walkers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut found = PathMap::default();
                    let mut below = Vec::new();
                    loop {
                        let at = taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(dir) = frontier.get(at) else {
                            return Ok(found);
                        };
                        below.push(dir.clone());
                        while let Some(dir) = below.pop() {
                            read_folder(target, &dir, &mut found, &mut below)?;
                        }
                    }
                })
            })
            .collect();
        walkers
            .into_iter()
            .map(|walker| walker.join().expect("a walk of a machine panicked"))
            .collect()
    });
    for part in parts {
        live.extend(part?);
    }
    Ok(live)
}

/// Adds what the folder `dir` (relative to `root`) holds to `found`, and its sub-folders to
/// `folders`. Metadata is read relative to the folder's descriptor (fstatat), without following
/// links.
fn read_folder(
    root: &Path,
    dir: &str,
    found: &mut PathMap<String, std::fs::Metadata>,
    folders: &mut Vec<String>,
) -> Result<()> {
    let full = root.join(dir);
    for item in std::fs::read_dir(&full).ctx(|| format!("reading {}", full.display()))? {
        let item = item.ctx(|| format!("reading {}", full.display()))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        let relative = if dir.is_empty() {
            name.into_owned()
        } else {
            format!("{dir}/{name}")
        };
        let meta = item
            .metadata()
            .ctx(|| format!("reading {}", root.join(&relative).display()))?;
        if meta.is_dir() {
            folders.push(relative.clone());
        }
        found.insert(relative, meta);
    }
    Ok(())
}

/// What a restore knows of the files it may keep.
struct Known<'a> {
    index: &'a LiveIndex,
    /// The metadata of each of the entry's files, by index in the tree, as `verify::check`
    /// saw it (empty when the artifact was not walked).
    stored: &'a [Option<std::fs::Metadata>],
}

impl Known<'_> {
    /// The store's copy of the file at `at` (`from`), if it is a file of the tree's size.
    fn stored(&self, at: usize, from: &Path, size: u64) -> Option<std::fs::Metadata> {
        match self.stored.get(at) {
            Some(Some(meta)) => Some(meta.clone()),
            _ => std::fs::symlink_metadata(from)
                .ok()
                .filter(|m| m.is_file() && m.size() == size),
        }
    }
}

/// `live`: what `target` holds now, by path, from `live_tree`. Each file the machine ends up
/// holding is recorded in `writer`.
fn copy_in(
    entry: &Entry,
    tree: &[TreeEntry],
    known: &Known,
    mut live: PathMap<String, std::fs::Metadata>,
    target: &Path,
    writer: &mut IndexWriter,
) -> Result<bool> {
    std::fs::create_dir_all(target).ctx(|| format!("creating {}", target.display()))?;
    let mut wanted = path_map::with_capacity(tree.len());
    wanted.extend(tree.iter().map(|e| (e.path(), e)));
    let mut extra: Vec<String> = live
        .iter()
        .filter(|(relative, meta)| match wanted.get(relative.as_str()) {
            Some(TreeEntry::Dir { .. }) => !meta.is_dir(),
            Some(TreeEntry::Link { .. }) => !meta.file_type().is_symlink(),
            Some(TreeEntry::File { .. }) => !meta.is_file(),
            None => true,
        })
        .map(|(relative, _)| relative.clone())
        .collect();
    // Parents before their children, so that a removed folder takes what is inside it.
    extra.sort();
    let mut removed: Option<&str> = None;
    for relative in &extra {
        live.remove(relative);
        let inside = |dir: &str| {
            relative
                .strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        if removed.is_some_and(inside) {
            continue;
        }
        let path = target.join(relative);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                remove_tree(&path).ctx(|| format!("removing {}", path.display()))?;
                removed = Some(relative);
            }
            Ok(_) => std::fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?,
            Err(_) => {}
        }
    }
    let source = entry.artifact();
    let mut dirs = Vec::new();
    for (at, item) in tree.iter().enumerate() {
        // Full paths are made only for what is touched: most paths of a warm restore are not.
        let out = || target.join(item.path());
        match item {
            TreeEntry::Dir { mode, path } => {
                let out = match live.get(path) {
                    Some(meta) if meta.permissions().mode() & 0o7777 == *mode => continue,
                    Some(_) => out(),
                    None => {
                        let out = out();
                        std::fs::create_dir(&out).ctx(|| format!("creating {}", out.display()))?;
                        out
                    }
                };
                dirs.push((out, *mode));
            }
            TreeEntry::Link { target: link, .. } => {
                let out = out();
                if std::fs::read_link(&out)
                    .is_ok_and(|current| current.as_os_str() == link.as_str())
                {
                    continue;
                }
                let _ = std::fs::remove_file(&out);
                std::os::unix::fs::symlink(link, &out)
                    .ctx(|| format!("creating link {}", out.display()))?;
            }
            TreeEntry::File {
                path,
                mode,
                size,
                sha256,
            } => {
                let from = || source.join(path);
                let mut stored = None;
                if let Some(live) = live.get(path) {
                    if live.size() == *size && live.permissions().mode() & 0o7777 == *mode {
                        let keep = match known.index.lookup(path, live) {
                            Recorded::Unchanged(was) => was == sha256,
                            Recorded::Changed => false,
                            // The quick check, for what the index could not record.
                            Recorded::Unknown => {
                                let Some(copy) = known.stored(at, &from(), *size) else {
                                    return Ok(false);
                                };
                                let same = live.mtime() == copy.mtime()
                                    && live.mtime_nsec() == copy.mtime_nsec();
                                stored = Some(copy);
                                same
                            }
                        };
                        if keep {
                            writer.record(path, live, sha256);
                            continue;
                        }
                    }
                    let out = out();
                    std::fs::remove_file(&out).ctx(|| format!("replacing {}", out.display()))?;
                }
                let from = from();
                let Some(stored) = stored.or_else(|| known.stored(at, &from, *size)) else {
                    return Ok(false);
                };
                // Just written: racy, so not recorded (see `live_index`).
                if copy_hashing(&from, &out(), *mode, stored.modified().ok())? != *sha256 {
                    return Ok(false);
                }
            }
        }
    }
    for (dir, mode) in dirs.into_iter().rev() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .ctx(|| format!("setting mode of {}", dir.display()))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyMaterial;
    use crate::store::tree::tree_digest;
    use crate::store::{Manifest, Store};
    use std::path::PathBuf;

    fn material() -> KeyMaterial {
        KeyMaterial {
            format: 1,
            backend: "local".into(),
            base: "host".into(),
            parent: None,
            after: Default::default(),
            steps: vec!["true".into()],
            env: Default::default(),
            vars: Default::default(),
            inputs: Default::default(),
            templates: Default::default(),
            sources: Default::default(),
            snapshot: None,
        }
    }

    /// A machine folder: a file, a script, a folder, a link.
    fn machine(root: &Path) {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/greeting"), "hello\n").unwrap();
        std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("etc/greeting", root.join("link")).unwrap();
    }

    fn commit(store: &Store, source: &Path, previous: Option<&Entry>) -> Entry {
        let mut material = material();
        material.parent = previous.map(|p| p.key().to_string());
        let key = material.key();
        let pending = store.begin(&key).unwrap();
        let previous_tree = previous.map(|p| (p.artifact(), p.tree().unwrap()));
        let (tree, size) = snapshot(
            source,
            &pending.artifact(),
            previous_tree
                .as_ref()
                .map(|(d, t)| (d.as_path(), t.as_slice())),
            &source.with_extension("index"),
            &key,
        )
        .unwrap();
        let manifest = Manifest {
            key: key.clone(),
            parent: material.parent.clone(),
            env: "e".into(),
            machine: "m".into(),
            stage: "s".into(),
            backend: "local".into(),
            material,
            artifact_digest: tree_digest(&tree),
            files: tree.len() as u64,
            size,
            created: String::new(),
            created_unix: 0,
            duration_ms: 0,
            envbuild_version: String::new(),
        };
        store.commit(pending, &manifest, &tree).unwrap()
    }

    fn rewrite_tree(entry: &Entry, edit: impl FnOnce(&mut Vec<TreeEntry>)) {
        let mut tree = entry.tree().unwrap();
        edit(&mut tree);
        std::fs::write(
            entry.dir.join("tree.json"),
            serde_json::to_vec(&tree).unwrap(),
        )
        .unwrap();
        let mut manifest = entry.manifest().unwrap();
        manifest.artifact_digest = tree_digest(&tree);
        std::fs::write(
            entry.dir.join("manifest.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_snapshot_restores_as_it_was_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        machine(&dir.path().join("live"));
        let entry = commit(&store, &dir.path().join("live"), None);
        assert_eq!(store.verify(&entry), Vec::<String>::new());
        let target = dir.path().join("restored");
        assert!(restore(&entry, &target, &target.with_extension("index")).unwrap());
        assert_eq!(
            std::fs::read_to_string(target.join("link")).unwrap(),
            "hello\n"
        );
        assert_eq!(mode(&target.join("run.sh")), 0o755);
    }

    /// Sets the mtime of `path` to `like`'s: a forged quick check.
    fn same_mtime(path: &Path, like: &Path) {
        let mtime = std::fs::metadata(like).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }

    /// A machine committed to a store in `dir` and restored once into `restored`: the entry,
    /// the restored folder and its live index.
    fn restored_once(dir: &Path) -> (Entry, PathBuf, PathBuf) {
        let store = Store::open(&dir.join("store")).unwrap();
        machine(&dir.join("live"));
        let entry = commit(&store, &dir.join("live"), None);
        let target = dir.join("restored");
        let index = target.with_extension("index");
        assert!(restore(&entry, &target, &index).unwrap());
        (entry, target, index)
    }

    #[test]
    fn a_file_rewritten_since_the_last_restore_is_restored_even_with_its_mtime_set_back() {
        let dir = tempfile::tempdir().unwrap();
        let (entry, target, index) = restored_once(dir.path());
        // Copied just now, so racy: the index names the entry but records no file yet.
        assert_eq!(LiveIndex::load(&index).key, entry.key());
        assert_eq!(LiveIndex::load(&index).len(), 0);
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(restore(&entry, &target, &index).unwrap());
        assert_eq!(LiveIndex::load(&index).len(), 2, "etc/greeting and run.sh");

        // Same size, same mtime as the store's copy: the quick check alone would keep it.
        let greeting = target.join("etc/greeting");
        std::fs::write(&greeting, "HELLO\n").unwrap();
        same_mtime(&greeting, &entry.artifact().join("etc/greeting"));
        assert!(restore(&entry, &target, &index).unwrap());
        assert_eq!(std::fs::read_to_string(&greeting).unwrap(), "hello\n");
    }

    #[test]
    fn the_artifact_is_walked_again_unless_the_machine_was_last_made_from_that_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (entry, target, index) = restored_once(dir.path());
        // A file the tree does not list, added to the artifact: nothing of it can reach this
        // machine, whose restore does not walk the artifact again ...
        let extra = entry.artifact().join("extra");
        std::fs::write(&extra, "evil\n").unwrap();
        assert!(restore(&entry, &target, &index).unwrap());
        assert!(!target.join("extra").exists());
        // ... but a machine last made from something else, or a fresh one, refuses the entry.
        std::fs::write(&index, "envbuild live index 1 another-key\n").unwrap();
        assert!(!restore(&entry, &target, &index).unwrap());
        // An index whose first line names this entry and whose body does not parse is no index.
        let garbled = format!("envbuild live index 1 {}\nnot a line\n", entry.key());
        std::fs::write(&index, garbled).unwrap();
        assert!(!restore(&entry, &target, &index).unwrap());
        let fresh = dir.path().join("fresh");
        assert!(!restore(&entry, &fresh, &fresh.with_extension("index")).unwrap());
        // A file the tree lists, missing from the artifact, which this machine must copy.
        std::fs::remove_file(&extra).unwrap();
        assert!(restore(&entry, &target, &index).unwrap());
        std::fs::remove_file(target.join("run.sh")).unwrap();
        std::fs::remove_file(entry.artifact().join("run.sh")).unwrap();
        assert!(!restore(&entry, &target, &index).unwrap());
    }

    #[test]
    fn setuid_setgid_and_world_write_never_reach_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let live = dir.path().join("live");
        machine(&live);
        std::fs::set_permissions(live.join("run.sh"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        std::fs::set_permissions(live.join("etc"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        let entry = commit(&store, &live, None);
        assert_eq!(mode(&entry.artifact().join("run.sh")), 0o755);
        assert_eq!(mode(&entry.artifact().join("etc")), 0o1775);
        // The machine is what its snapshot holds.
        assert_eq!(mode(&live.join("run.sh")), 0o755);
        assert_eq!(store.verify(&entry), Vec::<String>::new());
    }

    #[test]
    fn a_tree_made_consistent_with_a_forbidden_mode_or_a_bad_path_is_refused() {
        type Edit = fn(&mut Vec<TreeEntry>);
        let cases: [(Edit, &str); 4] = [
            (
                |tree| {
                    for e in tree.iter_mut() {
                        if let TreeEntry::File { path, mode, .. } = e
                            && path == "run.sh"
                        {
                            *mode = 0o4755;
                        }
                    }
                },
                "run.sh has mode 4755",
            ),
            (
                |tree| {
                    let mut copy = tree[0].clone();
                    if let TreeEntry::Dir { path, .. } = &mut copy {
                        *path = "../escape".into();
                    }
                    tree.push(copy);
                },
                "`../escape`, not a plain relative path",
            ),
            (
                |tree| {
                    tree.push(TreeEntry::Dir {
                        path: "link/through".into(),
                        mode: 0o755,
                    })
                },
                "link/through outside any folder listed before it",
            ),
            (
                |tree| {
                    let first = tree[1].clone();
                    tree.push(first);
                },
                "twice",
            ),
        ];
        for (edit, phrase) in cases {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("store")).unwrap();
            machine(&dir.path().join("live"));
            let entry = commit(&store, &dir.path().join("live"), None);
            rewrite_tree(&entry, edit);
            let problems = store.verify(&entry);
            assert!(
                problems.iter().any(|p| p.contains(phrase)),
                "{phrase}: {problems:?}"
            );
            // A restore refuses it before writing anything.
            let target = dir.path().join("restored");
            assert!(
                !restore(&entry, &target, &target.with_extension("index")).unwrap(),
                "{phrase}"
            );
            assert!(!target.exists(), "{phrase}");
            assert!(!dir.path().join("store/v1/entries/escape").exists());
        }
    }

    #[test]
    fn a_file_whose_mode_changed_is_copied_not_linked_to_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let live = dir.path().join("live");
        machine(&live);
        let parent = commit(&store, &live, None);
        std::fs::set_permissions(
            live.join("etc/greeting"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let child = commit(&store, &live, Some(&parent));
        assert_eq!(store.verify(&child), Vec::<String>::new());
        assert_eq!(mode(&parent.artifact().join("etc/greeting")), 0o644);
        let linked = |p: &str| {
            std::fs::metadata(parent.artifact().join(p)).unwrap().ino()
                == std::fs::metadata(child.artifact().join(p)).unwrap().ino()
        };
        assert!(linked("run.sh"));
        assert!(!linked("etc/greeting"));
    }
}
