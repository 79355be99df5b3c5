//! cache ls/verify/gc/export/import through the real binary, including hostile archives.

mod common;

use common::Project;

fn small_env(project: &Project) {
    project.write(
        "small.toml",
        r#"
[machines.box]
[[machines.box.stages]]
name = "base"
steps = ["mkdir -p etc && echo hello > etc/greeting", "ln -s greeting etc/link"]

[[machines.box.stages]]
name = "more"
steps = ["echo more > more.txt"]
"#,
    );
}

#[test]
fn export_then_import_into_another_store_replays_without_building() {
    let project = Project::new();
    small_env(&project);
    project.ok(&["build", "small"]);
    let archive = project.path().join("small.tar");
    project.ok(&["cache", "export", "small", "-o", archive.to_str().unwrap()]);

    let other_store = project.path().join("store-b");
    let out = project
        .cmd()
        .env("ENVBUILD_STORE", &other_store)
        .args(["cache", "import", archive.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = project
        .cmd()
        .env("ENVBUILD_STORE", &other_store)
        .env("ENVBUILD_STATE", project.path().join("state-b"))
        .args(["build", "small", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stages"][1]["action"], "restored");
    let root = project.path().join("state-b/envs/small/box/root");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/link")).unwrap(),
        "hello\n"
    );
}

/// Writes a tar whose members are given as (path bytes, kind, content or link target).
fn hostile_tar(path: &std::path::Path, members: &[(&str, tar::EntryType, &str)]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, kind, content) in members {
        // Written raw: the tar crate refuses to *create* such names, attackers do not. Names
        // longer than a header holds go first in a GNU long-name record.
        let bytes = name.as_bytes();
        if bytes.len() > 99 {
            let mut long = tar::Header::new_gnu();
            long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            long.set_entry_type(tar::EntryType::GNULongName);
            long.set_size(bytes.len() as u64 + 1);
            long.set_cksum();
            let mut data = bytes.to_vec();
            data.push(0);
            builder.append(&long, data.as_slice()).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        let short = &bytes[..bytes.len().min(99)];
        header.as_old_mut().name[..short.len()].copy_from_slice(short);
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        if *kind == tar::EntryType::Symlink {
            header.set_size(0);
            let target = content.as_bytes();
            header.as_old_mut().linkname[..target.len()].copy_from_slice(target);
            header.set_cksum();
            builder.append(&header, std::io::empty()).unwrap();
        } else {
            header.set_size(content.len() as u64);
            header.set_cksum();
            builder.append(&header, content.as_bytes()).unwrap();
        }
    }
    builder.finish().unwrap();
}

/// An archive member: path, type, content (or link target).
type Member = (String, tar::EntryType, String);

#[test]
fn hostile_archives_are_refused_whole() {
    let project = Project::new();
    small_env(&project);
    project.ok(&["build", "small"]);
    let entries_before = project.entries();
    let entry = entries_before[0].clone();
    let outside = project.path().join("outside-marker");
    let cases: Vec<(&str, Vec<Member>, &str)> = vec![
        (
            "dotdot",
            vec![(
                format!("{entry}/artifact/../../../outside-marker"),
                tar::EntryType::Regular,
                "x".into(),
            )],
            "not a plain relative path",
        ),
        (
            "absolute",
            vec![(
                outside.display().to_string(),
                tar::EntryType::Regular,
                "x".into(),
            )],
            "not a plain relative path",
        ),
        (
            "escaping link",
            vec![(
                format!("{entry}/artifact/link"),
                tar::EntryType::Symlink,
                "/etc".into(),
            )],
            "points outside its entry",
        ),
        (
            "relative escaping link",
            vec![(
                format!("{entry}/artifact/a/link"),
                tar::EntryType::Symlink,
                "../../../..".into(),
            )],
            "points outside its entry",
        ),
        (
            "not an entry",
            vec![("random/file".into(), tar::EntryType::Regular, "x".into())],
            "not inside an envbuild entry",
        ),
        (
            "device",
            vec![(
                format!("{entry}/artifact/dev"),
                tar::EntryType::Char,
                "".into(),
            )],
            "only files, folders and links",
        ),
        (
            "hardlink",
            vec![(
                format!("{entry}/artifact/hl"),
                tar::EntryType::Link,
                "/etc/passwd".into(),
            )],
            "only files, folders and links",
        ),
        (
            "incomplete entry",
            vec![(
                format!("{entry}/artifact/x"),
                tar::EntryType::Regular,
                "x".into(),
            )],
            "manifest",
        ),
    ];
    for (case, members, phrase) in cases {
        let archive = project
            .path()
            .join(format!("{}.tar", case.replace(' ', "-")));
        let members: Vec<(&str, tar::EntryType, &str)> = members
            .iter()
            .map(|(a, b, c)| (a.as_str(), *b, c.as_str()))
            .collect();
        hostile_tar(&archive, &members);
        let out = project.run(&["cache", "import", archive.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
        assert!(
            stderr.contains(phrase),
            "{case}: expected `{phrase}` in: {stderr}"
        );
        assert!(stderr.contains("Nothing was imported"), "{case}: {stderr}");
        assert!(!outside.exists(), "{case}: wrote outside the store");
        assert_eq!(
            project.entries(),
            entries_before,
            "{case}: the store changed"
        );
        assert!(
            project.tmp_leftovers().is_empty(),
            "{case}: left {:?}",
            project.tmp_leftovers()
        );
    }
}

#[test]
fn tampered_archive_is_refused_and_writes_nothing() {
    let project = Project::new();
    small_env(&project);
    project.ok(&["build", "small"]);
    let archive = project.path().join("small.tar");
    project.ok(&["cache", "export", "small", "-o", archive.to_str().unwrap()]);
    // Flip the content of etc/greeting inside the archive (same length, so tar stays valid).
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"hello\n")
        .expect("content in archive");
    bytes[at] = b'j';
    std::fs::write(&archive, bytes).unwrap();

    let empty_store = project.path().join("store-c");
    let out = project
        .cmd()
        .env("ENVBUILD_STORE", &empty_store)
        .args(["cache", "import", archive.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("etc/greeting was modified"), "{stderr}");
    let entries = std::fs::read_dir(empty_store.join("v1/entries"))
        .unwrap()
        .count();
    assert_eq!(entries, 0);
}

#[test]
fn export_refuses_links_that_leave_the_machine() {
    let project = Project::new();
    project.write(
        "linky.toml",
        r#"
[machines.box]
[[machines.box.stages]]
name = "venvish"
steps = ["ln -s /usr/bin/python3 python"]
"#,
    );
    project.ok(&["build", "linky"]);
    let out = project.run(&["cache", "export", "linky", "-o", "x.tar"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("python -> /usr/bin/python3"), "{stderr}");
    assert!(stderr.contains("--copies"), "{stderr}");
    assert!(!project.path().join("x.tar").exists());
}

#[test]
fn gc_keeps_referenced_and_recent_entries() {
    let project = Project::new();
    small_env(&project);
    project.ok(&["build", "small"]);
    // Make two generations of unreferenced entries.
    for word in ["second", "third"] {
        let file = project.envs().join("small.toml");
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("echo more", &format!("echo {word}"));
        std::fs::write(&file, text.replace("echo second", "echo third")).unwrap();
        project.ok(&["build", "small"]);
    }
    assert_eq!(project.entries().len(), 3);
    let dry = project.ok(&["cache", "gc", "--dry-run", "--keep-recent", "0"]);
    assert_eq!(
        dry.lines()
            .filter(|l| l.starts_with("would remove"))
            .count(),
        1,
        "{dry}"
    );
    assert_eq!(project.entries().len(), 3, "dry run removes nothing");
    project.ok(&["cache", "gc", "--keep-recent", "0"]);
    assert_eq!(project.entries().len(), 2);
    let plan = project.json(&["plan", "small", "--json"]);
    assert!(
        plan["machines"][0]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["cached"] == true)
    );
}

#[test]
fn ls_lists_entries_with_their_stage() {
    let project = Project::new();
    small_env(&project);
    project.ok(&["build", "small"]);
    let listed = project.json(&["cache", "ls", "--json"]);
    let stages: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages.len(), 2);
    assert!(stages.contains(&"base") && stages.contains(&"more"));
}

/// A background build that a failed assertion must not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `path` to exist (a step's handshake); panics after a minute.
fn wait_for(path: &std::path::Path, build: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        if let Some(status) = build.try_wait().unwrap() {
            panic!("the build ended ({status}) before {}", path.display());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn gc_beside_a_running_build_removes_nothing_it_holds_needs_or_made_since() {
    let project = Project::new();
    let (reached, go) = (project.path().join("reached"), project.path().join("go"));
    let (reached_last, go_last) = (
        project.path().join("reached-last"),
        project.path().join("go-last"),
    );
    project.write(
        "slow.toml",
        &format!(
            r#"
[vars]
flavour = "default"

[machines.box]
[[machines.box.stages]]
name = "first"
vars = ["flavour"]
steps = ["echo $ENVBUILD_VAR_FLAVOUR > first.txt"]

[[machines.box.stages]]
name = "second"
steps = ["cp first.txt second.txt"]

[[machines.box.stages]]
name = "third"
steps = ["touch {reached}", "while [ ! -e {go} ]; do sleep 0.05; done", "cat second.txt > third.txt"]

[[machines.box.stages]]
name = "last"
steps = ["touch {reached_last}", "while [ ! -e {go_last} ]; do sleep 0.05; done"]
"#,
            reached = reached.display(),
            go = go.display(),
            reached_last = reached_last.display(),
            go_last = go_last.display()
        ),
    );
    small_env(&project);
    // A flavour no spec references: without a lease, gc would take these entries at once.
    let mut build = KillOnDrop(
        project
            .process()
            .args(["build", "slow", "--var", "flavour=custom", "-q"])
            .spawn()
            .unwrap(),
    );
    wait_for(&reached, &mut build.0);
    // Made by another build while this one runs, referenced by nothing either.
    project.ok(&["build", "small"]);
    // ...and no longer referenced once its spec changes.
    project.write(
        "small.toml",
        "[machines.box]\n[[machines.box.stages]]\nname = \"other\"\nsteps = [\"true\"]\n",
    );
    for _ in 0..5 {
        let out = project.ok(&["cache", "gc", "--keep-recent", "0"]);
        let entries = project.entries();
        for stage in [
            "-slow-box-first",
            "-slow-box-second",
            "-small-box-base",
            "-small-box-more",
        ] {
            assert!(
                entries.iter().any(|e| e.ends_with(stage)),
                "gc removed the `{stage}` entry beside a running build:\n{out}"
            );
        }
    }
    // And gc in a loop while the build commits that stage, until it waits in the next one.
    std::fs::write(&go, "").unwrap();
    let mut rounds = 0;
    while !reached_last.exists() {
        assert!(
            build.0.try_wait().unwrap().is_none(),
            "the build ended early"
        );
        project.ok(&["cache", "gc", "--keep-recent", "0"]);
        rounds += 1;
    }
    project.ok(&["cache", "gc", "--keep-recent", "0"]);
    assert!(
        project
            .entries()
            .iter()
            .any(|e| e.ends_with("-slow-box-third")),
        "gc removed the stage the build had just committed ({rounds} rounds)"
    );
    std::fs::write(&go_last, "").unwrap();
    assert!(
        build.0.wait().unwrap().success(),
        "the build failed beside gc"
    );
    // Once no build runs, gc takes what nothing references.
    project.ok(&["cache", "gc", "--keep-recent", "0"]);
    assert_eq!(project.entries(), Vec::<String>::new());
}
