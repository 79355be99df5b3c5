//! The listing of an entry's artifact (`tree.json`): every file with its mode, size and sha256,
//! every link and folder, in sorted order; and the artifact digest a manifest records over it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::key::digest::walk;

/// One entry of a folder listing: what a snapshot or an input consists of.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TreeEntry {
    File {
        path: String,
        mode: u32,
        size: u64,
        sha256: String,
    },
    Link {
        path: String,
        target: String,
    },
    Dir {
        path: String,
        mode: u32,
    },
}

impl TreeEntry {
    pub fn path(&self) -> &str {
        match self {
            TreeEntry::File { path, .. }
            | TreeEntry::Link { path, .. }
            | TreeEntry::Dir { path, .. } => path,
        }
    }

    /// The part of an entry that identifies its content, as shown by `plan --explain`.
    pub fn fingerprint(&self) -> String {
        match self {
            TreeEntry::File { mode, sha256, .. } => format!("{:o}:{sha256}", mode & 0o7777),
            TreeEntry::Link { target, .. } => format!("link:{target}"),
            TreeEntry::Dir { mode, .. } => format!("dir:{:o}", mode & 0o7777),
        }
    }
}

/// Lists `path` (a file or a folder) as tree entries named under `name`, hashing files through
/// `hash` (which may answer from a fingerprint cache).
pub fn tree(
    path: &Path,
    name: &str,
    hash: &mut dyn FnMut(&Path, &std::fs::Metadata) -> Result<String>,
) -> Result<Vec<TreeEntry>> {
    let meta = std::fs::symlink_metadata(path).ctx(|| format!("reading {}", path.display()))?;
    let mut entries = Vec::new();
    let mut add = |relative: &str, full: &Path, meta: &std::fs::Metadata| -> Result<()> {
        let entry_path = if relative.is_empty() {
            name.to_string()
        } else {
            format!("{name}/{relative}")
        };
        entries.push(entry_for(&entry_path, full, meta, hash)?);
        Ok(())
    };
    if meta.is_dir() {
        add("", path, &meta)?;
        walk(path, &mut |relative, full, meta| add(relative, full, meta))?;
    } else {
        add("", path, &meta)?;
    }
    Ok(entries)
}

fn entry_for(
    path: &str,
    full: &Path,
    meta: &std::fs::Metadata,
    hash: &mut dyn FnMut(&Path, &std::fs::Metadata) -> Result<String>,
) -> Result<TreeEntry> {
    let file_type = meta.file_type();
    Ok(if file_type.is_symlink() {
        let target = std::fs::read_link(full).ctx(|| format!("reading link {}", full.display()))?;
        TreeEntry::Link {
            path: path.to_string(),
            target: target.to_string_lossy().into_owned(),
        }
    } else if file_type.is_dir() {
        TreeEntry::Dir {
            path: path.to_string(),
            mode: meta.permissions().mode() & 0o7777,
        }
    } else if file_type.is_file() {
        TreeEntry::File {
            path: path.to_string(),
            mode: meta.permissions().mode() & 0o7777,
            size: meta.size(),
            sha256: hash(full, meta)?,
        }
    } else {
        return Err(crate::error::Error::Input(format!(
            "{} is neither a file, a folder nor a link (a socket or device?); inputs and snapshots hold only those",
            full.display()
        )));
    })
}

/// Digest of a whole listing: what a manifest calls the artifact digest.
pub fn tree_digest(entries: &[TreeEntry]) -> String {
    let mut hasher = Sha256::new();
    for entry in entries {
        hasher.update(entry.path().as_bytes());
        hasher.update([0]);
        hasher.update(entry.fingerprint().as_bytes());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::digest::sha256_file;

    #[test]
    fn tree_is_sorted_and_sensitive_to_mode_and_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/b"), b"1").unwrap();
        std::fs::write(dir.path().join("d/a"), b"2").unwrap();
        let mut hash = |p: &Path, _: &std::fs::Metadata| sha256_file(p);
        let first = tree(&dir.path().join("d"), "d", &mut hash).unwrap();
        let paths: Vec<&str> = first.iter().map(|e| e.path()).collect();
        assert_eq!(paths, ["d", "d/a", "d/b"]);
        std::fs::set_permissions(
            dir.path().join("d/a"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let second = tree(&dir.path().join("d"), "d", &mut hash).unwrap();
        assert_ne!(tree_digest(&first), tree_digest(&second));
    }
}
