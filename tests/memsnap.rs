//! Memory snapshots of VM stages (`snapshot = "running"`), with real VMs under TCG: the stage
//! commits its VM's memory beside its disk, `up` resumes it instead of booting (the service it
//! started answers, the guest clock is the host's), and a tampered memory file is refused: the
//! machine boots from its disk and the service answers all the same.
//!
//! The debootstrap base image is shared with tests/libvirt.rs ($ENVBUILD_TEST_CACHE/images).

mod common;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::Project;

fn require_host() {
    common::vm::require_vm_host(&[("debootstrap", "debootstrap")]);
    // SAFETY: this file's only test sets it before running envbuild.
    unsafe { std::env::set_var("ENVBUILD_IMAGES", common::vm::test_cache().join("images")) };
}

fn domains() -> Vec<String> {
    common::vm::domains_of(&["memsnap"])
}

fn write_env(project: &Project) {
    project.write(
        "memsnap.toml",
        r#"
[machines.box]
backend = "libvirt"
resources = { cpus = 1, memory = "512MiB", disk = "3GiB" }
base = { debootstrap = { suite = "bookworm" } }
forward = { http = 8080 }

[[machines.box.stages]]
name = "service"
inputs = ["web.service"]
snapshot = "running"
steps = [
  "mkdir -p /srv/www && echo hello from memory > /srv/www/hello.txt",
  "install -m 644 $ENVBUILD_INPUTS/web.service /etc/systemd/system/web.service",
  "systemctl enable --now web.service",
  "cat /proc/sys/kernel/random/boot_id > /etc/build-boot-id",
]
"#,
    );
    project.write(
        "memsnap/web.service",
        "[Unit]\nDescription=test web server\n\n[Service]\nExecStart=/bin/busybox httpd -f -p 8080 -h /srv/www\n\n[Install]\nWantedBy=multi-user.target\n",
    );
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn http_get(port: u64, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The artifact folder of the stage's entry.
fn artifact(project: &Project) -> PathBuf {
    let entries = project.entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    project
        .store()
        .join("v1/entries")
        .join(&entries[0])
        .join("artifact")
}

/// True when the guest runs the boot its build VM ran (a boot gets a new random boot_id).
fn same_boot_as_the_build(project: &Project) -> bool {
    let ids = project.ok(&[
        "ssh",
        "memsnap",
        "box",
        "--",
        "cat",
        "/etc/build-boot-id",
        "/proc/sys/kernel/random/boot_id",
    ]);
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    ids[0] == ids[1]
}

/// `up --json`, its wall time and stderr.
fn up(project: &Project) -> (serde_json::Value, f64, String) {
    let started = Instant::now();
    let out = project.run(&["up", "memsnap", "--json"]);
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        seconds,
        stderr,
    )
}

/// The steps `up` ran building (0: every stage came from the store).
fn steps_run(up: &serde_json::Value) -> u64 {
    up["build"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["steps_run"].as_u64().unwrap())
        .sum()
}

fn http_port(up: &serde_json::Value) -> u64 {
    up["machines"][0]["ports"]["http"]
        .as_u64()
        .unwrap_or_else(|| panic!("no http port in {up}"))
}

#[test]
fn a_running_snapshot_resumes_with_its_service_and_the_hosts_clock_and_a_tampered_one_boots() {
    require_host();
    let project = Project::new();
    write_env(&project);

    let build = project.json(&["build", "memsnap", "--json"]);
    assert_eq!(build["stages"][0]["action"], "built", "{build}");
    assert!(domains().is_empty(), "build left domains: {:?}", domains());
    let artifact = artifact(&project);
    let state = artifact.join("memory.save");
    assert!(state.is_file() && artifact.join("memory.json").is_file());
    assert!(std::fs::metadata(&state).unwrap().permissions().readonly());
    let tree = std::fs::read_to_string(artifact.parent().unwrap().join("tree.json")).unwrap();
    assert!(
        tree.contains("memory.save") && tree.contains("memory.json"),
        "{tree}"
    );

    // The guest clock stood still since the save: make the gap one a missed clock step shows.
    let saved = std::fs::metadata(&state).unwrap().modified().unwrap();
    while saved.elapsed().unwrap().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    // up: resumed, not booted; the service started by the stage answers at once.
    let (resumed, resume_s, stderr) = up(&project);
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(steps_run(&resumed), 0, "{resumed}");
    let page = http_get(http_port(&resumed), "/hello.txt");
    assert!(page.contains("hello from memory"), "{page}");
    assert!(
        same_boot_as_the_build(&project),
        "the guest booted: {stderr}"
    );
    let since_build = saved.elapsed().unwrap().as_secs_f64();
    let before = unix_now();
    let guest: f64 = project
        .ok(&["ssh", "memsnap", "box", "--", "date", "+%s.%N"])
        .trim()
        .parse()
        .unwrap();
    let after = unix_now();
    assert!(
        guest > before - 2.0 && guest < after + 2.0,
        "guest clock {guest:.3} is not within 2 s of the host's [{before:.3}, {after:.3}] ({since_build:.0}s after the save)"
    );
    let times =
        std::fs::read_to_string(project.state().join("envs/memsnap/box/logs/boot-times.log"))
            .unwrap();
    assert_eq!(
        times.lines().filter(|l| l.starts_with("resume ")).count(),
        1,
        "{times}"
    );
    assert!(!times.lines().any(|l| l.starts_with("up ")), "{times}");
    project.ok(&["down", "memsnap"]);
    assert!(domains().is_empty(), "down left domains: {:?}", domains());

    // A tampered memory file (same size and mode, one byte changed): refused with a warning, the
    // machine boots from its disk, and the service (enabled by the stage) answers after the boot.
    let mut bytes = std::fs::read(&state).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let set_mode = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    set_mode(0o644);
    std::fs::write(&state, &bytes).unwrap();
    set_mode(0o444);
    let (booted, boot_s, stderr) = up(&project);
    assert!(
        stderr.contains("warning:")
            && stderr.contains("memory.save")
            && stderr.contains("booting it from its disk"),
        "{stderr}"
    );
    let page = http_get(http_port(&booted), "/hello.txt");
    assert!(page.contains("hello from memory"), "{page}");
    assert!(
        !same_boot_as_the_build(&project),
        "the tampered state was resumed"
    );
    assert_eq!(
        steps_run(&booted),
        0,
        "the entry was rebuilt, not booted from its disk: {booted}"
    );
    project.ok(&["down", "memsnap"]);
    assert!(domains().is_empty(), "down left domains: {:?}", domains());
    let verify = project.run(&["cache", "verify"]);
    assert!(!verify.status.success());
    let said = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(said.contains("memory.save"), "{said}");
    // Figures for docs/performance.md (not asserted: no timed tests).
    let times =
        std::fs::read_to_string(project.state().join("envs/memsnap/box/logs/boot-times.log"))
            .unwrap();
    eprintln!("memsnap: up resumed in {resume_s:.1}s, up booted in {boot_s:.1}s\n{times}");
}
