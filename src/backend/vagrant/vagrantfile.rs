//! The Vagrantfile envbuild writes for a machine (docs/backends.md, "vagrant").
//!
//! Every machine has envbuild's NIC: QEMU user networking added with `qemuargs`, its forwards
//! bound to 127.0.0.1, at a fixed PCI slot (libvirt does not know the device and would give its
//! slot away). envbuild's steps and the forwarded ports use it, whatever the set-up.
//!
//! - `loopback` (the default, what the network rule of a CI host allows): no libvirt network at
//!   all (`mgmt_attach = false`). vagrant-libvirt finds a guest's address only in DHCP leases or
//!   through the guest agent, so the Vagrantfile replaces its lookup with 127.0.0.1
//!   (`config.ssh.host`/`port` then give the forwarded port); `qemu_use_agent` only passes the
//!   plugin's check that a box without a management network can be reached.
//! - `management` (the stock laptop set-up): vagrant-libvirt's management network as it comes,
//!   its NIC at a fixed MAC the seed gives DHCP to; Vagrant finds the guest in the network's DHCP
//!   leases and `vagrant ssh` goes there, as with any box.
//!
//! The seed disk (SSH keys, read at every boot) is a read-only drive QEMU opens itself: libvirt's
//! internal snapshots leave it out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::backend::libvirt::domain::MGMT_MAC;
use crate::settings::VagrantNetwork;

/// The MAC of vagrant-libvirt's management NIC (`management`): the seed gives it DHCP.
pub const MANAGEMENT_MAC: &str = "52:54:00:0e:b0:02";

/// What the machine boots from.
pub enum Disk {
    /// A fresh machine on the box (vagrant-libvirt uploads it into the pool and overlays it).
    Box(String),
    /// A volume of the pool (an overlay of a stage exported into the store), no box.
    Volume(String),
}

pub struct Plan {
    pub uri: String,
    /// The Vagrant machine's name: the libvirt domain is `envbuild-<env>-<name>`.
    pub env: String,
    pub machine: String,
    pub disk: Disk,
    pub cpus: u32,
    pub memory_mib: u64,
    /// The storage pool (a transient pool envbuild creates) and its folder.
    pub pool: String,
    pub pool_dir: PathBuf,
    pub ssh_port: u16,
    /// (host port on 127.0.0.1, guest port), ssh's first.
    pub forwards: Vec<(u16, u16)>,
    pub identity: PathBuf,
    pub seed: PathBuf,
    pub console_log: PathBuf,
    pub kvm: bool,
    pub network: VagrantNetwork,
}

