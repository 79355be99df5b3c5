//! Results to ElasticSearch through its bulk API: one summary document per run and one document
//! per probe sample, in two indices (`<env>_upgrade_test`, `<env>_upgrade_status_log`), with the
//! field names the original CI's Kibana dashboards read (docs/harness.md, "ElasticSearch"):
//! - a sample carries `service` (the probe), `status` (1 up, 0 down) and `timestamp`, as the
//!   seed's did; envbuild's extra fields sit beside them, the HTTP status as `http_status`;
//! - the summary is the whole of summary.json plus flat figures per probe
//!   (`<probe>_uptime_pct`, `_total_requests`, `_successful_requests`, `_failed_requests`,
//!   `_down_time_s`, `_start`, `_end`, `_verdict`), per phase (`phase_<name>_start`, `_end`,
//!   `_status`) and the CI's metadata (`job_name`, `build_number`, `build_url`, `node_name`,
//!   `git_commit`) when the CI set it.
//!
//! The transport is the run's HTTP client (src/http/): http:// or https://, the CA file of
//! the run, bounded answers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::harness::stats::Sample;
use crate::harness::summary::RunSummary;
use crate::harness::verdict::CheckKind;
use crate::http::{self, Body, Url};

/// A cap on the answer, against a peer that is not ElasticSearch. A bulk answer is about 150
/// bytes per document. (ElasticSearch indexes a bulk request before it answers: thousands of
/// samples take seconds, within the client's 120 s of silence.)
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// `(<env>_upgrade_test, <env>_upgrade_status_log)`. Environment names are lowercase letters,
/// digits, `-` and `_`, all valid in an index name.
pub fn default_indices(env: &str) -> (String, String) {
    (
        format!("{env}_upgrade_test"),
        format!("{env}_upgrade_status_log"),
    )
}

#[derive(Serialize)]
struct Action<'a> {
    index: Target<'a>,
}

#[derive(Serialize)]
struct Target<'a> {
    _index: &'a str,
    _id: String,
}

#[derive(Serialize)]
struct SummaryDoc<'a> {
    #[serde(rename = "@timestamp")]
    at: &'a str,
    run_id: &'a str,
    #[serde(flatten)]
    summary: &'a RunSummary,
    #[serde(flatten)]
    flat: BTreeMap<String, serde_json::Value>,
}

/// A probe sample, under the seed's field names first.
#[derive(Serialize)]
struct SampleDoc<'a> {
    #[serde(rename = "@timestamp")]
    at: &'a str,
    timestamp: &'a str,
    service: &'a str,
    /// 1 when the request got the expected answer, 0 when not.
    status: u8,
    run_id: &'a str,
    env: &'a str,
    flow: &'a str,
    t_ms: u64,
    http_status: Option<u16>,
    latency_ms: f64,
    error: Option<&'a str>,
}

/// The bulk request body: the summary, then every sample, each as an action line and a document
/// line, every line ending in `\n` (ElasticSearch refuses a body whose last line has none).
///
/// Documents have ids (`<run_id>` and `<run_id>-<n>`), so that posting the same run again
/// replaces its documents instead of counting its samples twice. A sample's `timestamp` is the
/// run's `started` plus its `t_ms`, to the millisecond.
pub fn bulk_body(
    summary: &RunSummary,
    samples: &[Sample],
    summary_index: &str,
    status_index: &str,
    run_id: &str,
) -> Result<String> {
    let started = humantime::parse_rfc3339_weak(&summary.started).map_err(|e| {
        Error::Input(format!(
            "run start `{}` is not an RFC 3339 time: {e}",
            summary.started
        ))
    })?;
    let at = |t_ms: u64| {
        humantime::format_rfc3339_millis(started + Duration::from_millis(t_ms)).to_string()
    };
    let mut body = String::new();
    push_line(
        &mut body,
        &Action {
            index: Target {
                _index: summary_index,
                _id: run_id.to_string(),
            },
        },
    );
    push_line(
        &mut body,
        &SummaryDoc {
            at: &summary.started,
            run_id,
            summary,
            flat: flat_figures(summary, at),
        },
    );
    for (n, sample) in samples.iter().enumerate() {
        push_line(
            &mut body,
            &Action {
                index: Target {
                    _index: status_index,
                    _id: format!("{run_id}-{n}"),
                },
            },
        );
        let timestamp = at(sample.t_ms);
        push_line(
            &mut body,
            &SampleDoc {
                at: &timestamp,
                timestamp: &timestamp,
                service: &sample.probe,
                status: u8::from(sample.ok),
                run_id,
                env: &summary.env,
                flow: &summary.flow,
                t_ms: sample.t_ms,
                http_status: sample.status,
                latency_ms: sample.latency_ms,
                error: sample.error.as_deref(),
            },
        );
    }
    Ok(body)
}

