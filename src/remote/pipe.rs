//! A bounded in-process pipe of 1 MiB chunks: one thread produces a stream (tar into frames,
//! or bytes off the network) while another consumes it (the upload, or the unpacking), so the
//! two halves of a transfer use both cores and memory stays at a few chunks.

use std::io::{BufRead, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

const CHUNK: usize = 1 << 20;
/// Chunks in flight between the two threads.
const DEPTH: usize = 4;

pub fn pipe() -> (PipeWriter, PipeReader) {
    let (sender, receiver) = sync_channel(DEPTH);
    (
        PipeWriter {
            sender,
            buffer: Vec::with_capacity(CHUNK),
        },
        PipeReader {
            receiver,
            current: Vec::new(),
            at: 0,
        },
    )
}

/// Dropping the writer ends the stream (after sending what it buffered).
pub struct PipeWriter {
    sender: SyncSender<Vec<u8>>,
    buffer: Vec<u8>,
}

impl PipeWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader is gone"))
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
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
                    self.current = chunk;
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

    #[test]
    fn bytes_arrive_in_order_and_the_writer_ends_the_stream() {
        let (mut writer, mut reader) = pipe();
        let data: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let producer = std::thread::spawn(move || {
            for piece in data.chunks(1000) {
                writer.write_all(piece).unwrap();
            }
        });
        let mut got = vec![0u8; 7];
        reader.read_exact(&mut got).unwrap();
        let mut rest = Vec::new();
        while !reader.fill_buf().unwrap().is_empty() {
            let n = reader.fill_buf().unwrap().len().min(123_457);
            rest.extend_from_slice(&reader.fill_buf().unwrap()[..n]);
            reader.consume(n);
        }
        got.extend(rest);
        producer.join().unwrap();
        assert_eq!(got, expected);
    }
}
