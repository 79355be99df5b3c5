//! The vagrant backend with real Vagrant: Debian's vagrant + vagrant-libvirt, real libvirt
//! domains under TCG, a box packaged from the test Debian base image (the libvirt tests' cached
//! debootstrap image), SSH with pinned host keys. Nothing is mocked; a missing requirement fails
//! the test with the fix (see dev/setup). Tests run one at a time: each boots VMs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Project;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fails (never skips) when the host cannot run vagrant machines, naming what to install.
fn require_host() {
    common::vm::require_vm_host(&[
        ("debootstrap", "debootstrap"),
        ("vagrant", "vagrant"),
        ("extlinux", "extlinux"),
        ("sfdisk", "fdisk"),
    ]);
    assert!(
        Path::new("/usr/share/rubygems-integration/all/gems")
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("vagrant-libvirt-")),
        "this test needs vagrant-libvirt: apt-get install vagrant-libvirt (dev/setup installs it)"
    );
    // SAFETY: every test of this file sets the same value before running envbuild.
    unsafe { std::env::set_var("ENVBUILD_IMAGES", common::vm::test_cache().join("images")) };
}

/// Vagrant's own folder for this project (boxes, machine index), never the developer's.
fn vagrant_home(project: &Project) -> PathBuf {
    project.path().join("vagrant.d")
}

fn run(project: &Project, args: &[&str]) -> std::process::Output {
    project
        .process()
        .env("VAGRANT_HOME", vagrant_home(project))
        .args(args)
        .output()
        .unwrap()
}

