//! Typed errors and the exit-code contract.
//!
//! Every error has a kind, and every kind one exit code, in [`ExitCode`] and [`Error::exit_code`]
//! only: *bad input* (2: a broken spec, an unknown name, a bad flag, a missing host tool, a
//! hostile archive), a *failure of the work* (1: a step exited non-zero, a service never became
//! ready, a remote cache could not be reached) or an *abort* (130: SIGINT or SIGTERM, clean-up
//! ran). `main` renders the one paragraph a person reads (the `Display` of the error, with its
//! "fix:" line rendered here); nothing else prints errors.

use std::path::{Path, PathBuf};

/// The process exit codes of envbuild, the one table (README, docs/harness.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Success (test: passed).
    Success = 0,
    /// The work failed: a step, a service, a check, a network or remote failure (test: the
    /// upgrade failed).
    Failed = 1,
    /// Bad input: a spec, an unknown name, a bad flag, a missing host tool, a rejected archive.
    BadInput = 2,
    /// `test` only: an infrastructure failure or an incomplete run.
    #[allow(dead_code)] // the test verdict (src/harness) maps to it; listed here with the rest
    Incomplete = 3,
    /// SIGINT or SIGTERM: clean-up ran, nothing is "failed".
    Aborted = 130,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// A place in a source file, for errors that point at what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

impl Location {
    /// Turns a byte offset in `source` into a 1-based line and column.
    pub fn at(file: &Path, source: &str, offset: usize) -> Self {
        let offset = offset.min(source.len());
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = source[line_start..offset].chars().count() + 1;
        Location {
            file: file.to_path_buf(),
            line,
            column,
        }
    }
}

/// A stage whose step did not exit 0: what ran, why it ended, and the end of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageFailure {
    /// `env/machine/stage`.
    pub stage: String,
    /// 1-based number of the step that failed.
    pub step: usize,
    /// The first line of that step.
    pub command: String,
    /// "exited with status 3", "timed out after 60s", "was interrupted".
    pub why: String,
    /// The last lines of the log.
    pub tail: String,
    /// The full log, kept in the machine's state folder.
    pub log: PathBuf,
}

impl std::fmt::Display for StageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stage {} failed: step {} `{}` {}.\n  last lines:\n{}\n  full log: {}\n  Nothing was cached for this stage; earlier stages stay cached.",
            self.stage,
            self.step,
            self.command,
            self.why,
            self.tail,
            self.log.display()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec problem with a precise place.
    #[error("{location}: {message}")]
    Spec { location: Location, message: String },

    /// Bad input without a source position (unknown environment, bad `--var`, corrupt archive...).
    #[error("{0}")]
    Input(String),

    /// A host tool the environment needs is missing.
    #[error(
        "{what} is needed by machine `{machine}` but was not found on this host.{}",
        fix_line(fix)
    )]
    MissingTool {
        machine: String,
        what: String,
        fix: String,
    },

    /// The work itself failed: a step, a service, a check.
    #[error("{0}")]
    Failed(String),

    /// A stage's step failed.
    #[error("{0}")]
    Stage(Box<StageFailure>),

    /// A remote cache (or another server) could not be reached or answered out of protocol.
    #[error("{0}")]
    Remote(String),

    /// SIGINT or SIGTERM stopped the work; clean-up ran.
    #[error("{0}")]
    Aborted(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// Any error, with what a person can do about it.
    #[error("{error}{}", fix_line(fix))]
    Fix { error: Box<Error>, fix: String },
}

/// How every "fix:" hint reads, under the error it belongs to.
fn fix_line(fix: &str) -> String {
    format!("\n  fix: {fix}")
}

impl Error {
    /// The exit code of this error: the one mapping from error kinds to [`ExitCode`].
    pub fn exit(&self) -> ExitCode {
        match self {
            Error::Spec { .. } | Error::Input(_) | Error::MissingTool { .. } => ExitCode::BadInput,
            Error::Failed(_) | Error::Stage(_) | Error::Remote(_) | Error::Io { .. } => {
                ExitCode::Failed
            }
            Error::Aborted(_) => ExitCode::Aborted,
            Error::Fix { error, .. } => error.exit(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.exit().code()
    }

    pub fn spec(location: Location, message: impl Into<String>) -> Self {
        Error::Spec {
            location,
            message: message.into(),
        }
    }

    /// Adds the hint a person can act on ("fix: ..." under the message).
    pub fn fix(self, fix: impl Into<String>) -> Self {
        Error::Fix {
            error: Box::new(self),
            fix: fix.into(),
        }
    }

    /// Bad input with its fix.
    pub fn input(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Input(message.into()).fix(fix)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a human context ("reading /x/y") to io errors.
pub trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<(Error, i32)> {
        let io = std::io::Error::other("disk on fire");
        vec![
            (
                Error::spec(Location::at(Path::new("e.toml"), "x", 0), "bad"),
                2,
            ),
            (Error::Input("unknown environment".into()), 2),
            (
                Error::MissingTool {
                    machine: "m".into(),
                    what: "program `virsh`".into(),
                    fix: "apt-get install libvirt-clients".into(),
                },
                2,
            ),
            (Error::Failed("a service never became ready".into()), 1),
            (
                Error::Stage(Box::new(StageFailure {
                    stage: "e/m/s".into(),
                    step: 1,
                    command: "false".into(),
                    why: "exited with status 1".into(),
                    tail: String::new(),
                    log: PathBuf::from("/x.log"),
                })),
                1,
            ),
            (Error::Remote("cannot reach http://127.0.0.1:1/".into()), 1),
            (Error::Aborted("interrupted".into()), 130),
            (
                Error::Io {
                    context: "writing x".into(),
                    source: io,
                },
                1,
            ),
        ]
    }

    #[test]
    fn every_kind_has_its_exit_code_and_a_fix_keeps_it() {
        for (error, code) in every_kind() {
            let shown = error.to_string();
            assert_eq!(error.exit_code(), code, "{shown}");
            let fixed = error.fix("do this");
            assert_eq!(fixed.exit_code(), code, "{shown}");
            assert!(fixed.to_string().ends_with("\n  fix: do this"), "{fixed}");
        }
    }

    #[test]
    fn the_exit_code_table_is_the_documented_one() {
        let table = [
            ExitCode::Success,
            ExitCode::Failed,
            ExitCode::BadInput,
            ExitCode::Incomplete,
            ExitCode::Aborted,
        ]
        .map(ExitCode::code);
        assert_eq!(table, [0, 1, 2, 3, 130]);
    }

    #[test]
    fn a_missing_tool_renders_its_fix_like_every_other_hint() {
        let error = Error::MissingTool {
            machine: "box".into(),
            what: "program `virsh`".into(),
            fix: "apt-get install libvirt-clients".into(),
        };
        assert_eq!(
            error.to_string(),
            "program `virsh` is needed by machine `box` but was not found on this host.\n  fix: apt-get install libvirt-clients"
        );
    }
}
