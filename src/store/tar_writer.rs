//! The tar stream that `export` and `cache push` write: GNU headers (built with the `tar` crate's
//! `Header`, long names as GNU `L`/`K` members, as `tar::Builder` writes them), and file
//! contents read in large pieces straight into the sink's buffer. (`tar::Builder` copies every
//! byte through an 8 KiB buffer of its own: one more copy and 128 reads per MiB.)
//!
//! Folders are walked in name order, so one entry always packs to the same stream. Sparse
//! files are written in full, as plain members (their holes as zeros, which compress to
//! nothing): every envbuild can import the stream, and the importer (and `cache export`'s file,
//! through `copy::HoleWriter`) turns whole blocks of zeros back into holes.

use std::fs::{File, Metadata};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::{EntryType, Header, HeaderMode};

/// Where the stream goes: bytes written, or read from a file straight into its buffer.
pub trait Sink: Write {
    /// Appends at most `max` bytes read from `file` to the stream; returns how many (0: the
    /// file ended).
    fn append_from(&mut self, file: &mut File, max: usize) -> std::io::Result<usize>;
}

const BLOCK: usize = 512;

pub struct TarWriter<S: Sink> {
    sink: S,
}

impl<S: Sink> TarWriter<S> {
    pub fn new(sink: S) -> Self {
        TarWriter { sink }
    }

    /// Appends the folder `dir` and everything under it, named `name/...` in the archive.
    /// Links are stored as links, never followed.
    pub fn append_tree(&mut self, name: &Path, dir: &Path) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(dir)?;
        self.append(name, dir, &meta)
    }

    fn append(&mut self, name: &Path, path: &Path, meta: &Metadata) -> std::io::Result<()> {
        let kind = meta.file_type();
        let mut header = Header::new_gnu();
        self.set_path(&mut header, name)?;
        header.set_metadata_in_mode(meta, HeaderMode::Complete);
        if kind.is_symlink() {
            let target = std::fs::read_link(path)?;
            self.set_link_name(&mut header, &target)?;
        } else if !kind.is_dir() && !kind.is_file() {
            return Err(std::io::Error::other(format!(
                "{} is neither a file, a folder nor a link",
                path.display()
            )));
        }
        header.set_cksum();
        self.sink.write_all(header.as_bytes())?;
        if kind.is_file() {
            self.append_contents(path, meta.len())?;
        } else if kind.is_dir() {
            let mut children: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
            children.sort_by_key(|c| c.file_name());
            for child in children {
                let meta = std::fs::symlink_metadata(child.path())?;
                self.append(&name.join(child.file_name()), &child.path(), &meta)?;
            }
        }
        Ok(())
    }

    /// Exactly `size` bytes of the file (as its header says), then the padding to a block.
    fn append_contents(&mut self, path: &Path, size: u64) -> std::io::Result<()> {
        let mut file = File::open(path)?;
        let mut left = size;
        while left > 0 {
            let max = usize::try_from(left).unwrap_or(usize::MAX);
            match self.sink.append_from(&mut file, max) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} shrank while it was archived", path.display()),
                    ));
                }
                Ok(n) => left -= n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pad(size)
    }

    fn pad(&mut self, size: u64) -> std::io::Result<()> {
        let rest = (size % BLOCK as u64) as usize;
        if rest > 0 {
            self.sink.write_all(&[0; BLOCK][rest..])?;
        }
        Ok(())
    }

    /// A name too long for the header goes first as a GNU long-name member (type `L`).
    fn set_path(&mut self, header: &mut Header, name: &Path) -> std::io::Result<()> {
        let bytes = name.as_os_str().as_bytes();
        if bytes.len() < header.as_old().name.len() {
            return header.set_path(name);
        }
        // Readers take the long name; the header keeps the first bytes of it.
        let field = &mut header.as_gnu_mut().expect("a GNU header").name;
        let max = field.len();
        field.copy_from_slice(&bytes[..max]);
        self.long_name(b'L', bytes)
    }

    /// A link target too long for the header goes first as a GNU long-link member (type `K`).
    fn set_link_name(&mut self, header: &mut Header, target: &Path) -> std::io::Result<()> {
        let bytes = target.as_os_str().as_bytes();
        if bytes.len() < header.as_old().linkname.len() {
            return header.set_link_name(target);
        }
        self.long_name(b'K', bytes)
    }

    fn long_name(&mut self, kind: u8, name: &[u8]) -> std::io::Result<()> {
        let mut header = Header::new_gnu();
        header.as_gnu_mut().expect("a GNU header").name[..13].copy_from_slice(b"././@LongLink");
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let size = name.len() as u64 + 1; // NUL-terminated
        header.set_size(size);
        header.set_entry_type(EntryType::new(kind));
        header.set_cksum();
        self.sink.write_all(header.as_bytes())?;
        self.sink.write_all(name)?;
        self.sink.write_all(&[0])?;
        self.pad(size)
    }

    /// Ends the archive (two zero blocks), flushes the sink and returns it.
    pub fn finish(mut self) -> std::io::Result<S> {
        self.sink.write_all(&[0; 2 * BLOCK])?;
        self.sink.flush()?;
        Ok(self.sink)
    }
}

