//! Inputs and templates stay inside the environment's folder: their bytes go into the store,
//! and the store may be pushed to a shared cache.
//!
//! An input path is followed link by link, as the kernel would follow it, and every step must
//! stay inside the environment's folder (a link to a file or folder in it is followed: the input
//! is what it points to). Inside an input folder, links are copied as links, so each must be a
//! relative link that stays inside that folder. Anything else is refused, at the input's place
//! in the spec, naming the link at fault.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Where an input's bytes come from.
#[derive(Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// `PATH`: the environment's own folder.
    Own(&'a Path),
    /// `../ENV/PATH`: the folder of the sibling environment ENV (a folder beside this one in
    /// environments/, e.g. infra taking jumpbox's scripts), copied to `$ENVBUILD_INPUTS/ENV/PATH`.
    Sibling { env: &'a str, path: &'a Path },
}

/// Splits an input path by origin; `None` when it is not clean: empty, absolute, or with `.`
/// or `..` anywhere but a leading `../ENV/`.
pub fn origin(path: &str) -> Option<Origin<'_>> {
    let clean = |p: &Path| {
        !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
    };
    match path.strip_prefix("../") {
        None => clean(Path::new(path)).then_some(Origin::Own(Path::new(path))),
        Some(rest) => {
            let (env, path) = rest.split_once('/')?;
            let path = Path::new(path);
            (clean(Path::new(env)) && clean(path)).then_some(Origin::Sibling { env, path })
        }
    }
}

/// How many links one path may pass through (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `link` (relative to the folder) points at `target`, which leads out of the folder.
    LeadsOut { link: PathBuf, target: PathBuf },
    /// More than [`MAX_LINKS`] links, or a loop.
    TooManyLinks { link: PathBuf },
    /// A socket, fifo or device: inputs hold files, folders and links.
    Special { path: PathBuf },
}

/// Follows the clean relative `path` inside the canonical folder `root`; returns where it
/// leads, relative to `root`, with no link left in it.
pub fn resolve(root: &Path, path: &Path) -> Result<PathBuf, Refusal> {
    follow(root, Vec::new(), path, true).map(|parts| parts.iter().collect())
}

/// Checks the links inside the input folder `folder` (canonical): each must be relative and
/// lead inside `folder` (it is copied as a link). `shown` is how the folder is named in errors.
pub fn check_folder(folder: &Path, shown: &Path) -> Result<(), Refusal> {
    let mut todo = vec![PathBuf::new()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(folder.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let relative = dir.join(entry.file_name());
            let Ok(meta) = std::fs::symlink_metadata(folder.join(&relative)) else {
                continue;
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                todo.push(relative);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(folder.join(&relative)).unwrap_or_default();
                let parent = dir.iter().map(OsString::from).collect();
                follow(folder, parent, &target, false).map_err(|refusal| match refusal {
                    Refusal::TooManyLinks { .. } => Refusal::TooManyLinks {
                        link: shown.join(&relative),
                    },
                    _ => Refusal::LeadsOut {
                        link: shown.join(&relative),
                        target: target.clone(),
                    },
                })?;
            } else if !kind.is_file() {
                return Err(Refusal::Special {
                    path: shown.join(&relative),
                });
            }
        }
    }
    Ok(())
}

/// One step of a path as it is walked.
enum Part {
    Up,
    Root,
    Name(OsString),
}

fn parts(path: &Path) -> impl DoubleEndedIterator<Item = Part> + '_ {
    path.components().filter_map(|c| match c {
        Component::CurDir => None,
        Component::ParentDir => Some(Part::Up),
        Component::Normal(name) => Some(Part::Name(name.to_os_string())),
        Component::RootDir | Component::Prefix(_) => Some(Part::Root),
    })
}

