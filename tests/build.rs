//! Keys, caching, replay, concurrency and crash safety, through the real binary.

mod common;

use std::time::{Duration, Instant};

use common::{Project, count_lines, processes_with};

/// A three-stage environment whose every step appends a line to `counter`.
fn three_stages(project: &Project) -> std::path::PathBuf {
    let counter = project.path().join("counter");
    project.write(
        "demo.toml",
        &format!(
            r#"
description = "three stages"

[vars]
greeting = "hello"
unused = "nobody uses me"

[machines.box]

[[machines.box.stages]]
name = "one"
inputs = ["one.sh"]
steps = ["echo one >> {c}", "sh $ENVBUILD_INPUTS/one.sh"]

[[machines.box.stages]]
name = "two"
inputs = ["data"]
steps = ["echo two >> {c}", "cp -r $ENVBUILD_INPUTS/data data"]

[[machines.box.stages]]
name = "three"
steps = ["echo three >> {c}", "echo {{{{ greeting }}}} > greeting.txt"]
"#,
            c = counter.display()
        ),
    );
    project.write("demo/one.sh", "echo built-one > one.txt\n");
    project.write("demo/data/a.txt", "a\n");
    project.write("demo/data/sub/b.txt", "b\n");
    counter
}

fn keys(project: &Project, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["hash", "demo"];
    args.extend_from_slice(extra);
    project
        .ok(&args)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn keys_are_stable_across_runs_and_reformatting() {
    let project = Project::new();
    three_stages(&project);
    let first = keys(&project, &[]);
    assert_eq!(first.len(), 3);
    assert_eq!(first, keys(&project, &[]));

    // The same spec with tables and keys reordered, other quoting, comments and whitespace.
    let counter = project.path().join("counter");
    project.write(
        "demo.toml",
        &format!(
            r#"# reformatted by hand
[vars]
unused   = 'nobody uses me'   # still unused
greeting = "hello"

[[machines.box.stages]]
steps = [ "echo one >> {c}",
          "sh $ENVBUILD_INPUTS/one.sh" ]
inputs = ["one.sh"]
name = "one"

[[machines.box.stages]]
name   = "two"
steps  = ["echo two >> {c}", "cp -r $ENVBUILD_INPUTS/data data"]
inputs = ['data']

[[machines.box.stages]]
steps = ["echo three >> {c}", "echo {{{{ greeting }}}} > greeting.txt"]
name = "three"
"#,
            c = counter.display()
        ),
    );
    assert_eq!(first, keys(&project, &[]));
    // A comment or description is not an input; one changed step byte is.
    project.write(
        "demo.toml",
        &std::fs::read_to_string(project.envs().join("demo.toml"))
            .unwrap()
            .replace("echo two", "echo  two"),
    );
    assert_ne!(keys(&project, &[])[1], first[1]);
    three_stages(&project);

    // Overriding a var changes exactly the stages that use it.
    let overridden = keys(&project, &["--var", "greeting=hi"]);
    assert_eq!(overridden[..2], first[..2]);
    assert_ne!(overridden[2], first[2]);
    assert_eq!(keys(&project, &["--var", "unused=changed"]), first);

    // Any input byte changes the key of its stage and every stage after it.
    project.write("demo/data/sub/b.txt", "B\n");
    let changed = keys(&project, &[]);
    assert_eq!(changed[0], first[0]);
    assert_ne!(changed[1], first[1]);
    assert_ne!(changed[2], first[2]);
}

#[test]
fn input_change_rebuilds_that_stage_and_later_ones_only() {
    let project = Project::new();
    let counter = three_stages(&project);
    assert_eq!(
        project.build_actions("demo", &[]),
        ["one:built", "two:built", "three:built"]
    );
    assert_eq!(count_lines(&counter), 3);

    // Nothing changed: no step runs.
    assert_eq!(
        project.build_actions("demo", &[]),
        ["one:cached", "two:cached", "three:current"]
    );
    assert_eq!(count_lines(&counter), 3);

    // Change an input of stage two: one is replayed, two and three rebuild.
    project.write("demo/data/a.txt", "changed\n");
    let explain = project.ok(&["plan", "demo", "--explain"]);
    assert!(
        explain.contains("input file data/a.txt changed"),
        "{explain}"
    );
    assert_eq!(
        project.build_actions("demo", &[]),
        ["one:restored", "two:built", "three:built"]
    );
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "one\ntwo\nthree\ntwo\nthree\n"
    );
    let root = project.state().join("envs/demo/box/root");
    assert_eq!(
        std::fs::read_to_string(root.join("data/a.txt")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("one.txt")).unwrap(),
        "built-one\n"
    );

    // A var override rebuilds only the stage that uses it, and says so.
    let explain = project.ok(&["plan", "demo", "--explain", "--var", "greeting=hi"]);
    assert!(
        explain.contains("var greeting changed (\"hello\" -> \"hi\")"),
        "{explain}"
    );
    assert_eq!(
        project.build_actions("demo", &["--var", "greeting=hi"]),
        ["one:cached", "two:restored", "three:built"]
    );
    assert_eq!(
        std::fs::read_to_string(root.join("greeting.txt")).unwrap(),
        "hi\n"
    );
}

