//! A small blocking HTTP/1.1 client: what a remote cache needs and no more.
//!
//! Plain `http://` only, one connection per request (`Connection: close`), bodies streamed both
//! ways through fixed buffers, so a multi-GiB artifact never sits in memory. Responses may be
//! sized by `Content-Length`, chunked, or end with the connection.

use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::{Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No byte for this long and the transfer is abandoned (a dead server must not hang a build).
const IO_TIMEOUT: Duration = Duration::from_secs(120);
pub const BUFFER: usize = 1 << 20;

/// A parsed `http://host[:port]/base` URL, without a trailing slash on the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url> {
        let bad = |why: &str| {
            Error::Input(format!(
                "remote cache URL `{text}` {why}.\n  fix: give it as http://HOST[:PORT]/PATH, e.g. http://127.0.0.1:8080/envbuild"
            ))
        };
        if text.starts_with("https://") {
            return Err(bad(
                "uses https; envbuild speaks plain HTTP to its caches (terminate TLS in a local proxy)",
            ));
        }
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| bad("does not start with http://"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || authority.contains('@') {
            return Err(bad(
                "has no host (or carries credentials, which are not supported)",
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port.parse().map_err(|_| bad("has an invalid port"))?;
                (host.to_string(), port)
            }
            _ => (authority.to_string(), 80),
        };
        if path.contains(['?', '#', ' ']) {
            return Err(bad("has a query, fragment or space in its path"));
        }
        Ok(Url {
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The URL of `relative` below this one.
    pub fn join(&self, relative: &str) -> Url {
        Url {
            host: self.host.clone(),
            port: self.port,
            path: format!("{}/{relative}", self.path),
        }
    }

    fn authority(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

/// What a request sends after its headers.
pub enum Body<'a> {
    Empty,
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
/// to the socket as they are, without a copy.
pub struct ChunkSender<'s> {
    stream: &'s TcpStream,
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
        write_all_vectored(&mut self.stream, &mut all)
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

pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    body: BodyReader,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body(&mut self) -> &mut dyn Read {
        &mut self.body
    }

    /// The body as text, at most `limit` bytes (for small documents and error pages).
    pub fn text(&mut self, limit: u64) -> std::io::Result<String> {
        let mut bytes = Vec::new();
        (&mut self.body).take(limit).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Sends one request and reads the response head; the body is read from the response.
/// Errors are failures to talk to the server at all; any status is returned as a response.
pub fn request(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: Body<'_>,
) -> std::io::Result<Response> {
    let address = (url.host.trim_matches(['[', ']']), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{} does not resolve", url.host)))?;
    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: envbuild/{}\r\nConnection: close\r\n",
        if url.path.is_empty() { "/" } else { &url.path },
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let len = match &body {
        Body::Empty => 0,
        Body::Bytes(bytes) => bytes.len() as u64,
        Body::Stream { len, .. } => *len,
        Body::Chunked { .. } => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            0
        }
    };
    if !matches!(body, Body::Chunked { .. }) && (len > 0 || method == "PUT") {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = &stream;
    writer.write_all(head.as_bytes())?;
    match body {
        Body::Empty => {}
        Body::Bytes(bytes) => writer.write_all(bytes)?,
        Body::Stream { reader, len, sent } => {
            let mut buffer = vec![0u8; BUFFER];
            let mut total = 0u64;
            while total < len {
                let want = (len - total).min(BUFFER as u64) as usize;
                let n = reader.read(&mut buffer[..want])?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the upload ended before its announced length",
                    ));
                }
                writer.write_all(&buffer[..n])?;
                total += n as u64;
                sent(total);
            }
        }
        Body::Chunked { send } => {
            send(&mut ChunkSender { stream: &stream })?;
            writer.write_all(b"0\r\n\r\n")?;
        }
    }
    writer.flush()?;
    read_response(BufReader::with_capacity(BUFFER, stream), method == "HEAD")
}

fn read_response(mut reader: BufReader<TcpStream>, head_only: bool) -> std::io::Result<Response> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    // Skip interim responses (100 Continue).
    let status = loop {
        line.clear();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .filter(|_| line.starts_with("HTTP/1."))
            .ok_or_else(|| invalid("the server did not answer with HTTP/1.x"))?;
        if status >= 200 {
            break status;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
        }
    };
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("the response ended inside its headers"));
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if head_only || status == 204 || status == 304 {
        BodyReader::Sized(reader, 0)
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        BodyReader::Chunked(reader, 0, false)
    } else if let Some(len) = find("content-length") {
        BodyReader::Sized(
            reader,
            len.parse().map_err(|_| invalid("bad Content-Length"))?,
        )
    } else {
        BodyReader::UntilClose(reader)
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

enum BodyReader {
    /// Bytes left.
    Sized(BufReader<TcpStream>, u64),
    /// Bytes left in the current chunk, and whether the last chunk was seen.
    Chunked(BufReader<TcpStream>, u64, bool),
    UntilClose(BufReader<TcpStream>),
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            BodyReader::Sized(reader, left) => {
                if *left == 0 || buf.is_empty() {
                    return Ok(0);
                }
                read_at_most(
                    reader,
                    buf,
                    left,
                    "the connection closed before the whole body arrived",
                )
            }
            BodyReader::Chunked(reader, left, done) => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let mut line = String::new();
                    reader.read_line(&mut line)?;
                    if line.trim().is_empty() {
                        // The CRLF closing the previous chunk.
                        line.clear();
                        reader.read_line(&mut line)?;
                    }
                    let size = line.trim().split(';').next().unwrap_or("");
                    *left = u64::from_str_radix(size, 16).map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
                    })?;
                    if *left == 0 {
                        *done = true;
                        return Ok(0);
                    }
                }
                read_at_most(reader, buf, left, "the connection closed inside a chunk")
            }
            BodyReader::UntilClose(reader) => reader.read(buf),
        }
    }
}

