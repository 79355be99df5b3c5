//! The remote caches of a run: the config file, then command-line flags over it.
//!
//! ```toml
//! # $ENVBUILD_CONFIG, else $XDG_CONFIG_HOME/envbuild/config.toml (~/.config/envbuild/config.toml;
//! # the default is resolved by src/settings.rs)
//! [cache]
//! signing_key = "keys/ci.key"                 # relative paths are relative to this file
//! read_only = false                           # true: pull, never push
//! trusted_keys = ["envbuild-ed25519:...", "keys/ci.key.pub"]   # a key, or a file holding one
//!
//! [[cache.remote]]                            # asked in this order
//! url = "http://cache.lab:8080/envbuild"
//! push = true                                 # default false
//! pull = true                                 # default true
//! trusted_keys = []                           # added to [cache] trusted_keys for this remote
//!
//! [tls]
//! ca_file = "lab-ca.pem"                      # CA certificates (PEM) trusted besides the host's,
//!                                             # for every https:// URL: caches, ElasticSearch, probes
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::signing::PublicKey;
use super::{Remote, Remotes, parse_url};
use crate::error::{Error, Result};
use crate::http;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    cache: CacheSection,
    #[serde(default)]
    tls: TlsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheSection {
    signing_key: Option<PathBuf>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    trusted_keys: Vec<String>,
    #[serde(default)]
    remote: Vec<RemoteSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteSection {
    url: String,
    #[serde(default)]
    push: bool,
    #[serde(default = "yes")]
    pull: bool,
    #[serde(default)]
    trusted_keys: Vec<String>,
}

fn yes() -> bool {
    true
}

/// What the command line says about remote caches; every field overrides the config file.
#[derive(Debug, Default)]
pub struct Overrides {
    /// Config file given explicitly (it must exist).
    pub config: Option<PathBuf>,
    /// Where the config file is looked for when none is given (it may not exist).
    pub default_config: Option<PathBuf>,
    pub cache_from: Vec<String>,
    pub cache_to: Vec<String>,
    pub read_only: bool,
    pub signing_key: Option<PathBuf>,
    pub trusted_keys: Vec<String>,
    /// CA certificates (PEM) trusted for https:// besides the host's (`--ca-file`).
    pub ca_file: Option<PathBuf>,
}

/// Reads the config file (if any) and applies the flags: `--cache-from`/`--cache-to` replace
/// the file's remotes, trusted keys add up, the flag's signing key wins, read-only is sticky.
pub fn resolve(overrides: Overrides) -> Result<Remotes> {
    let (file, base) = match &overrides.config {
        Some(path) => (read(path)?, path.parent().map(Path::to_path_buf)),
        None => match overrides.default_config.clone().filter(|p| p.is_file()) {
            Some(path) => (read(&path)?, path.parent().map(Path::to_path_buf)),
            None => (File::default(), None),
        },
    };
    let relative = |p: &Path| match &base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    };
    let key_from = |value: &str| {
        if value.trim().starts_with("envbuild-ed25519:") {
            PublicKey::parse(value)
        } else {
            PublicKey::from_value_or_file(&relative(Path::new(value)).to_string_lossy())
        }
    };
    let ca_file = overrides
        .ca_file
        .clone()
        .or_else(|| file.tls.ca_file.as_deref().map(relative));
    let client = http::Client::with_ca_file(ca_file.as_deref()).map_err(|why| {
        Error::input(
            format!("{why}."),
            "give a PEM file of CA certificates with --ca-file, ENVBUILD_CA_FILE or `ca_file` under [tls] in the config file",
        )
    })?;
    let mut common = Vec::new();
    for value in file.cache.trusted_keys.iter() {
        common.push(key_from(value)?);
    }
    for value in &overrides.trusted_keys {
        common.push(PublicKey::from_value_or_file(value)?);
    }
    let mut remotes = Vec::new();
    if overrides.cache_from.is_empty() && overrides.cache_to.is_empty() {
        for section in &file.cache.remote {
            let mut trusted = common.clone();
            for value in &section.trusted_keys {
                trusted.push(key_from(value)?);
            }
            remotes.push(Remote::new(
                parse_url(&section.url)?,
                section.pull,
                section.push,
                trusted,
                &client,
            ));
        }
    } else {
        for (text, pull, push) in overrides
            .cache_from
            .iter()
            .map(|u| (u, true, false))
            .chain(overrides.cache_to.iter().map(|u| (u, false, true)))
        {
            let url = parse_url(text)?;
            match remotes.iter_mut().find(|r: &&mut Remote| r.url == url) {
                Some(known) => {
                    known.pull |= pull;
                    known.push |= push;
                }
                None => remotes.push(Remote::new(url, pull, push, common.clone(), &client)),
            }
        }
    }
    Ok(Remotes {
        remotes,
        signing_key: overrides
            .signing_key
            .or_else(|| file.cache.signing_key.as_deref().map(relative)),
        read_only: overrides.read_only || file.cache.read_only,
        http: client,
        ..Default::default()
    })
}