/// The summary's figures as top-level fields, for dashboards that cannot read into lists. A
/// name taken already (a probe and a phase could collide) keeps its first value.
fn flat_figures(
    summary: &RunSummary,
    at: impl Fn(u64) -> String,
) -> BTreeMap<String, serde_json::Value> {
    use serde_json::{Value, json};
    let mut flat: BTreeMap<String, Value> = BTreeMap::new();
    let mut put = |key: String, value: Value| {
        flat.entry(key).or_insert(value);
    };
    for (name, value) in &summary.ci {
        put(name.to_lowercase(), json!(value));
    }
    for phase in &summary.phases {
        let span = phase.span();
        put(
            format!("phase_{}_start", phase.name),
            json!(span.map(|s| at(s.start_ms))),
        );
        put(
            format!("phase_{}_end", phase.name),
            json!(span.map(|s| at(s.end_ms))),
        );
        put(
            format!("phase_{}_status", phase.name),
            json!(phase.status.as_str()),
        );
    }
    for probe in &summary.probes {
        let name = &probe.probe;
        let sampled = probe.total > 0;
        let verdict = summary
            .checks
            .iter()
            .find(|c| c.kind == CheckKind::Probe && c.name == *name)
            .map(|c| c.status.as_str());
        for (field, value) in [
            ("uptime_pct", json!(probe.uptime_pct)),
            ("total_requests", json!(probe.total)),
            ("successful_requests", json!(probe.successful)),
            ("failed_requests", json!(probe.failed)),
            ("down_time_s", json!(probe.down_time_ms as f64 / 1000.0)),
            ("start", json!(sampled.then(|| at(probe.start_ms)))),
            ("end", json!(sampled.then(|| at(probe.end_ms)))),
            ("verdict", json!(verdict)),
        ] {
            put(format!("{name}_{field}"), value);
        }
    }
    flat
}

fn push_line(body: &mut String, value: &impl Serialize) {
    body.push_str(&serde_json::to_string(value).expect("bulk documents always serialize"));
    body.push('\n');
}

/// What ElasticSearch answered to a bulk request it fully accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkOutcome {
    pub status: u16,
    /// Documents indexed.
    pub items: usize,
    pub took_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("ElasticSearch URL {0}")]
    Url(#[from] http::UrlError),
    #[error("{context}: {source}{}", source.fix().map_or(String::new(), |fix| format!("\n  fix: {fix}")))]
    Http {
        context: String,
        #[source]
        source: http::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ElasticSearch answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("ElasticSearch rejected {failed} of {total} documents; the first because: {first}")]
    Rejected {
        failed: usize,
        total: usize,
        first: String,
    },
    #[error("ElasticSearch's answer is not a bulk response: {0}")]
    Answer(String),
}

