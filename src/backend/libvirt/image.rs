//! Base images: the disk every machine's first stage starts from.
//!
//! A debootstrap base is built on this host once per recipe (suite, mirror, packages, disk size,
//! and the guest configuration script) and kept in the images folder (`--images`,
//! `ENVBUILD_IMAGES`, default `STORE/v1/images`):
//!
//! ```text
//! IMAGES/<recipe digest>/{disk.qcow2, vmlinuz, initrd.img, image.json}   read-only, immutable
//! IMAGES/debs/                                                           debootstrap's .deb cache
//! IMAGES/tmp.<pid>.<n>/                                                  an image being built
//! ```
//! Guests boot their kernel directly (`<kernel>`/`<initrd>` in the domain): no bootloader, no
//! firmware wait. The disk's sha256 is recorded in `image.json`; every stage built on it records
//! that digest, so a rebuilt base (same recipe, other bytes) never silently changes a chain.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::key::digest::{sha256_bytes, sha256_file};
use crate::spec::model::{Debootstrap, Machine};
use crate::store::lock::FileLock;
use crate::store::remove_tree;

const CONFIGURE: &str = include_str!("configure-base.sh");

/// What every envbuild guest needs besides the recipe's own packages.
pub const GUEST_PACKAGES: [&str; 6] = [
    "systemd-sysv",
    "udev",
    "openssh-server",
    "linux-image-amd64",
    "iproute2",
    "busybox",
];

/// A built base image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaseImage {
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// sha256 of disk.qcow2.
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageRecord {
    recipe: String,
    sha256: String,
    built: String,
    seconds: f64,
}

/// The digest of a machine's debootstrap recipe: what its base image is built from.
pub fn recipe_digest(machine: &Machine) -> String {
    let recipe = machine
        .base
        .debootstrap
        .as_ref()
        .expect("called for debootstrap bases");
    sha256_bytes(recipe_text(recipe, machine.resources.disk_mib).as_bytes())
}

fn recipe_text(recipe: &Debootstrap, disk_mib: u64) -> String {
    let mut packages: Vec<&str> = GUEST_PACKAGES.to_vec();
    packages.extend(recipe.packages.iter().map(String::as_str));
    packages.sort();
    packages.dedup();
    format!(
        "envbuild-debootstrap-1\nsuite={}\nmirror={}\nvariant=minbase\npackages={}\ndisk_mib={disk_mib}\nconfigure={}\n",
        recipe.suite,
        recipe.mirror,
        packages.join(","),
        sha256_bytes(CONFIGURE.as_bytes())
    )
}

/// The machine's base image, built first if the images folder does not have it.
pub fn ensure(images: &Path, machine: &Machine, note: &dyn Fn(&str)) -> Result<BaseImage> {
    let Some(recipe) = &machine.base.debootstrap else {
        return Err(Error::Input(format!(
            "machine `{}`: pinned cloud images (base.image) are not supported by this version of the libvirt backend; use base = {{ debootstrap = {{ suite = \"bookworm\" }} }}",
            machine.name
        )));
    };
    let digest = recipe_digest(machine);
    let dir = images.join(&digest);
    if let Some(image) = load(&dir)? {
        return Ok(image);
    }
    std::fs::create_dir_all(images).ctx(|| format!("creating {}", images.display()))?;
    let _lock = FileLock::acquire(&images.join(format!("{digest}.lock")), || {
        note("waiting for another envbuild building the same base image")
    })?;
    if let Some(image) = load(&dir)? {
        return Ok(image);
    }
    check_can_build(machine)?;
    note(&format!(
        "building base image {} (debootstrap {}, once per recipe; kept in {})",
        &digest[..12],
        recipe.suite,
        images.display()
    ));
    build(images, &dir, recipe, machine.resources.disk_mib)?;
    load(&dir)?.ok_or_else(|| Error::Failed(format!("{} was not written", dir.display())))
}

pub fn load(dir: &Path) -> Result<Option<BaseImage>> {
    let record = dir.join("image.json");
    let Ok(bytes) = std::fs::read(&record) else {
        return Ok(None);
    };
    let record: ImageRecord = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Failed(format!("{} is damaged: {e}", record.display())))?;
    Ok(Some(BaseImage {
        disk: dir.join("disk.qcow2"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        sha256: record.sha256,
    }))
}

