//! `envbuild cache ls|verify|gc|export|import|keygen|push|pull`, and the remote cache flags.

use std::collections::HashSet;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Global, print_json};
use crate::engine::Workspace;
use crate::error::{Error, IoContext, Result};
use crate::remote::{self, Pushed};
use crate::store::archive;
use crate::store::tar_writer::Buffered;

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the entries of the store
    Ls {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Recompute every digest; report tampered or incomplete entries (exit 1 if any)
    Verify {
        /// Move every bad entry to quarantine/ so no build can use it
        #[arg(long)]
        quarantine: bool,
    },
    /// Remove entries no current spec references, keeping the most recent ones
    Gc(GcArgs),
    /// Write an environment's cached entries to an archive
    Export {
        /// Environment name
        env: String,
        /// Archive to write
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Add the entries of an archive to the store, verifying every digest
    Import {
        /// Archive to read
        file: PathBuf,
    },
    /// Create a signing key (mode 0600) and KEY.pub; prints the public key to trust
    Keygen {
        /// Where to write the private key (never overwritten)
        path: PathBuf,
    },
    /// Upload cached entries to the remote caches that take pushes, signed
    Push {
        /// Environment name (its cached stages), or a 64-hex stage key
        target: String,
    },
    /// Download entries from the remote caches, verifying signatures and digests
    Pull {
        /// Environment name (its stages the store lacks), or a 64-hex stage key
        target: String,
    },
}

/// Remote caches (docs/remote-cache.md); these override the config file.
#[derive(Debug, Args)]
#[command(next_help_heading = "Remote cache")]
pub struct RemoteArgs {
    /// Config file [default: $XDG_CONFIG_HOME/envbuild/config.toml]
    #[arg(long, global = true, env = "ENVBUILD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Pull stages from this remote cache (repeatable, asked in order; replaces the config's)
    #[arg(long, global = true, value_name = "URL")]
    cache_from: Vec<String>,
    /// Push built stages to this remote cache (repeatable; replaces the config's)
    #[arg(long, global = true, value_name = "URL")]
    cache_to: Vec<String>,
    /// Pull, never push (for untrusted builds such as pull requests)
    #[arg(long, global = true)]
    cache_read_only: bool,
    /// Private key that signs pushed entries (from `envbuild cache keygen`)
    #[arg(long, global = true, env = "ENVBUILD_SIGNING_KEY", value_name = "FILE")]
    cache_signing_key: Option<PathBuf>,
    /// Public key whose entries are accepted: the key itself or a .pub file (repeatable)
    #[arg(long, global = true, value_name = "KEY|FILE")]
    cache_trusted_key: Vec<String>,
    /// CA certificates (PEM) trusted for https:// URLs (caches, ElasticSearch, probes) besides
    /// the host's store
    #[arg(long, global = true, env = "ENVBUILD_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

impl RemoteArgs {
    pub fn resolve(&self) -> Result<remote::Remotes> {
        remote::config::resolve(remote::config::Overrides {
            config: self.config.clone(),
            cache_from: self.cache_from.clone(),
            cache_to: self.cache_to.clone(),
            read_only: self.cache_read_only,
            signing_key: self.cache_signing_key.clone(),
            trusted_keys: self.cache_trusted_key.clone(),
            ca_file: self.ca_file.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Show what would be removed, remove nothing
    #[arg(long)]
    dry_run: bool,
    /// How many of the most recent unreferenced entries to keep
    #[arg(long, default_value_t = 10, value_name = "N")]
    keep_recent: usize,
}

#[derive(serde::Serialize)]
struct Listed {
    name: String,
    env: String,
    machine: String,
    stage: String,
    size: u64,
    created: String,
}

pub fn run(global: &Global, command: CacheCommand) -> Result<i32> {
    if let CacheCommand::Keygen { path } = &command {
        let public = remote::signing::SecretKey::generate(path)?;
        eprintln!(
            "wrote the signing key {} (mode 0600, keep it secret) and {}",
            path.display(),
            remote::signing::public_path(path).display()
        );
        println!("{public}");
        return Ok(0);
    }
    let ws = global.workspace()?;
    match command {
        CacheCommand::Ls { json } => {
            let mut listed = Vec::new();
            for entry in ws.store.entries()? {
                let m = entry.manifest()?;
                listed.push(Listed {
                    name: entry.name,
                    env: m.env,
                    machine: m.machine,
                    stage: m.stage,
                    size: m.size,
                    created: m.created,
                });
            }
            if json {
                print_json(&listed);
            } else {
                for l in &listed {
                    println!(
                        "{}  {:>10}  {}  {}/{}/{}",
                        &l.name[..16],
                        human_size(l.size),
                        l.created,
                        l.env,
                        l.machine,
                        l.stage
                    );
                }
            }
            Ok(0)
        }
        CacheCommand::Verify { quarantine } => {
            let mut bad = 0;
            let entries = ws.store.entries()?;
            for entry in &entries {
                let problems = ws.store.verify(entry);
                if problems.is_empty() {
                    continue;
                }
                bad += 1;
                println!("BAD {}", entry.name);
                for problem in problems {
                    println!("    {problem}");
                }
                if quarantine {
                    let moved = ws.store.quarantine(entry)?;
                    println!("    moved to {}", moved.display());
                }
            }
            println!("{} entries checked, {} bad", entries.len(), bad);
            Ok(if bad == 0 { 0 } else { 1 })
        }
        CacheCommand::Gc(args) => gc(global, &ws, args),
        CacheCommand::Export { env, output } => {
            let env = ws.load(&env, &[])?;
            let keys = ws.keys(&env)?;
            let index = ws.store.index()?;
            let entries: Vec<_> = keys
                .iter()
                .filter_map(|k| index.get(&k.key).cloned())
                .collect();
            if entries.is_empty() {
                return Err(Error::Input(format!(
                    "nothing of `{}` is cached; build it first",
                    env.name
                )));
            }
            let partial = output.with_extension("partial");
            let file = std::fs::File::create(&partial)
                .ctx(|| format!("creating {}", partial.display()))?;
            let result = archive::export(&entries, Buffered::new(file)).map(drop);
            if let Err(e) = result {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
            std::fs::rename(&partial, &output).ctx(|| format!("writing {}", output.display()))?;
            eprintln!(
                "exported {} entries of {} to {}",
                entries.len(),
                env.name,
                output.display()
            );
            Ok(0)
        }
        CacheCommand::Import { file } => {
            let input = std::fs::File::open(&file).map_err(|e| {
                Error::Input(format!("cannot open archive {}: {e}", file.display()))
            })?;
            let names = archive::import(&ws.store, std::io::BufReader::new(input), &file)?;
            eprintln!("imported {} entries from {}", names.len(), file.display());
            Ok(0)
        }
        CacheCommand::Keygen { .. } => unreachable!("handled before the workspace opens"),
        CacheCommand::Push { target } => {
            let keys = target_keys(&ws, &target)?;
            let outcomes = push(global, &ws, &keys)?;
            if outcomes.is_empty() {
                return Err(Error::Input(format!(
                    "nothing of `{target}` is in the local store; build it first"
                )));
            }
            Ok(0)
        }
        CacheCommand::Pull { target } => pull(global, &ws, &target),
    }
}

/// A 64-hex stage key, or the stage keys of an environment.
fn target_keys(ws: &Workspace, target: &str) -> Result<Vec<String>> {
    if target.len() == 64 && target.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(vec![target.to_ascii_lowercase()]);
    }
    let env = ws.load(target, &[])?;
    Ok(ws.keys(&env)?.into_iter().map(|k| k.key).collect())
}

/// Pushes the local entries of `keys` and says what happened to each.
pub fn push(global: &Global, ws: &Workspace, keys: &[String]) -> Result<Vec<remote::PushOutcome>> {
    let outcomes = remote::push_keys(&ws.store, &ws.remotes, keys, &global.progress())?;
    for o in &outcomes {
        let what = match o.pushed {
            Pushed::Uploaded => "pushed to",
            Pushed::AlreadyThere => "already on",
            Pushed::LostRace => "pushed by another agent first (nothing done) to",
        };
        if !global.quiet || o.pushed == Pushed::Uploaded {
            eprintln!("{} {what} {}", o.entry, o.remote);
        }
    }
    Ok(outcomes)
}

fn pull(global: &Global, ws: &Workspace, target: &str) -> Result<i32> {
    if ws.remotes.pulling().next().is_none() {
        return Err(Error::Input(
            "no remote cache to pull from.\n  fix: give --cache-from URL, or add a [[cache.remote]] to the config file (docs/remote-cache.md)".into(),
        ));
    }
    let progress = global.progress();
    let index = ws.store.index()?;
    let mut failures = Vec::new();
    let (mut pulled, mut present, mut absent) = (0, 0, 0);
    for key in target_keys(ws, target)? {
        if let Some(entry) = index.get(&key) {
            present += 1;
            if !global.quiet {
                println!("{} already in the local store", entry.name);
            }
            continue;
        }
        let (got, errors) = remote::pull_key(&ws.store, &ws.remotes, &key, &progress);
        match got {
            Some(name) => {
                pulled += 1;
                println!("{name} pulled");
            }
            None if errors.is_empty() => absent += 1,
            None => {}
        }
        failures.extend(errors);
    }
    eprintln!(
        "{pulled} pulled, {present} already present, {absent} on no remote, {} refused or failed",
        failures.len()
    );
    match failures.into_iter().reduce(|first, other| {
        eprintln!("error: {other}");
        first
    }) {
        Some(first) => Err(first),
        None if pulled + present == 0 => Err(Error::Input(format!(
            "no remote cache has `{target}`.\n  fix: push it from a machine that built it (`envbuild cache push`), or build it here"
        ))),
        None => Ok(0),
    }
}

fn gc(global: &Global, ws: &crate::engine::Workspace, args: GcArgs) -> Result<i32> {
    let mut referenced = HashSet::new();
    for name in crate::spec::list_names(&ws.envs)? {
        let env = ws.load(&name, &[])?;
        referenced.extend(ws.keys(&env)?.into_iter().map(|k| k.key));
    }
    let mut unreferenced: Vec<(u64, crate::store::Entry)> = ws
        .store
        .entries()?
        .into_iter()
        .filter(|e| !referenced.contains(e.key()))
        .map(|e| (e.manifest().map_or(0, |m| m.created_unix), e))
        .collect();
    unreferenced.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
    let doomed = unreferenced.iter().skip(args.keep_recent);
    let mut count = 0;
    for (_, entry) in doomed {
        count += 1;
        if args.dry_run {
            println!("would remove {}", entry.name);
        } else {
            ws.store.remove(entry)?;
            if !global.quiet {
                println!("removed {}", entry.name);
            }
        }
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    eprintln!(
        "{verb} {count} entries; kept {} referenced and up to {} recent",
        referenced.len(),
        args.keep_recent
    );
    Ok(0)
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}
