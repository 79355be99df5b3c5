//! HTTPS through the real binary: remote caches, probes and ElasticSearch against an NGINX
//! that serves a certificate from a CA the test made; the CA given with --ca-file,
//! ENVBUILD_CA_FILE or `[tls] ca_file`; a wrong CA refused with the URL and the fix.

mod common;

use std::path::Path;
use std::process::Output;

use common::nginx::{Nginx, ServerCert};
use common::tls::Ca;
use common::{Project, count_lines};

/// An https NGINX with a certificate signed by the project's CA `lab`; also makes a second
/// CA, `other`, that signed nothing the server shows. ElasticSearch's bulk endpoint is
/// stood in for by a canned answer under /es/.
fn https_server(project: &Project) -> (Nginx, Ca, Ca) {
    let dir = project.path();
    let lab = Ca::new(dir, "lab");
    let other = Ca::new(dir, "other");
    let (cert, key) = lab.issue_server(dir, "server");
    let root = dir.join("www");
    std::fs::create_dir_all(root.join("site")).unwrap();
    std::fs::write(root.join("site/index.html"), "ok\n").unwrap();
    let es = r#"location /es/ {
            default_type application/json;
            return 200 '{"took":1,"errors":false,"items":[]}';
        }"#;
    let server = Nginx::start_tls(
        &root,
        "",
        es,
        ServerCert {
            cert: &cert,
            key: &key,
        },
    );
    (server, lab, other)
}

fn small_env(project: &Project) {
    project.write(
        "small.toml",
        r#"
[machines.box]
[[machines.box.stages]]
name = "deployed"
steps = ["mkdir -p etc && echo hello > etc/greeting", "head -c 300000 /dev/urandom > blob.bin"]
"#,
    );
}

/// envbuild with a store of its own (`store-<name>`) and no config file unless given.
fn run(project: &Project, store: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = project.cmd();
    cmd.env(
        "ENVBUILD_STORE",
        project.path().join(format!("store-{store}")),
    )
    .env_remove("ENVBUILD_CA_FILE")
    .env_remove("SSL_CERT_FILE")
    .env_remove("SSL_CERT_DIR")
    .args(args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status.code(),
        text(out)
    );
}

fn entries(project: &Project, store: &str) -> Vec<String> {
    common::file_names(&project.path().join(format!("store-{store}/v1/entries")))
}

#[test]
fn push_and_pull_over_https_trusting_the_ca_by_flag_env_or_config() {
    let project = Project::new();
    small_env(&project);
    let (server, lab, _) = https_server(&project);
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let key = project.path().join("a.key");
    let public = project.ok(&["cache", "keygen", key.to_str().unwrap()]);
    let public = public.trim();
    assert_ok(&run(&project, "a", &["build", "small", "-q"], &[]));

    let ca = lab.cert.to_str().unwrap();
    let pushed = run(
        &project,
        "a",
        &[
            "cache",
            "push",
            "small",
            "--cache-to",
            &url,
            "--cache-signing-key",
            key.to_str().unwrap(),
            "--ca-file",
            ca,
        ],
        &[],
    );
    assert_ok(&pushed);
    assert!(server.dir.path().join("access.log").is_file());
    let blobs = project.path().join("www/cache/v1/blobs");
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        1,
        "{}",
        text(&pushed)
    );

    // Pull with the CA from the environment.
    let pulled = run(
        &project,
        "b",
        &[
            "cache",
            "pull",
            "small",
            "--cache-from",
            &url,
            "--cache-trusted-key",
            public,
        ],
        &[("ENVBUILD_CA_FILE", &lab.cert)],
    );
    assert_ok(&pulled);
    assert!(text(&pulled).contains(" pulled"), "{}", text(&pulled));
    assert_eq!(entries(&project, "b"), entries(&project, "a"));
    assert_ok(&run(&project, "b", &["cache", "verify"], &[]));

    // And from a config file, relative to it.
    let config = project.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\nca_file = \"lab.pem\"\n\n[[cache.remote]]\nurl = \"{url}\"\ntrusted_keys = [\"{public}\"]\n"
        ),
    )
    .unwrap();
    let pulled = run(
        &project,
        "c",
        &["cache", "pull", "small"],
        &[("ENVBUILD_CONFIG", &config)],
    );
    assert_ok(&pulled);
    assert_eq!(entries(&project, "c"), entries(&project, "a"));
}

