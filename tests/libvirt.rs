//! The libvirt backend with real VMs: real libvirt domains, QEMU (TCG here), a Debian base image
//! made by debootstrap, SSH with pinned host keys. Nothing is mocked; a missing requirement fails
//! the test with the fix (see dev/setup).
//!
//! The debootstrap base image is cached between runs in `$ENVBUILD_TEST_CACHE/images`
//! (default /var/cache/envbuild-test/images), keyed by its recipe: the first run on a machine
//! builds it (about 5 minutes), later runs reuse it. Tests run one at a time: each boots VMs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::Project;
use common::nginx::{Nginx, ServerCert};
use common::tls::Ca;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn cache_dir() -> PathBuf {
    common::vm::test_cache()
}

/// Fails (never skips) when the host cannot run VMs, naming what to install or start.
fn require_host() {
    common::vm::require_vm_host(&[("debootstrap", "debootstrap")]);
    // SAFETY: every test of this file sets the same value before running envbuild.
    unsafe { std::env::set_var("ENVBUILD_IMAGES", cache_dir().join("images")) };
}

/// The libvirt domains of this file's environments.
fn domains() -> Vec<String> {
    common::vm::domains_of(&["demo", "kill", "pair", "cas"])
}

fn write_demo(project: &Project, stage_two_extra: &str) {
    common::vm::write_two_stage_box(project, "demo", "libvirt", "enable", stage_two_extra);
}

