//! The jenkins environment, checked with the real tools that exist here (Jenkins itself cannot
//! be installed: docs/environments.md). Its configuration as code parses and names only
//! plugins of the pinned list; the steps the repository's Jenkinsfile calls come from pinned
//! plugins; the job-dsl script compiles (groovy); and the same job as a Jenkins Job Builder
//! definition renders, with `jenkins-jobs test`, to a config.xml that runs the Jenkinsfile from
//! SCM with the Jenkinsfile's own parameters and the job-dsl script's trigger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn jenkins_dir() -> PathBuf {
    repo().join("environments/jenkins")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fails (never skips) when a host tool is missing, with the package that has it.
fn require(program: &str, package: &str) {
    assert!(
        ["/usr/bin", "/usr/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file()),
        "this test needs `{program}`: apt-get install {package} (dev/setup installs it)"
    );
}

/// A YAML file as JSON, parsed by Debian's PyYAML (python3-yaml).
fn yaml(path: &Path) -> Value {
    require("python3", "python3-yaml");
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} does not parse as YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// plugins.txt: plugin id -> version.
fn pinned_plugins() -> BTreeMap<String, String> {
    let mut plugins = BTreeMap::new();
    for line in read(&jenkins_dir().join("plugins.txt")).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, version) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("plugins.txt: `{line}` is not id:version"));
        assert!(!version.is_empty() && !version.contains(' '), "{line}");
        assert!(
            plugins
                .insert(id.to_string(), version.to_string())
                .is_none(),
            "plugins.txt names {id} twice"
        );
    }
    plugins
}

/// The plugin that gives each configuration-as-code symbol this configuration may use
/// ("core": Jenkins itself). A symbol not in the table fails the test: add it with its plugin.
const CASC_SYMBOLS: &[(&str, &str)] = &[
    ("jenkins", "core"),
    ("jenkins.securityRealm.local", "core"),
    (
        "jenkins.authorizationStrategy.loggedInUsersCanDoAnything",
        "core",
    ),
    ("jenkins.crumbIssuer.standard", "core"),
    ("jenkins.globalNodeProperties.envVars", "core"),
    ("unclassified", "core"),
    ("unclassified.location", "core"),
    ("unclassified.timestamper", "timestamper"),
    ("jobs", "job-dsl"),
    ("credentials", "credentials"),
    ("security.scriptApproval", "script-security"),
];

/// The symbols of `casc`: its top-level keys, and below the keys that take a describable (a
/// realm, a strategy, node properties, `unclassified` sections) the name of the one chosen.
fn casc_symbols(casc: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for (top, body) in casc.as_object().unwrap() {
        found.push(top.clone());
        let Some(body) = body.as_object() else {
            continue;
        };
        for (key, value) in body {
            let chosen: Vec<&String> = match value {
                Value::Object(o)
                    if top == "unclassified"
                        || ["securityRealm", "authorizationStrategy", "crumbIssuer"]
                            .contains(&key.as_str()) =>
                {
                    if top == "unclassified" {
                        found.push(format!("{top}.{key}"));
                        continue;
                    }
                    o.keys().collect()
                }
                Value::Array(items) if key == "globalNodeProperties" => items
                    .iter()
                    .flat_map(|i| i.as_object().unwrap().keys())
                    .collect(),
                _ => continue,
            };
            found.extend(chosen.into_iter().map(|c| format!("{top}.{key}.{c}")));
        }
    }
    found
}

#[test]
fn the_configuration_as_code_parses_and_names_only_pinned_plugins() {
    let plugins = pinned_plugins();
    assert!(plugins.contains_key("configuration-as-code"));
    let casc = yaml(&jenkins_dir().join("casc/jenkins.yaml"));
    let symbols = casc_symbols(&casc);
    assert!(symbols.len() >= 8, "{symbols:?}");
    for symbol in &symbols {
        let plugin = CASC_SYMBOLS
            .iter()
            .find(|(s, _)| s == symbol)
            .unwrap_or_else(|| {
                panic!("casc symbol `{symbol}` is not in CASC_SYMBOLS: add it with its plugin")
            })
            .1;
        assert!(
            plugin == "core" || plugins.contains_key(plugin),
            "casc/jenkins.yaml uses {symbol}, from plugin {plugin}, which plugins.txt does not pin"
        );
    }
    // The controller is the static agent the Jenkinsfile asks for.
    let jenkinsfile = read(&repo().join("Jenkinsfile"));
    assert!(jenkinsfile.contains("agent { label 'envbuild' }"));
    assert_eq!(casc["jenkins"]["labelString"], "envbuild");
    assert!(casc["jenkins"]["numExecutors"].as_u64().unwrap() >= 1);
    // No password in the file: the admin's comes from the environment at start.
    let admin = &casc["jenkins"]["securityRealm"]["local"]["users"][0];
    assert_eq!(admin["password"], "${JENKINS_ADMIN_PASSWORD}");
    // The job comes from the job-dsl script this folder holds.
    let job = casc["jobs"][0]["file"].as_str().unwrap();
    assert_eq!(job, "/etc/jenkins/casc/envbuild-job.groovy");
}

