//! An NGINX of a test's own on a loopback port (Debian's nginx, WebDAV PUT/DELETE/MOVE): the
//! remote cache server of tests/remote_cache.rs, tests/libvirt.rs and, over TLS with a
//! certificate from a CA the test made, tests/https.rs.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// An NGINX of this test's own: config, root and logs in a temp dir; killed on drop.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    scheme: &'static str,
}

/// The certificate and key an https NGINX serves.
pub struct ServerCert<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl Nginx {
    /// The access log once it holds a line containing `needle` (NGINX logs a request after it
    /// has answered it, so a client can be done before its line is written), or as it is after
    /// 10 s.
    pub fn access_log_with(&self, needle: &str) -> String {
        let path = self.dir.path().join("access.log");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            if log.contains(needle) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Serves `root` (created if missing); `extra` goes into the location block.
    pub fn start(root: &Path, extra: &str) -> Nginx {
        Nginx::start_with(root, extra, "", None)
    }

    /// Serves `root` over https with `cert`; `server` goes into the server block (more
    /// locations), `extra` into the root location.
    pub fn start_tls(root: &Path, extra: &str, server: &str, cert: ServerCert<'_>) -> Nginx {
        Nginx::start_with(root, extra, server, Some(cert))
    }

    fn start_with(root: &Path, extra: &str, server: &str, tls: Option<ServerCert<'_>>) -> Nginx {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "nginx is required by the remote cache tests and was not found.\n  fix: apt-get install nginx (dev/setup installs it)",
            );
        std::fs::create_dir_all(root).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let (ssl, certificate) = match &tls {
            Some(cert) => (
                " ssl",
                format!(
                    "ssl_certificate {};\n        ssl_certificate_key {};",
                    cert.cert.display(),
                    cert.key.display()
                ),
            ),
            None => ("", String::new()),
        };
        let config = format!(
            r#"daemon off;
master_process off;
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port}{ssl};
        {certificate}
        root {root};
        client_max_body_size 0;
        {server}
        location / {{
            dav_methods PUT DELETE MOVE;
            create_full_put_path on;
            {extra}
        }}
    }}
}}
"#,
            root = root.display()
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nginx");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Nginx {
                    dir,
                    child,
                    port,
                    scheme: if tls.is_some() { "https" } else { "http" },
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}) before listening:\n{log}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("nginx did not listen on 127.0.0.1:{port} within 10 s");
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/cache", self.scheme, self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}
