//! Machine ordering: `after` references checked, machines sorted so that each follows those it
//! waits for, a cycle named with the `after` that closes it.

use std::collections::{BTreeMap, BTreeSet};

use super::model::*;
use super::raw::*;
use super::*;
use crate::error::Result;

impl Loader<'_> {
    /// Checks `after` references and orders machines so that each follows those it waits for.
    pub(super) fn order_machines(
        &self,
        machines: Vec<Machine>,
        raw: &RawEnvironment,
    ) -> Result<Vec<Machine>> {
        // Where `machine.stage` says `after = [.., "target", ..]`; `target` None: its first entry.
        let span_of = |machine: &str, stage: &str, target: Option<&str>| -> usize {
            raw.machines
                .iter()
                .find(|(n, _)| n.get_ref() == machine)
                .and_then(|(_, m)| {
                    m.stages
                        .iter()
                        .find(|s| s.get_ref().name.get_ref() == stage)
                })
                .and_then(|s| {
                    let after = &s.get_ref().after;
                    match target {
                        Some(t) => after
                            .iter()
                            .find(|a| a.get_ref() == t || a.get_ref().split('.').next() == Some(t)),
                        None => after.first(),
                    }
                })
                .map_or(0, |a| a.span().start)
        };
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for machine in &machines {
            let entry = deps.entry(machine.name.clone()).or_default();
            for stage in &machine.stages {
                for (other, other_stage) in &stage.after {
                    let at = span_of(
                        &machine.name,
                        &stage.name,
                        Some(&format!("{other}.{other_stage}")),
                    );
                    if *other == machine.name {
                        return self.err(at, format!("`after = \"{other}.{other_stage}\"` names this machine; stages of one machine already run in order"));
                    }
                    let Some(target) = machines.iter().find(|m| m.name == *other) else {
                        let known: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
                        return self.err(at, format!("`after` names machine `{other}`, which this environment does not define; machines: {}", known.join(", ")));
                    };
                    if !target.stages.iter().any(|s| s.name == *other_stage) {
                        let known: Vec<&str> =
                            target.stages.iter().map(|s| s.name.as_str()).collect();
                        return self.err(
                            at,
                            format!(
                                "machine `{other}` has no stage `{other_stage}`; its stages: {}",
                                known.join(", ")
                            ),
                        );
                    }
                    entry.insert(other.clone());
                }
            }
        }
        let mut ordered: Vec<Machine> = Vec::new();
        let mut pending = machines;
        while !pending.is_empty() {
            let ready = pending.iter().position(|m| {
                deps[&m.name]
                    .iter()
                    .all(|d| ordered.iter().any(|o| o.name == *d))
            });
            match ready {
                Some(i) => ordered.push(pending.remove(i)),
                None => {
                    // Walk from a stuck machine until a machine repeats: that loop is the cycle.
                    let mut path: Vec<String> = vec![pending[0].name.clone()];
                    loop {
                        let current = path.last().expect("path starts non-empty");
                        let next = deps[current]
                            .iter()
                            .find(|d| pending.iter().any(|p| p.name == **d))
                            .expect("a stuck machine waits for a pending one")
                            .clone();
                        if let Some(at) = path.iter().position(|m| *m == next) {
                            let mut cycle = path.split_off(at);
                            cycle.push(next);
                            let (from, to) = (&cycle[0], &cycle[1]);
                            let machine = pending
                                .iter()
                                .find(|m| m.name == *from)
                                .expect("cycle members are pending");
                            let stage = machine
                                .stages
                                .iter()
                                .find(|s| s.after.iter().any(|(m, _)| m == to))
                                .expect("an edge has a stage");
                            return self.err(
                                span_of(from, &stage.name, Some(to)),
                                format!("machines wait for each other in a cycle ({}); remove one `after`", cycle.join(" -> ")),
                            );
                        }
                        path.push(next);
                    }
                }
            }
        }
        Ok(ordered)
    }
}