/// Resolves `path` from the folder `start` (components under `root`, all real folders),
/// following links; `absolute_ok`: an absolute link target inside `root` is followed (else
/// every absolute target leads out).
fn follow(
    root: &Path,
    start: Vec<OsString>,
    path: &Path,
    absolute_ok: bool,
) -> Result<Vec<OsString>, Refusal> {
    let mut resolved = start;
    // Parts still to walk, last first, each with the link (index in `links`) whose target it
    // came from, to blame the right one.
    let mut todo: Vec<(Part, Option<usize>)> = parts(path).rev().map(|p| (p, None)).collect();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let leads_out = |links: &[(PathBuf, PathBuf)], origin: Option<usize>| {
        let (link, target) = origin.map_or_else(
            || (path.to_path_buf(), path.to_path_buf()),
            |i| links[i].clone(),
        );
        Refusal::LeadsOut { link, target }
    };
    while let Some((part, origin)) = todo.pop() {
        let name = match part {
            Part::Up if resolved.pop().is_some() => continue,
            Part::Up | Part::Root => return Err(leads_out(&links, origin)),
            Part::Name(name) => name,
        };
        let here: PathBuf = resolved.iter().chain([&name]).collect();
        let is_link =
            std::fs::symlink_metadata(root.join(&here)).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            // A file, a folder, or nothing yet: the rest is read as written.
            resolved.push(name);
            continue;
        }
        if links.len() == MAX_LINKS {
            return Err(Refusal::TooManyLinks { link: here });
        }
        let target = std::fs::read_link(root.join(&here)).unwrap_or_default();
        links.push((here, target.clone()));
        let index = Some(links.len() - 1);
        let relative = match target.strip_prefix(root) {
            _ if target.is_relative() => target,
            Ok(inside) if absolute_ok => {
                resolved.clear();
                inside.to_path_buf()
            }
            _ => return Err(leads_out(&links, index)),
        };
        todo.extend(parts(&relative).rev().map(|p| (p, index)));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn an_input_is_the_own_folder_s_or_a_sibling_environment_s_and_nothing_else() {
        assert_eq!(
            origin("scripts/install.sh"),
            Some(Origin::Own(Path::new("scripts/install.sh")))
        );
        assert_eq!(
            origin("../jumpbox/scripts/"),
            Some(Origin::Sibling {
                env: "jumpbox",
                path: Path::new("scripts/")
            })
        );
        for refused in [
            "",
            "/etc/passwd",
            "scripts/../../x",
            "../jumpbox",
            "../jumpbox/",
            "../../x/y",
            "../jumpbox/../elk/x",
            "../jumpbox/./x",
            "./x",
            "..//x/y",
        ] {
            assert_eq!(origin(refused), None, "{refused}");
        }
    }

    #[test]
    fn links_are_followed_inside_and_refused_when_they_lead_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("env");
        std::fs::create_dir_all(root.join("v2/sub")).unwrap();
        std::fs::write(root.join("v2/sub/a.txt"), "a").unwrap();
        symlink("v2", root.join("current")).unwrap();
        symlink(root.join("v2"), root.join("absolute")).unwrap();
        symlink("/etc", root.join("etcdir")).unwrap();
        symlink("current/../..", root.join("up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let resolve = |p: &str| resolve(&root, Path::new(p));
        assert_eq!(
            resolve("current/sub/a.txt"),
            Ok(PathBuf::from("v2/sub/a.txt"))
        );
        assert_eq!(resolve("absolute/sub"), Ok(PathBuf::from("v2/sub")));
        assert_eq!(resolve("v2/missing/x"), Ok(PathBuf::from("v2/missing/x")));
        assert_eq!(
            resolve("etcdir/hostname"),
            Err(Refusal::LeadsOut {
                link: "etcdir".into(),
                target: "/etc".into()
            })
        );
        assert_eq!(
            resolve("up/x"),
            Err(Refusal::LeadsOut {
                link: "up".into(),
                target: "current/../..".into()
            })
        );
        assert!(matches!(resolve("loop"), Err(Refusal::TooManyLinks { .. })));
    }

    #[test]
    fn links_inside_an_input_folder_stay_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().canonicalize().unwrap().join("scripts");
        std::fs::create_dir_all(folder.join("lib")).unwrap();
        symlink("../lib", folder.join("lib/self")).unwrap();
        symlink("lib", folder.join("alias")).unwrap();
        assert_eq!(check_folder(&folder, Path::new("scripts")), Ok(()));
        symlink("../../secret", folder.join("lib/leak")).unwrap();
        assert_eq!(
            check_folder(&folder, Path::new("scripts")),
            Err(Refusal::LeadsOut {
                link: "scripts/lib/leak".into(),
                target: "../../secret".into()
            })
        );
        std::fs::remove_file(folder.join("lib/leak")).unwrap();
        symlink(folder.join("lib"), folder.join("abs")).unwrap();
        assert!(matches!(
            check_folder(&folder, Path::new("scripts")),
            Err(Refusal::LeadsOut { .. })
        ));
    }
}
