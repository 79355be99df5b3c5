//! What the VM tests (tests/libvirt.rs, tests/cloud_image.rs) need from the host.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where VM tests keep images between runs: `$ENVBUILD_TEST_CACHE`, default
/// /var/cache/envbuild-test (dev/setup makes it).
pub fn test_cache() -> PathBuf {
    std::env::var_os("ENVBUILD_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/envbuild-test"))
}

/// Fails (never skips) when the host cannot run VMs: each (program, package) must be installed
/// and libvirt reachable at qemu:///system; the message names what to install or start.
pub fn require_vm_host(programs: &[(&str, &str)]) {
    let base = [
        ("virsh", "libvirt-clients"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("ssh", "openssh-client"),
    ];
    for (program, package) in base.iter().chain(programs) {
        let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file());
        assert!(
            found,
            "this test needs `{program}`: apt-get install {package} (dev/setup installs it)"
        );
    }
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system", "version"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "libvirt is not reachable at qemu:///system ({}): run dev/setup, which starts libvirtd",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The domains at qemu:///system of these environments (`envbuild-<env>-...`): domains of other
/// envbuild runs on the host (another test file, a developer's VMs) are not a test's to count.
pub fn domains_of(envs: &[&str]) -> Vec<String> {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system", "list", "--all", "--name"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| {
            envs.iter()
                .any(|env| l.starts_with(&format!("envbuild-{env}-")))
        })
        .map(str::to_string)
        .collect()
}
