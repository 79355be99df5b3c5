//! Push: stream the entry, packed, to the server; then publish the signed statement.
//!
//! The statement signs the sha256 of the entry's manifest.json, tree.json and log.txt, which
//! prove the whole entry; the blob is named by the sha256 of those three digests, so a blob URL
//! never holds two different entries, and the blob itself is not hashed. The statement is
//! PUT under a private temp name and then MOVEd into place with `Overwrite: F`: of two agents
//! pushing one key, the first MOVE wins and the second gets 412 and does nothing more. Servers
//! without MOVE (S3 presigned URLs, some raw repositories) get a HEAD then a plain PUT; there
//! the last of two racing pushers wins, and either way the statement names a complete blob.

use super::frames::{self, Frames};
use super::signing::{SecretKey, Statement};
use super::{Remote, Remotes, unexpected, unreachable};
use crate::error::{Error, IoContext, Result};
use crate::http::{Body, Url};
use crate::key::digest;
use crate::store::{Entry, Store, archive};
use crate::ui::Progress;

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
    if exists(remote, &statement_url)? {
        return Ok(Pushed::AlreadyThere);
    }
    let nonce = nonce()?;
    let own = |file: &str| {
        let path = entry.dir.join(file);
        digest::sha256_file(&path)
    };
    let manifest_sha256 = own("manifest.json")?;
    let tree_sha256 = own("tree.json")?;
    let log_sha256 = if entry.dir.join("log.txt").exists() {
        Some(own("log.txt")?)
    } else {
        None
    };
    let blob = digest::sha256_bytes(
        format!(
            "{manifest_sha256} {tree_sha256} {}",
            log_sha256.as_deref().unwrap_or("none")
        )
        .as_bytes(),
    );
    let size = match upload_streamed(remote, entry, &blob, &nonce, progress)? {
        Some(size) => size,
        None => upload_from_file(store, remote, entry, &blob, progress)?,
    };
    let signed = Statement {
        key: entry.key().to_string(),
        entry: entry.name.clone(),
        blob,
        blob_size: size,
        manifest_sha256,
        tree_sha256,
        log_sha256,
    }
    .sign(key);
    publish(remote, entry.key(), &signed, &nonce)
}

/// Streams tar | frames to the server as it is produced (one thread packs, this one sends,
/// chunked) under a temp name, then MOVEs it to `blobs/<blob>.tar.zst`; returns its size.
/// `None`: the server takes neither chunked uploads nor MOVE; the caller falls back to
/// `upload_from_file`.
fn upload_streamed(
    remote: &Remote,
    entry: &Entry,
    blob: &str,
    nonce: &str,
    progress: &Progress,
) -> Result<Option<u64>> {
    let staged = remote.url.join(&format!(
        "v1/tmp/{}.{}.{nonce}.tar.zst",
        entry.key(),
        std::process::id()
    ));
    let estimate = entry.manifest().map_or(0, |m| m.size);
    let bar = progress.bytes(format!("push {}", entry.name), estimate);
    let (packed, sent) = pack_while(entry, |frames| {
        let mut packed = 0u64;
        remote.request(
            "PUT",
            &staged,
            &[("Content-Type", "application/zstd")],
            Body::Chunked {
                send: &mut |chunks| {
                    while let Some(frame) = frames.recv() {
                        chunks.send(&frame.parts())?;
                        packed += frame.holds() as u64;
                        bar.set(packed);
                        frames.give_back(frame);
                    }
                    Ok(())
                },
            },
        )
    })?;
    let packed = match packed {
        Ok(packed) => packed,
        Err(e) => {
            delete(remote, &staged);
            return Err(e);
        }
    };
    let accepted = match sent {
        Ok(response) if matches!(response.status, 200 | 201 | 204) => true,
        Ok(mut response) if matches!(response.status, 400 | 405 | 411 | 501) => {
            let _ = response.text(300);
            false
        }
        Ok(mut response) => return Err(unexpected("PUT", &staged, &mut response)),
        // The HEAD above was answered: a server that cuts a chunked upload short most likely
        // refused it before reading it (411). A server that died fails the fallback too.
        Err(_) => false,
    };
    if !accepted {
        return Ok(None);
    }
    let blob_url = remote.blob_url(blob);
    let destination = blob_url.to_string();
    let mut moved = remote
        .request(
            "MOVE",
            &staged,
            &[("Destination", &destination), ("Overwrite", "T")],
            Body::Empty,
        )
        .map_err(|e| unreachable(&staged, &e))?;
    match moved.status {
        200 | 201 | 204 => {
            bar.finish("uploaded");
            Ok(Some(packed))
        }
        400 | 405 | 501 => {
            delete(remote, &staged);
            Ok(None)
        }
        _ => Err(unexpected("MOVE", &staged, &mut moved)),
    }
}

