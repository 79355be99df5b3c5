//! The rally environment against a running aio-lite, for real: Rally and rally-openstack from
//! their locked wheels (PyPI), the repository's Keystone task, the cloud taken from the
//! clouds.yaml `envbuild creds aio-lite` writes; the results land in the run folder. Needs
//! nginx, python3-venv and PyPI (as tests/aio_lite.rs); fails, never skips, without. Shares
//! tests/aio_lite.rs's store, so a warm target replays aio-lite instead of rebuilding it.

mod common;

use common::{Project, processes_mentioning};

fn project() -> Project {
    Project::on_repository_envs("aio-lite-store")
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn rally_runs_its_keystone_task_against_aio_lite_and_keeps_the_results_in_the_run_folder() {
    let project = project();
    project.ok(&["up", "aio-lite", "-q"]);
    project.ok(&["creds", "aio-lite", "-q"]);
    let clouds = project.state().join("envs/aio-lite/clouds.yaml");
    let password = std::fs::read_to_string(&clouds)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert!(password.len() >= 16);

    let out = project.path().join("run");
    let clouds_var = format!("clouds_yaml={}", clouds.display());
    let run = project.run(&[
        "test",
        "rally",
        "--var",
        &clouds_var,
        "--var",
        "cloud=aio-lite",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        std::fs::read_to_string(out.join("logs/rally.log")).unwrap_or_default()
    );

    // Rally's own reports and the figures, in the run folder.
    let task = out.join("rally/keystone");
    for file in ["report.json", "report.html", "summary.json", "task.yaml"] {
        assert!(task.join(file).is_file(), "no {file} in {}", task.display());
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let rally = &summary["rally"]["after"];
    assert_eq!(rally["sla_passed"], true, "{summary}");
    for scenario in [
        "keystone/KeystoneBasic.authenticate_user_and_validate_token",
        "keystone/KeystoneBasic.create_and_list_users",
    ] {
        assert!(
            rally[scenario]["iterations"].as_u64().unwrap() > 0,
            "{scenario}: {rally}"
        );
        assert_eq!(rally[scenario]["failures"], 0, "{rally}");
    }
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains("classname=\"rally.run.rally\""), "{junit}");
    // The password went to Rally through the environment only.
    for file in files_under(&out) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&password),
            "the password is in {}",
            file.display()
        );
    }

    // A task that does not exist is refused before Rally starts, and says what exists.
    let bad = project.run(&[
        "test",
        "rally",
        "--var",
        &clouds_var,
        "--var",
        "tasks=nope",
        "--out",
        project.path().join("bad").to_str().unwrap(),
    ]);
    assert_ne!(bad.status.code(), Some(0));
    let log = std::fs::read_to_string(project.path().join("bad/logs/rally.log")).unwrap();
    assert!(
        log.contains("no task nope") && log.contains("keystone"),
        "{log}"
    );

    project.ok(&["down", "aio-lite"]);
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
}
