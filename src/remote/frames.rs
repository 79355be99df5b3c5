//! The blob format: a sequence of zstd frames, one per MiB of tar stream.
//!
//! Each chunk is either compressed (zstd level 3) or, when a sample of its bytes shows it will
//! not compress (random data, already-compressed packages and images: byte entropy above 7.5
//! bits), stored as a frame of raw blocks. Any zstd decoder reads the result (`zstd -d`
//! included).
//!
//! The packer fills a chunk (file contents are read straight into it) and hands the whole
//! buffer to the consumer through a bounded channel, which gives it back once written: a raw
//! frame is its headers plus the chunk's own bytes, written with one vectored write, so stored
//! data is never copied in user space. Memory stays at a few chunks.

use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};

use crate::http::write_all_vectored;
use crate::store::tar_writer::Sink;

const CHUNK: usize = 1 << 20;
const LEVEL: i32 = 3;
/// Bits per byte above which a chunk is stored, not compressed.
const INCOMPRESSIBLE: f64 = 7.5;
/// The entropy is measured on this many windows of this many bytes, spread over the chunk.
const WINDOWS: usize = 64;
const WINDOW: usize = 128;
/// The largest block a zstd frame may hold.
const BLOCK: usize = 128 * 1024;
/// The headers of a raw frame: the frame's (magic, descriptor, 4-byte size), then 3 per block.
const RAW_HEADERS: usize = 9 + 3 * CHUNK.div_ceil(BLOCK);
/// Frames in flight between the packer and the sender.
const DEPTH: usize = 4;

/// Every buffer is this long and stays initialised: one serves as a chunk or as the output of
/// the compressor, and is reused without being cleared.
fn buffer_len() -> usize {
    zstd::zstd_safe::compress_bound(CHUNK)
}

/// One zstd frame, ready to be written with one vectored write.
pub struct Frame {
    buffer: Vec<u8>,
    len: usize,
    /// The bytes of the tar stream it holds.
    holds: usize,
    /// `buffer[..len]` is stored in raw blocks behind these headers; otherwise it is a whole
    /// compressed frame.
    raw_headers: Option<[u8; RAW_HEADERS]>,
}

impl Frame {
    fn raw(buffer: Vec<u8>, len: usize) -> Frame {
        let mut headers = [0u8; RAW_HEADERS];
        headers[..4].copy_from_slice(&0xFD2F_B528u32.to_le_bytes());
        // Frame header descriptor: 4-byte content size, single segment, no checksum, no dictionary.
        headers[4] = 0b1010_0000;
        let size = u32::try_from(len).expect("chunks are small");
        headers[5..9].copy_from_slice(&size.to_le_bytes());
        let blocks = len.div_ceil(BLOCK);
        for i in 0..blocks {
            let block_len = (len - i * BLOCK).min(BLOCK) as u32;
            let last = u32::from(i + 1 == blocks);
            // Block header: last-block bit, type 0 (raw), size.
            let block_header = last | (block_len << 3);
            headers[9 + 3 * i..12 + 3 * i].copy_from_slice(&block_header.to_le_bytes()[..3]);
        }
        Frame {
            buffer,
            len,
            holds: len,
            raw_headers: Some(headers),
        }
    }

    /// Its size in the blob.
    pub fn size(&self) -> usize {
        match self.raw_headers {
            Some(_) => 9 + self.len + 3 * self.len.div_ceil(BLOCK),
            None => self.len,
        }
    }

    /// The bytes of the tar stream it holds (what a push's progress counts).
    pub fn holds(&self) -> usize {
        self.holds
    }

    /// The pieces of the frame in order: the chunk's own bytes between the block headers.
    pub fn parts(&self) -> Vec<IoSlice<'_>> {
        let data = &self.buffer[..self.len];
        let Some(headers) = &self.raw_headers else {
            return vec![IoSlice::new(data)];
        };
        let mut parts = vec![IoSlice::new(&headers[..9])];
        for (i, block) in data.chunks(BLOCK).enumerate() {
            parts.push(IoSlice::new(&headers[9 + 3 * i..12 + 3 * i]));
            parts.push(IoSlice::new(block));
        }
        parts
    }
}

/// The packing end: the tar stream goes in (file contents read straight into the chunk),
/// frames come out of the other end, `Frames`.
pub struct FrameWriter {
    chunk: Vec<u8>,
    filled: usize,
    compressor: zstd::bulk::Compressor<'static>,
    frames: SyncSender<Frame>,
    given_back: Receiver<Vec<u8>>,
    /// Bytes of the frames sent so far.
    written: u64,
}

/// The consuming end; the end of the `FrameWriter` is the end of the blob.
pub struct Frames {
    frames: Receiver<Frame>,
    give_back: Sender<Vec<u8>>,
}

pub fn frames() -> std::io::Result<(FrameWriter, Frames)> {
    let (sender, receiver) = sync_channel(DEPTH);
    let (give_back, given_back) = std::sync::mpsc::channel();
    Ok((
        FrameWriter {
            chunk: vec![0; buffer_len()],
            filled: 0,
            compressor: zstd::bulk::Compressor::new(LEVEL)?,
            frames: sender,
            given_back,
            written: 0,
        },
        Frames {
            frames: receiver,
            give_back,
        },
    ))
}

impl Frames {
    /// The next frame; `None` at the end of the blob.
    pub fn recv(&self) -> Option<Frame> {
        self.frames.recv().ok()
    }

    /// A frame that was written: its buffer is filled again.
    pub fn give_back(&self, frame: Frame) {
        let _ = self.give_back.send(frame.buffer);
    }

