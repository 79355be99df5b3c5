//! Sources, floating references and the lock file that pins them; the files `envbuild lock`
//! makes.
//!
//! A source is a file (`{ name, url, sha256 }`) or a git tree (`{ name, git, rev }`). A `url`
//! without `sha256`, or a `rev` that is a branch or a tag, floats: `envbuild lock` resolves it
//! once (src/ops/lock.rs) and writes the answer to `environments/ENV.lock`, beside the spec. The
//! loader reads that file back, so the model carries the locked value and the stage key hashes
//! it; a floating source the lock file does not pin has no pin, and `build` refuses it.
//!
//! The lock file is TOML, one table per reference, sorted, so that a diff shows exactly what a
//! relock changed:
//!
//! ```toml
//! version = 1
//! [[git]]
//! url = "https://example.org/repo.git"
//! rev = "main"
//! commit = "0123...(40 hex)"
//! [[url]]
//! url = "https://example.org/file.tar.gz"
//! sha256 = "0123...(64 hex)"
//! ```
//!
//! Entries are keyed by the reference itself (the URL, or the repository and rev), not by the
//! stage that uses it: two stages that name one branch build from one commit.
//!
//! `[[locks]]` in the spec names files `envbuild lock` makes by running a command (e.g. a
//! Python lock file per release). An input that is such a file and is missing is refused with
//! the `envbuild lock` command that makes it.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::model::{LockRecipe, Origin, Source, Var};
use super::raw::{RawEnvironment, RawSource};
use super::{Loader, Scope};
use crate::error::{Error, IoContext, Location, Result};

/// The lock file format; bumped when its meaning changes.
pub const LOCK_VERSION: u32 = 1;

/// What the loader knows about locking while it reads one spec.
pub(super) struct LockContext {
    pub file: PathBuf,
    pub pins: LockFile,
    /// Rendered before the machines, so that a missing input can be matched against them.
    pub recipes: OnceCell<Vec<LockRecipe>>,
    /// True for `envbuild lock`: a missing input that a recipe makes is accepted (it is about
    /// to be made); every other command refuses it with the command that makes it.
    pub making: bool,
    /// The `envbuild lock` command line of this load (its name and `--var` overrides).
    pub command: String,
}

impl LockContext {
    pub fn new(
        spec: &Path,
        name: &str,
        overrides: &[(String, String)],
        making: bool,
    ) -> Result<Self> {
        let file = spec.with_extension("lock");
        Ok(LockContext {
            pins: LockFile::read(&file)?.unwrap_or_default(),
            file,
            recipes: OnceCell::new(),
            making,
            command: lock_command(name, overrides),
        })
    }

    /// The recipe that makes the input `name`, if any.
    pub fn recipe_for(&self, name: &str) -> Option<&LockRecipe> {
        self.recipes.get()?.iter().find(|r| r.file == name)
    }
}

/// `envbuild lock NAME --var ...`: what makes the files a load with these overrides needs.
pub fn lock_command(name: &str, overrides: &[(String, String)]) -> String {
    let mut command = format!("envbuild lock {name}");
    for (var, value) in overrides {
        command.push_str(&format!(" --var {}", shell_word(&format!("{var}={value}"))));
    }
    command
}

