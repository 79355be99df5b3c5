//! Remote caches against a real NGINX (WebDAV PUT/DELETE/MOVE) on a loopback port: push/pull
//! round trip, pull-through during build, tampering, untrusted keys, interrupted downloads,
//! a killed push, concurrent pushes, read-only mode, config file and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::nginx::Nginx;
use common::{Project, count_lines};

/// Two stages; every step appends a line to `counter` so tests can see what ran.
fn small_env(project: &Project) -> PathBuf {
    let counter = project.path().join("counter");
    project.write(
        "small.toml",
        &format!(
            r#"
[machines.box]
[[machines.box.stages]]
name = "deployed"
steps = ["echo deployed >> {c}", "mkdir -p etc && echo hello > etc/greeting", "head -c 200000 /dev/urandom > blob.bin"]

[[machines.box.stages]]
name = "upgraded"
steps = ["echo upgraded >> {c}", "echo new > etc/version"]
"#,
            c = counter.display()
        ),
    );
    counter
}

/// One stage whose artifact is 3 MB of random bytes: transfers long enough to interrupt.
fn big_env(project: &Project) {
    project.write(
        "big.toml",
        r#"
[machines.box]
[[machines.box.stages]]
name = "disk"
steps = ["head -c 3000000 /dev/urandom > disk.img"]
"#,
    );
}

/// A signing key and its public key in the project folder.
fn keygen(project: &Project, name: &str) -> (PathBuf, String) {
    let path = project.path().join(name);
    let public = project.ok(&["cache", "keygen", path.to_str().unwrap()]);
    (path, public.trim().to_string())
}

/// An "agent": its own store and state in the project folder, with remote-cache flags.
fn agent(project: &Project, name: &str, args: &[&str]) -> Output {
    agent_process(project, name, args).output().unwrap()
}

/// Agent `name` as a process to spawn (for runs that are killed or run side by side).
fn agent_process(project: &Project, name: &str, args: &[&str]) -> Command {
    let mut cmd = project.agent(name);
    cmd.args(args);
    cmd
}

fn agent_config(project: &Project, name: &str, text: &str) {
    std::fs::write(project.path().join(format!("{name}.toml")), text).unwrap();
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn entries(project: &Project, name: &str) -> Vec<String> {
    common::file_names(&project.path().join(format!("store-{name}/v1/entries")))
}

fn actions(out: Output) -> Vec<String> {
    let text = ok(out);
    let json_end = text.rfind('}').unwrap();
    let report: serde_json::Value = serde_json::from_str(&text[..=json_end]).unwrap();
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["stage"].as_str().unwrap(),
                s["action"].as_str().unwrap()
            )
        })
        .collect()
}

/// Agent `a` builds and pushes `small` to `server`; returns the trusted public key.
fn build_and_push(project: &Project, server: &Nginx) -> String {
    let (key, public) = keygen(project, "a.key");
    agent_config(project, "a", "");
    let key = key.to_str().unwrap().to_string();
    let url = server.url();
    let out = ok(agent(
        project,
        "a",
        &[
            "build",
            "small",
            "--cache-to",
            &url,
            "--cache-signing-key",
            &key,
        ],
    ));
    assert_eq!(out.matches(" pushed to ").count(), 2, "{out}");
    public
}