    /// Writes every frame to `out`; returns the bytes written.
    pub fn write_all_to(&self, out: &mut impl Write) -> std::io::Result<u64> {
        let mut written = 0;
        while let Some(frame) = self.recv() {
            write_all_vectored(out, &mut frame.parts())?;
            written += frame.size() as u64;
            self.give_back(frame);
        }
        out.flush()?;
        Ok(written)
    }
}

impl FrameWriter {
    /// Sends what is buffered (a chunk is never empty: the frame of an empty chunk would have no
    /// block) and returns the size of the blob.
    pub fn finish(mut self) -> std::io::Result<u64> {
        self.send_chunk()?;
        Ok(self.written)
    }

    fn spare(&self) -> Vec<u8> {
        self.given_back
            .try_recv()
            .unwrap_or_else(|_| vec![0; buffer_len()])
    }

    fn send_chunk(&mut self) -> std::io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let data = &self.chunk[..self.filled];
        let mut frame = None;
        if !looks_incompressible(data) {
            let mut out = self.spare();
            let n = self.compressor.compress_to_buffer(data, &mut out[..])?;
            if n < self.filled {
                frame = Some(Frame {
                    buffer: out,
                    len: n,
                    holds: self.filled,
                    raw_headers: None,
                });
            }
        }
        let frame = match frame {
            Some(frame) => frame,
            None => {
                let spare = self.spare();
                let chunk = std::mem::replace(&mut self.chunk, spare);
                Frame::raw(chunk, self.filled)
            }
        };
        self.filled = 0;
        self.written += frame.size() as u64;
        self.frames
            .send(frame)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the sender is gone"))
    }

    /// Room in the chunk, after sending it if it is full.
    fn room(&mut self) -> std::io::Result<&mut [u8]> {
        if self.filled == CHUNK {
            self.send_chunk()?;
        }
        Ok(&mut self.chunk[self.filled..CHUNK])
    }
}

impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.room()?;
        let n = buf.len().min(room.len());
        room[..n].copy_from_slice(&buf[..n]);
        self.filled += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for FrameWriter {
    fn append_from(&mut self, file: &mut File, max: usize) -> std::io::Result<usize> {
        let room = self.room()?;
        let end = room.len().min(max);
        let n = file.read(&mut room[..end])?;
        self.filled += n;
        Ok(n)
    }
}

/// Shannon entropy of `WINDOWS` windows of `WINDOW` bytes spread over the chunk, in bits per
/// byte.
/// (Every 61st byte was sampled before: as many samples, but it pulls every cache line of
/// the chunk into the CPU; 7 % of the push's CPU time.) A chunk too small to sample is
/// compressed, and stored raw if that does not make it smaller.
fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < WINDOWS * WINDOW {
        return false;
    }
    let mut counts = [0u32; 256];
    let step = data.len() / WINDOWS;
    for window in 0..WINDOWS {
        // Where in its step a window starts follows the golden ratio: windows at one phase
        // would all land on the same part of 4 KiB pages or 64 KiB clusters.
        let phase = (window as f64 * 0.618_034).fract() * (step - WINDOW) as f64;
        let start = window * step + phase as usize;
        for byte in &data[start..start + WINDOW] {
            counts[*byte as usize] += 1;
        }
    }
    let total = (WINDOWS * WINDOW) as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / total;
            -p * p.log2()
        })
        .sum();
    entropy > INCOMPRESSIBLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Bytes that do not compress (xorshift).
    fn random(len: usize) -> Vec<u8> {
        let mut state = 0x1234_5678_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// Packs `input` (through `write`, or from a file through `append_from`) and returns the
    /// blob and the size the writer counted.
    fn pack(input: &[u8], from_file: bool) -> (Vec<u8>, u64) {
        let (mut writer, frames) = frames().unwrap();
        let file = tempfile::tempfile().unwrap();
        std::thread::scope(|scope| {
            let packer = scope.spawn(move || {
                if from_file {
                    let mut file = file;
                    file.write_all(input).unwrap();
                    std::io::Seek::rewind(&mut file).unwrap();
                    while writer.append_from(&mut file, 300_000).unwrap() > 0 {}
                } else {
                    writer.write_all(input).unwrap();
                }
                writer.finish().unwrap()
            });
            let mut blob = Vec::new();
            let written = frames.write_all_to(&mut blob).unwrap();
            let counted = packer.join().unwrap();
            assert_eq!(written, counted);
            (blob, counted)
        })
    }

    #[test]
    fn mixed_raw_and_compressed_frames_decode_with_zstd() {
        let mut input = b"header".to_vec();
        input.extend(random(CHUNK + 1000));
        input.extend(std::iter::repeat_n(b'a', CHUNK * 2 + 17));
        input.extend(random(1000)); // a short last chunk that zstd cannot shrink: raw
        for from_file in [false, true] {
            let (blob, size) = pack(&input, from_file);
            assert_eq!(size, blob.len() as u64);
            assert!(
                blob.len() < CHUNK + 2000 + CHUNK / 10,
                "text compressed, random stored"
            );
            let mut output = Vec::new();
            zstd::Decoder::new(blob.as_slice())
                .unwrap()
                .read_to_end(&mut output)
                .unwrap();
            assert_eq!(output, input);
        }
    }

    #[test]
    fn entropy_tells_random_from_text() {
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(20_000);
        assert!(!looks_incompressible(&text));
        assert!(looks_incompressible(&random(CHUNK / 2)));
        // Random bytes with runs of zeros between the samples would compress; the windows
        // spread over the chunk see the zeros.
        let mut sparse = random(CHUNK);
        for run in sparse.chunks_mut(4096) {
            run[2048..].fill(0);
        }
        assert!(!looks_incompressible(&sparse));
    }
}
