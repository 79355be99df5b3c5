//! Headless Chromium under Jenkins' default Content-Security-Policy: the check of every HTML page
//! envbuild writes (report.html, the history page). Chromium comes from Debian (dev/setup).

use std::path::Path;
use std::process::Command;

/// Jenkins' default policy for archived and published files, as its documentation gives it, and
/// the `allow-same-origin` variant that newer Jenkins releases send.
pub const JENKINS_CSP: [&str; 2] = [
    "sandbox; default-src 'none'; img-src 'self'; style-src 'self';",
    "sandbox allow-same-origin; default-src 'none'; img-src 'self'; style-src 'self';",
];

/// Serves `dir` on a loopback port with `csp` on every answer, logging requests to stderr.
pub struct CspServer {
    child: std::process::Child,
    pub port: u16,
}

impl CspServer {
    pub fn start(dir: &Path, csp: &str) -> CspServer {
        let script = r#"
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Content-Security-Policy", sys.argv[2])
        super().end_headers()
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=sys.argv[1]))
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(dir)
            .arg(csp)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line.trim().parse().expect("the server's port");
        CspServer { child, port }
    }

    /// Stops the server and returns its request log.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let output = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

impl Drop for CspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loads `url` in headless Chromium (the flags docs/ci.md gives) and returns what its console
/// said; with `screenshot`, a PNG of the page is written there too.
pub fn chromium_console(url: &str, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new("timeout");
    command
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .args([
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .args(["--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args([
            "--enable-logging=stderr",
            "--v=1",
            "--window-size=1200,2400",
        ]);
    match screenshot {
        Some(png) => command.arg(format!("--screenshot={}", png.display())),
        None => command.arg("--dump-dom"),
    };
    let output = command
        .arg(url)
        .output()
        .expect("chromium (Debian chromium)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Control: the policy reports an inline style in Chromium's console, so a silent console means
/// something.
pub fn assert_the_policy_reports_inline_styles() {
    let control = tempfile::tempdir().unwrap();
    std::fs::write(
        control.path().join("index.html"),
        "<!DOCTYPE html><p style=\"color:red\">inline</p>",
    )
    .unwrap();
    let server = CspServer::start(control.path(), JENKINS_CSP[0]);
    let console = chromium_console(
        &format!("http://127.0.0.1:{}/index.html", server.port),
        None,
    );
    assert!(console.contains("Content Security Policy"), "{console}");
}
