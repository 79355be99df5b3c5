//! Boxes: a vagrant-libvirt box packaged from the machine's debootstrap base image (the libvirt
//! backend's recipe), with an MBR partition and extlinux (make-box.sh), added to Vagrant under a
//! name that carries the digest of its disk.
//!
//! ```text
//! IMAGES/vagrant-box-<recipe>/{metadata.json, Vagrantfile, envbuild.box, box.json}
//! ```
//! `<recipe>` digests the base image's sha256 and make-box.sh; box.json records the box's name
//! (`envbuild-<first 16 hex of box.img's sha256>`) and the sha256 every stage records.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::backend::libvirt::image::{self, BaseImage};
use crate::error::{Error, IoContext, Result};
use crate::key::digest::{sha256_bytes, sha256_file};
use crate::spec::model::Machine;
use crate::store::lock::FileLock;

pub const MAKE_BOX: &str = include_str!("make-box.sh");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BoxRecord {
    /// The name the box is added to Vagrant under.
    pub name: String,
    /// sha256 of box.img.
    pub sha256: String,
    #[serde(skip)]
    pub file: PathBuf,
}

/// The digest of how a box is made from a base image (part of every vagrant stage key).
pub fn recipe_digest() -> String {
    sha256_bytes(MAKE_BOX.as_bytes())
}

fn load(dir: &Path) -> Option<BoxRecord> {
    let bytes = std::fs::read(dir.join("box.json")).ok()?;
    let mut record: BoxRecord = serde_json::from_slice(&bytes).ok()?;
    record.file = dir.join("envbuild.box");
    record.file.is_file().then_some(record)
}

/// The machine's box, packaged first if the images folder does not have it.
pub fn ensure(images: &Path, machine: &Machine, note: &dyn Fn(&str)) -> Result<BoxRecord> {
    let base: BaseImage = image::ensure(images, machine, note)?;
    let id = sha256_bytes(format!("{}\n{}\n", base.sha256, recipe_digest()).as_bytes());
    let dir = images.join(format!("vagrant-box-{}", &id[..32]));
    if let Some(record) = load(&dir) {
        return Ok(record);
    }
    let _lock = FileLock::acquire(
        &images.join(format!("vagrant-box-{}.lock", &id[..32])),
        || note("waiting for another envbuild packaging the same box"),
    )?;
    if let Some(record) = load(&dir) {
        return Ok(record);
    }
    note(&format!(
        "packaging a vagrant box from base image {}",
        &base.sha256[..12]
    ));
    let tmp = images.join(format!(
        "vagrant-box-{}.tmp.{}",
        &id[..32],
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let _tmp_gone = crate::store::RemoveOnDrop(tmp.clone());
    let script = tmp.join("make-box.sh");
    std::fs::write(&script, MAKE_BOX).ctx(|| format!("writing {}", script.display()))?;
    let out_dir = tmp.join("box");
    std::fs::create_dir_all(&out_dir).ctx(|| format!("creating {}", out_dir.display()))?;
    let out = Command::new("/bin/sh")
        .arg(&script)
        .arg(&base.disk)
        .arg(&out_dir)
        .env("PATH", crate::process::SAFE_PATH)
        .stdin(Stdio::null())
        .output()
        .ctx(|| "running make-box.sh".into())?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "packaging the vagrant box failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .fix("it needs root (a loop mount), extlinux and fdisk: run dev/setup as root"));
    }
    let sha256 = sha256_file(&out_dir.join("box.img"))?;
    // envbuild.box holds it: one copy is enough.
    std::fs::remove_file(out_dir.join("box.img")).ctx(|| "removing box.img".into())?;
    let record = BoxRecord {
        name: format!("envbuild-{}", &sha256[..16]),
        sha256,
        file: dir.join("envbuild.box"),
    };
    std::fs::write(
        out_dir.join("box.json"),
        serde_json::to_vec_pretty(&record).expect("a box record serializes"),
    )
    .ctx(|| "writing box.json".into())?;
    std::fs::rename(&out_dir, &dir).ctx(|| format!("moving the box into {}", dir.display()))?;
    Ok(record)
}

/// Adds the box to Vagrant (`VAGRANT_HOME`) unless it holds it already.
pub fn add(record: &BoxRecord, log: &Path) -> Result<()> {
    let list = Command::new("vagrant")
        .args(["box", "list", "--machine-readable"])
        .stdin(Stdio::null())
        .output()
        .ctx(|| "running vagrant box list".into())?;
    let listed = String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.split(',').nth(3) == Some(record.name.as_str()));
    if listed {
        return Ok(());
    }
    let status = Command::new("vagrant")
        .args(["box", "add", "--force", "--name", &record.name])
        .arg(&record.file)
        .stdin(Stdio::null())
        .stdout(super::log_file(log)?)
        .stderr(super::log_file(log)?)
        .status()
        .ctx(|| "running vagrant box add".into())?;
    if !status.success() {
        return Err(Error::Failed(format!(
            "`vagrant box add {}` failed; see {}",
            record.name,
            log.display()
        )));
    }
    Ok(())
}

