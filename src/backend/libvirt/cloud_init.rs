//! The cloud-init NoCloud seed of a pinned cloud image: a small ISO9660 disk labelled `cidata`
//! (made by genisoimage, as cloud-localds does) with `meta-data`, `user-data` and
//! `network-config`, written for each boot.
//!
//! - `meta-data`: an instance-id new at every boot, so cloud-init applies this seed (keys,
//!   network, hostname) each time, also on a disk another environment built; `local-hostname`.
//! - `user-data` (`#cloud-config`): the environment's client key for root (envbuild logs in as
//!   root, as on a debootstrap guest: steps, input copy and power-off run unchanged), no
//!   passwords, no password login, no generated host keys.
//! - `network-config` (v2): DHCP on the management NIC and the private link addresses, each NIC
//!   matched by its MAC.
//!
//! The machine's private host key is *not* in user-data: cloud-init copies user-data to
//! /var/lib/cloud on the guest's disk, and `ssh_keys` writes /etc/ssh; either would put the key
//! into the stage's overlay, hence the store and remote caches (deleting it later leaves its
//! bytes in the overlay). It rides on the seed as a file of its own, which a `bootcmd` copies to
//! /run/envbuild at every boot; sshd reads it from there. The seed itself (0600) lives in the
//! machine's state folder only while the VM boots.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::domain::{LinkNic, MGMT_MAC};
use super::ssh::Trust;
use crate::error::{Error, IoContext, Result};

/// The seed's file carrying the host key (not a name cloud-init reads).
const HOST_KEY_FILE: &str = "envbuild-host-key";

/// Copies the host key from the seed into /run at every boot, before sshd starts (cloud-init's
/// init stage runs before ssh.service), then (re)starts sshd in case it started without a key.
const BOOTCMD: &str = "set -e; umask 077; mkdir -p /run/envbuild/seed; \
mount -o ro \"$(blkid -L cidata)\" /run/envbuild/seed; \
cp /run/envbuild/seed/envbuild-host-key /run/envbuild/ssh_host_ed25519_key; \
umount /run/envbuild/seed; rmdir /run/envbuild/seed; \
systemctl reset-failed ssh.service 2>/dev/null || true; systemctl --no-block restart ssh.service";

const SSHD_CONFIG: &str = "HostKey /run/envbuild/ssh_host_ed25519_key\n\
PasswordAuthentication no\n\
KbdInteractiveAuthentication no\n\
PermitRootLogin prohibit-password\n\
UseDNS no\n";

/// A YAML scalar: JSON strings are YAML.
fn scalar(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// The digest of what the seed configures in every guest (part of a pinned image's base digest,
/// docs/hashing.md): a change here rebuilds the stages, as configure-base.sh does for debootstrap.
pub fn recipe_digest() -> String {
    crate::key::digest::sha256_bytes(
        format!(
            "{}{}",
            user_data("KEY"),
            network_config(&[(
                LinkNic {
                    mac: "MAC".into(),
                    local_port: 0,
                    peer_port: 0
                },
                "ADDRESS".into()
            )])
        )
        .as_bytes(),
    )
}

pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        scalar(instance_id),
        scalar(hostname)
    )
}

pub fn user_data(authorized_key: &str) -> String {
    let sshd: String = SSHD_CONFIG
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        "#cloud-config
# Written by envbuild for one boot (docs/backends.md, \"Pinned cloud images\").
disable_root: false
ssh_pwauth: false
ssh_deletekeys: true
ssh_genkeytypes: []
ssh_authorized_keys:
  - {key}
bootcmd:
  - [sh, -c, {bootcmd}]
write_files:
  - path: /etc/ssh/sshd_config.d/10-envbuild.conf
    permissions: '0644'
    content: |
{sshd}",
        key = scalar(authorized_key.trim()),
        bootcmd = scalar(BOOTCMD),
    )
}

pub fn network_config(links: &[(LinkNic, String)]) -> String {
    let mut text = format!(
        "version: 2\nethernets:\n  mgmt0:\n    match:\n      macaddress: {}\n    set-name: mgmt0\n    dhcp4: true\n",
        scalar(MGMT_MAC)
    );
    for (i, (nic, address)) in links.iter().enumerate() {
        text.push_str(&format!(
            "  link{i}:\n    match:\n      macaddress: {}\n    set-name: link{i}\n    addresses: [{}]\n",
            scalar(&nic.mac),
            scalar(address)
        ));
    }
    text
}

/// Writes the `cidata` seed image at `path` (0600). The files are staged in a private folder
/// beside it and removed again.
pub fn write_seed(
    path: &Path,
    trust: &Trust,
    hostname: &str,
    instance_id: &str,
    links: &[(LinkNic, String)],
) -> Result<()> {
    let staging = path.with_extension("d");
    let _ = crate::store::remove_tree(&staging);
    std::fs::create_dir_all(&staging).ctx(|| format!("creating {}", staging.display()))?;
    let result = stage_and_pack(path, &staging, trust, hostname, instance_id, links);
    let _ = crate::store::remove_tree(&staging);
    result
}

