//! Progress of a build: on a terminal, a live line per stage (state, elapsed time, the last line
//! of its output); otherwise plain lines, one when a stage starts and one when it ends.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    quiet: bool,
}

pub struct StageProgress {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let live = !quiet
            && std::io::stderr().is_terminal()
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
        let multi = live.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi, quiet }
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
        if bar.is_none() && !self.quiet {
            eprintln!("==> {label}: {what}");
        }
        StageProgress {
            bar,
            label,
            started: Instant::now(),
            quiet: self.quiet,
        }
    }
}

impl StageProgress {
    pub fn line(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.chars().take(120).collect::<String>());
        }
    }

    pub fn finish(self, outcome: &str) {
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
    fn plain_transfer_lines_come_every_ten_seconds_with_bytes_and_rate() {
        let progress = Progress {
            multi: None,
            quiet: false,
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
