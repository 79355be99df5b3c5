//! The results history (src/history) for commands: a `test` run's record (and the run it is
//! compared with), the recorded runs as lines (`runs`) and as one page (`report --history`).

use std::path::{Path, PathBuf};

use crate::engine::Workspace;
use crate::error::{Error, IoContext, Result};
use crate::harness::summary::RunSummary;
use crate::history::{History, RecordedRun, RunLine};
use crate::report::html::history_page;
use crate::ui::Progress;

/// The history of a `test` run that is about to report. It never stops the run from reporting:
/// whatever goes wrong with it is a warning.
pub struct RunHistory<'a> {
    history: Option<History>,
    progress: &'a Progress,
}

impl<'a> RunHistory<'a> {
    pub fn open(ws: &Workspace, progress: &'a Progress) -> RunHistory<'a> {
        RunHistory {
            history: History::for_run(&ws.settings.history, progress),
            progress,
        }
    }

    /// The previous recorded run of the summary's environment and flow.
    pub fn previous(&self, summary: &RunSummary) -> Option<RecordedRun> {
        let history = self.history.as_ref()?;
        history
            .latest(&summary.env, &summary.flow)
            .map_err(|e| self.progress.warn(&e.to_string()))
            .ok()
            .flatten()
    }

    /// Records the run; its id in the history.
    pub fn record(&mut self, summary: &RunSummary, run_dir: &Path) -> Option<i64> {
        let history = self.history.as_mut()?;
        history
            .record(summary, run_dir)
            .map_err(|e| {
                self.progress
                    .warn(&format!("{e}\n  this run is not recorded in the history"))
            })
            .ok()
    }
}

/// The recorded runs (of `env`), oldest first; none when nothing was ever recorded.
fn recorded(ws: &Workspace, env: Option<&str>, flow: Option<&str>) -> Result<Vec<RecordedRun>> {
    match History::read(&ws.settings.history)? {
        Some(history) => history.runs(env, flow),
        None => Ok(Vec::new()),
    }
}

pub fn lines(ws: &Workspace, env: Option<&str>) -> Result<Vec<RunLine>> {
    Ok(recorded(ws, env, None)?
        .iter()
        .map(RecordedRun::line)
        .collect())
}

/// Writes the history page of `env` (and `flow`) to `out` [default: STATE/runs/ENV/history.html];
/// returns where, and how many runs it compares.
pub fn write_page(
    ws: &Workspace,
    env: &str,
    flow: Option<&str>,
    out: Option<&Path>,
) -> Result<(PathBuf, usize)> {
    let runs = recorded(ws, Some(env), flow)?;
    if runs.is_empty() {
        let which = flow.map_or(env.to_string(), |flow| format!("{env} {flow}"));
        return Err(Error::input(
            format!(
                "the results history ({}) has no run of {which}",
                ws.settings.history.display()
            ),
            "`envbuild runs` lists the recorded runs; `envbuild test ENV` records one",
        ));
    }
    let out = out.map_or_else(
        || ws.state.root.join("runs").join(env).join("history.html"),
        Path::to_path_buf,
    );
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&out, history_page(env, &runs)).ctx(|| format!("writing {}", out.display()))?;
    Ok((out, runs.len()))
}
