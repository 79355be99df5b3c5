//! The build VM a stage's steps run in (booted on the first step, kept for the next), and how
//! one step runs in a guest over SSH (the vagrant backend's steps run the same way).

use super::*;

impl LibvirtBackend {
    /// Boots the build VM for the stage being built, on a fresh overlay of the current disk.
    /// Returns the VM's SSH port and trust, whether the host's CAs are in its store, and (on the
    /// first call only) their record for the stage log.
    pub(super) fn build_vm(&self, m: &MachineContext, ctx: &StepContext) -> Result<StepTarget> {
        if let Some(vm) = self.builds.lock().unwrap().get_mut(&m.state.dir) {
            return Ok(StepTarget {
                port: vm.port,
                trust: vm.trust.clone(),
                host_cas: vm.host_cas,
                provenance: vm.provenance.take(),
            });
        }
        let state = m.state;
        let current = self.current(m)?;
        let overlay = state.root().join("build.qcow2");
        image::create_overlay(
            &current.disk,
            &overlay,
            first_overlay_mib(m.machine, &current),
        )?;
        let uri = self.uri_for(m.machine);
        let keep_memory = ctx.snapshot == Snapshot::Running;
        let domain = if keep_memory {
            up_domain(m.env, m.machine)
        } else {
            format!(
                "envbuild-{}-{}-build-{}",
                m.env,
                m.machine.name,
                std::process::id()
            )
        };
        let booted = boot(&BootPlan {
            uri: &uri,
            domain: &domain,
            env: m.env,
            machine: m.machine,
            state,
            disk: &overlay,
            base: &current.base,
            kind: "build",
            forwards: &BTreeMap::new(),
            links: &[],
            guard_removes: vec![overlay.clone()],
        })?;
        copy_inputs(&booted.trust, booted.ssh_port, ctx.inputs)?;
        let host_cas = m.machine.vm.trust_host_ca && !self.host_cas.is_empty();
        if host_cas {
            self.host_cas.install(&booted.trust, booted.ssh_port)?;
        }
        let result = StepTarget {
            port: booted.ssh_port,
            trust: booted.trust.clone(),
            host_cas,
            provenance: host_cas.then(|| self.host_cas.provenance()),
        };
        self.builds.lock().unwrap().insert(
            state.dir.clone(),
            BuildVm {
                domain,
                uri,
                port: booted.ssh_port,
                trust: booted.trust,
                keep_memory,
                host_cas,
                provenance: None,
                _guard: booted.guard,
            },
        );
        Ok(result)
    }
}

/// Runs one step in a VM over SSH as root: `sh -ec STEP` in `/` with the stage's environment
/// (the vagrant backend runs its steps the same way).
pub(crate) fn run_guest_step(
    m: &MachineContext,
    ctx: &StepContext,
    step: &str,
    trust: &Trust,
    port: u16,
    extra: &[String],
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<StepEnd> {
    let mut exports = vec![
        format!("ENVBUILD_INPUTS={GUEST_INPUTS}"),
        "ENVBUILD_ROOT=/".to_string(),
        format!("PATH={}", process::SAFE_PATH),
        "HOME=/root".to_string(),
        "LANG=C.UTF-8".to_string(),
    ];
    exports.extend(extra.iter().cloned());
    exports.extend(ctx.env.iter().map(|(k, v)| format!("{k}={}", quote(v))));
    let remote = format!(
        "cd / && export {} && exec sh -ec {}",
        exports.join(" "),
        quote(step)
    );
    let local: Vec<String> = trust
        .ssh_argv(port, Some(&remote))
        .iter()
        .map(|a| quote(a))
        .collect();
    let env = process::base_env(&m.state.dir);
    process::run_step(&local.join(" "), &m.state.dir, &env, ctx.deadline, on_line)
}
