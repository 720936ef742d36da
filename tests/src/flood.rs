//! Hostile HTTP/2 clients for the attack scenarios, many per thread: each
//! connection keeps calls open whose request bodies never end, sending as
//! fast as HTTP/2 flow control lets it, and opens a new one whenever one is
//! answered or reset. A well-behaved sender, as the attack is: it never
//! overruns a window it was given, so what it holds up is what the proxy
//! chose to let in.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::raw_h2::{
    ACK, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, PREFACE, RST_STREAM, SETTINGS,
    frame, word,
};

const WINDOW_UPDATE: u8 = 8;
const DEFAULT_WINDOW: i64 = 65_535;
const MAX_FRAME: usize = 16_384;

/// A WINDOW_UPDATE's increment, its reserved bit left out.
fn increment(payload: &[u8]) -> i64 {
    i64::from(word(payload, 0) & 0x7fff_ffff)
}

/// What the whole flood has seen so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub body_bytes_sent: u64,
    pub calls_opened: u64,
    /// Answered with gRPC status 8, RESOURCE_EXHAUSTED.
    pub exhausted: u64,
    pub reset: u64,
    pub connections_lost: u64,
}

struct Open {
    window: i64,
    sent: usize,
}

/// One hostile connection.
pub struct Flooder {
    socket: UnixStream,
    path: String,
    calls: usize,
    declared: usize,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    window: i64,
    initial_window: i64,
    streams: HashMap<u32, Open>,
    next_stream: u32,
    pub alive: bool,
}

impl Flooder {
    /// Connects and says hello; `calls` at a time to `path`, each one
    /// declaring a message of `declared` bytes that never all comes.
    pub fn connect(
        socket: &Path,
        path: &str,
        calls: usize,
        declared: usize,
    ) -> std::io::Result<Flooder> {
        let socket = UnixStream::connect(socket)?;
        socket.set_nonblocking(true)?;
        let mut outbox = PREFACE.to_vec();
        frame(&mut outbox, SETTINGS, 0, 0, &[]);
        Ok(Flooder {
            socket,
            path: path.into(),
            calls,
            declared,
            inbox: Vec::new(),
            outbox,
            window: DEFAULT_WINDOW,
            initial_window: DEFAULT_WINDOW,
            streams: HashMap::new(),
            next_stream: 1,
            alive: true,
        })
    }

    fn open_call(&mut self, tally: &mut Tally) {
        let id = self.next_stream;
        self.next_stream += 2;
        let block = crate::raw_h2::header_block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", &self.path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]);
        frame(&mut self.outbox, HEADERS, END_HEADERS, id, &block);
        self.streams.insert(
            id,
            Open {
                window: self.initial_window,
                sent: 0,
            },
        );
        tally.calls_opened += 1;
    }

    /// Reads what came, sends what the windows allow; true if anything
    /// moved.
    /// How many calls to keep open from now on.
    pub fn set_calls(&mut self, calls: usize) {
        self.calls = calls;
    }

    pub fn pump(&mut self, tally: &mut Tally) -> bool {
        if !self.alive {
            return false;
        }
        let mut moved = false;
        let mut buf = [0u8; 16 << 10];
        loop {
            match self.socket.read(&mut buf) {
                Ok(0) => {
                    self.lost(tally);
                    return true;
                }
                Ok(n) => {
                    moved = true;
                    self.inbox.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.lost(tally);
                    return true;
                }
            }
        }
        self.frames(tally);
        while self.streams.len() < self.calls {
            self.open_call(tally);
        }
        // The body: a gRPC prefix that declares `declared` bytes, then as
        // much of them as the windows allow, never the end.
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            let Some(open) = self.streams.get_mut(&id) else {
                continue;
            };
            while self.outbox.len() < (256 << 10) {
                let left = (self.declared + 5).saturating_sub(open.sent + 1);
                let n = (open.window.min(self.window).max(0) as usize)
                    .min(MAX_FRAME)
                    .min(left);
                if n == 0 {
                    break;
                }
                let mut payload = vec![b'x'; n];
                if open.sent == 0 && n >= 5 {
                    payload[0] = 0;
                    payload[1..5].copy_from_slice(&(self.declared as u32).to_be_bytes());
                }
                frame(&mut self.outbox, DATA, 0, id, &payload);
                open.sent += n;
                open.window -= n as i64;
                self.window -= n as i64;
                tally.body_bytes_sent += n as u64;
            }
        }
        while !self.outbox.is_empty() {
            match self.socket.write(&self.outbox) {
                Ok(0) => break,
                Ok(n) => {
                    moved = true;
                    self.outbox.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.lost(tally);
                    return true;
                }
            }
        }
        moved
    }

    fn lost(&mut self, tally: &mut Tally) {
        if self.alive {
            self.alive = false;
            tally.connections_lost += 1;
        }
    }

    fn frames(&mut self, tally: &mut Tally) {
        let mut at = 0;
        while self.inbox.len() >= at + 9 {
            let h = &self.inbox[at..at + 9];
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            if self.inbox.len() < at + 9 + len {
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload = self.inbox[at + 9..at + 9 + len].to_vec();
            at += 9 + len;
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    for setting in payload.chunks_exact(6) {
                        if u16::from_be_bytes([setting[0], setting[1]]) == 4 {
                            let value = i64::from(word(setting, 2));
                            let delta = value - self.initial_window;
                            self.initial_window = value;
                            for open in self.streams.values_mut() {
                                open.window += delta;
                            }
                        }
                    }
                    frame(&mut self.outbox, SETTINGS, ACK, 0, &[]);
                }
                PING if flags & ACK == 0 => frame(&mut self.outbox, PING, ACK, 0, &payload),
                WINDOW_UPDATE if id == 0 => self.window += increment(&payload),
                WINDOW_UPDATE => {
                    if let Some(open) = self.streams.get_mut(&id) {
                        open.window += increment(&payload);
                    }
                }
                HEADERS if flags & END_STREAM != 0 => {
                    // The proxy writes its own header blocks without
                    // Huffman coding: the field is there as written.
                    if payload.windows(13).any(|w| w == b"grpc-status\x018") {
                        tally.exhausted += 1;
                    }
                    self.streams.remove(&id);
                }
                RST_STREAM if self.streams.remove(&id).is_some() => tally.reset += 1,
                GOAWAY => {
                    self.lost(tally);
                }
                _ => {}
            }
        }
        self.inbox.drain(..at);
    }
}
