//! Running host processes without leaking them.
//!
//! Build steps run under a small supervisor (`envbuild supervise`, hidden) that puts the step in a
//! process group of its own, dies with envbuild (PR_SET_PDEATHSIG) and kills the whole group when
//! it does, or when the step ends: a step never leaves a process behind, even if envbuild is
//! killed with SIGKILL. Services are the opposite: they outlive `up` in a session of their own,
//! and `down` stops their process group.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result};

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    Exited(i32),
    TimedOut,
    /// [`ABORT`] was raised (Ctrl-C in `envbuild test`): the step was stopped.
    Aborted,
}

/// Raised by a signal handler to stop the running step at once (its whole process group), and
/// a readiness wait with it.
pub static ABORT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The signal (SIGINT/SIGTERM) that interrupted this run, 0 while none did.
static INTERRUPTED_BY: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_interrupt(signal: libc::c_int) {
    INTERRUPTED_BY.store(signal, Ordering::SeqCst);
    ABORT.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM raise [`ABORT`] instead of killing envbuild: what runs stops
/// (a step, a readiness wait), and the command stops what it started before it exits 130.
/// Commands that start things (`build`, `up`, `down`, `test`) call this first.
pub fn catch_interrupts() {
    // SAFETY: installing a handler that only stores to atomics.
    unsafe {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            libc::signal(signal, on_interrupt as *const () as libc::sighandler_t);
        }
    }
}

/// The signal that interrupted this run, by name.
pub fn interrupted_by() -> Option<&'static str> {
    match INTERRUPTED_BY.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGTERM => Some("SIGTERM"),
        _ => Some("SIGINT"),
    }
}

/// True once SIGINT/SIGTERM asked the running work to stop (and until a clean-up resets it).
pub fn aborting() -> bool {
    ABORT.load(Ordering::SeqCst)
}

/// The host variables passed through to steps: how this host reaches package registries. They
/// change where bytes come from, never which bytes (inputs are pinned by hash).
pub const PASS_THROUGH: [&str; 11] = [
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_CERT",
    "PIP_DEFAULT_TIMEOUT",
    "SSL_CERT_FILE",
];

pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The base environment of every step, hook and service: nothing from the caller but PATH's
/// standard value, a locale, and the registry settings above.
pub fn base_env(home: &Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        ("PATH".to_string(), SAFE_PATH.to_string()),
        ("HOME".to_string(), home.display().to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ]);
    for name in PASS_THROUGH {
        if let Ok(value) = std::env::var(name) {
            env.insert(name.to_string(), value);
        }
    }
    env
}

/// Runs `sh -ec command` under the supervisor, feeding every output line to `on_line`.
pub fn run_step(
    command: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    deadline: Instant,
    mut on_line: impl FnMut(&str) + Send,
) -> Result<StepEnd> {
    let (reader, writer) = std::io::pipe().ctx(|| "creating a pipe".into())?;
    let stdout = writer.try_clone().ctx(|| "creating a pipe".into())?;
    let mut child = spawn_supervised(command, cwd, env, stdout.into(), writer.into())?;
    std::thread::scope(|scope| {
        let lines = scope.spawn(move || {
            for line in BufReader::new(reader).split(b'\n') {
                let Ok(line) = line else { break };
                on_line(&String::from_utf8_lossy(&line));
            }
        });
        let end = wait_supervised(&mut child, deadline);
        let _ = lines.join();
        end
    })
}

