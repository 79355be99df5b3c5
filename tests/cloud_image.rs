//! The libvirt backend on a pinned cloud image: fetched over HTTP once, verified against its
//! sha256, booted from its own disk (SeaBIOS and GRUB) and configured by Debian's real cloud-init
//! from envbuild's NoCloud seed. Nothing is mocked; a missing requirement fails with the fix.
//!
//! No upstream cloud image is reachable here, so the test makes a Debian bookworm one like
//! Debian's genericcloud image with tests/fixtures/make-cloud-image.sh (about 5 minutes, as root)
//! once, and keeps it in `$ENVBUILD_TEST_CACHE/cloud-image` (default /var/cache/envbuild-test).
//! The test serves it from a loopback port, so "fetching" it is real HTTP through curl.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::Project;

/// Version 2 has cloud-guest-utils (growpart), as Debian's genericcloud image has.
const IMAGE: &str = "debian-12-cloud-test-2.qcow2";

fn cache_dir() -> PathBuf {
    common::vm::test_cache().join("cloud-image")
}

/// Fails (never skips) when the host lacks what the test needs, naming what to install.
fn require_host() {
    common::vm::require_vm_host(&[
        ("curl", "curl"),
        ("genisoimage", "genisoimage"),
        ("debootstrap", "debootstrap"),
        ("sfdisk", "fdisk"),
        ("mkfs.ext4", "e2fsprogs"),
    ]);
}

