//! `build`, then push what it built to the remote caches that take pushes.

use crate::engine::{self, BuildReport, EnvLock, Workspace};
use crate::error::{Error, Result};
use crate::key::StageKey;
use crate::remote::{self, PushOutcome};
use crate::spec::model::Environment;

/// What happened to the stages of a build after it, on the remote caches.
pub enum AfterBuild {
    /// No remote cache takes pushes.
    NoPush,
    /// Remote caches take pushes, but this run is read-only.
    ReadOnly,
    Pushed(Vec<PushOutcome>),
}

/// Builds `env`, then pushes its entries to every remote cache that takes pushes.
pub fn build(
    ws: &Workspace,
    lock: &EnvLock,
    env: &Environment,
    keys: &[StageKey],
) -> Result<(BuildReport, AfterBuild)> {
    let progress = ws.progress();
    let report = engine::build(ws, lock, env, keys, &progress)?;
    let remotes = &ws.remotes;
    let after = if remotes.read_only && remotes.remotes.iter().any(|r| r.push) {
        AfterBuild::ReadOnly
    } else if remotes.pushing().next().is_some() {
        let keys: Vec<String> = keys.iter().map(|k| k.key.clone()).collect();
        AfterBuild::Pushed(remote::push_keys(ws.store()?, remotes, &keys, &progress)?)
    } else {
        AfterBuild::NoPush
    };
    Ok((report, after))
}

/// `--only a,b`: `env` with only the named machines, for `build` and `up` of part of an
/// environment (the machines that can run on this host, say). Every name must be a machine of
/// `env`, and a machine whose stages wait for another's (`after`) needs that one selected too:
/// its keys depend on it. The `[cloud]` goes with its machine.
pub fn only(env: &Environment, names: &[String]) -> Result<Environment> {
    let known: Vec<&str> = env.machines.iter().map(|m| m.name.as_str()).collect();
    if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(Error::input(
            format!(
                "`--only {unknown}`: {} has no machine `{unknown}`",
                env.name
            ),
            format!("name machines of {}: {}", env.name, known.join(", ")),
        ));
    }
    let mut part = env.clone();
    part.machines.retain(|m| names.contains(&m.name));
    for machine in &part.machines {
        let waits = machine.stages.iter().flat_map(|s| &s.after);
        if let Some((other, stage)) = waits.into_iter().find(|(m, _)| !names.contains(m)) {
            return Err(Error::input(
                format!(
                    "`--only`: machine `{}` waits for `{other}.{stage}`, which is not selected",
                    machine.name
                ),
                format!("add {other} to --only"),
            ));
        }
    }
    if part
        .cloud
        .as_ref()
        .is_some_and(|c| !names.contains(&c.machine))
    {
        part.cloud = None;
    }
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(text: &str) -> Environment {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lab.toml"), text).unwrap();
        crate::spec::load(dir.path(), "lab", &[]).unwrap()
    }

    const LAB: &str = r#"
[machines.db]
[[machines.db.stages]]
name = "schema"
steps = ["true"]

[machines.api]
[[machines.api.stages]]
name = "code"
after = ["db.schema"]
steps = ["true"]

[machines.tool]
[[machines.tool.stages]]
name = "install"
steps = ["true"]
"#;

    fn names(env: &Environment) -> Vec<&str> {
        env.machines.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn only_keeps_the_named_machines_in_the_spec_order() {
        let env = lab(LAB);
        let part = only(&env, &["tool".into(), "db".into()]).unwrap();
        assert_eq!(names(&part), ["db", "tool"]);
        let part = only(&env, &["api".into(), "db".into()]).unwrap();
        assert_eq!(names(&part), ["db", "api"]);
    }

    #[test]
    fn only_refuses_an_unknown_machine_and_a_missing_dependency() {
        let env = lab(LAB);
        let unknown = only(&env, &["web".into()]).unwrap_err();
        assert_eq!(unknown.exit_code(), 2);
        assert!(
            unknown.to_string().contains("no machine `web`"),
            "{unknown}"
        );
        let missing = only(&env, &["api".into()]).unwrap_err();
        assert_eq!(missing.exit_code(), 2);
        assert!(missing.to_string().contains("`db.schema`"), "{missing}");
    }
}