/// Where make-box.sh puts the root partition (1 MiB) and the size of the file system's boot
/// block there: ext4 leaves bytes 0-1023 of a file system to the boot loader, and extlinux's
/// volume boot record (the code the MBR chain-loads) is its first sector.
const BOOT_BLOCK_OFFSET: u64 = 1 << 20;
const BOOT_BLOCK_SIZE: usize = 1024;

/// Puts the box's boot block back into an exported stage disk whose guest zeroed it.
///
/// The guest rewrites its root file system's first block while it runs, and Debian 12's kernel
/// (6.1.0-50, in the base images since 2026-12) writes it with bytes 0-1023 zeroed: the volume
/// boot record is gone and the export, booted cold, stops in the BIOS. A revert does not boot,
/// so only exports need it: the boot block comes from the bottom of the domain disk's backing
/// chain (the box's volume, or an export already mended), and only an all-zero one is replaced,
/// never a boot block a stage wrote itself.
pub(super) fn mend_boot_block(domain_disk: &Path, export: &Path) -> Result<()> {
    let chain = image::backing_chain(domain_disk)?;
    let bottom = chain.last().ok_or_else(|| {
        Error::Failed(format!(
            "qemu-img info of {} names no image",
            domain_disk.display()
        ))
    })?;
    let scratch = tempfile::tempdir().ctx(|| "creating a temporary folder".into())?;
    let (original, exported) = (
        scratch.path().join("original"),
        scratch.path().join("exported"),
    );
    let block = read_boot_block(bottom, &original)?;
    if !read_boot_block(export, &exported)?.iter().all(|b| *b == 0) || block.iter().all(|b| *b == 0)
    {
        return Ok(());
    }
    image::write_bytes(export, BOOT_BLOCK_OFFSET, &original)?;
    if read_boot_block(export, &exported)? != block {
        return Err(Error::Failed(format!(
            "the boot block of {} could not be put back",
            export.display()
        )));
    }
    Ok(())
}

fn read_boot_block(disk: &Path, scratch: &Path) -> Result<Vec<u8>> {
    image::read_bytes(disk, BOOT_BLOCK_OFFSET, BOOT_BLOCK_SIZE, scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img(args: &[&str]) {
        let out = Command::new("qemu-img").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A 4 MiB qcow2 disk whose boot block is `block` (zeros: left out).
    fn disk(path: &Path, block: &[u8]) {
        let raw = path.with_extension("raw");
        let mut bytes = vec![0u8; 4 << 20];
        bytes[BOOT_BLOCK_OFFSET as usize..][..block.len()].copy_from_slice(block);
        std::fs::write(&raw, bytes).unwrap();
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            path.to_str().unwrap(),
        ]);
    }

    #[test]
    fn an_export_whose_guest_zeroed_the_boot_block_gets_the_boxes_back_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let vbr: Vec<u8> = (0..BOOT_BLOCK_SIZE).map(|i| (i % 251) as u8 + 1).collect();
        let boxed = dir.path().join("box.qcow2");
        disk(&boxed, &vbr);
        let domain = dir.path().join("domain.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            boxed.to_str().unwrap(),
            domain.to_str().unwrap(),
        ]);
        assert_eq!(image::backing_chain(&domain).unwrap().last(), Some(&boxed));

        let zeroed = dir.path().join("zeroed.qcow2");
        disk(&zeroed, &[]);
        mend_boot_block(&domain, &zeroed).unwrap();
        assert_eq!(
            read_boot_block(&zeroed, &dir.path().join("a")).unwrap(),
            vbr
        );

        // A boot block the stage wrote itself stays as it is.
        let own = vec![7u8; BOOT_BLOCK_SIZE];
        let kept = dir.path().join("kept.qcow2");
        disk(&kept, &own);
        mend_boot_block(&domain, &kept).unwrap();
        assert_eq!(read_boot_block(&kept, &dir.path().join("b")).unwrap(), own);
    }
}
