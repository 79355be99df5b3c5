//! TLS for `https://` URLs (rustls with the *ring* provider, which builds with the C compiler
//! alone): the host's trusted roots plus an optional CA file, verified as a browser would
//! (chain to a trusted root, name, validity). There is no switch that turns verification off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// What a run trusts beyond the host's store.
#[derive(Debug, Default)]
pub struct Trust {
    /// Extra CA certificates (PEM), from `--ca-file`, `ENVBUILD_CA_FILE` or `[tls] ca_file`.
    ca_file: Option<(PathBuf, Vec<CertificateDer<'static>>)>,
    /// Built on the first https request: plain-HTTP runs never read the host's store.
    config: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Trust {
    /// Reads the CA file now, so that a wrong path is bad input before any work starts.
    pub fn with_ca_file(path: &Path) -> Result<Trust, String> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "the CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        Ok(Trust {
            ca_file: Some((path.to_path_buf(), certs)),
            config: OnceLock::new(),
        })
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_ref().map(|(path, _)| path.as_path())
    }

    pub(super) fn config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.config.get_or_init(|| self.build()).clone()
    }

    fn build(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        // SSL_CERT_FILE / SSL_CERT_DIR override the host's store, as for OpenSSL's tools.
        let native = rustls_native_certs::load_native_certs();
        let (added, _unparsable) = roots.add_parsable_certificates(native.certs);
        if let Some((path, certs)) = &self.ca_file {
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("the CA file {}: {e}", path.display()))?;
            }
        }
        if roots.is_empty() {
            return Err(format!(
                "no trusted CA certificate: the host's store has none{} and no CA file is given",
                native
                    .errors
                    .first()
                    .map_or(String::new(), |e| format!(" ({e})"))
            ));
        }
        tracing::debug!(
            "TLS trust: {added} roots from the host, CA file {:?}",
            self.ca_file()
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// The rustls error inside an I/O error of a TLS connection, if that is what it is.
pub(super) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// True for a refusal of the server's certificate (unknown issuer, wrong name, expired...),
/// which a CA file can fix, as opposed to a broken connection.
pub(super) fn is_certificate_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
    )
}

/// A rustls error in words, with rustls's own name for it kept for searching.
pub(super) fn explain(e: &rustls::Error) -> String {
    use rustls::CertificateError::{Expired, NotValidForName, UnknownIssuer};
    match e {
        rustls::Error::InvalidCertificate(UnknownIssuer) => {
            format!("the server's certificate is not signed by a CA trusted here ({e})")
        }
        rustls::Error::InvalidCertificate(NotValidForName) => {
            format!("the server's certificate is for another name ({e})")
        }
        rustls::Error::InvalidCertificate(Expired) => {
            format!("the server's certificate has expired ({e})")
        }
        _ => e.to_string(),
    }
}
