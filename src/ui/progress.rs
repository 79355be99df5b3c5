//! Progress of a build or a flow: on a terminal, a live line per stage or phase (state, elapsed
//! time, the last line of its output); otherwise (a CI console) a line when it starts, a
//! heartbeat every `heartbeat` while it runs (its time, how much it printed, its last line and
//! how long ago that came: a hung step shows as a line that stops changing), and one when it
//! ends. Output lines themselves go to the logs, not the console: pip alone prints thousands.

use std::io::IsTerminal;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    quiet: bool,
    heartbeat: Duration,
}

pub struct StageProgress {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    quiet: bool,
    beat: Option<Heartbeat>,
}

/// What the heartbeat thread of a stage reports, and how it is told to stop.
#[derive(Default)]
struct Output {
    lines: u64,
    last: Option<(String, Instant)>,
    done: bool,
}

struct Heartbeat {
    output: Arc<(Mutex<Output>, Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

/// The longest last line a heartbeat shows.
const LINE_CHARS: usize = 160;

impl Progress {
    pub fn new(quiet: bool, heartbeat: Duration) -> Self {
        let live = !quiet
            && std::io::stderr().is_terminal()
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
        let multi = live.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            multi,
            quiet,
            heartbeat,
        }
    }

    /// A message that is not about one stage (waiting for a lock); `-q` silences it.
    pub fn note(&self, text: &str) {
        if !self.quiet {
            self.print(text);
        }
    }

    /// Something a person must hear even with `-q` (a quarantined entry, a remote that could
    /// not be reached): printed as "warning: TEXT".
    pub fn warn(&self, text: &str) {
        self.print(&format!("warning: {text}"));
    }

    fn print(&self, text: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    pub fn stage(&self, label: String, what: &str) -> StageProgress {
        self.start(label, what, true)
    }

    /// Like [`Progress::stage`], for work that reports its own progress line by line (a flow's
    /// `up` phase: the stages it builds and the services it starts): no heartbeat of its own,
    /// which would only say it printed nothing.
    pub fn step(&self, label: String, what: &str) -> StageProgress {
        self.start(label, what, false)
    }

    fn start(&self, label: String, what: &str, heartbeat: bool) -> StageProgress {
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {wide_msg}")
                    .expect("template is valid"),
            );
            bar.set_prefix(label.clone());
            bar.set_message(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let started = Instant::now();
        let plain = bar.is_none() && !self.quiet;
        if plain {
            eprintln!("==> {label}: {what}");
        }
        StageProgress {
            beat: (plain && heartbeat)
                .then(|| Heartbeat::start(label.clone(), started, self.heartbeat)),
            bar,
            label,
            started,
            quiet: self.quiet,
        }
    }
}

impl Heartbeat {
    fn start(label: String, started: Instant, every: Duration) -> Heartbeat {
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let shared = Arc::clone(&output);
        let thread = std::thread::spawn(move || {
            let (lock, wake) = &*shared;
            let mut next = started + every;
            let mut output = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let now = Instant::now();
                if output.done {
                    return;
                }
                if now >= next {
                    eprintln!("{}", beat_line(&label, &output, started, now));
                    next += every;
                    continue;
                }
                output = wake
                    .wait_timeout(output, next - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        });
        Heartbeat { output, thread }
    }

    fn line(&self, text: &str) {
        let mut output = self.output.0.lock().unwrap_or_else(|e| e.into_inner());
        output.lines += 1;
        if !text.trim().is_empty() {
            output.last = Some((text.to_string(), Instant::now()));
        }
    }

    fn stop(self) {
        self.output.0.lock().unwrap_or_else(|e| e.into_inner()).done = true;
        self.output.1.notify_all();
        let _ = self.thread.join();
    }
}

/// `text` without terminal escape sequences (colours) and control characters.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// One heartbeat: `==> LABEL: running 1m 30s, 812 lines; last (2s ago): TEXT`.
fn beat_line(label: &str, output: &Output, started: Instant, now: Instant) -> String {
    let secs = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    let last = match &output.last {
        None => "no output yet".to_string(),
        Some((text, at)) => {
            // A progress bar's carriage returns: its latest state is after the last one.
            let text = text
                .rsplit('\r')
                .find(|t| !t.trim().is_empty())
                .unwrap_or("");
            let text: String = printable(text).trim().chars().take(LINE_CHARS).collect();
            format!("last ({} ago): {text}", secs(now.duration_since(*at)))
        }
    };
    format!(
        "==> {label}: running {}, {} lines; {last}",
        secs(now.duration_since(started)),
        output.lines
    )
}

impl StageProgress {
    /// One line of the stage's output.
    pub fn line(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.chars().take(120).collect::<String>());
        }
        if let Some(beat) = &self.beat {
            beat.line(text);
        }
    }

    pub fn finish(mut self, outcome: &str) {
        if let Some(beat) = self.beat.take() {
            beat.stop();
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let text = format!("{}: {outcome} ({elapsed:.1}s)", self.label);
        match self.bar {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("  {prefix:.bold} {wide_msg}")
                        .expect("template is valid"),
                );
                bar.finish_with_message(format!("{outcome} ({elapsed:.1}s)"));
            }
            None if !self.quiet => eprintln!("==> {text}"),
            None => {}
        }
    }
}

