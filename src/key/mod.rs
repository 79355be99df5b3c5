//! Stage keys: the canonical encoding of everything that can change what a stage produces, and
//! its sha256. See docs/hashing.md for the rule, which this module is the only implementation of.

pub mod digest;
pub mod explain;
pub mod fingerprint;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::spec::model::{Environment, Machine, Snapshot, Stage};
use crate::spec::template;
use digest::sha256_bytes;
use fingerprint::FingerprintCache;

/// Bumped whenever the encoding or the meaning of a field changes: every key changes with it.
pub const FORMAT_VERSION: u32 = 1;

/// Everything a stage key is computed from. Serialized as compact JSON with fields in this order
/// and maps sorted, which makes the encoding canonical; secrets never appear here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMaterial {
    pub format: u32,
    pub backend: String,
    pub base: String,
    pub parent: Option<String>,
    /// Keys of stages of other machines this one waits for, by "machine.stage".
    pub after: BTreeMap<String, String>,
    pub steps: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
    /// Input path -> "mode:sha256" (files), "link:target", "dir:mode".
    pub inputs: BTreeMap<String, String>,
    /// Template path -> sha256 of the rendered text.
    pub templates: BTreeMap<String, String>,
    /// Source name -> its pin (src/spec/lock.rs): a file's sha256, `git COMMIT` for a git
    /// tree, `unlocked` for a floating source not in the lock file (never built).
    pub sources: BTreeMap<String, String>,
    /// `running` for a stage that keeps its VM's memory; absent otherwise, so that the keys of
    /// every other stage are those they had before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

impl KeyMaterial {
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).expect("key material serializes");
        let mut bytes = b"envbuild-stage-key\n".to_vec();
        bytes.extend_from_slice(&json);
        sha256_bytes(&bytes)
    }
}

/// A stage with its key, as the planner sees it.
#[derive(Debug, Clone)]
pub struct StageKey {
    pub machine: String,
    pub stage: String,
    pub key: String,
    pub material: KeyMaterial,
}

/// What a machine's backend adds to its base digest (`Backend::base_material`), one line each.
pub type BackendMaterial<'a> = &'a dyn Fn(&Machine) -> Vec<String>;

/// Computes the keys of every stage of `env`, machines in dependency order.
pub fn stage_keys(
    env: &Environment,
    cache: &FingerprintCache,
    backend_material: BackendMaterial,
) -> Result<Vec<StageKey>> {
    let mut keys: Vec<StageKey> = Vec::new();
    for machine in &env.machines {
        let base = base_digest(machine, cache, backend_material)?;
        let mut parent = None;
        for stage in &machine.stages {
            let mut after = BTreeMap::new();
            for (m, s) in &stage.after {
                let dep = keys
                    .iter()
                    .find(|k| k.machine == *m && k.stage == *s)
                    .expect("spec ordered machines by their dependencies");
                after.insert(format!("{m}.{s}"), dep.key.clone());
            }
            let material = KeyMaterial {
                format: FORMAT_VERSION,
                backend: machine.backend.as_str().to_string(),
                base: base.clone(),
                parent: parent.clone(),
                after,
                steps: stage.steps_template.clone(),
                env: stage.env_template.clone(),
                vars: stage.vars.clone(),
                inputs: input_digests(stage, cache)?,
                templates: rendered_templates(stage)?
                    .into_iter()
                    .map(|(path, text)| (path, sha256_bytes(text.as_bytes())))
                    .collect(),
                sources: stage
                    .sources
                    .iter()
                    .map(|s| (s.name.clone(), source_pin(s)))
                    .collect(),
                snapshot: (stage.snapshot == Snapshot::Running).then(|| "running".to_string()),
            };
            let key = material.key();
            parent = Some(key.clone());
            keys.push(StageKey {
                machine: machine.name.clone(),
                stage: stage.name.clone(),
                key,
                material,
            });
        }
    }
    Ok(keys)
}

