//! Remote stage caches over HTTP or HTTPS: push, pull and pull-through during builds.
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
mod pipe;
mod pull;
mod push;
pub mod signing;

use std::sync::Mutex;

pub use pull::{pull_key, pull_through};
pub use push::{PushOutcome, Pushed, push_keys};

use crate::http::{self, Body, Url};
use signing::PublicKey;

/// Transfers read the connection a MiB at a time.
const BUFFER: usize = 1 << 20;

/// One configured remote cache.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: Url,
    pub pull: bool,
    pub push: bool,
    pub trusted: Vec<PublicKey>,
    /// The run's client (its CA file), reading `BUFFER` at a time.
    http: http::Client,
}

impl Remote {
    pub fn new(
        url: Url,
        pull: bool,
        push: bool,
        trusted: Vec<PublicKey>,
        client: &http::Client,
    ) -> Remote {
        Remote {
            url,
            pull,
            push,
            trusted,
            http: client.with_buffer(BUFFER),
        }
    }

    fn request(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> std::result::Result<http::Response, http::Error> {
        self.http.request(method, url, headers, body)
    }

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
    /// The run's HTTP client (its CA file): the remotes', and the one ElasticSearch and the
    /// probes use.
    pub http: http::Client,
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
            .find(
                |remote| match push::exists(remote, &remote.statement_url(key)) {
                    Ok(found) => found,
                    Err(e) => {
                        eprintln!("warning: {e}");
                        self.mark_unreachable(remote);
                        false
                    }
                },
            )
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
fn unreachable(url: &Url, e: &http::Error) -> crate::error::Error {
    let fix = e.fix().unwrap_or_else(|| {
        "check the URL and that the server is running, or leave this remote out (--cache-from/--cache-to, config file)".into()
    });
    crate::error::Error::Remote(format!("cannot reach the remote cache at {url} ({e})")).fix(fix)
}

/// A transfer broke after the server answered (exit 1).
fn broken(url: &Url, e: &std::io::Error) -> crate::error::Error {
    crate::error::Error::Remote(format!(
        "the transfer from the remote cache at {url} broke ({e})"
    ))
    .fix("check the server and the network, then run again; nothing was added to the store")
}

/// A remote cache URL: http(s)://HOST[:PORT]/PATH, no query; `/cache/` and `/cache` are one.
pub fn parse_url(text: &str) -> crate::error::Result<Url> {
    let fix = "give it as http(s)://HOST[:PORT]/PATH, e.g. http://127.0.0.1:8080/envbuild";
    let url = Url::parse(text)
        .map_err(|e| crate::error::Error::input(format!("remote cache URL {e}."), fix))?;
    if url.query.is_some() {
        return Err(crate::error::Error::input(
            format!(
                "remote cache URL `{text}` has a query; envbuild names the files below the path."
            ),
            fix,
        ));
    }
    Ok(Url {
        path: url.path.trim_end_matches('/').to_string(),
        ..url
    })
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
