//! The one HTTP/1.1 client of envbuild: remote caches, ElasticSearch, probes and readiness
//! checks all speak through it, over plain TCP or TLS.
//!
//! ```text
//! url.rs         http(s)://host[:port]/path?query, refused if it could inject a line
//! connection.rs  TCP to every resolved address in turn, TLS on top, the clocks on each read/write
//! tls.rs         rustls (ring): the host's roots plus an optional CA file
//! response.rs    status line, headers, body (sized, chunked, to the close), every line bounded
//! ```
//! One connection per request (`Connection: close`); bodies stream both ways through the
//! caller's buffers, so a multi-GiB artifact never sits in memory. What the client refuses to
//! send: a method or header name that is not a token, a header value with a control character
//! (CR and LF above all), a header it writes itself (`Content-Length`, `Transfer-Encoding`,
//! `Connection`). What it refuses to read: a line over 16 KiB, over 100 headers, a chunk size
//! over 64 bits, two different `Content-Length`s, a body cut short. See docs/design-notes.md.

mod connection;
mod response;
mod tls;
mod url;

use std::io::{BufReader, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use response::Response;
pub use tls::Trust;
pub use url::{Url, UrlError};

use connection::Connection;

/// How long each part of an exchange may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Per address tried.
    pub connect: Duration,
    /// No byte received or sent for this long and the exchange is abandoned.
    pub idle: Duration,
    /// The whole exchange (connect, send, answer and body), when set: a server that drips one
    /// byte a second never trips `idle`.
    pub total: Option<Duration>,
}

/// A client of one run: its trust (CA file), timeouts and read buffer. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    trust: Arc<Trust>,
    timeouts: Timeouts,
    buffer: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("ca_file", &self.ca_file())
            .field("timeouts", &self.timeouts)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl Default for Client {
    /// The host's roots, 10 s to connect, 120 s of silence at most, 64 KiB reads.
    fn default() -> Client {
        Client::new(Trust::default())
    }
}

impl Client {
    pub fn new(trust: Trust) -> Client {
        Client {
            trust: Arc::new(trust),
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                idle: Duration::from_secs(120),
                total: None,
            },
            buffer: 64 * 1024,
        }
    }

    /// The host's roots plus the certificates of `ca_file`, read now.
    pub fn with_ca_file(ca_file: Option<&Path>) -> Result<Client, String> {
        Ok(Client::new(match ca_file {
            Some(path) => Trust::with_ca_file(path)?,
            None => Trust::default(),
        }))
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.trust.ca_file()
    }

    pub fn with_timeouts(&self, timeouts: Timeouts) -> Client {
        Client {
            timeouts,
            ..self.clone()
        }
    }

    /// Every request must be over, answer and body, within `limit` (probes, readiness).
    pub fn with_deadline(&self, limit: Duration) -> Client {
        self.with_timeouts(Timeouts {
            connect: limit,
            idle: limit,
            total: Some(limit),
        })
    }

    /// Reads from the connection `bytes` at a time (bulk transfers want 1 MiB).
    pub fn with_buffer(&self, bytes: usize) -> Client {
        Client {
            buffer: bytes,
            ..self.clone()
        }
    }

    /// Sends one request and reads the answer's head; the body is read from the response.
    /// Any status is an answer; errors are failures to talk HTTP with the server at all.
    pub fn request(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Response, Error> {
        let head = request_head(method, url, headers, &body)?;
        let mut connection = Connection::open(url, self.timeouts, &self.trust)?;
        let sending = |e| Error::io("sending the request", e);
        match body {
            Body::Empty => connection.write_all(head.as_bytes()).map_err(sending)?,
            // One write: a body sent after the server already answered would reset the
            // connection (and a small request goes out in one packet).
            Body::Bytes(bytes) => write_all_vectored(
                &mut connection,
                &mut [IoSlice::new(head.as_bytes()), IoSlice::new(bytes)],
            )
            .map_err(sending)?,
            Body::Stream { reader, len, sent } => {
                connection.write_all(head.as_bytes()).map_err(sending)?;
                stream_body(&mut connection, reader, len, sent, self.buffer).map_err(sending)?;
            }
            Body::Chunked { send } => {
                connection.write_all(head.as_bytes()).map_err(sending)?;
                send(&mut ChunkSender {
                    connection: &mut connection,
                })
                .map_err(sending)?;
                connection.write_all(b"0\r\n\r\n").map_err(sending)?;
            }
        }
        connection.flush().map_err(sending)?;
        let reader = BufReader::with_capacity(self.buffer, connection);
        response::read(reader, method == "HEAD").map_err(|e| Error::io("reading the answer", e))
    }
}

/// What a request sends after its headers.
pub enum Body<'a> {
    Empty,
    /// Sent with its `Content-Length` (0 included).
    Bytes(&'a [u8]),
    /// `len` bytes read from the reader; `sent` is told the running total.
    Stream {
        reader: &'a mut dyn Read,
        len: u64,
        sent: &'a mut dyn FnMut(u64),
    },
    /// A body of a length not known in advance (chunked encoding): `send` is called once and
    /// sends every chunk through the `ChunkSender` it is given.
    Chunked {
        send: &'a mut dyn FnMut(&mut ChunkSender<'_>) -> std::io::Result<()>,
    },
}