fn stage_and_pack(
    path: &Path,
    staging: &Path,
    trust: &Trust,
    hostname: &str,
    instance_id: &str,
    links: &[(LinkNic, String)],
) -> Result<()> {
    std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o700))
        .ctx(|| format!("setting mode of {}", staging.display()))?;
    let host_key =
        std::fs::read(&trust.host_key).ctx(|| format!("reading {}", trust.host_key.display()))?;
    let files: [(&str, Vec<u8>); 4] = [
        ("meta-data", meta_data(instance_id, hostname).into_bytes()),
        (
            "user-data",
            user_data(&trust.authorized_key()?).into_bytes(),
        ),
        ("network-config", network_config(links).into_bytes()),
        (HOST_KEY_FILE, host_key),
    ];
    for (name, bytes) in &files {
        private_file(&staging.join(name))?
            .write_all(bytes)
            .ctx(|| format!("writing {name} into the seed"))?;
    }
    // genisoimage writes into the existing file, which keeps its 0600 mode.
    drop(private_file(path)?);
    let out = Command::new("genisoimage")
        .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
        .arg(path)
        .args(files.iter().map(|(name, _)| staging.join(name)))
        .output()
        .map_err(|_| Error::MissingTool {
            machine: hostname.to_string(),
            what: "program `genisoimage` (to write the cloud-init seed of its pinned image)".into(),
            fix: "apt-get install genisoimage (or run dev/setup)".into(),
        })?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "genisoimage {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn private_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic() -> (LinkNic, String) {
        (
            LinkNic {
                mac: "52:54:01:00:00:01".into(),
                local_port: 1,
                peer_port: 2,
            },
            "10.0.0.2/24".into(),
        )
    }

    #[test]
    fn user_data_gives_root_the_client_key_and_no_password_or_private_key() {
        let text = user_data("ssh-ed25519 AAAAC3Nza envbuild-demo\n");
        assert!(text.starts_with("#cloud-config\n"));
        assert!(text.contains("disable_root: false\n"));
        assert!(text.contains("ssh_pwauth: false\n"));
        assert!(text.contains("ssh_genkeytypes: []\n"));
        assert!(text.contains("  - \"ssh-ed25519 AAAAC3Nza envbuild-demo\"\n"));
        assert!(text.contains("HostKey /run/envbuild/ssh_host_ed25519_key"));
        assert!(!text.contains("PRIVATE KEY") && !text.contains("ssh_keys:"));
        assert!(!text.contains("passwd") && !text.contains("password:"));
    }

    #[test]
    fn meta_data_and_network_config_name_the_machine_and_its_nics() {
        assert_eq!(
            meta_data("envbuild-demo-box-1", "box"),
            "instance-id: \"envbuild-demo-box-1\"\nlocal-hostname: \"box\"\n"
        );
        let net = network_config(&[nic()]);
        assert!(net.starts_with("version: 2\n"));
        assert!(net.contains(&format!(
            "macaddress: \"{MGMT_MAC}\"\n    set-name: mgmt0\n    dhcp4: true"
        )));
        assert!(net.contains("macaddress: \"52:54:01:00:00:01\"\n    set-name: link0\n    addresses: [\"10.0.0.2/24\"]"));
    }

    #[test]
    fn the_seed_is_a_private_cidata_image_with_the_host_key_beside_the_cloud_config() {
        if crate::process::find_program("genisoimage").is_none() {
            panic!("this test needs genisoimage: apt-get install genisoimage (dev/setup)");
        }
        let dir = tempfile::tempdir().unwrap();
        let env_dir = dir.path().join("envs/e");
        let trust = Trust::ensure(&env_dir, &env_dir.join("m"), "e", "m").unwrap();
        let seed = dir.path().join("seed-up.iso");
        write_seed(&seed, &trust, "m", "envbuild-e-m-1", &[nic()]).unwrap();
        let mode = std::fs::metadata(&seed).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!seed.with_extension("d").exists(), "staging folder left");
        let bytes = std::fs::read(&seed).unwrap();
        // ISO9660 primary volume descriptor at sector 16: "CD001", volume id at offset 40.
        assert_eq!(&bytes[0x8001..0x8006], b"CD001");
        assert_eq!(&bytes[0x8028..0x802e], b"cidata");
        let key = std::fs::read_to_string(&trust.host_key).unwrap();
        let body = key.lines().nth(1).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(body), "the host key is on the seed");
        assert!(text.contains("#cloud-config"));
        assert!(text.contains("instance-id: \"envbuild-e-m-1\""));
    }
}
