//! Length-prefixed frames: a 4-byte big-endian length, then that many
//! bytes of payload.
//!
//! ```text
//! +--------+--------+--------+--------+-------------------------+
//! |          length N (u32, BE)       |  N bytes of payload     |
//! +--------+--------+--------+--------+-------------------------+
//! ```
//!
//! A stream carries no message boundaries: one read may hold several
//! frames glued together, or a piece of one (the "sticky packet" problem).
//! [`Decoder`] takes bytes as they come and yields whole frames in order,
//! whatever the split. A header announcing more than the limit is refused as
//! soon as its 4 bytes are in, before any of the body is buffered.

use std::io::{self, Read, Write};

/// Bytes in a frame header.
pub const HEADER: usize = 4;

/// The default largest payload: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// A frame announced larger than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes exceeds the limit of {max} bytes")]
pub struct TooLarge {
    /// The announced length.
    pub len: u64,
    /// The limit.
    pub max: usize,
}

/// Appends the frame for `payload` to `out`.
///
/// # Panics
///
/// If `payload` is 4 GiB or longer (no limit allows that).
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("frame payload under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Incremental frame decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl Decoder {
    /// A decoder refusing payloads over `max` bytes.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Adds bytes as read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or an
    /// error for an oversized header (the decoder is then unusable).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, TooLarge> {
        let pending = &self.buf[self.start..];
        let Some(header) = pending.first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > self.max {
            return Err(TooLarge {
                len: len as u64,
                max: self.max,
            });
        }
        if pending.len() < HEADER + len {
            return Ok(None);
        }
        let frame = pending[HEADER..HEADER + len].to_vec();
        self.start += HEADER + len;
        Ok(Some(frame))
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Something bytes can be read from and written to: a client socket, or a
/// server's [`StreamRequest`](crate::request::StreamRequest) (its `Read`
/// honours a graceful stop).
pub trait Wire {
    /// Reads at least one byte, or 0 at end of stream.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
}

impl<T: Read + Write> Wire for T {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }
}

/// Frames over a [`Wire`].
pub struct Framed<W> {
    wire: W,
    decoder: Decoder,
    rbuf: Box<[u8]>,
    wbuf: Vec<u8>,
}

impl<W: Wire> Framed<W> {
    /// Frames over `wire`, refusing incoming payloads over `max` bytes.
    pub fn new(wire: W, max: usize) -> Framed<W> {
        Framed {
            wire,
            decoder: Decoder::new(max),
            rbuf: vec![0u8; 64 * 1024].into_boxed_slice(),
            wbuf: Vec::new(),
        }
    }

    /// The next frame; `Ok(None)` at a clean end of stream (between
    /// frames). An oversized header is an `InvalidData` error wrapping
    /// [`TooLarge`]; end of stream inside a frame is `UnexpectedEof`.
    pub fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let n = self.wire.read_some(&mut self.rbuf)?;
            if n == 0 {
                return match self.decoder.buffered() {
                    0 => Ok(None),
                    b => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed inside a frame ({b} bytes buffered)"),
                    )),
                };
            }
            self.decoder.feed(&self.rbuf[..n]);
        }
    }

    /// Sends one frame (header and payload in one write).
    pub fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        self.wbuf.clear();
        encode(payload, &mut self.wbuf);
        self.wire.write_all(&self.wbuf)
    }

    /// The wire itself.
    pub fn wire(&mut self) -> &mut W {
        &mut self.wire
    }
}

/// If `e` is an oversized frame, the details.
pub fn too_large(e: &io::Error) -> Option<TooLarge> {
    e.get_ref()?.downcast_ref::<TooLarge>().copied()
}