/// A word as a POSIX shell reads it back unchanged.
fn shell_word(text: &str) -> String {
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.,/=:+@%".contains(c));
    if plain && !text.is_empty() {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `environments/ENV.lock`, as read or about to be written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    #[serde(default)]
    pub version: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub git: Vec<GitPin>,
    #[serde(default, rename = "url", skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<UrlPin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apt: Vec<AptPin>,
}

/// An apt repository as `envbuild lock` saw it (src/ops/lock.rs): its key's and its Release
/// file's digests (both kept in the store), the Release's `Date`, and where the repository has
/// dated snapshots, the snapshot of the lock's time, which builds use instead of `repo`'s URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptPin {
    pub repo: String,
    pub key: String,
    pub key_sha256: String,
    /// `InRelease` or `Release`: the file read.
    pub release: String,
    pub release_sha256: String,
    pub date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

impl AptPin {
    /// What the stage key hashes and the build checks: "key=SHA release=SHA [snapshot=URL]".
    pub fn pin(&self) -> String {
        let mut text = format!(
            "key={} {}={}",
            self.key_sha256, self.release, self.release_sha256
        );
        if let Some(snapshot) = &self.snapshot {
            text.push_str(&format!(" snapshot={snapshot}"));
        }
        text
    }

    /// The inverse of `pin`: (key sha256, release file, its sha256, snapshot URL).
    pub fn parse_pin(pin: &str) -> Option<(&str, &str, &str, Option<&str>)> {
        let mut words = pin.split(' ');
        let key = words.next()?.strip_prefix("key=")?;
        let (release, sha) = words.next()?.split_once('=')?;
        let snapshot = match words.next() {
            Some(word) => Some(word.strip_prefix("snapshot=")?),
            None => None,
        };
        Some((key, release, sha, snapshot))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitPin {
    pub url: String,
    pub rev: String,
    pub commit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlPin {
    pub url: String,
    pub sha256: String,
}

/// The same shape with positions, to point at a bad entry.
#[derive(Deserialize)]
struct SpannedLock {
    #[serde(default)]
    version: Option<Spanned<u32>>,
    #[serde(default)]
    git: Vec<BTreeMap<String, Spanned<String>>>,
    #[serde(default)]
    url: Vec<BTreeMap<String, Spanned<String>>>,
    #[serde(default)]
    apt: Vec<BTreeMap<String, Spanned<String>>>,
}

/// A full git commit id (what `rev` may pin directly, and what a lock records).
pub fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.chars().all(|c| c.is_ascii_hexdigit())
}

pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit())
}

impl LockFile {
    /// Reads `path`; `None` when there is none. Bad entries are refused at file:line:col.
    pub fn read(path: &Path) -> Result<Option<LockFile>> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        let bad = |offset: usize, message: String| {
            Error::spec(Location::at(path, &text, offset), message)
                .fix("rerun `envbuild lock` to rewrite the lock file (do not edit it by hand)")
        };
        let spanned: SpannedLock = toml::from_str(&text).map_err(|e| {
            bad(
                e.span().map_or(0, |s| s.start),
                e.message().trim().to_string(),
            )
        })?;
        if let Some(version) = &spanned.version
            && *version.get_ref() != LOCK_VERSION
        {
            return Err(bad(
                version.span().start,
                format!(
                    "lock file version {} is not the version this envbuild reads ({LOCK_VERSION})",
                    version.get_ref()
                ),
            ));
        }
        let check = |entries: &[BTreeMap<String, Spanned<String>>],
                     field: &str,
                     ok: fn(&str) -> bool,
                     what: &str| {
            for entry in entries {
                if let Some(value) = entry.get(field)
                    && !ok(value.get_ref())
                {
                    return Err(bad(
                        value.span().start,
                        format!("`{}` is not {what}", value.get_ref()),
                    ));
                }
            }
            Ok(())
        };
        check(
            &spanned.git,
            "commit",
            is_commit,
            "a full commit id (40 hex digits)",
        )?;
        check(
            &spanned.url,
            "sha256",
            is_sha256,
            "a sha256 (64 hex digits)",
        )?;
        for field in ["key_sha256", "release_sha256"] {
            check(&spanned.apt, field, is_sha256, "a sha256 (64 hex digits)")?;
        }
        let lock: LockFile = toml::from_str(&text).map_err(|e| {
            bad(
                e.span().map_or(0, |s| s.start),
                e.message().trim().to_string(),
            )
        })?;
        Ok(Some(lock))
    }

    /// The text of the lock file: a header, then every entry sorted.
    pub fn render(&self, env: &str) -> String {
        let mut sorted = self.clone();
        sorted.version = LOCK_VERSION;
        sorted.git.sort();
        sorted.git.dedup();
        sorted.urls.sort();
        sorted.urls.dedup();
        sorted.apt.sort();
        sorted.apt.dedup();
        format!(
            "# Written by `envbuild lock {env}`: the floating sources of environments/{env}.toml,\n\
             # pinned. Review and commit it beside the spec; rerun the command to update it.\n{}",
            toml::to_string(&sorted).expect("a lock file serializes")
        )
    }

    /// The pin this file records for `origin`.
    pub fn pin_of(&self, origin: &Origin) -> Option<String> {
        match origin {
            Origin::Url { url } => self
                .urls
                .iter()
                .find(|p| p.url == *url)
                .map(|p| p.sha256.clone()),
            Origin::Git { url, rev } => self
                .git
                .iter()
                .find(|p| p.url == *url && p.rev == *rev)
                .map(|p| p.commit.clone()),
            Origin::Apt { repo, key } => self
                .apt
                .iter()
                .find(|p| p.repo == *repo && p.key == *key)
                .map(AptPin::pin),
        }
    }

    /// Why an unpinned git reference is stale rather than new: the file locks another rev of
    /// the same repository.
    pub fn stale_note(&self, origin: &Origin) -> Option<String> {
        let Origin::Git { url, rev } = origin else {
            return None;
        };
        let revs: Vec<&str> = self
            .git
            .iter()
            .filter(|p| p.url == *url && p.rev != *rev)
            .map(|p| p.rev.as_str())
            .collect();
        (!revs.is_empty()).then(|| {
            format!(
                "the lock file pins rev `{}` of this repository, the spec now says `{rev}`",
                revs.join("`, `")
            )
        })
    }

    /// Records `pin` for `origin` (replacing an older one).
    pub fn insert(&mut self, origin: &Origin, pin: &str) {
        match origin {
            Origin::Url { url } => {
                self.urls.retain(|p| p.url != *url);
                self.urls.push(UrlPin {
                    url: url.clone(),
                    sha256: pin.to_string(),
                });
            }
            Origin::Git { url, rev } => {
                self.git.retain(|p| !(p.url == *url && p.rev == *rev));
                self.git.push(GitPin {
                    url: url.clone(),
                    rev: rev.clone(),
                    commit: pin.to_string(),
                });
            }
            // Its entry is written whole by `insert_apt`; a pin kept from the file is there.
            Origin::Apt { .. } => {}
        }
    }

    /// Records a freshly resolved apt repository (replacing an older entry of it).
    pub fn insert_apt(&mut self, pin: AptPin) {
        self.apt
            .retain(|p| !(p.repo == pin.repo && p.key == pin.key));
        self.apt.push(pin);
    }

    /// Keeps only the entries of `origins` (what the spec still uses).
    pub fn retain(&mut self, origins: &BTreeSet<Origin>) {
        self.urls
            .retain(|p| origins.contains(&Origin::Url { url: p.url.clone() }));
        self.git.retain(|p| {
            origins.contains(&Origin::Git {
                url: p.url.clone(),
                rev: p.rev.clone(),
            })
        });
        self.apt.retain(|p| {
            origins.contains(&Origin::Apt {
                repo: p.repo.clone(),
                key: p.key.clone(),
            })
        });
    }

    pub fn is_empty(&self) -> bool {
        self.git.is_empty() && self.urls.is_empty() && self.apt.is_empty()
    }
}