fn blob_files(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("cache/v1/blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[test]
fn push_then_pull_into_another_store_replays_without_building() {
    let project = Project::new();
    let counter = small_env(&project);
    let root = project.path().join("www");
    let server = Nginx::start(&root, "");
    let public = build_and_push(&project, &server);
    assert_eq!(count_lines(&counter), 2);
    assert!(root.join("cache/v1").read_dir().unwrap().count() >= 3);

    agent_config(&project, "b", "");
    let url = server.url();
    let pulled = ok(agent(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "small",
            "--cache-from",
            &url,
            "--cache-trusted-key",
            &public,
        ],
    ));
    assert_eq!(pulled.matches(" pulled\n").count(), 2, "{pulled}");
    assert_eq!(entries(&project, "b"), entries(&project, "a"));
    ok(agent(&project, "b", &["cache", "verify"]));
    let built = actions(agent(&project, "b", &["build", "small", "--json"]));
    assert_eq!(built, ["deployed:cached", "upgraded:restored"]);
    assert_eq!(
        count_lines(&counter),
        2,
        "nothing was built by the second agent"
    );
    let greeting = project
        .path()
        .join("state-b/envs/small/box/root/etc/greeting");
    assert_eq!(std::fs::read_to_string(greeting).unwrap(), "hello\n");

    // Pushing again is a no-op.
    let again = ok(agent(
        &project,
        "a",
        &[
            "cache",
            "push",
            "small",
            "--cache-to",
            &url,
            "--cache-signing-key",
            project.path().join("a.key").to_str().unwrap(),
        ],
    ));
    assert_eq!(again.matches(" already on ").count(), 2, "{again}");
}

#[test]
fn a_sparse_file_stays_sparse_through_push_and_pull() {
    use std::os::unix::fs::MetadataExt;
    let project = Project::new();
    project.write(
        "sparse.toml",
        r#"
[machines.box]
[[machines.box.stages]]
name = "disk"
steps = ["truncate -s 256M disk.img && printf data | dd of=disk.img bs=1 seek=1000000 conv=notrunc status=none"]
"#,
    );
    let root = project.path().join("www");
    let server = Nginx::start(&root, "");
    let (key, public) = keygen(&project, "a.key");
    agent_config(&project, "a", "");
    agent_config(&project, "b", "");
    let url = server.url();
    ok(agent(
        &project,
        "a",
        &[
            "build",
            "sparse",
            "--cache-to",
            &url,
            "--cache-signing-key",
            key.to_str().unwrap(),
        ],
    ));
    let blob: u64 = blob_files(&root)
        .iter()
        .map(|b| std::fs::metadata(b).unwrap().len())
        .sum();
    assert!(
        blob < 1 << 20,
        "the blob of 4 bytes of data is {blob} bytes"
    );
    ok(agent(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "sparse",
            "--cache-from",
            &url,
            "--cache-trusted-key",
            &public,
        ],
    ));
    let entry = &entries(&project, "b")[0];
    let disk = project
        .path()
        .join("store-b/v1/entries")
        .join(entry)
        .join("artifact/disk.img");
    let meta = std::fs::metadata(&disk).unwrap();
    assert_eq!(meta.len(), 256 << 20);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "{} bytes pulled",
        meta.blocks() * 512
    );
    ok(agent(&project, "b", &["cache", "verify"]));
}

#[test]
fn build_pulls_through_and_starts_at_the_first_stage_no_remote_has() {
    let project = Project::new();
    let counter = small_env(&project);
    let server = Nginx::start(&project.path().join("www"), "");
    let public = build_and_push(&project, &server);

    // Agent b's spec has one more stage: it pulls `upgraded` and builds only the new one.
    let spec = std::fs::read_to_string(project.envs().join("small.toml")).unwrap();
    project.write(
        "small.toml",
        &format!(
            "{spec}\n[[machines.box.stages]]\nname = \"tested\"\nsteps = [\"echo tested >> {}\"]\n",
            counter.display()
        ),
    );
    agent_config(
        &project,
        "b",
        &format!(
            "[cache]\ntrusted_keys = [\"{public}\"]\n[[cache.remote]]\nurl = \"{}\"\n",
            server.url()
        ),
    );
    // plan says which stages a remote has, before anything moves.
    let plan = ok(agent(&project, "b", &["plan", "small"]));
    let states: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| ["cached", "remote", "build"].contains(w))
        .collect();
    assert_eq!(states, ["remote", "remote", "build"], "{plan}");
    assert!(plan.contains("on remote cache http://127.0.0.1:"), "{plan}");
    let built = actions(agent(&project, "b", &["build", "small", "--json"]));
    assert_eq!(
        built,
        ["deployed:cached", "upgraded:restored", "tested:built"]
    );
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "deployed\nupgraded\ntested\n"
    );
}

