//! HTTP probes that run inside envbuild while an upgrade happens (not detached jobs stopped by
//! touching a file, as in the seed's CI). Each probe is a thread sending one request per tick at
//! its rate and recording every answer, or the lack of one, as a [`Sample`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::stats::Sample;

/// A probe with every placeholder rendered: ready to send.
#[derive(Debug, Clone)]
pub struct ResolvedProbe {
    pub name: String,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub expect: u16,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Probes that are running; `stop` ends them and hands back every sample.
pub struct RunningProbes {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Sample>>>,
}

/// Starts every probe; sample times count from `t0`.
pub fn start(probes: Vec<ResolvedProbe>, t0: Instant) -> RunningProbes {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = probes
        .into_iter()
        .map(|probe| {
            let stop = stop.clone();
            std::thread::spawn(move || run_probe(&probe, t0, &stop))
        })
        .collect();
    RunningProbes { stop, threads }
}

impl RunningProbes {
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let mut samples: Vec<Sample> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect();
        samples.sort_by(|a, b| a.t_ms.cmp(&b.t_ms).then_with(|| a.probe.cmp(&b.probe)));
        samples
    }
}

fn run_probe(probe: &ResolvedProbe, t0: Instant, stop: &AtomicBool) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        let sent = Instant::now();
        let answer = request(probe);
        let latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let t_ms = sent.duration_since(t0).as_millis() as u64;
        samples.push(match answer {
            Ok(status) => Sample {
                t_ms,
                probe: probe.name.clone(),
                ok: status == probe.expect,
                status: Some(status),
                latency_ms,
                error: (status != probe.expect)
                    .then(|| format!("HTTP {status}, expected {}", probe.expect)),
            },
            Err(error) => Sample {
                t_ms,
                probe: probe.name.clone(),
                ok: false,
                status: None,
                latency_ms,
                error: Some(error),
            },
        });
        // A slow answer delays the next tick instead of firing a burst to catch up.
        next = (next + probe.interval).max(Instant::now());
    }
    samples
}

/// One HTTP/1.1 request on a fresh connection; the status code, or why there was none.
pub fn request(probe: &ResolvedProbe) -> Result<u16, String> {
    exchange(probe).map(|(status, _)| status)
}

