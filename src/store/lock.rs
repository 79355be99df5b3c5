//! Advisory file locks (flock): released by the kernel when the holder dies, so a killed build
//! never leaves a stale lock behind.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{IoContext, Result};

#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Takes the lock, waiting for its holder; `on_wait` runs once if we have to wait.
    pub fn acquire(path: &Path, on_wait: impl FnOnce()) -> Result<FileLock> {
        let file = open(path)?;
        if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
            return Ok(FileLock { file });
        }
        on_wait();
        flock(&file, libc::LOCK_EX).ctx(|| format!("locking {}", path.display()))?;
        Ok(FileLock { file })
    }

    /// The locked file (a holder may write who it is into it).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Takes the lock shared (beside other shared holders, never beside an exclusive one),
    /// waiting as `acquire` does.
    pub fn acquire_shared(path: &Path, on_wait: impl FnOnce()) -> Result<FileLock> {
        let file = open(path)?;
        if flock(&file, libc::LOCK_SH | libc::LOCK_NB).is_ok() {
            return Ok(FileLock { file });
        }
        on_wait();
        flock(&file, libc::LOCK_SH).ctx(|| format!("locking {}", path.display()))?;
        Ok(FileLock { file })
    }

    /// The locked file, for a holder that also writes it (a lease); the lock lives with it.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Takes the lock only if nobody holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        let file = open(path)?;
        Ok(flock(&file, libc::LOCK_EX | libc::LOCK_NB)
            .ok()
            .map(|_| FileLock { file }))
    }
}

fn open(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ctx(|| format!("opening lock {}", path.display()))
}

fn flock(file: &File, operation: i32) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