#[test]
fn a_certificate_from_an_unknown_ca_is_refused_with_the_url_and_the_fix() {
    let project = Project::new();
    small_env(&project);
    let (server, _, other) = https_server(&project);
    let url = server.url();
    let key = project.path().join("a.key");
    project.ok(&["cache", "keygen", key.to_str().unwrap()]);
    assert_ok(&run(&project, "a", &["build", "small", "-q"], &[]));
    let push = |extra: &[&str]| {
        let mut args = vec![
            "cache",
            "push",
            "small",
            "--cache-to",
            &url,
            "--cache-signing-key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&project, "a", &args, &[])
    };
    // The host's roots alone, then a CA file that holds the wrong CA: a failure to reach the
    // remote (exit 1), not bad input.
    for (extra, names_file) in [
        (vec![], false),
        (vec!["--ca-file", other.cert.to_str().unwrap()], true),
    ] {
        let out = push(&extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("cannot reach the remote cache at {url}/v1/")),
            "{err}"
        );
        let server = format!("127.0.0.1:{}", server.port);
        assert!(err.contains(&format!("TLS with {server} failed: the server's certificate is not signed by a CA trusted here")), "{err}");
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(
            err.contains("fix: if a private CA signed the server's certificate"),
            "{err}"
        );
        assert!(err.contains("--ca-file FILE, ENVBUILD_CA_FILE"), "{err}");
        assert_eq!(err.contains("other.pem"), names_file, "{err}");
    }
    assert!(
        !project.path().join("www/cache").exists(),
        "nothing reached the server"
    );

    // A CA file that cannot be read, or holds no certificate, is bad input before any work.
    let not_pem = project.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (file, says) in [
        ("/nonexistent/ca.pem", "cannot read the CA file"),
        (not_pem.to_str().unwrap(), "holds no PEM certificate"),
    ] {
        let out = push(&["--ca-file", file]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says) && err.contains("fix:"), "{err}");
    }
}

/// A web server machine to keep `test` happy, probed over https on the NGINX instead.
fn probed_flow(project: &Project, probe_url: &str) {
    project.write(
        "web.toml",
        &format!(
            r#"
{web}
[flows.check]
default = true
from_version = "1"
to_version = "2"
cleanup = ["down"]

[[flows.check.probes]]
name = "tls"
url = "{probe_url}"
rate = 20.0

[[flows.check.phases]]
name = "deploy"
action = "up"

[[flows.check.phases]]
name = "probed"
action = "run"
run = ["sleep 1"]
probes = true
"#,
            web = common::WEB_MACHINE
        ),
    );
}

#[test]
fn probes_and_elasticsearch_speak_https_with_the_run_s_ca() {
    let project = Project::new();
    let (server, lab, _) = https_server(&project);
    let base = format!("https://127.0.0.1:{}", server.port);
    probed_flow(&project, &format!("{base}/site/index.html"));
    let out = project.path().join("run");
    let es = format!("{base}/es");
    let args = [
        "test",
        "web",
        "--out",
        out.to_str().unwrap(),
        "--es-url",
        &es,
    ];
    let result = run(&project, "a", &args, &[("ENVBUILD_CA_FILE", &lab.cert)]);
    assert_ok(&result);
    assert!(
        text(&result).contains(&format!("pushed 0 documents to {es}")),
        "{}",
        text(&result)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let probe = &summary["probes"][0];
    assert_eq!(probe["failed"], 0, "{probe}");
    assert!(probe["successful"].as_u64().unwrap() >= 5, "{probe}");
    let log = server.access_log_with("\"POST /es/_bulk HTTP/1.1\" 200");
    assert!(
        log.contains("\"GET /site/index.html HTTP/1.1\" 200"),
        "{log}"
    );
    assert!(log.contains("\"POST /es/_bulk HTTP/1.1\" 200"), "{log}");

    // Without the CA every probe request fails on the certificate, and the push says why.
    let out = project.path().join("run-untrusted");
    let args = [
        "test",
        "web",
        "--out",
        out.to_str().unwrap(),
        "--es-url",
        &es,
    ];
    let result = run(&project, "a", &args, &[]);
    let err = text(&result);
    assert!(
        err.contains("pushing results to ElasticSearch failed"),
        "{err}"
    );
    assert!(err.contains("fix: if a private CA signed"), "{err}");
    let samples = std::fs::read_to_string(out.join("status.jsonl")).unwrap();
    assert!(count_lines(&out.join("status.jsonl")) >= 5, "{samples}");
    for line in samples.lines() {
        let sample: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(sample["ok"], false, "{line}");
        let error = sample["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("TLS with 127.0.0.1:{} failed", server.port)),
            "{error}"
        );
    }
}
