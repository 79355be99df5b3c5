//! Reading an answer: the status line and headers with every line and count bounded, then a
//! body sized by `Content-Length`, chunked, or ending with the connection, read as a stream.

use std::io::{BufRead, BufReader, Read};

use super::connection::Connection;

/// The longest status, header, chunk-size or trailer line accepted.
pub const MAX_LINE: usize = 16 * 1024;
/// The most header (or trailer) lines accepted in one answer.
pub const MAX_HEADERS: usize = 100;
/// Interim (1xx) answers skipped before the final one.
const MAX_INTERIM: usize = 8;

pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Response {
    /// The first header of that name (names compare without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a stream: its end is the end of the body; a body cut short is an error.
    pub fn body(&mut self) -> &mut dyn Read {
        &mut self.body
    }

    /// The whole body; an error if it is longer than `limit` bytes.
    pub fn bytes(&mut self, limit: usize) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        (&mut self.body)
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() > limit {
            return Err(invalid(format!("a body of more than {limit} bytes")));
        }
        Ok(bytes)
    }

    /// The start of the body as text, at most `limit` bytes (for error pages in messages).
    pub fn text(&mut self, limit: u64) -> std::io::Result<String> {
        let mut bytes = Vec::new();
        (&mut self.body).take(limit).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Reads the body to its end and drops it; an error if it is longer than `limit` bytes or
    /// cut short.
    pub fn drain(&mut self, limit: u64) -> std::io::Result<u64> {
        let read = std::io::copy(&mut (&mut self.body).take(limit + 1), &mut std::io::sink())?;
        if read > limit {
            return Err(invalid(format!("a body of more than {limit} bytes")));
        }
        Ok(read)
    }
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// Reads the answer's head from `reader`; the body is left to be read from the response.
pub(super) fn read(
    mut reader: BufReader<Connection>,
    head_only: bool,
) -> std::io::Result<Response> {
    let mut interim = 0;
    let (status, headers) = loop {
        let line = read_line(&mut reader, "status line")?
            .ok_or_else(|| invalid("the connection closed without an answer".into()))?;
        let status = parse_status_line(&line)?;
        let headers = read_fields(&mut reader, "header")?;
        if status >= 200 {
            break (status, headers);
        }
        interim += 1;
        if interim > MAX_INTERIM {
            return Err(invalid(format!(
                "more than {MAX_INTERIM} interim (1xx) answers"
            )));
        }
    };
    fn find<'h>(headers: &'h [(String, String)], name: &'h str) -> impl Iterator<Item = &'h str> {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    let framing = if head_only || status == 204 || status == 304 {
        Framing::Sized(0)
    } else if let Some(coding) = find(&headers, "transfer-encoding").last() {
        // Chunked must be the last coding; any other framing ends with the connection.
        let last = coding.rsplit(',').next().unwrap_or("").trim();
        if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked {
                left: 0,
                state: Chunk::First,
            }
        } else {
            Framing::UntilClose
        }
    } else {
        let mut lengths = find(&headers, "content-length").map(|value| {
            value
                .parse::<u64>()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| invalid(format!("Content-Length {value:?}")))
        });
        match lengths.next().transpose()? {
            None => Framing::UntilClose,
            Some(len) => {
                if lengths.any(|other| other.ok() != Some(len)) {
                    return Err(invalid("two different Content-Length headers".into()));
                }
                Framing::Sized(len)
            }
        }
    };
    Ok(Response {
        status,
        headers,
        body: Body { reader, framing },
    })
}

fn parse_status_line(line: &str) -> std::io::Result<u16> {
    let rest = line
        .strip_prefix("HTTP/1.")
        .filter(|rest| rest.starts_with(['0', '1']))
        .map(|rest| &rest[1..]);
    let code = rest
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|rest| rest.get(..3))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
        .filter(|_| rest.is_some_and(|r| r.len() == 4 || r.as_bytes()[4] == b' '));
    code.and_then(|c| c.parse().ok())
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(|| {
            invalid(format!(
                "not an HTTP/1.x answer: {:?}",
                line.chars().take(80).collect::<String>()
            ))
        })
}

/// Header (or trailer) lines up to the empty line that ends them.
fn read_fields(
    reader: &mut BufReader<Connection>,
    what: &str,
) -> std::io::Result<Vec<(String, String)>> {
    let mut fields = Vec::new();
    loop {
        let line = read_line(reader, what)?
            .ok_or_else(|| invalid(format!("the answer ended inside its {what}s")))?;
        if line.is_empty() {
            return Ok(fields);
        }
        if fields.len() == MAX_HEADERS {
            return Err(invalid(format!("more than {MAX_HEADERS} {what} lines")));
        }
        let (name, value) = line
            .split_once(':')
            .filter(|(name, _)| !name.is_empty() && !name.ends_with([' ', '\t']))
            .filter(|_| !line.starts_with([' ', '\t']))
            .ok_or_else(|| {
                invalid(format!(
                    "a {what} line that is not `Name: value`: {:?}",
                    line.chars().take(80).collect::<String>()
                ))
            })?;
        fields.push((name.to_string(), value.trim().to_string()));
    }
}

