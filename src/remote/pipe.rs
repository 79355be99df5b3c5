//! A bounded in-process pipe of 1 MiB chunks: one thread reads a pulled blob off the network
//! straight into the chunks while another decompresses and unpacks them, so the two halves of
//! a transfer use both cores and memory stays at a few chunks. (Push has its own channel, of
//! zstd frames: `frames.rs`.)

use std::io::{BufRead, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

const CHUNK: usize = 1 << 20;
/// Chunks in flight between the two threads.
const DEPTH: usize = 4;

pub fn pipe() -> (PipeWriter, PipeReader) {
    let (sender, receiver) = sync_channel(DEPTH);
    let (give_back, given_back) = std::sync::mpsc::channel();
    (
        PipeWriter {
            sender,
            buffer: vec![0; CHUNK],
            filled: 0,
            given_back,
        },
        PipeReader {
            receiver,
            current: Vec::new(),
            at: 0,
            give_back,
        },
    )
}

/// Dropping the writer ends the stream (after sending what it buffered).
pub struct PipeWriter {
    sender: SyncSender<Vec<u8>>,
    /// Always `CHUNK` bytes long; the first `filled` are the stream's.
    buffer: Vec<u8>,
    filled: usize,
    /// Chunks the reader has finished with, to be filled again (no allocation, no zeroing).
    given_back: Receiver<Vec<u8>>,
}

impl PipeWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let mut next = self
            .given_back
            .try_recv()
            .unwrap_or_else(|_| vec![0; CHUNK]);
        next.resize(CHUNK, 0); // only a short last chunk was shorter
        let mut full = std::mem::replace(&mut self.buffer, next);
        full.truncate(self.filled);
        self.filled = 0;
        self.sender
            .send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader is gone"))
    }

    /// One read from `reader` straight into the chunk being filled (no copy through a buffer
    /// of the caller's): the bytes read (0 at the reader's end), and whether the other end of
    /// the pipe still listens (if not, the bytes went nowhere).
    pub fn read_from(&mut self, reader: &mut dyn Read) -> std::io::Result<(usize, bool)> {
        let n = reader.read(&mut self.buffer[self.filled..])?;
        self.filled += n;
        let listening = self.filled < CHUNK || self.send().is_ok();
        Ok((n, listening))
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// Reads what the writer sent; the end of the writer is the end of the stream.
pub struct PipeReader {
    receiver: Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    give_back: std::sync::mpsc::Sender<Vec<u8>>,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// A consumer that reads through `fill_buf` (the zstd decoder) takes the bytes from the chunk
/// itself, without a copy into a buffer of its own.
impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.at == self.current.len() {
            match self.receiver.recv() {
                Ok(chunk) => {
                    let done = std::mem::replace(&mut self.current, chunk);
                    if done.capacity() == CHUNK {
                        let _ = self.give_back.send(done);
                    }
                    self.at = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.current[self.at..])
    }

    fn consume(&mut self, amount: usize) {
        self.at = (self.at + amount).min(self.current.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads its bytes 70_001 at most at a time.
    struct Pieces(Vec<u8>, usize);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(70_001).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn bytes_arrive_in_order_and_the_writer_ends_the_stream() {
        let data: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 251) as u8).collect();
        let mut read_from = Pieces(data.clone(), 0);
        let (mut writer, mut reader) = pipe();
        let producer =
            std::thread::spawn(
                move || {
                    while writer.read_from(&mut read_from).unwrap() != (0, true) {}
                },
            );
        let mut got = vec![0u8; 7];
        reader.read_exact(&mut got).unwrap();
        while !reader.fill_buf().unwrap().is_empty() {
            let n = reader.fill_buf().unwrap().len().min(123_457);
            got.extend_from_slice(&reader.fill_buf().unwrap()[..n]);
            reader.consume(n);
        }
        producer.join().unwrap();
        assert_eq!(got, data);
    }
}
