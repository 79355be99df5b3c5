//! What the VM tests (tests/libvirt.rs, tests/cloud_image.rs, tests/vagrant.rs, ...) need from
//! the host, and the two-stage machine libvirt's and vagrant's tests build.

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

/// Writes `ENV.toml` and its inputs: machine `box` on `backend` (1 CPU, 512 MiB, a bookworm
/// debootstrap base, guest port 8080 forwarded as `http`) with two stages: `files` (an input
/// file in /etc, /etc/stage1) and `service` (a busybox web server on 8080 serving it, enabled
/// with `enable`, e.g. "enable" or "enable --now"; /etc/stage2 holds `stage-two` +
/// `stage_two_extra`, so a changed extra changes stage 2 only).
pub fn write_two_stage_box(
    project: &super::Project,
    env: &str,
    backend: &str,
    enable: &str,
    stage_two_extra: &str,
) {
    project.write(
        &format!("{env}.toml"),
        &format!(
            r#"
[machines.box]
backend = "{backend}"
resources = {{ cpus = 1, memory = "512MiB", disk = "3GiB" }}
base = {{ debootstrap = {{ suite = "bookworm" }} }}
forward = {{ http = 8080 }}

[[machines.box.stages]]
name = "files"
inputs = ["hello.txt"]
steps = [
  "install -m 644 $ENVBUILD_INPUTS/hello.txt /etc/envbuild-hello.txt",
  "echo stage-one > /etc/stage1",
]

[[machines.box.stages]]
name = "service"
inputs = ["web.service"]
steps = [
  "mkdir -p /srv/www && cp /etc/envbuild-hello.txt /srv/www/hello.txt",
  "install -m 644 $ENVBUILD_INPUTS/web.service /etc/systemd/system/web.service",
  "systemctl {enable} web.service",
  "echo stage-two{stage_two_extra} > /etc/stage2",
]
"#
        ),
    );
    project.write(&format!("{env}/hello.txt"), "hello from stage one\n");
    project.write(
        &format!("{env}/web.service"),
        "[Unit]\nDescription=test web server\nAfter=network.target\n\n[Service]\nExecStart=/bin/busybox httpd -f -p 8080 -h /srv/www\n\n[Install]\nWantedBy=multi-user.target\n",
    );
}
