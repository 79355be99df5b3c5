//! The rolling-upgrade test harness: flows, phases, probes, resources, failure policies, and the
//! verdict they add up to.

pub mod budget;
pub mod flow;
pub mod probe;
pub mod program;
pub mod record;
pub mod stats;
pub mod summary;
pub mod verdict;