/// Pipeline steps and job-dsl methods this repository uses, and the plugin of each.
const STEPS: &[(&str, &str)] = &[
    // The Jenkinsfile (declarative pipeline).
    ("pipeline", "pipeline-model-definition"),
    ("stage", "pipeline-stage-step"),
    ("sh", "workflow-durable-task-step"),
    ("timeout", "workflow-basic-steps"),
    ("unstable", "workflow-basic-steps"),
    ("error", "workflow-basic-steps"),
    ("archiveArtifacts", "core"),
    ("junit", "junit"),
    ("publishHTML", "htmlpublisher"),
    ("withCredentials", "credentials-binding"),
    ("timestamps", "timestamper"),
    // The job-dsl script.
    ("pipelineJob", "job-dsl"),
    ("stringParam", "job-dsl"),
    ("pipelineTriggers", "workflow-job"),
    ("pollSCM", "core"),
    ("cpsScm", "workflow-cps"),
    ("git", "git"),
];

#[test]
fn the_jenkinsfile_and_the_job_use_only_pinned_plugins_and_the_job_compiles() {
    let plugins = pinned_plugins();
    let jenkinsfile = read(&repo().join("Jenkinsfile"));
    let job = read(&jenkins_dir().join("casc/envbuild-job.groovy"));
    let mut used = 0;
    for (step, plugin) in STEPS {
        let call = format!("{step}(");
        let block = format!("{step} {{");
        if [&jenkinsfile, &job]
            .iter()
            .any(|text| text.contains(&call) || text.contains(&block))
        {
            used += 1;
            assert!(
                *plugin == "core" || plugins.contains_key(*plugin),
                "`{step}` needs plugin {plugin}, which plugins.txt does not pin"
            );
        }
    }
    assert!(
        used >= 14,
        "only {used} of the steps were found: did the files move?"
    );

    require("groovy", "groovy");
    let out = Command::new("groovy")
        .arg("-e")
        .arg("new GroovyShell().parse(new File(args[0]))")
        .arg(jenkins_dir().join("casc/envbuild-job.groovy"))
        .env("JAVA_HOME", "/usr/lib/jvm/default-java")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the job-dsl script does not compile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `xmllint --xpath EXPR FILE`, trimmed.
fn xpath(file: &Path, expr: &str) -> String {
    let out = Command::new("xmllint")
        .args(["--xpath", expr])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{expr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// (name, default) of each `string(name: ..., defaultValue: ...)` parameter of the Jenkinsfile.
fn jenkinsfile_parameters() -> Vec<(String, String)> {
    read(&repo().join("Jenkinsfile"))
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("string(name: '")?;
            let (name, rest) = rest.split_once('\'')?;
            let rest = rest.split_once("defaultValue: '")?.1;
            Some((name.to_string(), rest.split_once('\'')?.0.to_string()))
        })
        .collect()
}

#[test]
fn jenkins_job_builder_renders_the_job_that_runs_the_jenkinsfile() {
    require("jenkins-jobs", "jenkins-job-builder");
    require("xmllint", "libxml2-utils");
    let out_dir = tempfile::tempdir().unwrap();
    let run = Command::new("jenkins-jobs")
        .args(["test", "-o"])
        .arg(out_dir.path())
        .arg(jenkins_dir().join("jjb"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "jenkins-jobs test: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let config = out_dir.path().join("envbuild-aio-lite");
    assert!(config.is_file(), "no job envbuild-aio-lite rendered");

    assert_eq!(xpath(&config, "name(/*)"), "flow-definition");
    assert_eq!(
        xpath(&config, "string(/flow-definition/definition/@class)"),
        "org.jenkinsci.plugins.workflow.cps.CpsScmFlowDefinition"
    );
    assert_eq!(
        xpath(&config, "string(/flow-definition/definition/scriptPath)"),
        "Jenkinsfile"
    );
    assert_eq!(
        xpath(&config, "string(/flow-definition/definition/sandbox)"),
        "true"
    );
    assert_eq!(
        xpath(&config, "string(//hudson.plugins.git.BranchSpec/name)"),
        "*/main"
    );

    // The Jenkinsfile's parameters, with its defaults; the job-dsl job declares the same.
    let wanted = jenkinsfile_parameters();
    assert_eq!(wanted.len(), 3, "{wanted:?}");
    let job_dsl = read(&jenkins_dir().join("casc/envbuild-job.groovy"));
    for (n, (name, default)) in wanted.iter().enumerate() {
        let at = format!(
            "//hudson.model.ParametersDefinitionProperty/parameterDefinitions/hudson.model.StringParameterDefinition[{}]",
            n + 1
        );
        assert_eq!(&xpath(&config, &format!("string({at}/name)")), name);
        assert_eq!(
            &xpath(&config, &format!("string({at}/defaultValue)")),
            default
        );
        assert!(
            job_dsl.contains(&format!("stringParam('{name}', '{default}'")),
            "the job-dsl job lacks parameter {name}"
        );
    }

    // Polled, on the job-dsl script's schedule.
    let spec = xpath(
        &config,
        "string(//org.jenkinsci.plugins.workflow.job.properties.PipelineTriggersJobProperty/triggers/hudson.triggers.SCMTrigger/spec)",
    );
    assert_eq!(spec, "H/15 * * * *");
    assert!(job_dsl.contains(&format!("scmpoll_spec('{spec}')")));
}
