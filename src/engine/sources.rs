//! Sources in the store, fetched once and then read from there, so that a build after
//! `envbuild lock` needs no network:
//!
//! ```text
//! STORE/v1/sources/SHA256            a file source, checked by its sha256
//! STORE/v1/sources/git/URLHASH.git   a bare repository per git URL; each locked commit is
//!                                    kept under refs/envbuild/COMMIT (so git gc keeps it)
//! ```
//!
//! A file source is copied to `$ENVBUILD_INPUTS/sources/NAME`; a git source is the tree of its
//! commit (`git archive`, no .git folder) in the folder `$ENVBUILD_INPUTS/sources/NAME/`; an apt
//! source is the folder `$ENVBUILD_INPUTS/sources/NAME/` with `key` (the pinned signing key),
//! `InRelease` or `Release` (the pinned index, checked against the repository now) and `repo`
//! (the line to put after `deb [signed-by=...]`: the snapshot's URL where there is one).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, IoContext, Result};
use crate::key::digest::{sha256_bytes, sha256_file};
use crate::spec::model::{Origin, Source};
use crate::store::{self, RemoveOnDrop, remove_any};

/// The store's sources folder.
pub fn sources_dir(store_root: &Path) -> PathBuf {
    store_root.join(store::LAYOUT).join("sources")
}

/// Puts `source`'s content at `to`: the file, or the tree of the commit.
pub fn materialize(store_root: &Path, source: &Source, to: &Path) -> Result<()> {
    let pin = source.pin.as_deref().ok_or_else(|| {
        Error::input(
            format!("source {} is not locked", source.name),
            "run `envbuild lock ENV`",
        )
    })?;
    match &source.origin {
        Origin::Url { url } => {
            let path = fetch_file(store_root, &source.name, url, pin)?;
            std::fs::copy(&path, to)
                .map(|_| ())
                .ctx(|| format!("copying {}", path.display()))
        }
        Origin::Git { url, .. } => {
            let repo = fetch_commit(store_root, url, pin)?;
            export_tree(&repo, pin, to)
        }
        Origin::Apt { repo, key } => materialize_apt(store_root, &source.name, repo, key, pin, to),
    }
}

/// The folder holding an apt repository's InRelease and Release: `URL/dists/SUITE/`, or for a
/// flat repository ("URL DIR/") `URL/DIR/`.
pub fn apt_release_dir(repo: &str) -> String {
    let mut words = repo.split_whitespace();
    let url = words.next().unwrap_or_default().trim_end_matches('/');
    match words.next().unwrap_or_default() {
        flat if flat.ends_with('/') => format!("{url}/{flat}"),
        suite => format!("{url}/dists/{suite}/"),
    }
}

/// `repo` with its URL replaced by `url` (a snapshot of the same repository).
pub fn apt_repo_at(repo: &str, url: &str) -> String {
    let rest: Vec<&str> = repo.split_whitespace().skip(1).collect();
    format!("{} {}", url.trim_end_matches('/'), rest.join(" "))
}

