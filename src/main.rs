//! envbuild: reproducible, cached environments for testing OpenStack rolling upgrades.

mod backend;
mod cli;
mod clock;
mod engine;
mod error;
mod harness;
mod history;
mod http;
mod key;
mod ops;
mod process;
mod remote;
mod report;
mod settings;
mod spec;
mod state;
mod store;
mod ui;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENVBUILD_LOG")
        .unwrap_or_else(|_| "warn".into());
    let color = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .without_time()
        .init();
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    };
    std::process::exit(code);
}
