//! Hostile input through the real binary: inputs that lead out of the environment's folder,
//! names that are paths, `--var` values that look like shell code, spec files that are not
//! UTF-8. Each is refused with exit 2 or arrives as plain data; nothing escapes into the store.

mod common;

use common::Project;

/// A value holding every shell metacharacter that could run something.
fn hostile_value(marker_dir: &std::path::Path) -> String {
    let d = marker_dir.display();
    format!(
        "$(touch {d}/pwned-dollar) `touch {d}/pwned-backtick` ; touch {d}/pwned-semicolon && \
         'single' \"double\" \\ * ${{HOME}}\nnewline; touch {d}/pwned-newline"
    )
}

fn markers(dir: &std::path::Path) -> Vec<String> {
    common::file_names(dir)
        .into_iter()
        .filter(|n| n.starts_with("pwned"))
        .collect()
}

#[test]
fn var_values_reach_steps_services_and_phases_as_data() {
    let project = Project::new();
    let marker_dir = project.path().join("markers");
    std::fs::create_dir_all(&marker_dir).unwrap();
    project.write(
        "echo.toml",
        r#"
[vars]
msg = "plain"

[machines.box]
prestart = ["printf '%s' {{ msg }} > prestart.txt"]

[[machines.box.stages]]
name = "say"
steps = [
  "printf '%s' {{ msg }} > unquoted.txt",
  "printf '%s' \"{{msg}}\" > double.txt",
  "printf '%s' 'single:{{ msg }}' > single.txt",
  "printf '%s' \"$(printf '%s' {{ msg }})\" > nested.txt",
]

[[machines.box.services]]
name = "svc"
command = "printf '%s' {{ msg }} > service.txt; exec sleep 300"
ready = { command = "printf '%s' {{ msg }} > ready.txt", timeout = "20s" }

[flows.check]
cleanup = ["down"]

[[flows.check.phases]]
name = "deploy"
action = "up"

[[flows.check.phases]]
name = "say"
action = "run"
run = ["printf '%s' {{ msg }} > \"$ENVBUILD_ROOT/phase.txt\""]
"#,
    );
    // A plain value renders as before: the same text in every context.
    project.ok(&["build", "echo"]);
    let root = project.state().join("envs/echo/box/root");
    for (file, want) in [
        ("unquoted.txt", "plain"),
        ("double.txt", "plain"),
        ("single.txt", "single:plain"),
        ("nested.txt", "plain"),
    ] {
        assert_eq!(std::fs::read_to_string(root.join(file)).unwrap(), want);
    }

    let value = hostile_value(&marker_dir);
    let var = format!("msg={value}");
    project.ok(&["build", "echo", "--var", &var]);
    project.ok(&["up", "echo", "--var", &var]);
    let out = project.path().join("run");
    project.ok(&[
        "test",
        "echo",
        "--replace",
        "--var",
        &var,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        markers(&marker_dir),
        Vec::<String>::new(),
        "a var value ran"
    );
    for (file, want) in [
        ("unquoted.txt", value.clone()),
        ("double.txt", value.clone()),
        ("single.txt", format!("single:{value}")),
        ("nested.txt", value.clone()),
        ("prestart.txt", value.clone()),
        ("service.txt", value.clone()),
        ("ready.txt", value.clone()),
        ("phase.txt", value.clone()),
    ] {
        assert_eq!(
            std::fs::read_to_string(root.join(file)).unwrap_or_default(),
            want,
            "{file}"
        );
    }
}

#[test]
fn the_key_of_a_step_with_a_placeholder_did_not_change() {
    // The key hashes steps as written plus var values (docs/hashing.md), never the rendered
    // shell text: this key was computed before var values became environment references.
    let project = Project::new();
    project.write(
        "k.toml",
        r#"
[vars]
msg = "hello"

[machines.box]
[[machines.box.stages]]
name = "say"
steps = ["echo {{ msg }} > msg.txt"]
"#,
    );
    let hash = project.ok(&["hash", "k"]);
    assert_eq!(
        hash.split_whitespace().next().unwrap(),
        "8ad26c5092abdc6a5bb3b14f49fa347e624952bd2631038a4349eaade47847b0",
        "{hash}"
    );
}

#[test]
fn an_environment_name_is_a_name_not_a_path() {
    let project = Project::new();
    project.write(
        "fine.toml",
        "[machines.box]\n[[machines.box.stages]]\nname = \"s\"\nsteps = [\"true\"]\n",
    );
    let outside = project.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("evil.toml"),
        "[machines.box]\n[[machines.box.stages]]\nname = \"s\"\nsteps = [\"touch escaped\"]\n",
    )
    .unwrap();
    for name in ["../outside/evil", "/etc/passwd", "Fine", "fine.toml", ""] {
        let out = project.run(&["build", name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains("is not a valid environment name"),
            "{name}: {stderr}"
        );
        assert!(stderr.contains("known environments: fine"), "{stderr}");
    }
    assert!(
        !project.store().exists(),
        "a refused name created the store"
    );
    assert!(
        !project.state().exists(),
        "a refused name created a state folder"
    );
    assert!(!project.path().join("outside/box").exists());
}

#[test]
fn a_spec_that_is_not_utf8_is_bad_input_and_list_shows_the_others() {
    let project = Project::new();
    project.write(
        "good.toml",
        "description = \"fine\"\n[machines.box]\n[[machines.box.stages]]\nname = \"s\"\nsteps = [\"true\"]\n",
    );
    let bad = project.envs().join("latin1.toml");
    std::fs::write(&bad, b"description = \"caf\xe9\"\n[machines.box]\n").unwrap();

    let out = project.run(&["build", "latin1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("error: {}:1:19:", bad.display())),
        "{stderr}"
    );
    assert!(stderr.contains("byte offset 18"), "{stderr}");
    assert!(stderr.contains("not UTF-8"), "{stderr}");

    let out = project.run(&["list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("good ") && l.contains("fine")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("latin1 ") && l.contains("broken")),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("{}:1:19:", bad.display())),
        "{stderr}"
    );
    let json = project.run(&["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(listed[0]["name"], "good");
    assert_eq!(listed[1]["name"], "latin1");
    assert!(
        listed[1]["error"]
            .as_str()
            .unwrap()
            .contains("byte offset 18"),
        "{listed}"
    );
}
