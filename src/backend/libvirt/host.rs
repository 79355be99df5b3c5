//! What `envbuild doctor` checks on this host for the libvirt backend.

use std::path::Path;

use super::*;
use crate::process;
use virsh::Virsh;

/// One check per `(program, Debian package, what it is for)`: found on PATH, or the package to
/// install.
pub(crate) fn program_checks(programs: &[(&str, &str, &str)]) -> Vec<Check> {
    programs
        .iter()
        .map(|(program, package, why)| {
            let found = process::find_program(program);
            Check {
                what: format!("{program} ({why})"),
                ok: found.is_some(),
                detail: match found {
                    Some(path) => path.display().to_string(),
                    None => format!("apt-get install {package} (or run dev/setup)"),
                },
            }
        })
        .collect()
}

/// The host checks of the libvirt backend, for `envbuild doctor`.
pub fn host_checks(uri: &str, folders: &[&Path]) -> Vec<Check> {
    let mut checks = program_checks(&[
        ("virsh", "libvirt-clients", "drives libvirt"),
        (
            "libvirtd",
            "libvirt-daemon-system",
            "the libvirt daemon (local hypervisor)",
        ),
        ("qemu-system-x86_64", "qemu-system-x86", "runs the VMs"),
        ("qemu-img", "qemu-utils", "makes qcow2 overlays"),
        ("ssh", "openssh-client", "runs steps in the VMs"),
        ("ssh-keygen", "openssh-client", "makes the SSH keys"),
        ("debootstrap", "debootstrap", "builds Debian base images"),
        ("curl", "curl", "fetches pinned cloud images"),
        (
            "genisoimage",
            "genisoimage",
            "writes cloud-init NoCloud seeds for pinned images",
        ),
        ("mkfs.ext4", "e2fsprogs", "writes base image file systems"),
    ]);
    let virsh = Virsh {
        uri: uri.to_string(),
    };
    let reachable = process::find_program("virsh").is_some() && virsh.check_reachable().is_ok();
    checks.push(Check {
        what: format!("libvirt reachable at {uri}"),
        ok: reachable,
        detail: if reachable {
            virsh
                .run(&["version", "--daemon"])
                .unwrap_or_default()
                .lines()
                .find(|l| l.contains("daemon") || l.contains("hypervisor"))
                .unwrap_or("answers")
                .trim()
                .to_string()
        } else {
            "start it: `virtlogd -d && libvirtd -d` as root (no systemd), or `systemctl start libvirtd`; dev/setup does this".into()
        },
    });
    let (kvm, why) = if process::find_program("qemu-system-x86_64").is_some() {
        virsh::kvm_usable()
    } else {
        (false, "qemu-system-x86_64 is missing".into())
    };
    checks.push(Check {
        what: "accelerator".into(),
        ok: true,
        detail: if kvm {
            format!("KVM ({why})")
        } else {
            format!("TCG emulation: {why}. VMs work, slower (about 1-2 min to SSH for a small Debian guest)")
        },
    });
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    checks.push(Check {
        what: "root (to build debootstrap base images)".into(),
        ok: root,
        detail: if root {
            "yes".into()
        } else {
            "run the first build of a debootstrap base as root, or share an images folder (--images) that holds it".into()
        },
    });
    for folder in folders {
        let existing = folder
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let free = free_bytes(existing);
        checks.push(Check {
            what: format!("disk space at {}", folder.display()),
            ok: free.is_some_and(|b| b >= 10 << 30),
            detail: match free {
                Some(b) if b >= 10 << 30 => format!("{} GiB free", b >> 30),
                Some(b) => format!(
                    "only {} GiB free; a base image and a few stages need about 10 GiB",
                    b >> 30
                ),
                None => "cannot read".into(),
            },
        });
    }
    checks
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}
