//! What a run recorded as it went: phases with their spans, the stages it used, the counts of
//! the validation tools and the resource checks. The verdict judges these, and the summary holds
//! them beside it.

use serde::{Deserialize, Serialize};

/// A stretch of the run, `[start_ms, end_ms]` in milliseconds since its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Span {
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseStatus {
    Passed,
    Failed,
    /// Not run: an earlier phase failed, or the run was aborted before it.
    Skipped,
    /// Stopped by SIGINT/SIGTERM while it ran.
    Aborted,
}

impl PhaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Passed => "passed",
            PhaseStatus::Failed => "failed",
            PhaseStatus::Skipped => "skipped",
            PhaseStatus::Aborted => "aborted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    pub name: String,
    pub status: PhaseStatus,
    pub duration_s: f64,
    pub attempts: u32,
    /// The last attempt's error.
    pub error: Option<String>,
    /// One span per attempt, in order.
    pub spans: Vec<Span>,
}

impl PhaseResult {
    /// From the start of the first attempt to the end of the last, when the phase ran.
    pub fn span(&self) -> Option<Span> {
        Some(Span {
            start_ms: self.spans.first()?.start_ms,
            end_ms: self.spans.last()?.end_ms,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// Smoke tests before and after the upgrade; `None` when they did not run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Smoke {
    pub before: Option<TestCounts>,
    pub after: Option<TestCounts>,
}

/// A persistent resource (a server, a user, an object...) checked in one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceCheck {
    pub phase: String,
    pub resource: String,
    pub ok: bool,
    pub detail: String,
}

/// Rally's key figures (per scenario durations, success rates) before and after the upgrade, as
/// Rally reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rally {
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// How the build that the run stood on got one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageUse {
    pub machine: String,
    pub stage: String,
    pub key: String,
    /// The engine's action, lowercase: current, restored, cached, reused or built.
    pub action: String,
}

impl StageUse {
    /// The stage came from the store rather than from running its steps.
    pub fn came_from_store(&self) -> bool {
        self.action != "built"
    }
}
