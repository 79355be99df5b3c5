//! A stage's log.txt: what its steps printed, capped. The first `HEAD` bytes and the last `TAIL`
//! bytes are kept, each cut at a line end, with one marker line between them naming what was
//! cut, so a step printing 200 MB stores about 2 MiB:
//!
//! ```text
//! [envbuild: 188.7 MiB (1979031 lines) of output cut here; this log keeps the first 1 MiB and the last 1 MiB]
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{IoContext, Result};

pub const HEAD: usize = 1 << 20;
pub const TAIL: usize = 1 << 20;

pub struct StageLog {
    file: BufWriter<File>,
    head_left: usize,
    /// The head ended at a line end (or is empty).
    head_at_line_end: bool,
    head_closed: bool,
    /// The newest output once the head is full; at most `2 * tail_max` bytes before trimming.
    tail: Vec<u8>,
    tail_max: usize,
    cut_bytes: u64,
    cut_lines: u64,
    /// The last byte cut was a line end: the tail starts at a line.
    cut_at_line_end: bool,
    limits: (usize, usize),
}

impl StageLog {
    pub fn create(path: &Path) -> Result<StageLog> {
        StageLog::with_limits(path, HEAD, TAIL)
    }

    pub fn with_limits(path: &Path, head: usize, tail: usize) -> Result<StageLog> {
        let file = File::create(path).ctx(|| format!("creating {}", path.display()))?;
        Ok(StageLog {
            file: BufWriter::new(file),
            head_left: head,
            head_at_line_end: true,
            head_closed: false,
            tail: Vec::new(),
            tail_max: tail,
            cut_bytes: 0,
            cut_lines: 0,
            cut_at_line_end: true,
            limits: (head, tail),
        })
    }

    /// Drops the oldest tail bytes beyond `keep`, counting them as cut.
    fn cut(&mut self, keep: usize) {
        let excess = self.tail.len().saturating_sub(keep);
        if excess == 0 {
            return;
        }
        let cut = &self.tail[..excess];
        self.cut_bytes += excess as u64;
        self.cut_lines += cut.iter().filter(|b| **b == b'\n').count() as u64;
        self.cut_at_line_end = cut.last() == Some(&b'\n');
        self.tail.drain(..excess);
    }

    /// Writes the marker and the tail; the log is complete. Writing more afterwards appends.
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.cut(self.tail_max);
        if self.cut_bytes > 0 && !self.cut_at_line_end {
            // Start the tail at a whole line.
            let line_end = self.tail.iter().position(|b| *b == b'\n');
            self.cut(self.tail.len() - line_end.map_or(self.tail.len(), |i| i + 1));
        }
        if self.cut_bytes > 0 {
            if !self.head_at_line_end {
                self.file.write_all(b"\n")?;
            }
            writeln!(
                self.file,
                "[envbuild: {} ({} line{}) of output cut here; this log keeps the first {} and the last {}]",
                human(self.cut_bytes),
                self.cut_lines,
                if self.cut_lines == 1 { "" } else { "s" },
                human(self.limits.0 as u64),
                human(self.limits.1 as u64),
            )?;
            self.cut_bytes = 0;
            self.cut_lines = 0;
        }
        self.file.write_all(&self.tail)?;
        self.tail.clear();
        self.file.flush()
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

impl Write for StageLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        if !self.head_closed {
            let fits = rest.len().min(self.head_left);
            // The head ends at a line end when the output has one in reach.
            let take = if fits == rest.len() {
                fits
            } else {
                match rest[..fits].iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None if self.head_at_line_end && self.head_left < self.limits.0 => 0,
                    None => fits,
                }
            };
            self.file.write_all(&rest[..take])?;
            // On disk at once: a stage's log is read while it runs (`tail -f`, a hung step).
            self.file.flush()?;
            self.head_left -= take;
            if take > 0 {
                self.head_at_line_end = rest[take - 1] == b'\n';
            }
            rest = &rest[take..];
            if rest.is_empty() {
                return Ok(buf.len());
            }
            self.head_closed = true;
        }
        self.tail.extend_from_slice(rest);
        if self.tail.len() > 2 * self.tail_max {
            self.cut(self.tail_max);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(head: usize, tail: usize, lines: impl IntoIterator<Item = String>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.txt");
        let mut log = StageLog::with_limits(&path, head, tail).unwrap();
        for line in lines {
            writeln!(log, "{line}").unwrap();
        }
        log.finish().unwrap();
        std::fs::read_to_string(&path).unwrap()
    }

    #[test]
    fn what_a_running_step_printed_is_on_disk_before_the_stage_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.txt");
        let mut log = StageLog::create(&path).unwrap();
        writeln!(log, "$ sleep 3600").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "$ sleep 3600\n");
    }

    #[test]
    fn a_short_log_is_kept_whole() {
        let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let text = logged(1000, 1000, lines.clone());
        assert_eq!(text, lines.join("\n") + "\n");
    }

    #[test]
    fn a_long_log_keeps_whole_lines_of_head_and_tail_and_says_what_was_cut() {
        // 10000 lines of 10 bytes ("line 0042\n"): 100000 bytes.
        let text = logged(1005, 2000, (0..10000).map(|i| format!("line {i:04}")));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "line 0000");
        // 1005 bytes hold 100 whole lines; the tail 200.
        assert_eq!(lines[99], "line 0099");
        assert_eq!(
            lines[100],
            "[envbuild: 97000 bytes (9700 lines) of output cut here; this log keeps the first 1005 bytes and the last 2000 bytes]"
        );
        assert_eq!(lines[101], "line 9800");
        assert_eq!(*lines.last().unwrap(), "line 9999");
        assert_eq!(lines.len(), 100 + 1 + 200);
    }

    #[test]
    fn one_giant_line_is_cut_inside_and_the_marker_has_a_line_of_its_own() {
        let text = logged(100, 100, ["x".repeat(10_000), "the end".to_string()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "x".repeat(100));
        assert!(
            lines[1].starts_with("[envbuild: 9901 bytes (1 line) of output cut here"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "the end");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn the_marker_names_sizes_people_read() {
        assert_eq!(human(1 << 20), "1 MiB");
        assert_eq!(human(207_000_000), "197.4 MiB");
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(12), "12 bytes");
    }
}
