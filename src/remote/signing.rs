//! Signing keys and the signed statement that makes a remote entry trustworthy.
//!
//! Key formats (docs/remote-cache.md):
//! - public:  `envbuild-ed25519:<base64 of the 32-byte ed25519 public key>`
//! - private: a file holding `envbuild-ed25519-secret:<base64 of the 32-byte seed>`, mode 0600
//!
//! A statement (v2) names one stage key, its entry, the blob holding it (and its size) and the
//! sha256 of the entry's manifest.json, tree.json and log.txt; the ed25519 signature covers
//! every line before the `signature:` line, byte for byte. The manifest holds the digest of
//! tree.json's entries and the tree the digest of every file, so the digests that import
//! computes while unpacking prove the whole entry: the blob itself needs no hash of its own.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::error::{Error, Result};

const PUBLIC_PREFIX: &str = "envbuild-ed25519:";
const SECRET_PREFIX: &str = "envbuild-ed25519-secret:";
const HEADER: &str = "envbuild-remote-entry v2";
const OLD_HEADER: &str = "envbuild-remote-entry v1";

/// A trusted (or signing) public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey> {
        let bad = |why: &str| {
            Error::input(
                format!("`{}` is not an envbuild public key: {why}.", text.trim()),
                format!(
                    "use the line that `envbuild cache keygen` printed (and wrote to KEY.pub), `{PUBLIC_PREFIX}<base64>`"
                ),
            )
        };
        let encoded = text
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or_else(|| bad(&format!("it does not start with {PUBLIC_PREFIX}")))?;
        let bytes: [u8; 32] = STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("it is not 32 bytes of base64"))?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| bad("it is not a valid ed25519 point"))
    }

    /// A key given on the command line or in the config: the key itself, or a file holding it.
    pub fn from_value_or_file(value: &str) -> Result<PublicKey> {
        if value.trim().starts_with(PUBLIC_PREFIX) {
            return PublicKey::parse(value);
        }
        let text = std::fs::read_to_string(value).map_err(|e| {
            Error::input(format!("trusted key `{value}` is neither a key ({PUBLIC_PREFIX}...) nor a readable file ({e})."), "give the public key itself or the path of the .pub file `envbuild cache keygen` wrote")
        })?;
        PublicKey::parse(&text)
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", STANDARD.encode(self.0.as_bytes()))
    }
}

/// The pusher's private key. Never printed; Debug shows only the public half.
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public())
    }
}

impl SecretKey {
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Reads a private key file; refuses one that others can read.
    pub fn load(path: &Path) -> Result<SecretKey> {
        let missing = |e: std::io::Error| {
            Error::input(
                format!("cannot read the signing key {} ({e}).", path.display()),
                format!(
                    "create one with `envbuild cache keygen {}`, or point signing_key / --cache-signing-key at yours",
                    path.display()
                ),
            )
        };
        let meta = std::fs::metadata(path).map_err(missing)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::input(
                format!(
                    "the signing key {} can be read by other users (mode {:o}).",
                    path.display(),
                    meta.permissions().mode() & 0o777
                ),
                format!("chmod 600 {}", path.display()),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(missing)?;
        let seed: [u8; 32] = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                Error::input(format!("{} is not an envbuild signing key (expected one line `{SECRET_PREFIX}<base64>`).", path.display()), "create one with `envbuild cache keygen PATH`")
            })?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Makes a new key at `path` (0600, never overwriting) and its public half at `path.pub`.
    pub fn generate(path: &Path) -> Result<PublicKey> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::Failed(format!("the system random source failed: {e}")))?;
        let key = SecretKey(SigningKey::from_bytes(&seed));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                Error::input(format!("cannot create the signing key {} ({e}).", path.display()), "pick a path that does not exist yet in a folder you can write; an existing key is never overwritten")
            })?;
        let written = writeln!(file, "{SECRET_PREFIX}{}", STANDARD.encode(seed))
            .and_then(|_| file.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(path);
            return Err(Error::Failed(format!("writing {}: {e}", path.display())));
        }
        let public = key.public();
        let pub_path = public_path(path);
        std::fs::write(&pub_path, format!("{public}\n"))
            .map_err(|e| Error::Failed(format!("writing {}: {e}", pub_path.display())))?;
        Ok(public)
    }
}

pub fn public_path(secret: &Path) -> std::path::PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    name.into()
}

/// What a signed statement says about one remote entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub key: String,
    pub entry: String,
    /// The blob's name on the server (64 hex digits, `blobs/<name>.tar.zst`), and its size.
    pub blob: String,
    pub blob_size: u64,
    /// The sha256 of the entry's manifest.json, tree.json and log.txt (`None`: it has none).
    pub manifest_sha256: String,
    pub tree_sha256: String,
    pub log_sha256: Option<String>,
}

impl Statement {
    fn body(&self, signer: &PublicKey) -> String {
        format!(
            "{HEADER}\nkey: {}\nentry: {}\nblob: {} {}\nmanifest.json: sha256:{}\ntree.json: sha256:{}\nlog.txt: {}\nsigner: {signer}\n",
            self.key,
            self.entry,
            self.blob,
            self.blob_size,
            self.manifest_sha256,
            self.tree_sha256,
            self.log_sha256
                .as_ref()
                .map_or("none".to_string(), |d| format!("sha256:{d}")),
        )
    }