#[test]
fn replay_restores_into_a_fresh_state_and_continues() {
    let project = Project::new();
    let counter = three_stages(&project);
    project.ok(&["build", "demo"]);
    // A second workspace sharing the store: everything is replayed, no step runs, and the
    // machine works at its new path.
    let other_state = project.path().join("other-state");
    let out = project
        .cmd()
        .env("ENVBUILD_STATE", &other_state)
        .args(["build", "demo", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stages"][2]["action"], "restored");
    assert_eq!(count_lines(&counter), 3);
    let root = other_state.join("envs/demo/box/root");
    assert_eq!(
        std::fs::read_to_string(root.join("data/sub/b.txt")).unwrap(),
        "b\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("greeting.txt")).unwrap(),
        "hello\n"
    );

    // Append a stage: the three are replayed, only the new one runs.
    let file = project.envs().join("demo.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!(
        "\n[[machines.box.stages]]\nname = \"four\"\nsteps = [\"echo four >> {}\"]\n",
        counter.display()
    ));
    std::fs::write(&file, text).unwrap();
    assert_eq!(
        project.build_actions("demo", &[]),
        ["one:cached", "two:cached", "three:current", "four:built"]
    );
    assert_eq!(count_lines(&counter), 4);
}

#[test]
fn concurrent_cold_builds_run_each_stage_once() {
    let project = Project::new();
    let counter = three_stages(&project);
    let file = project.envs().join("demo.toml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "\"sh $ENVBUILD_INPUTS/one.sh\"",
        "\"sh $ENVBUILD_INPUTS/one.sh\", \"sleep 1\"",
    );
    std::fs::write(&file, text).unwrap();
    // Two of them share a state folder: the second waits for the first (--wait).
    let handles: Vec<_> = (0..4)
        .map(|i| {
            project
                .process()
                .env(
                    "ENVBUILD_STATE",
                    project.path().join(format!("state-{}", i % 3)),
                )
                .args(["build", "demo", "-q", "--wait"])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut handle in handles {
        assert!(handle.wait().unwrap().success());
    }
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "one\ntwo\nthree\n"
    );
    assert_eq!(project.entries().len(), 3);
    for i in 0..3 {
        let root = project.path().join(format!("state-{i}/envs/demo/box/root"));
        assert_eq!(
            std::fs::read_to_string(root.join("greeting.txt")).unwrap(),
            "hello\n"
        );
    }
}

#[test]
fn killed_build_leaves_no_partial_entry_and_no_process() {
    let project = Project::new();
    let marker = format!("envbuild-kill-test-{}", std::process::id());
    project.write(
        "slow.toml",
        &format!(
            r#"
[machines.box]
[[machines.box.stages]]
name = "first"
steps = ["echo first > first.txt"]

[[machines.box.stages]]
name = "slow"
steps = ["echo partial > partial.txt", "sh -c 'sleep 300; echo {marker}' & sleep 300 # {marker}"]
"#
        ),
    );
    let mut child = project
        .process()
        .args(["build", "slow", "-q"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(&marker).len() < 2 {
        assert!(Instant::now() < deadline, "the slow step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: killing the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();

    // The supervisor takes the step's whole process group down with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "step processes outlived the killed build: {:?}",
            processes_with(&marker)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        project.entries().len(),
        1,
        "only the finished stage is committed"
    );
    assert!(
        !project.tmp_leftovers().is_empty(),
        "the killed build's pending entry is left in tmp/"
    );

    // Make the slow stage fast; the next build cleans the leftover and succeeds.
    let file = project.envs().join("slow.toml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("sleep 300", "true");
    std::fs::write(&file, text).unwrap();
    assert_eq!(
        project.build_actions("slow", &[]),
        ["first:restored", "slow:built"]
    );
    assert!(
        project.tmp_leftovers().is_empty(),
        "{:?}",
        project.tmp_leftovers()
    );
    assert_eq!(project.entries().len(), 2);
    let out = project.run(&["cache", "verify"]);
    assert!(out.status.success());
}

#[test]
fn failed_stage_commits_nothing_and_keeps_earlier_stages() {
    let project = Project::new();
    project.write(
        "fails.toml",
        r#"
[machines.box]
[[machines.box.stages]]
name = "good"
steps = ["echo good > good.txt"]

[[machines.box.stages]]
name = "bad"
steps = ["echo about to fail", "echo the reason >&2; exit 3"]
"#,
    );
    let out = project.run(&["build", "fails"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stage fails/box/bad failed: step 2"),
        "{stderr}"
    );
    assert!(stderr.contains("exited with status 3"), "{stderr}");
    assert!(
        stderr.contains("the reason"),
        "the error shows the last lines: {stderr}"
    );
    assert_eq!(project.entries().len(), 1);
    assert!(project.tmp_leftovers().is_empty());
}

#[test]
fn tampered_entry_is_reported_and_never_reused() {
    let project = Project::new();
    let counter = three_stages(&project);
    project.ok(&["build", "demo"]);
    let entry = project
        .entries()
        .into_iter()
        .find(|e| e.ends_with("-demo-box-three"))
        .unwrap();
    let file = project
        .store()
        .join("v1/entries")
        .join(&entry)
        .join("artifact/greeting.txt");
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&file, perms).unwrap();
    std::fs::write(&file, "evil\n").unwrap();

    let out = project.run(&["cache", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("BAD {entry}")), "{stdout}");
    assert!(stdout.contains("greeting.txt was modified"), "{stdout}");
    assert!(stdout.contains("3 entries checked, 1 bad"), "{stdout}");

    // A fresh state must not restore the tampered stage: it is quarantined and rebuilt.
    let other = project.path().join("state-b");
    let out = project
        .cmd()
        .env("ENVBUILD_STATE", &other)
        .args(["build", "demo", "--json", "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stages"][1]["action"], "restored");
    assert_eq!(report["stages"][2]["action"], "built");
    // A warning: `-q` does not hide it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: cache entry") && stderr.contains("does not match its digests"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("envs/demo/box/root/greeting.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(count_lines(&counter), 4);
    project.ok(&["cache", "verify"]);
}

#[test]
fn relative_store_and_state_give_steps_absolute_paths() {
    let project = Project::new();
    project.write(
        "paths.toml",
        r#"
[machines.box]
[[machines.box.stages]]
name = "one"
inputs = ["in.txt"]
steps = ["env | grep -E '^ENVBUILD_(ROOT|INPUTS)=' > paths.txt", "cat \"$ENVBUILD_INPUTS/in.txt\" > copy.txt"]
"#,
    );
    project.write("paths/in.txt", "input\n");
    let out = project
        .cmd()
        .args([
            "--store",
            "rel/store",
            "--state",
            "rel/state",
            "build",
            "paths",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = project.path().join("rel/state/envs/paths/box/root");
    assert_eq!(
        std::fs::read_to_string(root.join("copy.txt")).unwrap(),
        "input\n",
        "the step read its input from the machine root"
    );
    let paths = std::fs::read_to_string(root.join("paths.txt")).unwrap();
    assert_eq!(paths.lines().count(), 2, "{paths}");
    for line in paths.lines() {
        let (_, value) = line.split_once('=').unwrap();
        assert!(
            value.starts_with(project.path().to_str().unwrap()),
            "{line}"
        );
    }
    assert_eq!(
        common::file_names(&project.path().join("rel/store/v1/entries")).len(),
        1
    );
}

#[test]
fn a_command_refused_for_bad_input_creates_no_store() {
    let project = Project::new();
    three_stages(&project);
    project.write("broken.toml", "[machines.box\n");
    let cases: [&[&str]; 6] = [
        &["build", "nope"],
        &["build", "broken"],
        &["up", "demo", "--var", "nope=1"],
        &["plan", "demo", "--cache-from", "ftp://cache/"],
        &["status", "nope"],
        &["cache", "export", "nope", "-o", "x.tar"],
    ];
    for args in cases {
        let out = project.run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!project.store().exists(), "{args:?} created the store");
    }
    project.ok(&["build", "demo"]);
    assert_eq!(project.entries().len(), 3);
}

#[test]
fn off_a_terminal_a_long_stage_prints_a_heartbeat_with_its_last_line() {
    let project = Project::new();
    project.write(
        "slow.toml",
        r#"
[machines.m]
[[machines.m.stages]]
name = "long"
steps = ["echo collecting-wheels; echo downloading-wheel-7; sleep 3"]
"#,
    );
    let out = project
        .cmd()
        .env("ENVBUILD_HEARTBEAT", "1s")
        .args(["build", "slow"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let beats: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("==> slow/m/long: running "))
        .collect();
    // One a second while the step sleeps, each with the output so far and its last line.
    assert!(beats.len() >= 2, "{stderr}");
    assert!(
        beats
            .iter()
            .all(|l| l.contains(", 2 lines; last (") && l.ends_with("ago): downloading-wheel-7")),
        "{stderr}"
    );
    // The output itself stays in the stage's log, not on the console.
    assert!(!stderr.contains("collecting-wheels"), "{stderr}");
    // -q: nothing but results and errors.
    project.write(
        "quiet.toml",
        "[machines.m]\n[[machines.m.stages]]\nname = \"long\"\nsteps = [\"echo x; sleep 2\"]\n",
    );
    let out = project
        .cmd()
        .env("ENVBUILD_HEARTBEAT", "1s")
        .args(["build", "quiet", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn json_output_to_a_reader_that_stops_early_ends_quietly() {
    let project = Project::new();
    project.write(
        "small.toml",
        "[machines.box]\n[[machines.box.stages]]\nname = \"s\"\nsteps = [\"true\"]\n",
    );
    // `| head -c0`: the reading end is closed before envbuild starts.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = common::envbuild(project.path())
        .args([
            "--envs",
            project.envs().to_str().unwrap(),
            "plan",
            "small",
            "--json",
        ])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
