//! The client against hostile loopback servers: each test's server misbehaves in one way and
//! the client must end with a clear error instead of hanging, growing or believing it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use super::*;

/// Serves one connection on a loopback port: reads the request head, then hands the stream
/// to `behave`. Returns the URL and what the server received.
fn serve(
    behave: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> (Url, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = Url::parse(&format!("http://{}/x", listener.local_addr().unwrap())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        behave(&mut stream);
    });
    (url, rx)
}

fn answer(bytes: &'static [u8]) -> (Url, std::sync::mpsc::Receiver<String>) {
    serve(move |stream| {
        let _ = stream.write_all(bytes);
    })
}

fn get(url: &Url) -> Result<Response, Error> {
    Client::default().request("GET", url, &[], Body::Empty)
}

#[test]
fn chunked_and_close_delimited_bodies_are_read_whole() {
    let (url, _) = answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n",
    );
    let mut response = get(&url).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.bytes(100).unwrap(), b"hello, world");

    let (url, _) = answer(b"HTTP/1.0 404 Not Found\r\nX-A: b\r\n\r\nno such thing");
    let mut response = get(&url).unwrap();
    assert_eq!((response.status, response.header("x-a")), (404, Some("b")));
    assert_eq!(response.text(100).unwrap(), "no such thing");
}

#[test]
fn a_request_says_what_it_sends_and_nothing_else() {
    let (url, seen) = answer(b"HTTP/1.1 204 No Content\r\n\r\n");
    let url = Url::parse(&format!("{}?refresh=true", url)).unwrap();
    let response = Client::default()
        .request(
            "POST",
            &url,
            &[("Content-Type", "application/json")],
            Body::Bytes(b"{}"),
        )
        .unwrap();
    assert_eq!(response.status, 204);
    let head = seen.recv().unwrap();
    assert!(
        head.starts_with("POST /x?refresh=true HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nHost: {}\r\n", url.authority())),
        "{head}"
    );
    assert!(
        head.contains("\r\nContent-Type: application/json\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nContent-Length: 2\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
}

#[test]
fn a_body_cut_short_is_an_error_not_a_short_read() {
    let (url, _) = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    let mut response = get(&url).unwrap();
    let err = response.body().read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);

    let (url, _) = answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    let err = get(&url).unwrap().bytes(100).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");

    // Every chunk arrived, but not the last (empty) one.
    let (url, _) = answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    let err = get(&url).unwrap().bytes(100).unwrap_err();
    assert!(err.to_string().contains("before the last chunk"), "{err}");

    let (url, _) = answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n");
    let err = get(&url).err().expect("a head cut short");
    assert!(err.to_string().contains("inside its headers"), "{err}");

    let (url, _) = answer(b"");
    let err = get(&url).err().expect("no answer at all");
    assert!(
        err.to_string().contains("closed without an answer"),
        "{err}"
    );
}

#[test]
fn an_endless_header_line_is_cut_at_the_bound() {
    let (url, _) = serve(|stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Endless: ");
        let filler = [b'a'; 4096];
        // Until the client hangs up.
        while stream.write_all(&filler).is_ok() {}
    });
    let err = get(&url).err().expect("an endless line");
    assert!(err.to_string().contains("longer than 16 KiB"), "{err}");
}

#[test]
fn too_many_headers_and_malformed_ones_are_refused() {
    let (url, _) = serve(|stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n");
        while stream.write_all(b"X-More: 1\r\n").is_ok() {}
    });
    let err = get(&url).err().expect("endless headers");
    assert!(
        err.to_string().contains("more than 100 header lines"),
        "{err}"
    );

    for (bytes, says) in [
        (
            &b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"[..],
            "not `Name: value`",
        ),
        (
            &b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n"[..],
            "not `Name: value`",
        ),
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
            "two different Content-Length",
        ),
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"[..],
            "Content-Length",
        ),
        (&b"SSH-2.0-OpenSSH_9.2\r\n"[..], "not an HTTP/1.x answer"),
    ] {
        let (url, _) = answer(bytes);
        let err = get(&url).err().expect("a malformed head");
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[test]
fn huge_chunks_are_refused_or_bounded_by_the_reader() {
    // More hex digits than 64 bits hold.
    let (url, _) =
        answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nx");
    let err = get(&url).unwrap().bytes(1 << 20).unwrap_err();
    assert!(err.to_string().contains("bad chunk size"), "{err}");

    // A chunk of 2^63 bytes that keeps coming: the caller's limit ends it.
    let (url, _) = serve(|stream| {
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n",
        );
        let filler = [b'z'; 65536];
        while stream.write_all(&filler).is_ok() {}
    });
    let err = get(&url).unwrap().bytes(1 << 20).unwrap_err();
    assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");

    // A chunk longer than its size line.
    let (url, _) =
        answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n");
    let err = get(&url).unwrap().bytes(100).unwrap_err();
    assert!(
        err.to_string().contains("longer than its size line"),
        "{err}"
    );
}