/// (stage, action, steps_run) of a JSON build report.
fn outcomes(report: &serde_json::Value) -> Vec<(String, String, u64)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["action"].as_str().unwrap().to_string(),
                s["steps_run"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn entry_disk(project: &Project, stage: &str) -> PathBuf {
    let name = project
        .entries()
        .into_iter()
        .filter(|e| e.ends_with(&format!("-demo-box-{stage}")))
        .max_by_key(|e| {
            std::fs::metadata(project.store().join("v1/entries").join(e))
                .and_then(|m| m.modified())
                .unwrap()
        })
        .unwrap_or_else(|| panic!("no entry for stage {stage}: {:?}", project.entries()));
    project
        .store()
        .join("v1/entries")
        .join(name)
        .join("artifact/disk.qcow2")
}

/// The chain as QEMU opens it, each file's real path (overlays name their parents relative to
/// themselves, and a base image is linked into the store from the images folder).
fn backing_chain(disk: &Path) -> Vec<PathBuf> {
    let out = Command::new("qemu-img")
        .args(["info", "--backing-chain", "--output=json", "-U"])
        .arg(disk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let infos: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    infos
        .iter()
        .map(|i| std::fs::canonicalize(i["filename"].as_str().unwrap()).unwrap())
        .collect()
}

fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap()
}

fn http_get(port: u64, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn forwarded_port(up: &serde_json::Value, name: &str) -> u64 {
    up["machines"][0]["ports"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no port {name} in {up}"))
}

#[test]
fn two_stage_vm_builds_boots_replays_from_cache_and_rebuilds_only_what_changed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_host();
    let project = Project::new();
    write_demo(&project, "");

    // Cold build: both stages run, each in its own build VM; nothing is left running.
    let build = project.json(&["build", "demo", "--json"]);
    let built = outcomes(&build);
    assert_eq!(
        built,
        vec![
            ("files".to_string(), "built".to_string(), 2),
            ("service".to_string(), "built".to_string(), 4)
        ]
    );
    assert!(domains().is_empty(), "build left domains: {:?}", domains());

    // Each stage is a thin overlay on its parent, down to the base image.
    let one = entry_disk(&project, "files");
    let two = entry_disk(&project, "service");
    let chain = backing_chain(&two);
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert_eq!(chain[0], real(&two));
    assert_eq!(chain[1], real(&one));
    assert!(
        chain[2].starts_with(cache_dir().join("images")),
        "{chain:?}"
    );
    let mode = std::fs::metadata(&two).unwrap();
    assert!(mode.permissions().readonly(), "store disks are read-only");
    assert!(
        mode.len() < 200 << 20,
        "stage 2's overlay holds only its own changes, not a disk copy ({} bytes)",
        mode.len()
    );

    // up: boots on a fresh top overlay; stage 1's file and stage 2's service are there.
    let up = project.json(&["up", "demo", "--json"]);
    assert!(
        outcomes(&up["build"])
            .iter()
            .all(|(_, _, steps)| *steps == 0),
        "{up}"
    );
    assert_eq!(domains(), vec!["envbuild-demo-box".to_string()]);
    // status asks the backend: a running VM is up although it lists no host services.
    let status = project.json(&["status", "demo", "--json"]);
    assert_eq!(status[0]["up"], true, "{status}");
    let file = project.ok(&["ssh", "demo", "box", "--", "cat", "/etc/stage1"]);
    assert_eq!(file.trim(), "stage-one");
    let page = http_get(forwarded_port(&up, "http"), "/hello.txt");
    assert!(page.contains("hello from stage one"), "{page}");
    let live = project.state().join("envs/demo/box/root/live.qcow2");
    assert_eq!(backing_chain(&live)[1], real(&two));
    // The running VM never writes to the store: the entry is unchanged.
    let config = project.ok(&["ssh-config", "demo"]);
    assert!(config.contains("Host demo-box"), "{config}");
    assert!(config.contains("StrictHostKeyChecking yes"), "{config}");
    assert!(
        config.contains("HostKeyAlias envbuild-demo-box"),
        "{config}"
    );

    // `up` again while it runs: left as it is (exit 0), nothing booted.
    let again = project.run(&["up", "demo"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && stderr.contains("already up"),
        "{stderr}"
    );
    assert_eq!(domains(), vec!["envbuild-demo-box".to_string()]);

    project.ok(&["down", "demo"]);
    assert!(domains().is_empty(), "down left domains: {:?}", domains());
    assert!(!live.exists());
    let verify = project.run(&["cache", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // Second up: replayed from the cache, zero steps.
    let again = project.json(&["up", "demo", "--json"]);
    let replayed = outcomes(&again["build"]);
    assert!(replayed.iter().all(|(_, _, steps)| *steps == 0), "{again}");
    assert!(
        replayed
            .iter()
            .any(|(stage, action, _)| stage == "service" && action == "restored"),
        "{again}"
    );
    let file = project.ok(&[
        "ssh",
        "demo",
        "box",
        "--",
        "cat",
        "/etc/stage1",
        "/etc/stage2",
    ]);
    assert_eq!(file.trim(), "stage-one\nstage-two");
    project.ok(&["down", "demo"]);

    stages_move_between_stores(&project, &one, &two);

    // Changing stage 2 reruns stage 2 only, on an overlay of the same stage-1 disk.
    write_demo(&project, "-changed");
    let rebuilt = outcomes(&project.json(&["build", "demo", "--json"]));
    assert_eq!(rebuilt[0].0, "files");
    assert_eq!(rebuilt[0].2, 0, "{rebuilt:?}");
    assert_eq!(rebuilt[1], ("service".to_string(), "built".to_string(), 4));
    let new_two = entry_disk(&project, "service");
    assert_ne!(new_two, two);
    assert_eq!(backing_chain(&new_two)[1], real(&one));
    assert!(domains().is_empty(), "{:?}", domains());

    // A chain whose parent is missing is refused (exit 2), never booted.
    let one_entry = one.parent().unwrap().parent().unwrap().to_path_buf();
    let aside = project.path().join("moved-aside");
    std::fs::rename(&one_entry, &aside).unwrap();
    let refused = project.run(&["up", "demo"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("missing"),
        "{stderr}"
    );
    assert!(domains().is_empty(), "{:?}", domains());
    std::fs::rename(&aside, &one_entry).unwrap();
}

/// Overlays name their parents relative to the store, so the stages mean the same in a store at
/// another path: through `cache export`/`import`, and through a remote cache (a loopback NGINX),
/// where a build pulls every stage from the first up and replays them with zero steps. A
/// pulled chain on another base image is dropped and built locally. No VM boots here: the
/// replay checks the chain, and `qemu-img` resolves it as QEMU would.
fn stages_move_between_stores(project: &Project, one: &Path, two: &Path) {
    let other = |name: &str, args: &[&str]| {
        let mut all = vec![
            "--store".to_string(),
            project
                .path()
                .join(format!("store-{name}"))
                .display()
                .to_string(),
            "--state".to_string(),
            project
                .path()
                .join(format!("state-{name}"))
                .display()
                .to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        project.run(&all)
    };
    let ok = |out: std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let report = |text: &str| -> serde_json::Value { serde_json::from_str(text).unwrap() };
    let entry_disks = |name: &str| -> Vec<PathBuf> {
        let entries = project.path().join(format!("store-{name}/v1/entries"));
        let mut disks: Vec<PathBuf> = std::fs::read_dir(entries)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().join("artifact/disk.qcow2"))
                    .collect()
            })
            .unwrap_or_default();
        disks.sort();
        disks
    };

    // Export / import into a store at another path.
    let archive = project.path().join("demo.tar");
    project.ok(&["cache", "export", "demo", "-o", archive.to_str().unwrap()]);
    ok(other(
        "imported",
        &["cache", "import", archive.to_str().unwrap()],
    ));
    let (out, _) = ok(other("imported", &["build", "demo", "--json"]));
    let replayed = outcomes(&report(&out));
    assert!(replayed.iter().all(|(_, _, steps)| *steps == 0), "{out}");
    let moved_two = entry_disks("imported")
        .into_iter()
        .find(|d| d.to_string_lossy().contains("-demo-box-service"))
        .unwrap();
    let chain = backing_chain(&moved_two);
    assert_eq!(chain.len(), 3, "{chain:?}");
    let store = real(&project.path().join("store-imported"));
    assert!(
        chain[..2].iter().all(|p| p.starts_with(&store)),
        "{chain:?}"
    );
    assert!(!chain.contains(&real(one)) && !chain.contains(&real(two)));

    // Through a remote cache: push, then a build in an empty store pulls from the first stage up.
    let server = Nginx::start(&project.path().join("www"), "");
    let url = server.url();
    let key = project.path().join("agent.key");
    project.ok(&["cache", "keygen", key.to_str().unwrap()]);
    let public = format!("{}.pub", key.display());
    let (_, pushed) = ok(project.run(&[
        "cache",
        "push",
        "demo",
        "--cache-to",
        &url,
        "--cache-signing-key",
        key.to_str().unwrap(),
    ]));
    assert_eq!(pushed.matches(" pushed to ").count(), 2, "{pushed}");
    let pull = [
        "--cache-from",
        url.as_str(),
        "--cache-trusted-key",
        public.as_str(),
    ];
    let (out, stderr) = ok(other(
        "pulled",
        &[&["build", "demo", "--json"][..], &pull].concat(),
    ));
    let replayed = outcomes(&report(&out));
    assert!(
        replayed.iter().all(|(_, _, steps)| *steps == 0),
        "{out}\n{stderr}"
    );
    assert_eq!(entry_disks("pulled").len(), 2, "{stderr}");
    ok(other("pulled", &["cache", "verify"]));

    // A chain built on another base image (same recipe, other bytes: a debootstrap image built
    // on another machine) is not used: the pulled stages are removed, the build goes on locally
    // (here it fails fast: this fake base has no kernel).
    let base_id = chain[2].parent().unwrap().file_name().unwrap().to_owned();
    let fake = project
        .path()
        .join("store-otherbase/v1/images")
        .join(&base_id);
    std::fs::create_dir_all(&fake).unwrap();
    std::os::unix::fs::symlink(&chain[2], fake.join("disk.qcow2")).unwrap();
    std::fs::write(
        fake.join("image.json"),
        serde_json::json!({ "recipe": "r", "sha256": "0".repeat(64), "built": "", "seconds": 0.0 })
            .to_string(),
    )
    .unwrap();
    let failed = other("otherbase", &[&["build", "demo"][..], &pull].concat());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("not the one it was built on") && stderr.contains("building them locally"),
        "{stderr}"
    );
    assert!(entry_disks("otherbase").is_empty(), "{stderr}");
    assert!(domains().is_empty(), "{:?}", domains());
}

#[test]
fn killing_envbuild_mid_stage_leaves_no_domain_no_overlay_no_entry_and_the_next_build_works() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_host();
    let project = Project::new();
    let spec = |step: &str| {
        format!(
            r#"
[machines.box]
backend = "libvirt"
resources = {{ cpus = 1, memory = "512MiB", disk = "3GiB" }}
base = {{ debootstrap = {{ suite = "bookworm" }} }}

[[machines.box.stages]]
name = "slow"
steps = ["touch /etc/started", "{step}"]
"#
        )
    };
    project.write("kill.toml", &spec("sleep 3600"));
    let mut build = project
        .process()
        .args(["build", "kill", "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the VM runs the second step (the pending entry's log names it).
    let running_sleep = || {
        std::fs::read_dir(project.store().join("v1/tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path().join("log.txt"))
                    .is_ok_and(|log| log.contains("$ sleep 3600"))
            })
    };
    while !running_sleep() {
        assert!(
            build.try_wait().unwrap().is_none(),
            "the build ended before its slow step"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert_eq!(domains().len(), 1, "{:?}", domains());
    build.kill().unwrap(); // SIGKILL: no chance to clean up in-process
    build.wait().unwrap();

    // The guard notices and destroys the domain; wait for it (it is not instantaneous).
    let overlay = project.state().join("envs/kill/box/root/build.qcow2");
    for _ in 0..120 {
        if domains().is_empty() && !overlay.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(domains().is_empty(), "a domain was left: {:?}", domains());
    assert!(!overlay.exists(), "the build overlay was left");
    assert!(project.entries().is_empty(), "{:?}", project.entries());
    let qemu = Command::new("pgrep")
        .args(["-f", "guest=envbuild-kill-box"])
        .output()
        .unwrap();
    assert!(qemu.stdout.is_empty(), "a qemu process was left");

    // The next build works, and clears the killed build's half-written entry.
    project.write("kill.toml", &spec("true"));
    let built = outcomes(&project.json(&["build", "kill", "--json"]));
    assert_eq!(built, vec![("slow".to_string(), "built".to_string(), 2)]);
    assert!(
        project.tmp_leftovers().is_empty(),
        "{:?}",
        project.tmp_leftovers()
    );
    assert!(domains().is_empty(), "{:?}", domains());
}

/// An OpenSSH server of the test's own on a loopback port, standing in for a remote hypervisor
/// host: `qemu+ssh://root@127.0.0.1:PORT/system` reaches this machine's libvirtd through it, with
/// the test's own client key and a pinned host key (an ssh wrapper given to libvirt as `command`).
struct Sshd {
    dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
}

impl Sshd {
    fn start() -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.is_file(),
            "the libvirt tests need sshd to stand in for a remote hypervisor host: apt-get install openssh-server (dev/setup installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["host", "client"] {
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(d.join(key))
                .status()
                .unwrap();
            assert!(made.success());
        }
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host_key = std::fs::read_to_string(d.join("host.pub")).unwrap();
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
        )
        .unwrap();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n",
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host *\n  UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking yes\n  IdentityFile {d}/client\n  IdentitiesOnly yes\n  BatchMode yes\n",
                d = d.display()
            ),
        )
        .unwrap();
        let wrapper = d.join("ssh");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec ssh -F {}/ssh_config \"$@\"\n", d.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap(); // sshd's privilege separation folder
        let mut child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Sshd { dir, child, port };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "sshd exited ({status}): {}",
                    std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("sshd did not listen on 127.0.0.1:{port}");
    }

    /// The libvirt URI of this host's system daemon, reached over SSH.
    fn uri(&self) -> String {
        format!(
            "qemu+ssh://root@127.0.0.1:{}/system?command={}&no_tty=1",
            self.port,
            self.dir.path().join("ssh").display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_machines_talk_over_their_private_link_on_loopback() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_host();
    let project = Project::new();
    // Machine b is driven through a remote URI (qemu+ssh to a test sshd on loopback, this host's
    // libvirtd behind it), a through the local one: both come up and talk.
    let sshd = Sshd::start();
    // No stages: each machine is the base image, booted by `up`.
    project.write(
        "pair.toml",
        &format!(
            r#"
[machines.a]
backend = "libvirt"
resources = {{ cpus = 1, memory = "512MiB", disk = "3GiB" }}
base = {{ debootstrap = {{ suite = "bookworm" }} }}
networks = {{ lan = "10.0.0.1/24" }}

[machines.b]
backend = "libvirt"
uri = "{}"
resources = {{ cpus = 1, memory = "512MiB", disk = "3GiB" }}
base = {{ debootstrap = {{ suite = "bookworm" }} }}
networks = {{ lan = "10.0.0.2/24" }}
"#,
            sshd.uri()
        ),
    );
    project.ok(&["up", "pair", "-q"]);
    let mut names = domains();
    names.sort();
    assert_eq!(names, vec!["envbuild-pair-a", "envbuild-pair-b"]);
    // b was started through the SSH transport, with the pinned host key.
    let running =
        std::fs::read_to_string(project.state().join("envs/pair/b/root/running.json")).unwrap();
    assert!(running.contains("qemu+ssh://root@127.0.0.1"), "{running}");
    let log = std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap();
    assert!(log.contains("Accepted publickey for root"), "{log}");

    // B serves a page on its private address only.
    project.ok(&[
        "ssh",
        "pair",
        "b",
        "--",
        "mkdir -p /srv && echo from-b > /srv/index.html && busybox httpd -p 10.0.0.2:8080 -h /srv",
    ]);
    let page = project.ok(&[
        "ssh",
        "pair",
        "a",
        "--",
        "busybox",
        "wget",
        "-q",
        "-O-",
        "http://10.0.0.2:8080/index.html",
    ]);
    assert_eq!(page.trim(), "from-b");
    // The route is the link NIC (its MAC is 52:54:01:..), not the management NIC (user
    // networking, 52:54:00:0e:b0:01), and no gateway.
    let route = project.ok(&["ssh", "pair", "a", "--", "ip", "route", "get", "10.0.0.2"]);
    assert!(!route.contains("via"), "{route}");
    let dev = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or_else(|| panic!("no dev in {route}"))
        .to_string();
    let link = project.ok(&[
        "ssh", "pair", "a", "--", "ip", "-o", "link", "show", "dev", &dev,
    ]);
    assert!(link.contains("link/ether 52:54:01:"), "{link}");
    // The link is a UDP socket pair on loopback, nothing else.
    let xml = std::fs::read_to_string(project.state().join("envs/pair/a/root/up.xml")).unwrap();
    assert!(xml.contains("<interface type='udp'>"), "{xml}");
    assert!(xml.contains("<source address='127.0.0.1'"), "{xml}");

    // ssh-config names both machines with pinned keys.
    let config = project.ok(&["ssh-config", "pair"]);
    assert!(
        config.contains("Host pair-a") && config.contains("Host pair-b"),
        "{config}"
    );

    project.ok(&["down", "pair"]);
    assert!(domains().is_empty(), "{:?}", domains());
}

/// qemu:///session works for an unprivileged user: `nobody` brings a machine up through its own
/// session daemon (autostarted by libvirt), QEMU runs as `nobody`, SSH works, `down` leaves no
/// domain. The base image comes read-only from the shared images folder (building one needs root).
#[test]
fn an_unprivileged_user_runs_vms_through_qemu_session() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_host();
    let (uid, gid) = (65534u32, 65534u32);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let project = root.join("project");
    std::fs::create_dir_all(project.join("environments")).unwrap();
    std::fs::write(
        project.join("environments/solo.toml"),
        r#"
[machines.box]
backend = "libvirt"
resources = { cpus = 1, memory = "512MiB", disk = "3GiB" }
base = { debootstrap = { suite = "bookworm" } }
"#,
    )
    .unwrap();
    for sub in ["home", "run"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    // The images folder must already hold the base image: build it as root first (as the
    // other tests do) when this test runs alone.
    let setup = Project::new();
    setup.write(
        "solo.toml",
        &std::fs::read_to_string(project.join("environments/solo.toml")).unwrap(),
    );
    setup.ok(&["build", "solo", "-q"]);
    let chown = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(root)
        .status()
        .unwrap();
    assert!(chown.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let binary = assert_cmd::cargo::cargo_bin("envbuild");
    let as_nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--",
            ])
            .arg(&binary)
            .args(args)
            .current_dir(&project)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", root.join("home"))
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .env("ENVBUILD_STORE", root.join("store"))
            .env("ENVBUILD_STATE", root.join("state"))
            .env("ENVBUILD_IMAGES", cache_dir().join("images"))
            .env("ENVBUILD_LIBVIRT_URI", "qemu:///session")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let session_domains = || {
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--",
            ])
            .args(["virsh", "-c", "qemu:///session", "list", "--all", "--name"])
            .env("HOME", root.join("home"))
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    let (ok, _, stderr) = as_nobody(&["up", "solo"]);
    assert!(ok, "{stderr}");
    assert_eq!(session_domains(), vec!["envbuild-solo-box".to_string()]);
    // QEMU runs as nobody, not as root.
    let qemu_uids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("guest=envbuild-solo-box"))
                .unwrap_or(false)
        })
        .filter_map(|p| {
            let status = std::fs::read_to_string(p.path().join("status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .collect();
    assert_eq!(
        qemu_uids,
        vec![uid],
        "QEMU processes of the domain and their uids"
    );
    let (ok, hostname, stderr) = as_nobody(&["ssh", "solo", "box", "--", "hostname"]);
    assert!(ok, "{stderr}");
    assert_eq!(hostname.trim(), "box");
    let (ok, _, stderr) = as_nobody(&["down", "solo"]);
    assert!(ok, "{stderr}");
    assert!(session_domains().is_empty(), "{:?}", session_domains());
}

/// A build VM trusts the host's extra CAs (here the test's own, given with --ca-file): a step
/// reaches an HTTPS server on this host's loopback whose certificate only that CA signed, the
/// stage log records the CA's fingerprint, and the committed disk trusts nothing of the host.
/// With `trust_host_ca = false` the same step fails on the certificate.
#[test]
fn build_vms_trust_the_hosts_cas_while_building_and_commit_none() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_host();
    let project = Project::new();
    let dir = project.path();
    let ca = Ca::new(dir, "host-only");
    let (cert, key) = ca.issue_server(dir, "server");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "reached through the host's CA\n").unwrap();
    let server = Nginx::start_tls(
        &www,
        "",
        "",
        ServerCert {
            cert: &cert,
            key: &key,
        },
    );
    let ca_file = ca.cert.to_str().unwrap();
    // The base of the infra environment's rally machine (its image is cached by then).
    let write = |trust: &str| {
        project.write(
            "cas.toml",
            &format!(
                r#"
[machines.box]
backend = "libvirt"
resources = {{ cpus = 1, memory = "512MiB", disk = "6GiB" }}
base = {{ debootstrap = {{ suite = "bookworm", packages = ["python3-venv", "ca-certificates"] }} }}
{trust}

[[machines.box.stages]]
name = "fetch"
inputs = ["fetch.py"]
steps = ["python3 $ENVBUILD_INPUTS/fetch.py https://10.0.2.2:{port}/ > /etc/fetched"]
"#,
                port = server.port
            ),
        )
    };
    project.write(
        "cas/fetch.py",
        "import os, sys, urllib.request\n\
         print('PIP_CERT=' + os.environ.get('PIP_CERT', ''), file=sys.stderr)\n\
         sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=60).read().decode())\n",
    );

    write("trust_host_ca = false");
    let refused = project.run(&["build", "cas", "--ca-file", ca_file]);
    let failed_log =
        std::fs::read_to_string(project.state().join("envs/cas/box/logs/fetch.failed.log"))
            .unwrap_or_default();
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        failed_log.contains("CERTIFICATE_VERIFY_FAILED"),
        "{failed_log}\n{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(project.entries().is_empty(), "{:?}", project.entries());

    write("");
    project.ok(&["build", "cas", "--ca-file", ca_file]);
    assert!(domains().is_empty(), "build left domains: {:?}", domains());
    let entry = project
        .entries()
        .into_iter()
        .find(|e| e.ends_with("-cas-box-fetch"))
        .unwrap();
    let log = std::fs::read_to_string(
        project
            .store()
            .join("v1/entries")
            .join(entry)
            .join("log.txt"),
    )
    .unwrap();
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in", ca_file])
        .output()
        .unwrap()
        .stdout;
    let fingerprint = sha256_hex(&der);
    assert!(
        log.contains("trusted") && log.contains(&format!("sha256:{fingerprint} from {ca_file}")),
        "{log}"
    );
    assert!(
        log.contains("PIP_CERT=/etc/ssl/certs/ca-certificates.crt"),
        "{log}"
    );

    // The committed disk: the page was fetched, and no certificate of this host is trusted.
    project.ok(&["up", "cas"]);
    let guest = project.ok(&[
        "ssh",
        "cas",
        "box",
        "--",
        "cat /etc/fetched; ls -A /usr/local/share/ca-certificates; cat /etc/ssl/certs/ca-certificates.crt",
    ]);
    let head: String = guest.chars().take(400).collect();
    project.ok(&["down", "cas"]);
    assert!(
        guest.starts_with("reached through the host's CA\n"),
        "{head}"
    );
    assert!(!guest.contains("envbuild-host"), "{head}");
    let body: String = std::fs::read_to_string(&ca.cert)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(
        !guest.contains(&body),
        "the committed bundle holds the test CA"
    );
    assert!(
        guest.contains("BEGIN CERTIFICATE"),
        "Debian's own roots are still there"
    );
    assert!(domains().is_empty(), "down left domains: {:?}", domains());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
