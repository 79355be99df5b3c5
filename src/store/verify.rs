//! The checks an entry passes before anything uses it. `cache verify`, every restore into a
//! machine and every import or pull run this one function, so what verify calls bad is never
//! restored.
//!
//! The chain, each link covering the next:
//! - the entry's folder is named `<key>-<env>-<machine>-<stage>` of its manifest, and the
//!   manifest's key is the digest of its key material (with the same parent);
//! - tree.json hashes to the manifest's artifact digest, and has the file count and size the
//!   manifest states;
//! - the tree is well formed: plain relative paths, each inside a folder listed before it (so a
//!   restore never writes through a link), none twice, and no mode a snapshot never records
//!   (setuid, setgid, world-writable: see `REFUSED_MODE_BITS`);
//! - the artifact holds exactly the tree: the same paths, kinds, modes, sizes and link targets,
//!   and files with the tree's sha256 (hashed here, or by the restore as it copies them).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::key::digest;
use crate::store::tree::{self, TreeEntry};

use super::{Entry, Manifest, entry_name};

/// Mode bits no snapshot records (it clears them): setuid, setgid and write for everyone. An
/// entry whose tree has one was not made by a snapshot.
pub const REFUSED_MODE_BITS: u32 = 0o6002;

/// The sha256 of files this process has just written into a private folder, by full path.
pub type Written = HashMap<PathBuf, String>;

