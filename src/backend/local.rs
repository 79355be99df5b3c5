//! The local backend: a machine is a folder on this host, steps and services are host processes.
//!
//! A step runs with cwd = the machine root and a controlled environment (docs/backends.md):
//! ENVBUILD_ROOT, ENVBUILD_INPUTS, ENVBUILD_ENV/MACHINE/STAGE, ENVBUILD_VAR_* for the vars the
//! stage uses, its own `env`, and PATH/HOME/LANG. Services get ENVBUILD_RUN, ENVBUILD_PORT_* and
//! ENVBUILD_SECRET_* instead of inputs. A snapshot is a copy of the root in the store; restoring
//! copies it back, checking every file's digest on the way.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Backend, Check, MachineContext, Runtime, ServiceControl, StepContext};
use crate::error::{Error, IoContext, Result};
use crate::process::{self, StepEnd};
use crate::settings::Settings;
use crate::spec::model::{Machine, Probe, ReadyCheck, Service};
use crate::spec::template::RuntimeValues;
use crate::spec::{port_env_name, secret_env_name, var_env_name};
use crate::state::{RunningService, RunningServices};
use crate::store::{self, Entry, Pending, TreeEntry, remove_tree};

pub struct LocalBackend;

impl LocalBackend {
    /// The local backend takes no settings: its machines are folders of the state folder.
    pub fn new(_settings: &Settings) -> LocalBackend {
        LocalBackend
    }
}

impl Backend for LocalBackend {
    fn check_host(&self, m: &MachineContext) -> Result<()> {
        let machine = m.machine;
        for requirement in &machine.requires {
            let (found, what) = match &requirement.probe {
                Probe::Program(p) => (process::find_program(p).is_some(), format!("program `{p}`")),
                Probe::Command(c) => (
                    process::probe(c, Path::new("/"), &process::base_env(Path::new("/"))),
                    format!("`{c}` (a check)"),
                ),
            };
            if !found {
                return Err(Error::MissingTool {
                    machine: machine.name.clone(),
                    what,
                    fix: format!(
                        "install the Debian/Ubuntu package `{0}`: apt-get install {0}",
                        requirement.package
                    ),
                });
            }
        }
        Ok(())
    }

    fn host_checks(&self, _folders: &[&Path]) -> Vec<Check> {
        vec![Check {
            what: "/bin/sh".into(),
            ok: Path::new("/bin/sh").is_file(),
            detail: "steps and services run as host processes".into(),
        }]
    }

    fn restore(&self, m: &MachineContext, entry: &Entry) -> Result<bool> {
        let root = m.state.root();
        let sound = store::restore(entry, &root, &m.state.live_index())?;
        if !sound {
            remove_tree(&root).ctx(|| format!("clearing {}", root.display()))?;
        }
        Ok(sound)
    }

    fn reset(&self, m: &MachineContext) -> Result<()> {
        let root = m.state.root();
        store::live_index::forget(&m.state.live_index());
        remove_tree(&root).ctx(|| format!("clearing {}", root.display()))?;
        std::fs::create_dir_all(&root).ctx(|| format!("creating {}", root.display()))
    }

