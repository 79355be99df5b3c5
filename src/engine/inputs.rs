//! A stage's inputs folder: copied inputs, rendered templates and pinned sources (sources.rs).

use std::path::Path;

use super::Workspace;
use crate::error::{IoContext, Result};
use crate::key::{self};
use crate::spec::model::Stage;

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
        let to = dir.join("sources").join(&source.name);
        std::fs::create_dir_all(dir.join("sources")).ctx(|| "creating sources/".into())?;
        super::sources::materialize(&ws.store()?.root, source, &to)?;
    }
    Ok(())
}