/// Progress of one transfer in bytes: a bar on a terminal; otherwise a line at the start, one
/// every `LINE_EVERY` (bytes done, total, rate) and one at the end.
pub struct ByteProgress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    started: Instant,
    quiet: bool,
    last_line: std::sync::Mutex<Instant>,
}

/// How often a transfer prints a line when not on a terminal (CI logs).
const LINE_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    pub fn bytes(&self, label: String, total: u64) -> ByteProgress {
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar
        });
        if bar.is_none() && !self.quiet {
            eprintln!("==> {label}: {:.1} MiB", total as f64 / MIB);
        }
        let started = Instant::now();
        ByteProgress {
            bar,
            label,
            total,
            started,
            quiet: self.quiet,
            last_line: std::sync::Mutex::new(started),
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

impl ByteProgress {
    pub fn set(&self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.quiet => {}
            None => {
                if let Some(line) = self.line_due(done, Instant::now()) {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// The plain line to print at `now`, if the last one is `LINE_EVERY` old.
    fn line_due(&self, done: u64, now: Instant) -> Option<String> {
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(*last) < LINE_EVERY {
            return None;
        }
        *last = now;
        let elapsed = now.duration_since(self.started).as_secs_f64();
        // A push's total is an estimate (the artifact's size, before packing).
        let total = self.total.max(done);
        Some(format!(
            "==> {}: {:.1} of {:.1} MiB ({:.0} %), {:.0} MiB/s",
            self.label,
            done as f64 / MIB,
            total as f64 / MIB,
            100.0 * done as f64 / total.max(1) as f64,
            done as f64 / MIB / elapsed.max(1e-3)
        ))
    }

    pub fn finish(self, outcome: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = self.total as f64 / MIB / elapsed.max(1e-3);
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.quiet => return,
            None => {}
        }
        if !self.quiet {
            eprintln!(
                "==> {}: {outcome} ({elapsed:.1}s, {rate:.0} MiB/s)",
                self.label
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_says_how_long_how_much_and_the_last_line_with_its_age() {
        let started = Instant::now();
        let mut output = Output::default();
        let at = |s| started + Duration::from_secs(s);
        assert_eq!(
            beat_line("e/m/s", &output, started, at(30)),
            "==> e/m/s: running 30s, 0 lines; no output yet"
        );
        output.lines = 812;
        output.last = Some(("  Downloading x.whl\r 10%\r 55% \u{1b}[0m\r".into(), at(20)));
        assert_eq!(
            beat_line("e/m/s", &output, started, at(90)),
            "==> e/m/s: running 1m 30s, 812 lines; last (1m 10s ago): 55%"
        );
        output.last = Some(("é".repeat(500), at(89)));
        let line = beat_line("e/m/s", &output, started, at(90));
        assert_eq!(line.chars().filter(|c| *c == 'é').count(), LINE_CHARS);
    }

    #[test]
    fn plain_transfer_lines_come_every_ten_seconds_with_bytes_and_rate() {
        let progress = Progress {
            multi: None,
            quiet: false,
            heartbeat: Duration::from_secs(30),
        };
        let bar = progress.bytes("push e".into(), 1024 * 1024 * 1024);
        let start = bar.started;
        assert_eq!(bar.line_due(1, start + Duration::from_secs(3)), None);
        assert_eq!(
            bar.line_due(512 * 1024 * 1024, start + Duration::from_secs(10)),
            Some("==> push e: 512.0 of 1024.0 MiB (50 %), 51 MiB/s".into())
        );
        assert_eq!(
            bar.line_due(600 << 20, start + Duration::from_secs(15)),
            None
        );
        assert!(
            bar.line_due(1 << 30, start + Duration::from_secs(20))
                .is_some_and(|l| l.contains("1024.0 of 1024.0 MiB (100 %)"))
        );
    }
}
