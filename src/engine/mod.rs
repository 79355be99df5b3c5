//! Plans and runs builds: compute keys, find what the store has, restore the newest cached stage
//! of each machine, run the missing stages and commit each one, then start services.
//!
//! ```text
//! workspace.rs  the places a command works with, opened once
//! plan.rs       what a build would do, and why a stage is not cached
//! build.rs      replay, build and commit the stages of every machine
//! inputs.rs     a stage's inputs folder (inputs, rendered templates, pinned sources)
//! sources.rs    sources fetched once into the store (files by sha256, git commits)
//! services.rs   up and down
//! lock.rs       one lock per environment, held by every run that changes its machines
//! ```

mod build;
mod inputs;
mod lock;
mod plan;
mod services;
pub mod sources;
mod workspace;

pub use build::{Action, BuildReport, build};
pub use lock::{EnvLock, Wait};
pub use plan::plan;
pub use services::{IfUp, down, runtime, up, up_machines};
pub use workspace::{MachineHandle, Workspace};