/// What a command printed, each stream apart and cut at the size asked for.
#[derive(Debug, Default)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `sh -ec command` under the supervisor like [`run_step`], keeping stdout and stderr
/// apart, the first `max` bytes of each (the rest is read and dropped).
pub fn run_captured(
    command: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    deadline: Instant,
    max: usize,
) -> Result<(StepEnd, Captured)> {
    let (out_reader, out_writer) = std::io::pipe().ctx(|| "creating a pipe".into())?;
    let (err_reader, err_writer) = std::io::pipe().ctx(|| "creating a pipe".into())?;
    let mut child = spawn_supervised(command, cwd, env, out_writer.into(), err_writer.into())?;
    let keep = |mut reader: std::io::PipeReader| {
        let mut kept = Vec::new();
        let mut buffer = [0u8; 8192];
        while let Ok(n @ 1..) = reader.read(&mut buffer) {
            let room = max.saturating_sub(kept.len());
            kept.extend_from_slice(&buffer[..n.min(room)]);
        }
        kept
    };
    std::thread::scope(|scope| {
        let stdout = scope.spawn(|| keep(out_reader));
        let stderr = scope.spawn(|| keep(err_reader));
        let end = wait_supervised(&mut child, deadline)?;
        let captured = Captured {
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        };
        Ok((end, captured))
    })
}

/// This running envbuild, to start again as a helper (`supervise`, `libvirt-guard`). Not
/// `current_exe()`: that is the path the binary was started from, and once the binary there is
/// replaced (a rebuild, a package upgrade during a long run) or removed it names another program
/// or none (`envbuild (deleted)`). /proc/self/exe is the running binary's own inode whatever
/// happened to its path; the helper keeps this process's argv[0], so `ps` still reads `envbuild`.
pub fn own_command() -> Command {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(
        std::env::args_os()
            .next()
            .unwrap_or_else(|| "envbuild".into()),
    );
    cmd
}

/// `envbuild supervise -- /bin/sh -ec COMMAND` with the environment `env` and nothing else.
fn spawn_supervised(
    command: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<std::process::Child> {
    own_command()
        .args(["supervise", "--", "/bin/sh", "-ec", command])
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .env(SUPERVISOR_PARENT, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .ctx(|| format!("starting a step (envbuild supervise) in {}", cwd.display()))
}

/// Waits for a supervised step until it ends, `deadline` passes or [`ABORT`] is raised (then
/// the supervisor is told to kill the step's process group).
fn wait_supervised(child: &mut std::process::Child, deadline: Instant) -> Result<StepEnd> {
    loop {
        if let Some(status) = child.try_wait().ctx(|| "waiting for a step".into())? {
            return Ok(StepEnd::Exited(status.code().unwrap_or(128)));
        }
        let aborted = ABORT.load(Ordering::SeqCst);
        if aborted || Instant::now() >= deadline {
            // SAFETY: signalling our own child, which kills its step's process group.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            return Ok(if aborted {
                StepEnd::Aborted
            } else {
                StepEnd::TimedOut
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

static SUPERVISED_GROUP: AtomicI32 = AtomicI32::new(0);

/// Tells the supervisor which process it must not outlive (an orphan is not always re-parented to
/// pid 1: a subreaper may adopt it).
const SUPERVISOR_PARENT: &str = "ENVBUILD_SUPERVISOR_PARENT";

extern "C" fn kill_group_and_exit(_signal: libc::c_int) {
    let group = SUPERVISED_GROUP.load(Ordering::SeqCst);
    // SAFETY: kill and _exit are async-signal-safe.
    unsafe {
        if group > 0 {
            libc::kill(-group, libc::SIGKILL);
        }
        libc::_exit(143);
    }
}

/// The hidden `envbuild supervise -- CMD...`: see the module doc. Returns the exit code.
pub fn supervise(command: &[String]) -> i32 {
    let parent: Option<i32> = std::env::var(SUPERVISOR_PARENT)
        .ok()
        .and_then(|p| p.parse().ok());
    // SAFETY: prctl/getppid/sigprocmask/signal with valid arguments; the handler only makes
    // async-signal-safe calls. Signals stay blocked until the step's group is recorded, so a
    // signal that arrives while the step starts still takes the step down.
    let mut blocked: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut blocked);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut blocked, signal);
            libc::signal(
                signal,
                kill_group_and_exit as *const () as libc::sighandler_t,
            );
        }
        libc::sigprocmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if parent.is_some_and(|p| libc::getppid() != p) {
            return 143;
        }
    }
    let Some((program, args)) = command.split_first() else {
        return 2;
    };
    // std resets the signal mask in the child, so the step itself runs with nothing blocked.
    let spawned = Command::new(program)
        .args(args)
        .env_remove(SUPERVISOR_PARENT)
        .process_group(0)
        .spawn();
    if let Ok(child) = &spawned {
        SUPERVISED_GROUP.store(child.id() as i32, Ordering::SeqCst);
    }
    // SAFETY: unblocking what was blocked above; a pending signal is delivered now.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &blocked, std::ptr::null_mut()) };
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("envbuild supervise: cannot start {program}: {e}");
            return 127;
        }
    };
    let group = child.id() as i32;
    let code = match child.wait() {
        Ok(status) => status.code().unwrap_or(128),
        Err(_) => 128,
    };
    // Whatever the step left running in its group goes with it.
    // SAFETY: signalling the process group we created.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    code
}

