//! The results history: the summary of every `envbuild test` run, kept in a SQLite database in
//! the state folder, so that runs can be listed (`envbuild runs`) and compared (`envbuild report
//! --history`, and the "vs previous" section of each report.html).
//!
//! ```text
//! STATE/history.sqlite        (or --history-file) one table, `runs`: id, env, flow, started, verdict, run folder,
//!                             and the whole summary.json of the run
//! STATE/history.sqlite.lock   held while a corrupt history is set aside
//! ```
//!
//! Every figure a listing shows is computed from the stored summary (see [`RunLine`]), so the
//! table has only the columns runs are looked up by. Writers take SQLite's write lock at once
//! (`BEGIN IMMEDIATE`) and wait for one another, so two runs that end together are both recorded.
//! A run records whatever verdict it was given: an aborted run is `aborted`, never `passed`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, params};
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::harness::summary::RunSummary;
use crate::harness::verdict::Verdict;
use crate::store::lock::FileLock;
use crate::ui::Progress;

/// `PRAGMA user_version` of the schema below.
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    env TEXT NOT NULL,
    flow TEXT NOT NULL,
    started TEXT NOT NULL,
    verdict TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX runs_by_env_flow ON runs (env, flow, id);";
/// How long a writer waits for another to finish its transaction (each holds it for one insert).
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// An open results history.
pub struct History {
    connection: Connection,
    path: PathBuf,
}

/// One recorded run.
#[derive(Debug, Clone)]
pub struct RecordedRun {
    pub id: i64,
    pub run_dir: String,
    pub summary: RunSummary,
}

/// What `envbuild runs` shows of a run (and prints with `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunLine {
    pub id: i64,
    pub env: String,
    pub flow: String,
    pub started: String,
    pub duration_s: f64,
    pub verdict: Verdict,
    pub from_version: String,
    pub to_version: String,
    /// The probe with the lowest uptime, and that uptime; `None` when no probe ran.
    pub worst_probe: Option<String>,
    pub worst_uptime_pct: Option<f64>,
    /// Down time summed over every probe.
    pub down_time_s: f64,
    /// Stages that came from the store, of `stages`.
    pub cache_hits: usize,
    pub stages: usize,
    pub run_dir: String,
}

impl RecordedRun {
    pub fn line(&self) -> RunLine {
        let s = &self.summary;
        let worst = s
            .probes
            .iter()
            .filter(|p| p.total > 0)
            .min_by(|a, b| a.uptime_pct.total_cmp(&b.uptime_pct));
        RunLine {
            id: self.id,
            env: s.env.clone(),
            flow: s.flow.clone(),
            started: s.started.clone(),
            duration_s: s.duration_s,
            verdict: s.verdict,
            from_version: s.from_version.clone(),
            to_version: s.to_version.clone(),
            worst_probe: worst.map(|p| p.probe.clone()),
            worst_uptime_pct: worst.map(|p| p.uptime_pct),
            down_time_s: s.probes.iter().map(|p| p.down_time_ms).sum::<u64>() as f64 / 1000.0,
            cache_hits: s.cache.iter().filter(|u| u.came_from_store()).count(),
            stages: s.cache.len(),
            run_dir: self.run_dir.clone(),
        }
    }
}