/// Like [`request`], also returning the response head (status line and headers).
pub fn exchange(probe: &ResolvedProbe) -> Result<(u16, String), String> {
    let rest = probe
        .url
        .strip_prefix("http://")
        .ok_or("not an http:// URL")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let address: SocketAddr = host
        .to_socket_addrs()
        .map_err(|e| format!("resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to nothing"))?;
    let mut stream =
        TcpStream::connect_timeout(&address, probe.timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(probe.timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(probe.timeout))
        .map_err(|e| e.to_string())?;
    let body = probe.body.as_deref().unwrap_or("");
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: envbuild-probe\r\n",
        probe.method
    );
    for (name, value) in &probe.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || probe.method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    // One write: a body sent after the server already answered would reset the connection.
    head.push_str(body);
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    let deadline = Instant::now() + probe.timeout;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err("timeout waiting for the answer".into());
            }
            Err(e) => return Err(format!("receive: {e}")),
        }
        if Instant::now() > deadline {
            return Err("timeout waiting for the answer".into());
        }
    }
    let text = String::from_utf8_lossy(&response);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            if response.is_empty() {
                "connection closed without an answer".to_string()
            } else {
                "not an HTTP answer".to_string()
            }
        })?;
    Ok((status, head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn probe(url: String, expect: u16, interval_ms: u64) -> ResolvedProbe {
        ResolvedProbe {
            name: "p".into(),
            method: "POST".into(),
            url,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Some("{\"a\":1}".into()),
            expect,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(2),
        }
    }

    /// A loopback server answering `status` to every request, keeping what it received.
    fn server(status: u16) -> (String, std::sync::mpsc::Receiver<String>) {
        slow_server(status, Duration::ZERO)
    }

    /// As `server`, but the first answer comes only after `first_delay`.
    fn slow_server(
        status: u16,
        first_delay: Duration,
    ) -> (String, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v3/auth/tokens", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut delay = first_delay;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                // Read the whole request (head and body) before answering, as a server does.
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer) {
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request);
                    let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .map_or(0, |v| v.trim().parse().unwrap_or(0));
                        body.len() >= length
                    });
                    if n == 0 || complete {
                        break;
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
                std::thread::sleep(std::mem::take(&mut delay));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (url, rx)
    }

    #[test]
    fn request_sends_method_headers_body_and_reads_status() {
        let (url, rx) = server(201);
        assert_eq!(request(&probe(url, 201, 100)), Ok(201));
        let seen = rx.recv().unwrap();
        assert!(
            seen.starts_with("POST /v3/auth/tokens HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(seen.contains("Content-Type: application/json\r\n"));
        assert!(seen.contains("Content-Length: 7\r\n"));
        assert!(seen.ends_with("{\"a\":1}"));
    }

    #[test]
    fn refused_connection_is_a_failed_sample() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = request(&probe(format!("http://127.0.0.1:{port}/"), 200, 100)).unwrap_err();
        assert!(err.starts_with("connect:"), "{err}");
    }

    #[test]
    fn probes_keep_their_rate_and_record_every_request() {
        // The first answer of the fast probe takes 600 ms: 12 ticks pass meanwhile.
        let (ok_url, ok_requests) = slow_server(201, Duration::from_millis(600));
        let (bad_url, bad_requests) = server(503);
        let t0 = Instant::now();
        let mut fast = probe(ok_url, 201, 50);
        fast.name = "fast".into();
        let mut bad = probe(bad_url, 201, 100);
        bad.name = "bad".into();
        let running = start(vec![fast, bad], t0);
        // Until each server has answered a few requests, however slow the machine is.
        let wait = Duration::from_secs(60);
        for _ in 0..10 {
            ok_requests
                .recv_timeout(wait)
                .expect("the 20 Hz probe stalled");
        }
        for _ in 0..3 {
            bad_requests
                .recv_timeout(wait)
                .expect("the 10 Hz probe stalled");
        }
        let samples = running.stop();
        let fast: Vec<&Sample> = samples.iter().filter(|s| s.probe == "fast").collect();
        let bad: Vec<&Sample> = samples.iter().filter(|s| s.probe == "bad").collect();
        // Never faster than the rate, however late a tick was: the i-th request of a 50 ms probe
        // starts at least i * 50 ms after the start. Every request is recorded.
        assert!(fast.len() >= 10, "{}", fast.len());
        for (i, sample) in fast.iter().enumerate() {
            assert!(
                sample.t_ms >= 50 * i as u64,
                "request {i} at {} ms",
                sample.t_ms
            );
        }
        for (i, sample) in bad.iter().enumerate() {
            assert!(
                sample.t_ms >= 100 * i as u64,
                "request {i} at {} ms",
                sample.t_ms
            );
        }
        // No burst to catch up after the slow answer: a tick comes at the earliest one interval
        // after the previous tick and not before the previous answer, so any two requests with
        // one between them are at least 50 ms apart (49 after rounding to ms). These bounds hold
        // however loaded the machine is: lateness only delays requests.
        let times: Vec<u64> = fast.iter().map(|s| s.t_ms).collect();
        assert!(
            times.windows(3).all(|w| w[2] - w[0] >= 49),
            "a burst of requests: {times:?}"
        );
        assert!(fast.iter().all(|s| s.ok && s.status == Some(201)));
        assert!(bad.len() >= 3, "{}", bad.len());
        assert!(
            bad.iter()
                .all(|s| !s.ok && s.error.as_deref() == Some("HTTP 503, expected 201"))
        );
        assert!(samples.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
    }
}
