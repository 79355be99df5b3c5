//! File copies and digests that keep holes. A sparse file (a disk image made with `truncate`, a
//! preallocated database file) takes in the store and in a restored machine what its data
//! takes, not its length: only the data extents the file system reports (SEEK_DATA/SEEK_HOLE)
//! are read and written. A digest is always of the logical content: holes count as zeros.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

const BUFFER: usize = 1 << 20;
/// The unit a hole is made of when writing a stream (the page and block size of the common
/// Linux file systems): a whole block of zeros is skipped, never a part of one.
const HOLE_BLOCK: usize = 4096;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The data extents `(offset, length)` of `file` up to `len`, in order. A file system that does
/// not know holes reports the whole file as data.
fn extents(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let seek = |offset: u64, whence: i32| -> std::io::Result<Option<u64>> {
        // SAFETY: lseek on a descriptor we own; it only moves the file offset.
        let at = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
        if at >= 0 {
            return Ok(Some(at as u64));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENXIO) => Ok(None), // no data after `offset`
            _ => Err(err),
        }
    };
    let mut found = Vec::new();
    let mut at = 0;
    while at < len {
        let data = match seek(at, libc::SEEK_DATA) {
            Ok(Some(data)) => data.min(len),
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(vec![(0, len)]),
            Err(e) => return Err(e),
        };
        let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        if hole > data {
            found.push((data, hole - data));
        }
        at = hole.max(data + 1);
    }
    Ok(found)
}

fn hash_zeros(hasher: &mut Sha256, mut n: u64) {
    while n > 0 {
        let piece = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..piece]);
        n -= piece as u64;
    }
}

/// Reads the logical content of `from` extent by extent: `data` gets each piece of data at its
/// offset; the hasher sees holes as zeros. Returns the sha256 of the content.
fn each_piece(
    from: &Path,
    mut data: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<(String, u64)> {
    let input = File::open(from)?;
    let len = input.metadata()?.len();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; (len as usize).clamp(4096, BUFFER)];
    let mut done = 0;
    for (start, length) in extents(&input, len)? {
        hash_zeros(&mut hasher, start - done);
        let end = start + length;
        let mut at = start;
        while at < end {
            let want = buffer.len().min((end - at) as usize);
            let n = match input.read_at(&mut buffer[..want], at) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} shrank while it was read", from.display()),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buffer[..n]);
            data(at, &buffer[..n])?;
            at += n as u64;
        }
        done = end;
    }
    hash_zeros(&mut hasher, len - done);
    Ok((hex::encode(hasher.finalize()), len))
}

/// The sha256 of a file's content, reading only its data (holes are hashed as zeros).
pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(each_piece(path, |_, _| Ok(()))
        .ctx(|| format!("reading {}", path.display()))?
        .0)
}

/// Copies one file into the new file `to`, keeping its holes, with `mode` and `mtime`; returns
/// the sha256 of what was written. A failed copy removes `to`.
pub fn copy_hashing(
    from: &Path,
    to: &Path,
    mode: u32,
    mtime: Option<SystemTime>,
) -> Result<String> {
    let output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .ctx(|| format!("creating {}", to.display()))?;
    let written =
        each_piece(from, |at, piece| output.write_all_at(piece, at)).and_then(|(sha256, len)| {
            output.set_len(len)?; // a hole at the end
            output.set_permissions(std::fs::Permissions::from_mode(mode))?;
            if let Some(mtime) = mtime {
                output.set_modified(mtime)?;
            }
            Ok(sha256)
        });
    written
        .inspect_err(|_| {
            let _ = std::fs::remove_file(to);
        })
        .ctx(|| format!("copying {} to {}", from.display(), to.display()))
}

/// A writer into a new, empty file that leaves every whole block of zeros as a hole: what an
/// import or an export stream writes keeps the holes its files had (a stream carries them as
/// zeros). Writes of any size are gathered into blocks; `flush` writes the last piece and sets
/// the final length, so a hole at the end is kept too.
pub struct HoleWriter {
    file: File,
    /// Where `partial` starts in the file.
    at: u64,
    partial: Vec<u8>,
}

