//! `envbuild lock`: floating sources (a git branch or tag, a URL without a digest, an apt
//! repository) pinned into ENV.lock against real local git repositories (file://) and loopback
//! HTTP servers; builds refusing unlocked sources or a repository that moved on; a replay with
//! the network cut; the files of `[[locks]]`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Project;

/// A loopback HTTP server serving one file at any path; counts the requests it answered.
/// `claimed`: the length it announces (more than it sends: a download cut short).
struct FileServer {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl FileServer {
    fn start(body: &'static str) -> FileServer {
        Self::claiming(body, body.len())
    }

    fn claiming(body: &'static str, claimed: usize) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n{body}"
                );
                // Close the sending side only: the client reads every byte sent, then the end.
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let _ = std::io::Read::read_to_end(&mut reader, &mut Vec::new());
            }
        });
        FileServer { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/tool.txt", self.port)
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repository with `file.txt` = `text` committed on main; returns the commit id.
fn commit(repo: &Path, text: &str) -> String {
    if !repo.join(".git").is_dir() {
        std::fs::create_dir_all(repo).unwrap();
        git(repo, &["init", "-q", "-b", "main"]);
    }
    std::fs::write(repo.join("file.txt"), text).unwrap();
    git(repo, &["add", "file.txt"]);
    git(repo, &["commit", "-q", "-m", text]);
    git(repo, &["rev-parse", "HEAD"])
}

/// An environment whose one stage copies a git tree and a downloaded file into its machine.
fn write_spec(project: &Project, repo: &Path, rev: &str, url: &str, step: &str) {
    project.write(
        "src.toml",
        &format!(
            r#"
[machines.box]

[[machines.box.stages]]
name = "copy"
sources = [
  {{ name = "tree", git = "file://{repo}", rev = "{rev}" }},
  {{ name = "tool.txt", url = "{url}" }},
]
steps = [
  "cp $ENVBUILD_INPUTS/sources/tree/file.txt tree.txt",
  "cp $ENVBUILD_INPUTS/sources/tool.txt tool.txt",
  "{step}",
]
"#,
            repo = repo.display()
        ),
    );
}

fn root_file(project: &Project, name: &str) -> String {
    std::fs::read_to_string(project.state().join("envs/src/box/root").join(name)).unwrap()
}

fn stderr_of(project: &Project, args: &[&str]) -> (Option<i32>, String) {
    let out = project.run(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lock_pins_a_branch_and_a_url_and_builds_use_only_the_pins() {
    let project = Project::new();
    let repo = project.path().join("repo");
    let first = commit(&repo, "one\n");
    let server = FileServer::start("tool v1\n");
    write_spec(&project, &repo, "main", &server.url(), "true");

    // Unlocked: refused with the command that locks it, before anything is fetched or built.
    let (code, err) = stderr_of(&project, &["build", "src"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("source `tree` of box/copy: rev `main` of file://"),
        "{err}"
    );
    assert!(err.contains("run `envbuild lock src`"), "{err}");
    assert_eq!(server.count(), 0);
    assert!(!project.state().join("envs/src/box/root").exists());
    // `plan` works (offline: it fetches nothing) and warns about what build would refuse.
    let (code, err) = stderr_of(&project, &["plan", "src"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("unlocked sources (box/copy: tree"), "{err}");
    assert!(err.contains("`envbuild lock src` pins them"), "{err}");
    assert_eq!(server.count(), 0);

    let out = project.ok(&["lock", "src"]);
    assert!(
        out.contains(&format!(
            "locked rev `main` of file://{} -> {first}",
            repo.display()
        )),
        "{out}"
    );
    let lock_file = project.envs().join("src.lock");
    let locked = std::fs::read_to_string(&lock_file).unwrap();
    assert!(
        locked.contains(&format!("commit = \"{first}\"")),
        "{locked}"
    );
    let sha = sha256_hex(b"tool v1\n");
    assert!(locked.contains(&format!("sha256 = \"{sha}\"")), "{locked}");
    assert_eq!(server.count(), 1);

    // The build takes the file lock downloaded into the store: no second download.
    assert_eq!(project.build_actions("src", &[]), ["copy:built"]);
    assert_eq!(root_file(&project, "tree.txt"), "one\n");
    assert_eq!(root_file(&project, "tool.txt"), "tool v1\n");
    assert_eq!(server.count(), 1);
    let material = project.json(&["hash", "src", "--json"]);
    assert_eq!(
        material[0]["material"]["sources"]["tree"],
        format!("git {first}")
    );
    assert_eq!(material[0]["material"]["sources"]["tool.txt"], sha.as_str());

    // The branch moves: the key follows the lock, not the branch.
    let second = commit(&repo, "two\n");
    assert_eq!(project.build_actions("src", &[]), ["copy:current"]);
    let out = project.ok(&["lock", "src"]);
    assert!(
        out.contains(&format!(
            "kept rev `main` of file://{} -> {first}",
            repo.display()
        )),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&lock_file).unwrap(), locked);
    project.ok(&["lock", "src", "--check"]);

    let out = project.ok(&["lock", "src", "--update"]);
    assert!(out.contains(&format!("-> {second}")), "{out}");
    assert_eq!(project.build_actions("src", &[]), ["copy:built"]);
    assert_eq!(root_file(&project, "tree.txt"), "two\n");

    // The spec moves to a tag: the lock is stale for it until relocked.
    git(&repo, &["tag", "-a", "v1", "-m", "v1", &first]);
    write_spec(&project, &repo, "v1", &server.url(), "true");
    let (code, err) = stderr_of(&project, &["up", "src"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "stale: the lock file pins rev `main` of this repository, the spec now says `v1`"
        ),
        "{err}"
    );
    let (code, err) = stderr_of(&project, &["lock", "src", "--check"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = stderr_of(&project, &["build", "src", "--allow-unlocked"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "--allow-unlocked: source `tree` (rev `v1` of file://{}) resolved to {first}",
            repo.display()
        )),
        "{err}"
    );
    assert_eq!(root_file(&project, "tree.txt"), "one\n");
    project.ok(&["lock", "src"]);
    let relocked = std::fs::read_to_string(&lock_file).unwrap();
    assert!(
        relocked.contains("rev = \"v1\"") && !relocked.contains("rev = \"main\""),
        "{relocked}"
    );
    assert!(
        relocked.contains(&format!("commit = \"{first}\"")),
        "the tag's commit, not the tag object: {relocked}"
    );
}

#[test]
fn a_rev_that_names_nothing_or_two_things_is_bad_input() {
    let project = Project::new();
    let repo = project.path().join("repo");
    let first = commit(&repo, "one\n");
    git(&repo, &["tag", "main", &first]);
    let server = FileServer::start("x\n");
    write_spec(&project, &repo, "main", &server.url(), "true");
    let (code, err) = stderr_of(&project, &["lock", "src"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("rev = \"refs/heads/main\""), "{err}");
    write_spec(&project, &repo, "nope", &server.url(), "true");
    let (code, err) = stderr_of(&project, &["lock", "src"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("rev `nope` is neither a branch nor a tag"),
        "{err}"
    );
    assert!(!project.envs().join("src.lock").exists());
    // A download cut short is a failure of the work, and leaves no part in the store.
    let short = FileServer::claiming("half", 1000);
    write_spec(&project, &repo, &first, &short.url(), "true");
    let (code, err) = stderr_of(&project, &["lock", "src"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("downloading {} failed", short.url())),
        "{err}"
    );
    let sources = project.store().join("v1/sources");
    let parts: Vec<String> = common::file_names(&sources)
        .into_iter()
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert_eq!(parts, Vec::<String>::new());
    // A full commit id is a pin already: nothing to lock, and it builds.
    write_spec(
        &project,
        &repo,
        &first,
        &format!("file://{}", repo.join("file.txt").display()),
        "true",
    );
    let (code, err) = stderr_of(&project, &["build", "src"]);
    assert_eq!(code, Some(2), "the url still floats: {err}");
    project.ok(&["lock", "src"]);
    let locked = std::fs::read_to_string(project.envs().join("src.lock")).unwrap();
    assert!(!locked.contains("[[git]]"), "{locked}");
    project.ok(&["build", "src"]);
    assert_eq!(root_file(&project, "tree.txt"), "one\n");
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The binary in a network namespace of its own with only loopback (down): nothing outside
/// this process tree is reachable, not even the host's loopback servers.
fn offline(project: &Project, args: &[&str]) -> std::process::Output {
    let cmd = project.process();
    let mut offline = Command::new("unshare");
    offline
        .args(["--net", "--"])
        .arg(cmd.get_program())
        .args(args);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => offline.env(key, value),
            None => offline.env_remove(key),
        };
    }
    offline.current_dir(project.path()).output().unwrap()
}

#[test]
fn after_lock_a_replay_and_a_rebuild_run_from_the_store_with_the_network_cut() {
    let project = Project::new();
    let repo = project.path().join("repo");
    commit(&repo, "one\n");
    let server = FileServer::start("tool v1\n");
    write_spec(&project, &repo, "main", &server.url(), "true");
    project.ok(&["lock", "src"]);
    project.ok(&["build", "src"]);

    // Cut everything: the repository is gone and the server is out of reach.
    let moved: PathBuf = project.path().join("repo-away");
    std::fs::rename(&repo, &moved).unwrap();
    let probe = offline(&project, &["lock", "src", "--check"]);
    assert!(
        probe.status.success(),
        "the check is offline: {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // A replay into a fresh state folder, then a changed step that reruns the stage: its
    // sources come from the store's copies.
    std::fs::remove_dir_all(project.state()).unwrap();
    let out = offline(&project, &["build", "src", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stages"][0]["action"], "restored");
    write_spec(
        &project,
        &repo,
        "main",
        &server.url(),
        "echo again > again.txt",
    );
    let out = offline(&project, &["build", "src", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stages"][0]["action"], "built");
    assert_eq!(root_file(&project, "tree.txt"), "one\n");
    assert_eq!(root_file(&project, "tool.txt"), "tool v1\n");
    assert_eq!(root_file(&project, "again.txt"), "again\n");
    assert_eq!(server.count(), 1, "only lock downloaded the file");

    // Relocking needs the network: in the namespace it fails as a failure of the work (1).
    let out = offline(&project, &["lock", "src", "--update"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_lock_recipe_file_names_the_command_that_makes_it() {
    let project = Project::new();
    project.write(
        "py.toml",
        r#"
[vars]
release = "1.0"

[[locks]]
file = "requirements/app-{{ release }}.txt"
command = "mkdir -p requirements && echo pinned-{{ release }} > requirements/app-{{ release }}.txt"

[machines.box]

[[machines.box.stages]]
name = "install"
inputs = ["requirements/app-{{ release }}.txt"]
steps = ["cp $ENVBUILD_INPUTS/requirements/app-*.txt installed.txt"]
"#,
    );
    std::fs::create_dir_all(project.envs().join("py")).unwrap();
    let (code, err) = stderr_of(&project, &["build", "py", "--var", "release=2.0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("py.toml:13:"), "{err}");
    assert!(
        err.contains("input `requirements/app-2.0.txt` does not exist"),
        "{err}"
    );
    assert!(
        err.contains("make it with `envbuild lock py --var release=2.0`"),
        "{err}"
    );
    let (code, _) = stderr_of(&project, &["lock", "py", "--check", "--var", "release=2.0"]);
    assert_eq!(code, Some(2));

    let out = project.ok(&["lock", "py", "--var", "release=2.0"]);
    assert!(out.contains("py: made requirements/app-2.0.txt"), "{out}");
    project.ok(&["build", "py", "--var", "release=2.0"]);
    let installed = project.state().join("envs/py/box/root/installed.txt");
    assert_eq!(std::fs::read_to_string(installed).unwrap(), "pinned-2.0\n");
    // Made once: a second lock keeps it (no source floats, so there is no lock file).
    let out = project.ok(&["lock", "py", "--var", "release=2.0"]);
    assert!(!out.contains("made"), "{out}");
    assert!(!project.envs().join("py.lock").exists());

    // A recipe that fails, or writes nothing, fails the work.
    let spec = project.envs().join("py.toml");
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("mkdir -p requirements && echo", "true ||");
    std::fs::write(&spec, text).unwrap();
    let (code, err) = stderr_of(&project, &["lock", "py", "--var", "release=3.0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("did not write it"), "{err}");
}

/// A loopback HTTP server of the files under `root` (404 for anything else), read at each
/// request so that a test can change what it serves.
struct DirServer {
    port: u16,
}

impl DirServer {
    fn start(root: PathBuf) -> DirServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let file = root.join(path.trim_start_matches('/'));
                let mut stream = stream;
                match std::fs::read(&file).ok().filter(|_| !path.contains("..")) {
                    Some(body) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(&body);
                    }
                    None => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                }
            }
        });
        DirServer { port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

fn release(date: &str, packages_sha256: &str) -> String {
    format!(
        "Origin: envbuild test\nSuite: stable\nDate: {date}\nSHA256:\n {packages_sha256} 0 main/binary-amd64/Packages\n"
    )
}

/// Two vendor repositories (no snapshots): one with dists/SUITE/InRelease, one flat ("URL DIR/")
/// with only a Release; `lock` pins each key and index, a build gets them, a repository that
/// published a new index is refused (exit 2, the command that relocks it), and `lock --update`
/// takes the new one.
#[test]
fn lock_pins_apt_repositories_by_key_and_release_and_builds_refuse_a_changed_one() {
    let project = Project::new();
    let www = project.path().join("www");
    std::fs::create_dir_all(www.join("vendor/dists/stable")).unwrap();
    std::fs::create_dir_all(www.join("flat/binary")).unwrap();
    std::fs::write(
        www.join("vendor.key"),
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\nvendor\n",
    )
    .unwrap();
    std::fs::write(www.join("flat.key"), "flat key\n").unwrap();
    let first = release("Tue, 01 Dec 2026 10:00:00 UTC", &"1".repeat(64));
    std::fs::write(www.join("vendor/dists/stable/InRelease"), &first).unwrap();
    std::fs::write(
        www.join("flat/binary/Release"),
        release("Mon, 30 Nov 2026 08:00:00 UTC", &"2".repeat(64)),
    )
    .unwrap();
    let server = DirServer::start(www.clone());
    let write = |step: &str| {
        project.write(
            "apt.toml",
            &format!(
                r#"
[machines.box]

[[machines.box.stages]]
name = "repos"
sources = [
  {{ name = "vendor", apt = "{vendor} stable main", key = "{vendor_key}" }},
  {{ name = "flat", apt = "{flat} binary/", key = "{flat_key}" }},
]
steps = [
  "cp $ENVBUILD_INPUTS/sources/vendor/key vendor.key",
  "cp $ENVBUILD_INPUTS/sources/vendor/InRelease vendor.InRelease",
  "cp $ENVBUILD_INPUTS/sources/vendor/repo vendor.repo",
  "cp $ENVBUILD_INPUTS/sources/flat/Release flat.Release",
  "{step}",
]
"#,
                vendor = server.url("vendor"),
                vendor_key = server.url("vendor.key"),
                flat = server.url("flat"),
                flat_key = server.url("flat.key"),
            ),
        )
    };
    write("true");

    let (code, stderr) = stderr_of(&project, &["build", "apt"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("envbuild lock apt"), "{stderr}");

    project.ok(&["lock", "apt"]);
    let text = std::fs::read_to_string(project.envs().join("apt.lock")).unwrap();
    let lock: toml::Value = toml::from_str(&text).unwrap();
    let apt = lock["apt"].as_array().unwrap();
    assert_eq!(apt.len(), 2, "{text}");
    let entry = |repo: &str| {
        apt.iter()
            .find(|e| e["repo"].as_str().unwrap().starts_with(&server.url(repo)))
            .unwrap_or_else(|| panic!("no entry for {repo}: {text}"))
    };
    let sha = |path: &str| {
        let out = Command::new("sha256sum")
            .arg(www.join(path))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let vendor = entry("vendor");
    assert_eq!(
        vendor["key_sha256"].as_str(),
        Some(sha("vendor.key").as_str())
    );
    assert_eq!(vendor["release"].as_str(), Some("InRelease"));
    assert_eq!(
        vendor["release_sha256"].as_str(),
        Some(sha("vendor/dists/stable/InRelease").as_str())
    );
    assert_eq!(
        vendor["date"].as_str(),
        Some("Tue, 01 Dec 2026 10:00:00 UTC")
    );
    assert!(
        vendor.get("snapshot").is_none(),
        "a vendor repository has no snapshot: {text}"
    );
    let flat = entry("flat");
    assert_eq!(flat["release"].as_str(), Some("Release"));
    assert_eq!(flat["date"].as_str(), Some("Mon, 30 Nov 2026 08:00:00 UTC"));

    project.ok(&["build", "apt"]);
    let root = |name: &str| {
        std::fs::read_to_string(project.state().join("envs/apt/box/root").join(name)).unwrap()
    };
    assert_eq!(root("vendor.InRelease"), first);
    assert!(root("vendor.key").contains("vendor"));
    assert_eq!(
        root("vendor.repo").trim(),
        format!("{} stable main", server.url("vendor"))
    );

    // The vendor publishes a new index: a build of a stage that uses it is refused, nothing
    // cached; the replay of the stage already built needs no check.
    let second = release("Wed, 02 Dec 2026 10:00:00 UTC", &"3".repeat(64));
    std::fs::write(www.join("vendor/dists/stable/InRelease"), &second).unwrap();
    let entries = project.entries();
    write("echo rebuilt");
    let (code, stderr) = stderr_of(&project, &["build", "apt"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("changed since it was locked"), "{stderr}");
    assert!(
        stderr.contains(&sha("vendor/dists/stable/InRelease")),
        "{stderr}"
    );
    assert!(stderr.contains("envbuild lock ENV --update"), "{stderr}");
    assert_eq!(project.entries(), entries);

    project.ok(&["lock", "apt", "--update"]);
    let relocked = std::fs::read_to_string(project.envs().join("apt.lock")).unwrap();
    assert!(
        relocked.contains("Wed, 02 Dec 2026 10:00:00 UTC"),
        "{relocked}"
    );
    project.ok(&["build", "apt"]);
    assert_eq!(root("vendor.InRelease"), second);
}

/// The aio environment's per-release Python locks are `[[locks]]` recipes, as aio-lite's: the
/// committed files satisfy `lock --check`, and a release without one is refused with the
/// `envbuild lock` command that makes it (not run here: it downloads ~70 MB from PyPI).
#[test]
fn aio_release_locks_are_recipes_of_envbuild_lock() {
    let project = Project::on_repository_envs("lock-aio-store");
    project.ok(&["lock", "aio", "--check"]);
    // The earlier adjacent pair the repository vendors constraints for is locked too, and it
    // is a different build: every stage key differs from the default pair's.
    let older = ["--var", "release=2025.1", "--var", "release_next=2025.2"];
    project.ok(&[&["lock", "aio", "--check"][..], &older].concat());
    let keys = |extra: &[&str]| {
        let out = project.ok(&[&["plan", "aio", "--json"][..], extra].concat());
        let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
        plan["machines"][0]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["key"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (default, earlier) = (keys(&[]), keys(&older));
    assert_eq!(default.len(), earlier.len());
    assert!(
        default.iter().zip(&earlier).all(|(a, b)| a != b),
        "{default:?} {earlier:?}"
    );
    let (code, err) = stderr_of(&project, &["build", "aio", "--var", "release_next=2099.1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("input `requirements/aio-2099.1.txt` does not exist"),
        "{err}"
    );
    assert!(
        err.contains("make it with `envbuild lock aio --var release_next=2099.1`"),
        "{err}"
    );
    let (code, err) = stderr_of(
        &project,
        &["lock", "aio", "--check", "--var", "release_next=2099.1"],
    );
    assert_eq!(code, Some(2), "{err}");
    // The recipe is lock.sh, which names the series it knows when asked for another.
    let (code, err) = stderr_of(&project, &["lock", "aio", "--var", "release_next=2099.1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("lock.sh: no release 2099.1"), "{err}");
}