    fn run_step(
        &self,
        m: &MachineContext,
        ctx: &StepContext,
        step: &str,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<StepEnd> {
        let root = m.state.root();
        let mut env = process::base_env(&root.join(".home"));
        env.insert("ENVBUILD_ROOT".into(), root.display().to_string());
        env.insert("ENVBUILD_INPUTS".into(), ctx.inputs.display().to_string());
        env.extend(ctx.env.clone());
        std::fs::create_dir_all(root.join(".home"))
            .ctx(|| format!("creating {}", root.join(".home").display()))?;
        process::run_step(step, &root, &env, ctx.deadline, on_line)
    }

    fn snapshot(
        &self,
        m: &MachineContext,
        pending: &Pending,
        parent: Option<&Entry>,
    ) -> Result<(Vec<TreeEntry>, u64)> {
        let parent_tree = match parent {
            Some(entry) => Some((entry.artifact(), entry.tree()?)),
            None => None,
        };
        // The artifact folder exists (created by `begin`); snapshot fills it.
        let artifact = pending.artifact();
        store::snapshot(
            &m.state.root(),
            &artifact,
            parent_tree
                .as_ref()
                .map(|(dir, tree)| (dir.as_path(), tree.as_slice())),
            &m.state.live_index(),
            &pending.owner(),
        )
    }

    fn start(&self, m: &MachineContext, runtime: &Runtime) -> Result<RunningServices> {
        let machine = m.machine;
        let root = m.state.root();
        let run = m.state.run_dir();
        remove_tree(&run).ctx(|| format!("clearing {}", run.display()))?;
        std::fs::create_dir_all(&run).ctx(|| format!("creating {}", run.display()))?;
        std::fs::create_dir_all(m.state.logs())
            .ctx(|| format!("creating {}", m.state.logs().display()))?;
        let ports = allocate_ports(machine)?;
        let env = runtime_env(m, runtime, &ports);
        let (root_dir, run_dir) = (m.state.root(), m.state.run_dir());
        let values = RuntimeValues {
            vars: &runtime.vars,
            ports: &ports,
            dirs: Some((&root_dir, &run_dir)),
        };
        let render = |text: &str| values.render(text).map_err(|e| Error::Failed(e.message));
        let running = RunningServices {
            ports: ports.clone(),
            services: Vec::new(),
            started: crate::clock::now_rfc3339(),
        };

        let hook_log = m.state.logs().join("prestart.log");
        for hook in &machine.prestart {
            let command = render(hook)?;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&hook_log)
                .ctx(|| format!("opening {}", hook_log.display()))?;
            let deadline = Instant::now() + Duration::from_secs(600);
            let end = process::run_step(&command, &root, &env, deadline, |line| {
                let _ = writeln!(log, "{line}");
            })?;
            if end == StepEnd::Aborted {
                return Err(Error::Aborted(format!(
                    "prestart hook `{hook}` of machine `{}` was interrupted",
                    machine.name
                )));
            }
            if end != StepEnd::Exited(0) {
                return Err(Error::Failed(format!(
                    "prestart hook `{hook}` of machine `{}` failed ({end:?}).\n  last lines:\n{}\n  full log: {}",
                    machine.name,
                    process::tail(&hook_log, 15),
                    hook_log.display()
                )));
            }
        }

        let starting = Starting::new(&env, &ports, running);
        let after: Vec<Vec<usize>> = machine.services.iter().map(|s| s.after.clone()).collect();
        let started = in_dependency_order(&after, &starting.cancel, |at| {
            let service = &machine.services[at];
            if process::aborting() {
                return Err(interrupted(service, machine));
            }
            start_service(m, runtime, service, &starting)
        });
        let mut running = starting.into_running();
        if let Err(e) = started {
            self.stop(m, &running);
            m.state.set_services(None)?;
            return Err(e);
        }
        // The spec's order, whatever order they got ready in.
        running
            .services
            .sort_by_key(|r| machine.services.iter().position(|s| s.name == r.name));
        m.state.set_services(Some(&running))?;
        Ok(running)
    }

    fn control(
        &self,
        m: &MachineContext,
        runtime: &Runtime,
        control: ServiceControl,
        names: &[String],
        extra_env: &BTreeMap<String, String>,
    ) -> Result<()> {
        let mut running = m
            .state
            .services()
            .ok_or_else(|| Error::Failed(format!("machine `{}` is not up", m.machine.name)))?;
        let mut env = runtime_env(m, runtime, &running.ports);
        env.extend(extra_env.clone());
        for name in names {
            if control != ServiceControl::Start
                && let Some(at) = running.services.iter().position(|s| s.name == *name)
            {
                let old = running.services.remove(at);
                stop_service(&old);
                m.state.set_services(Some(&running))?;
            }
            if control != ServiceControl::Stop {
                let service = m
                    .machine
                    .services
                    .iter()
                    .find(|s| s.name == *name)
                    .expect("spec checked service names");
                let ports = running.ports.clone();
                let starting = Starting::new(&env, &ports, running);
                let started = start_service(m, runtime, service, &starting);
                running = starting.into_running();
                started?;
            }
        }
        Ok(())
    }

