//! Overlay chains: what an entry's `chain.json` records (its parent disk and the base image at
//! the bottom), and the check that every parent is there and unchanged before a disk boots.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{Error, Result};
use crate::store::Entry;
use crate::store::TreeEntry;
use image::BaseImage;

/// The disk a machine holds: the top of its chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Current {
    pub(super) disk: PathBuf,
    /// sha256 of `disk` (from its entry's tree, or the base image's record).
    pub(super) sha256: String,
    /// The entry holding `disk`; None for the base image.
    pub(super) entry: Option<String>,
    pub(super) base: BaseImage,
}

/// `artifact/chain.json` of an entry: what its overlay sits on. Holds no absolute path: an
/// entry means the same in every store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// The overlay's backing file exactly as written in it: relative to the entry's artifact
    /// folder (see `backing_path`).
    pub backing: PathBuf,
    /// sha256 of the parent disk.
    pub parent_sha256: String,
    /// The parent entry's name; None when the parent is the base image.
    pub parent_entry: Option<String>,
    /// The base image at the bottom of the chain.
    pub base: BaseRef,
}

/// A base image as entries name it: its folder under `STORE/v1/images` and its disk's sha256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BaseRef {
    pub id: String,
    pub sha256: String,
}

impl BaseRef {
    pub(super) fn of(base: &BaseImage) -> BaseRef {
        BaseRef {
            id: image_id(base),
            sha256: base.sha256.clone(),
        }
    }
}

