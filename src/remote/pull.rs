//! Pull: verify the signed statement, stream the blob into a private folder, hashing every file
//! as it is written, and commit the entry only when its manifest, tree and log have the signed
//! digests and every file matches its tree (the manifest holds the tree's digest): every byte
//! of the entry is hashed once, and that proves it.
//!
//! A connection that breaks mid-transfer is resumed with a Range request, up to `RETRIES`
//! times, continuing the same stream; a killed pull leaves only its private folder in tmp/,
//! which the next command removes, and the next pull starts over. Nothing reaches `entries/`
//! before every check has passed.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::pipe::PipeWriter;
use super::signing::Statement;
use super::{BUFFER, Remote, Remotes, broken, unexpected, unreachable};
use crate::error::{Error, IoContext};
use crate::http::{Body, Url};
use crate::key::StageKey;
use crate::store::{Entry, Store, archive};
use crate::ui::Progress;

/// Asks each pulling remote in order for `key`. Returns the entry name pulled (if any) and the
/// error of every remote that had the key but was refused or failed.
pub fn pull_key(
    store: &Store,
    remotes: &Remotes,
    key: &str,
    progress: &Progress,
) -> (Option<String>, Vec<Error>) {
    let mut failures = Vec::new();
    for remote in remotes.pulling() {
        if remotes.is_unreachable(remote) {
            continue;
        }
        match pull_from(store, remote, key, progress) {
            Ok(Some(name)) => return (Some(name), failures),
            Ok(None) => {}
            Err(Failure::Unreachable(e)) => {
                remotes.mark_unreachable(remote);
                failures.push(e);
            }
            Err(Failure::Refused(e)) => failures.push(e),
        }
    }
    (None, failures)
}

/// Says whether a pulled entry can be used here.
pub type EntryCheck<'a> = dyn Fn(&Entry) -> crate::error::Result<()> + 'a;

/// Before a machine is built: fetch the newest of its stages that a remote has and the local
/// store does not. Problems are warnings; the stage is then built locally.
///
/// `chained`: the machine's entries are usable only on the entries below them (libvirt
/// overlays). Then every stage the store lacks is fetched from the first up, stopping at the
/// first no remote has, and the newest one fetched must pass the check (its base image is
/// this host's), else what was fetched is removed again and built locally.
pub fn pull_through(
    store: &Store,
    remotes: &Remotes,
    keys: &[&StageKey],
    progress: &Progress,
    chained: Option<&EntryCheck>,
) {
    if remotes.pulling().next().is_none() {
        return;
    }
    let Ok(index) = store.index() else { return };
    if let Some(check) = chained {
        pull_prefix(store, remotes, keys, progress, &index, check);
        return;
    }
    for stage_key in keys.iter().rev() {
        if index.contains_key(&stage_key.key) {
            return;
        }
        let pulled = pull_or_warn(store, remotes, stage_key, progress);
        if pulled.is_some() {
            return;
        }
    }
}

/// Pulls one stage; a remote that had it but was refused or failed is a warning.
fn pull_or_warn(
    store: &Store,
    remotes: &Remotes,
    stage_key: &StageKey,
    progress: &Progress,
) -> Option<String> {
    let (pulled, failures) = pull_key(store, remotes, &stage_key.key, progress);
    for failure in failures {
        progress.warn(&format!(
            "{failure}\n  {}/{}: not using the remote copy; building it locally instead",
            stage_key.machine, stage_key.stage
        ));
    }
    pulled
}

fn pull_prefix(
    store: &Store,
    remotes: &Remotes,
    keys: &[&StageKey],
    progress: &Progress,
    index: &HashMap<String, Entry>,
    check: &EntryCheck,
) {
    let mut fetched: Vec<Entry> = Vec::new();
    for stage_key in keys {
        if index.contains_key(&stage_key.key) {
            continue;
        }
        let pulled = pull_or_warn(store, remotes, stage_key, progress);
        match pulled.and_then(|_| store.find(&stage_key.key).ok().flatten()) {
            Some(entry) => fetched.push(entry),
            None => break,
        }
    }
    let Some(newest) = fetched.last() else { return };
    if let Err(why) = check(newest) {
        progress.warn(&format!(
            "{why}\n  not using the {} stage(s) pulled for {}; building them locally instead",
            fetched.len(),
            keys[0].machine
        ));
        for entry in fetched.iter().rev() {
            let _ = store.remove(entry);
        }
    }
}

