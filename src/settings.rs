//! One resolved configuration per run, as ripgrep turns its low-level arguments into high-level
//! ones: the command line (clap has merged the ENVBUILD_* variables into it already), then the
//! config file, then the defaults, resolved once by `cli` and handed to the workspace and the
//! backends. Nothing past this module reads a flag, an ENVBUILD_* variable, XDG_* or HOME.
//!
//! Every path is absolute: steps run in the machine root, so a relative `--state` would give
//! them input paths that do not resolve from there.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::remote::Remotes;
use crate::remote::config::Overrides;

/// Off a terminal, a running stage or phase says how it is doing this often.
const DEFAULT_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the command line says, before anything is resolved.
#[derive(Debug, Default)]
pub struct Flags {
    pub envs: Option<PathBuf>,
    pub store: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub history: Option<PathBuf>,
    pub quiet: bool,
    pub heartbeat: Option<std::time::Duration>,
    pub libvirt_uri: Option<String>,
    pub images: Option<PathBuf>,
    pub vagrant_network: Option<VagrantNetwork>,
    /// Remote-cache flags; `default_config` is filled in here.
    pub remote: Overrides,
}

/// The settings of this run.
#[derive(Debug)]
pub struct Settings {
    /// The environments folder, or why there is none (only commands that read specs need it).
    envs: std::result::Result<PathBuf, (String, String)>,
    /// The stage store (created by the first command that uses it).
    pub store: PathBuf,
    /// Live machines, secrets, running services.
    pub state: PathBuf,
    /// The results history database (src/history), by default in the state folder.
    pub history: PathBuf,
    /// Print only results, warnings and errors.
    pub quiet: bool,
    /// Off a terminal, how often a running stage or phase prints a line (CI consoles).
    pub heartbeat: std::time::Duration,
    pub libvirt: LibvirtSettings,
    /// The remote caches, in lookup order.
    pub remotes: Remotes,
}

/// What the libvirt backend is told by the command line.
#[derive(Debug, Clone)]
pub struct LibvirtSettings {
    /// `--libvirt-uri`: overrides every machine's `uri`.
    pub uri: Option<String>,
    /// Where base images are built and kept (`--images`, default STORE/v1/images).
    pub images: PathBuf,
    /// `--vagrant-network`: how vagrant machines are networked on this host.
    pub vagrant_network: VagrantNetwork,
}

/// How a vagrant machine is networked (docs/backends.md, "vagrant"). Either way envbuild's own
/// traffic (steps over SSH, forwarded ports) goes through a QEMU user-mode NIC on 127.0.0.1; the
/// choice is whether Vagrant also gets its stock management network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VagrantNetwork {
    /// The loopback NIC alone: nothing but 127.0.0.1 is reached from the host (CI hosts).
    #[default]
    Loopback,
    /// Also vagrant-libvirt's management network (a NAT network with DHCP, 192.168.121.0/24 by
    /// default): `vagrant ssh` and Vagrant's own tools work as on any Vagrant laptop.
    Management,
}

impl VagrantNetwork {
    pub fn as_str(self) -> &'static str {
        match self {
            VagrantNetwork::Loopback => "loopback",
            VagrantNetwork::Management => "management",
        }
    }
}

impl std::str::FromStr for VagrantNetwork {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "loopback" => Ok(VagrantNetwork::Loopback),
            "management" => Ok(VagrantNetwork::Management),
            other => Err(format!(
                "`{other}` is not a vagrant network: use loopback or management"
            )),
        }
    }
}

/// The results history's file name in the state folder, unless `--history-file` names another.
pub const HISTORY_FILE: &str = "history.sqlite";