#[test]
fn a_slow_drip_is_ended_by_the_deadline() {
    // One byte every 20 ms forever: the idle timeout never trips, the deadline does.
    let (url, _) = serve(|stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n");
        while stream.write_all(b"X").is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let client = Client::default().with_deadline(Duration::from_millis(500));
    let err = client
        .request("GET", &url, &[], Body::Empty)
        .err()
        .expect("a drip");
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(
        err.to_string().contains("no complete answer within 0.5 s"),
        "{err}"
    );

    // The same bound holds for a body that drips.
    let (url, _) = serve(|stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
        while stream.write_all(b"X").is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut response = client.request("GET", &url, &[], Body::Empty).unwrap();
    let err = response.bytes(1 << 20).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
}

#[test]
fn a_server_that_never_answers_is_given_up_on() {
    let (url, seen) = serve(|stream| {
        // Holds the connection open without a byte, until the client leaves.
        let _ = stream.read(&mut [0u8; 1]);
    });
    let client = Client::default().with_timeouts(Timeouts {
        connect: Duration::from_secs(5),
        idle: Duration::from_millis(300),
        total: None,
    });
    let err = client
        .request("GET", &url, &[], Body::Empty)
        .err()
        .expect("silence");
    assert!(seen.recv().unwrap().starts_with("GET /x HTTP/1.1"));
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(
        err.to_string()
            .contains("nothing received or sent for 0.3 s"),
        "{err}"
    );
}

#[test]
fn connect_tries_every_address_until_one_accepts() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let addresses = [closed, open.local_addr().unwrap()];
    let tcp = connection::connect_first("h", &addresses, Duration::from_secs(5), None).unwrap();
    assert_eq!(tcp.peer_addr().unwrap(), addresses[1]);

    drop(open);
    let err = connection::connect_first("h", &addresses, Duration::from_secs(5), None).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("connect to h: ")
            && text.contains(&addresses[0].to_string())
            && text.contains(&addresses[1].to_string()),
        "{text}"
    );
}

#[test]
fn header_injection_and_unsafe_requests_are_refused_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    for (method, header, says) in [
        ("GET", ("X-A", "1\r\nX-Injected: 1"), "line break"),
        ("GET", ("X-A", "1\nX-Injected: 1"), "line break"),
        ("GET", ("X-A", "nul\0"), "control character"),
        ("GET", ("X-A\r\nX-B", "1"), "not an HTTP token"),
        ("GET", ("X A", "1"), "not an HTTP token"),
        ("GET", ("", "1"), "not an HTTP token"),
        ("GET", ("Content-Length", "0"), "set by envbuild"),
        ("GET", ("transfer-encoding", "chunked"), "set by envbuild"),
        ("GET / HTTP/1.1\r\nX:", ("X-A", "1"), "method"),
    ] {
        let err = Client::default()
            .request(method, &url, &[header], Body::Empty)
            .err()
            .expect("refused");
        assert!(matches!(err, Error::Refused(_)), "{err}");
        assert!(err.to_string().contains(says), "{header:?}: {err}");
    }
    let joined = url.join("v1/x\r\nX-Injected: 1");
    let err = Client::default()
        .request("GET", &joined, &[], Body::Empty)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("line break"), "{err}");
    let accepted = listener.accept();
    assert!(
        accepted
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a refused request reached the server: {accepted:?}"
    );
}

#[test]
fn a_caller_may_name_the_host_it_means() {
    let (url, seen) = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    Client::default()
        .request("GET", &url, &[("Host", "keystone.lab")], Body::Empty)
        .unwrap();
    let head = seen.recv().unwrap();
    assert!(head.contains("\r\nHost: keystone.lab\r\n"), "{head}");
    assert_eq!(head.matches("Host:").count(), 1, "{head}");
}
