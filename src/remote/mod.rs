//! Remote stage caches over plain HTTP: push, pull and pull-through during builds.
//!
//! ```text
//! <base>/v1/<key>.sig                  signed statement (v2): key, entry name, blob id and size,
//!                                      sha256 of the entry's manifest.json, tree.json, log.txt
//! <base>/v1/blobs/<id>.tar.zst         the entry as a zstd-compressed tar (id: from those digests)
//! <base>/v1/tmp/                       blobs being uploaded, statements being published (then MOVE)
//! ```
//! An entry exists on a remote when its statement does; the statement is published last, by a
//! WebDAV MOVE that refuses to overwrite, so two pushers of one key never mix their files.
//! See docs/remote-cache.md.

pub mod config;
mod frames;
pub mod http;
mod pipe;
mod pull;
mod push;
pub mod signing;

use std::sync::Mutex;

pub use pull::{pull_key, pull_through};
pub use push::{PushOutcome, Pushed, push_keys};

use http::Url;
use signing::PublicKey;

/// One configured remote cache.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: Url,
    pub pull: bool,
    pub push: bool,
    pub trusted: Vec<PublicKey>,
}

impl Remote {
    fn statement_url(&self, key: &str) -> Url {
        self.url.join(&format!("v1/{key}.sig"))
    }

    fn blob_url(&self, id: &str) -> Url {
        self.url.join(&format!("v1/blobs/{id}.tar.zst"))
    }
}

/// The remote caches of this run, in lookup order, resolved from the config file and flags.
#[derive(Debug, Default)]
pub struct Remotes {
    pub remotes: Vec<Remote>,
    /// Private key that signs pushed entries.
    pub signing_key: Option<std::path::PathBuf>,
    /// Pull, never push (untrusted builds such as pull requests).
    pub read_only: bool,
    /// Remotes that could not be reached once: not asked again by this process.
    unreachable: Mutex<Vec<String>>,
}

impl Remotes {
    pub fn pulling(&self) -> impl Iterator<Item = &Remote> {
        self.remotes.iter().filter(|r| r.pull)
    }

    /// Remotes to push to; none in read-only mode.
    pub fn pushing(&self) -> impl Iterator<Item = &Remote> {
        self.remotes.iter().filter(|r| r.push && !self.read_only)
    }

    /// The first pulling remote whose statement for `key` exists (a HEAD each; signatures are
    /// checked only when pulling). Unreachable remotes are skipped and not asked again.
    pub fn holder(&self, key: &str) -> Option<&Remote> {
        self.pulling()
            .filter(|r| !self.is_unreachable(r))
            .find(|remote| match push::exists(&remote.statement_url(key)) {
                Ok(found) => found,
                Err(e) => {
                    eprintln!("warning: {e}");
                    self.mark_unreachable(remote);
                    false
                }
            })
    }

    fn is_unreachable(&self, remote: &Remote) -> bool {
        let url = remote.url.to_string();
        self.unreachable.lock().unwrap().contains(&url)
    }

    fn mark_unreachable(&self, remote: &Remote) {
        self.unreachable
            .lock()
            .unwrap()
            .push(remote.url.to_string());
    }
}

/// Why talking to a remote failed at the transport level: a failure of the work (exit 1), not
/// bad input.
fn unreachable(url: &Url, e: &std::io::Error) -> crate::error::Error {
    crate::error::Error::Remote(format!("cannot reach the remote cache at {url} ({e})")).fix(
        "check the URL and that the server is running, or leave this remote out (--cache-from/--cache-to, config file)",
    )
}

/// A server answered something other than what the protocol expects (exit 1).
fn unexpected(method: &str, url: &Url, response: &mut http::Response) -> crate::error::Error {
    let text = response.text(300).unwrap_or_default();
    let hint = match response.status {
        401 | 403 => "the server refused access; check its permissions for this path",
        405 | 501 => {
            "the server does not allow this method here; enable WebDAV PUT/DELETE/MOVE (NGINX: dav_methods PUT DELETE MOVE; create_full_put_path on;)"
        }
        413 => "the server refused the size; raise its body limit (NGINX: client_max_body_size 0;)",
        _ => "check the server's log",
    };
    crate::error::Error::Remote(format!(
        "the remote cache answered {} to {method} {url}{}.",
        response.status,
        if text.trim().is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        }
    ))
    .fix(hint)
}
