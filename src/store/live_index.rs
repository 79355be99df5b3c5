//! What a machine folder held when envbuild last made it equal to an entry (a restore or a
//! snapshot): the entry's key, and each file's stat with its sha256, like git's index.
//!
//! A later restore or snapshot of the same folder trusts a file whose stat (device, inode,
//! size, mtime, ctime) is still the recorded one: it has not been written since, so its content
//! is the recorded sha256 and need not be read. Racy files (changed within two seconds of the
//! recording, see `Stat::settled`) are not recorded. The index is only a cache: a missing,
//! foreign or garbled one is an empty one, and a stale line only fails to match.
//!
//! One line per file, `dev ino size mtime_ns ctime_ns sha256 path`, after a header naming the
//! format and the entry key: 114,000 files load in a few tens of milliseconds, where JSON took
//! a tenth of a second more.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use crate::key::fingerprint::Stat;

use super::path_map::PathMap;

const HEADER: &str = "envbuild live index 1";

#[derive(Debug, Default)]
pub struct LiveIndex {
    /// The key of the entry the folder equalled when the index was written.
    pub key: String,
    files: PathMap<String, (Stat, String)>,
}

impl LiveIndex {
    /// The index at `file`; empty when there is none or it cannot be read.
    pub fn load(file: &Path) -> LiveIndex {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| parse(&text))
            .unwrap_or_default()
    }

    /// The key of the entry the folder equalled, from the index's first line alone (empty
    /// when there is no readable index).
    pub fn key_of(file: &Path) -> String {
        use std::io::BufRead;
        let mut first = String::new();
        let read = std::fs::File::open(file)
            .map(std::io::BufReader::new)
            .and_then(|mut reader| reader.read_line(&mut first));
        match read {
            Ok(_) => first
                .trim_end_matches('\n')
                .strip_prefix(HEADER)
                .and_then(|rest| rest.strip_prefix(' '))
                .unwrap_or_default()
                .to_string(),
            Err(_) => String::new(),
        }
    }

    /// What the index knows of the file at `path` (relative to the folder), whose metadata is
    /// `meta` now.
    pub fn lookup(&self, path: &str, meta: &std::fs::Metadata) -> Recorded<'_> {
        match self.files.get(path) {
            None => Recorded::Unknown,
            Some((stat, sha256)) if *stat == Stat::of(meta) => Recorded::Unchanged(sha256),
            Some(_) => Recorded::Changed,
        }
    }

    /// The sha256 of the file at `path` if it was recorded and has not changed since.
    pub fn sha256(&self, path: &str, meta: &std::fs::Metadata) -> Option<&str> {
        match self.lookup(path, meta) {
            Recorded::Unchanged(sha256) => Some(sha256),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.files.len()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Recorded<'a> {
    /// Not written since it was recorded with this sha256.
    Unchanged(&'a str),
    /// Written since (even if its mtime was set back).
    Changed,
    /// Not recorded (racy then, or no index).
    Unknown,
}

fn parse(text: &str) -> Option<LiveIndex> {
    let mut lines = text.lines();
    let key = lines.next()?.strip_prefix(HEADER)?.strip_prefix(' ')?;
    let mut files = PathMap::default();
    for line in lines {
        let mut fields = line.splitn(7, ' ');
        let mut number = || fields.next()?.parse::<i128>().ok();
        let (dev, ino, size, mtime_ns, ctime_ns) =
            (number()?, number()?, number()?, number()?, number()?);
        let (sha256, path) = (fields.next()?, fields.next()?);
        let stat = Stat {
            dev: u64::try_from(dev).ok()?,
            ino: u64::try_from(ino).ok()?,
            size: u64::try_from(size).ok()?,
            mtime_ns,
            ctime_ns,
        };
        files.insert(path.to_string(), (stat, sha256.to_string()));
    }
    Some(LiveIndex {
        key: key.to_string(),
        files,
    })
}

/// Gathers the lines of a new index as files are written or found unchanged.
pub struct IndexWriter {
    text: String,
    now: SystemTime,
}

impl IndexWriter {
    pub fn new(key: &str) -> IndexWriter {
        IndexWriter {
            text: format!("{HEADER} {key}\n"),
            now: SystemTime::now(),
        }
    }

    /// Records the file at `path` (relative) with the sha256 its content has, unless it is racy
    /// or its name cannot be written on one line.
    pub fn record(&mut self, path: &str, meta: &std::fs::Metadata, sha256: &str) {
        let stat = Stat::of(meta);
        if !stat.settled(self.now) || path.contains('\n') {
            return;
        }
        use std::fmt::Write as _;
        let _ = writeln!(
            self.text,
            "{} {} {} {} {} {sha256} {path}",
            stat.dev, stat.ino, stat.size, stat.mtime_ns, stat.ctime_ns
        );
    }

    /// Replaces the index at `file` (atomically; a failure only costs a slower next restore).
    pub fn save(self, file: &Path) {
        let Some(dir) = file.parent() else { return };
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir)
            && tmp.write_all(self.text.as_bytes()).is_ok()
        {
            let _ = tmp.persist(file);
        }
    }
}

/// Removes the index at `file`: the folder it describes is being rewritten.
pub fn forget(file: &Path) {
    let _ = std::fs::remove_file(file);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn aged(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn a_file_unchanged_since_it_was_recorded_is_known_and_a_rewritten_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b c"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two").unwrap();
        // ctime cannot be set back: wait out the racy window once for both files.
        std::thread::sleep(Duration::from_millis(2100));
        let mut writer = IndexWriter::new("k1");
        writer.record("a", &std::fs::metadata(&a).unwrap(), "sha-a");
        writer.record("b c", &std::fs::metadata(&b).unwrap(), "sha-b");
        let file = dir.path().join("index");
        writer.save(&file);

        let index = LiveIndex::load(&file);
        assert_eq!(index.key, "k1");
        assert_eq!(LiveIndex::key_of(&file), "k1");
        assert_eq!(LiveIndex::key_of(&dir.path().join("none")), "");
        assert_eq!(index.len(), 2);
        assert_eq!(
            index.sha256("a", &std::fs::metadata(&a).unwrap()),
            Some("sha-a")
        );
        assert_eq!(
            index.sha256("b c", &std::fs::metadata(&b).unwrap()),
            Some("sha-b")
        );
        // Same size, mtime set back: the ctime moved, so it is not trusted.
        std::fs::write(&b, "TWO").unwrap();
        aged(&b);
        let b_now = std::fs::metadata(&b).unwrap();
        assert_eq!(index.lookup("b c", &b_now), Recorded::Changed);
        assert_eq!(index.lookup("missing", &b_now), Recorded::Unknown);
    }

    #[test]
    fn a_racy_file_is_not_recorded_and_a_garbled_index_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "one").unwrap();
        let mut writer = IndexWriter::new("k1");
        writer.record("a", &std::fs::metadata(&a).unwrap(), "sha-a");
        let file = dir.path().join("index");
        writer.save(&file);
        assert_eq!(LiveIndex::load(&file).len(), 0);
        assert_eq!(LiveIndex::load(&file).key, "k1");

        std::fs::write(&file, "envbuild live index 1 k1\n1 2 three 4 5 sha a\n").unwrap();
        assert_eq!(LiveIndex::load(&file).key, "");
        std::fs::write(&file, "something else\n").unwrap();
        assert_eq!(LiveIndex::load(&file).key, "");
        assert_eq!(LiveIndex::load(&dir.path().join("none")).key, "");
    }
}