fn ok(project: &Project, args: &[&str]) -> (String, String) {
    let out = run(project, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "envbuild {args:?} failed ({:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    (stdout, stderr)
}

fn write_demo(project: &Project, env: &str, stage_two_extra: &str) {
    common::vm::write_two_stage_box(project, env, "vagrant", "enable --now", stage_two_extra);
}

/// (stage, action, steps_run) of a JSON build report, or of the build part of an `up` report.
fn outcomes(report: &str) -> Vec<(String, String, u64)> {
    let report: serde_json::Value = serde_json::from_str(report).unwrap();
    let build = report.get("build").unwrap_or(&report);
    build["stages"]
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

fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-q", "-c", "qemu:///system"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The snapshots libvirt holds for the machine's domain (empty when there is no domain).
fn snapshots(env: &str) -> Vec<String> {
    virsh(&["snapshot-list", &format!("envbuild-{env}-box"), "--name"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// What of ours libvirt and Vagrant still know: domains, pools, the machine index, pool files.
fn leftovers(project: &Project, env: &str) -> Vec<String> {
    let mut left = common::vm::domains_of(&[env]);
    left.extend(
        virsh(&["pool-list", "--all", "--name"])
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with(&format!("envbuild-{env}-")))
            .map(|l| format!("pool {l}")),
    );
    let status = Command::new("vagrant")
        .args(["global-status", "--prune"])
        .env("VAGRANT_HOME", vagrant_home(project))
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    if status.contains(&project.state().display().to_string()) {
        left.push(format!("vagrant global-status: {status}"));
    }
    let pool = project.state().join(format!("envs/{env}/box/root/pool"));
    for file in std::fs::read_dir(&pool).into_iter().flatten().flatten() {
        left.push(format!("file {}", file.path().display()));
    }
    left
}

fn wait_for_nothing_left(project: &Project, env: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = leftovers(project, env);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn stage_keys(project: &Project, env: &str) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = project
        .entries()
        .into_iter()
        .filter(|e| e.contains(&format!("-{env}-box-")))
        .map(|e| {
            let key = e.split('-').next().unwrap().to_string();
            let stage = e.rsplit('-').next().unwrap().to_string();
            (stage, key)
        })
        .collect();
    keys.sort();
    keys
}

fn http_get(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30"])
        .arg(format!("http://127.0.0.1:{port}/hello.txt"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn http_port(stdout_of_up: &str) -> u16 {
    let report: serde_json::Value = serde_json::from_str(stdout_of_up).unwrap();
    let machines = report["machines"].as_array().unwrap();
    machines[0]["ports"]["http"].as_u64().unwrap() as u16
}

#[test]
fn stages_are_snapshots_replayed_without_steps_and_rebuilt_one_at_a_time() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_host();
    let project = Project::new();
    write_demo(&project, "vdemo", "");

    // A first build boots the box once and saves both stages as snapshots named by their keys.
    let (report, _) = ok(&project, &["build", "vdemo", "--json"]);
    assert_eq!(
        outcomes(&report),
        vec![
            ("files".into(), "built".into(), 2),
            ("service".into(), "built".into(), 4)
        ]
    );
    let keys = stage_keys(&project, "vdemo");
    let mut saved = snapshots("vdemo");
    saved.sort();
    let mut expected: Vec<String> = keys.iter().map(|(_, k)| k.clone()).collect();
    expected.sort();
    assert_eq!(saved, expected, "one snapshot per stage, named by its key");
    for (stage, _) in &keys {
        let entry = project
            .entries()
            .into_iter()
            .find(|e| e.ends_with(&format!("-vdemo-box-{stage}")))
            .unwrap();
        let disk = project
            .store()
            .join("v1/entries")
            .join(entry)
            .join("artifact/disk.qcow2");
        assert!(disk.is_file(), "stage {stage} is exported into the store");
    }

    // `up` reverts to the newest snapshot: services already running, clock set from the host.
    let (up, _) = ok(&project, &["up", "vdemo", "--json"]);
    assert_eq!(http_get(http_port(&up)), "hello from stage one\n");
    let (guest_time, _) = ok(&project, &["ssh", "vdemo", "box", "--", "date +%s"]);
    let host_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let skew = (guest_time.trim().parse::<i64>().unwrap() - host_time).abs();
    assert!(skew <= 5, "guest clock {skew}s off after a restore");

    // `down` removes the machine: no domain, no pool, no volume, nothing in Vagrant's index.
    ok(&project, &["down", "vdemo"]);
    assert_eq!(leftovers(&project, "vdemo"), Vec::<String>::new());

    // `up` after `down` boots the newest stage's exported disk and runs zero steps.
    let (up, _) = ok(&project, &["up", "vdemo", "--json"]);
    let stages = outcomes(&up);
    assert!(stages.iter().all(|(_, _, steps)| *steps == 0), "{stages:?}");
    assert_eq!(http_get(http_port(&up)), "hello from stage one\n");
    ok(&project, &["down", "vdemo"]);

    // A snapshot deleted behind envbuild's back is a miss, never trusted: the stage comes from
    // its exported disk instead, still without running a step.
    let (report, _) = ok(&project, &["build", "vdemo", "--json"]);
    assert!(outcomes(&report).iter().all(|(_, _, steps)| *steps == 0));
    let service_key = &keys.iter().find(|(s, _)| s == "service").unwrap().1;
    virsh(&["snapshot-delete", "envbuild-vdemo-box", service_key]);
    let (up, stderr) = ok(&project, &["up", "vdemo", "--json"]);
    assert!(stderr.contains("a miss"), "{stderr}");
    assert!(outcomes(&up).iter().all(|(_, _, steps)| *steps == 0));
    ok(&project, &["down", "vdemo"]);

    // Changing stage 2 rebuilds stage 2 only, on stage 1's snapshot.
    write_demo(&project, "vdemo", "-changed");
    let (report, _) = ok(&project, &["build", "vdemo", "--json"]);
    let stages = outcomes(&report);
    assert_eq!(stages[0].2, 0, "{stages:?}");
    assert_eq!(stages[1], ("service".into(), "built".into(), 4));
    let (stage2, _) = ok(&project, &["up", "vdemo"]);
    let _ = stage2;
    let (stage2, _) = ok(&project, &["ssh", "vdemo", "box", "--", "cat /etc/stage2"]);
    assert_eq!(stage2.trim(), "stage-two-changed");
    ok(&project, &["down", "vdemo"]);
    assert_eq!(
        wait_for_nothing_left(&project, "vdemo"),
        Vec::<String>::new()
    );
}

#[test]
fn sigkill_mid_stage_leaves_no_domain_volume_or_snapshot() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_host();
    let project = Project::new();
    project.write(
        "vkill.toml",
        r#"
[machines.box]
backend = "vagrant"
resources = { cpus = 1, memory = "512MiB", disk = "3GiB" }
base = { debootstrap = { suite = "bookworm" } }

[[machines.box.stages]]
name = "first"
steps = ["echo one > /etc/one"]

[[machines.box.stages]]
name = "slow"
steps = ["echo started-the-slow-step", "sleep 900"]
"#,
    );
    let mut child = project
        .process()
        .env("VAGRANT_HOME", vagrant_home(&project))
        .args(["build", "vkill"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The slow step runs once the first stage is saved as a snapshot.
    let deadline = Instant::now() + Duration::from_secs(1500);
    let started = |dir: &Path| {
        std::fs::read_dir(dir.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path().join("log.txt"))
                    .is_ok_and(|l| l.contains("started-the-slow-step"))
            })
    };
    while !started(&project.store().join("v1")) {
        assert!(Instant::now() < deadline, "the slow step never started");
        assert!(child.try_wait().unwrap().is_none(), "the build ended early");
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(snapshots("vkill").len(), 1, "stage one is a snapshot");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        wait_for_nothing_left(&project, "vkill"),
        Vec::<String>::new()
    );
    assert!(snapshots("vkill").is_empty());
}

/// A libvirtd of the test's own in fresh network, mount and PID namespaces
/// (tests/fixtures/private-libvirtd.sh): the stock management network lives there, never in the
/// host's namespace. Dropping it (or the test thread ending: `--pdeathsig`) kills every process
/// inside, QEMU and dnsmasq included.
struct PrivateLibvirt {
    unshare: std::process::Child,
    /// The namespaces' first process, as the host numbers it.
    init: u32,
    dir: PathBuf,
}

impl PrivateLibvirt {
    fn start(dir: &Path) -> PrivateLibvirt {
        common::vm::require_vm_host(&[
            ("unshare", "util-linux"),
            ("nsenter", "util-linux"),
            ("setpriv", "util-linux"),
            ("libvirtd", "libvirt-daemon-system"),
            ("dnsmasq", "dnsmasq-base"),
        ]);
        std::fs::create_dir_all(dir).unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/private-libvirtd.sh");
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let unshare = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "unshare", "--net", "--mount"])
            .args([
                "--propagation",
                "private",
                "--pid",
                "--mount-proc",
                "--fork",
            ])
            .args(["--kill-child", "sh"])
            .arg(&script)
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut daemon = PrivateLibvirt {
            init: 0,
            unshare,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !dir.join("ready").exists() {
            assert!(
                daemon.unshare.try_wait().unwrap().is_none(),
                "the private libvirtd ended: {}",
                std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
            );
            assert!(
                Instant::now() < deadline,
                "the private libvirtd never answered"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let pid = daemon.unshare.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        daemon.init = children.split_whitespace().next().unwrap().parse().unwrap();
        daemon
    }

    /// `command` run inside the namespaces, with its environment and folder.
    fn enter(&self, command: &Command) -> Command {
        let mut inside = Command::new("nsenter");
        inside.args(["-t", &self.init.to_string(), "-n", "-m", "-p"]);
        // nsenter starts in the namespaces' root folder unless told the command's.
        if let Some(dir) = command.get_current_dir() {
            inside.arg(format!("--wd={}", dir.display()));
        }
        inside
            .arg("--")
            .arg(command.get_program())
            .args(command.get_args());
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => inside.env(name, value),
                None => inside.env_remove(name),
            };
        }
        inside
    }

    fn output(&self, command: &Command) -> (bool, String, String) {
        let out = self.enter(command).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn virsh(&self, args: &[&str]) -> String {
        let mut virsh = Command::new("virsh");
        virsh.args(["-q", "-c", "qemu:///system"]).args(args);
        self.output(&virsh).1
    }

    /// What of the machine the private libvirtd still holds: domains, pools, active networks.
    fn leftovers(&self, env: &str) -> Vec<String> {
        let mut left = Vec::new();
        for (kind, list) in [
            ("domain", self.virsh(&["list", "--all", "--name"])),
            ("pool", self.virsh(&["pool-list", "--all", "--name"])),
            ("active network", self.virsh(&["net-list", "--name"])),
        ] {
            for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if name.contains(env) || name == "vagrant-libvirt" {
                    left.push(format!("{kind} {name}"));
                }
            }
        }
        left
    }
}

impl Drop for PrivateLibvirt {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

#[test]
fn the_stock_management_network_set_up_runs_in_a_private_libvirtd_and_takes_imported_stages() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_host();
    let project = Project::new();
    write_demo(&project, "vmgmt", "");

    // Built on this host (the loopback set-up), then carried off as an archive.
    let (report, _) = ok(&project, &["build", "vmgmt", "--json"]);
    assert!(
        outcomes(&report).iter().all(|(_, a, _)| a == "built"),
        "{report}"
    );
    let archive = project.path().join("vmgmt-stages.tar");
    ok(
        &project,
        &[
            "cache",
            "export",
            "vmgmt",
            "-o",
            &archive.display().to_string(),
        ],
    );
    // `down` of a built machine that never went up removes the domain the build kept.
    ok(&project, &["down", "vmgmt"]);
    assert_eq!(leftovers(&project, "vmgmt"), Vec::<String>::new());

    // Another "machine": its own libvirtd, store, state and Vagrant, stock networking.
    let daemon = PrivateLibvirt::start(&project.path().join("private-libvirtd"));
    let agent = |args: &[&str]| {
        let mut cmd = project.process();
        cmd.env("ENVBUILD_STORE", project.path().join("store-ns"))
            .env("ENVBUILD_STATE", project.path().join("state-ns"))
            .env("VAGRANT_HOME", project.path().join("vagrant-ns.d"))
            .env("ENVBUILD_VAGRANT_NETWORK", "management")
            .args(args);
        let (ok, stdout, stderr) = daemon.output(&cmd);
        assert!(
            ok,
            "envbuild {args:?} in the namespace failed:\n{stdout}\n{stderr}"
        );
        stdout
    };
    let vagrant_ssh = |command: &str| {
        let mut cmd = Command::new("vagrant");
        cmd.args(["ssh", "-c", command])
            .env("VAGRANT_HOME", project.path().join("vagrant-ns.d"))
            .env(
                "VAGRANT_CWD",
                project.path().join("state-ns/envs/vmgmt/box/vagrant"),
            )
            .env("VAGRANT_CHECKPOINT_DISABLE", "1");
        let (ok, stdout, stderr) = daemon.output(&cmd);
        assert!(ok, "vagrant ssh failed:\n{stdout}\n{stderr}");
        stdout
    };
    agent(&["cache", "import", &archive.display().to_string()]);
    let up = agent(&["up", "vmgmt", "--json"]);
    assert!(
        outcomes(&up).iter().all(|(_, _, steps)| *steps == 0),
        "{up}"
    );
    let port = http_port(&up);
    let mut curl = Command::new("curl");
    curl.args(["-s", "--max-time", "30"])
        .arg(format!("http://127.0.0.1:{port}/hello.txt"));
    assert_eq!(daemon.output(&curl).1, "hello from stage one\n");
    // Vagrant found the guest the stock way: a DHCP lease on its management network.
    let leases = daemon.virsh(&["net-dhcp-leases", "vagrant-libvirt"]);
    assert!(
        leases.contains("52:54:00:0e:b0:02") && leases.contains("192.168.121."),
        "{leases}"
    );
    let addresses = vagrant_ssh("ip -4 -o addr show");
    assert!(addresses.contains("192.168.121."), "{addresses}");
    assert_eq!(vagrant_ssh("cat /etc/stage2").trim(), "stage-two");
    let host = Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&host.stdout).contains("192.168.121."),
        "the management network leaked into the host's namespace"
    );
    agent(&["down", "vmgmt"]);
    assert_eq!(daemon.leftovers("vmgmt"), Vec::<String>::new());

    // A changed stage 2 is built there, on the imported stage 1, under the stock set-up.
    write_demo(&project, "vmgmt", "-changed");
    let report = agent(&["build", "vmgmt", "--json"]);
    let stages = outcomes(&report);
    assert_eq!(stages[0].2, 0, "{stages:?}");
    assert_eq!(stages[1], ("service".into(), "built".into(), 4));
    agent(&["up", "vmgmt"]);
    assert_eq!(vagrant_ssh("cat /etc/stage2").trim(), "stage-two-changed");
    agent(&["down", "vmgmt"]);
    assert_eq!(daemon.leftovers("vmgmt"), Vec::<String>::new());

    // Nothing of the test in the host's libvirtd, and nothing running once the namespaces end.
    assert_eq!(leftovers(&project, "vmgmt"), Vec::<String>::new());
    let marker = daemon.dir.display().to_string();
    drop(daemon);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !common::processes_with(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the private libvirtd outlived its namespaces"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