/// Starts a long-running service in its own session, output appended to `log`; returns its pid
/// (also its process group id).
pub fn spawn_service(
    command: &str,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    log: &Path,
) -> Result<i32> {
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .ctx(|| format!("opening {}", log.display()))?;
    let _ = writeln!(
        out,
        "--- envbuild: starting at {}",
        crate::clock::now_rfc3339()
    );
    let err = out
        .try_clone()
        .ctx(|| format!("opening {}", log.display()))?;
    let mut command_line = Command::new("/bin/sh");
    command_line
        .args(["-c", command])
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and runs in the forked child before exec.
    unsafe {
        command_line.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command_line
        .spawn()
        .ctx(|| format!("starting `{command}`"))?;
    Ok(child.id() as i32)
}

/// True while any process of group `pgid` exists.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// Sends `signal` to the group, waits up to `grace` for it to end, then SIGKILLs what remains.
/// Returns true if the group had to be killed.
pub fn stop_group(pgid: i32, signal: i32, grace: Duration) -> bool {
    if !group_alive(pgid) {
        return false;
    }
    // SAFETY: signalling a process group we started.
    unsafe { libc::kill(-pgid, signal) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap(pgid);
        if !group_alive(pgid) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    for _ in 0..100 {
        reap(pgid);
        if !group_alive(pgid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// How a service's first process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// It is gone, but was not our child (started by another envbuild): no status to read.
    Unknown,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => write!(
                f,
                "was killed by signal {signal} ({})",
                signal_name(*signal)
            ),
            Exit::Unknown => write!(f, "exited"),
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Whether process `pid` (a service's first process) has ended, and how. A child of ours is
/// reaped here: unreaped, it would stay a zombie whose process group still "exists".
pub fn exited(pid: i32) -> Option<Exit> {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on one pid; `status` is a valid out-pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if rc == pid {
        return Some(if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        });
    }
    // 0: our child, still running. -1 (ECHILD): not our child; alive or not, the kernel says.
    (rc != 0 && !process_alive(pid)).then_some(Exit::Unknown)
}

/// Reaps the first process of group `pgid` if it is an exited child of ours (a service this
/// envbuild started), so that a zombie does not keep its group "alive". Only that one pid:
/// reaping any child would steal the status of a step or a check another thread waits for.
fn reap(pgid: i32) {
    // SAFETY: waitpid with WNOHANG on one pid; no memory is shared.
    unsafe { libc::waitpid(pgid, std::ptr::null_mut(), libc::WNOHANG) };
}

/// Runs a short host command (a requirement probe, a readiness check) to completion, quietly.
pub fn probe(command: &str, cwd: &Path, env: &BTreeMap<String, String>) -> bool {
    Command::new("/bin/sh")
        .args(["-c", command])
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Finds `program` on the standard PATH (including the sbin folders a non-login shell may lack).
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| program.into());
    }
    SAFE_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// True while a process with this pid exists (possibly owned by another user).
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}
