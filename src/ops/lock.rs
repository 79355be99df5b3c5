//! `envbuild lock [ENV]`: pins every floating source of an environment into its lock file
//! (`environments/ENV.lock`, src/spec/lock.rs) and makes the files its `[[locks]]` name; and
//! the check `build`, `up` and `test` make before they start.
//!
//! A branch or tag becomes the commit `git ls-remote` reports for it; a URL without a digest is
//! downloaded once, into the store (so the build that follows needs no network), and its
//! sha256 recorded. What the lock file already pins stays as it is unless `--update`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;

use serde::Serialize;

use crate::engine::Workspace;
use crate::engine::sources::{self, git, run_git};
use crate::error::{Error, IoContext, Result};
use crate::spec::lock::{AptPin, LockFile, lock_command, write};
use crate::spec::model::{Environment, LockRecipe, Origin};
use crate::spec::{self, var_env_name};
use crate::ui::Progress;

#[derive(Debug, Clone, Copy, Default)]
pub struct LockOptions {
    /// Resolve every floating source again and rerun every recipe.
    pub update: bool,
    /// Change nothing, fetch nothing: refuse (exit 2) when the lock file or a recipe's file is
    /// missing or out of date.
    pub check: bool,
}

/// What `envbuild lock ENV` did.
#[derive(Debug, Serialize)]
pub struct LockReport {
    pub env: String,
    /// The lock file, when the environment has floating sources.
    pub lock_file: Option<String>,
    /// Each floating reference and what it is pinned to.
    pub pins: Vec<PinReport>,
    /// The files of `[[locks]]` this run made.
    pub made: Vec<String>,
    /// True when the lock file's text changed.
    pub changed: bool,
}

#[derive(Debug, Serialize)]
pub struct PinReport {
    pub reference: String,
    pub pin: String,
    /// Resolved by this run (else kept from the lock file).
    pub resolved: bool,
}

/// Locks environment `name` (with `--var` overrides, which choose the recipes' files).
pub fn lock(
    ws: &Workspace,
    name: &str,
    overrides: &[(String, String)],
    options: LockOptions,
    progress: &Progress,
) -> Result<LockReport> {
    let env = spec::load_for_lock(ws.envs()?, name, overrides)?;
    let env_dir = ws.envs()?.join(name);
    let mut made = Vec::new();
    for recipe in &env.lock_recipes {
        let exists = env_dir.join(&recipe.file).is_file();
        if exists && !options.update {
            continue;
        }
        if options.check {
            return Err(Error::input(
                format!(
                    "{name}: {} does not exist",
                    env_dir.join(&recipe.file).display()
                ),
                format!("make it with `{}`", lock_command(name, overrides)),
            ));
        }
        progress.note(&format!(
            "{name}: making {} (its [[locks]] command)",
            recipe.file
        ));
        run_recipe(&env_dir, recipe)?;
        made.push(recipe.file.clone());
    }

    let before = LockFile::read(&env.lock_file)?.unwrap_or_default();
    let mut pins = before.clone();
    let origins = floating_origins(&env);
    let mut report = Vec::new();
    for origin in &origins {
        let known = before.pin_of(origin);
        let (pin, resolved) = match known {
            Some(pin) if !options.update => (pin, false),
            _ if options.check => return Err(unlocked_error(&env, &before)),
            _ => {
                progress.note(&format!("{name}: resolving {}", origin.describe()));
                let pin = match origin {
                    Origin::Apt { repo, key } => {
                        let apt = resolve_apt(&ws.store()?.root, repo, key)?;
                        let pin = apt.pin();
                        pins.insert_apt(apt);
                        pin
                    }
                    _ => resolve(ws, origin)?,
                };
                (pin, true)
            }
        };
        pins.insert(origin, &pin);
        report.push(PinReport {
            reference: origin.describe(),
            pin,
            resolved,
        });
    }
    pins.retain(&origins);
    let changed = pins.render(name) != before.render(name);
    if changed && options.check {
        return Err(Error::input(
            format!(
                "{} pins references the spec no longer uses",
                env.lock_file.display()
            ),
            format!("rewrite it with `envbuild lock {name}`"),
        ));
    }
    if changed {
        write(&env.lock_file, name, &pins)?;
    }
    // What every other command will now load: it must load.
    spec::load(ws.envs()?, name, overrides)?;
    Ok(LockReport {
        env: name.to_string(),
        lock_file: (!pins.is_empty()).then(|| env.lock_file.display().to_string()),
        pins: report,
        made,
        changed,
    })
}

/// Every floating reference of `env`, each once.
fn floating_origins(env: &Environment) -> BTreeSet<Origin> {
    env.machines
        .iter()
        .flat_map(|m| &m.stages)
        .flat_map(|s| &s.sources)
        .filter(|s| s.floating)
        .map(|s| s.origin.clone())
        .collect()
}

