//! Domain XML generated from a machine spec.
//!
//! One transient domain per boot (`virsh create`, never `define`): when its QEMU exits, libvirt
//! forgets it, so a crashed or killed envbuild cannot leave a defined domain behind. A debootstrap
//! guest's kernel boots directly; a pinned cloud image boots from its disk through SeaBIOS and
//! its own bootloader. The console goes to a log file; disk 1 is the machine's top overlay, disk
//! 2 the read-only seed (a tar archive with SSH keys and link addresses, or a cloud-init NoCloud
//! `cidata` image). Management is QEMU
//! user networking with host forwards bound to 127.0.0.1 only (passed through
//! `<qemu:commandline>`: libvirt 9.0 offers port forwards only with passt); private links are
//! `<interface type='udp'>` socket pairs on loopback. Under a system daemon QEMU runs with
//! envbuild's own uid/gid (`<seclabel model='dac' relabel='no'>`): it opens what envbuild can,
//! and libvirt never chowns a store file. A session daemon (`qemu:///session`) runs QEMU as its
//! own user already and has no DAC driver: no seclabel then.

use std::path::PathBuf;

/// The MAC of the management NIC, matched by the guest's networkd (configure-base.sh).
pub const MGMT_MAC: &str = "52:54:00:0e:b0:01";

#[derive(Debug, Clone)]
pub struct DomainSpec {
    pub name: String,
    pub kvm: bool,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub boot: Boot,
    pub disk: PathBuf,
    pub seed: PathBuf,
    pub console_log: PathBuf,
    /// (host port on 127.0.0.1, guest port), ssh first.
    pub forwards: Vec<(u16, u16)>,
    pub links: Vec<LinkNic>,
    /// (uid, gid) QEMU runs as; None under a session daemon (see the module comment).
    pub run_as: Option<(u32, u32)>,
}

/// How the guest starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Direct kernel boot (a debootstrap base: root file system on the whole disk).
    Kernel { kernel: PathBuf, initrd: PathBuf },
    /// The disk's own bootloader, through the BIOS (a pinned cloud image).
    Disk,
}

/// One end of a point-to-point UDP link on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkNic {
    pub mac: String,
    pub local_port: u16,
    pub peer_port: u16,
}

