//! Why a stage rebuilds: the difference between the key material of the newest cached build of
//! the same stage and the material it has now, in words a user acts on (cargo's `DirtyReason`).

use std::collections::BTreeMap;

use super::KeyMaterial;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    NeverBuilt,
    FormatChanged {
        from: u32,
        to: u32,
    },
    BackendChanged {
        from: String,
        to: String,
    },
    BaseChanged,
    ParentChanged,
    DependencyChanged {
        stage: String,
    },
    StepsChanged {
        step: usize,
    },
    EnvChanged {
        name: String,
    },
    VarChanged {
        name: String,
        from: Option<String>,
        to: Option<String>,
    },
    InputChanged {
        path: String,
    },
    InputAdded {
        path: String,
    },
    InputRemoved {
        path: String,
    },
    TemplateChanged {
        path: String,
    },
    SourceChanged {
        name: String,
    },
    SnapshotChanged,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| {
            v.as_deref()
                .map_or("(unset)".to_string(), |v| format!("\"{v}\""))
        };
        match self {
            Reason::NeverBuilt => write!(f, "never built"),
            Reason::FormatChanged { from, to } => {
                write!(f, "envbuild's key format changed ({from} -> {to})")
            }
            Reason::BackendChanged { from, to } => write!(f, "backend changed ({from} -> {to})"),
            Reason::BaseChanged => write!(f, "the base changed (a host tool or image)"),
            Reason::ParentChanged => write!(f, "the previous stage changed"),
            Reason::DependencyChanged { stage } => write!(f, "stage {stage} it waits for changed"),
            Reason::StepsChanged { step } => write!(f, "step {step} changed"),
            Reason::EnvChanged { name } => write!(f, "env {name} changed"),
            Reason::VarChanged { name, from, to } => {
                write!(f, "var {name} changed ({} -> {})", show(from), show(to))
            }
            Reason::InputChanged { path } => write!(f, "input file {path} changed"),
            Reason::InputAdded { path } => write!(f, "input {path} was added"),
            Reason::InputRemoved { path } => write!(f, "input {path} was removed"),
            Reason::TemplateChanged { path } => write!(f, "template {path} renders differently"),
            Reason::SourceChanged { name } => {
                write!(f, "source {name} is pinned to another sha256 or commit")
            }
            Reason::SnapshotChanged => write!(f, "its `snapshot` changed (disk or running)"),
        }
    }
}

/// Lists every difference between `before` (the newest cached build) and `now`.
pub fn explain(before: Option<&KeyMaterial>, now: &KeyMaterial) -> Vec<Reason> {
    let Some(before) = before else {
        return vec![Reason::NeverBuilt];
    };
    let mut reasons = Vec::new();
    if before.format != now.format {
        reasons.push(Reason::FormatChanged {
            from: before.format,
            to: now.format,
        });
    }
    if before.backend != now.backend {
        reasons.push(Reason::BackendChanged {
            from: before.backend.clone(),
            to: now.backend.clone(),
        });
    }
    if before.base != now.base {
        reasons.push(Reason::BaseChanged);
    }
    if before.parent != now.parent {
        reasons.push(Reason::ParentChanged);
    }
    for stage in changed_keys(&before.after, &now.after) {
        reasons.push(Reason::DependencyChanged { stage });
    }
    let steps = before.steps.len().max(now.steps.len());
    for i in 0..steps {
        if before.steps.get(i) != now.steps.get(i) {
            reasons.push(Reason::StepsChanged { step: i + 1 });
        }
    }
    for name in changed_keys(&before.env, &now.env) {
        reasons.push(Reason::EnvChanged { name });
    }
    for name in changed_keys(&before.vars, &now.vars) {
        reasons.push(Reason::VarChanged {
            from: before.vars.get(&name).cloned(),
            to: now.vars.get(&name).cloned(),
            name,
        });
    }
    for path in changed_keys(&before.inputs, &now.inputs) {
        reasons.push(
            match (
                before.inputs.contains_key(&path),
                now.inputs.contains_key(&path),
            ) {
                (false, true) => Reason::InputAdded { path },
                (true, false) => Reason::InputRemoved { path },
                _ => Reason::InputChanged { path },
            },
        );
    }
    for path in changed_keys(&before.templates, &now.templates) {
        reasons.push(Reason::TemplateChanged { path });
    }
    for name in changed_keys(&before.sources, &now.sources) {
        reasons.push(Reason::SourceChanged { name });
    }
    if before.snapshot != now.snapshot {
        reasons.push(Reason::SnapshotChanged);
    }
    reasons
}

fn changed_keys(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut names: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    names.dedup();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material() -> KeyMaterial {
        KeyMaterial {
            format: 1,
            backend: "local".into(),
            base: "b".into(),
            parent: None,
            after: BTreeMap::new(),
            steps: vec!["echo hi".into()],
            env: BTreeMap::new(),
            vars: BTreeMap::from([("v".into(), "1".into())]),
            inputs: BTreeMap::from([("a.sh".into(), "644:aa".into())]),
            templates: BTreeMap::new(),
            sources: BTreeMap::new(),
            snapshot: None,
        }
    }

    #[test]
    fn names_each_difference() {
        let before = material();
        let mut now = material();
        now.vars.insert("v".into(), "2".into());
        now.inputs.insert("a.sh".into(), "644:bb".into());
        now.inputs.insert("b.sh".into(), "644:cc".into());
        let reasons = explain(Some(&before), &now);
        assert_eq!(
            reasons,
            vec![
                Reason::VarChanged {
                    name: "v".into(),
                    from: Some("1".into()),
                    to: Some("2".into())
                },
                Reason::InputChanged {
                    path: "a.sh".into()
                },
                Reason::InputAdded {
                    path: "b.sh".into()
                },
            ]
        );
        assert_eq!(reasons[0].to_string(), "var v changed (\"1\" -> \"2\")");
    }

    #[test]
    fn identical_material_has_no_reason_and_new_stage_has_one() {
        assert!(explain(Some(&material()), &material()).is_empty());
        assert_eq!(explain(None, &material()), vec![Reason::NeverBuilt]);
    }
}