/// A `Sink` over any writer: file contents go through a buffer of 1 MiB (one copy, as with a
/// `BufWriter`), in reads of up to 1 MiB.
pub struct Buffered<W: Write> {
    inner: W,
    buffer: Vec<u8>,
    filled: usize,
}

const BUFFER: usize = 1 << 20;

impl<W: Write> Buffered<W> {
    pub fn new(inner: W) -> Self {
        Buffered {
            inner,
            buffer: vec![0; BUFFER],
            filled: 0,
        }
    }

    fn drain(&mut self) -> std::io::Result<()> {
        self.inner.write_all(&self.buffer[..self.filled])?;
        self.filled = 0;
        Ok(())
    }
}

impl<W: Write> Write for Buffered<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.filled == BUFFER {
            self.drain()?;
        }
        let n = buf.len().min(BUFFER - self.filled);
        self.buffer[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
        self.filled += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

impl<W: Write> Sink for Buffered<W> {
    fn append_from(&mut self, file: &mut File, max: usize) -> std::io::Result<usize> {
        if self.filled == BUFFER {
            self.drain()?;
        }
        let end = BUFFER.min(self.filled.saturating_add(max));
        let n = file.read(&mut self.buffer[self.filled..end])?;
        self.filled += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `tar` crate reads back: (path, type, size, link target, contents).
    type Member = (String, EntryType, u64, Option<String>, Vec<u8>);

    fn members(archive: &[u8]) -> Vec<Member> {
        let mut archive = tar::Archive::new(archive);
        archive
            .entries()
            .unwrap()
            .map(|m| {
                let mut m = m.unwrap();
                let mut data = Vec::new();
                m.read_to_end(&mut data).unwrap();
                (
                    m.path().unwrap().display().to_string(),
                    m.header().entry_type(),
                    m.header().size().unwrap(),
                    m.link_name().unwrap().map(|l| l.display().to_string()),
                    data,
                )
            })
            .collect()
    }

    #[test]
    fn the_tar_crate_reads_back_files_folders_links_and_long_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("e");
        let deep = root.join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let big: Vec<u8> = (0..BUFFER * 2 + 777).map(|i| (i % 253) as u8).collect();
        std::fs::write(deep.join("big.bin"), &big).unwrap();
        std::fs::write(root.join("small.txt"), b"hello").unwrap();
        std::os::unix::fs::symlink("small.txt", root.join("link")).unwrap();
        std::os::unix::fs::symlink("x".repeat(150), root.join("long-link")).unwrap();
        // Sparse: written in full, as a plain file.
        let sparse = std::fs::File::create(root.join("sparse.img")).unwrap();
        sparse.set_len(3 * 4096 * 1024).unwrap();

        let mut writer = TarWriter::new(Buffered::new(Vec::new()));
        writer.append_tree(Path::new("entry"), &root).unwrap();
        let archive = writer.finish().unwrap().inner;
        assert_eq!(archive.len() % BLOCK, 0);

        let got = members(&archive);
        let deep_name = format!("entry/{}/{}", "a".repeat(60), "b".repeat(60));
        let names: Vec<(&str, EntryType)> = got.iter().map(|m| (m.0.as_str(), m.1)).collect();
        assert_eq!(
            names,
            [
                ("entry", EntryType::Directory),
                (
                    &format!("entry/{}", "a".repeat(60))[..],
                    EntryType::Directory
                ),
                (&deep_name[..], EntryType::Directory),
                (&format!("{deep_name}/big.bin")[..], EntryType::Regular),
                ("entry/link", EntryType::Symlink),
                ("entry/long-link", EntryType::Symlink),
                ("entry/small.txt", EntryType::Regular),
                ("entry/sparse.img", EntryType::Regular),
            ]
        );
        assert_eq!(got[3].4, big);
        assert_eq!(got[4].3.as_deref(), Some("small.txt"));
        assert_eq!(got[5].3, Some("x".repeat(150)));
        assert_eq!(got[6].4, b"hello");
        assert_eq!(
            (got[7].2, got[7].4.iter().all(|b| *b == 0)),
            (3 * 4096 * 1024, true)
        );
    }
}