/// The key and the pinned index of an apt source, its index checked against what the repository
/// (or its snapshot) serves now: a repository that moved on since the lock is bad input, with
/// the command that pins its new state. A snapshot never changes: its index is read from the
/// store when it is there, so a build from a snapshot needs no network but the guest's.
fn materialize_apt(
    store_root: &Path,
    name: &str,
    repo: &str,
    key: &str,
    pin: &str,
    to: &Path,
) -> Result<()> {
    let (key_sha256, release, release_sha256, snapshot) = crate::spec::lock::AptPin::parse_pin(pin)
        .ok_or_else(|| {
            Error::input(
                format!("apt source {name}: `{pin}` is not an apt pin"),
                "rerun `envbuild lock` to rewrite the lock file (do not edit it by hand)",
            )
        })?;
    let key_file = fetch_file(store_root, name, key, key_sha256)?;
    let served = snapshot.map_or_else(|| repo.to_string(), |url| apt_repo_at(repo, url));
    let url = format!("{}{release}", apt_release_dir(&served));
    let index = if snapshot.is_some() {
        fetch_file(store_root, name, &url, release_sha256)?
    } else {
        let got = download_into_store(store_root, &url, |got| {
            if got == release_sha256 {
                return Ok(());
            }
            Err(Error::input(
                format!(
                    "apt source {name}: the repository changed since it was locked: {url} has sha256 {got}, the lock file pins {release_sha256}. The repository has no dated snapshots, so its old state cannot be fetched again."
                ),
                "review what the repository published, then pin its new state with `envbuild lock ENV --update` and commit ENV.lock",
            ))
        })?;
        sources_dir(store_root).join(got)
    };
    std::fs::create_dir_all(to).ctx(|| format!("creating {}", to.display()))?;
    for (from, file) in [(&key_file, "key"), (&index, release)] {
        std::fs::copy(from, to.join(file)).ctx(|| format!("copying {}", from.display()))?;
    }
    std::fs::write(to.join("repo"), format!("{served}\n"))
        .ctx(|| format!("writing {}", to.join("repo").display()))
}

/// The file pinned to `sha256`, downloaded into the store if it is not there yet.
pub fn fetch_file(store_root: &Path, name: &str, url: &str, sha256: &str) -> Result<PathBuf> {
    let path = sources_dir(store_root).join(sha256);
    if path.is_file() && sha256_file(&path)? == sha256 {
        return Ok(path);
    }
    let got = download_into_store(store_root, url, |got| {
        if got == sha256 {
            return Ok(());
        }
        Err(Error::input(
            format!("source {name} from {url} has sha256 {got}, but the spec pins {sha256}."),
            "check the URL, or update the pin if the new file is trusted",
        ))
    })?;
    Ok(sources_dir(store_root).join(got))
}

/// Downloads `url` into the store's sources folder and returns its sha256; `accept` may refuse
/// the digest (nothing is kept then).
pub fn download_into_store(
    store_root: &Path,
    url: &str,
    accept: impl FnOnce(&str) -> Result<()>,
) -> Result<String> {
    let dir = sources_dir(store_root);
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    remove_dead_parts(&dir);
    let partial = dir.join(format!("download.{}.part", std::process::id()));
    let _guard = RemoveOnDrop(partial.clone());
    download(url, &partial)?;
    let got = sha256_file(&partial)?;
    accept(&got)?;
    let path = dir.join(&got);
    std::fs::rename(&partial, &path).ctx(|| format!("storing {}", path.display()))?;
    Ok(got)
}

/// Removes what runs that died (killed in a download or a clone) left half-written:
/// `NAME.PID.part` whose PID is gone.
fn remove_dead_parts(dir: &Path) {
    for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".part") else {
            continue;
        };
        let pid = stem.rsplit('.').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|pid| !crate::process::process_alive(pid)) {
            remove_any(&item.path());
        }
    }
}

/// Copies a `file://` URL, or downloads an http(s) one with curl, to `to`.
fn download(url: &str, to: &Path) -> Result<()> {
    if let Some(local) = url.strip_prefix("file://") {
        return std::fs::copy(local, to)
            .map(|_| ())
            .ctx(|| format!("copying source {url}"));
    }
    let curl = crate::process::find_program("curl").ok_or_else(|| {
        Error::input(
            "http(s) sources are downloaded with curl, which is missing.",
            "apt-get install curl",
        )
    })?;
    let ok = Command::new(curl)
        .args(["-fsSL", "--proto", "=http,https", "-o"])
        .arg(to)
        .arg(url)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(Error::Failed(format!("downloading {url} failed")));
    }
    Ok(())
}

/// `git`, never prompting for a password (a lock or build runs unattended).
pub fn git() -> Result<Command> {
    let program = crate::process::find_program("git").ok_or_else(|| {
        Error::input(
            "git sources are fetched with git, which is missing.",
            "apt-get install git",
        )
    })?;
    let mut command = Command::new(program);
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(Stdio::null());
    Ok(command)
}