impl Origin {
    /// How the spec names it, for messages.
    pub fn describe(&self) -> String {
        match self {
            Origin::Url { url } => format!("{url} (no sha256)"),
            Origin::Git { url, rev } => format!("rev `{rev}` of {url}"),
            Origin::Apt { repo, .. } => format!("apt repository `{repo}`"),
        }
    }
}

impl Loader<'_> {
    /// One `sources` entry: a pinned or floating file, or a git tree.
    pub(super) fn source(&self, raw: &RawSource) -> Result<Source> {
        let name = raw.name.get_ref();
        if name.contains('/') || name.starts_with('.') || name.is_empty() {
            return self.err(raw.name.span().start, "a source name is a plain file name");
        }
        if let Some(apt) = &raw.apt {
            return self.apt_source(raw, apt);
        }
        if let Some(key) = &raw.key {
            return self.err(
                key.span().start,
                "`key` belongs to an apt source: add `apt = \"URL SUITE [COMPONENT...]\"`",
            );
        }
        let (origin, pin) = match (&raw.url, &raw.git) {
            (Some(url), None) => {
                if raw.rev.is_some() {
                    return self.rev_without_git(raw);
                }
                let scheme = ["https://", "http://", "file://"];
                if !scheme.iter().any(|s| url.get_ref().starts_with(s)) {
                    return self.err(
                        url.span().start,
                        "a source url starts with https://, http:// or file://",
                    );
                }
                let pin = match &raw.sha256 {
                    Some(sha) => {
                        self.check_sha256(sha)?;
                        Some(sha.get_ref().to_lowercase())
                    }
                    None => None,
                };
                let origin = Origin::Url {
                    url: url.get_ref().clone(),
                };
                (origin, pin)
            }
            (None, Some(git)) => {
                if let Some(sha) = &raw.sha256 {
                    return self.err(
                        sha.span().start,
                        "a git source is pinned by its rev (a full commit id) or by the lock file, not by sha256",
                    );
                }
                let scheme = ["https://", "http://", "file://", "ssh://", "git://"];
                if !scheme.iter().any(|s| git.get_ref().starts_with(s)) {
                    return self.err(
                        git.span().start,
                        "a git source url starts with https://, http://, ssh://, git:// or file://",
                    );
                }
                let Some(rev) = &raw.rev else {
                    return self.err(
                        raw.name.span().start,
                        format!(
                            "git source `{name}` needs a `rev`: a branch, a tag or a full commit id"
                        ),
                    );
                };
                let text = rev.get_ref();
                if text.is_empty()
                    || text.starts_with('-')
                    || text.contains("..")
                    || text
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c))
                {
                    return self.err(
                        rev.span().start,
                        format!("`{text}` is not a branch, tag or commit name git accepts"),
                    );
                }
                let pin = is_commit(text).then(|| text.to_lowercase());
                let origin = Origin::Git {
                    url: git.get_ref().clone(),
                    rev: text.clone(),
                };
                (origin, pin)
            }
            (Some(url), Some(_)) => {
                return self.err(
                    url.span().start,
                    "a source has `url` (a file) or `git` (a repository), not both",
                );
            }
            (None, None) => {
                return self.err(
                    raw.name.span().start,
                    format!("source `{name}` needs `url` (+ `sha256`) or `git` + `rev`"),
                );
            }
        };
        let floating = pin.is_none();
        let pin = pin.or_else(|| self.lock.pins.pin_of(&origin));
        Ok(Source {
            name: name.clone(),
            origin,
            pin,
            floating,
        })
    }

    /// An apt repository: always floating, pinned by the lock file alone (its Release changes
    /// with every upload, so no digest could be written in the spec).
    fn apt_source(&self, raw: &RawSource, apt: &Spanned<String>) -> Result<Source> {
        if let Some(other) = [&raw.url, &raw.git, &raw.rev, &raw.sha256]
            .into_iter()
            .flatten()
            .next()
        {
            return self.err(
                other.span().start,
                "an apt source has `apt` and `key` only (`envbuild lock` pins both)",
            );
        }
        let words: Vec<&str> = apt.get_ref().split_whitespace().collect();
        let web = |url: &str| url.starts_with("https://") || url.starts_with("http://");
        if words.len() < 2 || !web(words[0]) || (words[1].ends_with('/') != (words.len() == 2)) {
            return self.err(
                apt.span().start,
                "`apt` is \"URL SUITE COMPONENT...\" (e.g. \"https://deb.debian.org/debian bookworm main\") or a flat repository \"URL DIR/\", with an http(s) URL",
            );
        }
        let Some(key) = raw.key.as_ref().filter(|k| web(k.get_ref())) else {
            return self.err(
                raw.key
                    .as_ref()
                    .map_or(apt.span().start, |k| k.span().start),
                "an apt source needs `key`: the http(s) URL of the repository's signing key",
            );
        };
        let origin = Origin::Apt {
            repo: words.join(" "),
            key: key.get_ref().clone(),
        };
        Ok(Source {
            name: raw.name.get_ref().clone(),
            pin: self.lock.pins.pin_of(&origin),
            origin,
            floating: true,
        })
    }

    fn rev_without_git<T>(&self, raw: &RawSource) -> Result<T> {
        let at = raw.rev.as_ref().map_or(0, |r| r.span().start);
        self.err(
            at,
            "`rev` belongs to a git source: write `git = URL` instead of `url`",
        )
    }

    /// `[[locks]]`: each file relative to the environment's folder, its command shell text.
    pub(super) fn lock_recipes(
        &self,
        raw: &RawEnvironment,
        vars: &BTreeMap<String, Var>,
    ) -> Result<Vec<LockRecipe>> {
        let scope = Scope {
            vars,
            ports: None,
            probe_secrets: None,
        };
        let mut recipes = Vec::new();
        for recipe in &raw.locks {
            let recipe = recipe.get_ref();
            let mut used = BTreeSet::new();
            let file = self.rendered_path(&recipe.file, &scope, &mut used)?;
            let path = Path::new(file.get_ref());
            let clean = !file.get_ref().is_empty()
                && path
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !clean {
                return self.err(
                    recipe.file.span().start,
                    format!(
                        "lock file `{}` must be a relative path inside {} without `..`",
                        file.get_ref(),
                        self.dir.display()
                    ),
                );
            }
            let (command, names) = self.shell_command(&recipe.command, &scope, "a lock command")?;
            used.extend(names);
            let rendered = file.get_ref().clone();
            if recipes.iter().any(|r: &LockRecipe| r.file == rendered) {
                // Two recipes for one file (N and N+1 on the same release): the first makes it.
                continue;
            }
            recipes.push(LockRecipe {
                file: rendered,
                command,
                vars: used
                    .into_iter()
                    .map(|n| {
                        let value = vars[&n].value.clone();
                        (n, value)
                    })
                    .collect(),
            });
        }
        Ok(recipes)
    }
}