enum Failure {
    /// The remote could not be asked at all (down, wrong address): skip it from now on.
    Unreachable(Error),
    /// The remote answered, but its entry is not acceptable or the transfer failed.
    Refused(Error),
}

fn pull_from(
    store: &Store,
    remote: &Remote,
    key: &str,
    progress: &Progress,
) -> std::result::Result<Option<String>, Failure> {
    let url = remote.statement_url(key);
    let mut response = remote
        .request("GET", &url, &[], Body::Empty)
        .map_err(|e| Failure::Unreachable(unreachable(&url, &e)))?;
    match response.status {
        200 => {}
        404 => return Ok(None),
        _ => return Err(Failure::Refused(unexpected("GET", &url, &mut response))),
    }
    let refuse = |why: String| {
        Failure::Refused(Error::input(
            format!("refusing remote entry {key} from {}: {why}.", remote.url),
            if why.contains("old `") {
                "push the entry again with this envbuild, after deleting the old statement (v1/<key>.sig) on the server"
            } else if why.contains("trusted") {
                "add the pusher's public key to trusted_keys (config) or --cache-trusted-key, if you trust it"
            } else {
                "push the entry again from a sound store; nothing was added to the local store"
            },
        ))
    };
    let text = response
        .text(16 * 1024)
        .map_err(|e| Failure::Refused(broken(&url, &e)))?;
    if remote.trusted.is_empty() {
        return Err(refuse(
            "no trusted keys are configured for this remote, so no entry can be accepted".into(),
        ));
    }
    let statement = Statement::verify(&text, &remote.trusted)
        .map_err(|why| refuse(format!("its statement {why}")))?;
    if statement.key != key {
        return Err(refuse(format!(
            "its statement is about key {}, not this one",
            statement.key
        )));
    }

    let _lock = store
        .lock(key, || {
            progress.note(&format!(
                "{key}: waiting for another envbuild using this key"
            ))
        })
        .map_err(Failure::Refused)?;
    if let Some(entry) = store.find(key).map_err(Failure::Refused)? {
        return Ok(Some(entry.name));
    }
    let blob_url = remote.blob_url(&statement.blob);

    // Two threads: one fetches, the other decompresses, unpacks and hashes as the bytes arrive.
    // Nothing is committed before the whole blob has arrived, the entry's manifest, tree and
    // log have the signed digests, and every file matches the tree.
    let (chunks, received) = super::pipe::pipe();
    let (done, fetched) = std::sync::mpsc::channel();
    let fetch_result = std::cell::RefCell::new(None);
    let imported = std::thread::scope(|scope| {
        scope.spawn(|| {
            let done = done; // dropped with this thread, even if it panics: no waiting forever
            let result = download(
                remote,
                &blob_url,
                statement.blob_size,
                &statement.entry,
                progress,
                chunks,
            );
            let _ = done.send(result);
        });
        let wait_for_fetch = || {
            if fetch_result.borrow().is_none() {
                *fetch_result.borrow_mut() = fetched.recv().ok();
            }
        };
        // Straight from the pipe's chunks: no copy into a buffer of the decoder's own.
        let result = zstd::Decoder::with_buffer(received)
            .ctx(|| "starting the zstd decompressor".into())
            .and_then(|decoder| {
                archive::import_one(
                    store,
                    decoder,
                    Path::new(&blob_url.to_string()),
                    &statement.entry,
                    |dir, written| {
                        wait_for_fetch();
                        match fetch_result.borrow().as_ref() {
                            Some(Ok(())) => signed_files_match(&statement, dir, written),
                            _ => Err(Error::Failed("the download did not complete".into())),
                        }
                    },
                )
            });
        wait_for_fetch();
        result
    });
    match fetch_result.into_inner() {
        Some(Ok(())) => {
            imported.map_err(|e| {
                refuse(format!(
                    "what its blob unpacks to is not the signed entry (tampered or damaged on the server): {e}"
                ))
            })?;
            Ok(Some(statement.entry))
        }
        Some(Err(failure)) => Err(failure),
        None => Err(Failure::Refused(Error::Failed(
            "the download thread ended without a result".into(),
        ))),
    }
}