/// Reads at most `*left` bytes into `buf` and counts them off `*left`; an end of stream before
/// `*left` reaches 0 is an error that says `eof`.
fn read_at_most(
    reader: &mut BufReader<TcpStream>,
    buf: &mut [u8],
    left: &mut u64,
    eof: &str,
) -> std::io::Result<usize> {
    let want = buf.len().min(*left as usize);
    let n = reader.read(&mut buf[..want])?;
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, eof));
    }
    *left -= n as u64;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::{Body, Url, request};
    use std::io::{Read, Write};

    /// Serves one canned response on a loopback port and returns the URL.
    fn serve_once(response: &'static [u8]) -> Url {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            stream.write_all(response).unwrap();
        });
        Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap()
    }

    #[test]
    fn chunked_and_close_delimited_bodies_are_read_whole() {
        let url = serve_once(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n",
        );
        let mut response = request("GET", &url, &[], Body::Empty).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.text(100).unwrap(), "hello, world");

        let url = serve_once(b"HTTP/1.0 404 Not Found\r\nX-A: b\r\n\r\nno such thing");
        let mut response = request("GET", &url, &[], Body::Empty).unwrap();
        assert_eq!((response.status, response.header("x-a")), (404, Some("b")));
        assert_eq!(response.text(100).unwrap(), "no such thing");
    }

    #[test]
    fn a_body_cut_short_is_an_error_not_a_short_read() {
        let url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        let mut response = request("GET", &url, &[], Body::Empty).unwrap();
        let mut body = Vec::new();
        let err = response.body().read_to_end(&mut body).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn urls_parse_or_say_what_is_wrong() {
        let url = Url::parse("http://127.0.0.1:8080/cache/").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 8080, "/cache")
        );
        assert_eq!(
            url.join("v1/x.sig").to_string(),
            "http://127.0.0.1:8080/cache/v1/x.sig"
        );
        assert_eq!(Url::parse("http://cache.local").unwrap().port, 80);
        for bad in [
            "ftp://x/",
            "https://x/",
            "http://",
            "http://u:p@x/",
            "http://x:port/",
        ] {
            let err = Url::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("fix:"), "{err}");
        }
    }
}
