//! `envbuild cache ls|verify|gc|export|import`

use std::collections::HashSet;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Global, print_json};
use crate::error::{Error, IoContext, Result};
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
            let result = archive::export(&entries, std::io::BufWriter::new(file));
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
