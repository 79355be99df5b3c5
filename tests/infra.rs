//! The infra environment (environments/infra.toml) and what it is made of: it plans with no
//! network at all, its machines take the single-machine environments' files as `../ENV/PATH`
//! inputs (no copies), and such inputs stay inside the sibling's folder.

mod common;

use std::process::Command;

use common::Project;

/// `envbuild ARGS` on the repository's environments, in a network namespace of its own that
/// has only a loopback interface (`unshare --net`): nothing it does can reach a network.
fn offline(project: &Project, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("unshare");
    cmd.arg("--net")
        .arg(assert_cmd::cargo::cargo_bin("envbuild"))
        .args(args)
        .current_dir(project.path())
        .env(
            "ENVBUILD_ENVS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/environments"),
        )
        .env("ENVBUILD_STORE", project.store())
        .env("ENVBUILD_STATE", project.state())
        .env("XDG_CONFIG_HOME", project.path().join("xdg"))
        .env("NO_COLOR", "1");
    cmd.output()
        .expect("unshare (util-linux) is needed: apt-get install util-linux")
}

#[test]
fn infra_and_aio_osa_plan_with_no_network_every_machine_and_stage_named() {
    let project = Project::new();
    let out = offline(&project, &["plan", "infra", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages: Vec<String> = plan["machines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| {
            m["stages"].as_array().unwrap().iter().map(move |s| {
                format!(
                    "{}/{}",
                    m["name"].as_str().unwrap(),
                    s["name"].as_str().unwrap()
                )
            })
        })
        .collect();
    for stage in [
        "jumpbox/proxy",
        "jumpbox/router",
        "rally/route",
        "rally/rally",
        "rally/tasks",
        "jenkins/plugins",
        "jenkins/configure",
        "elk/install",
        "elk/configure",
    ] {
        assert!(
            stages.iter().any(|s| s == stage),
            "no {stage} in {stages:?}"
        );
    }
    let out = offline(&project, &["plan", "aio-osa"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("setup-openstack"), "{text}");
    // The namespace really had no way out: no interface but loopback.
    let probe = Command::new("unshare")
        .args(["--net", "sh", "-c", "ip -o link | grep -v ' lo:' | wc -l"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "0");
}

/// Jenkins' and Elastic's repositories are apt sources locked by ENV.lock, and this host
/// reaches neither, so none is committed: with no network at all, a build of either (alone
/// or in infra) stops before it creates anything, with exit 2, the source and the command
/// that locks it. The vendor script is one file, shared.
#[test]
fn the_vendor_repositories_are_apt_sources_a_build_refuses_unlocked_offline() {
    let repo = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/environments"));
    assert!(
        !repo.join("elk/scripts/vendor-apt.sh").exists(),
        "a copy is back"
    );
    let project = Project::new();
    for (args, source, fix) in [
        (
            &["build", "jenkins"][..],
            "source `jenkins` of jenkins/repository: apt repository `https://pkg.jenkins.io/debian-stable binary/`",
            "envbuild lock jenkins",
        ),
        (
            &["build", "elk"][..],
            "source `elastic` of elk/repository: apt repository `https://artifacts.elastic.co/packages/8.x/apt stable main`",
            "envbuild lock elk",
        ),
        (
            &["up", "infra", "--only", "jenkins,elk"][..],
            "source `elastic` of elk/repository",
            "envbuild lock infra",
        ),
    ] {
        let out = offline(&project, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(source), "{args:?}: {stderr}");
        assert!(stderr.contains(fix), "{args:?}: {stderr}");
        assert!(project.entries().is_empty(), "{args:?} stored something");
    }
}

/// The key of stage `machine/stage` in the plan of `env` (environments in `envs`).
fn key(project: &Project, envs: &std::path::Path, env: &str, machine: &str, stage: &str) -> String {
    let plan = project.json(&["plan", env, "--json", "--envs", envs.to_str().unwrap()]);
    plan["machines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == machine)
        .flat_map(|m| m["stages"].as_array().unwrap())
        .find(|s| s["name"] == stage)
        .and_then(|s| s["key"].as_str())
        .unwrap_or_else(|| panic!("no {machine}/{stage} in {plan}"))
        .to_string()
}

#[test]
fn infra_takes_its_machines_files_from_their_own_environments_not_from_copies() {
    let repo = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/environments"));
    for copy in [
        "infra/jumpbox",
        "infra/jenkins",
        "infra/elk",
        "infra/rally",
        "infra/sync.sh",
        "rally/validation",
    ] {
        assert!(!repo.join(copy).exists(), "environments/{copy} is back");
    }
    // On a copy of the repository's environments: an edit of jumpbox's script changes the
    // key of infra's jumpbox stage, an edit of aio-lite's Rally lock the key of infra's and
    // rally's Rally stage; the other machines' stages keep theirs (a
    // stage's key includes its parent's, so the jumpbox's later stages change too).
    let project = Project::new();
    let envs = project.path().join("envs");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo)
        .arg(&envs)
        .status()
        .unwrap();
    assert!(copied.success());
    let watched = [
        ("infra", "jumpbox", "proxy"),
        ("infra", "rally", "rally"),
        ("rally", "rally", "rally"),
        ("infra", "elk", "configure"),
        ("infra", "jenkins", "plugins"),
    ];
    let keys = || -> Vec<String> {
        watched
            .iter()
            .map(|(e, m, s)| key(&project, &envs, e, m, s))
            .collect()
    };
    let before = keys();
    let append = |file: &str| {
        let path = envs.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}# edited\n")).unwrap();
    };
    append("jumpbox/scripts/proxy-conf.sh");
    append("aio-lite/validation/rally.txt");
    let after = keys();
    let changed: Vec<bool> = before.iter().zip(&after).map(|(b, a)| b != a).collect();
    assert_eq!(changed, [true, true, true, false, false], "{watched:?}");
}

/// A project with environments `app` (whose stage takes `input`) and `lib` (a sibling
/// folder holding `scripts/hello.sh`).
fn siblings(input: &str) -> Project {
    let project = Project::new();
    project.write("lib/scripts/hello.sh", "echo hello from lib\n");
    project.write(
        "lib.toml",
        "[machines.m]\n\n[[machines.m.stages]]\nname = \"s\"\ninputs = [\"scripts\"]\nsteps = [\"true\"]\n",
    );
    project.write(
        "app.toml",
        &format!(
            "[machines.m]\n\n[[machines.m.stages]]\nname = \"s\"\ninputs = [\"{input}\"]\nsteps = [\"sh $ENVBUILD_INPUTS/lib/scripts/hello.sh > out.txt\"]\n"
        ),
    );
    std::fs::create_dir_all(project.envs().join("app")).unwrap();
    project
}

#[test]
fn a_sibling_environment_s_input_is_copied_under_its_name_and_keyed_by_its_bytes() {
    let project = siblings("../lib/scripts");
    project.ok(&["build", "app", "-q"]);
    let out = project.state().join("envs/app/m/root/out.txt");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello from lib\n");
    // The sibling's bytes are the key: editing them rebuilds, nothing else does.
    let before = project.build_actions("app", &[]);
    assert_eq!(before, ["s:current"]);
    project.write("lib/scripts/hello.sh", "echo changed\n");
    assert_eq!(project.build_actions("app", &[]), ["s:built"]);
}

#[test]
fn a_sibling_input_that_leads_out_of_its_folder_or_collides_is_refused_with_exit_2() {
    // A link in the sibling's folder to a file of another environment: out of its folder.
    let project = siblings("../lib/other.toml");
    std::os::unix::fs::symlink("../app.toml", project.envs().join("lib/other.toml")).unwrap();
    let out = project.run(&["plan", "app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("app.toml:5:11"), "{stderr}");
    assert!(stderr.contains("leads out of"), "{stderr}");

    // The environment's own folder has a `lib` too: the copies would land on each other.
    let project = siblings("../lib/scripts");
    project.write("app/lib/x", "x\n");
    let out = project.run(&["plan", "app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("where this environment's own `lib` goes"),
        "{stderr}"
    );

    // Only a leading `../ENV/` is a sibling; `..` anywhere else is refused as before.
    for input in ["../lib/../app.toml", "scripts/../../lib/scripts", "../lib"] {
        let project = siblings(input);
        let out = project.run(&["plan", "app"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input}: {stderr}");
        assert!(stderr.contains("without `..`"), "{input}: {stderr}");
    }

    // A sibling that is not there names the path it expected.
    let project = siblings("../nope/scripts");
    let out = project.run(&["plan", "app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nope/scripts"), "{stderr}");
}