/// What a source adds to its stage's key: the locked value, never the branch or tag it follows.
fn source_pin(source: &crate::spec::model::Source) -> String {
    use crate::spec::model::Origin;
    match (&source.origin, &source.pin) {
        (_, None) => "unlocked".to_string(),
        (Origin::Url { .. }, Some(sha256)) => sha256.clone(),
        (Origin::Git { .. }, Some(commit)) => format!("git {commit}"),
        (Origin::Apt { .. }, Some(pins)) => format!("apt {pins}"),
    }
}

/// The base digest: the backend kind, the pinned image, what the backend adds (its disk layout,
/// the recipes of what it puts on a base image), and the bytes of each host tool.
fn base_digest(
    machine: &Machine,
    cache: &FingerprintCache,
    backend_material: BackendMaterial,
) -> Result<String> {
    let mut text = format!("backend={}\n", machine.backend.as_str());
    if let Some(image) = &machine.base.image {
        text.push_str(&format!("image={}\n", image.sha256));
    }
    for line in backend_material(machine) {
        text.push_str(&line);
        text.push('\n');
    }
    for tool in &machine.base.host_tools {
        let resolved = std::fs::canonicalize(tool).map_err(|_| Error::MissingTool {
            machine: machine.name.clone(),
            what: format!("host tool {}", tool.display()),
            fix: format!(
                "install the package that provides {} (see the machine's `requires`)",
                tool.display()
            ),
        })?;
        let meta =
            std::fs::metadata(&resolved).ctx(|| format!("reading {}", resolved.display()))?;
        text.push_str(&format!(
            "tool={}={}\n",
            resolved.display(),
            cache.digest(&resolved, &meta)?
        ));
    }
    Ok(sha256_bytes(text.as_bytes()))
}

fn input_digests(stage: &Stage, cache: &FingerprintCache) -> Result<BTreeMap<String, String>> {
    let mut digests = BTreeMap::new();
    let mut hash = |path: &Path, meta: &std::fs::Metadata| cache.digest(path, meta);
    for input in &stage.inputs {
        // Where the input leads (the spec followed every link on the way): a link named as an
        // input is its target's content, not the link.
        let path = &input.source;
        let meta = std::fs::symlink_metadata(path).ctx(|| format!("reading {}", path.display()))?;
        digests.insert(
            input.name.clone(),
            input_fingerprint(path, &meta, &mut hash)?,
        );
        if meta.is_dir() {
            digest::walk(path, &mut |relative, full, meta| {
                let fingerprint = input_fingerprint(full, meta, &mut hash)?;
                digests.insert(format!("{}/{relative}", input.name), fingerprint);
                Ok(())
            })?;
        }
    }
    Ok(digests)
}

/// What identifies one input file, link or folder in a key (docs/hashing.md): "MODE:SHA256",
/// "link:TARGET" or "dir:MODE", the mode in octal without the file type.
fn input_fingerprint(
    path: &Path,
    meta: &std::fs::Metadata,
    hash: &mut dyn FnMut(&Path, &std::fs::Metadata) -> Result<String>,
) -> Result<String> {
    let mode = meta.permissions().mode() & 0o7777;
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        let target = std::fs::read_link(path).ctx(|| format!("reading link {}", path.display()))?;
        Ok(format!("link:{}", target.to_string_lossy()))
    } else if file_type.is_dir() {
        Ok(format!("dir:{mode:o}"))
    } else if file_type.is_file() {
        Ok(format!("{mode:o}:{}", hash(path, meta)?))
    } else {
        Err(Error::Input(format!(
            "{} is neither a file, a folder nor a link (a socket or device?); inputs hold only those",
            path.display()
        )))
    }
}

/// Renders a stage's templates with its vars: (relative path, text).
pub fn rendered_templates(stage: &Stage) -> Result<Vec<(String, String)>> {
    stage
        .templates
        .iter()
        .map(|template| {
            let path = &template.source;
            let text = std::fs::read_to_string(path)
                .ctx(|| format!("reading template {}", path.display()))?;
            let rendered =
                template::render(&text, |n| stage.vars.get(n).cloned()).map_err(|e| {
                    Error::spec(crate::error::Location::at(path, &text, e.offset), e.message)
                })?;
            Ok((template.name.clone(), rendered))
        })
        .collect()
}