/// The test's cloud image, made once per machine.
fn cloud_image() -> PathBuf {
    let dir = cache_dir();
    let image = dir.join(IMAGE);
    if image.is_file() {
        return image;
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "making the test cloud image needs root (debootstrap); run the test once as root, or put an image at {}",
        image.display()
    );
    std::fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-cloud-image.sh");
    let started = std::time::Instant::now();
    let out = Command::new("sh")
        .arg(&script)
        .arg(&image)
        .arg(dir.join("debs"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "made the test cloud image in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    image
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Serves `file` at http://127.0.0.1:PORT/<name> (loopback only); counts the GET requests.
fn serve(file: PathBuf) -> (String, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let url = format!("http://{}/{name}", listener.local_addr().unwrap());
    let gets = Arc::new(AtomicU64::new(0));
    let counter = gets.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            while let Ok(n) = reader.read_line(&mut String::new()) {
                if n <= 2 {
                    break;
                }
            }
            if !line.starts_with(&format!("GET /{name} ")) {
                let _ = stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                continue;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let mut body = std::fs::File::open(&file).unwrap();
            let size = body.metadata().unwrap().len();
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n\r\n");
            if stream.write_all(head.as_bytes()).is_ok() {
                let _ = std::io::copy(&mut body, &mut stream);
            }
        }
    });
    (url, gets)
}

fn write_spec(project: &Project, url: &str, sha256: &str, disk: &str) {
    project.write(
        "cloud.toml",
        &format!(
            r#"
[machines.box]
backend = "libvirt"
resources = {{ cpus = 1, memory = "1GiB", disk = "{disk}" }}
base = {{ image = "{url}", sha256 = "{sha256}" }}

[[machines.box.stages]]
name = "files"
inputs = ["hello.txt"]
steps = [
  "install -m 644 $ENVBUILD_INPUTS/hello.txt /etc/envbuild-hello.txt",
]
"#
        ),
    );
    project.write("cloud/hello.txt", "hello from a cloud image\n");
}

fn domains() -> Vec<String> {
    common::vm::domains_of(&["cloud"])
}

fn listing(dir: &Path) -> Vec<String> {
    common::file_names(dir)
}

/// The base64 lines of an OpenSSH private key file.
fn secret_lines(key: &Path) -> Vec<String> {
    std::fs::read_to_string(key)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_string)
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_pinned_cloud_image_is_fetched_once_verified_booted_with_cloud_init_and_refused_when_wrong() {
    require_host();
    let image = cloud_image();
    let digest = sha256(&image);
    let (url, gets) = serve(image);
    let project = Project::new();
    let images = project.path().join("images");
    // SAFETY: this file has one test; it sets the variable before running envbuild.
    unsafe { std::env::set_var("ENVBUILD_IMAGES", &images) };

    // A wrong pin: refused before anything boots (exit 2), both digests named, nothing kept.
    let wrong = "0123456789abcdef".repeat(4);
    write_spec(&project, &url, &wrong, "3GiB");
    let refused = project.run(&["build", "cloud"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cloud.toml:5:"), "names the pin: {stderr}");
    assert!(stderr.contains("machine `box`"), "{stderr}");
    assert!(
        stderr.contains(&format!("expected sha256 {wrong}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("actual   sha256 {digest}")),
        "{stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");
    let left: Vec<String> = listing(&images)
        .into_iter()
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "a refused image left {left:?}");
    assert!(project.entries().is_empty());
    assert_eq!(gets.load(Ordering::SeqCst), 1);

    // A disk smaller than the image (2 GiB): bad input naming the key, nothing built.
    write_spec(&project, &url, &digest, "1GiB");
    let small = project.run(&["build", "cloud"]);
    let stderr = String::from_utf8_lossy(&small.stderr);
    assert_eq!(small.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("resources.disk (1024 MiB) is smaller than"),
        "{stderr}"
    );
    assert!(stderr.contains("at least \"2GiB\""), "{stderr}");
    assert!(project.entries().is_empty());

    // The right pin: fetched once, stored as qcow2, one stage built in a cloud-init guest whose
    // disk is grown from the image's 2 GiB to resources.disk.
    write_spec(&project, &url, &digest, "3GiB");
    let started = std::time::Instant::now();
    let build = project
        .cmd()
        .args(["build", "cloud", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&build.stderr);
    assert!(build.status.success(), "{stderr}");
    eprintln!(
        "build (fetch + boot + step + power-off) took {:.0}s; {}",
        started.elapsed().as_secs_f64(),
        stderr
            .lines()
            .filter(|l| l.contains("fetched"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let report: serde_json::Value = serde_json::from_slice(&build.stdout).unwrap();
    assert_eq!(report["stages"][0]["action"], "built", "{report}");
    assert_eq!(gets.load(Ordering::SeqCst), 2, "the right pin fetched once");
    let stored = images.join(format!("pinned-{digest}"));
    assert_eq!(listing(&stored), vec!["disk.qcow2", "image.json"]);
    assert!(domains().is_empty(), "build left domains: {:?}", domains());

    // No private key reached the store: the stage's overlay holds none of their bytes (cloud-init
    // saw only public keys; the host key lived in /run).
    let entry = project
        .entries()
        .into_iter()
        .find(|e| e.ends_with("-cloud-box-files"))
        .unwrap();
    let disk = std::fs::read(
        project
            .store()
            .join("v1/entries")
            .join(entry)
            .join("artifact/disk.qcow2"),
    )
    .unwrap();
    let machine_dir = project.state().join("envs/cloud/box");
    for key in [
        machine_dir.join("ssh/host_ed25519_key"),
        project.state().join("envs/cloud/ssh/id_ed25519"),
    ] {
        for line in secret_lines(&key) {
            assert!(
                !contains(&disk, line.as_bytes()),
                "{} is in the store",
                key.display()
            );
        }
    }

    // up: the stage's file is there, cloud-init named the host from the seed, SSH is pinned.
    project.ok(&["up", "cloud", "--json"]);
    let out = project.ok(&[
        "ssh",
        "cloud",
        "box",
        "--",
        "cat /etc/envbuild-hello.txt; hostname; ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l; \
         lsblk -bdno SIZE /dev/vda; df -B1 --output=size / | tail -1",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["hello from a cloud image", "box", "0"],
        "{out}"
    );
    let bytes = |line: &str| line.trim().parse::<u64>().unwrap();
    assert_eq!(
        bytes(lines[3]),
        3 << 30,
        "the disk is resources.disk: {out}"
    );
    assert!(
        bytes(lines[4]) > 2 << 30,
        "growpart grew / past the image's 2 GiB: {out}"
    );
    let seeds: Vec<String> = listing(&machine_dir.join("root"))
        .into_iter()
        .filter(|n| n.starts_with("seed"))
        .collect();
    assert!(seeds.is_empty(), "the seed outlived the boot: {seeds:?}");
    let boots = std::fs::read_to_string(machine_dir.join("logs/boot-times.log")).unwrap();
    eprintln!("boot-to-SSH seconds (build, up):\n{boots}");
    project.ok(&["down", "cloud"]);
    assert!(domains().is_empty(), "down left domains: {:?}", domains());
    assert!(!machine_dir.join("root/live.qcow2").exists());

    // Built again: replayed from the cache; the image is not fetched again.
    let again = project.json(&["build", "cloud", "--json"]);
    assert_eq!(again["stages"][0]["steps_run"], 0, "{again}");
    assert_eq!(gets.load(Ordering::SeqCst), 2);
}