/// One line without its line ending, at most `MAX_LINE` bytes; `None` at the end of the stream
/// before any byte of a line.
fn read_line(reader: &mut impl BufRead, what: &str) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the connection closed inside a {what}"),
            ));
        }
        let (part, end) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if line.len() + part.len() > MAX_LINE {
            return Err(invalid(format!(
                "a {what} longer than {} KiB",
                MAX_LINE / 1024
            )));
        }
        line.extend_from_slice(part);
        let consumed = end.unwrap_or(part.len());
        reader.consume(consumed);
        if end.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
    }
}

enum Framing {
    /// Bytes left.
    Sized(u64),
    /// Bytes left in the current chunk.
    Chunked {
        left: u64,
        state: Chunk,
    },
    UntilClose,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before the first size line.
    First,
    /// Inside a chunk's data.
    Data,
    /// After a chunk's data: its CRLF, then the next size line.
    Next,
    Done,
}

struct Body {
    reader: BufReader<Connection>,
    framing: Framing,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.framing {
            Framing::Sized(left) => read_at_most(
                &mut self.reader,
                buf,
                left,
                "the connection closed before the whole body arrived",
            ),
            Framing::UntilClose => self.reader.read(buf),
            Framing::Chunked { left, state } => loop {
                match state {
                    Chunk::Done => return Ok(0),
                    Chunk::Data => {
                        let n = read_at_most(
                            &mut self.reader,
                            buf,
                            left,
                            "the connection closed inside a chunk",
                        )?;
                        if *left == 0 {
                            *state = Chunk::Next;
                        }
                        return Ok(n);
                    }
                    Chunk::First | Chunk::Next => {
                        if *state == Chunk::Next {
                            let end = read_line(&mut self.reader, "chunk")?;
                            if end.as_deref() != Some("") {
                                return Err(invalid(
                                    "a chunk longer than its size line says".into(),
                                ));
                            }
                        }
                        let line =
                            read_line(&mut self.reader, "chunk size line")?.ok_or_else(|| {
                                std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    "the connection closed before the last chunk",
                                )
                            })?;
                        *left = parse_chunk_size(&line)?;
                        if *left == 0 {
                            read_fields(&mut self.reader, "trailer")?;
                            *state = Chunk::Done;
                        } else {
                            *state = Chunk::Data;
                        }
                    }
                }
            },
        }
    }
}

/// A chunk size: 1 to 16 hex digits (anything longer overflows 64 bits), then extensions.
fn parse_chunk_size(line: &str) -> std::io::Result<u64> {
    let size = line
        .split(';')
        .next()
        .unwrap_or("")
        .trim_end_matches([' ', '\t']);
    if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "a bad chunk size line: {:?}",
            line.chars().take(40).collect::<String>()
        )));
    }
    Ok(u64::from_str_radix(size, 16).expect("16 hex digits fit in 64 bits"))
}

/// Reads at most `*left` bytes into `buf` and counts them off `*left`; an end of stream before
/// `*left` reaches 0 is an error that says `eof`.
fn read_at_most(
    reader: &mut BufReader<Connection>,
    buf: &mut [u8],
    left: &mut u64,
    eof: &str,
) -> std::io::Result<usize> {
    if *left == 0 {
        return Ok(0);
    }
    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
    let n = reader.read(&mut buf[..want])?;
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, eof));
    }
    *left -= n as u64;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_and_chunk_sizes_parse_strictly() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK").unwrap(), 200);
        assert_eq!(parse_status_line("HTTP/1.0 404").unwrap(), 404);
        assert_eq!(parse_status_line("HTTP/1.1 201 ").unwrap(), 201);
        for bad in [
            "HTTP/2 200 OK",
            "HTTP/1.1 20 OK",
            "HTTP/1.1 2000",
            "SSH-2.0",
            "HTTP/1.1 999 X",
            "",
        ] {
            assert!(parse_status_line(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_chunk_size("1a;ext=1").unwrap(), 26);
        assert_eq!(parse_chunk_size("ffffffffffffffff").unwrap(), u64::MAX);
        for bad in ["", "x", "1ffffffffffffffff", " 1", "-1", "0x10"] {
            assert!(parse_chunk_size(bad).is_err(), "{bad}");
        }
    }
}
