//! Where environments are: the environments folder and the names of the specs in it.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Finds the environments folder: the flag or ENVBUILD_ENVS if given, else the nearest
/// `environments/` in the current directory or one of its parents (as cargo finds Cargo.toml).
pub fn find_envs_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        if dir.is_dir() {
            return Ok(dir.to_path_buf());
        }
        return Err(Error::Input(format!(
            "environments folder {} does not exist.\n  fix: pass an existing folder with --envs or ENVBUILD_ENVS",
            dir.display()
        )));
    }
    let cwd = std::env::current_dir().ctx(|| "reading the current directory".into())?;
    for dir in cwd.ancestors() {
        let candidate = dir.join("environments");
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    Err(Error::Input(format!(
        "no environments/ folder in {} or any parent.\n  fix: run envbuild from a project with an environments/ folder, or pass --envs DIR",
        cwd.display()
    )))
}

/// Names of the environments in `dir` (every `*.toml`), sorted.
pub fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let path = entry.ctx(|| format!("reading {}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "toml")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}