/// The entry's own files must be the signed ones; with them the manifest's tree digest and the
/// tree's file digests (checked by the import) cover everything else.
fn signed_files_match(
    statement: &Statement,
    dir: &Path,
    written: &archive::Written,
) -> crate::error::Result<()> {
    for (file, signed) in [
        ("manifest.json", Some(&statement.manifest_sha256)),
        ("tree.json", Some(&statement.tree_sha256)),
        ("log.txt", statement.log_sha256.as_ref()),
    ] {
        let path = dir.join(file);
        let got = written.get(&path);
        if got == signed {
            continue;
        }
        let shown = |d: Option<&String>| d.map_or("none".to_string(), |d| format!("sha256 {d}"));
        return Err(Error::Failed(format!(
            "its {file} has {}, not the signed {}",
            shown(got),
            shown(signed)
        )));
    }
    // A log.txt that is not a file (a folder) would not be in `written`.
    if statement.log_sha256.is_none() && std::fs::symlink_metadata(dir.join("log.txt")).is_ok() {
        return Err(Error::Failed(
            "it holds a log.txt that was not signed".into(),
        ));
    }
    Ok(())
}

/// How often a broken transfer is resumed before the pull gives up.
const RETRIES: u32 = 5;

/// Fetches the blob's `size` bytes and passes them, in order, to the unpacker through
/// `chunks`; a broken connection is resumed with `Range: bytes=N-`. `Ok` once all arrived.
fn download(
    remote: &Remote,
    url: &Url,
    size: u64,
    label: &str,
    progress: &Progress,
    chunks: PipeWriter,
) -> std::result::Result<(), Failure> {
    let mut chunks = chunks;
    let mut listening = true;
    // Once the unpacker has stopped (it failed), the rest is read and dropped.
    let mut scratch = Vec::new();
    let bar = progress.bytes(format!("pull {label}"), size);
    let mut have = 0u64;
    let mut retries = 0;
    let mut retry = |have: u64, e: std::io::Error| {
        retries += 1;
        if retries > RETRIES {
            return Err(Failure::Refused(broken(url, &e)));
        }
        progress.note(&format!(
            "{label}: the transfer broke at {have} of {size} bytes ({e}); resuming"
        ));
        Ok(())
    };
    while have < size {
        let range = format!("bytes={have}-");
        let headers: &[(&str, &str)] = if have > 0 { &[("Range", &range)] } else { &[] };
        let mut response = match remote.request("GET", url, headers, Body::Empty) {
            Ok(response) => response,
            Err(e) if have > 0 => {
                retry(have, e.into())?;
                continue;
            }
            Err(e) => return Err(Failure::Refused(unreachable(url, &e))),
        };
        let resumed = response
            .header("content-range")
            .is_some_and(|r| r.starts_with(&format!("bytes {have}-")));
        match response.status {
            200 if have == 0 => {}
            206 if have > 0 && resumed => {}
            200 => {
                return Err(Failure::Refused(Error::input(
                    format!(
                        "the transfer of {url} broke at {have} of {size} bytes and the server cannot resume it (it ignores Range requests)."
                    ),
                    "run the pull again; nothing was added to the store",
                )));
            }
            _ => return Err(Failure::Refused(unexpected("GET", url, &mut response))),
        }
        // The blob is the signed number of bytes; anything after it is not ours.
        let mut body = response.body().take(size - have);
        let ended = loop {
            let read = if listening {
                chunks.read_from(&mut body).map(|(n, still)| {
                    listening = still;
                    n
                })
            } else {
                scratch.resize(BUFFER, 0);
                body.read(&mut scratch)
            };
            match read {
                Ok(0) => break std::io::ErrorKind::UnexpectedEof.into(),
                Ok(n) => {
                    have += n as u64;
                    bar.set(have);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break e,
            }
        };
        if have < size {
            retry(have, ended)?;
        }
    }
    bar.finish("downloaded");
    drop(chunks); // sends what it buffered
    Ok(())
}
