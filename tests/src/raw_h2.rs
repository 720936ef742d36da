//! A deliberately naive HTTP/2 client for what no real client library
//! sends on request (repeated pseudo-headers, a PING when we say): literal
//! header fields only, one call at a time, frames read until it ends.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(crate) const DATA: u8 = 0;
pub(crate) const HEADERS: u8 = 1;
pub(crate) const RST_STREAM: u8 = 3;
pub(crate) const SETTINGS: u8 = 4;
pub(crate) const PING: u8 = 6;
pub(crate) const GOAWAY: u8 = 7;
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
pub(crate) const ACK: u8 = 0x1;

/// How the one stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// HEADERS with END_STREAM: a response or its trailers, the header
    /// block as it came (readable when the proxy wrote it: it uses no
    /// Huffman coding).
    Answered(Vec<u8>),
    Reset(u32),
    GoAway(u32),
    Closed,
}

pub(crate) fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// Literal fields without indexing, new names, no Huffman coding.
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        integer(&mut block, 0, 7, name.len());
        block.extend_from_slice(name.as_bytes());
        integer(&mut block, 0, 7, value.len());
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// Sends one request (`fields` as given, `message` as one gRPC message) on
/// stream 1 of a connection of its own and waits up to `wait` for the
/// stream to end.
pub fn call(
    socket: &Path,
    fields: &[(&str, &str)],
    message: &[u8],
    wait: Duration,
) -> std::io::Result<Ending> {
    Connection::open(socket, wait)?.call(fields, message)
}

/// The big-endian u32 at `at` in a frame payload; 0 when it is too short.
pub(crate) fn word(payload: &[u8], at: usize) -> u32 {
    payload
        .get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// One HTTP/2 connection: calls one after another, and PINGs.
pub struct Connection {
    stream: UnixStream,
    next_stream: u32,
}

/// What came back to a PING.
#[derive(Debug, PartialEq, Eq)]
pub enum Pong {
    Answered,
    GoAway { code: u32, debug: String },
    Closed,
}

enum Incoming {
    Frame {
        kind: u8,
        flags: u8,
        id: u32,
        payload: Vec<u8>,
    },
    Closed,
}

impl Connection {
    /// Connects, sends the preface and empty SETTINGS; reads wait up to
    /// `wait` each.
    pub fn open(socket: &Path, wait: Duration) -> std::io::Result<Connection> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(wait))?;
        let mut out = PREFACE.to_vec();
        frame(&mut out, SETTINGS, 0, 0, &[]);
        stream.write_all(&out)?;
        Ok(Connection {
            stream,
            next_stream: 1,
        })
    }

    /// The next frame, SETTINGS acknowledged on the way.
    fn read(&mut self) -> std::io::Result<Incoming> {
        let mut head = [0u8; 9];
        if let Err(e) = self.stream.read_exact(&mut head) {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                    Ok(Incoming::Closed)
                }
                _ => Err(e),
            };
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload)?;
        if kind == SETTINGS && flags & ACK == 0 {
            let mut ack = Vec::new();
            frame(&mut ack, SETTINGS, ACK, 0, &[]);
            self.stream.write_all(&ack)?;
        }
        Ok(Incoming::Frame {
            kind,
            flags,
            id,
            payload,
        })
    }

    /// Sends one request on the next stream and reads until it ends.
    pub fn call(&mut self, fields: &[(&str, &str)], message: &[u8]) -> std::io::Result<Ending> {
        let id = self.next_stream;
        self.next_stream += 2;
        let mut out = Vec::new();
        frame(&mut out, HEADERS, END_HEADERS, id, &header_block(fields));
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        frame(&mut out, DATA, END_STREAM, id, &body);
        self.stream.write_all(&out)?;
        loop {
            let Incoming::Frame {
                kind,
                flags,
                id: on,
                payload,
            } = self.read()?
            else {
                return Ok(Ending::Closed);
            };
            match kind {
                HEADERS if on == id && flags & END_STREAM != 0 => {
                    return Ok(Ending::Answered(payload));
                }
                RST_STREAM if on == id => return Ok(Ending::Reset(word(&payload, 0))),
                GOAWAY => return Ok(Ending::GoAway(word(&payload, 4))),
                _ => {}
            }
        }
    }

    /// Sends a PING and reads until its answer, a GOAWAY or the end.
    pub fn ping(&mut self, payload: [u8; 8]) -> std::io::Result<Pong> {
        let mut out = Vec::new();
        frame(&mut out, PING, 0, 0, &payload);
        self.stream.write_all(&out)?;
        loop {
            match self.read()? {
                Incoming::Closed => return Ok(Pong::Closed),
                Incoming::Frame {
                    kind: PING,
                    flags,
                    payload: answer,
                    ..
                } if flags & ACK != 0 && answer == payload => return Ok(Pong::Answered),
                Incoming::Frame {
                    kind: GOAWAY,
                    payload: goaway,
                    ..
                } => {
                    let code = word(&goaway, 4);
                    let debug = String::from_utf8_lossy(goaway.get(8..).unwrap_or_default());
                    return Ok(Pong::GoAway {
                        code,
                        debug: debug.into_owned(),
                    });
                }
                Incoming::Frame { .. } => {}
            }
        }
    }
}

impl Ending {
    /// Whether the answer's header block holds `text` as written.
    pub fn says(&self, text: &str) -> bool {
        match self {
            Ending::Answered(block) => block.windows(text.len()).any(|w| w == text.as_bytes()),
            _ => false,
        }
    }
}
