//! `envbuild cache ls|verify|gc|export|import|keygen|push|pull`, and the remote cache flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Global, human_size, print_json};
use crate::error::{Error, ExitCode, Result};
use crate::ops;
use crate::remote::{self, Pushed};
use crate::store::archive;

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
    pub fn overrides(&self) -> remote::config::Overrides {
        remote::config::Overrides {
            config: self.config.clone(),
            cache_from: self.cache_from.clone(),
            cache_to: self.cache_to.clone(),
            read_only: self.cache_read_only,
            signing_key: self.cache_signing_key.clone(),
            trusted_keys: self.cache_trusted_key.clone(),
            default_config: None,
            ca_file: self.ca_file.clone(),
        }
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

pub fn run(global: &Global, command: CacheCommand) -> Result<i32> {
    if let CacheCommand::Keygen { path } = &command {
        // Before the settings: a config file may name the key this is about to create.
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
            let listed = ops::cache::ls(&ws)?;
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
            let (checked, bad) = ops::cache::verify(&ws, quarantine)?;
            for b in &bad {
                println!("BAD {}", b.entry);
                for problem in &b.problems {
                    println!("    {problem}");
                }
                if let Some(moved) = &b.moved {
                    println!("    moved to {}", moved.display());
                }
            }
            println!("{checked} entries checked, {} bad", bad.len());
            Ok(if bad.is_empty() {
                ExitCode::Success
            } else {
                ExitCode::Failed
            }
            .code())
        }
        CacheCommand::Gc(args) => {
            let plan = ops::cache::gc(&ws, args.keep_recent, args.dry_run)?;
            for entry in &plan.remove {
                if args.dry_run {
                    println!("would remove {}", entry.name);
                } else if !global.quiet {
                    println!("removed {}", entry.name);
                }
            }
            let verb = if args.dry_run {
                "would remove"
            } else {
                "removed"
            };
            eprintln!(
                "{verb} {} entries; kept {} referenced, {} held by running commands, {} recent (of up to {}) and {} that kept entries need",
                plan.remove.len(),
                plan.referenced,
                plan.held,
                plan.recent,
                args.keep_recent,
                plan.needed
            );
            Ok(0)
        }
        CacheCommand::Export { env, output } => {
            let count = ops::cache::export(&ws, &env, &output)?;
            eprintln!("exported {count} entries of {env} to {}", output.display());
            Ok(0)
        }
        CacheCommand::Import { file } => {
            let input = std::fs::File::open(&file).map_err(|e| {
                Error::Input(format!("cannot open archive {}: {e}", file.display()))
            })?;
            let names = archive::import(ws.store()?, std::io::BufReader::new(input), &file)?;
            eprintln!("imported {} entries from {}", names.len(), file.display());
            Ok(0)
        }
        CacheCommand::Keygen { .. } => unreachable!("handled before the workspace opens"),
        CacheCommand::Push { target } => {
            print_pushed(&ops::cache::push(&ws, &target)?, global.quiet);
            Ok(0)
        }
        CacheCommand::Pull { target } => {
            let pulled = ops::cache::pull(&ws, &target)?;
            for name in &pulled.present {
                if !global.quiet {
                    println!("{name} already in the local store");
                }
            }
            for name in &pulled.pulled {
                println!("{name} pulled");
            }
            eprintln!(
                "{} pulled, {} already present, {} on no remote, {} refused or failed",
                pulled.pulled.len(),
                pulled.present.len(),
                pulled.absent,
                pulled.failures.len()
            );
            for other in pulled.failures.iter().skip(1) {
                eprintln!("error: {other}");
            }
            pulled.outcome(&target).map(|()| 0)
        }
    }
}

/// Says what happened to each pushed entry (the uploads even with `-q`).
pub fn print_pushed(outcomes: &[remote::PushOutcome], quiet: bool) {
    for o in outcomes {
        let what = match o.pushed {
            Pushed::Uploaded => "pushed to",
            Pushed::AlreadyThere => "already on",
            Pushed::LostRace => "pushed by another agent first (nothing done) to",
        };
        if !quiet || o.pushed == Pushed::Uploaded {
            eprintln!("{} {what} {}", o.entry, o.remote);
        }
    }
}