    fn stop(&self, m: &MachineContext, running: &RunningServices) -> Vec<String> {
        // A service stops once every service started after it has stopped; the others at once.
        let services = &running.services;
        let started_after: Vec<Vec<usize>> = (0..services.len())
            .map(|at| {
                (0..services.len())
                    .filter(|&later| depends_on(services, later).contains(&at))
                    .collect()
            })
            .collect();
        let killed = Mutex::new(Vec::new());
        let _ = in_dependency_order(&started_after, &AtomicBool::new(false), |at| {
            if stop_service(&services[at]) {
                killed
                    .lock()
                    .expect("a stop panicked")
                    .push(services[at].name.clone());
            }
            Ok(())
        });
        let _ = remove_tree(&m.state.run_dir());
        killed.into_inner().expect("a stop panicked")
    }
}

/// Indices (into `services`) of the services `services[at]` started after.
fn depends_on(services: &[RunningService], at: usize) -> Vec<usize> {
    match &services[at].after {
        None => at.checked_sub(1).into_iter().collect(),
        Some(names) => names
            .iter()
            .filter_map(|name| services.iter().position(|s| s.name == *name))
            .collect(),
    }
}

/// Stops a service's process group: its stop signal, SIGKILL after its stop timeout; true if
/// it had to be killed.
fn stop_service(service: &RunningService) -> bool {
    process::stop_group(
        service.pid,
        service.stop_signal,
        Duration::from_secs(service.stop_timeout),
    )
}

/// Runs `job` for every node of a dependency graph (`waits_for[i]`: the nodes `i` runs after),
/// each on a thread of its own as soon as the nodes it waits for have succeeded. After the
/// first failure `cancel` is set, nothing more starts, and the running jobs are waited for;
/// the first failure is returned.
fn in_dependency_order(
    waits_for: &[Vec<usize>],
    cancel: &AtomicBool,
    job: impl Fn(usize) -> Result<()> + Sync,
) -> Result<()> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Waiting,
        Running,
        Done,
    }
    let mut state = vec![State::Waiting; waits_for.len()];
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let mut failure = None;
        let mut running = 0;
        loop {
            for at in 0..waits_for.len() {
                let ready = waits_for[at].iter().all(|&d| state[d] == State::Done);
                if failure.is_none() && state[at] == State::Waiting && ready {
                    state[at] = State::Running;
                    running += 1;
                    let (done, job) = (done.clone(), &job);
                    scope.spawn(move || done.send((at, job(at))));
                }
            }
            if running == 0 {
                break;
            }
            let (at, result) = finished.recv().expect("a job thread panicked");
            running -= 1;
            match result {
                Ok(()) => state[at] = State::Done,
                Err(e) => {
                    cancel.store(true, Ordering::SeqCst);
                    failure = failure.or(Some(e));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    })
}

/// What the services of one machine share while they start.
struct Starting<'a> {
    env: &'a BTreeMap<String, String>,
    ports: &'a BTreeMap<String, u16>,
    /// What has been spawned so far, recorded in the machine's state as it grows.
    running: Mutex<RunningServices>,
    /// Set when one service failed: the others stop waiting.
    cancel: AtomicBool,
    since: Instant,
}

impl<'a> Starting<'a> {
    fn new(
        env: &'a BTreeMap<String, String>,
        ports: &'a BTreeMap<String, u16>,
        running: RunningServices,
    ) -> Self {
        Starting {
            env,
            ports,
            running: Mutex::new(running),
            cancel: AtomicBool::new(false),
            since: Instant::now(),
        }
    }

    /// What was spawned, once every start has returned.
    fn into_running(self) -> RunningServices {
        self.running.into_inner().expect("a service start panicked")
    }
}

