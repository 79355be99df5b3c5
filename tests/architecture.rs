//! The rules of the source layout that a grep can check (docs/design-notes.md, "A house to grow
//! in"): only spec/ and backend/ name kinds of backend, key/ imports nothing from backend/, only
//! settings.rs reads the XDG and HOME variables, and no source file grows past 800 lines.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found the sources in {}", src.display());
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap().display().to_string();
            (relative, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// `file:line: text` of every line of the files `in_scope` selects that contains `needle`.
fn lines_with(needle: &str, in_scope: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for (file, text) in sources() {
        if !in_scope(&file) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if line.contains(needle) {
                found.push(format!("src/{file}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn only_spec_and_backend_name_kinds_of_backend() {
    let found = lines_with("BackendKind::", |file| {
        !file.starts_with("spec/") && !file.starts_with("backend/")
    });
    assert!(
        found.is_empty(),
        "ask the backend (a trait method) instead of matching its kind:\n{}",
        found.join("\n")
    );
}

#[test]
fn key_imports_nothing_from_backend() {
    let found = lines_with("backend::", |file| file.starts_with("key/"));
    assert!(
        found.is_empty(),
        "key/ is below backend/: pass what a backend adds to a key in instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_settings_reads_the_xdg_and_home_variables() {
    let mut found = Vec::new();
    for var in [
        "\"XDG_CACHE_HOME\"",
        "\"XDG_STATE_HOME\"",
        "\"XDG_CONFIG_HOME\"",
        "\"HOME\")",
    ] {
        found.extend(
            lines_with(var, |file| file != "settings.rs")
                .into_iter()
                .filter(|l| {
                    // Setting HOME for a child process is not reading it.
                    !l.contains(".env(")
                }),
        );
    }
    assert!(
        found.is_empty(),
        "resolve defaults once in src/settings.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_source_file_is_longer_than_800_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > MAX_LINES)
        .map(|(file, text)| format!("src/{file}: {} lines", text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "split these where their parts are separate things:\n{}",
        long.join("\n")
    );
}
