//! Guests trust what the host trusts (docs/backends.md, "Host CAs in the guest"): the CA
//! certificates this host adds to its own store (`/usr/local/share/ca-certificates`, the folder
//! `update-ca-certificates` reads) and the run's `--ca-file` are put into a build VM's trust
//! store before its first step, and taken out again before its disk is committed.
//!
//! A host behind a TLS-intercepting egress proxy reaches PyPI only if the proxy's CA is trusted;
//! a guest under QEMU's user networking goes out through the same proxy. The certificates change
//! what a step can reach, not what it builds: they are not part of any stage key, and the stage's
//! log records their fingerprints (docs/design-notes.md).

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};
use crate::key::digest::sha256_bytes;

/// Where Debian's `update-ca-certificates` takes local CAs from, on the host and in the guest.
pub const HOST_DIR: &str = "/usr/local/share/ca-certificates";

/// The guest's bundle once the host's CAs are in it; the variables steps see point at it.
pub const GUEST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The variables that make pip, requests, OpenSSL, curl, git and node use the guest's bundle
/// (pip and requests otherwise use their own certifi copy, which knows no local CA).
pub const STEP_VARIABLES: [&str; 6] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
];

/// Reads one certificate per `host-N.crt` from stdin into the guest's local CA folder and
/// rebuilds the bundle. A guest without the ca-certificates package gets a bundle of these
/// certificates alone (marked in /run, so that the removal knows the file was envbuild's).
const INSTALL: &str = "set -e; d=/usr/local/share/ca-certificates/envbuild-host; \
rm -rf \"$d\"; mkdir -p \"$d\" /run/envbuild; \
awk -v d=\"$d\" '/-----BEGIN CERTIFICATE-----/{n++} n{print > (d \"/host-\" n \".crt\")}'; \
if command -v update-ca-certificates >/dev/null; then update-ca-certificates >/dev/null; \
else mkdir -p /etc/ssl/certs; cat \"$d\"/*.crt > /etc/ssl/certs/ca-certificates.crt; \
: > /run/envbuild/ca-bundle-made; fi";

/// Undoes INSTALL, so the committed disk trusts what its stages installed, nothing of this host.
pub const REMOVE: &str = "rm -rf /usr/local/share/ca-certificates/envbuild-host; \
if command -v update-ca-certificates >/dev/null; then update-ca-certificates --fresh >/dev/null; \
elif [ -e /run/envbuild/ca-bundle-made ]; then rm -f /etc/ssl/certs/ca-certificates.crt; fi; \
rm -f /run/envbuild/ca-bundle-made";

/// The certificates a guest is given, and where each came from.
#[derive(Debug, Clone, Default)]
pub struct HostCas {
    /// (source file, sha256 of the certificate's DER) in the order read.
    pub certs: Vec<(PathBuf, String)>,
    /// Every certificate as PEM, one after the other.
    pub pem: String,
}

impl HostCas {
    /// Every `*.crt` under `dir` (recursively, as update-ca-certificates reads it), then
    /// `ca_file`. A file there that holds no certificate is skipped with a note in the log; an
    /// unreadable `ca_file` is already refused when the run's HTTP client is made.
    pub fn collect(dir: &Path, ca_file: Option<&Path>) -> HostCas {
        let mut files = Vec::new();
        crt_files(dir, &mut files);
        files.sort();
        files.extend(ca_file.map(Path::to_path_buf));
        let mut cas = HostCas::default();
        for file in files {
            let certs: Vec<CertificateDer> = match CertificateDer::pem_file_iter(&file)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            {
                Ok(certs) => certs,
                Err(e) => {
                    tracing::warn!("not giving guests {}: {e}", file.display());
                    continue;
                }
            };
            for cert in certs {
                let digest = sha256_bytes(cert.as_ref());
                if cas.certs.iter().any(|(_, d)| *d == digest) {
                    continue;
                }
                cas.pem.push_str(&pem(cert.as_ref()));
                cas.certs.push((file.clone(), digest));
            }
        }
        cas
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The stage log's record of what the guest trusted while the stage was built.
    pub fn provenance(&self) -> String {
        let mut text = format!(
            "envbuild: this build VM trusted {} CA certificate(s) of the host (not part of the stage key; docs/backends.md):",
            self.certs.len()
        );
        for (file, digest) in &self.certs {
            text.push_str(&format!("\n  sha256:{digest} from {}", file.display()));
        }
        text
    }

    /// Puts the certificates into the guest over the pinned SSH.
    pub fn install(&self, trust: &super::Trust, port: u16) -> Result<()> {
        use std::io::Write;
        let mut child = trust
            .ssh(port, INSTALL)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::Failed(format!("running ssh: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(self.pem.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Failed(format!("running ssh: {e}")))?;
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "giving the build VM the host's CA certificates failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
            .fix("set `trust_host_ca = false` on the machine if its steps need no host CA"));
        }
        Ok(())
    }
}

fn crt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            crt_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "crt") {
            out.push(path);
        }
    }
}

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str("-----END CERTIFICATE-----\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_pem(dir: &Path, name: &str) -> String {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-keyout", "/dev/null", "-days", "1", "-subj"])
            .arg(format!("/CN={name}"))
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn host_folder_and_ca_file_are_read_once_each_and_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (cert_pem(dir.path(), "one"), cert_pem(dir.path(), "two"));
        std::fs::create_dir_all(dir.path().join("local/sub")).unwrap();
        std::fs::write(dir.path().join("local/a.crt"), &one).unwrap();
        std::fs::write(dir.path().join("local/sub/b.crt"), &two).unwrap();
        std::fs::write(dir.path().join("local/ignored.pem"), &two).unwrap();
        std::fs::write(dir.path().join("local/broken.crt"), "not a certificate").unwrap();
        // The --ca-file repeats a certificate of the folder: given once.
        std::fs::write(dir.path().join("ca-file.pem"), format!("{two}{one}")).unwrap();
        let cas = HostCas::collect(
            &dir.path().join("local"),
            Some(&dir.path().join("ca-file.pem")),
        );
        assert_eq!(cas.certs.len(), 2, "{cas:?}");
        assert!(cas.certs[0].0.ends_with("local/a.crt"));
        assert!(cas.certs[1].0.ends_with("local/sub/b.crt"));
        assert_eq!(cas.pem.matches("BEGIN CERTIFICATE").count(), 2);
        // The PEM written for the guest is the same certificate again.
        let again: Vec<CertificateDer> = CertificateDer::pem_slice_iter(cas.pem.as_bytes())
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(sha256_bytes(again[0].as_ref()), cas.certs[0].1);
        assert!(
            cas.provenance()
                .contains(&format!("sha256:{}", cas.certs[1].1))
        );
    }

    #[test]
    fn a_host_without_local_cas_gives_nothing() {
        let cas = HostCas::collect(Path::new("/nonexistent/envbuild"), None);
        assert!(cas.is_empty());
    }
}
