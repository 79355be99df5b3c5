//! `envbuild doctor`: checks the host for each backend and says what to install or start.

use clap::Args;

use super::{Global, print_json};
use crate::error::{ExitCode, Result};
use crate::ops;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: DoctorArgs) -> Result<i32> {
    let checks = ops::doctor::checks(&global.workspace()?);
    let failed = checks.iter().filter(|c| !c.ok).count();
    if args.json {
        print_json(&checks);
    } else {
        for check in &checks {
            println!(
                "{} {}: {}",
                if check.ok { "ok     " } else { "MISSING" },
                check.what,
                check.detail
            );
        }
        println!(
            "{}",
            if failed == 0 {
                "doctor: this host can run every backend".to_string()
            } else {
                format!("doctor: {failed} problem(s); each line says how to fix it")
            }
        );
    }
    Ok(if failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::BadInput
    }
    .code())
}
