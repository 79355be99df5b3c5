//! `runs` and `report --history`: the recorded runs of the results history (src/history), as
//! lines and as one page.

use std::path::{Path, PathBuf};

use crate::engine::Workspace;
use crate::error::{Error, IoContext, Result};
use crate::history::{History, RecordedRun, RunLine};
use crate::report::html::history_page;

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
