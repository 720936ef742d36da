//! HTTP/2 framing (RFC 9113 §4): just enough to find frame boundaries, read
//! the few fields the relay acts on, and build the frames it sends itself.

use bytes::{BufMut, BytesMut};

pub const HEADER_LEN: usize = 9;
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const PUSH_PROMISE: u8 = 0x5;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;

/// Every peer starts with these until its SETTINGS say otherwise.
pub const DEFAULT_MAX_FRAME: usize = 16_384;
pub const DEFAULT_WINDOW: i64 = 65_535;
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Header {
    /// The header at the start of `buf`, once all nine bytes are there.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Frame length on the wire, header included.
    pub fn total(&self) -> usize {
        HEADER_LEN + self.len
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of type {0} is malformed")]
    Malformed(u8),
    #[error("padding longer than the frame")]
    Padding,
}

pub fn put_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    // Lengths come from our own frames, which never exceed 2^24 - 1.
    let len = len.min(0xff_ffff) as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
}

pub fn put_window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    put_header(out, 4, WINDOW_UPDATE, 0, stream);
    out.put_u32(increment & 0x7fff_ffff);
}

pub fn put_ping_ack(out: &mut BytesMut, payload: &[u8]) {
    put_header(out, payload.len(), PING, ACK, 0);
    out.put_slice(payload);
}

pub fn put_rst_stream(out: &mut BytesMut, stream: u32, code: u32) {
    put_header(out, 4, RST_STREAM, 0, stream);
    out.put_u32(code);
}

pub fn put_goaway(out: &mut BytesMut, last_stream: u32, code: u32) {
    put_header(out, 8, GOAWAY, 0, 0);
    out.put_u32(last_stream & 0x7fff_ffff);
    out.put_u32(code);
}

/// An empty SETTINGS frame: the peer acknowledges it after everything
/// sent before it, which makes it a marker in the peer's frame order.
pub fn put_empty_settings(out: &mut BytesMut) {
    put_header(out, 0, SETTINGS, 0, 0);
}

/// A header block as HEADERS plus as many CONTINUATION frames as the
/// peer's frame size limit needs.
pub fn put_header_block(
    out: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let max_frame = max_frame.max(1);
    let mut chunks = block.chunks(max_frame).peekable();
    let mut kind = HEADERS;
    let mut flags = if end_stream { END_STREAM } else { 0 };
    loop {
        let chunk = chunks.next().unwrap_or(&[]);
        let last = chunks.peek().is_none();
        if last {
            flags |= END_HEADERS;
        }
        put_header(out, chunk.len(), kind, flags, stream);
        out.put_slice(chunk);
        if last {
            return;
        }
        kind = CONTINUATION;
        flags = 0;
    }
}

pub fn put_data(out: &mut BytesMut, stream: u32, data: &[u8], end_stream: bool) {
    put_header(
        out,
        data.len(),
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
    );
    out.put_slice(data);
}

/// The increment of a WINDOW_UPDATE payload.
pub fn window_increment(payload: &[u8]) -> Result<u32, FrameError> {
    let b: [u8; 4] = payload
        .try_into()
        .map_err(|_| FrameError::Malformed(WINDOW_UPDATE))?;
    Ok(u32::from_be_bytes(b) & 0x7fff_ffff)
}

/// The (identifier, value) pairs of a SETTINGS payload.
pub fn settings(payload: &[u8]) -> Result<impl Iterator<Item = (u16, u32)> + '_, FrameError> {
    if !payload.len().is_multiple_of(6) {
        return Err(FrameError::Malformed(SETTINGS));
    }
    Ok(payload.chunks_exact(6).map(|s| {
        (
            u16::from_be_bytes([s[0], s[1]]),
            u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
        )
    }))
}

/// The header block fragment of a HEADERS frame: padding and priority
/// fields removed.
pub fn headers_fragment<'a>(h: &Header, payload: &'a [u8]) -> Result<&'a [u8], FrameError> {
    let mut body = unpad(h, payload)?;
    if h.has(PRIORITY_FLAG) {
        body = body.get(5..).ok_or(FrameError::Malformed(HEADERS))?;
    }
    Ok(body)
}

/// The payload of a DATA or HEADERS frame without its padding.
pub fn unpad<'a>(h: &Header, payload: &'a [u8]) -> Result<&'a [u8], FrameError> {
    if !h.has(PADDED) {
        return Ok(payload);
    }
    let (&pad, rest) = payload.split_first().ok_or(FrameError::Padding)?;
    let keep = rest
        .len()
        .checked_sub(usize::from(pad))
        .ok_or(FrameError::Padding)?;
    Ok(&rest[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut out = BytesMut::new();
        put_header(&mut out, 0x01_02_03, HEADERS, END_HEADERS, 0x8000_0005);
        let h = Header::parse(&out).unwrap();
        assert_eq!(
            h,
            Header {
                len: 0x01_02_03,
                kind: HEADERS,
                flags: END_HEADERS,
                // The reserved bit is not part of the identifier.
                stream: 5
            }
        );
        assert_eq!(h.total(), 0x01_02_03 + 9);
        assert!(Header::parse(&out[..8]).is_none());
    }

    #[test]
    fn long_header_blocks_are_continued() {
        let mut out = BytesMut::new();
        put_header_block(&mut out, 3, &[7; 10], true, 4);
        let mut frames = Vec::new();
        let mut rest = &out[..];
        while let Some(h) = Header::parse(rest) {
            frames.push((h.kind, h.flags, rest[9..h.total()].to_vec()));
            rest = &rest[h.total()..];
        }
        assert_eq!(
            frames,
            vec![
                (HEADERS, END_STREAM, vec![7; 4]),
                (CONTINUATION, 0, vec![7; 4]),
                (CONTINUATION, END_HEADERS, vec![7; 2]),
            ]
        );
        let mut empty = BytesMut::new();
        put_header_block(&mut empty, 3, &[], false, 4);
        assert_eq!(&empty[..], &[0, 0, 0, HEADERS, END_HEADERS, 0, 0, 0, 3]);
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        let h = Header {
            len: 0,
            kind: HEADERS,
            flags: PADDED | PRIORITY_FLAG,
            stream: 1,
        };
        let payload = [2, 0, 0, 0, 1, 16, 0xaa, 0xbb, 0, 0];
        assert_eq!(headers_fragment(&h, &payload).unwrap(), &[0xaa, 0xbb]);
        assert_eq!(headers_fragment(&h, &[9, 1, 2]), Err(FrameError::Padding));
        assert_eq!(headers_fragment(&h, &[]), Err(FrameError::Padding));
        let short = Header {
            flags: PRIORITY_FLAG,
            ..h
        };
        assert_eq!(
            headers_fragment(&short, &[1, 2]),
            Err(FrameError::Malformed(HEADERS))
        );
    }

    #[test]
    fn settings_and_window_updates_are_read() {
        let payload = [0, 4, 0, 1, 0, 0, 0, 5, 0, 0, 0x40, 0];
        let s: Vec<_> = settings(&payload).unwrap().collect();
        assert_eq!(
            s,
            vec![
                (SETTINGS_INITIAL_WINDOW_SIZE, 65_536),
                (SETTINGS_MAX_FRAME_SIZE, 16_384)
            ]
        );
        assert!(settings(&payload[..5]).is_err());
        let mut out = BytesMut::new();
        put_window_update(&mut out, 7, 1000);
        assert_eq!(window_increment(&out[9..]).unwrap(), 1000);
        assert!(window_increment(&out[9..12]).is_err());
    }
}