fn read(path: &Path) -> Result<File> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::input(
            format!("cannot read the config file {} ({e}).", path.display()),
            "create it (docs/remote-cache.md) or unset ENVBUILD_CONFIG / --config",
        )
    })?;
    toml::from_str(&text).map_err(|e| {
        Error::input(
            format!("{}: {}", path.display(), e.to_string().trim_end()),
            "see docs/remote-cache.md for the [cache] and [tls] sections",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn flags_replace_the_file_remotes_and_keys_add_up() {
        let (_dir, path) = config(
            "[cache]\nsigning_key = \"ci.key\"\n[[cache.remote]]\nurl = \"http://127.0.0.1:1/a\"\npush = true\n",
        );
        let from_file = resolve(Overrides {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(from_file.remotes.len(), 1);
        assert!(from_file.remotes[0].push && from_file.remotes[0].pull);
        assert_eq!(
            from_file.signing_key,
            Some(path.parent().unwrap().join("ci.key"))
        );
        assert_eq!(from_file.pushing().count(), 1);

        let flags = resolve(Overrides {
            config: Some(path),
            cache_from: vec!["http://127.0.0.1:2/b".into()],
            cache_to: vec![
                "http://127.0.0.1:2/b/".into(),
                "http://127.0.0.1:3/c".into(),
            ],
            read_only: true,
            ..Default::default()
        })
        .unwrap();
        let urls: Vec<String> = flags.remotes.iter().map(|r| r.url.to_string()).collect();
        assert_eq!(urls, ["http://127.0.0.1:2/b", "http://127.0.0.1:3/c"]);
        assert!(flags.remotes[0].pull && flags.remotes[0].push && !flags.remotes[1].pull);
        assert_eq!(flags.pushing().count(), 0, "read-only never pushes");
    }

    #[test]
    fn the_documented_config_file_is_accepted_as_written() {
        let doc = include_str!("../../docs/remote-cache.md");
        let start = doc.find("```toml\n").expect("a toml example") + "```toml\n".len();
        let example = &doc[start..start + doc[start..].find("```").unwrap()];
        let file: File = toml::from_str(example).expect("docs/remote-cache.md's example parses");
        assert_eq!(file.cache.remote.len(), 1);
        assert!(file.cache.remote[0].push && file.cache.remote[0].pull);
        assert_eq!(file.cache.trusted_keys.len(), 2);
        assert_eq!(file.tls.ca_file, Some(PathBuf::from("keys/lab-ca.pem")));
    }

    #[test]
    fn unknown_keys_and_missing_files_are_bad_input() {
        let (_dir, path) = config("[cache]\nremotes = []\n");
        let err = resolve(Overrides {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("remotes"), "{err}");
        let err = resolve(Overrides {
            config: Some("/nonexistent/envbuild.toml".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/envbuild.toml"),
            "{err}"
        );
    }
}