/// Runs one `[[locks]]` command in the environment's folder; it must write its file.
fn run_recipe(env_dir: &Path, recipe: &LockRecipe) -> Result<()> {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", &recipe.command])
        .current_dir(env_dir)
        .stdin(Stdio::null())
        // envbuild's stdout is its answer; the recipe's chatter goes to stderr.
        .stdout(Stdio::from(std::io::stderr()));
    for (var, value) in &recipe.vars {
        command.env(var_env_name(var), value);
    }
    let status = command
        .status()
        .ctx(|| format!("running the lock command of {}", recipe.file))?;
    if !status.success() {
        return Err(Error::Failed(format!(
            "the [[locks]] command of {} failed ({status})",
            recipe.file
        )));
    }
    if !env_dir.join(&recipe.file).is_file() {
        return Err(Error::Failed(format!(
            "the [[locks]] command of {} succeeded but did not write it",
            recipe.file
        )));
    }
    Ok(())
}

/// What a floating reference stands for now: a commit id, or a sha256 (the file is kept in
/// the store).
pub fn resolve(ws: &Workspace, origin: &Origin) -> Result<String> {
    match origin {
        Origin::Url { url } => sources::download_into_store(&ws.store()?.root, url, |_| Ok(())),
        Origin::Git { url, rev } => resolve_rev(url, rev),
        Origin::Apt { repo, key } => Ok(resolve_apt(&ws.store()?.root, repo, key)?.pin()),
    }
}

/// An apt repository now: its signing key and its InRelease (else Release) downloaded into the
/// store, the index's `Date`, and the dated snapshot of this moment where the repository has
/// them (Debian's archives on snapshot.debian.org).
fn resolve_apt(store_root: &Path, repo: &str, key: &str) -> Result<AptPin> {
    let key_sha256 = sources::download_into_store(store_root, key, |_| Ok(()))?;
    let dir = sources::apt_release_dir(repo);
    let (release, release_sha256) = ["InRelease", "Release"]
        .iter()
        .find_map(|file| {
            sources::download_into_store(store_root, &format!("{dir}{file}"), |_| Ok(()))
                .ok()
                .map(|sha| (file.to_string(), sha))
        })
        .ok_or_else(|| {
            Error::input(
                format!("apt repository `{repo}`: neither {dir}InRelease nor {dir}Release could be downloaded"),
                "check the repository line (\"URL SUITE COMPONENT...\", or \"URL DIR/\" for a flat repository) and that this host reaches it",
            )
        })?;
    let index = sources::sources_dir(store_root).join(&release_sha256);
    let text = std::fs::read_to_string(&index).unwrap_or_default();
    let date = text
        .lines()
        .find_map(|line| line.strip_prefix("Date:"))
        .map(|d| d.trim().to_string())
        .ok_or_else(|| {
            Error::input(
                format!("apt repository `{repo}`: {dir}{release} has no `Date:` field; it is not an apt Release file"),
                "check the repository line",
            )
        })?;
    Ok(AptPin {
        repo: repo.to_string(),
        key: key.to_string(),
        key_sha256,
        release,
        release_sha256,
        date,
        snapshot: debian_snapshot(repo, &crate::clock::now_rfc3339()),
    })
}

/// snapshot.debian.org keeps every state of Debian's own archives: a repository on
/// deb.debian.org or security.debian.org has a snapshot at `now` (RFC 3339). A vendor's
/// repository has none (its Release digest is checked at build time instead), nor does one
/// already on snapshot.debian.org (its URL is dated already).
fn debian_snapshot(repo: &str, now: &str) -> Option<String> {
    let url = repo.split_whitespace().next()?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/')?;
    let archive = path.trim_end_matches('/');
    let official = ["deb.debian.org", "ftp.debian.org", "security.debian.org"];
    let archives = ["debian", "debian-security", "debian-debug", "debian-ports"];
    if !official.contains(&host) || !archives.contains(&archive) {
        return None;
    }
    let stamp: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    Some(format!(
        "https://snapshot.debian.org/archive/{archive}/{stamp}/"
    ))
}

/// The commit `rev` (a branch or tag; `refs/...` spelled out) names in the repository `url`.
fn resolve_rev(url: &str, rev: &str) -> Result<String> {
    let mut command = git()?;
    command.args(["ls-remote", "--", url]);
    let listing = run_git(command, &format!("list the refs of {url}"))?;
    let wanted: Vec<String> = if rev.starts_with("refs/") {
        vec![rev.to_string()]
    } else {
        vec![format!("refs/heads/{rev}"), format!("refs/tags/{rev}")]
    };
    let lookup = |name: &str| {
        listing.lines().find_map(|line| {
            let (commit, reference) = line.split_once('\t')?;
            (reference == name).then(|| commit.to_string())
        })
    };
    // A tag's own line names the tag object; its `^{}` line, the commit it points at.
    let found: Vec<(String, String)> = wanted
        .iter()
        .filter_map(|name| {
            let commit = lookup(&format!("{name}^{{}}")).or_else(|| lookup(name))?;
            Some((name.clone(), commit))
        })
        .collect();
    match found.as_slice() {
        [(_, commit)] => Ok(commit.clone()),
        [] => Err(Error::input(
            format!("rev `{rev}` is neither a branch nor a tag of {url}"),
            "check the name; a commit is written in full (40 hex digits) and needs no lock",
        )),
        _ => Err(Error::input(
            format!("rev `{rev}` of {url} is both a branch and a tag"),
            format!("write rev = \"refs/heads/{rev}\" or rev = \"refs/tags/{rev}\""),
        )),
    }
}