/// Writes `lock` to `path` (or removes the file when nothing is left to lock).
pub fn write(path: &Path, env: &str, lock: &LockFile) -> Result<()> {
    if lock.is_empty() {
        if path.exists() {
            std::fs::remove_file(path).ctx(|| format!("removing {}", path.display()))?;
        }
        return Ok(());
    }
    let partial = path.with_extension(format!("lock.{}.part", std::process::id()));
    std::fs::write(&partial, lock.render(env)).ctx(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).ctx(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(rev: &str) -> Origin {
        Origin::Git {
            url: "file:///r".into(),
            rev: rev.into(),
        }
    }

    #[test]
    fn a_lock_file_reads_back_what_it_wrote_in_a_stable_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.lock");
        let mut lock = LockFile::default();
        lock.insert(
            &Origin::Url {
                url: "http://b".into(),
            },
            &"b".repeat(64),
        );
        lock.insert(&origin("v2"), &"2".repeat(40));
        lock.insert(
            &Origin::Url {
                url: "http://a".into(),
            },
            &"a".repeat(64),
        );
        lock.insert(&origin("main"), &"1".repeat(40));
        write(&path, "e", &lock).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.find("http://a").unwrap() < text.find("http://b").unwrap());
        assert!(text.find("\"main\"").unwrap() < text.find("\"v2\"").unwrap());
        let back = LockFile::read(&path).unwrap().unwrap();
        assert_eq!(back.pin_of(&origin("main")), Some("1".repeat(40)));
        assert_eq!(back.render("e"), text);
        assert!(
            back.stale_note(&origin("v3"))
                .unwrap()
                .contains("`main`, `v2`")
        );
        assert_eq!(back.stale_note(&origin("main")).map(|_| ()), Some(()));
        lock.retain(&BTreeSet::new());
        write(&path, "e", &lock).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_bad_commit_in_a_lock_file_is_refused_where_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.lock");
        std::fs::write(
            &path,
            "version = 1\n[[git]]\nurl = \"file:///r\"\nrev = \"main\"\ncommit = \"abc\"\n",
        )
        .unwrap();
        let err = LockFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("e.lock:5:10"), "{err}");
        assert!(err.contains("not a full commit id"), "{err}");
    }

    #[test]
    fn override_words_are_quoted_for_the_shell() {
        assert_eq!(
            shell_word("keystone_version=27.1.0"),
            "keystone_version=27.1.0"
        );
        assert_eq!(shell_word("msg=it's"), r"'msg=it'\''s'");
    }
}