impl HoleWriter {
    pub fn new(file: File) -> Self {
        HoleWriter {
            file,
            at: 0,
            partial: Vec::with_capacity(HOLE_BLOCK),
        }
    }

    /// The file, complete.
    pub fn finish(mut self) -> std::io::Result<File> {
        self.flush()?;
        Ok(self.file)
    }

    /// Writes `data` at `self.at`, each run of blocks holding data in one call, zeros not at all.
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut run: Option<usize> = None;
        for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
            let start = i * HOLE_BLOCK;
            match (is_zero(block), run) {
                (true, Some(from)) => {
                    self.file
                        .write_all_at(&data[from..start], self.at + from as u64)?;
                    run = None;
                }
                (false, None) => run = Some(start),
                _ => {}
            }
        }
        if let Some(from) = run {
            self.file
                .write_all_at(&data[from..], self.at + from as u64)?;
        }
        self.at += data.len() as u64;
        Ok(())
    }
}

/// Compared with `ZEROS` (one memcmp), which is fast in a debug build too.
fn is_zero(block: &[u8]) -> bool {
    block == &ZEROS[..block.len()]
}

impl Write for HoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        if !self.partial.is_empty() {
            let take = (HOLE_BLOCK - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() < HOLE_BLOCK {
                return Ok(buf.len());
            }
            let block = std::mem::take(&mut self.partial);
            self.put(&block)?;
            self.partial = block;
            self.partial.clear();
        }
        let whole = rest.len() - rest.len() % HOLE_BLOCK;
        self.put(&rest[..whole])?;
        self.partial.extend_from_slice(&rest[whole..]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let last = std::mem::take(&mut self.partial);
        self.put(&last)?;
        if self.file.metadata()?.len() != self.at {
            self.file.set_len(self.at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    /// A 64 MiB file with 3 bytes of data in the middle and a hole at each end.
    fn sparse_file(path: &Path) {
        let file = File::create(path).unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_all_at(b"abc", 20 << 20).unwrap();
    }

    fn logical_sha256(path: &Path) -> String {
        hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
    }

    #[test]
    fn a_copy_keeps_holes_and_the_digest_is_of_the_logical_content() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        sparse_file(&from);
        let sha256 = copy_hashing(&from, &to, 0o640, None).unwrap();
        assert_eq!(sha256, logical_sha256(&from));
        assert_eq!(sha256_file(&from).unwrap(), sha256);
        assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&from).unwrap());
        assert!(
            allocated(&to) <= 1 << 20,
            "{} bytes allocated",
            allocated(&to)
        );
        assert_eq!(std::fs::metadata(&to).unwrap().mode() & 0o7777, 0o640);
    }

    #[test]
    fn dense_files_and_empty_files_copy_whole() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 4097, 3 * BUFFER + 5] {
            let from = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            std::fs::write(&from, &data).unwrap();
            let to = dir.path().join(format!("t{len}"));
            let sha256 = copy_hashing(&from, &to, 0o644, None).unwrap();
            assert_eq!(sha256, hex::encode(Sha256::digest(&data)), "{len}");
            assert!(std::fs::read(&to).unwrap() == data, "{len}");
        }
    }

    #[test]
    fn a_failed_copy_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("to");
        assert!(copy_hashing(&dir.path().join("absent"), &to, 0o644, None).is_err());
        assert!(!to.exists());
    }

    #[test]
    fn a_stream_of_zeros_is_written_as_holes_whatever_the_write_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut data = vec![0u8; 32 << 20];
        data[5_000_001] = 7; // inside a block: that block is written, the others are not
        let mut writer = HoleWriter::new(File::create(&path).unwrap());
        let mut at = 0;
        for size in [1usize, 511, 4096, 10_007, 1 << 20].iter().cycle() {
            if at == data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            writer.write_all(&data[at..end]).unwrap();
            at = end;
        }
        writer.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
        assert!(allocated(&path) <= 8192, "{}", allocated(&path));
    }
}