#[test]
fn a_tampered_blob_or_statement_is_refused_and_the_stage_built_locally() {
    let project = Project::new();
    let counter = small_env(&project);
    let root = project.path().join("www");
    let server = Nginx::start(&root, "");
    let public = build_and_push(&project, &server);
    let url = server.url();

    // Flip one byte in the middle of every blob on the server.
    for blob in blob_files(&root) {
        let mut bytes = std::fs::read(&blob).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&blob, bytes).unwrap();
    }
    agent_config(&project, "b", "");
    let out = agent(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "small",
            "--cache-from",
            &url,
            "--cache-trusted-key",
            &public,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not the signed"), "{}", stderr(&out));
    assert!(entries(&project, "b").is_empty());
    let tmp = project.path().join("store-b/v1/tmp");
    assert!(
        files_under(&tmp).is_empty(),
        "nothing of the refused entry is kept"
    );

    let out = agent(
        &project,
        "b",
        &[
            "build",
            "small",
            "--cache-from",
            &url,
            "--cache-trusted-key",
            &public,
        ],
    );
    let text = ok(out);
    assert!(
        text.contains("refusing remote entry") && text.contains("building it locally"),
        "{text}"
    );
    assert_eq!(
        count_lines(&counter),
        4,
        "both stages were built again locally"
    );

    // A statement whose content changed after signing.
    let statement = std::fs::read_dir(root.join("cache/v1"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sig"))
        .unwrap();
    let text = std::fs::read_to_string(&statement).unwrap();
    std::fs::write(&statement, text.replace("entry: ", "entry: x")).unwrap();
    let key = statement.file_stem().unwrap().to_str().unwrap();
    agent_config(&project, "c", "");
    let out = agent(
        &project,
        "c",
        &[
            "cache",
            "pull",
            key,
            "--cache-from",
            &url,
            "--cache-trusted-key",
            &public,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tampered"), "{}", stderr(&out));
    assert!(entries(&project, "c").is_empty());
}

#[test]
fn a_statement_in_the_old_v1_format_is_refused_with_a_fix() {
    let project = Project::new();
    small_env(&project);
    let root = project.path().join("www");
    let server = Nginx::start(&root, "");
    let public = build_and_push(&project, &server);
    for item in std::fs::read_dir(root.join("cache/v1")).unwrap().flatten() {
        let path = item.path();
        if path.extension().is_some_and(|x| x == "sig") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("envbuild-remote-entry v2\n"), "{text}");
            std::fs::write(&path, text.replace("remote-entry v2", "remote-entry v1")).unwrap();
        }
    }
    agent_config(&project, "b", "");
    let out = agent(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "small",
            "--cache-from",
            &server.url(),
            "--cache-trusted-key",
            &public,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("old `envbuild-remote-entry v1` format")
            && err.contains("push the entry again"),
        "{err}"
    );
    assert!(entries(&project, "b").is_empty());
}

#[test]
fn unsigned_or_untrusted_entries_are_refused() {
    let project = Project::new();
    small_env(&project);
    let root = project.path().join("www");
    let server = Nginx::start(&root, "");
    build_and_push(&project, &server);
    let url = server.url();
    let (_, stranger) = keygen(&project, "stranger.key");

    agent_config(&project, "b", "");
    let out = agent(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "small",
            "--cache-from",
            &url,
            "--cache-trusted-key",
            &stranger,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("which is not a trusted key") && err.contains("fix:"),
        "{err}"
    );
    assert!(entries(&project, "b").is_empty());

    let out = agent(
        &project,
        "b",
        &["cache", "pull", "small", "--cache-from", &url],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no trusted keys are configured"),
        "{}",
        stderr(&out)
    );

    // Strip the signatures: unsigned statements.
    for item in std::fs::read_dir(root.join("cache/v1")).unwrap().flatten() {
        let path = item.path();
        if path.extension().is_some_and(|x| x == "sig") {
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, &text[..text.find("signature:").unwrap()]).unwrap();
        }
    }
    let trusted = std::fs::read_to_string(project.path().join("a.key.pub")).unwrap();
    let out = agent(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "small",
            "--cache-from",
            &url,
            "--cache-trusted-key",
            trusted.trim(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unsigned"), "{}", stderr(&out));
    assert!(entries(&project, "b").is_empty());
}

#[test]
fn a_killed_pull_adds_nothing_and_the_next_pull_starts_over() {
    let project = Project::new();
    big_env(&project);
    let root = project.path().join("www");
    let fast = Nginx::start(&root, "");
    let (key, public) = keygen(&project, "a.key");
    agent_config(&project, "a", "");
    agent_config(&project, "b", "");
    ok(agent(
        &project,
        "a",
        &[
            "build",
            "big",
            "--cache-to",
            &fast.url(),
            "--cache-signing-key",
            key.to_str().unwrap(),
        ],
    ));

    // A slow server over the same files: the pull is killed half-way.
    let slow = Nginx::start(&root, "limit_rate 300k;");
    let slow_url = slow.url();
    let child = agent_process(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "big",
            "--cache-from",
            &slow_url,
            "--cache-trusted-key",
            &public,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // What the pull has unpacked so far, in its private folder.
    let tmp = project.path().join("store-b/v1/tmp");
    let unpacked = || {
        files_under(&tmp)
            .iter()
            .map(|f| f.metadata().unwrap().len())
            .sum::<u64>()
    };
    kill_once(child, "pull", || unpacked() >= 500_000);
    assert!(
        entries(&project, "b").is_empty(),
        "a killed pull added nothing"
    );
    assert!(unpacked() > 0, "its private folder is still there");

    // The next pull starts over, and the killed pull's folder is removed.
    let out = ok(agent(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "big",
            "--cache-from",
            &fast.url(),
            "--cache-trusted-key",
            &public,
        ],
    ));
    assert!(out.contains(" pulled"), "{out}");
    assert_eq!(entries(&project, "b"), entries(&project, "a"));
    ok(agent(&project, "b", &["cache", "verify"]));
    assert!(files_under(&tmp).is_empty(), "{:?}", files_under(&tmp));
}

#[test]
fn a_killed_push_publishes_nothing_and_the_next_push_completes() {
    let project = Project::new();
    big_env(&project);
    let root = project.path().join("www");
    let server = Nginx::start(&root, "");
    let (key, public) = keygen(&project, "a.key");
    let key = key.to_str().unwrap().to_string();
    agent_config(&project, "a", "");
    agent_config(&project, "b", "");
    ok(agent(&project, "a", &["build", "big"]));
    let built = entries(&project, "a");

    // Through a proxy that uploads slowly: the push is killed a third of the way.
    let (proxy, relayed) = slow_upload_proxy(server.port);
    let slow_url = format!("http://127.0.0.1:{proxy}/cache");
    let child = agent_process(
        &project,
        "a",
        &[
            "cache",
            "push",
            "big",
            "--cache-to",
            &slow_url,
            "--cache-signing-key",
            &key,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    kill_once(child, "push", || {
        relayed.load(std::sync::atomic::Ordering::SeqCst) >= 1_000_000
    });
    let published: Vec<PathBuf> = files_under(&root.join("cache/v1"))
        .into_iter()
        .filter(|f| !f.starts_with(root.join("cache/v1/tmp")))
        .collect();
    assert!(
        published.is_empty(),
        "a killed push published {published:?}"
    );
    assert_eq!(entries(&project, "a"), built, "the store is as it was");
    let tmp = project.path().join("store-a/v1/tmp");
    assert!(files_under(&tmp).is_empty(), "{:?}", files_under(&tmp));

    // The next push uploads the entry whole; it pulls and verifies.
    let url = server.url();
    let out = ok(agent(
        &project,
        "a",
        &[
            "cache",
            "push",
            "big",
            "--cache-to",
            &url,
            "--cache-signing-key",
            &key,
        ],
    ));
    assert!(out.contains(" pushed to "), "{out}");
    ok(agent(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "big",
            "--cache-from",
            &url,
            "--cache-trusted-key",
            &public,
        ],
    ));
    assert_eq!(entries(&project, "b"), built);
    ok(agent(&project, "b", &["cache", "verify"]));
}

/// A loopback proxy to `port` that relays what clients send at about 1 MB/s (answers at full
/// speed); returns its port and the bytes relayed to the server so far.
fn slow_upload_proxy(port: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let relayed = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = relayed.clone();
    let proxy_port = proxy(port, Direction::Upload, move |mut client, mut server| {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match client.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if server.write_all(&buffer[..n]).is_err() {
                break;
            }
            counted.fetch_add(n, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(16));
        }
    });
    (proxy_port, relayed)
}

#[test]
fn a_broken_connection_is_resumed_with_a_range_request() {
    let project = Project::new();
    big_env(&project);
    let server = Nginx::start(&project.path().join("www"), "");
    let (key, public) = keygen(&project, "a.key");
    agent_config(&project, "a", "");
    agent_config(&project, "b", "");
    ok(agent(
        &project,
        "a",
        &[
            "build",
            "big",
            "--cache-to",
            &server.url(),
            "--cache-signing-key",
            key.to_str().unwrap(),
        ],
    ));
    let proxy = flaky_proxy(server.port, 1_000_000);
    let url = format!("http://127.0.0.1:{proxy}/cache");
    let out = ok(agent(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "big",
            "--cache-from",
            &url,
            "--cache-trusted-key",
            &public,
        ],
    ));
    assert!(
        out.contains("the transfer broke at") && out.contains("resuming"),
        "{out}"
    );
    assert_eq!(entries(&project, "b"), entries(&project, "a"));
    ok(agent(&project, "b", &["cache", "verify"]));
    let log = server.access_log_with("\" 206 ");
    assert!(
        log.contains("\" 206 "),
        "the rest was asked with a Range request:\n{log}"
    );
}

/// Kills the `what` (a pull, a push) running in `child` once `reached()`; it must not end
/// before.
fn kill_once(mut child: Child, what: &str, reached: impl Fn() -> bool) {
    while !reached() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the {what} ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Every file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = item.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A loopback proxy to `port` that cuts the first response longer than `cut` bytes after `cut`
/// bytes (a connection that breaks mid-transfer); every other connection is relayed whole.
fn flaky_proxy(port: u16, cut: usize) -> u16 {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    proxy(port, Direction::Download, move |mut server, mut client| {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut relayed = 0;
        loop {
            let n = match server.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if relayed + n > cut && !done.swap(true, Ordering::SeqCst) {
                let _ = client.write_all(&buffer[..cut - relayed]);
                break;
            }
            if client.write_all(&buffer[..n]).is_err() {
                break;
            }
            relayed += n;
        }
    })
}

enum Direction {
    Upload,
    Download,
}

/// A loopback proxy to `port`; returns its port. Of each connection, `relay(from, to)` carries
/// one direction and then both ends are shut; the other direction is copied as it comes.
fn proxy(
    port: u16,
    direction: Direction,
    relay: impl Fn(std::net::TcpStream, std::net::TcpStream) + Clone + Send + 'static,
) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let server = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let ((mut copy_from, mut copy_to), (from, to)) = match direction {
                Direction::Upload => ((server2, client2), (client, server)),
                Direction::Download => ((client2, server2), (server, client)),
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut copy_from, &mut copy_to);
            });
            let relay = relay.clone();
            std::thread::spawn(move || {
                let (from_end, to_end) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                relay(from, to);
                let _ = to_end.shutdown(std::net::Shutdown::Both);
                let _ = from_end.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    proxy_port
}

#[test]
fn two_agents_pushing_the_same_key_at_once_leave_one_sound_entry() {
    let project = Project::new();
    small_env(&project);
    let root = project.path().join("www");
    let server = Nginx::start(&root, "");
    let (key, public) = keygen(&project, "ci.key");
    let key = key.to_str().unwrap().to_string();
    for name in ["a", "b"] {
        agent_config(&project, name, "");
        ok(agent(&project, name, &["build", "small"]));
    }
    let url = server.url();
    let push = |name: &str| {
        agent_process(
            &project,
            name,
            &[
                "cache",
                "push",
                "small",
                "--cache-to",
                &url,
                "--cache-signing-key",
                &key,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (first, second) = (push("a"), push("b"));
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let text: String = outputs.into_iter().map(ok).collect();
    assert_eq!(
        text.matches(" pushed to ").count(),
        2,
        "each of the two entries is pushed once:\n{text}"
    );
    assert_eq!(
        text.matches(" already on ").count() + text.matches("another agent first").count(),
        2,
        "{text}"
    );

    agent_config(&project, "c", "");
    ok(agent(
        &project,
        "c",
        &[
            "cache",
            "pull",
            "small",
            "--cache-from",
            &url,
            "--cache-trusted-key",
            &public,
        ],
    ));
    ok(agent(&project, "c", &["cache", "verify"]));
    assert_eq!(entries(&project, "c").len(), 2);
    let leftovers = std::fs::read_dir(root.join("cache/v1/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "temporary statements are cleaned up");
}

#[test]
fn read_only_mode_pulls_but_never_pushes() {
    let project = Project::new();
    let counter = small_env(&project);
    let root = project.path().join("www");
    let server = Nginx::start(&root, "");
    let (key, public) = keygen(&project, "ci.key");
    let url = server.url();
    // The config would push; the pull-request build says read-only.
    agent_config(
        &project,
        "pr",
        &format!(
            "[cache]\nsigning_key = \"ci.key\"\ntrusted_keys = [\"ci.key.pub\"]\n[[cache.remote]]\nurl = \"{url}\"\npush = true\n"
        ),
    );
    let out = ok(agent(
        &project,
        "pr",
        &["build", "small", "--cache-read-only"],
    ));
    assert!(
        out.contains("read-only cache mode: nothing pushed"),
        "{out}"
    );
    assert!(
        !root.join("cache/v1").exists(),
        "nothing reached the server"
    );
    let out = agent(
        &project,
        "pr",
        &["cache", "push", "small", "--cache-read-only"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));

    // main pushes (config alone), the read-only build pulls it.
    agent_config(
        &project,
        "main",
        &std::fs::read_to_string(project.path().join("pr.toml")).unwrap(),
    );
    ok(agent(&project, "main", &["build", "small"]));
    assert_eq!(count_lines(&counter), 4);
    agent_config(
        &project,
        "pr2",
        &format!(
            "[cache]\nread_only = true\ntrusted_keys = [\"{public}\"]\n[[cache.remote]]\nurl = \"{url}\"\npush = true\n"
        ),
    );
    let built = actions(agent(&project, "pr2", &["build", "small", "--json"]));
    assert_eq!(built, ["deployed:cached", "upgraded:restored"]);
    assert_eq!(count_lines(&counter), 4);
    let _ = key;
}

#[test]
fn bad_input_exits_2_and_says_what_to_fix() {
    let project = Project::new();
    small_env(&project);
    agent_config(&project, "a", "");
    ok(agent(&project, "a", &["build", "small"]));
    let (key, public) = keygen(&project, "a.key");
    let key = key.to_str().unwrap();

    // The key file is private and its secret is never printed.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let secret = std::fs::read_to_string(key).unwrap();
    let secret = secret.trim().split(':').nth(1).unwrap();
    assert!(!public.contains(secret));
    let again = project.run(&["cache", "keygen", key]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing key is never overwritten"
    );

    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{free_port}/cache");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "cache",
                "push",
                "small",
                "--cache-to",
                "ftp://x/",
                "--cache-signing-key",
                key,
            ],
            "http(s)://HOST",
        ),
        (
            vec![
                "cache",
                "push",
                "small",
                "--cache-to",
                &down,
                "--cache-signing-key",
                "/nonexistent.key",
            ],
            "cache keygen",
        ),
        (
            vec!["cache", "push", "small", "--cache-to", &down],
            "signing key",
        ),
        (vec!["cache", "push", "small"], "no remote cache to push to"),
        (
            vec!["cache", "pull", "small"],
            "no remote cache to pull from",
        ),
        (
            vec![
                "cache",
                "pull",
                "small",
                "--cache-from",
                &down,
                "--cache-trusted-key",
                "/nonexistent.pub",
            ],
            "trusted key",
        ),
    ];
    agent_config(&project, "empty", "");
    for (args, expected) in cases {
        // Pulls run on an empty store, so that they have to ask the remote.
        let name = if args[1] == "pull" { "empty" } else { "a" };
        let out = agent(&project, name, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(expected) && err.contains("fix:"),
            "{args:?}: {err}"
        );
    }

    agent_config(&project, "a", "[cache]\nremotes = 1\n");
    let out = agent(&project, "a", &["cache", "ls"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("a.toml"), "{}", stderr(&out));
}

#[test]
fn a_remote_that_is_down_or_answers_out_of_protocol_fails_the_work_with_exit_1() {
    let project = Project::new();
    small_env(&project);
    agent_config(&project, "a", "");
    agent_config(&project, "empty", "");
    ok(agent(&project, "a", &["build", "small"]));
    let (key, public) = keygen(&project, "a.key");
    let key = key.to_str().unwrap();
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{free_port}/cache");
    let root = project.path().join("www");
    let server = Nginx::start(&root, "return 500;");
    let failing = server.url();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "a",
            vec![
                "cache",
                "push",
                "small",
                "--cache-to",
                &down,
                "--cache-signing-key",
                key,
            ],
            "cannot reach",
        ),
        (
            "empty",
            vec![
                "cache",
                "pull",
                "small",
                "--cache-from",
                &down,
                "--cache-trusted-key",
                &public,
            ],
            "cannot reach",
        ),
        // A server error on the statement is reported, not taken for a missing entry.
        (
            "a",
            vec![
                "cache",
                "push",
                "small",
                "--cache-to",
                &failing,
                "--cache-signing-key",
                key,
            ],
            "answered 500",
        ),
    ];
    for (name, args, expected) in cases {
        let out = agent(&project, name, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(expected) && err.contains("\n  fix: "),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn servers_without_chunked_uploads_or_move_get_plain_puts() {
    let project = Project::new();
    let counter = small_env(&project);
    let root = project.path().join("www");
    // Like S3 presigned URLs: a Content-Length on every PUT, no WebDAV MOVE.
    let server = Nginx::start(
        &root,
        "if ($http_transfer_encoding ~ chunked) { return 411; }\n            if ($request_method = MOVE) { return 405; }",
    );
    let public = build_and_push(&project, &server);
    let log = server.access_log_with("\"MOVE ");
    assert!(log.contains("\" 411 ") && log.contains("\"MOVE "), "{log}");

    agent_config(&project, "b", "");
    let built = actions(agent(
        &project,
        "b",
        &[
            "build",
            "small",
            "--json",
            "--cache-from",
            &server.url(),
            "--cache-trusted-key",
            &public,
        ],
    ));
    assert_eq!(built, ["deployed:cached", "upgraded:restored"]);
    assert_eq!(count_lines(&counter), 2);
    assert!(files_under(&root.join("cache/v1/tmp")).is_empty());
}
