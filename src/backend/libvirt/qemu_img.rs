//! qemu-img, the one tool that writes and reads the disks: thin overlays (grown to a size when
//! asked), backing-file headers, and `info`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};

/// `qemu-img create -f qcow2 -b BACKING -F qcow2 PATH [SIZE]`: a thin overlay, whatever the size
/// of the chain below it; with `size_mib`, its virtual disk is that large (a pinned image grown
/// to `resources.disk`: the guest's cloud-init grows its root partition into the space).
pub fn create_overlay(backing: &Path, path: &Path, size_mib: Option<u64>) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let size = size_mib.map(|mib| format!("{mib}M"));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-b".as_ref(),
        backing.as_os_str(),
        "-F".as_ref(),
        "qcow2".as_ref(),
        path.as_os_str(),
    ];
    args.extend(size.as_deref().map(std::ffi::OsStr::new));
    qemu_img(&args)
}

/// The virtual size of a disk image, in MiB (rounded up).
pub fn virtual_mib(path: &Path) -> Result<u64> {
    let info = qemu_img_info(path, false)?;
    let bytes = info[0]["virtual-size"].as_u64().ok_or_else(|| {
        Error::Failed(format!(
            "qemu-img info {} names no virtual size",
            path.display()
        ))
    })?;
    Ok(bytes.div_ceil(1 << 20))
}

/// Runs `qemu-img ARGS`; its stderr becomes the error.
pub(super) fn qemu_img(args: &[&std::ffi::OsStr]) -> Result<()> {
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

pub(super) fn qemu_img_info(path: &Path, chain: bool) -> Result<Vec<serde_json::Value>> {
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
