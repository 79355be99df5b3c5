//! The rolling-upgrade test harness: flows, phases, probes, resources, failure policies.

pub mod flow;
pub mod probe;
pub mod stats;
