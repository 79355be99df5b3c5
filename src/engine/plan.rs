//! What a build would do: for each stage its key, whether the store (or a remote) has it, and why not.

use serde::Serialize;

use super::Workspace;
use crate::error::Result;
use crate::key::StageKey;
use crate::key::explain::{Reason, explain};
use crate::spec::model::Environment;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub env: String,
    pub machines: Vec<MachinePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MachinePlan {
    pub name: String,
    pub description: Option<String>,
    pub backend: String,
    pub base: crate::spec::model::Base,
    pub resources: crate::spec::model::Resources,
    pub stages: Vec<StagePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    pub name: String,
    pub description: Option<String>,
    pub key: String,
    pub cached: bool,
    /// The first remote cache (in lookup order) that has it, when the local store does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Why it will be built; filled for stages that are not cached when explaining.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

pub fn plan(
    ws: &Workspace,
    env: &Environment,
    keys: &[StageKey],
    with_reasons: bool,
) -> Result<Plan> {
    let store = ws.store()?;
    let index = store.index()?;
    let machines = env
        .machines
        .iter()
        .map(|machine| MachinePlan {
            name: machine.name.clone(),
            description: machine.description.clone(),
            backend: machine.backend.as_str().to_string(),
            base: machine.base.clone(),
            resources: machine.resources.clone(),
            stages: keys
                .iter()
                .filter(|k| k.machine == machine.name)
                .map(|k| {
                    let cached = index.contains_key(&k.key);
                    let remote = if cached {
                        None
                    } else {
                        ws.remotes.holder(&k.key).map(|r| r.url.to_string())
                    };
                    let reasons = if with_reasons && !cached {
                        let before = store.newest_for(&index, &env.name, &k.machine, &k.stage);
                        explain(before.as_ref().map(|m| &m.material), &k.material)
                    } else {
                        Vec::new()
                    };
                    StagePlan {
                        name: k.stage.clone(),
                        description: machine
                            .stages
                            .iter()
                            .find(|s| s.name == k.stage)
                            .and_then(|s| s.description.clone()),
                        key: k.key.clone(),
                        cached,
                        remote,
                        reasons,
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Plan {
        env: env.name.clone(),
        machines,
    })
}
