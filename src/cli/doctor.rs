//! `envbuild doctor`: checks the host for each backend and says what to install or start.

use clap::Args;

use super::{Global, print_json};
use crate::backend::libvirt;
use crate::error::Result;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: DoctorArgs) -> Result<i32> {
    let store = global
        .store
        .clone()
        .unwrap_or_else(crate::store::Store::default_root);
    let state = global
        .state
        .clone()
        .unwrap_or_else(crate::state::State::default_root);
    let images = global.images();
    let uri = global
        .libvirt_uri
        .clone()
        .unwrap_or_else(|| libvirt::DEFAULT_URI.to_string());
    let mut checks = vec![libvirt::Check {
        what: "local backend: /bin/sh".into(),
        ok: std::path::Path::new("/bin/sh").is_file(),
        detail: "steps and services run as host processes".into(),
    }];
    let folders = [store.as_path(), state.as_path(), images.as_path()];
    checks.extend(
        libvirt::host_checks(&uri, &folders)
            .into_iter()
            .map(|mut c| {
                c.what = format!("libvirt backend: {}", c.what);
                c
            }),
    );
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
    Ok(if failed == 0 { 0 } else { 2 })
}