    pub fn sign(&self, key: &SecretKey) -> String {
        let body = self.body(&key.public());
        let signature = key.0.sign(body.as_bytes());
        format!(
            "{body}signature: {}\n",
            STANDARD.encode(signature.to_bytes())
        )
    }

    /// Parses `text` and checks its signature against `trusted`; `Err` says why it is refused.
    pub fn verify(text: &str, trusted: &[PublicKey]) -> std::result::Result<Statement, String> {
        let (body, signature) = match text.rfind("signature: ") {
            Some(at) if at > 0 => (&text[..at], text[at + "signature: ".len()..].trim()),
            _ => return Err("it is unsigned (no signature line)".into()),
        };
        let mut lines = body.lines();
        let first = lines.next();
        if first == Some(OLD_HEADER) {
            return Err(format!(
                "is in the old `{OLD_HEADER}` format, which this envbuild no longer accepts (it does not sign the entry's own digests)"
            ));
        }
        if first != Some(HEADER) {
            return Err(format!("it does not start with `{HEADER}`"));
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(": "))
                .map(str::to_string)
                .ok_or_else(|| format!("its `{name}:` line is missing or out of place"))
        };
        let key = field("key")?;
        let entry = field("entry")?;
        let blob = field("blob")?;
        let manifest = field("manifest.json")?;
        let tree = field("tree.json")?;
        let log = field("log.txt")?;
        let signer = field("signer")?;
        if lines.next().is_some() {
            return Err("it has lines a statement does not have".into());
        }
        let signer = PublicKey::parse(&signer).map_err(|_| "its signer is not a valid key")?;
        if !trusted.contains(&signer) {
            return Err(format!(
                "it is signed by {signer}, which is not a trusted key"
            ));
        }
        let signature: [u8; 64] = STANDARD
            .decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("its signature is not 64 bytes of base64")?;
        signer
            .0
            .verify_strict(body.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| "its signature does not match its content (tampered)".to_string())?;
        let (name, size) = blob.split_once(' ').ok_or("its blob line is malformed")?;
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let sha256 = |s: &str| {
            s.strip_prefix("sha256:")
                .filter(|d| hex64(d))
                .map(str::to_string)
        };
        let (Some(manifest_sha256), Some(tree_sha256)) = (sha256(&manifest), sha256(&tree)) else {
            return Err("its manifest.json or tree.json digest is malformed".into());
        };
        let log_sha256 = match log.as_str() {
            "none" => None,
            other => Some(sha256(other).ok_or("its log.txt digest is malformed")?),
        };
        if !hex64(&key)
            || !hex64(name)
            || !entry.starts_with(&format!("{key}-"))
            || entry.contains('/')
        {
            return Err("its key, entry or blob name is malformed".into());
        }
        Ok(Statement {
            key,
            entry,
            blob: name.to_string(),
            blob_size: size.parse().map_err(|_| "its blob size is not a number")?,
            manifest_sha256,
            tree_sha256,
            log_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&[seed; 32]))
    }

    fn statement() -> Statement {
        let k = "a".repeat(64);
        Statement {
            entry: format!("{k}-env-box-base"),
            key: k,
            blob: "b".repeat(64),
            blob_size: 42,
            manifest_sha256: "c".repeat(64),
            tree_sha256: "d".repeat(64),
            log_sha256: Some("e".repeat(64)),
        }
    }

    #[test]
    fn a_signed_statement_verifies_only_against_its_signer() {
        let signed = statement().sign(&key(1));
        assert_eq!(
            Statement::verify(&signed, &[key(1).public()]),
            Ok(statement())
        );
        let err = Statement::verify(&signed, &[key(2).public()]).unwrap_err();
        assert!(err.contains("not a trusted key"), "{err}");
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let signed = statement().sign(&key(1));
        let tampered = signed.replace("sha256:cccc", "sha256:bccc");
        let err = Statement::verify(&tampered, &[key(1).public()]).unwrap_err();
        assert!(err.contains("tampered"), "{err}");
        let unsigned = &signed[..signed.find("signature:").unwrap()];
        let err = Statement::verify(unsigned, &[key(1).public()]).unwrap_err();
        assert!(err.contains("unsigned"), "{err}");
    }

    #[test]
    fn an_entry_without_a_log_round_trips_and_old_statements_are_refused_clearly() {
        let mut without_log = statement();
        without_log.log_sha256 = None;
        let signed = without_log.sign(&key(1));
        assert!(signed.contains("log.txt: none\n"), "{signed}");
        assert_eq!(
            Statement::verify(&signed, &[key(1).public()]),
            Ok(without_log)
        );
        let old = format!(
            "{OLD_HEADER}\nkey: {k}\nentry: {k}-e-m-s\nblob: sha256:{k} 1\nsigner: {}\nsignature: AAAA\n",
            key(1).public(),
            k = "a".repeat(64)
        );
        let err = Statement::verify(&old, &[key(1).public()]).unwrap_err();
        assert!(err.contains("old") && err.contains("v1"), "{err}");
    }

    #[test]
    fn public_keys_round_trip_and_bad_ones_say_why() {
        let public = key(3).public();
        assert_eq!(PublicKey::parse(&public.to_string()).unwrap(), public);
        let err = PublicKey::parse("ssh-ed25519 AAAA")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fix:"), "{err}");
    }
}
