//! `doctor`: what every backend needs of this host, and how to fix what is missing.

use crate::backend::Check;
use crate::engine::Workspace;

/// Every backend's checks, each named after its backend ("libvirt backend: ...").
pub fn checks(ws: &Workspace) -> Vec<Check> {
    let folders = [ws.settings.store.as_path(), ws.settings.state.as_path()];
    ws.backends
        .all()
        .flat_map(|(kind, backend)| {
            backend.host_checks(&folders).into_iter().map(move |mut c| {
                c.what = format!("{} backend: {}", kind.as_str(), c.what);
                c
            })
        })
        .collect()
}
