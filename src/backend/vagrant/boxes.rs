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
    let _tmp_gone = image::RemoveOnDrop(tmp.clone());
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
