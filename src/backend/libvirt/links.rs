//! Private links between VMs: a QEMU UDP socket pair per link on loopback, chosen once per
//! environment (`links.json`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{IoContext, Result};
use crate::spec::model::Machine;
use domain::LinkNic;

/// The two UDP ports of each private link, chosen once per environment (`links.json`); the
/// first machine to join a link takes the first port as its own.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Links {
    pub(super) links: BTreeMap<String, LinkPorts>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LinkPorts {
    pub(super) ports: [u16; 2],
    pub(super) members: Vec<String>,
}

pub(super) fn link_nics(
    env_dir: &Path,
    env: &str,
    machine: &Machine,
) -> Result<Vec<(LinkNic, String)>> {
    if machine.vm.links.is_empty() {
        return Ok(Vec::new());
    }
    let _lock = crate::store::lock::FileLock::acquire(&env_dir.join("links.lock"), || {})?;
    let path = env_dir.join("links.json");
    let mut links: Links = read_json(&path).unwrap_or_default();
    let mut nics = Vec::new();
    for (link, address) in &machine.vm.links {
        if !links.links.contains_key(link) {
            let sockets: Vec<std::net::UdpSocket> = (0..2)
                .map(|_| {
                    std::net::UdpSocket::bind(("127.0.0.1", 0))
                        .ctx(|| "finding a free loopback UDP port".into())
                })
                .collect::<Result<_>>()?;
            let mut ports = [0u16; 2];
            for (i, s) in sockets.iter().enumerate() {
                ports[i] = s.local_addr().ctx(|| "reading a port".into())?.port();
            }
            links.links.insert(
                link.clone(),
                LinkPorts {
                    ports,
                    members: Vec::new(),
                },
            );
        }
        let entry = links.links.get_mut(link).expect("inserted above");
        if !entry.members.contains(&machine.name) {
            entry.members.push(machine.name.clone());
        }
        let me = entry
            .members
            .iter()
            .position(|m| *m == machine.name)
            .expect("just added");
        nics.push((
            LinkNic {
                mac: domain::link_mac(env, &machine.name, link),
                local_port: entry.ports[me % 2],
                peer_port: entry.ports[(me + 1) % 2],
            },
            address.clone(),
        ));
    }
    write_json(&path, &links)?;
    Ok(nics)
}
