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
    tool("qemu-img", args)
}

/// Runs `PROGRAM ARGS` (qemu-img or qemu-io, both from qemu-utils); its stderr becomes the error.
fn tool(program: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ctx(|| format!("running {program} (apt-get install qemu-utils)"))?;
    if !out.status.success() {
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        return Err(Error::Failed(format!(
            "{program} {} failed: {}",
            shown.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The `len` bytes of a qcow2 disk's contents at `offset` (a multiple of `len`), read through
/// `scratch` (replaced). Works on a disk a running QEMU has open.
pub fn read_bytes(disk: &Path, offset: u64, len: usize, scratch: &Path) -> Result<Vec<u8>> {
    debug_assert_eq!(offset % len as u64, 0, "qemu-img dd reads whole blocks");
    let _ = std::fs::remove_file(scratch);
    let skip = offset / len as u64;
    let (bs, skip_arg) = (format!("bs={len}"), format!("skip={skip}"));
    // qemu-img dd counts the skipped blocks too (QEMU 7.2).
    let count = format!("count={}", skip + 1);
    let (input, output) = (
        format!("if={}", disk.display()),
        format!("of={}", scratch.display()),
    );
    qemu_img(&[
        "dd".as_ref(),
        "-U".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-O".as_ref(),
        "raw".as_ref(),
        bs.as_ref(),
        skip_arg.as_ref(),
        count.as_ref(),
        input.as_ref(),
        output.as_ref(),
    ])?;
    std::fs::read(scratch).ctx(|| format!("reading {}", scratch.display()))
}

/// Writes the bytes of `from` into a qcow2 disk's contents at `offset` (`qemu-io`).
pub fn write_bytes(disk: &Path, offset: u64, from: &Path) -> Result<()> {
    let len = std::fs::metadata(from)
        .ctx(|| format!("reading {}", from.display()))?
        .len();
    let command = format!("write -s {} {offset} {len}", from.display());
    tool(
        "qemu-io",
        &[
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-c".as_ref(),
            command.as_ref(),
            disk.as_os_str(),
        ],
    )
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
