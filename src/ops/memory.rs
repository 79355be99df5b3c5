//! What a machine's services hold in memory, read from /proc in one pass.
//!
//! A service is a process group of its own (state.rs), so its memory is that of every process
//! whose group it leads: RSS (resident pages, shared ones counted in each process that maps them)
//! and PSS (each shared page divided among the processes sharing it, so PSS adds up across
//! services where RSS does not).

use std::collections::HashMap;

use serde::Serialize;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub processes: u32,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
}

impl Memory {
    pub fn add(&mut self, other: Memory) {
        self.processes += other.processes;
        self.rss_bytes += other.rss_bytes;
        self.pss_bytes += other.pss_bytes;
    }
}

/// The memory of each of `groups` that still has a process. A process that ends during the pass
/// or whose files cannot be read is left out.
pub fn of_groups(groups: &[i32]) -> HashMap<i32, Memory> {
    let mut out: HashMap<i32, Memory> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(group) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| process_group(&stat))
        else {
            continue;
        };
        if !groups.contains(&group) {
            continue;
        }
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let (rss_bytes, pss_bytes) = resident(&rollup);
        out.entry(group).or_default().add(Memory {
            processes: 1,
            rss_bytes,
            pss_bytes,
        });
    }
    out
}

/// The process group in /proc/PID/stat: the third field after the command name, which is in
/// parentheses and may itself hold spaces and parentheses (hence the last `)`).
fn process_group(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// (RSS, PSS) in bytes from /proc/PID/smaps_rollup, whose figures are in kB.
fn resident(rollup: &str) -> (u64, u64) {
    let field = |name: &str| {
        rollup
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("Rss:"), field("Pss:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_read_after_a_command_name_holding_parentheses() {
        let stat = "4242 (odd) (name) S 1 4240 4240 0 -1 4194560 103 0 0 0";
        assert_eq!(process_group(stat), Some(4240));
        assert_eq!(process_group("4242 (truncated"), None);
    }

    #[test]
    fn rss_and_pss_come_from_their_own_lines() {
        let rollup = "55d0-7ffc ---p 00000000 00:00 0  [rollup]\n\
                      Rss:                3072 kB\n\
                      Pss:                1025 kB\n\
                      Pss_Anon:            512 kB\n";
        assert_eq!(resident(rollup), (3072 * 1024, 1025 * 1024));
        assert_eq!(resident(""), (0, 0));
    }

    #[test]
    fn a_running_group_is_found_with_its_memory_and_an_ended_one_is_not() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let group = child.id() as i32;
        let found = of_groups(&[group]);
        child.kill().unwrap();
        child.wait().unwrap();
        let memory = found[&group];
        assert_eq!(memory.processes, 1);
        assert!(
            memory.rss_bytes > 0 && memory.pss_bytes <= memory.rss_bytes,
            "{memory:?}"
        );
        assert!(of_groups(&[group]).is_empty());
    }
}
