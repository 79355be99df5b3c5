//! `cache export` / `cache import`: entries moved between machines as a tar stream.
//!
//! Import trusts nothing in the archive: every path must be a plain relative path inside its
//! entry, only files, folders and links that stay inside their entry are accepted, and every
//! digest is recomputed. Everything is unpacked into a private tmp/ folder first; one bad member
//! and the folder is deleted, so a rejected archive writes nothing to the store.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::store::TreeEntry;

use super::copy::HoleWriter;
use super::tar_writer::{Sink, TarWriter};
use super::{Entry, Store, remove_tree};

const ENTRY_FILES: [&str; 4] = ["manifest.json", "tree.json", "log.txt", "artifact"];

/// Writes `entries` to `sink` as a tar stream and returns the sink. Refuses entries holding
/// links that point outside themselves: they would not mean the same thing on another machine.
pub fn export<S: Sink>(entries: &[Entry], sink: S) -> Result<S> {
    for entry in entries {
        for item in entry.tree()? {
            if let TreeEntry::Link { path, target } = &item
                && escapes(Path::new(path), Path::new(target))
            {
                return Err(Error::Input(format!(
                    "entry {} holds the link {path} -> {target}, which points outside the entry; it cannot be moved to another machine.\n  fix: make the stage create a copy instead of the link (e.g. `python3 -m venv --copies`)",
                    entry.name
                )));
            }
        }
    }
    let mut writer = TarWriter::new(sink);
    for entry in entries {
        writer
            .append_tree(Path::new(&entry.name), &entry.dir)
            .ctx(|| format!("archiving {}", entry.name))?;
    }
    writer.finish().ctx(|| "writing the archive".into())
}

/// True if a link at `link_path` (relative to the artifact root) pointing to `target` leaves it.
fn escapes(link_path: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth: i64 = link_path.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return true,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// Imports every entry of the archive read from `input`; returns the names imported (entries
/// already present are kept as they are and listed too).
pub fn import(store: &Store, input: impl Read, source: &Path) -> Result<Vec<String>> {
    import_checked(store, input, source, |_, _| Ok(()))
}

/// The sha256 of every regular file an import wrote, by its full path in the private folder.
pub use super::verify::Written;

/// Imports an archive that must hold exactly the entry `expected` (a pulled remote entry);
/// `before_commit` runs once it is unpacked, with the entry's private folder and the digest of
/// every file written there, and its error stops the import. The entry's own checks (manifest,
/// tree and files, see `Store::verify_with`) run too, before anything is committed.
pub fn import_one(
    store: &Store,
    input: impl Read,
    source: &Path,
    expected: &str,
    before_commit: impl FnOnce(&Path, &Written) -> Result<()>,
) -> Result<()> {
    import_checked(store, input, source, |names, written| match names {
        [(dir, only)] if only == expected => before_commit(dir, written),
        _ => Err(reject(
            source,
            format!(
                "it holds {:?}, not just the signed entry {expected}",
                names.iter().map(|(_, n)| n).collect::<Vec<_>>()
            ),
        )),
    })
    .map(|_| ())
}

fn import_checked(
    store: &Store,
    input: impl Read,
    source: &Path,
    accept: impl FnOnce(&[(PathBuf, String)], &Written) -> Result<()>,
) -> Result<Vec<String>> {
    let staging = store.tmp_path("import");
    std::fs::create_dir_all(&staging).ctx(|| format!("creating {}", staging.display()))?;
    let result = unpack_checked(&staging, input, source)
        .and_then(|(names, written)| {
            let dirs: Vec<(PathBuf, String)> =
                names.iter().map(|n| (staging.join(n), n.clone())).collect();
            accept(&dirs, &written).map(|_| (names, written))
        })
        .and_then(|(names, written)| {
            check_entries(store, &staging, &names, &written, source).map(|_| names)
        });
    let names = match result {
        Ok(names) => names,
        Err(e) => {
            let _ = remove_tree(&staging);
            return Err(e);
        }
    };
    let entries = store.entries_dir();
    for name in &names {
        let target = entries.join(name);
        if !target.exists() {
            std::fs::rename(staging.join(name), &target)
                .ctx(|| format!("adding {}", target.display()))?;
        }
    }
    let _ = remove_tree(&staging);
    Ok(names)
}

fn reject(source: &Path, why: String) -> Error {
    Error::Input(format!(
        "refusing archive {}: {why}. Nothing was imported.",
        source.display()
    ))
}

/// Unpacks into `staging`; returns the entry names and the sha256 of every file written.
fn unpack_checked(
    staging: &Path,
    input: impl Read,
    source: &Path,
) -> Result<(Vec<String>, HashMap<PathBuf, String>)> {
    let mut archive = tar::Archive::new(input);
    let mut names: Vec<String> = Vec::new();
    let mut written = HashMap::new();
    let members = archive
        .entries()
        .map_err(|e| reject(source, format!("not a tar archive ({e})")))?;
    for member in members {
        let mut member = member.map_err(|e| reject(source, format!("unreadable member ({e})")))?;
        let raw_path = member
            .path()
            .map_err(|e| reject(source, format!("bad member name ({e})")))?
            .into_owned();
        let shown = raw_path.display().to_string();
        let parts: Vec<&str> = raw_path
            .components()
            .map(|c| match c {
                Component::Normal(p) => p.to_str().ok_or_else(|| {
                    reject(
                        source,
                        format!("member {shown} has a name that is not UTF-8"),
                    )
                }),
                _ => Err(reject(
                    source,
                    format!("member {shown} is not a plain relative path (absolute, `..` or `.`)"),
                )),
            })
            .collect::<Result<_>>()?;
        let Some(name) = parts.first() else { continue };
        if !is_entry_name(name) {
            return Err(reject(
                source,
                format!("member {shown} is not inside an envbuild entry"),
            ));
        }
        if parts.len() > 1 && !ENTRY_FILES.contains(&parts[1]) {
            return Err(reject(
                source,
                format!("member {shown} is not part of an entry's layout"),
            ));
        }
        if parts.len() > 2 && parts[1] != "artifact" {
            return Err(reject(
                source,
                format!("member {shown} is not part of an entry's layout"),
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
        let out: PathBuf = parts.iter().fold(staging.to_path_buf(), |p, c| p.join(c));
        ensure_real_dirs(staging, &out, source, &shown)?;
        let kind = member.header().entry_type();
        let mode = member.header().mode().unwrap_or(0o644) & 0o7777;
        match kind {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&out).ctx(|| format!("creating {}", out.display()))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode))
                    .ctx(|| format!("chmod {}", out.display()))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&out)
                    .map_err(|e| {
                        reject(
                            source,
                            format!("member {shown} cannot be written ({e}); duplicate?"),
                        )
                    })?;
                let size = member.header().size().unwrap_or(0);
                let (sha256, file) =
                    write_hashing(&mut member, file, size).ctx(|| format!("unpacking {shown}"))?;
                written.insert(out.clone(), sha256);
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .ctx(|| format!("chmod {}", out.display()))?;
                if let Ok(mtime) = member.header().mtime() {
                    let _ = file.set_modified(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime),
                    );
                }
            }
            tar::EntryType::Symlink => {
                let target = member
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| reject(source, format!("link {shown} has no target")))?
                    .into_owned();
                let inside_artifact = parts.len() > 2;
                if !inside_artifact || escapes(Path::new(&parts[2..].join("/")), &target) {
                    return Err(reject(
                        source,
                        format!(
                            "link {shown} -> {} points outside its entry",
                            target.display()
                        ),
                    ));
                }
                std::os::unix::fs::symlink(&target, &out)
                    .ctx(|| format!("creating link {}", out.display()))?;
            }
            other => {
                return Err(reject(
                    source,
                    format!(
                        "member {shown} is a {other:?}; only files, folders and links are accepted"
                    ),
                ));
            }
        }
    }
    if names.is_empty() {
        return Err(reject(source, "it holds no entry".into()));
    }
    Ok((names, written))
}