/// The management NIC's QEMU netdev: user networking, host forwards on 127.0.0.1 only.
pub(super) fn mgmt_netdev(forwards: &[(u16, u16)]) -> String {
    let mut netdev = String::from("user,id=mgmt,net=10.0.2.0/24,restrict=off");
    for (host, guest) in forwards {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    netdev
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn path(p: &std::path::Path) -> String {
    escape(&p.display().to_string())
}

impl DomainSpec {
    pub fn xml(&self) -> String {
        // no_timer_check: under TCG on a loaded host the guest kernel's IO-APIC timer check can
        // miss its ticks and panic ("IO-APIC + timer doesn't work"), as seen here at load 30.
        let (kernel, boot_order) = match &self.boot {
            Boot::Kernel { kernel, initrd } => (
                format!(
                    "    <kernel>{}</kernel>\n    <initrd>{}</initrd>\n    <cmdline>root=/dev/vda rw console=ttyS0 net.ifnames=0 no_timer_check quiet</cmdline>\n",
                    path(kernel),
                    path(initrd)
                ),
                "",
            ),
            Boot::Disk => (String::new(), "      <boot order='1'/>\n"),
        };
        let netdev = mgmt_netdev(&self.forwards);
        let links: String = self
            .links
            .iter()
            .map(|l| {
                format!(
                    "    <interface type='udp'>\n      <mac address='{}'/>\n      <source address='127.0.0.1' port='{}'>\n        <local address='127.0.0.1' port='{}'/>\n      </source>\n      <model type='virtio'/>\n    </interface>\n",
                    l.mac, l.peer_port, l.local_port
                )
            })
            .collect();
        format!(
            "<domain type='{kind}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
{kernel}  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
{boot_order}    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{seed}'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
{links}    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
{seclabel}  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='{netdev}'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=mgmt,mac={mac},addr=0x1f'/>
  </qemu:commandline>
</domain>
",
            kind = if self.kvm { "kvm" } else { "qemu" },
            name = escape(&self.name),
            memory = self.memory_mib,
            vcpus = self.vcpus,
            disk = path(&self.disk),
            seed = path(&self.seed),
            console = path(&self.console_log),
            seclabel = self.run_as.map_or(String::new(), |(uid, gid)| format!(
                "  <seclabel type='static' model='dac' relabel='no'>\n    <label>+{uid}:+{gid}</label>\n  </seclabel>\n"
            )),
            netdev = escape(&netdev),
            mac = MGMT_MAC,
        )
    }
}

/// A stable, locally administered MAC for a machine's NIC on a link.
pub fn link_mac(env: &str, machine: &str, link: &str) -> String {
    let digest = crate::key::digest::sha256_bytes(format!("{env}/{machine}/{link}").as_bytes());
    format!(
        "52:54:01:{}:{}:{}",
        &digest[0..2],
        &digest[2..4],
        &digest[4..6]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "envbuild-demo-box".into(),
            kvm: false,
            vcpus: 1,
            memory_mib: 512,
            boot: Boot::Kernel {
                kernel: "/images/abc/vmlinuz".into(),
                initrd: "/images/abc/initrd.img".into(),
            },
            disk: "/state/envs/demo/box/root/live.qcow2".into(),
            seed: "/state/envs/demo/box/root/seed.tar".into(),
            console_log: "/state/envs/demo/box/logs/console.log".into(),
            forwards: vec![(40022, 22), (40080, 8080)],
            links: vec![LinkNic {
                mac: "52:54:01:aa:bb:cc".into(),
                local_port: 41000,
                peer_port: 41001,
            }],
            run_as: Some((0, 0)),
        }
    }

    #[test]
    fn tcg_domain_boots_the_kernel_directly_with_the_spec_sizes() {
        let xml = spec().xml();
        assert!(xml.starts_with("<domain type='qemu' "));
        assert!(xml.contains("<memory unit='MiB'>512</memory>"));
        assert!(xml.contains("<vcpu>1</vcpu>"));
        assert!(xml.contains("<kernel>/images/abc/vmlinuz</kernel>"));
        assert!(xml.contains("<initrd>/images/abc/initrd.img</initrd>"));
        assert!(xml.contains("console=ttyS0"));
        assert!(xml.contains("no_timer_check"));
        assert!(!xml.contains("<boot "));
        assert!(xml.contains("<source path='/state/envs/demo/box/logs/console.log'/>"));
        let kvm = DomainSpec {
            kvm: true,
            ..spec()
        }
        .xml();
        assert!(kvm.starts_with("<domain type='kvm' "));
    }

    #[test]
    fn a_cloud_image_boots_from_its_disk_with_its_own_bootloader() {
        let xml = DomainSpec {
            boot: Boot::Disk,
            seed: "/state/envs/demo/box/root/seed-up.iso".into(),
            ..spec()
        }
        .xml();
        assert!(!xml.contains("<kernel>") && !xml.contains("<initrd>"));
        assert!(!xml.contains("<cmdline>") && !xml.contains("root=/dev/vda"));
        assert!(xml.contains("<type arch='x86_64' machine='pc'>hvm</type>\n  </os>"));
        // The top overlay is the first (BIOS) boot disk; the seed is never booted.
        let top = &xml[xml.find("live.qcow2").unwrap()..];
        let top_disk = &top[..top.find("</disk>").unwrap()];
        assert!(top_disk.contains("<boot order='1'/>"));
        assert_eq!(xml.matches("<boot ").count(), 1);
        let seed = &xml[xml[..xml.find("seed-up.iso").unwrap()]
            .rfind("<disk")
            .unwrap()..];
        let seed_disk = &seed[..seed.find("</disk>").unwrap()];
        assert!(seed_disk.contains("type='raw'") && seed_disk.contains("<readonly/>"));
        // Still serial console, loopback forwards and the management MAC cloud-init matches.
        assert!(xml.contains("<serial type='file'>"));
        assert!(xml.contains("hostfwd=tcp:127.0.0.1:40022-:22"));
        assert!(xml.contains(&format!("mac={MGMT_MAC}")));
    }

    #[test]
    fn disks_are_the_top_overlay_and_a_read_only_seed() {
        let xml = spec().xml();
        let top = xml.find("live.qcow2").unwrap();
        let seed = xml.find("seed.tar").unwrap();
        assert!(top < seed);
        assert!(xml[..top].contains("type='qcow2'"));
        let seed_disk = &xml[seed..xml[seed..].find("</disk>").unwrap() + seed];
        assert!(seed_disk.contains("<readonly/>"));
        assert!(seed_disk.contains("<target dev='vdb' bus='virtio'/>"));
    }

    #[test]
    fn forwards_bind_loopback_only_and_links_are_udp_on_loopback() {
        let xml = spec().xml();
        assert!(xml.contains("hostfwd=tcp:127.0.0.1:40022-:22"));
        assert!(xml.contains("hostfwd=tcp:127.0.0.1:40080-:8080"));
        assert_eq!(
            xml.matches("hostfwd=").count(),
            xml.matches("hostfwd=tcp:127.0.0.1:").count()
        );
        assert!(xml.contains("<interface type='udp'>"));
        assert!(xml.contains("<source address='127.0.0.1' port='41001'>"));
        assert!(xml.contains("<local address='127.0.0.1' port='41000'/>"));
        assert!(!xml.contains("type='bridge'") && !xml.contains("type='network'"));
        assert!(xml.contains(&format!("mac={MGMT_MAC}")));
    }

    #[test]
    fn qemu_runs_as_the_caller_and_libvirt_relabels_nothing() {
        let xml = DomainSpec {
            run_as: Some((1000, 100)),
            ..spec()
        }
        .xml();
        assert!(xml.contains("<seclabel type='static' model='dac' relabel='no'>"));
        assert!(xml.contains("<label>+1000:+100</label>"));
        // A session daemon has no DAC driver and would refuse the domain.
        let session = DomainSpec {
            run_as: None,
            ..spec()
        }
        .xml();
        assert!(!session.contains("<seclabel"), "{session}");
    }

    #[test]
    fn names_and_paths_are_escaped() {
        let xml = DomainSpec {
            disk: "/tmp/a'b&c/disk.qcow2".into(),
            ..spec()
        }
        .xml();
        assert!(xml.contains("/tmp/a&apos;b&amp;c/disk.qcow2"));
    }

    #[test]
    fn link_macs_are_stable_and_differ_per_machine() {
        assert_eq!(link_mac("e", "a", "lan"), link_mac("e", "a", "lan"));
        assert_ne!(link_mac("e", "a", "lan"), link_mac("e", "b", "lan"));
        assert!(link_mac("e", "a", "lan").starts_with("52:54:01:"));
    }
}