impl History {
    /// Opens the history database `path`, creating it if there is none.
    pub fn open(path: &Path) -> Result<History> {
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .ctx(|| format!("creating the folder of {}", path.display()))?;
        }
        let connection = Connection::open(path).map_err(|e| unreadable(path, &e))?;
        let mut history = History {
            connection,
            path: path.to_path_buf(),
        };
        history.prepare()?;
        Ok(history)
    }

    /// Opens the history database `path` to read it; `None` when no run was ever recorded there.
    pub fn read(path: &Path) -> Result<Option<History>> {
        if !path.exists() {
            return Ok(None);
        }
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| unreadable(path, &e))?;
        let history = History {
            connection,
            path: path.to_path_buf(),
        };
        match history.version()? {
            // An empty file: a history whose first run did not get as far as its table.
            0 => Ok(None),
            version => history.check_version(version).map(|()| Some(history)),
        }
    }

    /// The history for a run that is about to report: a corrupt one is set aside (renamed
    /// `history.sqlite.corrupt-<time>`) with a warning and a new one started; `None`, with a
    /// warning, when there is still none to write to. Never an error: a run reports without it.
    pub fn for_run(path: &Path, progress: &Progress) -> Option<History> {
        let first = match History::open(path) {
            Ok(history) => return Some(history),
            Err(e) if is_corrupt(&e) => e,
            Err(e) => {
                progress.warn(&format!("{e}\n  this run is not recorded in the history"));
                return None;
            }
        };
        let set_aside = || -> Result<History> {
            // One run sets the file aside; a run that waited here finds the new one.
            let _lock = FileLock::acquire(&sibling(path, ".lock"), || {})?;
            match History::open(path) {
                Err(e) if is_corrupt(&e) => {}
                other => return other,
            }
            let stamp = crate::clock::now_rfc3339().replace(':', "");
            let aside = sibling(path, &format!(".corrupt-{stamp}"));
            std::fs::rename(path, &aside).ctx(|| format!("moving {} aside", path.display()))?;
            let journal = sibling(path, "-journal");
            let _ = std::fs::rename(&journal, sibling(&aside, "-journal"));
            progress.warn(&format!(
                "{first}\n  set it aside as {}; a new history starts with this run",
                aside.display()
            ));
            History::open(path)
        };
        set_aside()
            .map_err(|e| progress.warn(&format!("{e}\n  this run is not recorded in the history")))
            .ok()
    }

    /// Creates the table in a new history; checks the schema of an existing one.
    fn prepare(&mut self) -> Result<()> {
        self.connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| unreadable(&self.path, &e))?;
        let version = self.version()?;
        if version != 0 {
            return self.check_version(version);
        }
        let path = self.path.clone();
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| unreadable(&path, &e))?;
        // Another run may have created it while this one waited for the lock.
        let version: i64 = transaction
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| unreadable(&path, &e))?;
        if version == 0 {
            transaction
                .execute_batch(&format!(
                    "{SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};"
                ))
                .map_err(|e| unreadable(&path, &e))?;
        }
        transaction.commit().map_err(|e| unreadable(&path, &e))
    }

    fn version(&self) -> Result<i64> {
        self.connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| unreadable(&self.path, &e))
    }

    fn check_version(&self, version: i64) -> Result<()> {
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        Err(Error::Failed(format!(
            "{}: the results history has schema version {version}; this envbuild reads version {SCHEMA_VERSION}",
            self.path.display()
        ))
        .fix("use the envbuild that wrote it, or move the file aside to start a new history"))
    }

    /// Records a run's summary; returns its id.
    pub fn record(&mut self, summary: &RunSummary, run_dir: &Path) -> Result<i64> {
        let json = serde_json::to_string(summary).map_err(|e| Error::Failed(e.to_string()))?;
        let path = self.path.clone();
        let failed = |e: rusqlite::Error| {
            Error::Failed(format!(
                "{}: recording the run in the results history: {e}",
                path.display()
            ))
        };
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        transaction
            .execute(
                "INSERT INTO runs (env, flow, started, verdict, run_dir, summary) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    summary.env,
                    summary.flow,
                    summary.started,
                    summary.verdict.as_str(),
                    run_dir.display().to_string(),
                    json
                ],
            )
            .map_err(failed)?;
        let id = transaction.last_insert_rowid();
        transaction.commit().map_err(failed)?;
        Ok(id)
    }

    /// The recorded runs, oldest first: every one, or those of `env` (and `flow`).
    pub fn runs(&self, env: Option<&str>, flow: Option<&str>) -> Result<Vec<RecordedRun>> {
        self.select(
            "SELECT id, run_dir, summary FROM runs
             WHERE (?1 IS NULL OR env = ?1) AND (?2 IS NULL OR flow = ?2) ORDER BY id",
            params![env, flow],
        )
    }

    /// The newest recorded run of `env` and `flow`.
    pub fn latest(&self, env: &str, flow: &str) -> Result<Option<RecordedRun>> {
        let mut runs = self.select(
            "SELECT id, run_dir, summary FROM runs WHERE env = ?1 AND flow = ?2
             ORDER BY id DESC LIMIT 1",
            params![env, flow],
        )?;
        Ok(runs.pop())
    }

    fn select(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<RecordedRun>> {
        let rows = || -> rusqlite::Result<Vec<(i64, String, String)>> {
            let mut statement = self.connection.prepare(sql)?;
            let rows =
                statement.query_map(params, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
            rows.collect()
        };
        rows()
            .map_err(|e| unreadable(&self.path, &e))?
            .into_iter()
            .map(|(id, run_dir, json)| {
                let summary = serde_json::from_str(&json).map_err(|e| {
                    Error::Failed(format!(
                        "{}: run {id} of the results history is not a summary this envbuild reads: {e}",
                        self.path.display()
                    ))
                    .fix(format!("its results are still in {run_dir}"))
                })?;
                Ok(RecordedRun {
                    id,
                    run_dir,
                    summary,
                })
            })
            .collect()
    }
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The marker of an unreadable history in an error's message (see [`is_corrupt`]).
const UNREADABLE: &str = "the results history is unreadable";

fn unreadable(path: &Path, e: &rusqlite::Error) -> Error {
    let corrupt = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    );
    if !corrupt {
        return Error::Failed(format!("{}: {e}", path.display()));
    }
    Error::Failed(format!("{}: {UNREADABLE} ({e})", path.display())).fix(format!(
        "move it aside (`mv {0} {0}.bad`); the next `envbuild test` also does so itself and starts a new one. Each run's results stay in its folder",
        path.display()
    ))
}

fn is_corrupt(e: &Error) -> bool {
    e.to_string().contains(UNREADABLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::summary::fixture::run;
    use crate::settings::HISTORY_FILE as FILE;

    #[test]
    fn records_and_reads_back_runs_in_order() {
        let state = tempfile::tempdir().unwrap();
        let (mut summary, _) = run();
        let mut history = History::open(&state.path().join(FILE)).unwrap();
        let first = history.record(&summary, Path::new("/runs/1")).unwrap();
        summary.flow = "other".into();
        let second = history.record(&summary, Path::new("/runs/2")).unwrap();
        assert!(second > first);
        let read = History::read(&state.path().join(FILE)).unwrap().unwrap();
        let all = read.runs(Some("aio-lite"), None).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            [first, second]
        );
        assert_eq!(all[1].summary, summary);
        assert_eq!(read.runs(None, Some("upgrade")).unwrap().len(), 1);
        assert_eq!(
            read.latest("aio-lite", "upgrade").unwrap().unwrap().id,
            first
        );
        assert!(read.runs(Some("elk"), None).unwrap().is_empty());
    }

    #[test]
    fn a_line_has_the_worst_probe_down_time_and_cache_hits() {
        let (summary, _) = run();
        let line = RecordedRun {
            id: 7,
            run_dir: "/r".into(),
            summary,
        }
        .line();
        assert_eq!(line.worst_probe.as_deref(), Some("keystone"));
        assert_eq!(line.worst_uptime_pct, Some(80.0));
        assert_eq!(line.down_time_s, 4.0);
        assert_eq!((line.cache_hits, line.stages), (1, 2));
    }

    #[test]
    fn an_empty_file_has_no_runs_and_a_newer_schema_is_refused() {
        let state = tempfile::tempdir().unwrap();
        std::fs::write(state.path().join(FILE), "").unwrap();
        assert!(History::read(&state.path().join(FILE)).unwrap().is_none());
        let history = History::open(&state.path().join(FILE)).unwrap();
        history
            .connection
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let e = History::read(&state.path().join(FILE))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("schema version 99; this envbuild reads version 1"),
            "{e}"
        );
        assert!(
            History::for_run(
                &state.path().join(FILE),
                &Progress::new(true, Duration::from_secs(30))
            )
            .is_none()
        );
    }

    #[test]
    fn writers_at_once_are_all_recorded() {
        let state = tempfile::tempdir().unwrap();
        let (summary, _) = run();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let mut history = History::open(&state.path().join(FILE)).unwrap();
                    for _ in 0..5 {
                        history.record(&summary, Path::new("/r")).unwrap();
                    }
                });
            }
        });
        let history = History::read(&state.path().join(FILE)).unwrap().unwrap();
        assert_eq!(history.runs(None, None).unwrap().len(), 40);
    }

    #[test]
    fn a_corrupt_history_is_an_error_to_read_and_set_aside_by_a_run() {
        let state = tempfile::tempdir().unwrap();
        std::fs::write(state.path().join(FILE), vec![b'x'; 4096]).unwrap();
        let e = History::read(&state.path().join(FILE)).err().unwrap();
        assert!(is_corrupt(&e), "{e}");
        assert!(e.to_string().contains("fix: move it aside"), "{e}");
        let mut history = History::for_run(
            &state.path().join(FILE),
            &Progress::new(true, Duration::from_secs(30)),
        )
        .unwrap();
        history.record(&run().0, Path::new("/r")).unwrap();
        let names: Vec<String> = std::fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("history.sqlite.corrupt-")),
            "{names:?}"
        );
    }
}