/// The folder name of a base image (its recipe digest, or the pinned image's id).
pub(super) fn image_id(base: &BaseImage) -> String {
    base.disk
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The backing file an entry's overlay names: its parent entry's disk, or the base image's,
/// relative to the entry's artifact folder. The same from `v1/tmp/<pending>/artifact`, where
/// the overlay is written, and from `v1/entries/<name>/artifact`, where it is committed.
pub(super) fn backing_path(parent_entry: Option<&str>, base: &BaseRef) -> PathBuf {
    match parent_entry {
        Some(name) => Path::new("../../../entries")
            .join(name)
            .join("artifact/disk.qcow2"),
        None => Path::new("../../../images")
            .join(&base.id)
            .join("disk.qcow2"),
    }
}

/// `v1/` of the store holding an entry (`v1/entries/<name>`).
pub(super) fn layout_dir(entry: &Entry) -> PathBuf {
    entry
        .dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The sha256 of an entry's disk, from its tree.
pub(super) fn disk_sha256(entry: &Entry) -> Result<String> {
    entry
        .tree()?
        .iter()
        .find_map(|e| match e {
            TreeEntry::File { path, sha256, .. } if path == "disk.qcow2" => Some(sha256.clone()),
            _ => None,
        })
        .ok_or_else(|| Error::Failed(format!("{} has no disk.qcow2", entry.name)))
}

/// Checks an entry's overlay chain down to the base image without reading the disks: each
/// parent exists and still has the digest the child recorded, and the overlay's backing file
/// is the recorded parent. `Ok(None)`: the entry itself is damaged (quarantine it); a changed
/// or missing parent is refused with an error (exit 2).
pub(super) fn check_chain(entry: &Entry) -> Result<Option<Current>> {
    let disk = entry.artifact().join("disk.qcow2");
    let Ok(chain) = serde_json::from_slice::<Chain>(
        &std::fs::read(entry.artifact().join("chain.json")).unwrap_or_default(),
    ) else {
        return Ok(None);
    };
    let Ok(sha256) = disk_sha256(entry) else {
        return Ok(None);
    };
    let size = entry.tree()?.iter().find_map(|e| match e {
        TreeEntry::File { path, size, .. } if path == "disk.qcow2" => Some(*size),
        _ => None,
    });
    if std::fs::metadata(&disk).map(|m| m.len()).ok() != size {
        return Ok(None);
    }
    let refuse = |why: String| {
        Error::input(
            format!(
                "cached stage {} is refused: {why}. Its overlay would boot on the wrong disk.",
                entry.name
            ),
            "remove it and the entries built on it (`envbuild cache rm`, or delete the folder under the store's v1/entries) and build again",
        )
    };
    let v1 = layout_dir(entry);
    if chain.backing != backing_path(chain.parent_entry.as_deref(), &chain.base) {
        return Err(refuse(format!(
            "its chain.json names backing file {} for parent {:?}",
            chain.backing.display(),
            chain.parent_entry
        )));
    }
    let mut child = chain.clone();
    loop {
        if child.base != chain.base {
            return Err(refuse(format!(
                "its chain names two base images ({} and {})",
                chain.base.id, child.base.id
            )));
        }
        match &child.parent_entry {
            Some(name) => {
                let parent = Entry {
                    name: name.clone(),
                    dir: v1.join("entries").join(name),
                };
                if !parent.artifact().join("disk.qcow2").is_file() {
                    return Err(refuse(format!(
                        "its parent {name} is missing from this store (cache import and pull need every stage below it too)"
                    )));
                }
                let actual = disk_sha256(&parent).unwrap_or_default();
                if actual != child.parent_sha256 {
                    return Err(refuse(format!(
                        "its parent {name} changed (disk sha256 {actual}, built on {})",
                        child.parent_sha256
                    )));
                }
                child = serde_json::from_slice(
                    &std::fs::read(parent.artifact().join("chain.json")).unwrap_or_default(),
                )
                .map_err(|_| refuse(format!("its parent {name} has no readable chain.json")))?;
            }
            None => {
                let folder = v1.join("images").join(&child.base.id);
                let Some(base) = image::load(&folder).ok().flatten() else {
                    return Err(Error::input(
                        format!(
                            "cached stage {} needs base image {} (disk sha256 {}), which is not in {}.",
                            entry.name,
                            child.base.id,
                            child.base.sha256,
                            folder.display()
                        ),
                        "build the machine here once so its base image exists (the same recipe gives the same image only on the machine that built it: a debootstrap image is not bit-for-bit reproducible), copy that folder from the machine that built the stage, or pin the base image (`base = { image = URL, sha256 = ... }`) so every machine has the same bytes",
                    ));
                };
                if base.sha256 != child.parent_sha256 || base.sha256 != chain.base.sha256 {
                    return Err(refuse(format!(
                        "the base image {} is not the one it was built on (disk sha256 {}, built on {}): it was rebuilt, replaced, or the stage came from another machine",
                        folder.display(),
                        base.sha256,
                        child.parent_sha256
                    )));
                }
                let backing = image::backing_file(&disk).map_err(|e| refuse(e.to_string()))?;
                if backing.as_ref() != Some(&chain.backing) {
                    return Err(refuse(format!(
                        "its overlay's backing file is {backing:?}, but it was built on {}",
                        chain.backing.display()
                    )));
                }
                return Ok(Some(Current {
                    disk,
                    sha256,
                    entry: Some(entry.name.clone()),
                    base,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store-like layout: a base image and entries whose overlays chain onto it.
    struct Layout {
        _dir: tempfile::TempDir,
        root: PathBuf,
        base: BaseImage,
    }

    impl Layout {
        fn new() -> Layout {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            let images = root.join("images/abc");
            std::fs::create_dir_all(&images).unwrap();
            let raw = images.join("disk.raw");
            std::fs::write(&raw, vec![1u8; 1 << 20]).unwrap();
            let disk = images.join("disk.qcow2");
            assert!(
                std::process::Command::new("qemu-img")
                    .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                    .arg(&raw)
                    .arg(&disk)
                    .status()
                    .unwrap()
                    .success()
            );
            let sha256 = sha256_file(&disk).unwrap();
            std::fs::write(
                images.join("image.json"),
                serde_json::json!({ "recipe": "r", "sha256": sha256, "built": "", "seconds": 0.0 })
                    .to_string(),
            )
            .unwrap();
            let base = BaseImage {
                kernel: Some(images.join("vmlinuz")),
                initrd: Some(images.join("initrd.img")),
                disk,
                sha256,
            };
            Layout {
                _dir: dir,
                root,
                base,
            }
        }

        /// Commits an entry whose overlay sits on `parent` (None: the base image).
        fn entry(&self, name: &str, parent: Option<&Entry>) -> Entry {
            let dir = self.root.join("entries").join(name);
            std::fs::create_dir_all(dir.join("artifact")).unwrap();
            let entry = Entry {
                name: name.to_string(),
                dir,
            };
            let (parent_disk, parent_sha256) = match parent {
                Some(p) => (p.artifact().join("disk.qcow2"), disk_sha256(p).unwrap()),
                None => (self.base.disk.clone(), self.base.sha256.clone()),
            };
            let disk = entry.artifact().join("disk.qcow2");
            image::create_overlay(&parent_disk, &disk, None).unwrap();
            let base = BaseRef::of(&self.base);
            let backing = backing_path(parent.map(|p| p.name.as_str()), &base);
            image::set_backing(&disk, &backing).unwrap();
            let chain = Chain {
                backing,
                parent_sha256,
                parent_entry: parent.map(|p| p.name.clone()),
                base,
            };
            std::fs::write(
                entry.artifact().join("chain.json"),
                serde_json::to_vec(&chain).unwrap(),
            )
            .unwrap();
            let tree = vec![TreeEntry::File {
                path: "disk.qcow2".into(),
                mode: 0o444,
                size: std::fs::metadata(&disk).unwrap().len(),
                sha256: sha256_file(&disk).unwrap(),
            }];
            std::fs::write(
                entry.dir.join("tree.json"),
                serde_json::to_vec(&tree).unwrap(),
            )
            .unwrap();
            entry
        }
    }

    fn refusal(result: Result<Option<Current>>) -> String {
        match result {
            Err(e) if e.exit_code() == 2 => e.to_string(),
            other => panic!("expected a refusal (exit 2), got {other:?}"),
        }
    }

    #[test]
    fn a_sound_chain_is_restored_as_the_current_disk() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        let two = layout.entry("k2-e-m-two", Some(&one));
        let current = check_chain(&two).unwrap().unwrap();
        assert_eq!(current.disk, two.artifact().join("disk.qcow2"));
        assert_eq!(current.entry.as_deref(), Some("k2-e-m-two"));
        assert_eq!(current.sha256, disk_sha256(&two).unwrap());
        assert_eq!(current.base, layout.base);
    }

    #[test]
    fn entries_mean_the_same_in_a_store_at_another_path() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        layout.entry("k2-e-m-two", Some(&one));
        let elsewhere = tempfile::tempdir().unwrap();
        let moved = elsewhere.path().join("store/v1");
        std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
        assert!(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(&layout.root)
                .arg(&moved)
                .status()
                .unwrap()
                .success()
        );
        drop(layout); // the original store is gone: nothing may point into it
        let two = Entry {
            name: "k2-e-m-two".into(),
            dir: moved.join("entries/k2-e-m-two"),
        };
        let current = check_chain(&two).unwrap().unwrap();
        assert_eq!(current.base.disk, moved.join("images/abc/disk.qcow2"));
        let chain = image::backing_chain(&current.disk).unwrap();
        assert_eq!(chain.len(), 3, "{chain:?}");
        assert!(chain.iter().all(|p| p.starts_with(&moved)), "{chain:?}");
    }

    #[test]
    fn a_missing_base_image_names_the_ways_to_get_it() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        std::fs::remove_dir_all(layout.root.join("images/abc")).unwrap();
        let why = refusal(check_chain(&one));
        assert!(
            why.contains("needs base image abc") && why.contains("pin the base image"),
            "{why}"
        );
    }

    #[test]
    fn a_missing_parent_is_refused() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        let two = layout.entry("k2-e-m-two", Some(&one));
        std::fs::remove_dir_all(&one.dir).unwrap();
        let why = refusal(check_chain(&two));
        assert!(why.contains("refused") && why.contains("missing"), "{why}");
    }

    #[test]
    fn a_parent_whose_digest_changed_is_refused() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        let two = layout.entry("k2-e-m-two", Some(&one));
        // The parent entry now describes other bytes (rebuilt, or tampered and re-recorded).
        let mut tree = one.tree().unwrap();
        if let TreeEntry::File { sha256, .. } = &mut tree[0] {
            *sha256 = "0".repeat(64);
        }
        std::fs::write(
            one.dir.join("tree.json"),
            serde_json::to_vec(&tree).unwrap(),
        )
        .unwrap();
        let why = refusal(check_chain(&two));
        assert!(why.contains("k1-e-m-one changed"), "{why}");
    }

    #[test]
    fn a_rebuilt_base_image_is_refused_all_the_way_up() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        let two = layout.entry("k2-e-m-two", Some(&one));
        let record = layout.base.disk.parent().unwrap().join("image.json");
        std::fs::write(
            &record,
            serde_json::json!({ "recipe": "r", "sha256": "f".repeat(64), "built": "", "seconds": 0.0 })
                .to_string(),
        )
        .unwrap();
        let why = refusal(check_chain(&two));
        assert!(
            why.contains("base image") && why.contains("rebuilt"),
            "{why}"
        );
    }

    #[test]
    fn an_overlay_on_another_backing_file_is_refused() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        let two = layout.entry("k2-e-m-two", Some(&one));
        // Re-point the overlay at the base image, keeping the recorded size.
        let disk = two.artifact().join("disk.qcow2");
        assert!(
            std::process::Command::new("qemu-img")
                .args(["rebase", "-u", "-F", "qcow2", "-b"])
                .arg(&layout.base.disk)
                .arg(&disk)
                .status()
                .unwrap()
                .success()
        );
        let mut tree = two.tree().unwrap();
        if let TreeEntry::File { size, .. } = &mut tree[0] {
            *size = std::fs::metadata(&disk).unwrap().len();
        }
        std::fs::write(
            two.dir.join("tree.json"),
            serde_json::to_vec(&tree).unwrap(),
        )
        .unwrap();
        let why = refusal(check_chain(&two));
        assert!(why.contains("backing file"), "{why}");
    }

    #[test]
    fn a_damaged_entry_is_reported_for_quarantine_not_refused() {
        let layout = Layout::new();
        let one = layout.entry("k1-e-m-one", None);
        std::fs::remove_file(one.artifact().join("disk.qcow2")).unwrap();
        assert!(check_chain(&one).unwrap().is_none());
        let other = layout.entry("k3-e-m-one", None);
        std::fs::remove_file(other.artifact().join("chain.json")).unwrap();
        assert!(check_chain(&other).unwrap().is_none());
    }
}
