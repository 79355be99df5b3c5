//! One connection to a server: TCP to the first of its addresses that answers, TLS on top for
//! `https://`, and the clock that bounds every read and write.

use std::io::{IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::tls::{self, Trust};
use super::url::{Scheme, Url};
use super::{Error, Timeouts};

enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

pub(super) struct Connection {
    transport: Transport,
    timeouts: Timeouts,
    /// The end of the whole exchange, when `timeouts.total` is set.
    deadline: Option<Instant>,
}

impl Connection {
    /// Connects to `url`'s host, trying every address it resolves to in turn, and completes the
    /// TLS handshake for https (so that a refused certificate is a connect error, not a read).
    pub fn open(url: &Url, timeouts: Timeouts, trust: &Trust) -> Result<Connection, Error> {
        let deadline = timeouts.total.map(|total| Instant::now() + total);
        let tcp = connect_any(url, timeouts.connect, deadline)?;
        tcp.set_nodelay(true)
            .map_err(|e| Error::io("connecting", e))?;
        // Until the first read or write sets it again: the handshake runs under it too.
        let wait = deadline.map_or(timeouts.idle, |d| {
            d.saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), timeouts.idle)
        });
        tcp.set_read_timeout(Some(wait))
            .and_then(|()| tcp.set_write_timeout(Some(wait)))
            .map_err(|e| Error::io("connecting", e))?;
        let transport = match url.scheme {
            Scheme::Http => Transport::Plain(tcp),
            Scheme::Https => Transport::Tls(Box::new(handshake(url, tcp, trust)?)),
        };
        Ok(Connection {
            transport,
            timeouts,
            deadline,
        })
    }

    fn tcp(&self) -> &TcpStream {
        match &self.transport {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(stream) => &stream.sock,
        }
    }

    /// Before an operation under a deadline: the time left becomes the socket's timeout.
    fn check_deadline(&self) -> Result<(), Error> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(format!(
                "no complete answer within {}",
                seconds(self.timeouts.total.unwrap_or_default())
            )));
        }
        let wait = left.min(self.timeouts.idle);
        self.tcp()
            .set_read_timeout(Some(wait))
            .and_then(|()| self.tcp().set_write_timeout(Some(wait)))
            .map_err(|e| Error::io("setting a timeout", e))
    }

    /// An I/O error as the caller should see it: a socket timeout says which clock ran out.
    fn explain(&self, e: std::io::Error) -> std::io::Error {
        if !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            return e;
        }
        let why = match (self.deadline, self.timeouts.total) {
            (Some(deadline), Some(total)) if Instant::now() >= deadline => {
                format!("no complete answer within {}", seconds(total))
            }
            _ => format!(
                "nothing received or sent for {}",
                seconds(self.timeouts.idle)
            ),
        };
        std::io::Error::new(std::io::ErrorKind::TimedOut, why)
    }

    fn prepare(&self) -> std::io::Result<()> {
        self.check_deadline().map_err(std::io::Error::from)
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.prepare()?;
        let read = match &mut self.transport {
            Transport::Plain(tcp) => tcp.read(buf),
            Transport::Tls(stream) => stream.read(buf),
        };
        read.map_err(|e| self.explain(e))
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.prepare()?;
        let written = match &mut self.transport {
            Transport::Plain(tcp) => tcp.write(buf),
            Transport::Tls(stream) => stream.write(buf),
        };
        written.map_err(|e| self.explain(e))
    }

    fn write_vectored(&mut self, parts: &[IoSlice<'_>]) -> std::io::Result<usize> {
        self.prepare()?;
        let written = match &mut self.transport {
            Transport::Plain(tcp) => tcp.write_vectored(parts),
            Transport::Tls(stream) => stream.write_vectored(parts),
        };
        written.map_err(|e| self.explain(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.prepare()?;
        let flushed = match &mut self.transport {
            Transport::Plain(tcp) => tcp.flush(),
            Transport::Tls(stream) => stream.flush(),
        };
        flushed.map_err(|e| self.explain(e))
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Every address of the host, in the resolver's order, until one accepts.
fn connect_any(
    url: &Url,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Result<TcpStream, Error> {
    let addresses: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|source| Error::Resolve {
            host: url.host.clone(),
            source,
        })?
        .collect();
    connect_first(&url.authority(), &addresses, timeout, deadline)
}

pub(super) fn connect_first(
    host: &str,
    addresses: &[SocketAddr],
    timeout: Duration,
    deadline: Option<Instant>,
) -> Result<TcpStream, Error> {
    let mut tried = Vec::new();
    for address in addresses {
        let left = deadline.map_or(timeout, |d| {
            d.saturating_duration_since(Instant::now()).min(timeout)
        });
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(address, left) {
            Ok(tcp) => return Ok(tcp),
            Err(e) if addresses.len() == 1 => tried.push(e.to_string()),
            Err(e) => tried.push(format!("{address}: {e}")),
        }
    }
    Err(Error::Connect {
        host: host.to_string(),
        tried,
    })
}

fn handshake(
    url: &Url,
    mut tcp: TcpStream,
    trust: &Trust,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, Error> {
    let failed = |reason: String, certificate: bool| Error::Tls {
        server: url.authority(),
        reason,
        certificate,
        ca_file: trust.ca_file().map(|p| p.display().to_string()),
    };
    let config = trust.config().map_err(|reason| failed(reason, false))?;
    let name = ServerName::try_from(url.host.clone()).map_err(|e| {
        failed(
            format!("`{}` is not a TLS server name: {e}", url.host),
            false,
        )
    })?;
    let mut tls = rustls::ClientConnection::new(Arc::clone(&config), name)
        .map_err(|e| failed(e.to_string(), false))?;
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut tcp) {
            return Err(match tls::rustls_error(&e) {
                Some(inner) => failed(tls::explain(inner), tls::is_certificate_error(inner)),
                None => failed(format!("the handshake broke: {e}"), false),
            });
        }
    }
    Ok(rustls::StreamOwned::new(tls, tcp))
}
