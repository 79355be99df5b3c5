//! The jumpbox environment (environments/jumpbox.toml) proxying for real: its NGINX, from the
//! Debian package, in front of upstreams that are real processes on this machine (NGINX
//! instances this test starts on loopback ports, and a web server inside a second VM on the
//! jumpbox's private link), on the local backend and as libvirt VMs (QEMU user networking: the
//! forwarded ports are on 127.0.0.1, and a guest reaches this host's loopback as 10.0.2.2).
//!
//! The VM test needs the VM host of tests/libvirt.rs (dev/setup); its base image (bookworm +
//! nginx) is cached in `$ENVBUILD_TEST_CACHE/images` (about 5 minutes the first time) and its
//! stages in a store kept under the cargo target folder. It fails, never skips, without them.

mod common;

use std::path::{Path, PathBuf};

use common::nginx::Nginx;
use common::{Project, processes_mentioning};

/// A project on the repository's environments, its store at `store` (created if missing).
fn project(store: Option<&Path>) -> Project {
    let project = Project::new();
    std::fs::remove_dir(project.envs()).unwrap();
    std::os::unix::fs::symlink(
        concat!(env!("CARGO_MANIFEST_DIR"), "/environments"),
        project.envs(),
    )
    .unwrap();
    if let Some(store) = store {
        std::fs::create_dir_all(store).unwrap();
        std::os::unix::fs::symlink(store, project.store()).unwrap();
    }
    project
}

/// An upstream: an NGINX of the test's own on a loopback port, serving `body` at /, and
/// echoing back in response headers what the proxy told it about the request.
fn upstream(body: &str) -> Nginx {
    let root = tempfile::tempdir().unwrap().keep();
    std::fs::write(root.join("index.html"), body).unwrap();
    Nginx::start(
        &root,
        "add_header X-Seen-Forwarded-Port $http_x_forwarded_port;\n            add_header X-Seen-Host $http_host;",
    )
}

