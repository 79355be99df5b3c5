//! Push: compress an entry to a temp file (hashing it), upload the blob, publish the statement.
//!
//! The blob is named by its own sha256, so a blob URL never holds two contents. The statement is
//! PUT under a private temp name and then MOVEd into place with `Overwrite: F`: of two agents
//! pushing one key, the first MOVE wins and the second gets 412 and does nothing more. Servers
//! without MOVE (S3 presigned URLs, some raw repositories) get a HEAD then a plain PUT; there
//! the last of two racing pushers wins, and either way the statement names a complete blob.

use std::io::{BufWriter, Write};

use sha2::{Digest, Sha256};

use super::frames::FrameWriter;
use super::http::{self, Body};
use super::signing::{SecretKey, Statement};
use super::{Remote, Remotes, unexpected, unreachable};
use crate::engine::progress::Progress;
use crate::error::{Error, IoContext, Result};
use crate::store::{Entry, Store, archive};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Uploaded,
    /// The remote already had the key.
    AlreadyThere,
    /// Another agent published the key while this one uploaded: nothing changed.
    LostRace,
}

fn push_entry(
    store: &Store,
    remote: &Remote,
    entry: &Entry,
    key: &SecretKey,
    progress: &Progress,
) -> Result<Pushed> {
    let statement_url = remote.statement_url(entry.key());
    if exists(&statement_url)? {
        return Ok(Pushed::AlreadyThere);
    }
    let blob = TempFile(store.tmp_path("push"));
    let (sha256, size) = compress(entry, &blob.0)?;
    let blob_url = remote.blob_url(&sha256);
    if !exists(&blob_url)? {
        let mut file =
            std::fs::File::open(&blob.0).ctx(|| format!("opening {}", blob.0.display()))?;
        let bar = progress.bytes(format!("push {}", entry.name), size);
        let mut response = http::request(
            "PUT",
            &blob_url,
            &[("Content-Type", "application/zstd")],
            Body::Stream {
                reader: &mut file,
                len: size,
                sent: &mut |n| bar.set(n),
            },
        )
        .map_err(|e| unreachable(&blob_url, &e))?;
        if !matches!(response.status, 200 | 201 | 204) {
            return Err(unexpected("PUT", &blob_url, &mut response));
        }
        bar.finish("uploaded");
    }
    drop(blob);
    let signed = Statement {
        key: entry.key().to_string(),
        entry: entry.name.clone(),
        blob_sha256: sha256,
        blob_size: size,
    }
    .sign(key);
    publish(remote, entry.key(), &signed)
}

/// Puts the statement in place without overwriting one that another agent published.
fn publish(remote: &Remote, key: &str, signed: &str) -> Result<Pushed> {
    let statement_url = remote.statement_url(key);
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| Error::Failed(format!("random source: {e}")))?;
    let staged = remote.url.join(&format!(
        "v1/tmp/{key}.{}.{}.sig",
        std::process::id(),
        hex::encode(nonce)
    ));
    put_bytes(&staged, signed.as_bytes())?;
    let destination = statement_url.to_string();
    let mut response = http::request(
        "MOVE",
        &staged,
        &[("Destination", &destination), ("Overwrite", "F")],
        Body::Empty,
    )
    .map_err(|e| unreachable(&staged, &e))?;
    match response.status {
        200 | 201 | 204 => Ok(Pushed::Uploaded),
        412 => {
            delete(&staged);
            Ok(Pushed::LostRace)
        }
        400 | 405 | 501 => {
            delete(&staged);
            if exists(&statement_url)? {
                return Ok(Pushed::LostRace);
            }
            put_bytes(&statement_url, signed.as_bytes())?;
            Ok(Pushed::Uploaded)
        }
        _ => Err(unexpected("MOVE", &staged, &mut response)),
    }
}

/// Writes the entry as tar | zstd into `path`; returns the sha256 and size of what was written.
fn compress(entry: &Entry, path: &std::path::Path) -> Result<(String, u64)> {
    let file = std::fs::File::create(path).ctx(|| format!("creating {}", path.display()))?;
    let hashing = HashingWriter {
        inner: BufWriter::with_capacity(http::BUFFER, file),
        hasher: Sha256::new(),
        written: 0,
    };
    let mut encoder = FrameWriter::new(hashing).ctx(|| "starting the zstd compressor".into())?;
    archive::export(std::slice::from_ref(entry), &mut encoder)?;
    let mut hashing = encoder
        .finish()
        .ctx(|| format!("compressing {}", entry.name))?;
    hashing
        .inner
        .flush()
        .ctx(|| format!("writing {}", path.display()))?;
    Ok((hex::encode(hashing.hasher.finalize()), hashing.written))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// HEAD: true on 200, false on 404.
fn exists(url: &http::Url) -> Result<bool> {
    let mut response =
        http::request("HEAD", url, &[], Body::Empty).map_err(|e| unreachable(url, &e))?;
    match response.status {
        200 => Ok(true),
        404 => Ok(false),
        _ => Err(unexpected("HEAD", url, &mut response)),
    }
}

fn put_bytes(url: &http::Url, bytes: &[u8]) -> Result<()> {
    let mut response =
        http::request("PUT", url, &[], Body::Bytes(bytes)).map_err(|e| unreachable(url, &e))?;
    match response.status {
        200 | 201 | 204 => Ok(()),
        _ => Err(unexpected("PUT", url, &mut response)),
    }
}

/// Best effort: a leftover temp statement is harmless (nobody reads v1/tmp/).
fn delete(url: &http::Url) {
    let _ = http::request("DELETE", url, &[], Body::Empty);
}

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What happened to one entry on one remote.
#[derive(Debug)]
pub struct PushOutcome {
    pub remote: String,
    pub entry: String,
    pub pushed: Pushed,
}

/// Pushes the local entries of `keys` (those the store has) to every remote that takes pushes.
pub fn push_keys(
    store: &Store,
    remotes: &Remotes,
    keys: &[String],
    progress: &Progress,
) -> Result<Vec<PushOutcome>> {
    if remotes.read_only {
        return Err(Error::Input(
            "read-only cache mode: this run pulls but never pushes.\n  fix: drop --cache-read-only (or read_only = true in the config) where pushing is intended, e.g. on main".into(),
        ));
    }
    if remotes.pushing().next().is_none() {
        return Err(Error::Input(
            "no remote cache to push to.\n  fix: give --cache-to URL, or set push = true on a [[cache.remote]] in the config file (docs/remote-cache.md)".into(),
        ));
    }
    let key_path = remotes.signing_key.as_deref().ok_or_else(|| {
        Error::Input(
            "pushing needs a signing key and none is configured.\n  fix: create one with `envbuild cache keygen PATH`, then pass --cache-signing-key PATH or set signing_key in the config file".into(),
        )
    })?;
    let secret = SecretKey::load(key_path)?;
    let index = store.index()?;
    let entries: Vec<&Entry> = keys.iter().filter_map(|k| index.get(k)).collect();
    let mut outcomes = Vec::new();
    for remote in remotes.pushing() {
        for entry in &entries {
            let pushed = push_entry(store, remote, entry, &secret, progress)?;
            outcomes.push(PushOutcome {
                remote: remote.url.to_string(),
                entry: entry.name.clone(),
                pushed,
            });
        }
    }
    Ok(outcomes)
}