impl Settings {
    pub fn resolve(flags: Flags) -> Result<Settings> {
        let store = absolute(
            flags
                .store
                .unwrap_or_else(|| xdg("XDG_CACHE_HOME", ".cache")),
        )?;
        let state = absolute(
            flags
                .state
                .unwrap_or_else(|| xdg("XDG_STATE_HOME", ".local/state")),
        )?;
        let history = match flags.history {
            Some(file) => absolute(file)?,
            None => state.join(HISTORY_FILE),
        };
        let images = match flags.images {
            Some(dir) => absolute(dir)?,
            None => store.join(crate::store::LAYOUT).join("images"),
        };
        let envs = find_envs_dir(flags.envs.as_deref());
        let mut remote = flags.remote;
        remote.config = remote.config.map(absolute).transpose()?;
        remote.default_config = Some(xdg("XDG_CONFIG_HOME", ".config").join("config.toml"));
        Ok(Settings {
            envs,
            store,
            state,
            history,
            quiet: flags.quiet,
            heartbeat: flags.heartbeat.unwrap_or(DEFAULT_HEARTBEAT),
            libvirt: LibvirtSettings {
                uri: flags.libvirt_uri,
                images,
                vagrant_network: flags.vagrant_network.unwrap_or_default(),
            },
            remotes: crate::remote::config::resolve(remote)?,
        })
    }

    /// The environments folder; an error with its fix if there is none.
    pub fn envs(&self) -> Result<&Path> {
        match &self.envs {
            Ok(dir) => Ok(dir),
            Err((message, fix)) => Err(Error::input(message.clone(), fix.clone())),
        }
    }
}

/// `$VAR/envbuild`, else `$HOME/<home_relative>/envbuild` (the XDG base directories), else
/// `/tmp/envbuild`: the one place these fallbacks live.
fn xdg(var: &str, home_relative: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(home_relative)))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("envbuild")
}

fn absolute(path: PathBuf) -> Result<PathBuf> {
    std::path::absolute(&path).ctx(|| format!("resolving {}", path.display()))
}

/// The flag or ENVBUILD_ENVS if given, else the nearest `environments/` in the current directory
/// or one of its parents (as cargo finds Cargo.toml). `Err((message, fix))` when there is none.
fn find_envs_dir(explicit: Option<&Path>) -> std::result::Result<PathBuf, (String, String)> {
    if let Some(dir) = explicit {
        let fix = "pass an existing folder with --envs or ENVBUILD_ENVS".to_string();
        if dir.is_dir() {
            return std::path::absolute(dir)
                .map_err(|e| (format!("resolving {}: {e}", dir.display()), fix));
        }
        return Err((
            format!("environments folder {} does not exist.", dir.display()),
            fix,
        ));
    }
    let cwd = std::env::current_dir().map_err(|e| {
        (
            format!("reading the current directory: {e}"),
            "run envbuild from an existing folder".into(),
        )
    })?;
    for dir in cwd.ancestors() {
        let candidate = dir.join("environments");
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    Err((
        format!(
            "no environments/ folder in {} or any parent.",
            cwd.display()
        ),
        "run envbuild from a project with an environments/ folder, or pass --envs DIR".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_folders_become_absolute_and_the_images_follow_the_store() {
        let settings = Settings::resolve(Flags {
            store: Some("rel/store".into()),
            state: Some("rel/state".into()),
            envs: Some("/nonexistent-envs".into()),
            ..Default::default()
        })
        .unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(settings.store, cwd.join("rel/store"));
        assert_eq!(settings.state, cwd.join("rel/state"));
        assert_eq!(settings.libvirt.images, cwd.join("rel/store/v1/images"));
        let error = settings.envs().unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error
                .to_string()
                .contains("/nonexistent-envs does not exist.\n  fix: pass"),
            "{error}"
        );
    }

    #[test]
    fn the_vagrant_network_defaults_to_loopback_and_names_the_choices_of_a_bad_one() {
        let settings = Settings::resolve(Flags::default()).unwrap();
        assert_eq!(settings.libvirt.vagrant_network, VagrantNetwork::Loopback);
        for kind in [VagrantNetwork::Loopback, VagrantNetwork::Management] {
            assert_eq!(kind.as_str().parse::<VagrantNetwork>(), Ok(kind));
            // machine.json records it by the same name.
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<VagrantNetwork>(&json).unwrap(), kind);
        }
        assert_eq!(
            "nat".parse::<VagrantNetwork>(),
            Err("`nat` is not a vagrant network: use loopback or management".to_string())
        );
    }
}