/// Starts one service, records it in `running` (and services.json), and waits until it is
/// ready. On failure (it exited, it never got ready, SIGINT/SIGTERM came) its process group is
/// stopped and taken out of `running`, and the error says why, with the end of its log.
fn start_service(
    m: &MachineContext,
    runtime: &Runtime,
    service: &Service,
    starting: &Starting,
) -> Result<()> {
    let Starting {
        env,
        ports,
        running,
        cancel,
        since,
    } = starting;
    let root = m.state.root();
    let run_dir = m.state.run_dir();
    let values = RuntimeValues {
        vars: &runtime.vars,
        ports,
        dirs: Some((&root, &run_dir)),
    };
    let render = |text: &str| values.render(text).map_err(|e| Error::Failed(e.message));
    let log = m.state.logs().join(format!("{}.log", service.name));
    let command = render(&service.command)?;
    let check = service
        .ready
        .as_ref()
        .map(|ready| {
            Ok::<_, Error>((
                match &ready.check {
                    ReadyCheck::Tcp(address) => ReadyCheck::Tcp(render(address)?),
                    ReadyCheck::Http { url, status } => ReadyCheck::Http {
                        url: render(url)?,
                        status: *status,
                    },
                    ReadyCheck::Command(command) => ReadyCheck::Command(render(command)?),
                },
                ready.timeout,
            ))
        })
        .transpose()?;
    let url = service.url.as_deref().map(render).transpose()?;
    let record = RunningService {
        name: service.name.clone(),
        pid: 0,
        stop_signal: service.stop_signal,
        stop_timeout: service.stop_timeout.as_secs(),
        after: Some(
            service
                .after
                .iter()
                .map(|&at| m.machine.services[at].name.clone())
                .collect(),
        ),
        log: log.clone(),
        url,
        spawned_at_s: None,
        ready_after_s: None,
    };
    let record = {
        // Spawned and recorded under the lock: a failure elsewhere stops what is recorded.
        let mut running = running.lock().expect("a service start panicked");
        let pid = process::spawn_service(&command, &root, env, &log)?;
        let spawned_at_s = Some(since.elapsed().as_secs_f64());
        let record = RunningService {
            pid,
            spawned_at_s,
            ..record
        };
        running.services.push(record.clone());
        m.state.set_services(Some(&running))?;
        record
    };
    let started = Instant::now();
    let ready = match &check {
        None => Ok(()),
        Some((check, timeout)) => wait_ready(check, *timeout, record.pid, &root, env, cancel),
    };
    let Err(why) = ready else {
        let mut running = running.lock().expect("a service start panicked");
        if let Some(entry) = running.services.iter_mut().find(|s| s.pid == record.pid) {
            entry.ready_after_s = Some(started.elapsed().as_secs_f64());
        }
        return m.state.set_services(Some(&running));
    };
    let timeout = check.map(|(_, timeout)| timeout).unwrap_or_default();
    stop_service(&record);
    {
        let mut running = running.lock().expect("a service start panicked");
        running.services.retain(|s| s.pid != record.pid);
        m.state.set_services(Some(&running))?;
    }
    let machine = &m.machine.name;
    let name = &service.name;
    let log_tail = format!(
        "\n  last lines of its log:\n{}\n  full log: {}",
        process::tail(&log, 15),
        log.display()
    );
    Err(match why {
        NotReady::Aborted => interrupted(service, m.machine),
        NotReady::Cancelled => Error::Failed(format!(
            "service `{name}` of machine `{machine}` was stopped before it was ready: another service failed"
        )),
        NotReady::Exited(exit) => Error::Failed(format!(
            "service `{name}` of machine `{machine}` {exit} {:.1}s after it started, before it was ready.{log_tail}",
            started.elapsed().as_secs_f64()
        )),
        NotReady::TimedOut(last) => Error::Failed(format!(
            "service `{name}` of machine `{machine}` did not become ready: still not ready after {}s ({last}).{log_tail}",
            timeout.as_secs()
        )),
    })
}

/// The error of a service whose start SIGINT/SIGTERM cut short.
fn interrupted(service: &Service, machine: &Machine) -> Error {
    Error::Aborted(format!(
        "interrupted by {} while service `{}` of machine `{}` started; what this run started was stopped",
        process::interrupted_by().unwrap_or("a signal"),
        service.name,
        machine.name
    ))
}

