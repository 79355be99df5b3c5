//! The store is trusted on every restore, through the real binary: a tampered entry (made
//! consistent or not) is refused, quarantined and rebuilt with a warning `-q` does not hide; a
//! restore or a snapshot that runs out of disk leaves neither the disk full nor the store
//! broken; sparse files stay sparse in the store, in machines and through export/import; a
//! stage log is capped.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{Project, count_lines};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Two stages; the second makes its own files (its entry shares none with the first), and every
/// step appends a line to `counter`.
fn two_stages(project: &Project) -> PathBuf {
    let counter = project.path().join("counter");
    project.write(
        "trust.toml",
        &format!(
            r#"
[machines.box]
[[machines.box.stages]]
name = "base"
steps = ["echo base >> {c}", "mkdir -p etc && echo hello > etc/greeting"]

[[machines.box.stages]]
name = "more"
steps = ["echo more >> {c}", "echo more > more.txt && mkdir bin && printf '#!/bin/sh\n' > bin/tool && chmod 755 bin/tool && ln -s more.txt current"]
"#,
            c = counter.display()
        ),
    );
    counter
}

fn entry_dir(project: &Project, store: &Path, stage: &str) -> PathBuf {
    let name = common::file_names(&store.join("v1/entries"))
        .into_iter()
        .find(|e| e.ends_with(&format!("-box-{stage}")))
        .unwrap_or_else(|| panic!("no entry for {stage} in {:?}", project.entries()));
    store.join("v1/entries").join(name)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
}

/// The manifest's artifact digest of a tree, as docs/store.md defines it.
fn tree_digest(tree: &Value) -> String {
    let mut hasher = Sha256::new();
    for item in tree.as_array().unwrap() {
        let fingerprint = match item["type"].as_str().unwrap() {
            "file" => format!(
                "{:o}:{}",
                item["mode"].as_u64().unwrap(),
                item["sha256"].as_str().unwrap()
            ),
            "link" => format!("link:{}", item["target"].as_str().unwrap()),
            _ => format!("dir:{:o}", item["mode"].as_u64().unwrap()),
        };
        hasher.update(item["path"].as_str().unwrap().as_bytes());
        hasher.update([0]);
        hasher.update(fingerprint.as_bytes());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())
}