/// The raw HTTP/1.0 response to GET `path` on 127.0.0.1:`port`.
fn http_get(port: u64, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn port(up: &serde_json::Value, machine: &str, name: &str) -> u64 {
    up["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["machine"] == machine)
        .and_then(|m| m["ports"][name].as_u64())
        .unwrap_or_else(|| panic!("no port {name} of {machine} in {up}"))
}

/// The response proves it came from the upstream serving `body`, through the jumpbox's NGINX
/// listening on `public` (the headers it sets reached the upstream).
fn assert_proxied(response: &str, body: &str, public: u64) {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(body), "{response}");
    assert!(
        response.contains(&format!("X-Seen-Forwarded-Port: {public}\r\n")),
        "{response}"
    );
    assert!(
        response.contains(&format!("X-Seen-Host: 127.0.0.1:{public}\r\n")),
        "{response}"
    );
}

#[test]
fn the_local_jumpbox_proxies_its_two_ports_to_real_upstreams_and_says_502_when_one_is_gone() {
    let project = project(None);
    let jenkins = upstream("jenkins upstream\n");
    let kibana = upstream("kibana upstream\n");
    let routes = format!(
        "local_routes=jenkins=127.0.0.1:{} kibana=127.0.0.1:{}",
        jenkins.port, kibana.port
    );
    let up = project.json(&[
        "up", "jumpbox", "--only", "local", "--var", &routes, "--json",
    ]);
    let (public_jenkins, public_kibana) =
        (port(&up, "local", "jenkins"), port(&up, "local", "kibana"));

    assert_proxied(
        &http_get(public_jenkins, "/"),
        "jenkins upstream\n",
        public_jenkins,
    );
    assert_proxied(
        &http_get(public_kibana, "/"),
        "kibana upstream\n",
        public_kibana,
    );
    // Each upstream saw its request, from the proxy.
    for upstream in [&jenkins, &kibana] {
        let log = upstream.access_log_with("GET / ");
        assert!(log.contains("127.0.0.1 - - ["), "{log}");
    }
    // The jumpbox's own log names the upstream each request went to.
    let log =
        std::fs::read_to_string(project.state().join("envs/jumpbox/local/run/access.log")).unwrap();
    assert!(
        log.contains(&format!("upstream=127.0.0.1:{}", kibana.port)),
        "{log}"
    );

    // An upstream that stops is a 502 from the proxy, not a page of its own.
    drop(kibana);
    let gone = http_get(public_kibana, "/");
    assert!(gone.starts_with("HTTP/1.1 502"), "{gone}");
    assert_proxied(
        &http_get(public_jenkins, "/"),
        "jenkins upstream\n",
        public_jenkins,
    );

    project.ok(&["down", "jumpbox"]);
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
    assert!(std::net::TcpStream::connect(("127.0.0.1", public_jenkins as u16)).is_err());
}

#[test]
fn a_route_that_is_not_listen_host_port_fails_the_build_before_nginx_starts() {
    let project = project(None);
    let out = project.run(&[
        "up",
        "jumpbox",
        "--only",
        "local",
        "--var",
        "local_routes=jenkins=127.0.0.1:8080;include/etc/passwd",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The stage's step refuses it: the work failed (exit 1), nothing cached, no NGINX.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a port"), "{stderr}");
    assert!(stderr.contains("Nothing was cached"), "{stderr}");
    assert!(processes_mentioning(&project.state().display().to_string()).is_empty());
}

fn vm_store() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("jumpbox-store")
}

#[test]
fn the_jumpbox_vm_proxies_to_this_host_and_to_its_private_network_and_ssh_jumps_through_it() {
    common::vm::require_vm_host(&[("debootstrap", "debootstrap")]);
    // SAFETY: set before envbuild runs; the only test of this file that reads it.
    unsafe { std::env::set_var("ENVBUILD_IMAGES", common::vm::test_cache().join("images")) };
    let project = project(Some(&vm_store()));
    // :8080 goes to this host (10.0.2.2 in the guest is this host's loopback), :5601 to
    // `internal`, which the jumpbox reaches on their private link.
    let jenkins = upstream("jenkins on this host\n");
    let routes = format!("routes=8080=10.0.2.2:{} 5601=10.0.0.2:5601", jenkins.port);
    let up = project.json(&[
        "up",
        "jumpbox",
        "--only",
        "jumpbox,internal",
        "--var",
        &routes,
        "--json",
    ]);
    let mut domains = common::vm::domains_of(&["jumpbox"]);
    domains.sort();
    assert_eq!(
        domains,
        ["envbuild-jumpbox-internal", "envbuild-jumpbox-jumpbox"]
    );

    // ssh-config: the bastion straight on its forwarded port, `internal` through it on its
    // private address, every host key pinned in the known_hosts the backend wrote.
    let config = project.ok(&["ssh-config", "jumpbox"]);
    let block = |host: &str| -> String {
        config
            .split("\nHost ")
            .find(|b| b.starts_with(&format!("{host}\n")))
            .unwrap_or_else(|| panic!("no Host {host} in {config}"))
            .to_string()
    };
    let internal = block("jumpbox-internal");
    assert!(internal.contains("HostName 10.0.0.2\n"), "{internal}");
    assert!(
        internal.contains("ProxyJump jumpbox-jumpbox\n"),
        "{internal}"
    );
    let bastion = block("jumpbox-jumpbox");
    assert!(bastion.contains("HostName 127.0.0.1\n"), "{bastion}");
    assert!(!bastion.contains("ProxyJump"), "{bastion}");
    for text in [&internal, &bastion] {
        assert!(text.contains("StrictHostKeyChecking yes\n"), "{text}");
    }
    let known_hosts = internal
        .lines()
        .find_map(|l| l.trim().strip_prefix("UserKnownHostsFile "))
        .unwrap()
        .to_string();
    let pinned = std::fs::read_to_string(&known_hosts).unwrap();
    for alias in ["envbuild-jumpbox-jumpbox ", "envbuild-jumpbox-internal "] {
        assert!(pinned.contains(alias), "{pinned}");
    }
    let config_file = project.path().join("ssh_config");
    std::fs::write(&config_file, &config).unwrap();
    let ssh = |host: &str, command: &str| {
        std::process::Command::new("ssh")
            .arg("-F")
            .arg(&config_file)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=30",
                host,
                command,
            ])
            .output()
            .unwrap()
    };
    // Real ssh through the jumpbox: the command runs on `internal`, whose sshd saw the client
    // come from the jumpbox's private address.
    let out = ssh("jumpbox-internal", "echo $SSH_CONNECTION");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("10.0.0.1 "), "{stdout}");

    // `internal` serves a page on its private address only; the jumpbox's :5601 reaches it.
    let out = ssh(
        "jumpbox-internal",
        "mkdir -p /srv && echo 'kibana on internal' > /srv/index.html && busybox httpd -p 10.0.0.2:5601 -h /srv",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public_kibana = port(&up, "jumpbox", "kibana");
    let public_jenkins = port(&up, "jumpbox", "jenkins");
    let page = http_get(public_kibana, "/index.html");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.ends_with("kibana on internal\n"), "{page}");
    // :8080 reaches this host's upstream, which got the proxy's headers.
    let page = http_get(public_jenkins, "/");
    assert!(page.ends_with("jenkins on this host\n"), "{page}");
    assert!(page.contains("X-Seen-Forwarded-Port: 8080\r\n"), "{page}");
    let log = jenkins.access_log_with("GET / ");
    assert!(log.contains("GET / HTTP/1.1"), "{log}");

    // Another key pinned for `internal`: ssh refuses the machine.
    let other = project.path().join("other_key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    let other_key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let forged: String = pinned
        .lines()
        .map(
            |line| match line.strip_prefix("envbuild-jumpbox-internal ") {
                Some(_) => format!("envbuild-jumpbox-internal {}\n", other_key.trim()),
                None => format!("{line}\n"),
            },
        )
        .collect();
    assert_ne!(forged, pinned);
    std::fs::write(&known_hosts, &forged).unwrap();
    let out = ssh("jumpbox-internal", "true");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&known_hosts, &pinned).unwrap();

    project.ok(&["down", "jumpbox"]);
    assert!(
        common::vm::domains_of(&["jumpbox"]).is_empty(),
        "{:?}",
        common::vm::domains_of(&["jumpbox"])
    );
}
