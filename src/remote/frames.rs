//! The blob format: a sequence of zstd frames, one per MiB of tar stream.
//!
//! Each chunk is either compressed (zstd level 3) or, when a sample of its bytes shows it will
//! not compress (random data, already-compressed packages and images: byte entropy above 7.5
//! bits), written as a frame of raw blocks, which costs a copy instead of a search. Any zstd
//! decoder reads the result (`zstd -d` included); memory stays at two chunks.

use std::io::Write;

const CHUNK: usize = 1 << 20;
const LEVEL: i32 = 3;
/// Bits per byte above which a chunk is stored, not compressed.
const INCOMPRESSIBLE: f64 = 7.5;
/// The largest block a zstd frame may hold.
const BLOCK: usize = 128 * 1024;

pub struct FrameWriter<W: Write> {
    inner: W,
    chunk: Vec<u8>,
    compressed: Vec<u8>,
    compressor: zstd::bulk::Compressor<'static>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> std::io::Result<Self> {
        Ok(FrameWriter {
            inner,
            chunk: Vec::with_capacity(CHUNK),
            compressed: Vec::with_capacity(zstd::zstd_safe::compress_bound(CHUNK)),
            compressor: zstd::bulk::Compressor::new(LEVEL)?,
        })
    }

    /// Writes what is buffered and returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.write_chunk()?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn write_chunk(&mut self) -> std::io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let compressed = if looks_incompressible(&self.chunk) {
            false
        } else {
            self.compressed.clear();
            let n = self
                .compressor
                .compress_to_buffer(&self.chunk, &mut self.compressed)?;
            n < self.chunk.len()
        };
        if compressed {
            self.inner.write_all(&self.compressed)?;
        } else {
            write_raw_frame(&mut self.inner, &self.chunk)?;
        }
        self.chunk.clear();
        Ok(())
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.write_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Shannon entropy of every 8th byte, in bits per byte.
fn looks_incompressible(data: &[u8]) -> bool {
    let mut counts = [0u32; 256];
    let mut samples = 0u32;
    for byte in data.iter().step_by(8) {
        counts[*byte as usize] += 1;
        samples += 1;
    }
    let total = f64::from(samples);
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / total;
            -p * p.log2()
        })
        .sum();
    samples >= 4096 && entropy > INCOMPRESSIBLE
}

/// A zstd frame (RFC 8878) holding `data` in raw blocks.
fn write_raw_frame(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    let size = u32::try_from(data.len()).expect("chunks are small");
    let mut header = Vec::with_capacity(9);
    header.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame header descriptor: 4-byte content size, single segment, no checksum, no dictionary.
    header.push(0b1010_0000);
    header.extend_from_slice(&size.to_le_bytes());
    out.write_all(&header)?;
    let blocks = data.chunks(BLOCK).count();
    for (i, block) in data.chunks(BLOCK).enumerate() {
        let last = u32::from(i + 1 == blocks);
        // Block header: last-block bit, type 0 (raw), size.
        let block_header = last | ((block.len() as u32) << 3);
        out.write_all(&block_header.to_le_bytes()[..3])?;
        out.write_all(block)?;
    }
    Ok(())
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

    #[test]
    fn mixed_raw_and_compressed_frames_decode_with_zstd() {
        let mut input = random(CHUNK + 1000);
        input.extend(std::iter::repeat_n(b'a', CHUNK * 2 + 17));
        let mut writer = FrameWriter::new(Vec::new()).unwrap();
        writer.write_all(&input).unwrap();
        let blob = writer.finish().unwrap();
        assert!(
            blob.len() < CHUNK + 1000 + CHUNK / 10,
            "text compressed, random stored"
        );
        let mut output = Vec::new();
        zstd::Decoder::new(blob.as_slice())
            .unwrap()
            .read_to_end(&mut output)
            .unwrap();
        assert_eq!(output, input);
    }

    #[test]
    fn entropy_tells_random_from_text() {
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(1000);
        assert!(!looks_incompressible(&text));
        assert!(looks_incompressible(&random(100_000)));
    }
}