/// Ruby's single-quoted string.
fn ruby(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub fn domain_name(env: &str, machine: &str) -> String {
    format!("envbuild-{env}-{machine}")
}

impl Plan {
    pub fn text(&self) -> String {
        let hostfwd: String = self
            .forwards
            .iter()
            .map(|(host, guest)| format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"))
            .collect();
        let qemuargs = [
            "-netdev".to_string(),
            format!("user,id=mgmt,net=10.0.2.0/24,restrict=off{hostfwd}"),
            "-device".to_string(),
            format!("virtio-net-pci,netdev=mgmt,mac={MGMT_MAC},bus=pci.0,addr=0x1d"),
            "-drive".to_string(),
            format!(
                "file={},format=raw,if=none,id=envbuild-seed,readonly=on",
                self.seed.display()
            ),
            "-device".to_string(),
            "virtio-blk-pci,drive=envbuild-seed,bus=pci.0,addr=0x1e".to_string(),
        ]
        .iter()
        .map(|a| format!("    lv.qemuargs :value => {}\n", ruby(a)))
        .collect::<String>();
        let (box_line, disk_lines) = match &self.disk {
            Disk::Box(name) => (format!("  config.vm.box = {}\n", ruby(name)), String::new()),
            Disk::Volume(volume) => (
                String::new(),
                format!(
                    "    lv.boot 'hd'\n    lv.storage :file, :path => {}, :allow_existing => true, :type => 'qcow2', :device => 'vda'\n",
                    ruby(volume)
                ),
            ),
        };
        let (lookup, reach, network_lines) = match self.network {
            VagrantNetwork::Loopback => (
                "require 'vagrant-libvirt/driver'
# QEMU user networking has no DHCP lease libvirt knows of: the guest is reached on 127.0.0.1.
class VagrantPlugins::ProviderLibvirt::Driver
  def get_ipaddress(domain = nil)
    '127.0.0.1'
  end
end
"
                .to_string(),
                format!(
                    "  config.ssh.host = '127.0.0.1'\n  config.ssh.port = {}\n",
                    self.ssh_port
                ),
                "    lv.mgmt_attach = false\n    lv.qemu_use_agent = true\n".to_string(),
            ),
            VagrantNetwork::Management => (
                String::new(),
                String::new(),
                format!(
                    "    # vagrant-libvirt's own management network, as it comes; Vagrant reaches the\n    # guest at its DHCP lease there.\n    lv.management_network_mac = {}\n",
                    ruby(MANAGEMENT_MAC)
                ),
            ),
        };
        format!(
            r#"# Written by envbuild for {env}/{machine}: edits are overwritten at the next boot.
{lookup}
Vagrant.configure('2') do |config|
  config.vm.define {machine_q} do |m|
  end
{box_line}  config.vm.synced_folder '.', '/vagrant', disabled: true
  config.vm.boot_timeout = 1800
{reach}  # The base images have no sudo: Vagrant logs in as root with the environment's own key.
  config.ssh.username = 'root'
  config.ssh.sudo_command = '%c'
  config.ssh.private_key_path = [{identity}]
  config.ssh.insert_key = false
  config.vm.provider :libvirt do |lv|
    lv.uri = {uri}
    lv.driver = {driver}
{cpu}    lv.cpus = {cpus}
    lv.memory = {memory}
    lv.default_prefix = {prefix}
    lv.storage_pool_name = {pool}
    lv.storage_pool_path = {pool_dir}
{network_lines}    lv.graphics_type = 'none'
    lv.video_type = 'none'
    lv.serial :type => 'file', :source => {{ :path => {console} }}
{disk_lines}{qemuargs}  end
end
"#,
            env = self.env,
            machine = self.machine,
            machine_q = ruby(&self.machine),
            identity = ruby(&self.identity.display().to_string()),
            uri = ruby(&self.uri),
            driver = ruby(if self.kvm { "kvm" } else { "qemu" }),
            // The plugin's default, host-model, makes TCG emulate every feature of this host's
            // CPU: a guest then takes minutes to boot. The libvirt backend's guests get qemu64.
            cpu = if self.kvm {
                ""
            } else {
                "    lv.cpu_mode = 'custom'\n    lv.cpu_model = 'qemu64'\n    lv.memballoon_enabled = false\n"
            },
            cpus = self.cpus,
            memory = self.memory_mib,
            prefix = ruby(&format!("envbuild-{}-", self.env)),
            pool = ruby(&self.pool),
            pool_dir = ruby(&self.pool_dir.display().to_string()),
            console = ruby(&self.console_log.display().to_string()),
        )
    }
}

/// The forwards of a machine: ssh first, then the spec's `forward` by name.
pub fn forwards(ports: &[u16], forward: &BTreeMap<String, u16>) -> Vec<(u16, u16)> {
    std::iter::once(22)
        .chain(forward.values().copied())
        .zip(ports.iter().copied())
        .map(|(guest, host)| (host, guest))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(disk: Disk) -> Plan {
        Plan {
            uri: "qemu:///system".into(),
            env: "demo".into(),
            machine: "box".into(),
            disk,
            cpus: 2,
            memory_mib: 768,
            pool: "envbuild-demo-box".into(),
            pool_dir: "/state/envs/demo/box/root/pool".into(),
            ssh_port: 40022,
            forwards: vec![(40022, 22), (40080, 8080)],
            identity: "/state/envs/demo/ssh/id_ed25519".into(),
            seed: "/state/envs/demo/box/root/seed.tar".into(),
            console_log: "/state/envs/demo/box/logs/console.log".into(),
            kvm: false,
            network: VagrantNetwork::Loopback,
        }
    }

    #[test]
    fn the_network_is_user_mode_on_loopback_only_and_nothing_is_shared() {
        let text = plan(Disk::Box("envbuild-0123".into())).text();
        assert!(text.contains("lv.mgmt_attach = false"));
        assert!(text.contains("hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:40080-:8080"));
        assert_eq!(
            text.matches("hostfwd=").count(),
            text.matches("hostfwd=tcp:127.0.0.1:").count()
        );
        assert!(text.contains("disabled: true"));
        assert!(text.contains("config.ssh.insert_key = false"));
        assert!(text.contains("config.vm.box = 'envbuild-0123'"));
        assert!(text.contains(":path => '/state/envs/demo/box/logs/console.log'"));
        assert!(text.contains("lv.driver = 'qemu'"));
        assert!(text.contains("lv.cpu_model = 'qemu64'"));
        assert!(!text.contains("lv.storage :file"));
    }

    #[test]
    fn the_management_set_up_keeps_vagrants_own_network_and_envbuilds_loopback_nic() {
        let text = Plan {
            network: VagrantNetwork::Management,
            ..plan(Disk::Box("envbuild-0123".into()))
        }
        .text();
        assert!(!text.contains("mgmt_attach"), "{text}");
        assert!(
            !text.contains("get_ipaddress"),
            "Vagrant's own lookup: {text}"
        );
        assert!(!text.contains("config.ssh.host"), "{text}");
        assert!(text.contains(&format!("lv.management_network_mac = '{MANAGEMENT_MAC}'")));
        assert!(text.contains("hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:40080-:8080"));
        let loopback = plan(Disk::Box("envbuild-0123".into())).text();
        assert!(loopback.contains("config.ssh.port = 40022"));
        assert!(!loopback.contains("management_network_mac"));
    }

    #[test]
    fn a_restored_stage_boots_a_volume_without_a_box() {
        let text = plan(Disk::Volume("envbuild-demo-box-disk.qcow2".into())).text();
        assert!(!text.contains("config.vm.box"));
        assert!(text.contains(":path => 'envbuild-demo-box-disk.qcow2', :allow_existing => true"));
    }

    #[test]
    fn ruby_strings_are_quoted() {
        assert_eq!(ruby("it's"), r"'it\'s'");
        assert_eq!(ruby(r"a\b"), r"'a\\b'");
    }
}