/// The refusal of an environment with a floating source its lock file does not pin.
fn unlocked_error(env: &Environment, lock: &LockFile) -> Error {
    let mut lines = Vec::new();
    for machine in &env.machines {
        for stage in &machine.stages {
            for source in stage.sources.iter().filter(|s| s.pin.is_none()) {
                let stale = lock
                    .stale_note(&source.origin)
                    .map(|note| format!(" (stale: {note})"))
                    .unwrap_or_default();
                lines.push(format!(
                    "  source `{}` of {}/{}: {}{stale}",
                    source.name,
                    machine.name,
                    stage.name,
                    source.origin.describe()
                ));
            }
        }
    }
    Error::input(
        format!(
            "environment `{}` has floating sources that {} does not pin:\n{}",
            env.name,
            env.lock_file.display(),
            lines.join("\n")
        ),
        format!(
            "run `envbuild lock {}` and commit {} (or pass --allow-unlocked to resolve them for this run only)",
            env.name,
            env.lock_file.display()
        ),
    )
}

/// The floating sources the lock file does not pin, as `machine/stage: source`.
pub fn unlocked_sources(env: &Environment) -> Vec<String> {
    env.machines
        .iter()
        .flat_map(|m| m.stages.iter().map(move |s| (m, s)))
        .flat_map(|(m, s)| {
            s.sources
                .iter()
                .filter(|source| source.pin.is_none())
                .map(move |source| format!("{}/{}: {}", m.name, s.name, source.name))
        })
        .collect()
}

/// Before `build`, `up` and `test`: every floating source must be locked. With
/// `allow_unlocked`, the unlocked ones are resolved now, for this run only, with a warning.
pub fn require_locked(
    ws: &Workspace,
    env: &mut Environment,
    allow_unlocked: bool,
    progress: &Progress,
) -> Result<()> {
    if unlocked_sources(env).is_empty() {
        return Ok(());
    }
    if !allow_unlocked {
        let lock = LockFile::read(&env.lock_file)?.unwrap_or_default();
        return Err(unlocked_error(env, &lock));
    }
    let name = env.name.clone();
    for machine in &mut env.machines {
        for stage in &mut machine.stages {
            for source in stage.sources.iter_mut().filter(|s| s.pin.is_none()) {
                let pin = resolve(ws, &source.origin)?;
                progress.warn(&format!(
                    "--allow-unlocked: source `{}` ({}) resolved to {pin} for this run only; `envbuild lock {name}` pins it",
                    source.name,
                    source.origin.describe()
                ));
                source.pin = Some(pin);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_archives_have_a_snapshot_of_the_lock_time_and_vendors_none() {
        let now = "2026-12-02T06:40:00Z";
        assert_eq!(
            debian_snapshot("http://deb.debian.org/debian bookworm main", now).as_deref(),
            Some("https://snapshot.debian.org/archive/debian/20261202T064000Z/")
        );
        assert_eq!(
            debian_snapshot(
                "https://security.debian.org/debian-security/ bookworm-security main",
                now
            )
            .as_deref(),
            Some("https://snapshot.debian.org/archive/debian-security/20261202T064000Z/")
        );
        for vendor in [
            "https://pkg.jenkins.io/debian-stable binary/",
            "https://artifacts.elastic.co/packages/8.x/apt stable main",
            "https://snapshot.debian.org/archive/debian/20261201T000000Z bookworm main",
        ] {
            assert_eq!(debian_snapshot(vendor, now), None, "{vendor}");
        }
    }

    #[test]
    fn release_files_live_under_dists_or_in_a_flat_repositorys_folder() {
        assert_eq!(
            sources::apt_release_dir("https://artifacts.elastic.co/packages/8.x/apt stable main"),
            "https://artifacts.elastic.co/packages/8.x/apt/dists/stable/"
        );
        assert_eq!(
            sources::apt_release_dir("https://pkg.jenkins.io/debian-stable binary/"),
            "https://pkg.jenkins.io/debian-stable/binary/"
        );
        let pin = AptPin {
            repo: "http://deb.debian.org/debian bookworm main".into(),
            key: "https://example.org/key".into(),
            key_sha256: "a".repeat(64),
            release: "InRelease".into(),
            release_sha256: "b".repeat(64),
            date: "Wed, 02 Dec 2026 06:00:00 UTC".into(),
            snapshot: Some("https://snapshot.debian.org/archive/debian/20261202T064000Z/".into()),
        };
        let text = pin.pin();
        let (key, release, sha, snapshot) = AptPin::parse_pin(&text).unwrap();
        assert_eq!(
            (key, release, sha),
            (&*"a".repeat(64), "InRelease", &*"b".repeat(64))
        );
        assert_eq!(
            sources::apt_repo_at(&pin.repo, snapshot.unwrap()),
            "https://snapshot.debian.org/archive/debian/20261202T064000Z bookworm main"
        );
    }
}
