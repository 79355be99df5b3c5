//! `envbuild hash ENV`: the stage keys, and with --json the material each key is computed from.

use clap::Args;

use super::{Global, VarArgs, load, print_json};
use crate::error::Result;

#[derive(Debug, Args)]
pub struct HashArgs {
    /// Environment name
    env: String,
    /// Print every key with its material (never holds a secret)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    vars: VarArgs,
}

#[derive(serde::Serialize)]
struct Hashed<'a> {
    machine: &'a str,
    stage: &'a str,
    key: &'a str,
    material: &'a crate::key::KeyMaterial,
}

pub fn run(global: &Global, args: HashArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let env = load(&ws, &args.env, &args.vars)?;
    let keys = ws.keys(&env)?;
    if args.json {
        let out: Vec<Hashed> = keys
            .iter()
            .map(|k| Hashed {
                machine: &k.machine,
                stage: &k.stage,
                key: &k.key,
                material: &k.material,
            })
            .collect();
        print_json(&out);
    } else {
        for k in &keys {
            println!("{}  {}/{}", k.key, k.machine, k.stage);
        }
    }
    Ok(0)
}
