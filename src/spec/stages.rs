//! Stages: steps, inputs, templates, sources (src/spec/lock.rs) and the vars they use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::inputs::{self, Origin, Refusal};
use super::model::*;
use super::raw::*;
use super::*;
use crate::error::{Error, Location, Result};

impl Loader<'_> {
    /// An input or template path with its `{{ var }}` placeholders rendered (e.g. a lock file
    /// per version); the vars it names count as used by the stage.
    pub(super) fn rendered_path(
        &self,
        path: &Spanned<String>,
        scope: &Scope,
        used: &mut BTreeSet<String>,
    ) -> Result<Spanned<String>> {
        let names = self.check_placeholders(path, scope)?;
        if names.is_empty() {
            return Ok(path.clone());
        }
        used.extend(names);
        let rendered = template::render(path.get_ref(), |n| {
            scope.vars.get(n).map(|v| v.value.clone())
        })
        .expect("placeholders were validated");
        Ok(Spanned::new(path.span(), rendered))
    }

    /// An input or template path: relative, inside the environment's folder (or, as
    /// `../ENV/PATH`, a sibling environment's) however its links lead, and existing
    /// (src/spec/inputs.rs).
    pub(super) fn relative_input(&self, path: &Spanned<String>, what: &str) -> Result<InputPath> {
        let (folder, p, name) = match inputs::origin(path.get_ref()) {
            None => {
                return self.err(
                    path.span().start,
                    format!(
                        "{what} `{}` must be a relative path inside {} without `..` (or `../ENV/PATH`: a file of the environment folder ENV beside it)",
                        path.get_ref(),
                        self.dir.display()
                    ),
                );
            }
            Some(Origin::Own(p)) => (self.dir.to_path_buf(), p, path.get_ref().clone()),
            Some(Origin::Sibling { env, path: p }) => {
                let own = self.dir.file_name().and_then(|n| n.to_str());
                let placed = format!("{env}/{}", p.display());
                if own == Some(env) {
                    return self.err(
                        path.span().start,
                        format!(
                            "{what} `{}` names this environment's own folder: write it as `{}`",
                            path.get_ref(),
                            p.display()
                        ),
                    );
                }
                if self.dir.join(env).exists() {
                    return self.err(
                        path.span().start,
                        format!(
                            "{what} `{}` would be copied to $ENVBUILD_INPUTS/{placed}, where this environment's own `{env}` goes: name it `{placed}`, or rename one of them",
                            path.get_ref()
                        ),
                    );
                }
                let envs = self.dir.parent().unwrap_or(self.dir);
                (envs.join(env), p, placed)
            }
        };
        let name = name.trim_end_matches('/').to_string();
        let missing = || {
            let error = Error::spec(
                self.at(path.span().start),
                format!(
                    "{what} `{}` does not exist: expected {}",
                    path.get_ref(),
                    folder.join(p).display()
                ),
            );
            match self.lock.recipe_for(&name) {
                // `envbuild lock` is about to make it.
                Some(_) if self.lock.making => Ok(InputPath {
                    name: name.clone(),
                    source: self.dir.join(&name),
                }),
                Some(_) => Err(error.fix(format!(
                    "it is a lock file of the environment's [[locks]]: make it with `{}`, then commit it",
                    self.lock.command
                ))),
                None => Err(error),
            }
        };
        let Ok(root) = folder.canonicalize() else {
            return missing();
        };
        // `inside`: the refusal is about a link inside the input folder, not on the way to it.
        let refused = |refusal: Refusal, inside: bool| {
            let message = match refusal {
                Refusal::LeadsOut { link, target } if inside => format!(
                    "`{}` is a link to {}, which leads out of {what} `{name}`: a link inside an input folder is copied as a link, so it must be a relative link to something inside the folder",
                    link.display(),
                    target.display()
                ),
                Refusal::LeadsOut { link, target } => format!(
                    "{what} `{name}` leads out of the environment's folder {}: `{}` is a link to {}; inputs are copied into the store, so they must stay inside that folder",
                    root.display(),
                    link.display(),
                    target.display()
                ),
                Refusal::TooManyLinks { link } => format!(
                    "{what} `{name}` passes through too many links at `{}` (a loop?)",
                    link.display()
                ),
                Refusal::Special { path } => format!(
                    "`{}` in {what} `{name}` is neither a file, a folder nor a link (a socket or device?); inputs hold only those",
                    path.display()
                ),
            };
            Error::spec(self.at(path.span().start), message).fix(
                "copy what the stage needs into the environment's folder instead of linking to it",
            )
        };
        let source = root.join(inputs::resolve(&root, p).map_err(|r| refused(r, false))?);
        let Ok(meta) = std::fs::metadata(&source) else {
            return missing();
        };
        if meta.is_dir() {
            inputs::check_folder(&source, Path::new(&name)).map_err(|r| refused(r, true))?;
        } else if !meta.is_file() {
            let path = PathBuf::from(&name);
            return Err(refused(Refusal::Special { path }, false));
        }
        Ok(InputPath { name, source })
    }

    pub(super) fn stage(&self, raw: &RawStage, vars: &BTreeMap<String, Var>) -> Result<Stage> {
        self.check_name(&raw.name, "stage")?;
        let scope = Scope {
            vars,
            ports: None,
            probe_secrets: None,
        };
        let mut used = BTreeSet::new();
        for var in &raw.vars {
            if !vars.contains_key(var.get_ref()) {
                let declared: Vec<&str> = vars.keys().map(String::as_str).collect();
                return self.err(
                    var.span().start,
                    format!(
                        "stage uses var `{}` but [vars] does not declare it; declared vars: {}",
                        var.get_ref(),
                        if declared.is_empty() {
                            "(none)".to_string()
                        } else {
                            declared.join(", ")
                        }
                    ),
                );
            }
            used.insert(var.get_ref().clone());
        }
        let mut after = Vec::new();
        for reference in &raw.after {
            match reference.get_ref().split_once('.') {
                Some((m, s)) if !m.is_empty() && !s.is_empty() => {
                    after.push((m.to_string(), s.to_string()))
                }
                _ => {
                    return self.err(
                        reference.span().start,
                        "`after` names a stage of another machine as \"machine.stage\"",
                    );
                }
            }
        }
        let mut inputs = Vec::new();
        for input in &raw.inputs {
            let input = self.rendered_path(input, &scope, &mut used)?;
            inputs.push(self.relative_input(&input, "input")?);
        }
        let mut templates = Vec::new();
        for template in &raw.templates {
            let template = &self.rendered_path(template, &scope, &mut used)?;
            let relative = self.relative_input(template, "template")?;
            used.extend(self.template_file_vars(&relative, template, &scope)?);
            templates.push(relative);
        }
        let mut sources = Vec::new();
        for source in &raw.sources {
            sources.push(self.source(source.get_ref())?);
        }
        let mut env = BTreeMap::new();
        for (key, value) in &raw.env {
            let valid = key
                .get_ref()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid || key.get_ref().starts_with("ENVBUILD_") {
                return self.err(key.span().start, format!("`{}` is not a usable variable name (letters, digits, `_`; ENVBUILD_ is reserved)", key.get_ref()));
            }
            used.extend(self.check_placeholders(value, &scope)?);
            env.insert(key.get_ref().clone(), value.get_ref().clone());
        }
        if raw.steps.is_empty() {
            return self.err(
                raw.name.span().start,
                format!(
                    "stage `{}` has no steps; add steps = [\"...\"]",
                    raw.name.get_ref()
                ),
            );
        }
        let mut steps = Vec::new();
        for (n, step) in raw.steps.iter().enumerate() {
            let what = format!("step {} of stage `{}`", n + 1, raw.name.get_ref());
            let (command, names) = self.shell_command(step, &scope, &what)?;
            used.extend(names);
            steps.push(command);
        }
        let lookup = |n: &str| vars.get(n).map(|v| v.value.clone());
        let render = |s: &str| template::render(s, lookup).expect("placeholders were validated");
        Ok(Stage {
            name: raw.name.get_ref().clone(),
            description: raw.description.clone(),
            after,
            inputs,
            templates,
            sources,
            vars: used
                .into_iter()
                .map(|n| {
                    let v = vars[&n].value.clone();
                    (n, v)
                })
                .collect(),
            env: env.iter().map(|(k, v)| (k.clone(), render(v))).collect(),
            steps,
            env_template: env,
            steps_template: raw.steps.iter().map(|s| s.get_ref().clone()).collect(),
            timeout: self.duration(raw.timeout.as_ref(), DEFAULT_STAGE_TIMEOUT)?,
            snapshot: match raw.snapshot.as_ref() {
                None => Snapshot::Disk,
                Some(s) if s.get_ref() == "disk" => Snapshot::Disk,
                Some(s) if s.get_ref() == "running" => Snapshot::Running,
                Some(s) => {
                    return self.err(
                        s.span().start,
                        format!(
                            "unknown snapshot `{}`; allowed: \"disk\" (the default), \"running\" (a VM's memory too)",
                            s.get_ref()
                        ),
                    );
                }
            },
        })
    }

    /// Vars named by a template file's placeholders; errors point into the template file itself.
    pub(super) fn template_file_vars(
        &self,
        template: &InputPath,
        declared: &Spanned<String>,
        scope: &Scope,
    ) -> Result<Vec<String>> {
        let relative = &template.name;
        // Errors name the template as the spec does; its text is read where that leads.
        let path = self.dir.join(relative);
        if !template.source.is_file() {
            return self.err(
                declared.span().start,
                format!("template `{relative}` must be a file"),
            );
        }
        let text = std::fs::read_to_string(&template.source).map_err(|e| {
            Error::spec(
                self.at(declared.span().start),
                format!("template `{relative}` is not readable UTF-8 text: {e}"),
            )
        })?;
        let found = template::placeholders(&text)
            .map_err(|e| Error::spec(Location::at(&path, &text, e.offset), e.message))?;
        let mut names = Vec::new();
        for placeholder in found {
            if !scope.allows(&placeholder.name) {
                return Err(Error::spec(
                    Location::at(&path, &text, placeholder.offset),
                    format!(
                        "`{{{{ {} }}}}` is not a declared var; allowed: {}",
                        placeholder.name,
                        scope.describe()
                    ),
                ));
            }
            names.push(placeholder.name);
        }
        Ok(names)
    }
}
