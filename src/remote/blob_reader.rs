//! Reads a pulled blob (zstd frames, see `frames.rs`) back into its tar stream.
//!
//! A frame made only of raw blocks (how push stores an incompressible MiB) is parsed here and
//! its bytes are copied once, from the pipe's chunk into the reader's buffer; libzstd would
//! copy each raw block into its own window first and from there into the buffer. Any other
//! frame (compressed, with a checksum or a dictionary, skippable, odd or damaged) is left
//! whole to libzstd, which decodes it or refuses it as it always did: a frame is taken here
//! only once all its headers have been seen and agree (raw blocks of at most 128 KiB that add
//! up to the frame's content size, and every byte present).

use std::io::{BufRead, Read};

use super::frames::{BLOCK, MAGIC};
use super::pipe::PipeReader;

/// How far ahead of the read position a frame's headers are looked for: a raw frame of push
/// is 1 MiB and a few bytes, and one in a few straddles two chunks.
const LOOKAHEAD: usize = 4 << 20;

pub struct BlobReader {
    input: PipeReader,
    state: State,
    zstd: zstd::zstd_safe::DCtx<'static>,
}

enum State {
    /// At the start of a frame (or the end of the blob).
    FrameStart,
    /// Inside a raw block of a raw frame: the block's bytes not yet read, and whether it is
    /// the frame's last block.
    Raw { left: usize, last: bool },
    /// Inside a frame that libzstd decodes.
    Zstd,
}

/// What a frame that starts at the read position is.
enum Frame {
    /// Raw blocks only, after a frame header of this many bytes.
    Raw { header: usize },
    /// Anything else: libzstd's.
    Other,
}

impl BlobReader {
    pub fn new(input: PipeReader) -> BlobReader {
        BlobReader {
            input,
            state: State::FrameStart,
            zstd: zstd::zstd_safe::DCtx::create(),
        }
    }

    /// Looks at the frame at the read position without consuming it.
    fn classify(&mut self) -> std::io::Result<Frame> {
        let mut head = [0u8; 5];
        if !self.input.peek(0, &mut head)? || head[..4] != MAGIC.to_le_bytes() {
            return Ok(Frame::Other);
        }
        // Descriptor: single segment (so the content size is given and no window), no
        // checksum, no dictionary, reserved and unused bits clear.
        let descriptor = head[4];
        if descriptor & 0b0011_1111 != 0b0010_0000 {
            return Ok(Frame::Other);
        }
        let size_bytes = [1, 2, 4, 8][usize::from(descriptor >> 6)];
        let mut size = [0u8; 8];
        if !self.input.peek(5, &mut size[..size_bytes])? {
            return Ok(Frame::Other);
        }
        let content_size = u64::from_le_bytes(size) + if size_bytes == 2 { 256 } else { 0 };
        let header = 5 + size_bytes;
        let (mut at, mut blocks_hold) = (header, 0u64);
        loop {
            let mut block = [0u8; 4];
            if at > LOOKAHEAD || !self.input.peek(at, &mut block[..3])? {
                return Ok(Frame::Other);
            }
            let block = u32::from_le_bytes(block);
            let (last, kind, len) = (block & 1 == 1, (block >> 1) & 3, (block >> 3) as usize);
            if kind != 0 || len > BLOCK {
                return Ok(Frame::Other);
            }
            at += 3 + len;
            blocks_hold += len as u64;
            if last {
                break;
            }
        }
        if blocks_hold != content_size || !self.input.peek(at - 1, &mut [0u8])? {
            return Ok(Frame::Other);
        }
        Ok(Frame::Raw { header })
    }

