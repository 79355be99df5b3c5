//! A stage's inputs folder: copied inputs, rendered templates and pinned sources.

use std::path::{Path, PathBuf};

use super::Workspace;
use crate::error::{Error, IoContext, Result};
use crate::key::{self};
use crate::spec::model::Stage;
use crate::store::{self, remove_tree};

pub(super) struct RemoveOnDrop(pub(super) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}

/// Copies the stage's inputs, renders its templates and fetches its sources into `dir`.
pub(super) fn prepare_inputs(ws: &Workspace, stage: &Stage, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    for input in &stage.inputs {
        // The spec resolved every link on the way and checked that the input stays inside the
        // environment's folder; links inside an input folder are copied as links.
        let from = &input.source;
        let to = dir.join(&input.name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        }
        if from.is_dir() {
            std::fs::create_dir_all(&to).ctx(|| format!("creating {}", to.display()))?;
            crate::key::digest::walk(from, &mut |relative, full, meta| {
                let out = to.join(relative);
                if meta.is_dir() {
                    std::fs::create_dir_all(&out).ctx(|| format!("creating {}", out.display()))
                } else if meta.file_type().is_symlink() {
                    let target =
                        std::fs::read_link(full).ctx(|| format!("reading {}", full.display()))?;
                    std::os::unix::fs::symlink(target, &out)
                        .ctx(|| format!("creating {}", out.display()))
                } else {
                    std::fs::copy(full, &out)
                        .map(|_| ())
                        .ctx(|| format!("copying {}", full.display()))
                }
            })?;
        } else {
            std::fs::copy(from, &to).ctx(|| format!("copying {}", from.display()))?;
        }
    }
    for (relative, text) in key::rendered_templates(stage)? {
        let to = dir.join(&relative);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&to, text).ctx(|| format!("writing {}", to.display()))?;
    }
    for source in &stage.sources {
        let path = fetch_source(ws, source)?;
        let to = dir.join("sources").join(&source.name);
        std::fs::create_dir_all(dir.join("sources")).ctx(|| "creating sources/".into())?;
        std::fs::copy(&path, &to).ctx(|| format!("copying {}", path.display()))?;
    }
    Ok(())
}

/// A pinned source, downloaded once into the store's sources/ folder and checked by sha256.
fn fetch_source(ws: &Workspace, source: &crate::spec::model::Source) -> Result<PathBuf> {
    let dir = ws.store()?.root.join(store::LAYOUT).join("sources");
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let path = dir.join(&source.sha256);
    if path.is_file() && crate::key::digest::sha256_file(&path)? == source.sha256 {
        return Ok(path);
    }
    let partial = dir.join(format!("{}.{}.part", source.sha256, std::process::id()));
    let _guard = RemoveOnDrop(partial.clone());
    if let Some(local) = source.url.strip_prefix("file://") {
        std::fs::copy(local, &partial).ctx(|| format!("copying source {}", source.url))?;
    } else {
        let curl = crate::process::find_program("curl").ok_or_else(|| {
            Error::input(
                "http(s) sources are downloaded with curl, which is missing.",
                "apt-get install curl",
            )
        })?;
        let ok = std::process::Command::new(curl)
            .args(["-fsSL", "-o"])
            .arg(&partial)
            .arg(&source.url)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(Error::Failed(format!(
                "downloading source {} from {} failed",
                source.name, source.url
            )));
        }
    }
    let got = crate::key::digest::sha256_file(&partial)?;
    if got != source.sha256 {
        return Err(Error::input(
            format!(
                "source {} from {} has sha256 {got}, but the spec pins {}.",
                source.name, source.url, source.sha256
            ),
            "check the URL, or update the pin if the new file is trusted",
        ));
    }
    std::fs::rename(&partial, &path).ctx(|| format!("storing {}", path.display()))?;
    Ok(path)
}
