//! Machines: backend, base, resources, VM keys, ports, requirements and services.

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Spanned;

use super::model::*;
use super::raw::*;
use super::*;
use crate::error::Result;

impl Loader<'_> {
    pub(super) fn machine(
        &self,
        name: &Name,
        raw: &RawMachine,
        vars: &BTreeMap<String, Var>,
    ) -> Result<Machine> {
        self.check_name(name, "machine")?;
        let backend = match &raw.backend {
            None => BackendKind::Local,
            Some(b) => match BackendKind::parse(b.get_ref()) {
                Some(kind) => kind,
                None => {
                    return self.err(
                        b.span().start,
                        format!(
                            "unknown backend `{}`; allowed: {}",
                            b.get_ref(),
                            BackendKind::IMPLEMENTED.join(", ")
                        ),
                    );
                }
            },
        };
        let vm = self.vm(name, raw, backend)?;
        self.check_env_names(
            raw.ports.keys().chain(raw.forward.keys()),
            "ports",
            port_env_name,
        )?;
        let mut ports = self.ports(&raw.ports)?;
        ports.extend(vm.forward.keys().map(|name| Port {
            name: name.clone(),
            fixed: None,
        }));
        let runtime = Scope {
            vars,
            ports: Some(&ports),
            probe_secrets: None,
        };
        let mut prestart = Vec::new();
        for hook in &raw.prestart {
            prestart.push(self.shell_command(hook, &runtime, "a prestart hook")?.0);
        }
        let mut stages = Vec::new();
        for stage in &raw.stages {
            if let Some(first) = stages
                .iter()
                .position(|s: &Stage| s.name == *stage.get_ref().name.get_ref())
            {
                let _ = first;
                return self.err(
                    stage.get_ref().name.span().start,
                    format!(
                        "machine `{}` has two stages named `{}`; stage names must be unique",
                        name.get_ref(),
                        stage.get_ref().name.get_ref()
                    ),
                );
            }
            let parsed = self.stage(stage.get_ref(), vars)?;
            if parsed.snapshot == Snapshot::Running {
                self.check_running_snapshot(stage.get_ref(), backend, &vm)?;
            }
            stages.push(parsed);
        }
        // A VM with no stages is its base image, booted by `up`.
        if stages.is_empty() && raw.services.is_empty() && !backend.is_vm() {
            return self.err(
                name.span().start,
                format!("machine `{}` has no stages and no services", name.get_ref()),
            );
        }
        let mut services: Vec<Service> = Vec::new();
        for service in &raw.services {
            let service = service.get_ref();
            self.check_name(&service.name, "service")?;
            if services.iter().any(|s| s.name == *service.name.get_ref()) {
                return self.err(
                    service.name.span().start,
                    format!(
                        "machine `{}` has two services named `{}`",
                        name.get_ref(),
                        service.name.get_ref()
                    ),
                );
            }
            let mut parsed = self.service(service, &runtime)?;
            parsed.after = self.service_after(service, &services, name.get_ref())?;
            services.push(parsed);
        }
        Ok(Machine {
            name: name.get_ref().clone(),
            description: raw.description.clone(),
            backend,
            base: self.base(raw.base.as_ref(), backend)?,
            resources: self.resources(raw.resources.as_ref())?,
            requires: self.requires(&raw.requires)?,
            ports,
            prestart,
            stages,
            services,
            vm,
        })
    }

    /// A private link is a point-to-point QEMU UDP socket pair: exactly two machines join it.
    pub(super) fn check_links(&self, raw: &RawEnvironment) -> Result<()> {
        let mut members: BTreeMap<&str, Vec<&Name>> = BTreeMap::new();
        for machine in raw.machines.values() {
            for link in machine.networks.keys() {
                members.entry(link.get_ref()).or_default().push(link);
            }
        }
        for (link, names) in members {
            if names.len() != 2 {
                return self.err(
                    names[names.len() - 1].span().start,
                    format!(
                        "network `{link}` is joined by {} machine(s); a private link joins exactly two (a point-to-point QEMU UDP link on loopback)",
                        names.len()
                    ),
                );
            }
        }
        Ok(())
    }

    /// The VM keys of a machine: only libvirt machines take them, and they take no host
    /// services (their services are units inside the guest, reached through `forward`).
    /// `snapshot = "running"` keeps a VM's memory: a libvirt machine's, and one without private
    /// links (the build VM that saves it has no link NICs, so its device state would not fit the
    /// machine `up` starts).
    fn check_running_snapshot(
        &self,
        stage: &RawStage,
        backend: BackendKind,
        vm: &VmSpec,
    ) -> Result<()> {
        let at = stage.snapshot.as_ref().map_or(0, |s| s.span().start);
        if backend != BackendKind::Libvirt {
            return self.err(
                at,
                "snapshot = \"running\" keeps a VM's memory: add backend = \"libvirt\", or remove it",
            );
        }
        if !vm.links.is_empty() {
            return self.err(
                at,
                "snapshot = \"running\" is not possible on a machine with `networks` (the build VM that saves its memory has no link NICs); remove one or the other",
            );
        }
        Ok(())
    }

    pub(super) fn vm(&self, name: &Name, raw: &RawMachine, backend: BackendKind) -> Result<VmSpec> {
        let mut vm = VmSpec::default();
        if !backend.is_vm() {
            let first = raw
                .uri
                .as_ref()
                .map(|u| u.span().start)
                .or(raw.forward.keys().next().map(|k| k.span().start))
                .or(raw.networks.keys().next().map(|k| k.span().start))
                .or(raw.bastion.as_ref().map(|b| b.span().start))
                .or(raw.trust_host_ca.as_ref().map(|b| b.span().start));
            if let Some(offset) = first {
                return self.err(
                    offset,
                    "`uri`, `forward`, `networks`, `trust_host_ca` and `bastion` are for VM machines: add backend = \"libvirt\"",
                );
            }
            return Ok(vm);
        }
        if backend == BackendKind::Vagrant
            && let Some(link) = raw.networks.keys().next()
        {
            return self.err(
                link.span().start,
                "private links (`networks`) are for libvirt machines; the vagrant backend has none yet",
            );
        }
        if let Some(hook) = raw.prestart.first() {
            return self.err(
                hook.span().start,
                "a libvirt machine has no host-side prestart hooks: do the work in a stage, or in a unit inside the guest",
            );
        }
        if let Some(service) = raw.services.first() {
            return self.err(
                service.span().start,
                "a libvirt machine runs its services inside the guest: enable a systemd unit in a stage and reach it with `forward = { NAME = GUEST_PORT }`",
            );
        }
        if let Some((port, _)) = raw.ports.iter().next() {
            return self.err(
                port.span().start,
                "a libvirt machine's host ports are its forwarded guest ports: use `forward = { NAME = GUEST_PORT }` instead of `ports`",
            );
        }
        match &raw.base {
            Some(base)
                if base.get_ref().image.is_some() || base.get_ref().debootstrap.is_some() => {}
            _ => {
                return self.err(
                    name.span().start,
                    format!(
                        "libvirt machine `{}` needs a base: base = {{ image = \"URL\", sha256 = \"...\" }} or base = {{ debootstrap = {{ suite = \"bookworm\" }} }}",
                        name.get_ref()
                    ),
                );
            }
        }
        if let Some(uri) = &raw.uri {
            let u = uri.get_ref();
            if !(u.starts_with("qemu:") || u.starts_with("qemu+")) {
                return self.err(
                    uri.span().start,
                    format!("`{u}` is not a QEMU libvirt URI: use qemu:///system, qemu:///session or qemu+ssh://HOST/system"),
                );
            }
            vm.uri = Some(u.clone());
        }
        for (port_name, guest) in &raw.forward {
            self.check_name(port_name, "forwarded port")?;
            let Ok(port) = u16::try_from(*guest.get_ref()) else {
                return self.err(
                    guest.span().start,
                    "a guest port is a number from 1 to 65535",
                );
            };
            if port == 0 {
                return self.err(
                    guest.span().start,
                    "a guest port is a number from 1 to 65535",
                );
            }
            if port_name.get_ref() == "ssh" {
                return self.err(
                    port_name.span().start,
                    "`ssh` is forwarded by envbuild itself (guest port 22); pick another name",
                );
            }
            vm.forward.insert(port_name.get_ref().clone(), port);
        }
        for (link, address) in &raw.networks {
            self.check_name(link, "network")?;
            if !is_ipv4_cidr(address.get_ref()) {
                return self.err(
                    address.span().start,
                    format!(
                        "`{}` is not an IPv4 address with a prefix length, e.g. \"10.0.0.2/24\"",
                        address.get_ref()
                    ),
                );
            }
            vm.links
                .insert(link.get_ref().clone(), address.get_ref().clone());
        }
        vm.bastion = raw.bastion.as_ref().is_some_and(|b| *b.get_ref());
        vm.trust_host_ca = raw.trust_host_ca.as_ref().is_none_or(|t| *t.get_ref());
        Ok(vm)
    }

    /// At most one machine is the bastion `ssh-config` jumps through.
    pub(super) fn check_bastion(&self, raw: &RawEnvironment) -> Result<()> {
        let bastions: Vec<(&Name, usize)> = raw
            .machines
            .iter()
            .filter_map(|(name, m)| {
                let flag = m.bastion.as_ref().filter(|b| *b.get_ref())?;
                Some((name, flag.span().start))
            })
            .collect();
        if let [(first, _), (_, second), ..] = bastions[..] {
            return self.err(
                second,
                format!(
                    "machine `{}` is the bastion already; an environment has at most one `bastion = true`",
                    first.get_ref()
                ),
            );
        }
        Ok(())
    }

    pub(super) fn base(
        &self,
        raw: Option<&Spanned<RawBase>>,
        backend: BackendKind,
    ) -> Result<Base> {
        let Some(raw) = raw else {
            return Ok(Base::default());
        };
        let mut base = Base::default();
        for tool in &raw.get_ref().host_tools {
            if !tool.get_ref().starts_with('/') {
                return self.err(
                    tool.span().start,
                    "a host tool is an absolute path, e.g. \"/usr/bin/python3\"",
                );
            }
            base.host_tools.push(PathBuf::from(tool.get_ref()));
        }
        if let Some(recipe) = &raw.get_ref().debootstrap {
            if !backend.is_vm() {
                return self.err(
                    recipe.span().start,
                    "a debootstrap base is a VM disk image: add backend = \"libvirt\"",
                );
            }
            if let Some(image) = &raw.get_ref().image {
                return self.err(
                    image.span().start,
                    "a base is either a pinned image or a debootstrap recipe, not both",
                );
            }
            let recipe = recipe.get_ref();
            let mut packages = Vec::new();
            for package in &recipe.packages {
                let p = package.get_ref();
                if p.is_empty()
                    || !p
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
                {
                    return self.err(
                        package.span().start,
                        format!("`{p}` is not a Debian package name"),
                    );
                }
                packages.push(p.clone());
            }
            let suite = recipe.suite.get_ref();
            if suite.is_empty() || !suite.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return self.err(
                    recipe.suite.span().start,
                    format!("`{suite}` is not a Debian suite name (e.g. \"bookworm\")"),
                );
            }
            base.debootstrap = Some(Debootstrap {
                suite: suite.clone(),
                mirror: recipe.mirror.as_ref().map_or_else(
                    || "http://deb.debian.org/debian".to_string(),
                    |m| m.get_ref().clone(),
                ),
                packages,
            });
        }
        match (&raw.get_ref().image, &raw.get_ref().sha256) {
            (None, None) => {}
            (Some(url), Some(sha)) => {
                self.check_sha256(sha)?;
                if backend == BackendKind::Local {
                    return self.err(
                        url.span().start,
                        "the local backend runs on this host and takes no image; use host_tools",
                    );
                }
                if !(url.get_ref().starts_with("http://") || url.get_ref().starts_with("https://"))
                {
                    return self.err(
                        url.span().start,
                        "an image URL starts with http:// or https:// (serve a local file from http://127.0.0.1:PORT/)",
                    );
                }
                base.image = Some(PinnedImage {
                    url: url.get_ref().clone(),
                    sha256: sha.get_ref().to_lowercase(),
                    pinned_at: self.at(sha.span().start).to_string(),
                });
            }
            (Some(url), None) => {
                return self.err(
                    url.span().start,
                    "an image needs its sha256 pin: add sha256 = \"<64 hex digits>\"",
                );
            }
            (None, Some(sha)) => {
                return self.err(
                    sha.span().start,
                    "sha256 pins an image: add image = \"URL\"",
                );
            }
        }
        Ok(base)
    }

    pub(super) fn check_sha256(&self, sha: &Spanned<String>) -> Result<()> {
        let s = sha.get_ref();
        if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(());
        }
        self.err(
            sha.span().start,
            format!(
                "`{s}` is not a sha256: expected 64 hexadecimal digits, got {} characters",
                s.len()
            ),
        )
    }

    pub(super) fn resources(&self, raw: Option<&RawResources>) -> Result<Resources> {
        let mut resources = Resources {
            cpus: 1,
            memory_mib: 1024,
            disk_mib: 8192,
        };
        let Some(raw) = raw else { return Ok(resources) };
        if let Some(cpus) = &raw.cpus {
            if !(1..=256).contains(cpus.get_ref()) {
                return self.err(cpus.span().start, "cpus must be between 1 and 256");
            }
            resources.cpus = *cpus.get_ref() as u32;
        }
        if let Some(memory) = &raw.memory {
            resources.memory_mib = self.size_mib(memory)?;
        }
        if let Some(disk) = &raw.disk {
            resources.disk_mib = self.size_mib(disk)?;
        }
        Ok(resources)
    }

    pub(super) fn size_mib(&self, text: &Spanned<String>) -> Result<u64> {
        let s = text.get_ref().trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let factor = match unit.trim() {
            "MiB" | "M" => Some(1),
            "GiB" | "G" => Some(1024),
            "TiB" | "T" => Some(1024 * 1024),
            _ => None,
        };
        match (number.parse::<u64>(), factor) {
            (Ok(n), Some(f)) if n > 0 => Ok(n * f),
            _ => self.err(
                text.span().start,
                format!("`{s}` is not a size: write e.g. \"512MiB\" or \"4GiB\""),
            ),
        }
    }

    pub(super) fn requires(&self, raw: &[Spanned<RawRequirement>]) -> Result<Vec<Requirement>> {
        raw.iter()
            .map(|r| {
                let probe = match (&r.get_ref().program, &r.get_ref().command) {
                    (Some(p), None) => Probe::Program(p.get_ref().clone()),
                    (None, Some(c)) => Probe::Command(c.get_ref().clone()),
                    _ => return self.err(
                        r.span().start,
                        "a requirement has exactly one of `program` or `command`, and a `package`",
                    ),
                };
                Ok(Requirement {
                    probe,
                    package: r.get_ref().package.get_ref().clone(),
                })
            })
            .collect()
    }

    pub(super) fn ports(&self, raw: &BTreeMap<Name, Spanned<toml::Value>>) -> Result<Vec<Port>> {
        let mut ports: Vec<Port> = Vec::new();
        for (name, value) in raw {
            self.check_name(name, "port")?;
            let fixed = match value.get_ref() {
                toml::Value::String(s) if s == "auto" => None,
                toml::Value::Integer(n) if (1..=65535).contains(n) => {
                    let n = *n as u16;
                    if ports.iter().any(|p| p.fixed == Some(n)) {
                        return self.err(
                            value.span().start,
                            format!("port {n} is used twice in this machine"),
                        );
                    }
                    Some(n)
                }
                _ => return self.err(
                    value.span().start,
                    "a port is \"auto\" (a free loopback port at up) or a number from 1 to 65535",
                ),
            };
            ports.push(Port {
                name: name.get_ref().clone(),
                fixed,
            });
        }
        Ok(ports)
    }

    pub(super) fn service(&self, raw: &RawService, scope: &Scope) -> Result<Service> {
        let command = self
            .shell_command(&raw.command, scope, "a service command")?
            .0;
        let stop_signal = match raw.stop_signal.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("TERM") => libc::SIGTERM,
            Some("INT") => libc::SIGINT,
            Some("QUIT") => libc::SIGQUIT,
            Some("HUP") => libc::SIGHUP,
            Some("KILL") => libc::SIGKILL,
            Some(other) => {
                return self.err(
                    raw.stop_signal.as_ref().unwrap().span().start,
                    format!("unknown stop_signal `{other}`; allowed: TERM, INT, QUIT, HUP, KILL"),
                );
            }
        };
        let ready = match &raw.ready {
            None => None,
            Some(ready) => {
                let r = ready.get_ref();
                let check = match (&r.tcp, &r.http, &r.command) {
                    (Some(addr), None, None) => {
                        self.check_placeholders(addr, scope)?;
                        ReadyCheck::Tcp(addr.get_ref().clone())
                    }
                    (None, Some(url), None) => {
                        self.check_placeholders(url, scope)?;
                        if !["http://", "https://"]
                            .iter()
                            .any(|s| url.get_ref().starts_with(s))
                        {
                            return self.err(
                                url.span().start,
                                "a readiness URL starts with http:// or https://",
                            );
                        }
                        let status = match &r.status {
                            None => 200,
                            Some(s) if (100..=599).contains(s.get_ref()) => *s.get_ref() as u16,
                            Some(s) => {
                                return self.err(
                                    s.span().start,
                                    "status is an HTTP status code (100-599)",
                                );
                            }
                        };
                        ReadyCheck::Http {
                            url: url.get_ref().clone(),
                            status,
                        }
                    }
                    (None, None, Some(command)) => ReadyCheck::Command(
                        self.shell_command(command, scope, "a readiness command")?.0,
                    ),
                    _ => {
                        return self.err(
                            ready.span().start,
                            "a readiness check has exactly one of `tcp`, `http` or `command`",
                        );
                    }
                };
                Some(Ready {
                    check,
                    timeout: self.duration(r.timeout.as_ref(), DEFAULT_READY_TIMEOUT)?,
                })
            }
        };
        if let Some(url) = &raw.url {
            self.check_placeholders(url, scope)?;
        }
        Ok(Service {
            name: raw.name.get_ref().clone(),
            command,
            url: raw.url.as_ref().map(|u| u.get_ref().clone()),
            ready,
            stop_signal,
            stop_timeout: self.duration(raw.stop_timeout.as_ref(), DEFAULT_STOP_TIMEOUT)?,
            after: Vec::new(),
        })
    }

    /// The services `raw` starts after, as indices into `before` (the services listed before
    /// it): its `after` names, or else the one listed just before it.
    fn service_after(
        &self,
        raw: &RawService,
        before: &[Service],
        machine: &str,
    ) -> Result<Vec<usize>> {
        let Some(names) = &raw.after else {
            return Ok(before.len().checked_sub(1).into_iter().collect());
        };
        let mut after = Vec::new();
        for name in names {
            let Some(at) = before.iter().position(|s| s.name == *name.get_ref()) else {
                let known: Vec<&str> = before.iter().map(|s| s.name.as_str()).collect();
                let message = if name.get_ref() == raw.name.get_ref() {
                    format!("service `{}` cannot start after itself", name.get_ref())
                } else {
                    format!(
                        "`after` names `{}`, which is not a service listed before `{}` in machine `{machine}`: a service starts after services listed above it (listed above: {})",
                        name.get_ref(),
                        raw.name.get_ref(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )
                };
                return self.err(name.span().start, message);
            };
            if after.contains(&at) {
                return self.err(
                    name.span().start,
                    format!("`after` names `{}` twice", name.get_ref()),
                );
            }
            after.push(at);
        }
        Ok(after)
    }
}

fn is_ipv4_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    address.parse::<std::net::Ipv4Addr>().is_ok()
        && prefix.parse::<u8>().is_ok_and(|p| (8..=30).contains(&p))
}
