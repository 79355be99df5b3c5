//! What the vagrant backend needs of this host (`build`'s check and `envbuild doctor`).

use std::path::Path;
use std::process::{Command, Stdio};

use super::*;

pub(super) fn check_host(uri: &str, network: VagrantNetwork, machine: &Machine) -> Result<()> {
    if machine.base.debootstrap.is_none() {
        return Err(Error::input(
            format!(
                "machine `{}`: the vagrant backend packages its box from a debootstrap base",
                machine.name
            ),
            "use base = { debootstrap = { suite = \"bookworm\" } }",
        ));
    }
    for (program, package) in [
        ("vagrant", "vagrant vagrant-libvirt"),
        ("virsh", "libvirt-clients"),
        ("qemu-img", "qemu-utils"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("extlinux", "extlinux"),
        ("sfdisk", "fdisk"),
    ] {
        if process::find_program(program).is_none() {
            return Err(Error::MissingTool {
                machine: machine.name.clone(),
                what: format!("program `{program}`"),
                fix: format!("apt-get install {package} (or run dev/setup)"),
            });
        }
    }
    if network == VagrantNetwork::Management && process::find_program("dnsmasq").is_none() {
        return Err(Error::MissingTool {
            machine: machine.name.clone(),
            what: "program `dnsmasq` (the DHCP server of the management network)".into(),
            fix: "apt-get install dnsmasq-base, or use --vagrant-network loopback".into(),
        });
    }
    if !plugin_installed() {
        return Err(Error::MissingTool {
            machine: machine.name.clone(),
            what: "Vagrant's libvirt provider (vagrant-libvirt)".into(),
            fix: "apt-get install vagrant-libvirt (or run dev/setup)".into(),
        });
    }
    Virsh {
        uri: uri.to_string(),
    }
    .check_reachable()
}

pub(super) fn host_checks(uri: &str, folders: &[&Path]) -> Vec<Check> {
    let mut checks = super::lv::host::program_checks(&[
        ("vagrant", "vagrant", "drives the machines"),
        ("extlinux", "extlinux", "the bootloader of envbuild's boxes"),
        ("sfdisk", "fdisk", "partitions the boxes' disks"),
        (
            "dnsmasq",
            "dnsmasq-base",
            "libvirt's NAT networks (the laptop set-up)",
        ),
    ]);
    let plugin = plugin_installed();
    checks.push(Check {
        what: "vagrant-libvirt (Vagrant's libvirt provider)".into(),
        ok: plugin,
        detail: if plugin {
            "installed".into()
        } else {
            "apt-get install vagrant-libvirt (or run dev/setup)".into()
        },
    });
    checks.extend(lv::host::host_checks(uri, folders));
    checks
}

/// Under a system daemon QEMU runs as libvirt's QEMU user (`libvirt-qemu` on Debian), and
/// vagrant-libvirt cannot ask for envbuild's uid (the libvirt backend's `<seclabel>`): the seed,
/// a drive libvirt does not know of, is handed to that user, still 0600. A session daemon runs
/// QEMU as envbuild's own user.
pub(super) fn hand_to_qemu(seed: &Path, uri: &str) -> Result<()> {
    if lv::is_session(uri) {
        return Ok(());
    }
    let name = std::ffi::CString::new("libvirt-qemu").expect("no NUL");
    // SAFETY: getpwnam with a valid C string; the fields are read before any other call.
    let ids = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    };
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(seed, Some(uid), Some(gid))
            .ctx(|| format!("handing {} to libvirt-qemu", seed.display()))?;
    }
    Ok(())
}

pub(super) fn plugin_installed() -> bool {
    let gems = Path::new("/usr/share/rubygems-integration/all/gems");
    let packaged = std::fs::read_dir(gems)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("vagrant-libvirt-")
        });
    packaged
        || Command::new("vagrant")
            .args(["plugin", "list"])
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("vagrant-libvirt"))
}
