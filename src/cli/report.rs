//! `envbuild report --history ENV`: one HTML page comparing the recorded runs of an environment.

use std::path::PathBuf;

use clap::Args;

use super::Global;
use crate::error::Result;
use crate::ops;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Compare the recorded runs of this environment
    #[arg(long, value_name = "ENV", required = true)]
    history: String,
    /// Only the runs of this flow [default: every flow]
    #[arg(long, value_name = "FLOW")]
    flow: Option<String>,
    /// Where to write the page [default: STATE/runs/ENV/history.html]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(global: &Global, args: ReportArgs) -> Result<i32> {
    let ws = global.workspace()?;
    let (out, runs) = ops::history::write_page(
        &ws,
        &args.history,
        args.flow.as_deref(),
        args.out.as_deref(),
    )?;
    println!(
        "{}: {runs} runs compared in {}",
        args.history,
        out.display()
    );
    Ok(0)
}