/// POSTs `body` to `<url>/_bulk`. Fails unless ElasticSearch indexed every document: a 2xx
/// answer with `"errors": true` is a failure too, naming the first rejected document's reason.
pub fn post_bulk(
    client: &http::Client,
    url: &str,
    body: &str,
) -> std::result::Result<BulkOutcome, BulkError> {
    let bulk = bulk_url(url)?;
    let mut response = client
        .request(
            "POST",
            &bulk,
            &[
                ("Accept", "application/json"),
                ("Content-Type", "application/x-ndjson"),
            ],
            Body::Bytes(body.as_bytes()),
        )
        .map_err(|source| BulkError::Http {
            context: format!("posting the bulk request to {bulk}"),
            source,
        })?;
    let status = response.status;
    let answer = response
        .bytes(MAX_BODY_BYTES)
        .map_err(|source| BulkError::Io {
            context: format!("reading ElasticSearch's answer from {bulk}"),
            source,
        })?;
    let answer = String::from_utf8_lossy(&answer);
    if !(200..300).contains(&status) {
        return Err(BulkError::Status {
            status,
            body: answer.chars().take(500).collect(),
        });
    }
    let json: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| BulkError::Answer(e.to_string()))?;
    let items = json["items"]
        .as_array()
        .ok_or_else(|| BulkError::Answer("no `items` list".into()))?;
    // Each item is `{"<op>": {"status": ..., "error": {...}}}`.
    let errors: Vec<&serde_json::Value> = items
        .iter()
        .filter_map(|item| item.as_object()?.values().next())
        .filter(|result| !result["error"].is_null() || result["status"].as_u64() >= Some(300))
        .collect();
    if json["errors"] == true || !errors.is_empty() {
        let first = errors.first().map_or("(not said)".to_string(), |result| {
            let error = &result["error"];
            match (error["type"].as_str(), error["reason"].as_str()) {
                (Some(kind), Some(reason)) => format!("{kind}: {reason}"),
                _ => error.to_string(),
            }
        });
        return Err(BulkError::Rejected {
            failed: errors.len(),
            total: items.len(),
            first,
        });
    }
    Ok(BulkOutcome {
        status,
        items: items.len(),
        took_ms: json["took"].as_u64().unwrap_or(0),
    })
}

