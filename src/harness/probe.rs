//! HTTP probes that run inside envbuild while an upgrade happens (not detached jobs stopped by
//! touching a file, as in the seed's CI).
//!
//! Open loop, as wrk2 does it: request `i` of a probe is due at `start + i / rate`, whether or
//! not earlier ones were answered, so a slow or hung API is sampled at the declared rate
//! exactly when it matters (a closed loop that waits for each answer would send fewer requests
//! then: coordinated omission). Each request runs on a thread of its own, at most
//! `max_in_flight` at once; a request due when that many wait for answers is not sent and is
//! recorded as a failed sample that says so. A sample's time is its due time and its latency
//! counts from there, so a late send shows as latency, not as a gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::program::{self, Program};
use super::stats::{NOT_SENT, Sample};
use crate::http::{self, Body, Url};

/// A probe with every placeholder rendered: ready to run.
#[derive(Debug, Clone)]
pub struct ResolvedProbe {
    pub name: String,
    pub action: Action,
    pub interval: Duration,
    /// One request's whole exchange, or one iteration of a program.
    pub timeout: Duration,
    /// Requests (or iterations) waiting for their end at once, at most.
    pub max_in_flight: usize,
}

/// What a probe does at each due time.
#[derive(Debug, Clone)]
pub enum Action {
    Http(Request),
    Program(Program),
}

/// One HTTP request and the status that counts as a success.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub expect: u16,
}

/// Enough for one timeout's worth of requests at the probe's rate, so that a request is only
/// refused when the oldest one waiting is timing out anyway: a slow API is measured as slow,
/// and a hung one is still sampled at the rate until its first requests time out. At most 1000
/// threads per probe (the spec's bound on `max_in_flight`; a waiting request's thread holds a
/// 256 KiB stack, mostly unused), and at most 4 iterations of a program at once (each is a
/// process tree on the machine it tests).
pub fn default_max_in_flight(program: bool, rate_hz: f64, timeout: Duration) -> usize {
    let most = if program { 4 } else { 1000 };
    ((rate_hz * timeout.as_secs_f64()).ceil() as usize + 1).clamp(1, most)
}

/// An answer is read to its end, up to this size (a probe measures the whole answer).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;
/// A request's thread: the client and a TLS handshake need little.
const STACK: usize = 256 * 1024;

/// Probes that are running; `stop` ends them and hands back every sample.
pub struct RunningProbes {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Sample>>>,
}

/// Starts every probe; sample times count from `t0`.
pub fn start(client: &http::Client, probes: Vec<ResolvedProbe>, t0: Instant) -> RunningProbes {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = probes
        .into_iter()
        .map(|probe| {
            let stop = stop.clone();
            let client = client.with_deadline(probe.timeout);
            std::thread::spawn(move || run_probe(&client, &probe, t0, &stop))
        })
        .collect();
    RunningProbes { stop, threads }
}

