//! Operations: what one command does, between `cli/` (which parses its arguments and prints the
//! answer) and the engine, store, remote caches and backends, as cargo's commands call its ops.
//!
//! ```text
//! build.rs   build (and push what was built), up, down
//! cache.rs   ls, verify, gc, export, push, pull
//! history.rs the recorded runs: `runs` and `report --history`
//! status.rs  what is built and running, as each machine's backend sees it
//! memory.rs  what a machine's services hold in memory (RSS, PSS), from /proc
//! ssh.rs     the SSH target of a running machine, and an OpenSSH config for an environment
//! doctor.rs  what every backend needs of this host
//! lock.rs    pin floating sources into ENV.lock, make [[locks]] files, refuse unlocked runs
//! ```

pub mod build;
pub mod cache;
pub mod doctor;
pub mod history;
pub mod lock;
pub mod memory;
pub mod ssh;
pub mod status;