/// The decoder's contract, checked on arbitrary input (the fuzz target
/// `frame_decoder` and the unit tests call it): `data[0]` picks a limit,
/// `data[1..]` is fed in pieces whose sizes come from the input itself;
/// the frames and error must equal those of feeding everything at once,
/// and no frame may exceed the limit.
///
/// # Panics
///
/// When the contract is broken.
pub fn check_decoder(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let max = usize::from(sel) * 4;
    let whole = decode_all(stream, max, &[stream.len()]);
    let steps: Vec<usize> = stream.iter().map(|b| usize::from(b % 7) + 1).collect();
    let split = decode_all(stream, max, &steps);
    assert_eq!(whole, split, "split input decodes differently");
    for f in &whole.0 {
        assert!(f.len() <= max, "frame over the limit");
    }
    let mut again = Vec::new();
    for f in &whole.0 {
        encode(f, &mut again);
    }
    assert!(
        stream.starts_with(&again),
        "frames re-encode to a prefix of the input"
    );
}

type Decoded = (Vec<Vec<u8>>, Option<TooLarge>, usize);

fn decode_all(stream: &[u8], max: usize, steps: &[usize]) -> Decoded {
    let mut d = Decoder::new(max);
    let mut frames = Vec::new();
    let mut at = 0;
    let mut steps = steps.iter().cycle();
    while at < stream.len() {
        let n = (*steps.next().unwrap_or(&1)).min(stream.len() - at);
        d.feed(&stream[at..at + n]);
        at += n;
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e), 0),
            }
        }
    }
    let left = d.buffered();
    (frames, None, left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_fuzz_contract_holds_on_sample_inputs() {
        check_decoder(b"");
        check_decoder(&[0]);
        check_decoder(&[255, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0]);
        check_decoder(&[1, 0, 0, 0, 5, 1, 2, 3, 4, 5]);
        check_decoder(&[2, 0xff, 0xff, 0xff, 0xff]);
        let mut x = 1u32;
        for len in 0..200 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8 % 9
                })
                .collect();
            check_decoder(&data);
        }
    }

    fn stream_of(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            encode(f, &mut out);
        }
        out
    }

    fn decode_split(bytes: &[u8], cuts: &[usize], max: usize) -> Vec<Vec<u8>> {
        let mut d = Decoder::new(max);
        let mut got = Vec::new();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        points.push(bytes.len());
        for p in points {
            d.feed(&bytes[at..p]);
            at = p;
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(d.buffered(), 0);
        got
    }

    #[test]
    fn glued_frames_come_out_one_by_one() {
        let frames = vec![b"one".to_vec(), vec![], b"three".to_vec()];
        assert_eq!(decode_split(&stream_of(&frames), &[], 64), frames);
    }

    #[test]
    fn a_frame_fed_byte_by_byte_comes_out_once_whole() {
        let bytes = stream_of(&[b"hello".to_vec()]);
        let mut d = Decoder::new(64);
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(d.next_frame().unwrap(), None, "before byte {i}");
            d.feed(&[*b]);
        }
        assert_eq!(d.next_frame().unwrap(), Some(b"hello".to_vec()));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_body() {
        let mut d = Decoder::new(10);
        d.feed(&11u32.to_be_bytes());
        assert_eq!(d.next_frame(), Err(TooLarge { len: 11, max: 10 }));
        assert_eq!(d.buffered(), 4, "nothing but the header was held");
        let mut d = Decoder::new(10);
        d.feed(&10u32.to_be_bytes());
        d.feed(&[0; 10]);
        assert_eq!(d.next_frame().unwrap().unwrap().len(), 10);
    }

    #[test]
    fn framed_reports_eof_inside_a_frame() {
        let mut bytes = stream_of(&[b"whole".to_vec()]);
        bytes.extend_from_slice(&[0, 0, 0, 9, b'x']);
        let mut f = Framed::new(io::Cursor::new(bytes), 64);
        assert_eq!(f.recv().unwrap(), Some(b"whole".to_vec()));
        assert_eq!(f.recv().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut f = Framed::new(io::Cursor::new(vec![0xff, 0, 0, 0]), 64);
        let e = f.recv().unwrap_err();
        assert_eq!(too_large(&e).unwrap().len, 0xff00_0000);
    }

    proptest! {
        #[test]
        fn any_split_of_a_frame_stream_decodes_to_the_same_frames(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ) {
            let bytes = stream_of(&frames);
            prop_assert_eq!(decode_split(&bytes, &cuts, 300), frames);
        }
    }
}