/// Sends the chunks of a chunked body, each with one vectored write: the caller's buffers go
/// to the socket as they are, without a copy (on plain TCP).
pub struct ChunkSender<'c> {
    connection: &'c mut Connection,
}

impl ChunkSender<'_> {
    pub fn send(&mut self, parts: &[IoSlice<'_>]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 {
            return Ok(()); // an empty chunk would end the body
        }
        let size_line = format!("{len:x}\r\n");
        let mut all = Vec::with_capacity(parts.len() + 2);
        all.push(IoSlice::new(size_line.as_bytes()));
        all.extend_from_slice(parts);
        all.push(IoSlice::new(b"\r\n"));
        write_all_vectored(self.connection, &mut all)
    }
}

/// `Write::write_all_vectored` (unstable in std): writes every byte of `parts`.
pub fn write_all_vectored(
    out: &mut impl Write,
    mut parts: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match out.write_vectored(parts) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn stream_body(
    out: &mut Connection,
    reader: &mut dyn Read,
    len: u64,
    sent: &mut dyn FnMut(u64),
    buffer: usize,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; buffer.max(64 * 1024)];
    let mut total = 0u64;
    while total < len {
        let want = usize::try_from(len - total).map_or(buffer.len(), |left| left.min(buffer.len()));
        let n = reader.read(&mut buffer[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the upload ended before its announced length",
            ));
        }
        out.write_all(&buffer[..n])?;
        total += n as u64;
        sent(total);
    }
    Ok(())
}

/// Headers the client writes itself; a caller's copy could contradict them.
const OWN_HEADERS: [&str; 4] = ["content-length", "transfer-encoding", "connection", "te"];

/// The request line and headers, or why they cannot be sent.
fn request_head(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &Body<'_>,
) -> Result<String, Error> {
    if !is_token(method) {
        return Err(Error::Refused(format!(
            "the method {:?} is not an HTTP token",
            method.escape_debug().to_string()
        )));
    }
    // A URL made by `join` was never parsed: its target is checked here too.
    let target = url.target();
    if target
        .bytes()
        .chain(url.host.bytes())
        .any(|b| !(0x21..0x7f).contains(&b))
    {
        return Err(Error::Refused(format!(
            "the URL {:?} holds a space, a line break or a control character",
            url.to_string().escape_debug().to_string()
        )));
    }
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    let has_host = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
    if !has_host {
        head.push_str(&format!("Host: {}\r\n", url.authority()));
    }
    head.push_str(&format!(
        "User-Agent: envbuild/{}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    ));
    for (name, value) in headers {
        if !is_token(name) {
            return Err(Error::Refused(format!(
                "the header name {:?} is not an HTTP token",
                name.escape_debug().to_string()
            )));
        }
        if OWN_HEADERS.iter().any(|own| name.eq_ignore_ascii_case(own)) {
            return Err(Error::Refused(format!(
                "the header `{name}` is set by envbuild itself"
            )));
        }
        // Field values: visible characters, spaces, tabs and obs-text; never CR, LF or NUL.
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Error::Refused(format!(
                "the value of header `{name}` holds a line break or a control character (it could inject headers)"
            )));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match body {
        Body::Empty => {}
        Body::Bytes(bytes) => head.push_str(&format!("Content-Length: {}\r\n", bytes.len())),
        Body::Stream { len, .. } => head.push_str(&format!("Content-Length: {len}\r\n")),
        Body::Chunked { .. } => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    Ok(head)
}

/// An RFC 9110 token: what a method or a header name is made of.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Why an exchange failed before an answer (or inside its head).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not sent: the request itself is unsafe (an injected header, a bad method).
    #[error("request not sent: {0}")]
    Refused(String),
    #[error("{host} does not resolve: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {host}: {}", if tried.is_empty() { "no time left to try".to_string() } else { tried.join("; ") })]
    Connect { host: String, tried: Vec<String> },
    #[error("TLS with {server} failed: {reason}")]
    Tls {
        /// `host[:port]`.
        server: String,
        reason: String,
        /// The server's certificate was refused (a CA file may fix that).
        certificate: bool,
        ca_file: Option<String>,
    },
    #[error("{0}")]
    Timeout(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    fn io(context: &'static str, source: std::io::Error) -> Error {
        if source.kind() == std::io::ErrorKind::TimedOut {
            return Error::Timeout(format!("{context}: {source}"));
        }
        Error::Io { context, source }
    }

    /// What the user can do about it, when something specific can be said.
    pub fn fix(&self) -> Option<String> {
        match self {
            Error::Tls {
                certificate: true,
                reason,
                ca_file,
                ..
            } => Some(if reason.contains("not valid for name") {
                "use the host name the server's certificate was issued for".into()
            } else if reason.contains("expired") || reason.contains("not valid yet") {
                "renew the server's certificate, or check this host's clock".into()
            } else {
                format!(
                    "if a private CA signed the server's certificate, give that CA's certificate (PEM) with --ca-file FILE, ENVBUILD_CA_FILE or `ca_file` under [tls] in the config file{}",
                    ca_file.as_ref().map_or(String::new(), |path| format!(
                        " (the CA file given, {path}, does not hold it)"
                    ))
                )
            }),
            _ => None,
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        let kind = match &e {
            Error::Timeout(_) => std::io::ErrorKind::TimedOut,
            Error::Io { source, .. } => source.kind(),
            Error::Refused(_) => std::io::ErrorKind::InvalidInput,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests;