fn check_can_build(machine: &Machine) -> Result<()> {
    for (program, package) in [
        ("debootstrap", "debootstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
        ("chroot", "coreutils"),
    ] {
        if crate::process::find_program(program).is_none() {
            return Err(Error::MissingTool {
                machine: machine.name.clone(),
                what: format!("program `{program}` (to build its debootstrap base image)"),
                fix: format!("apt-get install {package}"),
            });
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Input(format!(
            "machine `{}`: building a debootstrap base image needs root (debootstrap chroots and keeps file owners).\n  fix: run this build once as root, or point --images at a folder that already holds the image",
            machine.name
        )));
    }
    Ok(())
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn build(images: &Path, dir: &Path, recipe: &Debootstrap, disk_mib: u64) -> Result<()> {
    let started = std::time::Instant::now();
    let tmp = images.join(format!(
        "tmp.{}.{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let root = tmp.join("root");
    let debs = images.join("debs");
    std::fs::create_dir_all(&debs).ctx(|| format!("creating {}", debs.display()))?;
    std::fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let log = tmp.join("build.log");
    let mut packages: Vec<&str> = GUEST_PACKAGES.to_vec();
    packages.extend(recipe.packages.iter().map(String::as_str));
    let script = tmp.join("configure-base.sh");
    std::fs::write(&script, CONFIGURE).ctx(|| format!("writing {}", script.display()))?;
    let raw = tmp.join("disk.raw");
    let steps = [
        format!(
            "debootstrap --variant=minbase --cache-dir={} --include={} {} {} {}",
            debs.display(),
            packages.join(","),
            recipe.suite,
            root.display(),
            recipe.mirror
        ),
        format!("sh {} {}", script.display(), root.display()),
        format!(
            "cp -L {r}/vmlinuz {t}/vmlinuz && cp -L {r}/initrd.img {t}/initrd.img",
            r = root.display(),
            t = tmp.display()
        ),
        format!(
            "mkfs.ext4 -q -F -L envbuild-root -d {} {} {disk_mib}M",
            root.display(),
            raw.display()
        ),
        format!(
            "qemu-img convert -f raw -O qcow2 {} {}/disk.qcow2",
            raw.display(),
            tmp.display()
        ),
    ];
    let env = crate::process::base_env(Path::new("/root"));
    for step in &steps {
        let mut out = std::fs::File::create(&log).ctx(|| format!("creating {}", log.display()))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        let end = crate::process::run_step(step, &tmp, &env, deadline, |line| {
            use std::io::Write;
            let _ = writeln!(out, "{line}");
        })?;
        if end != crate::process::StepEnd::Exited(0) {
            return Err(Error::Failed(format!(
                "building the base image failed at `{step}` ({end:?}).\n  last lines:\n{}",
                crate::process::tail(&log, 20)
            )));
        }
    }
    remove_tree(&root).ctx(|| format!("removing {}", root.display()))?;
    std::fs::remove_file(&raw).ctx(|| format!("removing {}", raw.display()))?;
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&log);
    let disk = tmp.join("disk.qcow2");
    let record = ImageRecord {
        recipe: recipe_text(recipe, disk_mib),
        sha256: sha256_file(&disk)?,
        built: crate::store::now_rfc3339(),
        seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        tmp.join("image.json"),
        serde_json::to_vec_pretty(&record).expect("record serializes"),
    )
    .ctx(|| "writing image.json".into())?;
    for file in ["disk.qcow2", "vmlinuz", "initrd.img", "image.json"] {
        let path = tmp.join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))
            .ctx(|| format!("making {} read-only", path.display()))?;
    }
    std::fs::rename(&tmp, dir).ctx(|| format!("storing {}", dir.display()))?;
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}

/// `qemu-img create -f qcow2 -b BACKING -F qcow2 PATH`: a thin overlay, whatever the size of
/// the chain below it.
pub fn create_overlay(backing: &Path, path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    qemu_img(&[
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-b".as_ref(),
        backing.as_os_str(),
        "-F".as_ref(),
        "qcow2".as_ref(),
        path.as_os_str(),
    ])
}

/// Runs `qemu-img ARGS`; its stderr becomes the error.
fn qemu_img(args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .ctx(|| "running qemu-img (apt-get install qemu-utils)".into())?;
    if !out.status.success() {
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        return Err(Error::Failed(format!(
            "qemu-img {} failed: {}",
            shown.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The backing file a qcow2 file names, exactly as written in it (relative paths are relative
/// to the file's folder), without opening the backing file.
pub fn backing_file(path: &Path) -> Result<Option<PathBuf>> {
    let info = qemu_img_info(path, false)?;
    Ok(info[0]["backing-filename"].as_str().map(PathBuf::from))
}

/// Rewrites the backing file an overlay names (`qemu-img rebase -u`: the header only, no data
/// is read or moved). The new backing file need not exist where the overlay is now.
pub fn set_backing(path: &Path, backing: &Path) -> Result<()> {
    qemu_img(&[
        "rebase".as_ref(),
        "-u".as_ref(),
        "-F".as_ref(),
        "qcow2".as_ref(),
        "-b".as_ref(),
        backing.as_os_str(),
        path.as_os_str(),
    ])
}

/// The backing chain of a qcow2 file, top first, as `qemu-img info --backing-chain` reports it.
#[cfg(test)]
pub fn backing_chain(path: &Path) -> Result<Vec<PathBuf>> {
    Ok(qemu_img_info(path, true)?
        .iter()
        .filter_map(|i| i["filename"].as_str().map(PathBuf::from))
        .collect())
}

fn qemu_img_info(path: &Path, chain: bool) -> Result<Vec<serde_json::Value>> {
    let out = Command::new("qemu-img")
        .arg("info")
        .args(chain.then_some("--backing-chain"))
        .args(["--output=json", "-U"])
        .arg(path)
        .output()
        .ctx(|| "running qemu-img (apt-get install qemu-utils)".into())?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "qemu-img info {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Failed(format!("qemu-img info output: {e}")))?;
    Ok(match json {
        serde_json::Value::Array(infos) => infos,
        one => vec![one],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small qcow2 "base image" with a 1 MiB payload.
    pub fn base_disk(dir: &Path) -> PathBuf {
        let raw = dir.join("base.raw");
        std::fs::write(&raw, vec![7u8; 1 << 20]).unwrap();
        let disk = dir.join("base.qcow2");
        let ok = Command::new("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&disk)
            .status()
            .unwrap();
        assert!(ok.success());
        disk
    }

    #[test]
    fn overlays_chain_down_to_the_base_and_stay_thin() {
        let dir = tempfile::tempdir().unwrap();
        let base = base_disk(dir.path());
        let one = dir.path().join("one.qcow2");
        let two = dir.path().join("two.qcow2");
        create_overlay(&base, &one).unwrap();
        create_overlay(&one, &two).unwrap();
        assert_eq!(
            backing_chain(&two).unwrap(),
            vec![two.clone(), one.clone(), base]
        );
        assert_eq!(backing_file(&two).unwrap(), Some(one.clone()));
        // Thin: an overlay of a 1 MiB disk is a few hundred KiB of metadata, not a copy.
        assert!(std::fs::metadata(&two).unwrap().len() < 512 << 10);
        // The backing file is read from the header without opening it: a missing parent is
        // still reported (and then refused by the chain check), not an error here.
        std::fs::remove_file(&one).unwrap();
        assert_eq!(backing_file(&two).unwrap(), Some(one));
        assert!(backing_chain(&two).is_err());
    }

    #[test]
    fn recipe_digest_covers_suite_packages_mirror_and_size() {
        let recipe = Debootstrap {
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            packages: vec!["curl".into()],
        };
        let base = recipe_text(&recipe, 3072);
        assert!(base.contains("packages=busybox,curl,iproute2,"));
        for other in [
            recipe_text(
                &Debootstrap {
                    suite: "trixie".into(),
                    ..recipe.clone()
                },
                3072,
            ),
            recipe_text(
                &Debootstrap {
                    mirror: "http://other/debian".into(),
                    ..recipe.clone()
                },
                3072,
            ),
            recipe_text(
                &Debootstrap {
                    packages: vec![],
                    ..recipe.clone()
                },
                3072,
            ),
            recipe_text(&recipe, 4096),
        ] {
            assert_ne!(
                sha256_bytes(other.as_bytes()),
                sha256_bytes(base.as_bytes())
            );
        }
        // Package order does not matter.
        let reordered = Debootstrap {
            packages: vec!["curl".into(), "busybox".into()],
            ..recipe.clone()
        };
        assert_eq!(recipe_text(&reordered, 3072), base);
    }
}
