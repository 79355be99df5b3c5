//! The examples in docs/ are real: the complete example of docs/spec.md loads, builds, serves
//! and stops; CI runs the README's test command as the README writes it.

mod common;

use common::Project;

/// The body of the first fenced block of `lang` in `markdown`.
fn first_block(markdown: &str, lang: &str) -> String {
    let fence = format!("```{lang}\n");
    let start = markdown.find(&fence).expect("a fenced block") + fence.len();
    let end = start + markdown[start..].find("```").expect("closed block");
    markdown[start..end].to_string()
}

#[test]
fn spec_reference_example_builds_and_serves() {
    let project = Project::new();
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/spec.md")).unwrap();
    project.write("example.toml", &first_block(&doc, "toml"));
    project.write("example/index.html", "<p>{{ message }} from the docs</p>\n");
    project.write(
        "example/scripts/prestart.sh",
        "test -n \"$ENVBUILD_SECRET_ADMIN_PASSWORD\"\n",
    );

    let plan = project.json(&["plan", "example", "--json"]);
    assert_eq!(plan["machines"][0]["stages"][0]["name"], "site");
    let up = project.json(&["up", "example", "--json", "--var", "message=bonjour"]);
    let url = up["machines"][0]["services"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let body = {
        use std::io::{Read, Write};
        let host = url.trim_start_matches("http://").trim_end_matches('/');
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        write!(stream, "GET /index.html HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body
    };
    assert!(body.contains("<p>bonjour from the docs</p>"), "{body}");
    project.ok(&["down", "example"]);
}

/// The README's quick start has two commands, the main job and the tests; .ci/run must run the
/// second one as written, so the README's promise is what CI checks at every commit.
#[test]
fn ci_runs_the_readmes_test_command_verbatim() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let start = readme.find("## Quick start").expect("a quick start");
    let block = first_block(&readme[start..], "sh");
    let commands: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        commands.len(),
        2,
        "the quick start has exactly two commands: {commands:?}"
    );
    let test_command = commands[1];
    let ci = std::fs::read_to_string(format!("{root}/.ci/run")).unwrap();
    let run: Vec<&str> = ci
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(
        run.last().copied(),
        Some(test_command),
        ".ci/run's last command is not the README's test command"
    );
}
