//! The listing of an entry's artifact (`tree.json`): every file with its mode, size and sha256,
//! every link and folder, in sorted order; and the artifact digest a manifest records over it.

use sha2::{Digest, Sha256};

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

    fn file(path: &str, mode: u32, sha256: &str) -> TreeEntry {
        TreeEntry::File {
            path: path.into(),
            mode,
            size: 1,
            sha256: sha256.into(),
        }
    }

    #[test]
    fn the_digest_is_sensitive_to_path_mode_content_and_order() {
        let dir = TreeEntry::Dir {
            path: "d".into(),
            mode: 0o755,
        };
        let base = vec![
            dir.clone(),
            file("d/a", 0o644, "aa"),
            file("d/b", 0o644, "bb"),
        ];
        let digest = tree_digest(&base);
        assert_eq!(digest, tree_digest(&base.clone()));
        for changed in [
            vec![
                dir.clone(),
                file("d/a", 0o755, "aa"),
                file("d/b", 0o644, "bb"),
            ],
            vec![
                dir.clone(),
                file("d/a", 0o644, "ab"),
                file("d/b", 0o644, "bb"),
            ],
            vec![
                dir.clone(),
                file("d/c", 0o644, "aa"),
                file("d/b", 0o644, "bb"),
            ],
            vec![
                dir.clone(),
                file("d/b", 0o644, "bb"),
                file("d/a", 0o644, "aa"),
            ],
            vec![dir, file("d/a", 0o644, "aa")],
        ] {
            assert_ne!(tree_digest(&changed), digest, "{changed:?}");
        }
    }
}
