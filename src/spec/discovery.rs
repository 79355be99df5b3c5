//! The environments of a folder: the names of the specs in it (the folder itself is found by
//! src/settings.rs).

use std::path::Path;

use crate::error::{IoContext, Result};

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