impl RunningProbes {
    /// Stops sending, waits for the requests in flight (each ends by its timeout) and returns
    /// every sample in time order.
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

/// The schedule of one probe: dispatches each request at its due time until told to stop.
fn run_probe(
    client: &http::Client,
    probe: &ResolvedProbe,
    t0: Instant,
    stop: &AtomicBool,
) -> Vec<Sample> {
    let in_flight = AtomicUsize::new(0);
    let log = std::sync::Mutex::new(());
    let (answers, answered) = std::sync::mpsc::channel();
    let mut samples = Vec::new();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0u32.. {
            let due = start + probe.interval * i;
            if !sleep_until(due, stop) {
                break;
            }
            let t_ms = due.saturating_duration_since(t0).as_millis() as u64;
            let not_sent = |why: String| Sample {
                t_ms,
                probe: probe.name.clone(),
                ok: false,
                error: Some(format!("{NOT_SENT} {why}")),
                ..Sample::default()
            };
            if in_flight.load(Ordering::SeqCst) >= probe.max_in_flight {
                let what = match probe.action {
                    Action::Http(_) => "requests already wait for answers",
                    Action::Program(_) => "iterations are still running",
                };
                samples.push(not_sent(format!(
                    "{} {what} (the probe's max_in_flight)",
                    probe.max_in_flight
                )));
                continue;
            }
            in_flight.fetch_add(1, Ordering::SeqCst);
            let (waiting, answers, log): (_, Sender<Sample>, _) =
                (&in_flight, answers.clone(), &log);
            let spawned = std::thread::Builder::new()
                .name(format!("probe {}", probe.name))
                .stack_size(STACK)
                .spawn_scoped(scope, move || {
                    let sample = match &probe.action {
                        Action::Http(request) => send(client, &probe.name, request, due, t_ms),
                        Action::Program(p) => {
                            program::run_once(&probe.name, p, probe.timeout, due, t_ms, i, log)
                        }
                    };
                    waiting.fetch_sub(1, Ordering::SeqCst);
                    let _ = answers.send(sample);
                });
            if let Err(e) = spawned {
                in_flight.fetch_sub(1, Ordering::SeqCst);
                samples.push(not_sent(format!("no thread for the request: {e}")));
            }
        }
    });
    drop(answers);
    samples.extend(answered);
    samples.sort_by_key(|s| s.t_ms);
    samples
}

/// Sleeps until `due`, waking often enough to notice `stop`; false when told to stop.
fn sleep_until(due: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        std::thread::sleep((due - now).min(Duration::from_millis(50)));
    }
}

/// One request, timed from its due time.
fn send(client: &http::Client, name: &str, request: &Request, due: Instant, t_ms: u64) -> Sample {
    let answer = Url::parse(&request.url)
        .map_err(|e| e.to_string())
        .and_then(|url| exchange_url(client, request, &url).map_err(|(e, _)| e));
    let latency_ms = due.elapsed().as_secs_f64() * 1000.0;
    let (ok, status, error) = match answer {
        Ok(response) if response.status == request.expect => (true, Some(response.status), None),
        Ok(response) => (
            false,
            Some(response.status),
            Some(format!(
                "HTTP {}, expected {}",
                response.status, request.expect
            )),
        ),
        Err(error) => (false, None, Some(error)),
    };
    Sample {
        t_ms,
        probe: name.to_string(),
        ok,
        status,
        latency_ms,
        error,
        ..Sample::default()
    }
}

/// One request through `client` within `timeout`, its answer read to the end: the response
/// (status and headers), or why there was none (with the fix, when there is one to say).
pub fn exchange(
    client: &http::Client,
    request: &Request,
    timeout: Duration,
) -> Result<http::Response, String> {
    let url = Url::parse(&request.url).map_err(|e| e.to_string())?;
    exchange_url(&client.with_deadline(timeout), request, &url).map_err(|(e, fix)| match fix {
        Some(fix) => format!("{e}\n  fix: {fix}"),
        None => e,
    })
}