/// Packs the entry as tar in zstd frames on a second thread while `consume` writes the frames
/// on this one. Returns the size of the blob (or why packing failed) and what `consume` returned.
fn pack_while<T>(entry: &Entry, consume: impl FnOnce(&Frames) -> T) -> Result<(Result<u64>, T)> {
    let (writer, frames) = frames::frames().ctx(|| "starting the zstd compressor".into())?;
    Ok(std::thread::scope(|scope| {
        let packer = scope.spawn(move || {
            let writer = archive::export(std::slice::from_ref(entry), writer)?;
            writer.finish().ctx(|| format!("packing {}", entry.name))
        });
        let consumed = consume(&frames);
        drop(frames); // a consumer that failed must not leave the packer waiting
        (
            packer.join().expect("the packing thread panicked"),
            consumed,
        )
    }))
}

/// For servers that need a Content-Length (S3 presigned URLs, some raw repositories): pack into
/// a temp file first, then PUT it under its content address.
fn upload_from_file(
    store: &Store,
    remote: &Remote,
    entry: &Entry,
    name: &str,
    progress: &Progress,
) -> Result<u64> {
    let blob = TempFile(store.tmp_path("push"));
    let mut file =
        std::fs::File::create(&blob.0).ctx(|| format!("creating {}", blob.0.display()))?;
    let (packed, written) = pack_while(entry, |frames| frames.write_all_to(&mut file))?;
    // A failed write stops the packer too; its error is the one that says why.
    written.ctx(|| format!("writing {}", blob.0.display()))?;
    let size = packed?;
    let blob_url = remote.blob_url(name);
    if !exists(remote, &blob_url)? {
        let mut file =
            std::fs::File::open(&blob.0).ctx(|| format!("opening {}", blob.0.display()))?;
        let bar = progress.bytes(format!("push {}", entry.name), size);
        let mut response = remote
            .request(
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
    Ok(size)
}

fn nonce() -> Result<String> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| Error::Failed(format!("random source: {e}")))?;
    Ok(hex::encode(nonce))
}

/// Puts the statement in place without overwriting one that another agent published.
fn publish(remote: &Remote, key: &str, signed: &str, nonce: &str) -> Result<Pushed> {
    let statement_url = remote.statement_url(key);
    let staged = remote
        .url
        .join(&format!("v1/tmp/{key}.{}.{nonce}.sig", std::process::id()));
    put_bytes(remote, &staged, signed.as_bytes())?;
    let destination = statement_url.to_string();
    let mut response = remote
        .request(
            "MOVE",
            &staged,
            &[("Destination", &destination), ("Overwrite", "F")],
            Body::Empty,
        )
        .map_err(|e| unreachable(&staged, &e))?;
    match response.status {
        200 | 201 | 204 => Ok(Pushed::Uploaded),
        412 => {
            delete(remote, &staged);
            Ok(Pushed::LostRace)
        }
        400 | 405 | 501 => {
            delete(remote, &staged);
            if exists(remote, &statement_url)? {
                return Ok(Pushed::LostRace);
            }
            put_bytes(remote, &statement_url, signed.as_bytes())?;
            Ok(Pushed::Uploaded)
        }
        _ => Err(unexpected("MOVE", &staged, &mut response)),
    }
}

/// HEAD: true on 200, false on 404.
pub(super) fn exists(remote: &Remote, url: &Url) -> Result<bool> {
    let mut response = remote
        .request("HEAD", url, &[], Body::Empty)
        .map_err(|e| unreachable(url, &e))?;
    match response.status {
        200 => Ok(true),
        404 => Ok(false),
        _ => Err(unexpected("HEAD", url, &mut response)),
    }
}

fn put_bytes(remote: &Remote, url: &Url, bytes: &[u8]) -> Result<()> {
    let mut response = remote
        .request("PUT", url, &[], Body::Bytes(bytes))
        .map_err(|e| unreachable(url, &e))?;
    match response.status {
        200 | 201 | 204 => Ok(()),
        _ => Err(unexpected("PUT", url, &mut response)),
    }
}

/// Best effort: a leftover temp statement is harmless (nobody reads v1/tmp/).
fn delete(remote: &Remote, url: &Url) {
    let _ = remote.request("DELETE", url, &[], Body::Empty);
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
        return Err(Error::input(
            "read-only cache mode: this run pulls but never pushes.",
            "drop --cache-read-only (or read_only = true in the config) where pushing is intended, e.g. on main",
        ));
    }
    if remotes.pushing().next().is_none() {
        return Err(Error::input(
            "no remote cache to push to.",
            "give --cache-to URL, or set push = true on a [[cache.remote]] in the config file (docs/remote-cache.md)",
        ));
    }
    let key_path = remotes.signing_key.as_deref().ok_or_else(|| {
        Error::input(
            "pushing needs a signing key and none is configured.",
            "create one with `envbuild cache keygen PATH`, then pass --cache-signing-key PATH or set signing_key in the config file",
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
