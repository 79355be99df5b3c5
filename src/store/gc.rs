//! `cache gc`'s rule: which entries go.
//!
//! Kept: every entry a current spec references, every entry a running command holds (its lease
//! names it, or it was committed since the oldest running command began: store/lease.rs), the
//! `keep_recent` newest of the others, and, transitively, every entry a kept entry cannot be
//! used without (a libvirt overlay's parent disk, as its backend says). Everything else is
//! removed, newest first, so an interrupted gc never leaves an entry whose parent is gone.

use std::collections::{HashMap, HashSet};

use super::Entry;
use super::lease::Held;

/// One entry as gc sees it.
pub struct Candidate {
    pub entry: Entry,
    /// When it was committed (manifest `created_unix`; 0 when unreadable).
    pub created: u64,
    /// The name of the entry its artifact needs, if any.
    pub needs: Option<String>,
}

/// What gc keeps and removes.
#[derive(Debug, Default)]
pub struct GcPlan {
    /// Entries to remove, newest first.
    pub remove: Vec<Entry>,
    /// Kept because a current spec references them.
    pub referenced: usize,
    /// Kept because a running command holds them, or made them since it began.
    pub held: usize,
    /// Kept as the most recent of the unreferenced ones.
    pub recent: usize,
    /// Kept because a kept entry needs them (and nothing else keeps them).
    pub needed: usize,
}

pub fn plan(
    candidates: Vec<Candidate>,
    referenced: &HashSet<String>,
    held: &Held,
    keep_recent: usize,
) -> GcPlan {
    let mut plan = GcPlan::default();
    let mut unreferenced: Vec<&Candidate> = Vec::new();
    let mut kept: HashSet<&str> = HashSet::new();
    for candidate in &candidates {
        if referenced.contains(candidate.entry.key()) {
            plan.referenced += 1;
            kept.insert(&candidate.entry.name);
        } else if held.keys.contains(candidate.entry.key())
            || held.since.is_some_and(|since| candidate.created >= since)
        {
            plan.held += 1;
            kept.insert(&candidate.entry.name);
        } else {
            unreferenced.push(candidate);
        }
    }
    unreferenced.sort_by_key(|c| std::cmp::Reverse(c.created));
    for candidate in unreferenced.iter().take(keep_recent) {
        plan.recent += 1;
        kept.insert(&candidate.entry.name);
    }
    let by_name: HashMap<&str, &Candidate> = candidates
        .iter()
        .map(|c| (c.entry.name.as_str(), c))
        .collect();
    let mut todo: Vec<&str> = kept.iter().copied().collect();
    while let Some(name) = todo.pop() {
        let Some(parent) = by_name.get(name).and_then(|c| c.needs.as_deref()) else {
            continue;
        };
        if by_name.contains_key(parent) && kept.insert(parent) {
            plan.needed += 1;
            todo.push(parent);
        }
    }
    plan.remove = unreferenced
        .into_iter()
        .filter(|c| !kept.contains(c.entry.name.as_str()))
        .map(|c| c.entry.clone())
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry named `<key>-e-m-<stage>` whose 64-hex key starts with `tag`.
    fn candidate(tag: char, created: u64, needs: Option<char>) -> Candidate {
        let name = |t: char| format!("{}-e-m-s", t.to_string().repeat(64));
        Candidate {
            entry: Entry {
                name: name(tag),
                dir: std::path::PathBuf::from("/nonexistent").join(name(tag)),
            },
            created,
            needs: needs.map(name),
        }
    }

    fn removed(plan: &GcPlan) -> Vec<char> {
        plan.remove
            .iter()
            .map(|e| e.name.chars().next().unwrap())
            .collect()
    }

    fn keys(tags: &str) -> HashSet<String> {
        tags.chars().map(|t| t.to_string().repeat(64)).collect()
    }

    #[test]
    fn keep_recent_keeps_the_newest_unreferenced_entries() {
        let entries = || {
            vec![
                candidate('a', 10, None),
                candidate('b', 30, None),
                candidate('c', 20, None),
                candidate('d', 40, None),
            ]
        };
        let plan = plan(entries(), &keys("d"), &Held::default(), 2);
        assert_eq!(removed(&plan), ['a']);
        assert_eq!((plan.referenced, plan.recent, plan.needed), (1, 2, 0));
        let none_kept = super::plan(entries(), &keys(""), &Held::default(), 0);
        assert_eq!(removed(&none_kept), ['d', 'b', 'c', 'a'], "newest first");
    }

    #[test]
    fn a_parent_a_kept_entry_needs_is_kept_all_the_way_down() {
        // a <- b <- c: c is referenced; b and a are old and unreferenced, but c's overlay
        // needs b's disk, and b's needs a's.
        let plan = plan(
            vec![
                candidate('a', 1, None),
                candidate('b', 2, Some('a')),
                candidate('c', 3, Some('b')),
                candidate('x', 4, None),
            ],
            &keys("c"),
            &Held::default(),
            0,
        );
        assert_eq!(removed(&plan), ['x']);
        assert_eq!(plan.needed, 2);
    }

    #[test]
    fn a_parent_only_a_removed_entry_needs_is_removed() {
        // Nothing keeps y, so its parent p goes with it; q stays as the one recent entry.
        let plan = plan(
            vec![
                candidate('p', 1, None),
                candidate('y', 2, Some('p')),
                candidate('q', 3, None),
            ],
            &keys(""),
            &Held::default(),
            1,
        );
        assert_eq!(removed(&plan), ['y', 'p']);
        assert_eq!((plan.recent, plan.needed), (1, 0));
    }

    #[test]
    fn a_recent_entry_keeps_its_parent_even_past_keep_recent() {
        let plan = plan(
            vec![candidate('p', 1, None), candidate('y', 2, Some('p'))],
            &keys(""),
            &Held::default(),
            1,
        );
        assert!(plan.remove.is_empty(), "{:?}", removed(&plan));
        assert_eq!((plan.recent, plan.needed), (1, 1));
    }

    #[test]
    fn what_a_running_command_holds_or_made_since_it_began_is_kept_with_its_parents() {
        // b is leased (and needs a); c was committed after the oldest lease began; d is old.
        let held = Held {
            keys: keys("b"),
            since: Some(50),
        };
        let plan = plan(
            vec![
                candidate('a', 1, None),
                candidate('b', 2, Some('a')),
                candidate('c', 60, None),
                candidate('d', 3, None),
            ],
            &keys(""),
            &held,
            0,
        );
        assert_eq!(removed(&plan), ['d']);
        assert_eq!((plan.held, plan.needed), (2, 1));
    }
}
