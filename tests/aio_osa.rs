//! The aio-osa environment (environments/aio-osa.toml) cannot run here (it needs KVM and the
//! internet): what can be checked is. Its two generated files, rendered by the real binary
//! from the environment's own vars, parse as YAML (Debian's PyYAML) and hold only keys
//! OpenStack-Ansible reads at the pinned commit; the stages are OSA's AIO steps in order, and
//! the VM is sized as OSA's AIO quickstart says.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Project;
use serde_json::Value;

const REPO_ENVS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/environments");

/// The `*_hosts` groups of OSA's inventory (inventory/env.d/*.yml at 32.2.0, commit
/// 3e0b2253e7c7): a group of openstack_user_config.yml that is not one of these is ignored.
const OSA_HOST_GROUPS: &[&str] = &[
    "compute-infra_hosts",
    "compute_hosts",
    "coordination_hosts",
    "dashboard_hosts",
    "database_hosts",
    "haproxy_hosts",
    "identity_hosts",
    "image_hosts",
    "kvm-compute_hosts",
    "memcaching_hosts",
    "mq_hosts",
    "network-agent_hosts",
    "network-gateway_hosts",
    "network-infra_hosts",
    "network-northd_hosts",
    "network_hosts",
    "orchestration_hosts",
    "os-infra_hosts",
    "placement-infra_hosts",
    "qemu-compute_hosts",
    "repo-infra_hosts",
    "shared-infra_hosts",
    "storage-infra_hosts",
    "storage_hosts",
];

/// The variables user_variables_envbuild.yml may set, each with the file of OSA (at the
/// pinned commit) that defines it.
const OSA_VARIABLES: &[(&str, &str)] = &[
    (
        "nova_virt_type",
        "inventory/group_vars/qemu-compute_hosts.yml",
    ),
    (
        "openstack_service_accept_both_protocols",
        "inventory/group_vars/all/all.yml",
    ),
];

/// A YAML file as JSON, parsed by Debian's PyYAML (python3-yaml).
fn yaml(path: &Path) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("python3 is needed: apt-get install python3-yaml");
    assert!(
        out.status.success(),
        "{} is not YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// aio-osa.toml's [vars] as (name, TOML value text), read with Python's tomllib.
fn aio_osa_vars() -> Vec<(String, String)> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], 'rb'))['vars']))",
        ])
        .arg(Path::new(REPO_ENVS).join("aio-osa.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vars: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    vars.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

/// Renders aio-osa's two templates with its own vars through the binary: an environment
/// beside it (in a copy of the repository's environments) whose local stage takes them as
/// `../aio-osa/...` templates. Returns the folder holding the rendered files.
fn rendered(project: &Project) -> PathBuf {
    std::fs::remove_dir(project.envs()).unwrap();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(REPO_ENVS)
        .arg(project.envs())
        .status()
        .unwrap();
    assert!(copied.success());
    let mut spec = String::from("[vars]\n");
    for (name, value) in aio_osa_vars() {
        spec.push_str(&format!("{name} = {value}\n"));
    }
    spec.push_str(
        r#"
[machines.render]

[[machines.render.stages]]
name = "render"
templates = ["../aio-osa/config/openstack_user_config.yml", "../aio-osa/config/user_variables_envbuild.yml"]
steps = ["cp -r $ENVBUILD_INPUTS/aio-osa/config rendered"]
"#,
    );
    project.write("render.toml", &spec);
    project.ok(&["build", "render", "-q"]);
    project.state().join("envs/render/render/root/rendered")
}

fn ipv4(text: &str) -> u32 {
    let parts: Vec<u32> = text
        .split('.')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("{text} is not IPv4")))
        .collect();
    assert_eq!(parts.len(), 4, "{text}");
    assert!(parts.iter().all(|p| *p < 256), "{text}");
    parts.iter().fold(0, |a, p| a << 8 | p)
}

/// Whether `address` is inside `cidr` ("a.b.c.d/n").
fn inside(address: &str, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap();
    let bits: u32 = bits.parse().unwrap();
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    ipv4(address) & mask == ipv4(net) & mask
}