/// The response, or why there was none and what would fix it.
fn exchange_url(
    client: &http::Client,
    request: &Request,
    url: &Url,
) -> Result<http::Response, (String, Option<String>)> {
    let headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let body = match (&request.body, request.method.as_str()) {
        (Some(body), _) => Body::Bytes(body.as_bytes()),
        (None, "POST" | "PUT" | "PATCH") => Body::Bytes(b""),
        (None, _) => Body::Empty,
    };
    let mut response = client
        .request(&request.method, url, &headers, body)
        .map_err(|e| (e.to_string(), e.fix()))?;
    response
        .drain(MAX_ANSWER)
        .map_err(|e| (format!("reading the answer's body: {e}"), None))?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::stats::summarize;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Mutex;

    fn request(url: String, expect: u16) -> Request {
        Request {
            method: "POST".into(),
            url,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Some("{\"a\":1}".into()),
            expect,
        }
    }

    fn probe(url: String, expect: u16, interval_ms: u64) -> ResolvedProbe {
        ResolvedProbe {
            name: "p".into(),
            action: Action::Http(request(url, expect)),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(10),
            max_in_flight: 64,
        }
    }

    /// What a test server saw: each request as it arrived, and the most it answered at once.
    struct Seen {
        requests: std::sync::mpsc::Receiver<String>,
        most_at_once: Arc<Mutex<(usize, usize)>>,
    }

    impl Seen {
        fn most_at_once(&self) -> usize {
            self.most_at_once.lock().unwrap().1
        }
    }

    /// A loopback server answering `status` to every request after `delay`, answering
    /// connections in parallel (as an API server does).
    fn server(status: u16, delay: Duration) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v3/auth/tokens", listener.local_addr().unwrap());
        let (tx, requests) = std::sync::mpsc::channel();
        let most_at_once = Arc::new(Mutex::new((0usize, 0usize)));
        let counter = most_at_once.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let (tx, counter) = (tx.clone(), counter.clone());
                std::thread::spawn(move || {
                    let request = read_request(&mut stream);
                    {
                        let mut c = counter.lock().unwrap();
                        c.0 += 1;
                        c.1 = c.1.max(c.0);
                    }
                    let _ = tx.send(request);
                    std::thread::sleep(delay);
                    counter.lock().unwrap().0 -= 1;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                });
            }
        });
        (
            url,
            Seen {
                requests,
                most_at_once,
            },
        )
    }

    /// Reads the whole request (head and body) before answering, as a server does.
    fn read_request(stream: &mut std::net::TcpStream) -> String {
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
        String::from_utf8_lossy(&request).into_owned()
    }

    fn of<'s>(samples: &'s [Sample], name: &str) -> Vec<&'s Sample> {
        samples.iter().filter(|s| s.probe == name).collect()
    }

    #[test]
    fn exchange_sends_method_headers_body_and_reads_status() {
        let (url, seen) = server(201, Duration::ZERO);
        let response = exchange(
            &http::Client::default(),
            &request(url, 201),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(response.status, 201);
        let request = seen.requests.recv().unwrap();
        assert!(
            request.starts_with("POST /v3/auth/tokens HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Content-Type: application/json\r\n"));
        assert!(request.contains("Content-Length: 7\r\n"));
        assert!(request.ends_with("{\"a\":1}"));
    }

    #[test]
    fn a_refused_connection_or_a_bad_url_is_a_failed_sample_that_says_why() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t0 = Instant::now();
        let refused = probe(format!("http://127.0.0.1:{port}/"), 200, 20);
        let mut bad = probe("http://127.0.0.1:1/a b".into(), 200, 20);
        bad.name = "bad".into();
        let running = start(&http::Client::default(), vec![refused, bad], t0);
        std::thread::sleep(Duration::from_millis(200));
        let samples = running.stop();
        let refused = of(&samples, "p");
        assert!(!refused.is_empty());
        for sample in refused {
            assert!(!sample.ok && sample.status.is_none());
            let error = sample.error.as_deref().unwrap();
            assert!(error.starts_with("connect to 127.0.0.1:"), "{error}");
        }
        for sample in of(&samples, "bad") {
            let error = sample.error.as_deref().unwrap();
            assert!(error.contains("is not a URL envbuild can use"), "{error}");
        }
    }

    #[test]
    fn a_slow_api_is_still_sampled_at_the_rate_with_latency_from_the_due_time() {
        // Every answer takes 600 ms: a closed loop would send fewer than 2 requests a second
        // and never more than one at a time. 20 Hz open loop keeps about 12 in flight.
        let (slow_url, slow) = server(201, Duration::from_millis(600));
        let (bad_url, bad) = server(503, Duration::ZERO);
        let t0 = Instant::now();
        let mut fast = probe(slow_url, 201, 50);
        fast.name = "fast".into();
        let mut failing = probe(bad_url, 201, 100);
        failing.name = "bad".into();
        let running = start(&http::Client::default(), vec![fast, failing], t0);
        // Until each server has seen enough requests, however slow the machine is.
        let wait = Duration::from_secs(120);
        for _ in 0..30 {
            slow.requests
                .recv_timeout(wait)
                .expect("the 20 Hz probe stalled");
        }
        for _ in 0..3 {
            bad.requests
                .recv_timeout(wait)
                .expect("the 10 Hz probe stalled");
        }
        let samples = running.stop();
        let fast = of(&samples, "fast");
        // Every request sent is recorded (stop waits for those in flight), at its due time:
        // exactly one interval apart (to the ms), however late each was sent.
        assert!(fast.len() >= 30, "{}", fast.len());
        let first = fast[0].t_ms;
        for (i, sample) in fast.iter().enumerate() {
            let due = first + 50 * i as u64;
            assert!(
                sample.t_ms.abs_diff(due) <= 1,
                "request {i} at {} ms",
                sample.t_ms
            );
            assert!(sample.ok && sample.status == Some(201), "{sample:?}");
            // The server held each answer 600 ms after the request arrived.
            assert!(sample.latency_ms >= 600.0, "{sample:?}");
        }
        assert!(
            slow.most_at_once() >= 2,
            "requests were sent one after the other (closed loop)"
        );
        let summary = summarize("fast", &samples);
        let rate = summary.achieved_rate_hz.unwrap();
        assert!((19.0..=21.0).contains(&rate), "{rate} Hz");
        assert_eq!(summary.not_sent, 0);

        let bad = of(&samples, "bad");
        assert!(bad.len() >= 3, "{}", bad.len());
        assert!(
            bad.iter()
                .all(|s| !s.ok && s.error.as_deref() == Some("HTTP 503, expected 201"))
        );
        assert!(samples.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
    }

    #[test]
    fn the_default_bound_holds_one_timeout_of_requests_at_the_rate() {
        let ten = Duration::from_secs(10);
        // 20 Hz with a 10 s timeout: a request is refused only once one has waited 10 s.
        assert_eq!(default_max_in_flight(false, 20.0, ten), 201);
        assert_eq!(
            default_max_in_flight(false, 0.5, Duration::from_millis(1500)),
            2
        );
        assert_eq!(default_max_in_flight(false, 1000.0, ten), 1000);
        assert_eq!(
            default_max_in_flight(true, 0.1, Duration::from_secs(120)),
            4
        );
        assert_eq!(default_max_in_flight(true, 0.001, ten), 2);
        assert_eq!(default_max_in_flight(true, 0.0, ten), 1);
    }

    #[test]
    fn a_hung_api_fills_the_in_flight_bound_and_later_requests_are_recorded_unsent() {
        // Accepts connections and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (tx, accepted) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
                let _ = tx.send(());
            }
        });
        let mut hung = probe(url, 200, 20);
        hung.max_in_flight = 3;
        hung.timeout = Duration::from_secs(2);
        let running = start(&http::Client::default(), vec![hung], Instant::now());
        for _ in 0..3 {
            accepted
                .recv_timeout(Duration::from_secs(60))
                .expect("the probe sent nothing");
        }
        // At 50 Hz, 50 more requests come due meanwhile; at most 3 wait at once.
        std::thread::sleep(Duration::from_secs(1));
        let samples = running.stop();
        let unsent: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.error.as_deref().is_some_and(|e| e.starts_with(NOT_SENT)))
            .collect();
        assert!(!unsent.is_empty(), "{samples:?}");
        assert!(
            unsent[0]
                .error
                .as_deref()
                .unwrap()
                .contains("max_in_flight")
        );
        assert!(samples.iter().all(|s| !s.ok));
        let summary = summarize("p", &samples);
        assert_eq!(summary.not_sent, unsent.len() as u64);
        assert!(summary.achieved_rate_hz.unwrap() < 50.0);
        // The sent ones ran into their timeout.
        let timed_out = samples.iter().filter(|s| {
            s.error
                .as_deref()
                .is_some_and(|e| e.contains("no complete answer within 2.0 s"))
        });
        assert!(timed_out.count() >= 3);
    }
}