/// How file contents are checked.
pub enum Contents<'a> {
    /// Every file is hashed, except those in `Written`, taken at the digest of what was written.
    Hashed(&'a Written),
    /// Kinds, modes and sizes only: the caller (a restore) hashes each file as it copies it, and
    /// is given each file's metadata (its index in the tree, metadata) so it need not read it
    /// again.
    OnCopy(&'a mut dyn FnMut(usize, &std::fs::Metadata)),
    /// The artifact is not walked: for a restore into a folder last made equal to this very
    /// entry (its live index says so), which takes from the artifact only the files that
    /// changed there, each hashed as it is copied (see `machine::restore`).
    Unwalked,
}

/// Checks `entry`: its tree if it is sound, else the problems found, each naming what is wrong.
pub fn check(entry: &Entry, mut contents: Contents) -> Result<Vec<TreeEntry>, Vec<String>> {
    let manifest = entry.manifest().map_err(|e| vec![e.to_string()])?;
    let tree = entry.tree().map_err(|e| vec![e.to_string()])?;
    let mut problems = chain_problems(entry, &manifest, &tree);
    problems.extend(tree_problems(&tree));
    if !matches!(contents, Contents::Unwalked) {
        problems.extend(artifact_problems(&entry.artifact(), &tree, &mut contents));
    }
    if problems.is_empty() {
        Ok(tree)
    } else {
        Err(problems)
    }
}

/// `check` without reading file contents: for a VM disk, whose digest its overlay chain pins.
pub fn check_all_but_contents(entry: &Entry) -> Result<Vec<TreeEntry>, Vec<String>> {
    check(entry, Contents::OnCopy(&mut |_, _| {}))
}

fn chain_problems(entry: &Entry, manifest: &Manifest, tree: &[TreeEntry]) -> Vec<String> {
    let mut problems = Vec::new();
    if manifest.material.key() != manifest.key
        || entry.key() != manifest.key
        || manifest.parent != manifest.material.parent
    {
        problems.push(
            "the manifest's key does not match its key material or the entry name".to_string(),
        );
    }
    let expected = entry_name(
        &manifest.key,
        &manifest.env,
        &manifest.machine,
        &manifest.stage,
    );
    if entry.name != expected {
        problems.push(format!(
            "the entry is named differently from its manifest ({expected})"
        ));
    }
    if tree::tree_digest(tree) != manifest.artifact_digest {
        problems.push("tree.json does not match the manifest's artifact digest".to_string());
    }
    let size: u64 = tree
        .iter()
        .map(|e| match e {
            TreeEntry::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    if manifest.files != tree.len() as u64 || manifest.size != size {
        problems.push(format!(
            "the manifest states {} entries of {} bytes, tree.json lists {} of {size}",
            manifest.files,
            manifest.size,
            tree.len()
        ));
    }
    problems
}

fn tree_problems(tree: &[TreeEntry]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut folders = HashSet::new();
    for item in tree {
        let path = item.path();
        let plain = !path.is_empty()
            && Path::new(path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            && !path.ends_with('/')
            && !path.contains("//");
        if !plain {
            problems.push(format!(
                "tree.json lists `{path}`, not a plain relative path"
            ));
            continue;
        }
        if !seen.insert(path) {
            problems.push(format!("tree.json lists {path} twice"));
        }
        if let Some((parent, _)) = path.rsplit_once('/')
            && !folders.contains(parent)
        {
            problems.push(format!(
                "tree.json lists {path} outside any folder listed before it"
            ));
        }
        let mode = match item {
            TreeEntry::File { mode, .. } => Some(*mode),
            TreeEntry::Dir { mode, .. } => {
                folders.insert(path);
                Some(*mode)
            }
            TreeEntry::Link { .. } => None,
        };
        if let Some(mode) = mode
            && (mode & !0o7777 != 0 || mode & REFUSED_MODE_BITS != 0)
        {
            problems.push(format!(
                "{path} has mode {mode:o} (setuid, setgid or writable by everyone), which no snapshot records"
            ));
        }
    }
    problems
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "link"
    } else if t.is_dir() {
        "folder"
    } else if t.is_file() {
        "file"
    } else {
        "special file"
    }
}

fn expected_kind(item: &TreeEntry) -> &'static str {
    match item {
        TreeEntry::File { .. } => "file",
        TreeEntry::Link { .. } => "link",
        TreeEntry::Dir { .. } => "folder",
    }
}

fn artifact_problems(artifact: &Path, tree: &[TreeEntry], contents: &mut Contents) -> Vec<String> {
    let expected: HashMap<&str, usize> = tree
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path(), i))
        .collect();
    let mut problems = Vec::new();
    let mut found = vec![false; tree.len()];
    let walked = digest::walk(artifact, &mut |relative, full, meta| {
        let Some(&at) = expected.get(relative) else {
            problems.push(format!("{relative} is not part of the entry"));
            return Ok(());
        };
        let item = &tree[at];
        found[at] = true;
        if kind(meta) != expected_kind(item) {
            problems.push(format!(
                "{relative} is a {} where tree.json lists a {}",
                kind(meta),
                expected_kind(item)
            ));
            return Ok(());
        }
        let mode = meta.permissions().mode() & 0o7777;
        let same = match item {
            TreeEntry::Dir { mode: want, .. } => mode == *want,
            TreeEntry::Link { target, .. } => {
                std::fs::read_link(full).is_ok_and(|t| t.as_os_str() == target.as_str())
            }
            TreeEntry::File {
                mode: want,
                size,
                sha256,
                ..
            } => {
                mode == *want
                    && meta.size() == *size
                    && match contents {
                        Contents::OnCopy(seen) => {
                            seen(at, meta);
                            true
                        }
                        Contents::Unwalked => true,
                        Contents::Hashed(written) => match written.get(full) {
                            Some(got) => got == sha256,
                            None => super::copy::sha256_file(full).is_ok_and(|got| got == *sha256),
                        },
                    }
            }
        };
        if !same {
            problems.push(format!("{relative} was modified"));
        }
        Ok(())
    });
    if let Err(e) = walked {
        problems.push(format!("artifact unreadable: {e}"));
        return problems;
    }
    for (item, _) in tree.iter().zip(&found).filter(|(_, found)| !**found) {
        problems.push(format!("{} is missing", item.path()));
    }
    problems
}