/// Runs `command`; its stderr becomes the message of a failure.
pub fn run_git(mut command: Command, what: &str) -> Result<String> {
    let output = command.output().ctx(|| format!("running git to {what}"))?;
    if !output.status.success() {
        return Err(Error::Failed(format!(
            "git failed to {what}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The store's bare repository for `url`, holding `commit` (fetched if it lacks it).
fn fetch_commit(store_root: &Path, url: &str, commit: &str) -> Result<PathBuf> {
    let repo = sources_dir(store_root)
        .join("git")
        .join(format!("{}.git", &sha256_bytes(url.as_bytes())[..32]));
    let has = |repo: &Path| -> Result<bool> {
        let mut command = git()?;
        command
            .arg("--git-dir")
            .arg(repo)
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .stderr(Stdio::null());
        Ok(command.status().is_ok_and(|s| s.success()))
    };
    if repo.is_dir() && has(&repo)? {
        return Ok(repo);
    }
    if !repo.is_dir() {
        remove_dead_parts(repo.parent().expect("in the sources folder"));
        let partial = repo.with_extension(format!("git.{}.part", std::process::id()));
        let _guard = RemoveOnDrop(partial.clone());
        let mut init = git()?;
        init.args(["init", "--quiet", "--bare"]).arg(&partial);
        run_git(init, &format!("create {}", partial.display()))?;
        std::fs::rename(&partial, &repo)
            .or_else(|_| {
                // Another build made it first.
                if repo.is_dir() { Ok(()) } else { Err(()) }
            })
            .map_err(|()| Error::Failed(format!("storing {}", repo.display())))?;
    }
    let fetch = |refspec: &str| -> Result<String> {
        let mut command = git()?;
        command.arg("--git-dir").arg(&repo).args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--",
            url,
            refspec,
        ]);
        run_git(command, &format!("fetch {commit} from {url}"))
    };
    // A server may refuse a want that no ref advertises: then fetch every ref.
    let keep = format!("{commit}:refs/envbuild/{commit}");
    if fetch(&keep).is_err() {
        fetch("+refs/*:refs/fetched/*")?;
        let mut update = git()?;
        update.arg("--git-dir").arg(&repo).args([
            "update-ref",
            &format!("refs/envbuild/{commit}"),
            commit,
        ]);
        run_git(update, &format!("keep {commit}"))?;
    }
    if !has(&repo)? {
        return Err(Error::Failed(format!(
            "{url} has no commit {commit} (was the lock file written for another repository?)"
        )));
    }
    Ok(repo)
}

/// Writes the tree of `commit` into the new folder `to` (git archive | tar -x).
fn export_tree(repo: &Path, commit: &str, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).ctx(|| format!("creating {}", to.display()))?;
    let mut archive = git()?;
    archive
        .arg("--git-dir")
        .arg(repo)
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped());
    let mut archive = archive.spawn().ctx(|| "running git archive".into())?;
    let stdout = archive.stdout.take().expect("piped");
    let tar = Command::new("tar")
        .args(["-x", "--no-same-owner", "-C"])
        .arg(to)
        .stdin(stdout)
        .status();
    let archived = archive.wait().is_ok_and(|s| s.success());
    if !(archived && tar.is_ok_and(|s| s.success())) {
        return Err(Error::Failed(format!(
            "exporting commit {commit} into {} failed",
            to.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_parts_of_dead_runs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("download.999999999.part");
        let mine = dir
            .path()
            .join(format!("download.{}.part", std::process::id()));
        let repo = dir.path().join("0a1b.git.999999999.part");
        let stored = dir.path().join("a".repeat(64));
        for file in [&dead, &mine, &stored] {
            std::fs::write(file, "x").unwrap();
        }
        std::fs::create_dir(&repo).unwrap();
        remove_dead_parts(dir.path());
        assert!(!dead.exists() && !repo.exists());
        assert!(mine.exists() && stored.exists());
    }
}
