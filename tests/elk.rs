//! The elk environment's index templates and Kibana dashboard against what the harness really
//! writes: a real `envbuild test` of a small flow pushes its results to a loopback stand-in for
//! ElasticSearch, and every document of the bulk body must be mapped by the templates in
//! environments/elk/index-templates (each field by a property or a dynamic template, with a
//! compatible type; `dynamic: strict` objects take nothing else). Each visualization of the
//! dashboard (environments/elk/kibana/dashboard.ndjson) must aggregate fields the templates map,
//! with a type its aggregation accepts. ElasticSearch and Kibana themselves cannot be installed
//! here (docs/environments.md).

mod common;

use std::path::PathBuf;

use common::Project;
use serde_json::Value;

fn elk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("environments/elk")
}

fn template(name: &str) -> Value {
    let path = elk_dir().join(format!("index-templates/{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `*` matches any run of characters, as ElasticSearch's `match` and index patterns do.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| {
                    glob(tail, &name[head.len() + i..]) && name.is_char_boundary(head.len() + i)
                })
        }
    }
}

/// Whether a JSON value can be indexed into a field of `kind`.
fn compatible(kind: &str, value: &Value) -> bool {
    match (kind, value) {
        (_, Value::Null) => true,
        ("keyword" | "text", Value::String(_)) => true,
        ("date", Value::String(s)) => s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T',
        ("long" | "short" | "byte", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("double" | "float", Value::Number(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("flattened", Value::Object(_)) => true,
        (_, Value::Array(items)) => items.iter().all(|v| compatible(kind, v)),
        _ => false,
    }
}

/// Every way `doc` breaks `mapping`, as "path: why".
fn violations(doc: &Value, mapping: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check_object(doc, mapping, mapping, "", &mut out);
    out
}

fn check_object(doc: &Value, object: &Value, root: &Value, path: &str, out: &mut Vec<String>) {
    let Value::Object(fields) = doc else {
        out.push(format!("{path}: mapped as an object, got {doc}"));
        return;
    };
    let dynamic = object.get("dynamic").cloned().unwrap_or(Value::Bool(true));
    for (name, value) in fields {
        let here = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let field = object["properties"].get(name).or_else(|| {
            // Only the root is dynamic here; an object's own `dynamic_templates` would apply too.
            (dynamic == Value::Bool(true))
                .then(|| {
                    root["dynamic_templates"].as_array()?.iter().find_map(|t| {
                        let (_, t) = t.as_object()?.iter().next()?;
                        glob(t["match"].as_str()?, name).then_some(&t["mapping"])
                    })
                })
                .flatten()
        });
        let Some(field) = field else {
            out.push(format!(
                "{here}: not mapped (the object is dynamic: {dynamic}, no template matches)"
            ));
            continue;
        };
        check_field(value, field, root, &here, out);
    }
}

fn check_field(value: &Value, field: &Value, root: &Value, path: &str, out: &mut Vec<String>) {
    let kind = field["type"].as_str().unwrap_or("object");
    if kind == "object" {
        match value {
            Value::Null => {}
            Value::Array(items) => items
                .iter()
                .for_each(|item| check_object(item, field, root, path, out)),
            _ => check_object(value, field, root, path, out),
        }
    } else if !compatible(kind, value) {
        out.push(format!("{path}: mapped as {kind}, got {value}"));
    }
}

fn mappings(name: &str) -> Value {
    template(name)["template"]["mappings"].clone()
}

/// A flow that writes every kind of result the summary has: two budgets, a probe that fails
/// with an HTTP status and one without (a closed port), smoke counts before and after,
/// resources, Rally figures before and after, a phase retried once.
fn write_results_flow(project: &Project) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    // TOML multi-line literal strings: the JSON's quotes stay as they are.
    let result = |json: &str| format!("'''echo '{json}' > $ENVBUILD_RESULT'''");
    project.write(
        "web.toml",
        &format!(
            r#"
[vars]
release = "1"

{web}
[flows.check]
default = true
from_version = "1"
to_version = "2"
max_failed_requests = 0
cleanup = ["down"]

[[flows.check.probes]]
name = "index"
url = "http://127.0.0.1:{{{{ ports.http }}}}/index.html"
rate = 20.0

[[flows.check.probes]]
name = "missing"
url = "http://127.0.0.1:{{{{ ports.http }}}}/nope"
rate = 5.0
min_uptime_pct = 50
max_down_time = "1s"

[[flows.check.probes]]
name = "refused"
url = "http://127.0.0.1:{closed_port}/"
rate = 5.0

[[flows.check.phases]]
name = "deploy"
action = "up"

[[flows.check.phases]]
name = "smoke-before"
action = "run"
run = [{smoke_before}]

[[flows.check.phases]]
name = "rally-before"
action = "run"
run = [{rally_before}]

[[flows.check.phases]]
name = "upgrade"
action = "run"
run = ["sleep 2"]
probes = true
retries = 1

[[flows.check.phases]]
name = "smoke-after"
action = "run"
run = [{smoke_after}]

[[flows.check.phases]]
name = "rally-after"
action = "run"
run = [{rally_after}]

[[flows.check.phases]]
name = "resources-verify"
action = "run"
run = [{resources}]
"#,
            web = common::WEB_MACHINE,
            smoke_before = result(r#"{"smoke": {"passed": 3, "failed": 1, "skipped": 0}, "when": "before"}"#),
            rally_before = result(
                r#"{"rally": {"KeystoneBasic.create_user": {"iterations": 4, "failures": 0, "duration_avg": 0.5, "duration_p95": 0.9}, "sla_passed": true}, "when": "before"}"#
            ),
            smoke_after = result(r#"{"smoke": {"passed": 4, "failed": 0, "skipped": 1}, "when": "after"}"#),
            rally_after = result(
                r#"{"rally": {"KeystoneBasic.create_user": {"iterations": 4, "failures": 1, "duration_avg": null, "duration_p95": null}, "sla_passed": false}, "when": "after"}"#
            ),
            resources = result(
                r#"{"resources": [{"resource": "project", "ok": true, "detail": "found"}]}"#
            ),
        ),
    );
}

/// The bulk body of a real run: (summary document, sample documents).
fn pushed_documents() -> (Value, Vec<Value>) {
    let project = Project::new();
    write_results_flow(&project);
    let out = project.path().join("run");
    let (url, server) = common::es::fake_es(r#"{"took":1,"errors":false,"items":[]}"#);
    let run = project
        .cmd()
        .env("ENVBUILD_FAIL_ONCE", "upgrade")
        .env("JOB_NAME", "envbuild-upgrades")
        .env("BUILD_NUMBER", "42")
        .env("BUILD_URL", "https://ci.example/job/envbuild-upgrades/42/")
        .env("NODE_NAME", "built-in")
        .env("GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
        .args([
            "test",
            "web",
            "--out",
            out.to_str().unwrap(),
            "--es-url",
            &url,
        ])
        .output()
        .unwrap();
    // The probes that fail on purpose fail the upgrade: exit 1, results complete.
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let request = server.join().unwrap();
    let (_, body) = request.split_once("\r\n\r\n").unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut docs = lines.chunks(2).map(|pair| {
        let index = pair[0]["index"]["_index"].as_str().unwrap().to_string();
        (index, pair[1].clone())
    });
    let (index, summary) = docs.next().unwrap();
    assert_eq!(index, "web_upgrade_test");
    let samples: Vec<Value> = docs
        .map(|(index, doc)| {
            assert_eq!(index, "web_upgrade_status_log");
            doc
        })
        .collect();
    (summary, samples)
}

fn index_pattern_matches(template: &Value, index: &str) -> bool {
    template["index_patterns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| glob(p.as_str().unwrap(), index))
}

#[test]
fn the_index_templates_map_every_document_a_real_run_pushes() {
    let (summary, samples) = pushed_documents();
    assert!(index_pattern_matches(
        &template("upgrade_test"),
        "web_upgrade_test"
    ));
    assert!(index_pattern_matches(
        &template("upgrade_status_log"),
        "web_upgrade_status_log"
    ));
    // The run wrote what the test meant it to: every kind of field is in the summary.
    for field in [
        "smoke",
        "rally",
        "resources",
        "checks",
        "job_name",
        "git_commit",
        "index_uptime_pct",
        "missing_verdict",
        "phase_upgrade_start",
    ] {
        assert!(
            !summary[field].is_null(),
            "{field} missing from the summary: {summary}"
        );
    }
    assert!(
        summary["smoke"]["before"]["passed"].is_number(),
        "{summary}"
    );
    assert!(
        summary["rally"]["after"]["sla_passed"] == false,
        "{summary}"
    );
    assert!(
        summary["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["budget"]["min_uptime_pct"].is_number()),
        "{summary}"
    );
    let summary_mapping = mappings("upgrade_test");
    assert_eq!(violations(&summary, &summary_mapping), Vec::<String>::new());

    let status_mapping = mappings("upgrade_status_log");
    assert_eq!(status_mapping["dynamic"], "strict");
    assert!(samples.len() > 20, "{} samples", samples.len());
    assert!(
        samples.iter().any(|s| s["http_status"] == 404)
            && samples
                .iter()
                .any(|s| s["http_status"].is_null() && s["error"].is_string()),
        "the flow has a 404 probe and a refused one"
    );
    for sample in &samples {
        assert_eq!(violations(sample, &status_mapping), Vec::<String>::new());
    }
}

#[test]
fn the_mapping_check_refuses_an_unmapped_field_and_a_wrong_type() {
    // The checker itself can fail: a new field the harness might add, or a changed type.
    let status = mappings("upgrade_status_log");
    let doc = serde_json::json!({"service": "p", "status": "up", "probe": "p"});
    let found = violations(&doc, &status);
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("status: mapped as byte")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|v| v.starts_with("probe: not mapped")),
        "{found:?}"
    );
    let summary = mappings("upgrade_test");
    let doc = serde_json::json!({"probes": [{"probe": "p", "extra": 1}], "p_uptime_pct": "x"});
    let found = violations(&doc, &summary);
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("probes.extra: not mapped")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("p_uptime_pct: mapped as double")),
        "{found:?}"
    );
}

/// The type of `path` (dotted) in `mapping`'s properties, if mapped.
fn field_type(mapping: &Value, path: &str) -> Option<String> {
    let mut at = mapping;
    for part in path.split('.') {
        at = at["properties"].get(part)?;
    }
    Some(at["type"].as_str().unwrap_or("object").to_string())
}

#[test]
fn the_dashboard_parses_and_reads_only_fields_the_templates_map() {
    let text = std::fs::read_to_string(elk_dir().join("kibana/dashboard.ndjson")).unwrap();
    let objects: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let by_id = |id: &str| objects.iter().find(|o| o["id"] == id);
    let templates = [template("upgrade_test"), template("upgrade_status_log")];
    let mut visualizations = 0;
    for object in &objects {
        for reference in object["references"].as_array().unwrap() {
            let target = by_id(reference["id"].as_str().unwrap())
                .unwrap_or_else(|| panic!("{} refers to a missing {reference}", object["id"]));
            assert_eq!(target["type"], reference["type"]);
        }
        if object["type"] != "visualization" {
            continue;
        }
        visualizations += 1;
        let pattern = by_id(object["references"][0]["id"].as_str().unwrap()).unwrap();
        let title = pattern["attributes"]["title"].as_str().unwrap();
        let template = templates
            .iter()
            .find(|t| t["index_patterns"][0] == title)
            .unwrap_or_else(|| panic!("no template for index pattern {title}"));
        let mapping = &template["template"]["mappings"];
        assert!(field_type(mapping, "@timestamp").as_deref() == Some("date"));
        let state: Value =
            serde_json::from_str(object["attributes"]["visState"].as_str().unwrap()).unwrap();
        for agg in state["aggs"].as_array().unwrap() {
            let Some(field) = agg["params"]["field"].as_str() else {
                assert_eq!(agg["type"], "count", "{agg}");
                continue;
            };
            let kind = field_type(mapping, field)
                .unwrap_or_else(|| panic!("{}: {field} is not in the template", object["id"]));
            let numeric = ["long", "short", "byte", "double", "float"].contains(&kind.as_str());
            let fits = match agg["type"].as_str().unwrap() {
                "avg" | "max" | "min" | "sum" | "percentiles" => numeric,
                "terms" => numeric || kind == "keyword" || kind == "boolean",
                "date_histogram" => kind == "date",
                other => panic!("aggregation {other} is not checked here"),
            };
            assert!(
                fits,
                "{}: {} over {field} ({kind})",
                object["id"], agg["type"]
            );
        }
    }
    assert_eq!(visualizations, 4);
    let dashboard = objects.iter().find(|o| o["type"] == "dashboard").unwrap();
    let panels: Vec<Value> =
        serde_json::from_str(dashboard["attributes"]["panelsJSON"].as_str().unwrap()).unwrap();
    assert_eq!(panels.len(), visualizations);
}