/// Edits tree.json's record of `path`; with `consistent`, the manifest's artifact digest is made
/// to match the new tree too (what a careful forger does).
fn edit_tree(entry: &Path, path: &str, consistent: bool, edit: impl FnOnce(&mut Value)) {
    let mut tree = read_json(&entry.join("tree.json"));
    let item = tree
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|i| i["path"] == path)
        .unwrap();
    edit(item);
    write_json(&entry.join("tree.json"), &tree);
    if consistent {
        let mut manifest = read_json(&entry.join("manifest.json"));
        manifest["artifact_digest"] = tree_digest(&tree).into();
        write_json(&entry.join("manifest.json"), &manifest);
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

type Tamper = fn(&Path);

/// Each way of tampering with the `more` entry, and what `cache verify` says about it.
fn tampers() -> Vec<(&'static str, Tamper, &'static str)> {
    vec![
        (
            "content replaced and tree.json updated to match",
            |entry| {
                std::fs::write(entry.join("artifact/more.txt"), "evil\n").unwrap();
                edit_tree(entry, "more.txt", false, |item| {
                    item["sha256"] = hex::encode(Sha256::digest(b"evil\n")).into();
                });
            },
            "tree.json does not match the manifest's artifact digest",
        ),
        (
            "tree.json metadata edited",
            |entry| edit_tree(entry, "more.txt", false, |item| item["mode"] = 0o600.into()),
            "tree.json does not match the manifest's artifact digest",
        ),
        (
            "manifest key material edited",
            |entry| {
                let mut manifest = read_json(&entry.join("manifest.json"));
                manifest["material"]["steps"][0] = "echo forged".into();
                write_json(&entry.join("manifest.json"), &manifest);
            },
            "the manifest's key does not match its key material",
        ),
        (
            "stored file made setuid",
            |entry| chmod(&entry.join("artifact/bin/tool"), 0o4755),
            "bin/tool was modified",
        ),
        (
            "setuid made consistent through tree.json and the manifest",
            |entry| {
                chmod(&entry.join("artifact/bin/tool"), 0o4755);
                edit_tree(entry, "bin/tool", true, |item| item["mode"] = 0o4755.into());
            },
            "bin/tool has mode 4755",
        ),
        (
            "world-writable made consistent through tree.json and the manifest",
            |entry| {
                chmod(&entry.join("artifact/bin/tool"), 0o777);
                edit_tree(entry, "bin/tool", true, |item| item["mode"] = 0o777.into());
            },
            "bin/tool has mode 777",
        ),
        (
            "a link swapped for a file",
            |entry| {
                std::fs::remove_file(entry.join("artifact/current")).unwrap();
                std::fs::write(entry.join("artifact/current"), "evil\n").unwrap();
            },
            "current is a file where tree.json lists a link",
        ),
        (
            "an extra file",
            |entry| std::fs::write(entry.join("artifact/extra.sh"), "evil\n").unwrap(),
            "extra.sh is not part of the entry",
        ),
    ]
}

#[test]
fn every_tampered_entry_is_refused_by_verify_and_by_restore_then_rebuilt() {
    // Every case runs, and the failure names each one that failed.
    let failed: Vec<&str> = tampers()
        .into_iter()
        .filter(|(case, tamper, problem)| {
            std::panic::catch_unwind(|| refused_and_rebuilt(case, *tamper, problem)).is_err()
        })
        .map(|(case, _, _)| case)
        .collect();
    assert!(failed.is_empty(), "not refused and rebuilt: {failed:?}");
}

fn refused_and_rebuilt(case: &str, tamper: Tamper, problem: &str) {
    let project = Project::new();
    let counter = two_stages(&project);
    project.ok(&["build", "trust"]);
    let entry = entry_dir(&project, &project.store(), "more");
    let name = entry.file_name().unwrap().to_string_lossy().into_owned();
    tamper(&entry);

    let out = project.run(&["cache", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{case}: {stdout}");
    assert!(stdout.contains(&format!("BAD {name}")), "{case}: {stdout}");
    assert!(stdout.contains(problem), "{case}: {stdout}");

    // A fresh machine, quietly: the entry is refused, moved away, and its stage rebuilt.
    let other = project.path().join("state-b");
    let out = project
        .cmd()
        .env("ENVBUILD_STATE", &other)
        .args(["build", "trust", "-q", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{case}: {stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: cache entry {name} does not match its digests"
        )),
        "{case}: -q hid the warning or there was none: {stderr}"
    );
    assert!(stderr.contains(problem), "{case}: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["restored", "built"], "{case}");
    assert_eq!(count_lines(&counter), 3, "{case}: `more` ran again");
    let root = other.join("envs/trust/box/root");
    assert_eq!(
        std::fs::read_to_string(root.join("more.txt")).unwrap(),
        "more\n",
        "{case}"
    );
    assert_eq!(mode_of(&root.join("bin/tool")), 0o755, "{case}");
    assert_eq!(mode_of(&root.join("more.txt")), 0o644, "{case}");
    assert!(root.join("current").is_symlink(), "{case}");
    assert!(!root.join("extra.sh").exists(), "{case}");
    let quarantined = common::file_names(&project.store().join("v1/quarantine"));
    assert!(
        quarantined.len() == 1 && quarantined[0].starts_with(&name),
        "{case}: {quarantined:?}"
    );
    project.ok(&["cache", "verify"]);
}

#[test]
fn an_entry_found_damaged_while_building_is_quarantined_and_the_build_goes_on() {
    // The `more` entry comes back into the store, damaged, while `base` is being built: the
    // build finds it only once it holds the stage's lock (as with another build committing it).
    let project = Project::new();
    let aside = project.path().join("aside");
    let entries = project.store().join("v1/entries");
    project.write(
        "late.toml",
        &format!(
            r#"
[machines.box]
[[machines.box.stages]]
name = "base"
steps = ["for e in {aside}/*; do if [ -e \"$e\" ]; then mv \"$e\" {entries}/; fi; done; echo base > base.txt"]

[[machines.box.stages]]
name = "more"
steps = ["echo more > more.txt"]
"#,
            aside = aside.display(),
            entries = entries.display()
        ),
    );
    project.ok(&["build", "late"]);
    let more = entry_dir(&project, &project.store(), "more");
    let base = entry_dir(&project, &project.store(), "base");
    std::fs::create_dir(&aside).unwrap();
    let moved = aside.join(more.file_name().unwrap());
    std::fs::rename(&more, &moved).unwrap();
    std::fs::write(moved.join("artifact/more.txt"), "evil\n").unwrap();
    std::fs::remove_dir_all(&base).unwrap();

    let out = project.run(&["build", "late", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("more.txt was modified"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stages"][0]["action"], "built");
    assert_eq!(report["stages"][1]["action"], "built");
    let root = project.state().join("envs/late/box/root");
    assert_eq!(
        std::fs::read_to_string(root.join("more.txt")).unwrap(),
        "more\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("base.txt")).unwrap(),
        "base\n"
    );
    project.ok(&["cache", "verify"]);
}

/// A small tmpfs mounted for one test and unmounted when it ends, whatever happens.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a {size} tmpfs to fill it, which needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(path)
    }

    fn used(&self) -> u64 {
        let out = std::process::Command::new("stat")
            .args(["-f", "-c", "%b %f %S"])
            .arg(&self.0)
            .output()
            .unwrap();
        let fields: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        (fields[0] - fields[1]) * fields[2]
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

fn big_stage(project: &Project) {
    project.write(
        "big.toml",
        r#"
[machines.box]
[[machines.box.stages]]
name = "small"
steps = ["echo small > small.txt"]

[[machines.box.stages]]
name = "big"
steps = ["head -c 12000000 /dev/urandom > big.bin && echo done > z-after.txt"]
"#,
    );
}

#[test]
fn a_restore_that_fills_the_disk_removes_what_it_wrote_and_leaves_the_store_sound() {
    let project = Project::new();
    big_stage(&project);
    project.ok(&["build", "big"]);
    let entries = project.entries();
    let disk = SmallDisk::mount(project.path().join("small-state"), "8m");

    let out = project
        .cmd()
        .env("ENVBUILD_STATE", &disk.0)
        .args(["build", "big"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("was cleared"), "{stderr}");
    assert!(
        disk.used() < 1 << 20,
        "the failed restore left {} bytes on the disk",
        disk.used()
    );
    assert!(!disk.0.join("envs/big/box/root/big.bin").exists());
    // Running out of disk is not damage: nothing is quarantined, every entry is sound.
    assert_eq!(project.entries(), entries);
    assert!(common::file_names(&project.store().join("v1/quarantine")).is_empty());
    assert!(project.tmp_leftovers().is_empty());
    project.ok(&["cache", "verify"]);
}

#[test]
fn a_snapshot_that_fills_the_store_commits_nothing_and_frees_the_space() {
    let project = Project::new();
    big_stage(&project);
    let disk = SmallDisk::mount(project.path().join("small-store"), "8m");
    let out = project
        .cmd()
        .env("ENVBUILD_STORE", &disk.0)
        .args(["build", "big"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(disk.used() < 1 << 20, "{} bytes left", disk.used());
    let names = common::file_names(&disk.0.join("v1/entries"));
    assert!(
        names.len() == 1 && names[0].ends_with("-big-box-small"),
        "{names:?}"
    );
    assert!(common::file_names(&disk.0.join("v1/tmp")).is_empty());
    let verify = project
        .cmd()
        .env("ENVBUILD_STORE", &disk.0)
        .args(["cache", "verify"])
        .output()
        .unwrap();
    assert!(verify.status.success());
}

/// Bytes a file takes on disk.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

const TWO_GIB: u64 = 2 << 30;

#[test]
fn sparse_files_stay_sparse_in_the_store_in_machines_and_through_export_import() {
    let project = Project::new();
    project.write(
        "sparse.toml",
        r#"
[machines.box]
[[machines.box.stages]]
name = "disk"
steps = ["truncate -s 2G disk.img && printf data | dd of=disk.img bs=1 seek=1000000 conv=notrunc status=none"]
"#,
    );
    project.ok(&["build", "sparse"]);
    let entry = entry_dir(&project, &project.store(), "disk");
    let stored = entry.join("artifact/disk.img");
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), TWO_GIB);
    assert!(
        allocated(&stored) < 1 << 20,
        "{} bytes in the store",
        allocated(&stored)
    );
    let manifest = read_json(&entry.join("manifest.json"));
    assert_eq!(manifest["size"], TWO_GIB, "sizes are logical");

    // Restored into a fresh machine: sparse, with its data in place.
    let other = project.path().join("state-b");
    let out = project
        .cmd()
        .env("ENVBUILD_STATE", &other)
        .args(["build", "sparse", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stages"][0]["action"], "restored");
    let live = other.join("envs/sparse/box/root/disk.img");
    assert!(allocated(&live) < 1 << 20, "{} bytes", allocated(&live));
    let mut data = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&live).unwrap(),
        &mut data,
        1_000_000,
    )
    .unwrap();
    assert_eq!(&data, b"data");
    project.ok(&["cache", "verify"]);

    // Exported (holes as zeros in the stream, holes in the archive file) and imported.
    let archive = project.path().join("sparse.tar");
    project.ok(&["cache", "export", "sparse", "-o", archive.to_str().unwrap()]);
    assert!(std::fs::metadata(&archive).unwrap().len() > TWO_GIB);
    assert!(
        allocated(&archive) < 1 << 20,
        "{} bytes in the archive",
        allocated(&archive)
    );
    let store_c = project.path().join("store-c");
    let out = project
        .cmd()
        .env("ENVBUILD_STORE", &store_c)
        .args(["cache", "import", archive.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = entry_dir(&project, &store_c, "disk").join("artifact/disk.img");
    assert_eq!(std::fs::metadata(&imported).unwrap().len(), TWO_GIB);
    assert!(
        allocated(&imported) < 1 << 20,
        "{} bytes imported",
        allocated(&imported)
    );
}

#[test]
fn a_step_printing_200_mb_stores_its_head_and_tail_and_says_what_was_cut() {
    let project = Project::new();
    // 2,000,000 lines of 100 bytes, then a last line.
    project.write(
        "loud.toml",
        r#"
[machines.box]
[[machines.box.stages]]
name = "loud"
steps = ["echo first line; yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 | head -n 2000000; echo last line"]
"#,
    );
    project.ok(&["build", "loud", "-q"]);
    let log = entry_dir(&project, &project.store(), "loud").join("log.txt");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(
        size <= (2 << 20) + 4096,
        "log.txt is {size} bytes for 200 MB of output"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("$ echo first line"), "{}", lines[0]);
    assert_eq!(lines[1], "first line");
    assert_eq!(*lines.last().unwrap(), "last line");
    let marker: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("[envbuild: "))
        .collect();
    assert_eq!(marker.len(), 1, "one marker line");
    // The lines cut plus the lines kept are the lines printed (the step line, 2000002 of output).
    let cut: u64 = marker[0]
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(' '))
        .and_then(|(count, _)| count.parse().ok())
        .unwrap_or_else(|| panic!("no line count in {}", marker[0]));
    assert_eq!(cut + lines.len() as u64 - 1, 2_000_003, "{}", marker[0]);
    assert!(
        marker[0].contains("of output cut here; this log keeps the first 1 MiB and the last 1 MiB"),
        "{}",
        marker[0]
    );
}