/// `<url>/_bulk`, keeping the URL's query (`?refresh=true`, say).
fn bulk_url(url: &str) -> std::result::Result<Url, BulkError> {
    let url = Url::parse(url)?;
    Ok(Url {
        query: url.query.clone(),
        ..url.join("_bulk")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::summary::fixture::run;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// The fixture run cut to two keystone samples, one phase and no checks.
    fn small_run() -> (RunSummary, Vec<Sample>) {
        let (mut summary, _) = run();
        summary.phases.truncate(1);
        summary.probes.clear();
        summary.checks.clear();
        summary.cache.clear();
        summary.stage_keys.clear();
        summary.resources.clear();
        summary.smoke = Default::default();
        summary.rally = Default::default();
        summary.reasons.clear();
        summary.probe_windows.clear();
        let samples = vec![
            Sample {
                phases: Default::default(),
                t_ms: 250,
                probe: "keystone".into(),
                ok: true,
                status: Some(200),
                latency_ms: 12.5,
                error: None,
            },
            Sample {
                phases: Default::default(),
                t_ms: 61_001,
                probe: "keystone".into(),
                ok: false,
                status: None,
                latency_ms: 1000.0,
                error: Some("connection \"refused\"".into()),
            },
        ];
        (summary, samples)
    }

    fn small_body() -> String {
        let (summary, samples) = small_run();
        let (summary_index, status_index) = default_indices(&summary.env);
        bulk_body(&summary, &samples, &summary_index, &status_index, "run-1").unwrap()
    }

    fn small_lines() -> Vec<serde_json::Value> {
        let body = small_body();
        assert!(body.ends_with("}\n"));
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn samples_keep_the_seeds_field_names() {
        let lines = small_lines();
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[2],
            serde_json::json!({"index": {"_index": "aio-lite_upgrade_status_log", "_id": "run-1-0"}})
        );
        assert_eq!(
            lines[3],
            serde_json::json!({"@timestamp": "2025-03-01T10:00:00.250Z",
                "timestamp": "2025-03-01T10:00:00.250Z", "service": "keystone", "status": 1,
                "run_id": "run-1", "env": "aio-lite", "flow": "upgrade", "t_ms": 250,
                "http_status": 200, "latency_ms": 12.5, "error": null})
        );
        assert_eq!(lines[5]["status"], 0);
        assert_eq!(lines[5]["http_status"], serde_json::Value::Null);
        assert_eq!(lines[5]["timestamp"], "2025-03-01T10:01:01.001Z");
        assert_eq!(lines[5]["error"], "connection \"refused\"");
    }

    #[test]
    fn the_summary_has_flat_figures_vars_and_ci_metadata() {
        let lines = small_lines();
        assert_eq!(
            lines[0],
            serde_json::json!({"index": {"_index": "aio-lite_upgrade_test", "_id": "run-1"}})
        );
        let doc = &lines[1];
        assert_eq!(doc["@timestamp"], "2025-03-01T10:00:00Z");
        assert_eq!(doc["run_id"], "run-1");
        assert_eq!(doc["verdict"], "failed");
        assert_eq!(doc["vars"]["validation"], "tempest rally");
        assert_eq!(
            (&doc["job_name"], &doc["build_number"]),
            (
                &serde_json::json!("envbuild/main"),
                &serde_json::json!("41")
            )
        );
        assert_eq!(doc.get("build_url"), None, "only what the CI set");
        assert_eq!(doc["phase_deploy_start"], "2025-03-01T10:00:00.000Z");
        assert_eq!(doc["phase_deploy_end"], "2025-03-01T10:00:20.500Z");
        assert_eq!(doc["phase_deploy_status"], "passed");

        let (summary, samples) = run();
        let body = bulk_body(&summary, &samples, "s", "l", "r").unwrap();
        let lines: Vec<serde_json::Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2 * (1 + samples.len()));
        let doc = &lines[1];
        assert_eq!(doc["keystone_uptime_pct"], 80.0);
        assert_eq!(doc["keystone_total_requests"], 20);
        assert_eq!(doc["keystone_successful_requests"], 16);
        assert_eq!(doc["keystone_failed_requests"], 4);
        assert_eq!(doc["keystone_down_time_s"], 4.0);
        assert_eq!(doc["keystone_start"], "2025-03-01T10:00:25.000Z");
        assert_eq!(doc["keystone_end"], "2025-03-01T10:00:44.000Z");
        assert_eq!(doc["keystone_verdict"], "failed");
        assert_eq!(doc["token_verdict"], "passed");
        assert_eq!(
            doc["phase_resources-cleanup_start"],
            serde_json::Value::Null
        );
        // The whole summary is there too, lists included.
        assert_eq!(doc["probes"][0]["down_time_ms"], 4000);
        assert_eq!(lines[3]["timestamp"], "2025-03-01T10:00:25.000Z");
        assert_eq!(lines[5]["timestamp"], "2025-03-01T10:00:25.500Z");
    }

    #[test]
    fn a_start_that_is_not_rfc3339_is_refused() {
        let (mut summary, samples) = small_run();
        summary.started = "yesterday".into();
        let error = bulk_body(&summary, &samples, "s", "l", "r").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`yesterday` is not an RFC 3339 time")
        );
    }

    struct Request {
        head: String,
        body: Vec<u8>,
    }

    /// A one-shot HTTP server on loopback that records the request and sends `answer`.
    fn serve_once(answer: String) -> (String, std::thread::JoinHandle<Request>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/es/", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
            Request { head, body }
        });
        (url, server)
    }

    fn answer(status: &str, json: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
            json.len()
        )
    }

    #[test]
    fn posts_ndjson_to_the_bulk_endpoint() {
        let ok = r#"{"took":7,"errors":false,"items":[
            {"index":{"_index":"aio_upgrade_test","_id":"run-1","status":201}},
            {"index":{"_index":"aio_upgrade_status_log","_id":"run-1-0","status":201}},
            {"index":{"_index":"aio_upgrade_status_log","_id":"run-1-1","status":200}}]}"#;
        let (url, server) = serve_once(answer("200 OK", ok));
        let outcome = post_bulk(&http::Client::default(), &url, &small_body()).unwrap();
        assert_eq!(
            outcome,
            BulkOutcome {
                status: 200,
                items: 3,
                took_ms: 7
            }
        );
        let request = server.join().unwrap();
        let mut head = request.head.lines();
        assert_eq!(head.next(), Some("POST /es/_bulk HTTP/1.1"));
        let headers: Vec<&str> = head.collect();
        assert!(headers.contains(&"Content-Type: application/x-ndjson"));
        assert!(headers.contains(&format!("Host: {}", &url[7..url.len() - 4]).as_str()));
        assert_eq!(request.body, small_body().as_bytes());
    }

    #[test]
    fn an_error_status_is_a_failure() {
        let (url, server) = serve_once(answer(
            "500 Internal Server Error",
            r#"{"error":"boom","status":500}"#,
        ));
        match post_bulk(&http::Client::default(), &url, &small_body()) {
            Err(BulkError::Status { status, body }) => {
                assert_eq!(status, 500);
                assert!(body.contains("boom"));
            }
            other => panic!("expected a status error, got {other:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn rejected_documents_are_a_failure_even_with_200() {
        // Chunked, as ElasticSearch answers when compressing or streaming.
        let json = r#"{"took":3,"errors":true,"items":[
            {"index":{"_id":"run-1","status":201}},
            {"index":{"_id":"run-1-0","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [status]"}}},
            {"index":{"_id":"run-1-1","status":201}}]}"#;
        let (head, tail) = json.split_at(20);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{head}\r\n{:x}\r\n{tail}\r\n0\r\n\r\n",
            head.len(),
            tail.len()
        );
        let (url, server) = serve_once(chunked);
        match post_bulk(&http::Client::default(), &url, &small_body()) {
            Err(error @ BulkError::Rejected { .. }) => assert_eq!(
                error.to_string(),
                "ElasticSearch rejected 1 of 3 documents; the first because: \
                 mapper_parsing_exception: failed to parse field [status]"
            ),
            other => panic!("expected rejected documents, got {other:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn a_peer_that_is_not_elasticsearch_is_an_error() {
        let (url, server) = serve_once("SSH-2.0-OpenSSH_9.2\r\n".into());
        let error = post_bulk(&http::Client::default(), &url, &small_body()).unwrap_err();
        assert!(matches!(error, BulkError::Http { .. }), "{error}");
        assert!(
            error.to_string().contains("not an HTTP/1.x answer"),
            "{error}"
        );
        server.join().unwrap();

        let (url, server) = serve_once(answer("200 OK", "<html>proxy login</html>"));
        let error = post_bulk(&http::Client::default(), &url, &small_body()).unwrap_err();
        assert!(matches!(error, BulkError::Answer(_)), "{error}");
        server.join().unwrap();
    }

    #[test]
    fn a_closed_port_is_an_io_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let error = post_bulk(&http::Client::default(), &url, "x\n").unwrap_err();
        assert!(matches!(error, BulkError::Http { .. }), "{error}");
        assert!(
            error.to_string().contains("connect to 127.0.0.1:"),
            "{error}"
        );
    }

    #[test]
    fn the_bulk_endpoint_keeps_the_prefix_and_the_query() {
        let bulk = |url| {
            bulk_url(url)
                .map(|u| u.to_string())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            bulk("http://127.0.0.1:9200"),
            Ok("http://127.0.0.1:9200/_bulk".into())
        );
        assert_eq!(
            bulk("https://[::1]:9201/es/?refresh=true"),
            Ok("https://[::1]:9201/es/_bulk?refresh=true".into())
        );
        for (url, reason) in [
            ("es:9200", "does not start with http:// or https://"),
            ("http://:9200", "no host"),
            ("http://es:92000", "port"),
            ("http://u:p@es:9200", "credentials"),
            ("http://[::1:9200", "closing `]`"),
        ] {
            let error = bulk(url).unwrap_err();
            assert!(error.starts_with("ElasticSearch URL `"), "{url}: {error}");
            assert!(error.contains(reason), "{url}: {error}");
        }
    }
}