/// Copies `from` into `to` (a new, empty file) and returns the sha256 of the bytes written.
/// Whole blocks of zeros are left as holes: a sparse file exported (holes as zeros) is sparse
/// again once imported. (Writing on a second thread while this one hashes was tried: more CPU
/// time and no faster on 2 cores.)
fn write_hashing(
    mut from: impl Read,
    to: std::fs::File,
    size: u64,
) -> std::io::Result<(String, std::fs::File)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; (size as usize).clamp(4096, 1 << 20)];
    let mut to = HoleWriter::new(to);
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        to.write_all(&buffer[..n])?;
    }
    Ok((hex::encode(hasher.finalize()), to.finish()?))
}

/// Refuses to write through a link: every folder between `staging` and `out` must be a real one.
fn ensure_real_dirs(staging: &Path, out: &Path, source: &Path, shown: &str) -> Result<()> {
    let mut current = staging.to_path_buf();
    let relative = out
        .strip_prefix(staging)
        .expect("out is built under staging");
    let count = relative.components().count();
    for (i, component) in relative.components().enumerate() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(reject(
                    source,
                    format!("member {shown} would be written through a link"),
                ));
            }
            Ok(meta) if i + 1 < count && !meta.is_dir() => {
                return Err(reject(
                    source,
                    format!("member {shown} is under something that is not a folder"),
                ));
            }
            Ok(_) => {}
            Err(_) if i + 1 < count => {
                std::fs::create_dir(&current).ctx(|| format!("creating {}", current.display()))?
            }
            Err(_) => {}
        }
    }
    Ok(())
}

fn is_entry_name(name: &str) -> bool {
    name.len() > 65
        && name.as_bytes()[64] == b'-'
        && name[..64].chars().all(|c| c.is_ascii_hexdigit())
}

fn check_entries(
    store: &Store,
    staging: &Path,
    names: &[String],
    written: &HashMap<PathBuf, String>,
    source: &Path,
) -> Result<()> {
    for name in names {
        let entry = Entry {
            name: name.clone(),
            dir: staging.join(name),
        };
        let problems = store.verify_with(&entry, written);
        if !problems.is_empty() {
            return Err(reject(
                source,
                format!(
                    "entry {name} does not match its digests: {}",
                    problems.join("; ")
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{escapes, write_hashing};
    use sha2::{Digest, Sha256};
    use std::io::Read;
    use std::path::Path;

    /// Yields `data` in uneven small reads, as a decompressor does.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = buf.len().min(self.0.len()).min(self.1 * 10_007);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn files_are_written_whole_with_the_digest_of_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 5, 4095, 3 * (1 << 20) + 3] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            let file = std::fs::File::create(&path).unwrap();
            let (digest, _) = write_hashing(Trickle(&data, 0), file, len as u64).unwrap();
            assert_eq!(digest, hex::encode(Sha256::digest(&data)), "{len}");
            assert!(std::fs::read(&path).unwrap() == data, "{len}");
        }
    }

    #[test]
    fn links_that_leave_their_entry_are_caught() {
        assert!(escapes(
            Path::new("venv/bin/python"),
            Path::new("/usr/bin/python3")
        ));
        assert!(escapes(Path::new("a"), Path::new("../x")));
        assert!(escapes(Path::new("venv/lib64"), Path::new("../../etc")));
        assert!(!escapes(Path::new("venv/lib64"), Path::new("lib")));
        assert!(!escapes(Path::new("a/b/c"), Path::new("../../d")));
    }
}