    /// Consumes the header of the next raw block (checked by `classify`).
    fn next_block(&mut self) -> std::io::Result<State> {
        let mut block = [0u8; 4];
        self.input.read_exact(&mut block[..3])?;
        let block = u32::from_le_bytes(block);
        Ok(State::Raw {
            left: (block >> 3) as usize,
            last: block & 1 == 1,
        })
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::FrameStart => {
                    if self.input.fill_buf()?.is_empty() {
                        return Ok(0);
                    }
                    self.state = match self.classify()? {
                        Frame::Raw { header } => {
                            self.input.consume(header);
                            self.next_block()?
                        }
                        Frame::Other => State::Zstd,
                    };
                }
                State::Raw { left: 0, last } => {
                    self.state = if last {
                        State::FrameStart
                    } else {
                        self.next_block()?
                    };
                }
                State::Raw { left, last } => {
                    let bytes = self.input.fill_buf()?;
                    if bytes.is_empty() {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    let n = buf.len().min(left).min(bytes.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    self.input.consume(n);
                    self.state = State::Raw {
                        left: left - n,
                        last,
                    };
                    return Ok(n);
                }
                State::Zstd => {
                    let bytes = self.input.fill_buf()?;
                    if bytes.is_empty() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the blob ends inside a zstd frame",
                        ));
                    }
                    let mut input = zstd::zstd_safe::InBuffer::around(bytes);
                    let mut output = zstd::zstd_safe::OutBuffer::around(&mut *buf);
                    let hint = self
                        .zstd
                        .decompress_stream(&mut output, &mut input)
                        .map_err(|code| {
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                zstd::zstd_safe::get_error_name(code),
                            )
                        })?;
                    let (consumed, produced) = (input.pos(), output.pos());
                    self.input.consume(consumed);
                    if hint == 0 {
                        self.state = State::FrameStart;
                    }
                    if produced > 0 {
                        return Ok(produced);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::pipe::pipe;

    /// Bytes that do not compress (xorshift).
    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// A frame of raw blocks, as push writes one.
    fn raw_frame(data: &[u8]) -> Vec<u8> {
        let mut frame = MAGIC.to_le_bytes().to_vec();
        frame.push(0b1010_0000);
        frame.extend((data.len() as u32).to_le_bytes());
        let blocks = data.len().div_ceil(BLOCK);
        for (i, block) in data.chunks(BLOCK).enumerate() {
            let header = u32::from(i + 1 == blocks) | ((block.len() as u32) << 3);
            frame.extend(&header.to_le_bytes()[..3]);
            frame.extend(block);
        }
        frame
    }

    /// Sends `blob` through a pipe in reads of `piece` bytes and reads it back whole.
    fn unpack(blob: &[u8], piece: usize) -> std::io::Result<Vec<u8>> {
        let (mut writer, reader) = pipe();
        let blob = blob.to_vec();
        let producer = std::thread::spawn(move || {
            let mut at = 0;
            while at < blob.len() {
                let end = (at + piece).min(blob.len());
                let (n, listening) = writer.read_from(&mut &blob[at..end]).unwrap();
                at += n;
                if !listening {
                    break;
                }
            }
        });
        let mut out = Vec::new();
        let result = BlobReader::new(reader).read_to_end(&mut out);
        producer.join().unwrap();
        result.map(|_| out)
    }

    #[test]
    fn raw_and_compressed_frames_read_back_across_chunk_boundaries() {
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(30_000);
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut blob = Vec::new();
        // Raw frames of a whole MiB and more straddle the pipe's 1 MiB chunks; a short one, a
        // compressed one, a compressed one with a checksum and one with raw blocks that zstd
        // wrote itself (not the header push writes) go to libzstd or here.
        for (i, part) in [
            random(1 << 20, 1),
            random((1 << 20) + 3, 2),
            random(5, 3),
            text.clone(),
            random(3 << 20, 4),
        ]
        .into_iter()
        .enumerate()
        {
            let frame = match i {
                3 => zstd::bulk::compress(&part, 3).unwrap(),
                4 => zstd::bulk::compress(&part, 1).unwrap(),
                _ => raw_frame(&part),
            };
            blob.extend(&frame);
            parts.push(part);
        }
        let mut checked = zstd::bulk::Compressor::new(3).unwrap();
        checked.include_checksum(true).unwrap();
        let part = random(200_000, 5);
        blob.extend(checked.compress(&part).unwrap());
        parts.push(part);
        blob.extend(raw_frame(&text[..BLOCK * 2 + 1]));
        parts.push(text[..BLOCK * 2 + 1].to_vec());
        let expected = parts.concat();
        for piece in [1 << 20, 70_001, 3] {
            if piece == 3 {
                // Three bytes at a time: headers split everywhere (on a smaller blob).
                let small = [raw_frame(&text[..1000]), raw_frame(b"x")].concat();
                let got = unpack(&small, piece).unwrap();
                assert_eq!(got, [&text[..1000], b"x"].concat());
                continue;
            }
            let got = unpack(&blob, piece).unwrap();
            assert!(got == expected, "pieces of {piece}");
        }
    }

    /// What the reader makes of the frame `blob` starts with.
    fn classify(blob: &[u8]) -> Frame {
        let (mut writer, reader) = pipe();
        writer.read_from(&mut &blob[..]).unwrap();
        drop(writer);
        BlobReader::new(reader).classify().unwrap()
    }

    #[test]
    fn raw_frames_are_read_here_and_others_by_libzstd() {
        let data = random(300_000, 7);
        assert!(matches!(
            classify(&raw_frame(&data)),
            Frame::Raw { header: 9 }
        ));
        let text = b"abcabcabd".repeat(1000);
        assert!(matches!(
            classify(&zstd::bulk::compress(&text, 3).unwrap()),
            Frame::Other
        ));
        let frame = raw_frame(&data);
        assert!(matches!(classify(&frame[..frame.len() - 1]), Frame::Other));
    }

    #[test]
    fn damaged_or_truncated_frames_are_refused() {
        let data = random(300_000, 6);
        let frame = raw_frame(&data);
        assert_eq!(unpack(&frame, 1 << 20).unwrap(), data);
        // Truncated: in the frame header, in a block header, in a block.
        for cut in [3, 7, 9 + BLOCK + 2, frame.len() - 1] {
            assert!(unpack(&frame[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        // A content size that the blocks do not add up to; a wrong magic; a block larger
        // than 128 KiB; a reserved block type.
        let mut bad_size = frame.clone();
        bad_size[5] ^= 1;
        let mut bad_magic = frame.clone();
        bad_magic[0] ^= 1;
        let mut too_big = frame.clone();
        too_big[9..12].copy_from_slice(&(((BLOCK as u32 + 8) << 3).to_le_bytes()[..3]));
        let mut reserved = frame.clone();
        reserved[9] |= 0b110;
        for (what, blob) in [
            ("size", bad_size),
            ("magic", bad_magic),
            ("block size", too_big),
            ("block type", reserved),
        ] {
            let got = unpack(&blob, 1 << 20);
            assert!(got.is_err(), "{what}: {:?}", got.map(|g| g.len()));
        }
    }
}
