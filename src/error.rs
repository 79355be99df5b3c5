//! Typed errors and the exit-code contract.
//!
//! Every failure is either *bad input* (exit 2: a broken spec, an unknown var, a missing host tool,
//! a hostile archive) or a *failure of the work* (exit 1: a step exited non-zero, a service never
//! became ready). `main` renders the one paragraph a person reads; nothing else prints errors.

use std::path::{Path, PathBuf};

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
        "{what} is needed by machine `{machine}` but was not found on this host.\n  fix: {fix}"
    )]
    MissingTool {
        machine: String,
        what: String,
        fix: String,
    },

    /// The work itself failed: a step, a service, a check.
    #[error("{0}")]
    Failed(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec { .. } | Error::Input(_) | Error::MissingTool { .. } => 2,
            Error::Failed(_) | Error::Io { .. } => 1,
        }
    }

    pub fn spec(location: Location, message: impl Into<String>) -> Self {
        Error::Spec {
            location,
            message: message.into(),
        }
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