#[test]
fn openstack_user_config_parses_and_holds_only_what_osa_s_inventory_reads() {
    let project = Project::new();
    let dir = rendered(&project);
    let text = std::fs::read_to_string(dir.join("openstack_user_config.yml")).unwrap();
    assert!(!text.contains("{{"), "a placeholder was left:\n{text}");
    let config = yaml(&dir.join("openstack_user_config.yml"));
    let config = config.as_object().unwrap();

    for key in config.keys() {
        assert!(
            ["cidr_networks", "used_ips", "global_overrides"].contains(&key.as_str())
                || OSA_HOST_GROUPS.contains(&key.as_str()),
            "`{key}` is not a section OSA's inventory reads"
        );
    }
    let networks = config["cidr_networks"].as_object().unwrap();
    for name in ["management", "tunnel", "storage"] {
        let cidr = networks[name].as_str().unwrap();
        ipv4(cidr.split_once('/').unwrap().0);
    }
    let management = networks["management"].as_str().unwrap();

    // used_ips: addresses or "first,last" ranges, each inside one of the networks or the
    // provider network the static route names.
    let overrides = &config["global_overrides"];
    let providers = overrides["provider_networks"].as_array().unwrap();
    let route = providers[0]["network"]["static_routes"][0]["cidr"]
        .as_str()
        .unwrap();
    let all: Vec<&str> = networks
        .values()
        .map(|v| v.as_str().unwrap())
        .chain([route])
        .collect();
    for entry in config["used_ips"].as_array().unwrap() {
        for address in entry.as_str().unwrap().split(',') {
            assert!(
                all.iter().any(|cidr| inside(address, cidr)),
                "used_ips {address} is in no network"
            );
        }
    }

    // The VIPs and the host: the internal VIP and management addresses on br-mgmt's network.
    assert!(inside(
        overrides["internal_lb_vip_address"].as_str().unwrap(),
        management
    ));
    ipv4(overrides["external_lb_vip_address"].as_str().unwrap());
    assert_eq!(overrides["management_bridge"], "br-mgmt");
    // Provider networks: the keys osa_toolkit/generate.py reads; ip_from_q names a network;
    // exactly one is the management address network, on the management bridge.
    for provider in providers {
        let network = provider["network"].as_object().unwrap();
        for key in network.keys() {
            assert!(
                [
                    "container_bridge",
                    "container_type",
                    "container_interface",
                    "ip_from_q",
                    "type",
                    "range",
                    "net_name",
                    "group_binds",
                    "is_management_address",
                    "static_routes",
                    "network_interface",
                ]
                .contains(&key.as_str()),
                "provider network key `{key}`"
            );
        }
        assert!(
            network["container_bridge"]
                .as_str()
                .unwrap()
                .starts_with("br-")
        );
        assert!(!network["group_binds"].as_array().unwrap().is_empty());
        if let Some(queue) = network.get("ip_from_q") {
            assert!(networks.contains_key(queue.as_str().unwrap()), "{queue}");
        }
    }
    let management_networks: Vec<&Value> = providers
        .iter()
        .filter(|p| p["network"]["is_management_address"] == true)
        .collect();
    assert_eq!(management_networks.len(), 1);
    assert_eq!(
        management_networks[0]["network"]["container_bridge"],
        "br-mgmt"
    );
    // The AIO's one host, aio1, in each group, its management address on br-mgmt's network.
    for group in ["identity_hosts", "shared-infra_hosts", "repo-infra_hosts"] {
        let host = &config[group]["aio1"];
        assert!(
            inside(host["management_ip"].as_str().unwrap(), management),
            "{group}: {host}"
        );
        assert_eq!(host["ip"], overrides["external_lb_vip_address"]);
    }
}

#[test]
fn user_variables_parse_and_set_only_variables_osa_defines() {
    let project = Project::new();
    let dir = rendered(&project);
    let vars = yaml(&dir.join("user_variables_envbuild.yml"));
    let vars = vars.as_object().unwrap();
    assert!(!vars.is_empty());
    for key in vars.keys() {
        assert!(
            OSA_VARIABLES.iter().any(|(name, _)| name == key),
            "`{key}` is not a variable OSA defines (known: {OSA_VARIABLES:?})"
        );
    }
    assert!(["qemu", "kvm"].contains(&vars["nova_virt_type"].as_str().unwrap()));
    assert_eq!(vars["openstack_service_accept_both_protocols"], true);
}

#[test]
fn the_stages_are_osa_s_aio_steps_in_order_on_a_vm_sized_as_osa_says() {
    let project = Project::new();
    let plan = project.json(&["plan", "aio-osa", "--json", "--envs", REPO_ENVS]);
    let machine = &plan["machines"][0];
    let stages: Vec<&str> = machine["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "checkout",
            "bootstrap-ansible",
            "bootstrap-aio",
            "setup-hosts",
            "setup-infrastructure",
            "setup-openstack"
        ]
    );
    // OSA's AIO quickstart: recommended 8 cores, 16 GB RAM, 80 GB root.
    let resources = &machine["resources"];
    assert!(resources["cpus"].as_u64().unwrap() >= 8, "{resources}");
    assert!(
        resources["memory_mib"].as_u64().unwrap() >= 16 * 1024,
        "{resources}"
    );
    assert!(
        resources["disk_mib"].as_u64().unwrap() >= 80 * 1024,
        "{resources}"
    );
    // An Ubuntu LTS cloud image, pinned by digest.
    let base = &machine["base"];
    let image = base["image"].to_string();
    assert!(
        image.contains("ubuntu-24.04-server-cloudimg-amd64"),
        "{base}"
    );

    // The two OSA commits are commit ids, and the upgrade flow runs run-upgrade.sh.
    let vars = aio_osa_vars();
    for name in ["osa_commit", "osa_next_commit"] {
        let (_, value) = vars.iter().find(|(n, _)| n == name).unwrap();
        let value = value.trim_matches('"');
        assert!(
            value.len() == 40 && value.chars().all(|c| c.is_ascii_hexdigit()),
            "{name} = {value}"
        );
    }
    let upgrade =
        std::fs::read_to_string(Path::new(REPO_ENVS).join("aio-osa/scripts/upgrade.sh")).unwrap();
    assert!(upgrade.contains("scripts/run-upgrade.sh"));
}
