//! `envbuild ssh ENV MACHINE [-- CMD...]` and `envbuild ssh-config ENV`: reach a running VM with
//! the environment's key and its pinned host key.

use std::os::unix::process::CommandExt;

use clap::Args;

use super::Global;
use crate::error::{Error, Result};
use crate::ops;

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Environment name
    env: String,
    /// Machine name
    machine: String,
    /// A command to run instead of an interactive shell (read by the guest's shell, as with ssh)
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// Environment name
    env: String,
}

pub fn run(global: &Global, args: SshArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let env = ws.load(&args.env, &[])?;
    let target = ops::ssh::target(&ws, &env, &args.machine)?;
    // Like ssh itself: the words are joined with spaces and read by the guest's shell, so
    // `envbuild ssh e m -- 'a && b'` runs both.
    let command = (!args.command.is_empty()).then(|| args.command.join(" "));
    let argv = target.command_line(command.as_deref());
    let error = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(Error::input(
        format!("cannot run ssh: {error}"),
        "apt-get install openssh-client",
    ))
}

pub fn run_config(global: &Global, args: SshConfigArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let env = ws.load(&args.env, &[])?;
    print!("{}", ops::ssh::config(&ws, &env)?);
    Ok(0)
}