/// Picks a free loopback port for each "auto" port; fixed ports must be free.
fn allocate_ports(machine: &Machine) -> Result<BTreeMap<String, u16>> {
    let mut ports = BTreeMap::new();
    let mut held = Vec::new();
    for port in &machine.ports {
        let listener = match port.fixed {
            Some(n) => TcpListener::bind(("127.0.0.1", n)).map_err(|e| {
                Error::Input(format!(
                    "port {} (`{}` of machine `{}`) is not free on 127.0.0.1: {e}",
                    n, port.name, machine.name
                ))
            })?,
            None => {
                TcpListener::bind(("127.0.0.1", 0)).ctx(|| "finding a free loopback port".into())?
            }
        };
        ports.insert(
            port.name.clone(),
            listener
                .local_addr()
                .ctx(|| "reading a port".into())?
                .port(),
        );
        // Held until all are chosen, so two auto ports never get the same number.
        held.push(listener);
    }
    Ok(ports)
}

/// The environment of prestart hooks, services and `envbuild exec`.
pub fn runtime_env(
    m: &MachineContext,
    runtime: &Runtime,
    ports: &BTreeMap<String, u16>,
) -> BTreeMap<String, String> {
    let root = m.state.root();
    let mut env = process::base_env(&root.join(".home"));
    env.insert("ENVBUILD_ROOT".into(), root.display().to_string());
    env.insert(
        "ENVBUILD_RUN".into(),
        m.state.run_dir().display().to_string(),
    );
    env.insert("ENVBUILD_MACHINE".into(), m.machine.name.clone());
    for (name, port) in ports {
        env.insert(port_env_name(name), port.to_string());
    }
    for (name, value) in &runtime.vars {
        env.insert(var_env_name(name), value.clone());
    }
    for (name, value) in &runtime.secrets {
        env.insert(secret_env_name(name), value.clone());
    }
    env
}

/// Why a service is not ready.
enum NotReady {
    /// Its first process ended (a service runs in the foreground).
    Exited(process::Exit),
    /// The timeout passed; the last check's answer.
    TimedOut(String),
    /// SIGINT/SIGTERM.
    Aborted,
    /// Another service of the same start failed.
    Cancelled,
}

/// Checks readiness every 200 ms until `timeout`; a service that exits or a signal ends the
/// wait at once.
fn wait_ready(
    check: &ReadyCheck,
    timeout: Duration,
    pid: i32,
    root: &Path,
    env: &BTreeMap<String, String>,
    cancel: &AtomicBool,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not checked yet");
    loop {
        if let Some(exit) = process::exited(pid) {
            return Err(NotReady::Exited(exit));
        }
        if process::aborting() {
            return Err(NotReady::Aborted);
        }
        if cancel.load(Ordering::SeqCst) {
            return Err(NotReady::Cancelled);
        }
        if Instant::now() >= deadline {
            return Err(NotReady::TimedOut(last));
        }
        match check_once(check, root, env) {
            // Ready, unless it answered while it was exiting.
            Ok(()) => match process::exited(pid) {
                Some(exit) => return Err(NotReady::Exited(exit)),
                None => return Ok(()),
            },
            Err(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn check_once(
    check: &ReadyCheck,
    root: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    match check {
        ReadyCheck::Tcp(address) => connect(address).map(|_| ()),
        ReadyCheck::Http { url, status } => {
            let got = http_status(url)?;
            if got == *status {
                Ok(())
            } else {
                Err(format!("{url} answered {got}, expected {status}"))
            }
        }
        ReadyCheck::Command(command) => {
            if process::probe(command, root, env) {
                Ok(())
            } else {
                Err(format!("`{command}` failed"))
            }
        }
    }
}

fn connect(address: &str) -> Result<TcpStream, String> {
    let addr = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to nothing"))?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("{address}: {e}"))
}

/// The status of a GET of `url` (http or https, the host's roots), or why there is none.
pub fn http_status(url: &str) -> Result<u16, String> {
    let parsed = crate::http::Url::parse(url).map_err(|e| e.to_string())?;
    let client = crate::http::Client::default().with_deadline(Duration::from_secs(5));
    let response = client
        .request("GET", &parsed, &[], crate::http::Body::Empty)
        .map_err(|e| format!("{url}: {e}"))?;
    // Only the status counts; the body is left unread (the connection closes).
    Ok(response.status)
}
