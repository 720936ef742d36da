//! The relay's state machine (`attestgate_proxy::relay`) driven through
//! whole connections and held to what it promises; shared by the fuzz
//! target `relay` and the CI test `cri-proxy/tests/relay_fuzz.rs`.
//!
//! An input is one connection: what the client (kubelet) and the server
//! (containerd) write, well-formed frames or raw bytes, cut anywhere; the
//! replies to the calls the relay hands out; and the connection's own
//! requests (drain, release the held PING answers). [`run`] drives a
//! [`Relay`] through them as the connection's driver would, takes out
//! everything the relay wrote after each step and reads it as the peers
//! would, and a [`Checker`] holds it to this:
//!
//! - a muted stream (one whose `:path`, as the server decodes the block it
//!   gets, is taken out or refused; one opened after a drain; one the
//!   relay reset toward the server; one handed out as a call) never has
//!   DATA or END_STREAM sent to the server, however long after it closed;
//!   and the block of one muted by its `:path` is followed by
//!   RST_STREAM CANCEL at once;
//! - a call is handed out once, only for a stream muted because its
//!   `:path` is taken out, after the client ended it, with the body the
//!   client sent;
//! - no window below zero: DATA to the client stays within its
//!   connection window (and the relay counts that window as the client
//!   does), the relay's own DATA on a muted stream within that stream's
//!   window (SETTINGS_INITIAL_WINDOW_SIZE applied as RFC 9113 §6.9.2 says,
//!   and WINDOW_UPDATEs), and the client is never given connection window
//!   beyond what the server gave and what the relay swallowed;
//! - no frame to the client larger than its SETTINGS_MAX_FRAME_SIZE,
//!   except the server's own passed on as they came;
//! - the relay's replies on a muted stream come only once the server
//!   acknowledged a SETTINGS frame sent after its reset, and nothing of the
//!   relay's follows the end of a stream the client heard;
//! - nothing comes between a header block's frames, in either direction;
//! - GOAWAY's last stream id toward the client never rises;
//! - output is whole frames; the server gets the preface and the client's
//!   SETTINGS first, the client nothing before the server's SETTINGS;
//! - no panic; an error only for a protocol violation (after one, the
//!   connection ends and nothing more is fed).
//!
//! Where a peer breaks the protocol in a way the relay passes on as it
//! came (the server speaking on a stream the client never opened, or on a
//! muted one after acknowledging the marker behind its reset, frames
//! larger than the client allows, a header block it interrupts itself,
//! the client sending DATA ahead of a stream's HEADERS, ...), the check is
//! narrowed to what the relay itself wrote, as said where it is: the
//! server's frames passed on are told from the relay's own by their bytes.
//!
//! Violations are classed; [`KNOWN`] lists the classes of relay bugs
//! found and not yet fixed, with their minimal inputs, which [`run`]
//! tolerates when asked to (so that fuzzing goes on past them).
//!
//! Records, until the input ends; missing bytes read as zero, integers
//! are big-endian, `u8 n` then `n` bytes for raw bytes. The tag is taken
//! modulo 24:
//!
//! ```text
//!  0 client HEADERS       path, flags, variant  (see `client_headers`)
//!  1 client DATA          stream, u16 length, flags (1 END_STREAM, 2 PADDED)
//!  2 client WINDOW_UPDATE stream, u32 increment
//!  3 client SETTINGS      flags (1 initial window, 2 max frame, 4 no push),
//!                         u32 initial window, u32 max frame
//!  4 client SETTINGS ACK
//!  5 client PING          ack
//!  6 client RST_STREAM    stream, code
//!  7 client PRIORITY      stream
//!  8 client raw bytes     flags (1: even ahead of the preface), u8 n, bytes
//!  9 server SETTINGS      flags (1: a header table size), u32 size
//! 10 server SETTINGS ACK  (only while one is outstanding)
//! 11 server HEADERS       stream, flags (1 END_STREAM, 2 CONTINUATION held
//!                         back for later, 4 a block past 16 KiB, 8 trailers)
//! 12 server CONTINUATION  (the one held back, if any)
//! 13 server DATA          stream, u16 length, flags (1 END_STREAM, 2 PADDED)
//! 14 server WINDOW_UPDATE stream, u32 increment
//! 15 server RST_STREAM    stream, code
//! 16 server PING          ack
//! 17 server GOAWAY        stream, code
//! 18 server raw bytes     u8 n, bytes
//! 19 reply                call, size, flags (1 trailers, 2 a head past 16 KiB)
//! 20 drain
//! 21 release held PING answers
//! 22 split                side (1 server), u16: its next write is cut there
//! 23 flush                side: what is left of a cut write goes
//! 24 stall passes         calls held back for want of memory budget have
//!                         waited out their time (the relay's budget is
//!                         small, `MODEL_BUDGET`)
//! ```
//!
//! A `stream` byte picks, modulo their number plus two, stream 0, a stream
//! never opened, or one of the streams the client opened (the client's
//! ops) or the server was told of (the server's ops), most recent first.
//! A `call` picks one of the calls handed out, or another stream.
//! Well-formed ops of a peer start with its preface (and, for the client,
//! an empty SETTINGS) if it has not sent one yet. A peer's raw bytes, and
//! the client's HEADERS that open no new stream or name an index past its
//! dynamic table, make it misbehave: then an error from the relay is no
//! finding.

// Each includer uses its own part of this module.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use attestgate_proxy::relay::frame::{self, Header};
use attestgate_proxy::relay::{Budget, Handling, Hooks, Refusal, Relay, RelayError, Reply, hpack};
use bytes::{BufMut, Bytes, BytesMut};

/// Paths the client's well-formed HEADERS name.
pub const PATHS: &[&str] = &[
    "/runtime.v1.RuntimeService/Version",
    "/runtime.v1.ImageService/PullImage",
    "/runtime.v1.RuntimeService/CreateContainer",
    "/not.served.Images/Create",
    "/runtime.v1.ImageService/ImageStatus",
    "/runtime.v1alpha2.ImageService/PullImage",
    // Taken out, but no request target: refused for its head.
    "/bad path/PullImage",
    "/",
];

/// How the model's hooks classify a `:path`.
pub fn handling(path: &str) -> Handling<()> {
    if path.starts_with("/not.served.") {
        Handling::Refuse
    } else if path.ends_with("/PullImage") || path.ends_with("/CreateContainer") {
        Handling::TakeOut(())
    } else {
        Handling::Relay
    }
}

/// Hooks that classify by [`handling`] and refuse as a gRPC server would
/// (a bad head with a body and trailers too, so that refusals take every
/// way of injection).
pub struct ModelHooks;

impl Hooks for ModelHooks {
    type Kind = ();

    fn handling(&self, path: &str) -> Handling<()> {
        handling(path)
    }

    fn opened(&mut self, _path: &[u8]) {}

    fn refusal(&self, refusal: Refusal) -> Reply {
        let mut head = BytesMut::new();
        hpack::encode_field(&mut head, b":status", b"200");
        hpack::encode_field(&mut head, b"x-refused-by", b"relay-model");
        let (code, message) = match &refusal {
            Refusal::NotServed(path) => ("12", path.clone()),
            Refusal::BadHead(e) => ("3", e.clone()),
            Refusal::TooLarge(n) | Refusal::OverBudget(n) => ("8", n.to_string()),
        };
        if let Refusal::BadHead(_) = refusal {
            let mut trailers = BytesMut::new();
            hpack::encode_field(&mut trailers, b"grpc-status", code.as_bytes());
            return Reply {
                head: head.freeze(),
                data: Bytes::from(vec![b'b'; 3000]),
                trailers: Some(trailers.freeze()),
            };
        }
        hpack::encode_field(&mut head, b"grpc-status", code.as_bytes());
        hpack::encode_field(&mut head, b"grpc-message", message.as_bytes());
        Reply {
            head: head.freeze(),
            data: Bytes::new(),
            trailers: None,
        }
    }
}

// ---- the input ----

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    ClientHeaders {
        path: u8,
        flags: u8,
        variant: u8,
    },
    ClientData {
        stream: u8,
        len: u16,
        flags: u8,
    },
    ClientWindowUpdate {
        stream: u8,
        increment: u32,
    },
    ClientSettings {
        flags: u8,
        initial_window: u32,
        max_frame: u32,
    },
    ClientSettingsAck,
    ClientPing {
        ack: bool,
    },
    ClientRst {
        stream: u8,
        code: u8,
    },
    ClientPriority {
        stream: u8,
    },
    ClientRaw {
        first: bool,
        bytes: Vec<u8>,
    },
    ServerSettings {
        table_size: Option<u32>,
    },
    ServerSettingsAck,
    ServerHeaders {
        stream: u8,
        flags: u8,
    },
    ServerContinuation,
    ServerData {
        stream: u8,
        len: u16,
        flags: u8,
    },
    ServerWindowUpdate {
        stream: u8,
        increment: u32,
    },
    ServerRst {
        stream: u8,
        code: u8,
    },
    ServerPing {
        ack: bool,
    },
    ServerGoaway {
        stream: u8,
        code: u8,
    },
    ServerRaw {
        bytes: Vec<u8>,
    },
    Reply {
        call: u8,
        size: u8,
        flags: u8,
    },
    Drain,
    ReleaseAcks,
    Split {
        server: bool,
        at: u16,
    },
    Flush {
        server: bool,
    },
    /// Calls stalled for want of memory budget wait out their time.
    StallPasses,
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.u8()).min(self.0.len());
        let (bytes, rest) = self.0.split_at(n);
        self.0 = rest;
        bytes.to_vec()
    }
}

/// The records of an input (see the module's documentation).
pub fn parse(input: &[u8]) -> Vec<Op> {
    let mut r = Input(input);
    let mut ops = Vec::new();
    while !r.0.is_empty() {
        let op = match r.u8() % 25 {
            0 => Op::ClientHeaders {
                path: r.u8(),
                flags: r.u8(),
                variant: r.u8(),
            },
            1 => Op::ClientData {
                stream: r.u8(),
                len: r.u16(),
                flags: r.u8(),
            },
            2 => Op::ClientWindowUpdate {
                stream: r.u8(),
                increment: r.u32(),
            },
            3 => Op::ClientSettings {
                flags: r.u8(),
                initial_window: r.u32(),
                max_frame: r.u32(),
            },
            4 => Op::ClientSettingsAck,
            5 => Op::ClientPing {
                ack: r.u8() & 1 == 1,
            },
            6 => Op::ClientRst {
                stream: r.u8(),
                code: r.u8(),
            },
            7 => Op::ClientPriority { stream: r.u8() },
            8 => Op::ClientRaw {
                first: r.u8() & 1 == 1,
                bytes: r.bytes(),
            },
            9 => {
                let flags = r.u8();
                let size = r.u32();
                Op::ServerSettings {
                    table_size: (flags & 1 == 1).then_some(size),
                }
            }
            10 => Op::ServerSettingsAck,
            11 => Op::ServerHeaders {
                stream: r.u8(),
                flags: r.u8(),
            },
            12 => Op::ServerContinuation,
            13 => Op::ServerData {
                stream: r.u8(),
                len: r.u16(),
                flags: r.u8(),
            },
            14 => Op::ServerWindowUpdate {
                stream: r.u8(),
                increment: r.u32(),
            },
            15 => Op::ServerRst {
                stream: r.u8(),
                code: r.u8(),
            },
            16 => Op::ServerPing {
                ack: r.u8() & 1 == 1,
            },
            17 => Op::ServerGoaway {
                stream: r.u8(),
                code: r.u8(),
            },
            18 => Op::ServerRaw { bytes: r.bytes() },
            19 => Op::Reply {
                call: r.u8(),
                size: r.u8(),
                flags: r.u8(),
            },
            20 => Op::Drain,
            21 => Op::ReleaseAcks,
            22 => Op::Split {
                server: r.u8() & 1 == 1,
                at: r.u16(),
            },
            24 => Op::StallPasses,
            _ => Op::Flush {
                server: r.u8() & 1 == 1,
            },
        };
        ops.push(op);
    }
    ops
}

/// The input `parse` reads back as `ops` (raw bytes past 255 are cut).
pub fn serialize(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    let raw = |out: &mut Vec<u8>, bytes: &[u8]| {
        let n = bytes.len().min(255);
        out.push(n as u8);
        out.extend_from_slice(&bytes[..n]);
    };
    for op in ops {
        match op {
            Op::ClientHeaders {
                path,
                flags,
                variant,
            } => out.extend([0, *path, *flags, *variant]),
            Op::ClientData { stream, len, flags } => {
                out.extend([1, *stream]);
                out.extend(len.to_be_bytes());
                out.push(*flags);
            }
            Op::ClientWindowUpdate { stream, increment } => {
                out.extend([2, *stream]);
                out.extend(increment.to_be_bytes());
            }
            Op::ClientSettings {
                flags,
                initial_window,
                max_frame,
            } => {
                out.extend([3, *flags]);
                out.extend(initial_window.to_be_bytes());
                out.extend(max_frame.to_be_bytes());
            }
            Op::ClientSettingsAck => out.push(4),
            Op::ClientPing { ack } => out.extend([5, u8::from(*ack)]),
            Op::ClientRst { stream, code } => out.extend([6, *stream, *code]),
            Op::ClientPriority { stream } => out.extend([7, *stream]),
            Op::ClientRaw { first, bytes } => {
                out.extend([8, u8::from(*first)]);
                raw(&mut out, bytes);
            }
            Op::ServerSettings { table_size } => {
                out.extend([9, u8::from(table_size.is_some())]);
                out.extend(table_size.unwrap_or(0).to_be_bytes());
            }
            Op::ServerSettingsAck => out.push(10),
            Op::ServerHeaders { stream, flags } => out.extend([11, *stream, *flags]),
            Op::ServerContinuation => out.push(12),
            Op::ServerData { stream, len, flags } => {
                out.extend([13, *stream]);
                out.extend(len.to_be_bytes());
                out.push(*flags);
            }
            Op::ServerWindowUpdate { stream, increment } => {
                out.extend([14, *stream]);
                out.extend(increment.to_be_bytes());
            }
            Op::ServerRst { stream, code } => out.extend([15, *stream, *code]),
            Op::ServerPing { ack } => out.extend([16, u8::from(*ack)]),
            Op::ServerGoaway { stream, code } => out.extend([17, *stream, *code]),
            Op::ServerRaw { bytes } => {
                out.push(18);
                raw(&mut out, bytes);
            }
            Op::Reply { call, size, flags } => out.extend([19, *call, *size, *flags]),
            Op::Drain => out.push(20),
            Op::ReleaseAcks => out.push(21),
            Op::Split { server, at } => {
                out.extend([22, u8::from(*server)]);
                out.extend(at.to_be_bytes());
            }
            Op::Flush { server } => out.extend([23, u8::from(*server)]),
            Op::StallPasses => out.push(24),
        }
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- what must hold ----

/// A class of violation, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub class: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.class, self.message)
    }
}

fn broken(class: &'static str, message: String) -> Result<(), Violation> {
    Err(Violation { class, message })
}

/// Relay bugs known and not fixed yet, each with a minimal input that
/// shows it (class, what, input). `run` tolerates these classes when
/// asked to, the fuzz target reports each once, and the CI test checks
/// that each input still shows its bug, so a fix moves its entry to
/// `FIXED`.
pub const KNOWN: &[(&str, &str, &[u8])] = &[];

/// Relay bugs this harness found that are fixed, each with the minimal
/// input that showed it: held strictly, as regressions.
pub const FIXED: &[(&str, &str, &[u8])] = &[
    (
        "before-server-settings",
        "window given back for a muted call's DATA goes to the client at once, even before \
         the server's SETTINGS: `pump` flushes `control` without looking at \
         `upstream_preface_relayed` (only client PINGs do)",
        // Client HEADERS PullImage, DATA of one byte on it; the server
        // silent: WINDOW_UPDATE 1 and 0 go to the client.
        &[0, 1, 0, 0, 1, 2, 0, 1, 0],
    ),
    (
        "before-server-settings",
        "a drain's GOAWAY goes to the client at once, even before the server's SETTINGS",
        // Drain, nothing else.
        &[20],
    ),
    (
        "goaway-rises",
        "after the relay's GOAWAY (a drain), the server's GOAWAY passes as it came, with a \
         higher last stream id when the server got streams the relay refused after it (or \
         when it shuts down gracefully, 2^31 - 1 first); grpc-go clients close the \
         connection over a rise",
        // Server SETTINGS, drain (GOAWAY 0), client HEADERS Version on
        // stream 1 (refused), server GOAWAY naming stream 1.
        &[9, 0, 0, 0, 0, 0, 20, 0, 0, 1, 0, 17, 2, 0],
    ),
    (
        "server-preface",
        "`release_acks` queues the answer to a server PING for the server even before the \
         client's preface (the 24 octets and its SETTINGS) went to it: the PING ACK comes \
         first, or between the octets and the SETTINGS when the client's first write was cut \
         there (`client_frames` releases held answers whenever it wrote anything, the octets \
         included). The server, which may PING right after its own SETTINGS, ends the \
         connection over the bogus greeting. The driver also releases held answers after \
         `HOLD` (1 ms) whether or not the client spoke",
        // Server SETTINGS and PING; the hold passes.
        &[16, 0, 21],
    ),
    (
        "split-push-promise",
        "the relay follows the server's HEADERS blocks but not its PUSH_PROMISE blocks \
         (`upstream_in_block` is set for HEADERS only), so a reply, a window update or a reset \
         of its own can go between a PUSH_PROMISE without END_HEADERS and its CONTINUATION. \
         Only a server that pushes to a client that did not disable push can make it happen; \
         containerd never pushes",
        // Server SETTINGS; the client calls Version (1) and PullImage (3);
        // the server acknowledges both SETTINGS, sends a PUSH_PROMISE on
        // stream 1 without END_HEADERS; the reply to 3 goes in the middle.
        &[
            9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 10, 10, 18, 14, 0, 0, 5, 5, 0, 0, 0, 0, 1, 0,
            0, 0, 2, 0x88, 19, 0, 1, 0,
        ],
    ),
];

/// Why a stream the client opened is muted, by its header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Relayed,
    TakenOut,
    Refused,
    /// Opened after the relay was asked to drain.
    Draining,
}

/// One direction's bytes read as frames, as its receiver reads them.
struct Reader {
    buf: Vec<u8>,
    at: usize,
    preface: bool,
}

impl Reader {
    fn new(preface: bool) -> Reader {
        Reader {
            buf: Vec::new(),
            at: 0,
            preface,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.at
    }

    /// The preface, once all of it is there or what is there cannot
    /// begin it: whether it is the preface.
    fn preface(&mut self) -> Option<bool> {
        if !self.preface {
            return None;
        }
        let there = &self.buf[self.at..];
        if !frame::PREFACE.starts_with(&there[..there.len().min(frame::PREFACE.len())]) {
            return Some(false);
        }
        if there.len() < frame::PREFACE.len() {
            return None;
        }
        let ok = &self.buf[self.at..self.at + frame::PREFACE.len()] == frame::PREFACE;
        self.at += frame::PREFACE.len();
        self.preface = false;
        Some(ok)
    }

    /// The next whole frame: its header and its bytes, header included.
    fn next(&mut self) -> Option<(Header, Vec<u8>)> {
        if self.preface {
            return None;
        }
        let rest = &self.buf[self.at..];
        let h = Header::parse(rest)?;
        let raw = rest.get(..h.total())?.to_vec();
        self.at += h.total();
        Some((h, raw))
    }
}

/// A stream as the client sees it: the window it gives, what it sent.
struct ClientStream {
    /// Initial window plus changes plus updates: what DATA on the stream
    /// may total.
    credit: i64,
    /// The most `credit` was during this step: the relay may have sent
    /// at any point of it (a later SETTINGS may lower the window).
    high: i64,
    /// The request body, while it may be handed out.
    body: Option<Vec<u8>>,
    ended: bool,
    /// The client's updates took the window past 2^31 - 1.
    overflowed: bool,
}

/// What the server sent on a muted stream, to tell its frames passed on
/// from the relay's own.
#[derive(Default)]
struct ServerCopies {
    frames: Vec<Vec<u8>>,
    data: Vec<Vec<u8>>,
    /// What is left of a DATA frame the relay passed on in part.
    rest: Option<Vec<u8>>,
}

/// A stream the server was told of: the block it got, what followed.
struct UpStream {
    class: Class,
    paths: Vec<String>,
    /// RST_STREAM frames the server got on it.
    resets: u32,
    /// SETTINGS frames the server had got when the relay reset the
    /// stream: the next one's acknowledgement is its fence.
    reset_at: Option<u64>,
    /// What the server got that a muted stream must never send: the first.
    sent: Option<&'static str>,
}

pub struct Checker {
    tolerate: bool,
    /// Known violations tolerated: class, and the first message.
    pub known_seen: Vec<(&'static str, String)>,

    // The client, as the relay read it.
    client: Reader,
    conn_credit: i64,
    initial_window: i64,
    max_frame: usize,
    max_frame_high: usize,
    push_disabled: bool,
    client_resets: HashMap<u32, u32>,
    client_data: u64,
    client_streams: HashMap<u32, ClientStream>,
    client_block: Option<(u32, bool)>,
    changed: Vec<u32>,

    // The server, as the relay read it.
    server: Reader,
    /// Whether its first frame was a SETTINGS (its preface).
    server_began: Option<bool>,
    server_acks: u64,
    acks_broken: bool,
    server_window: u64,
    server_max_len: HashMap<u32, usize>,
    server_block: Option<u32>,
    server_block_broken: bool,
    server_goaway: Option<u32>,
    server_goaway_rose: bool,
    copies: HashMap<u32, ServerCopies>,
    /// Streams the server spoke on before the client opened them, its
    /// PROTOCOL_ERROR (§5.1): what the client hears on them later is not
    /// told apart.
    tainted: HashSet<u32>,

    // What the relay wrote to the server.
    up: Reader,
    decoder: hpack::Decoder,
    up_first: bool,
    up_block: Option<(u32, Vec<u8>)>,
    up_expect_reset: Option<(u32, Class)>,
    up_settings: u64,
    up_data: u64,
    up_streams: HashMap<u32, UpStream>,
    up_order: Vec<u32>,
    last_opened: u32,
    drain_last: Option<u32>,
    muted: HashMap<u32, &'static str>,
    handed_out: HashSet<u32>,

    // What the relay wrote to the client.
    down: Reader,
    down_started: bool,
    /// The header block being written: stream, the relay's own, whether
    /// it ends a stream the client had opened, whether it is a
    /// PUSH_PROMISE's.
    down_block: Option<(u32, bool, bool, bool)>,
    down_data: u64,
    down_window: u64,
    down_goaway: Option<u32>,
    down_ended: HashSet<u32>,
    injected: HashMap<u32, i64>,
    touched: Vec<u32>,

    pub stats: Stats,
}

/// What a run reached, so that a test can tell it tested something.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub ops: u64,
    pub steps: u64,
    pub relayed: u64,
    pub taken_out: u64,
    pub refused: u64,
    pub draining: u64,
    pub calls: u64,
    pub replies: u64,
    /// Muted streams the relay's own frames ended toward the client.
    pub answered: u64,
    pub injected_bytes: u64,
    pub window_exhausted: u64,
    /// Steps that used up a muted stream's window.
    pub stream_window_exhausted: u64,
    /// Steps that ended inside a header block of the server's.
    pub blocks_held: u64,
    pub relay_errors: u64,
    pub misbehaved: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.ops += o.ops;
        self.steps += o.steps;
        self.relayed += o.relayed;
        self.taken_out += o.taken_out;
        self.refused += o.refused;
        self.draining += o.draining;
        self.calls += o.calls;
        self.replies += o.replies;
        self.answered += o.answered;
        self.injected_bytes += o.injected_bytes;
        self.window_exhausted += o.window_exhausted;
        self.stream_window_exhausted += o.stream_window_exhausted;
        self.blocks_held += o.blocks_held;
        self.relay_errors += o.relay_errors;
        self.misbehaved += o.misbehaved;
    }
}

impl Default for Checker {
    fn default() -> Self {
        Checker::new(false)
    }
}

impl Checker {
    /// `tolerate`: the classes in [`KNOWN`] are recorded, not violations.
    pub fn new(tolerate: bool) -> Checker {
        Checker {
            tolerate,
            known_seen: Vec::new(),
            client: Reader::new(true),
            conn_credit: frame::DEFAULT_WINDOW,
            initial_window: frame::DEFAULT_WINDOW,
            max_frame: frame::DEFAULT_MAX_FRAME,
            max_frame_high: frame::DEFAULT_MAX_FRAME,
            push_disabled: false,
            client_resets: HashMap::new(),
            client_data: 0,
            client_streams: HashMap::new(),
            client_block: None,
            changed: Vec::new(),
            server: Reader::new(false),
            server_began: None,
            server_acks: 0,
            acks_broken: false,
            server_window: 0,
            server_max_len: HashMap::new(),
            server_block: None,
            server_block_broken: false,
            server_goaway: None,
            server_goaway_rose: false,
            copies: HashMap::new(),
            tainted: HashSet::new(),
            up: Reader::new(true),
            decoder: hpack::Decoder::new(),
            up_first: false,
            up_block: None,
            up_expect_reset: None,
            up_settings: 0,
            up_data: 0,
            up_streams: HashMap::new(),
            up_order: Vec::new(),
            last_opened: 0,
            drain_last: None,
            muted: HashMap::new(),
            handed_out: HashSet::new(),
            down: Reader::new(false),
            down_started: false,
            down_block: None,
            down_data: 0,
            down_window: 0,
            down_goaway: None,
            down_ended: HashSet::new(),
            injected: HashMap::new(),
            touched: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// A known class is recorded when tolerated; anything else fails.
    fn known(&mut self, class: &'static str, message: String) -> Result<(), Violation> {
        if self.tolerate && KNOWN.iter().any(|(c, _, _)| *c == class) {
            if !self.known_seen.iter().any(|(c, _)| *c == class) {
                self.known_seen.push((class, message));
            }
            return Ok(());
        }
        broken(class, message)
    }

    /// The streams the server was told of, in order.
    pub fn upstream_streams(&self) -> &[u32] {
        &self.up_order
    }

    /// SETTINGS frames the server got.
    pub fn upstream_settings(&self) -> u64 {
        self.up_settings
    }

    /// The largest frame the client takes now.
    pub fn client_max_frame(&self) -> usize {
        self.max_frame
    }

    /// The relay is asked to drain: streams the client opens from now on
    /// are refused.
    pub fn drain(&mut self) {
        if self.drain_last.is_none() {
            self.drain_last = Some(self.last_opened);
        }
    }

    fn fenced(&self, stream: u32) -> bool {
        self.up_streams
            .get(&stream)
            .and_then(|s| s.reset_at)
            .is_some_and(|at| self.server_acks > at)
    }

    /// A stream's credit changed: the step's high mark follows it up, and
    /// the next step starts from it.
    fn credit_changed(&mut self, stream: u32) {
        if let Some(s) = self.client_streams.get_mut(&stream) {
            s.high = s.high.max(s.credit);
            self.changed.push(stream);
        }
    }

    /// Bytes of the client's that the relay read (took off `from_client`).
    pub fn client_read(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        self.client.push(bytes);
        // Only a preface the relay took gets here: it checks it.
        let _ = self.client.preface();
        while let Some((h, raw)) = self.client.next() {
            let payload = &raw[frame::HEADER_LEN..];
            let s = h.stream;
            match h.kind {
                frame::SETTINGS if !h.has(frame::ACK) && payload.len() % 6 == 0 => {
                    for p in payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([p[0], p[1]]);
                        let value = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                        match id {
                            frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                                // Past 2^31 - 1 it is the client's
                                // FLOW_CONTROL_ERROR (§6.5.2), which the
                                // relay reads as the largest window.
                                let value = i64::from(value).min(frame::MAX_WINDOW);
                                let delta = value - self.initial_window;
                                self.initial_window = value;
                                let streams: Vec<u32> =
                                    self.client_streams.keys().copied().collect();
                                for id in streams {
                                    if let Some(cs) = self.client_streams.get_mut(&id) {
                                        cs.credit += delta;
                                    }
                                    self.credit_changed(id);
                                }
                            }
                            frame::SETTINGS_MAX_FRAME_SIZE => {
                                // Outside 2^14 ..= 2^24 - 1 it is the
                                // client's PROTOCOL_ERROR; the relay reads
                                // it as the nearest bound.
                                self.max_frame =
                                    (value as usize).clamp(frame::DEFAULT_MAX_FRAME, 0xff_ffff);
                                self.max_frame_high = self.max_frame_high.max(self.max_frame);
                            }
                            0x2 => self.push_disabled = value == 0,
                            _ => {}
                        }
                    }
                }
                frame::WINDOW_UPDATE if payload.len() == 4 => {
                    let increment = i64::from(
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                            & 0x7fff_ffff,
                    );
                    if s == 0 {
                        self.conn_credit += increment;
                    } else if let Some(cs) = self.client_streams.get_mut(&s) {
                        cs.credit += increment;
                        // A window past 2^31 - 1 is the client's stream
                        // error (§6.9.1), which the relay reads as the
                        // largest window: not checked from then on. The
                        // window is what the credit leaves of the relay's
                        // DATA (the server's is dropped while muted).
                        let sent = self.injected.get(&s).copied().unwrap_or(0);
                        cs.overflowed |= cs.credit - sent > frame::MAX_WINDOW;
                        self.credit_changed(s);
                    }
                }
                frame::HEADERS => {
                    self.client_streams.entry(s).or_insert(ClientStream {
                        credit: self.initial_window,
                        high: self.initial_window,
                        body: Some(Vec::new()),
                        ended: false,
                        overflowed: false,
                    });
                    let end = h.has(frame::END_STREAM);
                    if h.has(frame::END_HEADERS) {
                        self.client_block = None;
                        if end && let Some(cs) = self.client_streams.get_mut(&s) {
                            cs.ended = true;
                        }
                    } else {
                        self.client_block = Some((s, end));
                    }
                }
                frame::CONTINUATION if h.has(frame::END_HEADERS) => {
                    if let Some((s, true)) = self.client_block.take()
                        && let Some(cs) = self.client_streams.get_mut(&s)
                    {
                        cs.ended = true;
                    }
                }
                frame::DATA => {
                    self.client_data += h.len as u64;
                    if let Some(cs) = self.client_streams.get_mut(&s)
                        && !cs.ended
                    {
                        if let (Some(body), Ok(data)) = (&mut cs.body, frame::unpad(&h, payload)) {
                            body.extend_from_slice(data);
                        }
                        cs.ended = h.has(frame::END_STREAM);
                    }
                }
                frame::RST_STREAM => *self.client_resets.entry(s).or_default() += 1,
                _ => {}
            }
        }
        Ok(())
    }

    /// Bytes of the server's that the relay read.
    pub fn server_read(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        self.server.push(bytes);
        while let Some((h, raw)) = self.server.next() {
            let payload = &raw[frame::HEADER_LEN..];
            let s = h.stream;
            if self.server_began.is_none() {
                self.server_began = Some(h.kind == frame::SETTINGS && !h.has(frame::ACK));
            }
            let max = self.server_max_len.entry(s).or_default();
            *max = (*max).max(h.len);
            match self.server_block {
                Some(open) if h.kind == frame::CONTINUATION => {
                    // A CONTINUATION of another stream is the server's
                    // PROTOCOL_ERROR, passed on as it came.
                    self.server_block_broken |= open != s;
                    if h.has(frame::END_HEADERS) {
                        self.server_block = None;
                    }
                }
                Some(_) => {
                    // Any other frame inside its block is the server's
                    // PROTOCOL_ERROR (§6.10) too; the relay ends the
                    // connection over it after HEADERS, and passes it on
                    // after PUSH_PROMISE, whose blocks it does not follow.
                    self.server_block_broken = true;
                    self.server_block = None;
                }
                None if matches!(h.kind, frame::HEADERS | 0x5) && !h.has(frame::END_HEADERS) => {
                    self.server_block = Some(s);
                }
                None => {}
            }
            match h.kind {
                frame::SETTINGS if h.has(frame::ACK) => {
                    self.server_acks += 1;
                    // More acknowledgements than SETTINGS sent: the server
                    // acknowledges what it never got, and no marker means
                    // anything any more.
                    self.acks_broken |= self.server_acks > self.up_settings;
                }
                frame::SETTINGS if payload.len() % 6 == 0 => {
                    for p in payload.chunks_exact(6) {
                        if u16::from_be_bytes([p[0], p[1]]) == frame::SETTINGS_HEADER_TABLE_SIZE {
                            let size = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                            self.decoder.allow_table_size(size as usize);
                        }
                    }
                }
                frame::WINDOW_UPDATE if s == 0 && payload.len() == 4 => {
                    self.server_window += u64::from(
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                            & 0x7fff_ffff,
                    );
                }
                frame::GOAWAY if payload.len() >= 4 => {
                    let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff;
                    // A rise is the server's own PROTOCOL_ERROR (§6.8).
                    self.server_goaway_rose |= self.server_goaway.is_some_and(|m| last > m);
                    self.server_goaway = Some(self.server_goaway.map_or(last, |m| m.min(last)));
                }
                _ => {}
            }
            if s != 0 && !self.up_streams.contains_key(&s) {
                self.tainted.insert(s);
            }
            if self.muted.contains_key(&s) {
                let copies = self.copies.entry(s).or_default();
                match h.kind {
                    frame::DATA => copies.data.push(payload.to_vec()),
                    frame::HEADERS | frame::CONTINUATION | frame::RST_STREAM => {
                        copies.frames.push(raw.clone())
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn mute(&mut self, stream: u32, why: &'static str) -> Result<(), Violation> {
        if self.muted.contains_key(&stream) {
            return Ok(());
        }
        self.muted.insert(stream, why);
        if let Some(sent) = self.up_streams.get(&stream).and_then(|s| s.sent) {
            return broken(
                "muted-stream-forwarded",
                format!("stream {stream} is muted ({why}), but the server got {sent} on it"),
            );
        }
        Ok(())
    }

    fn sent_upstream(&mut self, stream: u32, what: &'static str) -> Result<(), Violation> {
        if let Some(s) = self.up_streams.get_mut(&stream) {
            s.sent.get_or_insert(what);
        }
        if let Some(why) = self.muted.get(&stream) {
            return broken(
                "muted-stream-forwarded",
                format!("the server got {what} on stream {stream}, which is muted ({why})"),
            );
        }
        Ok(())
    }

    fn block_done(&mut self) -> Result<(), Violation> {
        let Some((s, fragment)) = self.up_block.take() else {
            return Ok(());
        };
        let mut paths = Vec::new();
        if let Err(e) = self.decoder.decode(&fragment, |name, value| {
            if name == b":path" {
                paths.push(String::from_utf8_lossy(value).into_owned());
            }
        }) {
            return broken(
                "block-undecodable",
                format!(
                    "the header block the server got on stream {s} does not decode in its \
                     context: {e}"
                ),
            );
        }
        let class = if self.drain_last.is_some_and(|last| s > last) {
            Class::Draining
        } else if paths.iter().any(|p| handling(p) == Handling::Refuse) {
            Class::Refused
        } else if paths.iter().any(|p| handling(p) == Handling::TakeOut(())) {
            Class::TakenOut
        } else {
            Class::Relayed
        };
        match class {
            Class::Relayed => self.stats.relayed += 1,
            Class::TakenOut => self.stats.taken_out += 1,
            Class::Refused => self.stats.refused += 1,
            Class::Draining => self.stats.draining += 1,
        }
        if let Some(us) = self.up_streams.get_mut(&s) {
            us.class = class;
            us.paths = paths;
        }
        if class == Class::Relayed {
            if let Some(cs) = self.client_streams.get_mut(&s) {
                cs.body = None;
            }
            return Ok(());
        }
        self.up_expect_reset = Some((s, class));
        self.mute(
            s,
            match class {
                Class::TakenOut => "its :path is taken out",
                Class::Refused => "its :path is refused",
                _ => "opened after the drain",
            },
        )
    }

    /// What the relay wrote to the server.
    pub fn wrote_to_server(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        self.up.push(bytes);
        while self.up.preface() == Some(false) {
            let there = &self.up.buf[self.up.at..];
            let first = Header::parse(there).filter(|h| h.total() <= there.len());
            self.known(
                "server-preface",
                format!(
                    "the server's first bytes are not the client's connection preface (a frame \
                     of type {:?})",
                    first.map(|h| h.kind)
                ),
            )?;
            // Tolerated: the frame ahead of the preface is passed over.
            let Some(h) = first else {
                return broken(
                    "partial-frame",
                    "a partial frame went to the server ahead of the preface".into(),
                );
            };
            self.up.at += h.total();
        }
        while let Some((h, raw)) = self.up.next() {
            let payload = &raw[frame::HEADER_LEN..];
            let s = h.stream;
            if let Some((expected, class)) = self.up_expect_reset.take() {
                if h.kind != frame::RST_STREAM
                    || s != expected
                    || payload != frame::CANCEL.to_be_bytes()
                {
                    return broken(
                        "mute-without-reset",
                        format!(
                            "stream {expected} is muted ({class:?}), but its header block is \
                             followed by frame type {} on stream {s}, not RST_STREAM CANCEL",
                            h.kind
                        ),
                    );
                }
                if let Some(us) = self.up_streams.get_mut(&s) {
                    us.reset_at.get_or_insert(self.up_settings);
                }
            }
            if !self.up_first {
                // The client's SETTINGS is the rest of its preface (§3.4).
                if h.kind != frame::SETTINGS || h.has(frame::ACK) {
                    self.known(
                        "server-preface",
                        format!(
                            "the first frame the server gets is of type {}, not the client's \
                             SETTINGS",
                            h.kind
                        ),
                    )?;
                    // Tolerated: passed over.
                    continue;
                }
                self.up_first = true;
            }
            if let Some((open, _)) = &self.up_block
                && (h.kind != frame::CONTINUATION || s != *open)
            {
                return broken(
                    "split-header-block",
                    format!(
                        "frame type {} on stream {s} went to the server inside the client's \
                         header block on stream {open}",
                        h.kind
                    ),
                );
            }
            match h.kind {
                frame::HEADERS => {
                    if s % 2 == 0 || s <= self.last_opened {
                        return broken(
                            "stream-order",
                            format!(
                                "HEADERS on stream {s} went to the server after stream {}",
                                self.last_opened
                            ),
                        );
                    }
                    let fragment = frame::headers_fragment(&h, payload)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default();
                    self.last_opened = s;
                    self.up_order.push(s);
                    self.up_streams.insert(
                        s,
                        UpStream {
                            class: Class::Relayed,
                            paths: Vec::new(),
                            resets: 0,
                            reset_at: None,
                            sent: None,
                        },
                    );
                    self.up_block = Some((s, fragment));
                    if h.has(frame::END_STREAM) {
                        self.sent_upstream(s, "END_STREAM on its HEADERS")?;
                    }
                    if h.has(frame::END_HEADERS) {
                        self.block_done()?;
                    }
                }
                frame::CONTINUATION => {
                    let Some((_, fragment)) = &mut self.up_block else {
                        return broken(
                            "split-header-block",
                            format!("a CONTINUATION on stream {s} went to the server out of place"),
                        );
                    };
                    fragment.extend_from_slice(payload);
                    if h.has(frame::END_HEADERS) {
                        self.block_done()?;
                    }
                }
                frame::DATA => {
                    self.up_data += h.len as u64;
                    // DATA ahead of a stream's HEADERS is the client's
                    // PROTOCOL_ERROR (§5.1, idle), the server's to judge.
                    if self.up_streams.contains_key(&s) {
                        let what = if h.has(frame::END_STREAM) {
                            "DATA with END_STREAM"
                        } else {
                            "DATA"
                        };
                        self.sent_upstream(s, what)?;
                    }
                }
                frame::RST_STREAM => {
                    let client = self.client_resets.get(&s).copied().unwrap_or(0);
                    let settings = self.up_settings;
                    let ours = self.up_streams.get_mut(&s).is_some_and(|us| {
                        us.resets += 1;
                        // More resets than the client sent: the relay's.
                        us.resets > client && {
                            us.reset_at.get_or_insert(settings);
                            true
                        }
                    });
                    if ours {
                        self.mute(s, "the relay reset it toward the server")?;
                    }
                }
                frame::SETTINGS if !h.has(frame::ACK) => self.up_settings += 1,
                _ => {}
            }
        }
        Ok(())
    }

    /// A call the relay handed out.
    pub fn handed_out(&mut self, stream: u32, path: &str, body: &[u8]) -> Result<(), Violation> {
        self.stats.calls += 1;
        if !self.handed_out.insert(stream) {
            return broken(
                "call-twice",
                format!("the call on stream {stream} was handed out twice"),
            );
        }
        let Some(us) = self.up_streams.get(&stream) else {
            return broken(
                "call-unseen",
                format!(
                    "a call on stream {stream} was handed out, but the server never got its block"
                ),
            );
        };
        if us.class != Class::TakenOut {
            return broken(
                "call-not-taken-out",
                format!(
                    "a call on stream {stream} was handed out, but it is {:?}",
                    us.class
                ),
            );
        }
        if handling(path) != Handling::TakeOut(()) || !us.paths.iter().any(|p| p == path) {
            return broken(
                "call-path",
                format!(
                    "the call on stream {stream} was handed out for {path:?}, its block names {:?}",
                    us.paths
                ),
            );
        }
        let Some(cs) = self.client_streams.get(&stream) else {
            return broken(
                "call-unseen",
                format!("a call on stream {stream} was handed out, but the client never opened it"),
            );
        };
        if !cs.ended {
            return broken(
                "call-early",
                format!("the call on stream {stream} was handed out before the client ended it"),
            );
        }
        if cs.body.as_deref() != Some(body) {
            return broken(
                "call-body",
                format!(
                    "the call on stream {stream} was handed out with {} bytes of body, the \
                     client sent {:?}",
                    body.len(),
                    cs.body.as_ref().map(Vec::len)
                ),
            );
        }
        self.mute(stream, "handed out")
    }

    /// Whether a frame on a muted stream is the server's, passed on.
    fn server_copy(&mut self, stream: u32, raw: &[u8]) -> bool {
        let Some(copies) = self.copies.get_mut(&stream) else {
            return false;
        };
        match copies.frames.iter().position(|f| f == raw) {
            Some(i) => {
                copies.frames.remove(i);
                true
            }
            None => false,
        }
    }

    /// Whether DATA on a muted stream is the server's, or a part of it.
    fn server_data(&mut self, stream: u32, payload: &[u8]) -> bool {
        let Some(copies) = self.copies.get_mut(&stream) else {
            return false;
        };
        if let Some(rest) = &mut copies.rest
            && rest.starts_with(payload)
        {
            rest.drain(..payload.len());
            if rest.is_empty() {
                copies.rest = None;
            }
            return true;
        }
        match copies.data.iter().position(|d| d.starts_with(payload)) {
            Some(i) => {
                let mut d = copies.data.remove(i);
                d.drain(..payload.len());
                if !d.is_empty() {
                    copies.rest = Some(d);
                }
                true
            }
            None => false,
        }
    }

    /// What the relay wrote to the client.
    pub fn wrote_to_client(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        self.down.push(bytes);
        while let Some((h, raw)) = self.down.next() {
            let payload = &raw[frame::HEADER_LEN..];
            let s = h.stream;
            if !self.down_started {
                match self.server_began {
                    // A server that does not open with its SETTINGS breaks
                    // §3.4 itself: the client ends the connection anyway.
                    Some(false) => self.down_started = true,
                    _ if h.kind == frame::SETTINGS && !h.has(frame::ACK) => {
                        self.down_started = true
                    }
                    _ => {
                        self.known(
                            "before-server-settings",
                            format!(
                                "frame type {} on stream {s} went to the client before the \
                                 server's SETTINGS (RFC 9113 §3.4)",
                                h.kind
                            ),
                        )?;
                        self.down_started = true;
                    }
                }
            }
            let limit = self
                .max_frame_high
                .max(self.server_max_len.get(&s).copied().unwrap_or(0));
            if h.len > limit {
                return broken(
                    "frame-size",
                    format!(
                        "a frame of {} bytes (type {}, stream {s}) went to the client, which \
                         takes {}",
                        h.len, h.kind, self.max_frame_high
                    ),
                );
            }
            let in_block = self.down_block;
            if let Some((open, _, _, push)) = in_block {
                if h.kind != frame::CONTINUATION && self.server_block_broken {
                    // The server broke a header block of its own (see
                    // `server_read`): the client ends the connection.
                    self.down_block = None;
                } else if h.kind != frame::CONTINUATION {
                    let (class, of) = if push {
                        ("split-push-promise", "PUSH_PROMISE")
                    } else {
                        ("split-header-block", "header")
                    };
                    self.known(
                        class,
                        format!(
                            "frame type {} on stream {s} went to the client inside the {of} \
                             block on stream {open}",
                            h.kind
                        ),
                    )?;
                    self.down_block = None;
                } else if s != open && !self.server_block_broken {
                    return broken(
                        "split-header-block",
                        format!(
                            "a CONTINUATION on stream {s} went to the client inside the header \
                             block on stream {open}"
                        ),
                    );
                }
            }
            let muted = self.muted.contains_key(&s) && !self.tainted.contains(&s);
            let ours = muted
                && match h.kind {
                    frame::HEADERS | frame::RST_STREAM => !self.server_copy(s, &raw),
                    frame::CONTINUATION => in_block.is_some_and(|(_, ours, _, _)| ours),
                    frame::DATA => !self.server_data(s, payload),
                    _ => false,
                };
            if ours {
                let code = (h.kind == frame::RST_STREAM && payload.len() == 4)
                    .then(|| u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]));
                // The relay resets a muted stream the server answered
                // (CANCEL) whenever; it answers only past the fence.
                if code != Some(frame::CANCEL) && !self.acks_broken && !self.fenced(s) {
                    return broken(
                        "reply-before-fence",
                        format!(
                            "the relay sent frame type {} on muted stream {s} before the server \
                             acknowledged a SETTINGS frame sent after its reset",
                            h.kind
                        ),
                    );
                }
                if matches!(h.kind, frame::HEADERS | frame::DATA) && self.down_ended.contains(&s) {
                    return broken(
                        "after-end",
                        format!(
                            "the relay sent frame type {} on stream {s} after the client heard \
                             the stream end",
                            h.kind
                        ),
                    );
                }
                if h.len > self.max_frame_high {
                    return broken(
                        "frame-size",
                        format!(
                            "the relay sent a frame of {} bytes (type {}, stream {s}) to a client \
                             that takes {}",
                            h.len, h.kind, self.max_frame_high
                        ),
                    );
                }
                if h.kind == frame::DATA {
                    *self.injected.entry(s).or_default() += h.len as i64;
                    self.stats.injected_bytes += h.len as u64;
                    self.touched.push(s);
                }
            }
            let ends = match h.kind {
                frame::HEADERS | 0x5 => {
                    if h.has(frame::END_HEADERS) {
                        h.kind == frame::HEADERS && h.has(frame::END_STREAM)
                    } else {
                        // PUSH_PROMISE to a client that disabled push, or
                        // on a stream it did not open, is the server's
                        // PROTOCOL_ERROR (§6.6, §8.4).
                        let opened = self.up_streams.contains_key(&s);
                        let push = h.kind != frame::HEADERS;
                        if !push || (!self.push_disabled && opened && !self.tainted.contains(&s)) {
                            let end = !push && h.has(frame::END_STREAM) && opened;
                            self.down_block = Some((s, ours, end, push));
                        }
                        false
                    }
                }
                frame::CONTINUATION if h.has(frame::END_HEADERS) => {
                    self.down_block = None;
                    in_block.is_some_and(|(_, _, end, _)| end)
                }
                frame::DATA => {
                    self.down_data += h.len as u64;
                    h.has(frame::END_STREAM)
                }
                frame::RST_STREAM => true,
                frame::WINDOW_UPDATE if s == 0 && payload.len() == 4 => {
                    self.down_window += u64::from(
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                            & 0x7fff_ffff,
                    );
                    false
                }
                frame::GOAWAY if payload.len() >= 4 => {
                    let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff;
                    if let Some(before) = self.down_goaway
                        && last > before
                        && !self.server_goaway_rose
                    {
                        self.known(
                            "goaway-rises",
                            format!(
                                "a GOAWAY naming stream {last} went to the client after one \
                                 naming {before} (RFC 9113 §6.8)"
                            ),
                        )?;
                    }
                    self.down_goaway = Some(self.down_goaway.map_or(last, |b| b.min(last)));
                    false
                }
                _ => false,
            };
            // Only the end of a stream the client opened: the server's
            // frames on an idle one are its PROTOCOL_ERROR (§5.1).
            if ends && self.up_streams.contains_key(&s) && self.down_ended.insert(s) && ours {
                self.stats.answered += 1;
            }
        }
        Ok(())
    }

    /// The end of a step: what the relay wrote is all read, and the
    /// relay counts the client's window as `window`.
    pub fn end_step(&mut self, window: usize) -> Result<(), Violation> {
        self.stats.steps += 1;
        if self.up.pending() > 0 {
            return broken(
                "partial-frame",
                format!(
                    "{} bytes of a partial frame went to the server",
                    self.up.pending()
                ),
            );
        }
        if self.down.pending() > 0 {
            return broken(
                "partial-frame",
                format!(
                    "{} bytes of a partial frame went to the client",
                    self.down.pending()
                ),
            );
        }
        if let Some((s, class)) = self.up_expect_reset {
            return broken(
                "mute-without-reset",
                format!("stream {s} is muted ({class:?}), but nothing followed its header block"),
            );
        }
        let left = self.conn_credit - self.down_data as i64;
        if left < 0 {
            return broken(
                "connection-window",
                format!(
                    "{} bytes of DATA went to the client, whose connection window allows {}",
                    self.down_data, self.conn_credit
                ),
            );
        }
        if left == 0 {
            self.stats.window_exhausted += 1;
        }
        if self.down_block.is_some() {
            self.stats.blocks_held += 1;
        }
        if window as i64 != left {
            return broken(
                "window-count",
                format!(
                    "the relay counts {window} bytes of the client's window, the client {left}"
                ),
            );
        }
        for s in std::mem::take(&mut self.touched) {
            let sent = self.injected.get(&s).copied().unwrap_or(0);
            let (allowed, overflowed) = self
                .client_streams
                .get(&s)
                .map_or((self.initial_window, false), |cs| (cs.high, cs.overflowed));
            if sent == allowed {
                self.stats.stream_window_exhausted += 1;
            }
            if sent > allowed && !overflowed {
                return broken(
                    "stream-window",
                    format!(
                        "the relay sent {sent} bytes of DATA on stream {s}, whose window allows \
                         {allowed}"
                    ),
                );
            }
        }
        // The relay hands the client back what it swallowed, and passes on
        // what the server gives; never more.
        let swallowed = self.client_data.saturating_sub(self.up_data);
        if self.down_window > self.server_window + swallowed {
            return broken(
                "client-given-window",
                format!(
                    "the client was given {} bytes of connection window; the server gave {} and \
                     the relay swallowed {swallowed}",
                    self.down_window, self.server_window
                ),
            );
        }
        self.max_frame_high = self.max_frame;
        for s in std::mem::take(&mut self.changed) {
            if let Some(cs) = self.client_streams.get_mut(&s) {
                cs.high = cs.credit;
            }
        }
        Ok(())
    }
}

// ---- the driver ----

/// Where a run broke: the op, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub op: usize,
    pub what: String,
    pub violation: Violation,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "relay invariant broken at op {} ({}): {}",
            self.op, self.what, self.violation
        )
    }
}

/// Reply body sizes a `size` byte picks.
const REPLY_SIZES: [usize; 16] = [
    0, 1, 5, 64, 1000, 10_000, 16_383, 16_384, 16_385, 40_000, 65_535, 65_536, 100_000, 150_000,
    300_000, 2,
];

/// Stream 0, a stream never opened, or one of `streams`, most recent
/// first (see the module's documentation).
fn pick_stream(pick: u8, streams: &[u32], last: u32) -> u32 {
    let n = streams.len();
    match usize::from(pick) % (n + 2) {
        0 => 0,
        1 if last == 0 => 1,
        1 => last + 2,
        k => streams[n + 1 - k],
    }
}

struct Driver {
    relay: Relay<ModelHooks>,
    checker: Checker,
    client_wire: Vec<u8>,
    server_wire: Vec<u8>,
    client_cut: Option<usize>,
    server_cut: Option<usize>,
    /// What `from_client` and `from_upstream` hold, as delivered.
    client_unread: Vec<u8>,
    server_unread: Vec<u8>,
    client_started: bool,
    server_started: bool,
    /// The rest of a server header block, held back.
    server_continuation: Vec<u8>,
    client_streams: Vec<u32>,
    last_stream: u32,
    indexed: bool,
    calls: Vec<u32>,
    acks_sent: u64,
    counter: u32,
    misbehaved: Option<&'static str>,
    /// The client's connection window as the client counts it.
    client_window: i64,
    ended: bool,
    /// ATTESTGATE_RELAY_TRACE: each op and the frames it made, on stderr.
    trace: bool,
    pattern: Bytes,
}

/// The longest DATA payload or reply body the ops make.
const PATTERN_LEN: usize = 300_000;

/// The memory budget the model's relay has: small, so that calls stall
/// and are refused.
const MODEL_BUDGET: usize = 256 << 10;

/// What a run that broke no rule reached.
pub struct Run {
    pub stats: Stats,
    /// Known bugs it showed (when tolerated): class, and what was seen.
    pub known: Vec<(&'static str, String)>,
}

/// Drives a relay through `ops` as its driver would; the first violation,
/// or what the run reached. `tolerate`: the classes in [`KNOWN`] are
/// recorded in the checker, not violations.
pub fn run(ops: &[Op], tolerate: bool) -> Result<Run, Failure> {
    let mut d = Driver {
        // Small, so that calls stall for want of it and are refused.
        relay: Relay::with_budget(ModelHooks, Budget::new(MODEL_BUDGET)),
        checker: Checker::new(tolerate),
        client_wire: Vec::new(),
        server_wire: Vec::new(),
        client_cut: None,
        server_cut: None,
        client_unread: Vec::new(),
        server_unread: Vec::new(),
        client_started: false,
        server_started: false,
        server_continuation: Vec::new(),
        client_streams: Vec::new(),
        last_stream: 0,
        indexed: false,
        calls: Vec::new(),
        acks_sent: 0,
        counter: 0,
        misbehaved: None,
        client_window: frame::DEFAULT_WINDOW,
        ended: false,
        trace: std::env::var_os("ATTESTGATE_RELAY_TRACE").is_some_and(|v| v != "0"),
        pattern: (0..PATTERN_LEN + 251)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>()
            .into(),
    };
    for (i, op) in ops.iter().enumerate() {
        d.checker.stats.ops += 1;
        if d.trace {
            eprintln!("op {i}: {op:?}");
        }
        if let Err(violation) = d.op(op) {
            return Err(Failure {
                op: i,
                what: format!("{op:?}"),
                violation,
            });
        }
        if d.ended {
            break;
        }
    }
    Ok(Run {
        stats: d.checker.stats.clone(),
        known: d.checker.known_seen.clone(),
    })
}

/// `run`, panicking with the violation; known bugs tolerated unless
/// ATTESTGATE_RELAY_STRICT is set.
pub fn check(ops: &[Op]) -> Stats {
    let strict = std::env::var_os("ATTESTGATE_RELAY_STRICT").is_some_and(|v| v != "0");
    match run(ops, !strict) {
        Ok(run) => run.stats,
        Err(failure) => panic!("{failure}"),
    }
}

impl Driver {
    fn misbehave(&mut self, why: &'static str) {
        self.misbehaved.get_or_insert(why);
    }

    /// `len` bytes, different from one call to the next; `tag` tells whose.
    fn pattern(&mut self, tag: u8, len: usize) -> Bytes {
        self.counter = self.counter.wrapping_add(1);
        let key = (usize::from(tag) * 31 + self.counter as usize) % 251;
        let len = len.min(PATTERN_LEN);
        self.pattern.slice(key..key + len)
    }

    fn start_client(&mut self) {
        if !self.client_started {
            self.client_started = true;
            self.client_wire.extend_from_slice(frame::PREFACE);
            self.client_wire
                .extend_from_slice(&[0, 0, 0, frame::SETTINGS, 0, 0, 0, 0, 0]);
        }
    }

    fn start_server(&mut self) {
        if !self.server_started {
            self.server_started = true;
            self.server_wire
                .extend_from_slice(&[0, 0, 0, frame::SETTINGS, 0, 0, 0, 0, 0]);
        }
        let rest = std::mem::take(&mut self.server_continuation);
        self.server_wire.extend_from_slice(&rest);
    }

    fn client_stream(&self, pick: u8) -> u32 {
        pick_stream(pick, &self.client_streams, self.last_stream)
    }

    fn server_stream(&self, pick: u8) -> u32 {
        let streams = self.checker.upstream_streams();
        pick_stream(pick, streams, streams.last().copied().unwrap_or(0))
    }

    fn put(&mut self, server: bool, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = BytesMut::new();
        frame::put_header(&mut out, payload.len(), kind, flags, stream);
        out.put_slice(payload);
        if server {
            self.server_wire.extend_from_slice(&out);
        } else {
            self.client_wire.extend_from_slice(&out);
        }
    }

    fn op(&mut self, op: &Op) -> Result<(), Violation> {
        match *op {
            Op::ClientHeaders {
                path,
                flags,
                variant,
            } => {
                self.start_client();
                self.client_headers(path, flags, variant);
                self.deliver(false)
            }
            Op::ClientData { stream, len, flags } => {
                self.start_client();
                let s = self.client_stream(stream);
                let padded = flags & 2 != 0;
                let pad = if padded { usize::from(len % 7) } else { 0 };
                let room = frame::DEFAULT_MAX_FRAME - usize::from(padded) - pad;
                let data = self.pattern(b'c', usize::from(len).min(room));
                let mut payload = Vec::new();
                if padded {
                    payload.push(pad as u8);
                }
                payload.extend_from_slice(&data);
                payload.resize(payload.len() + pad, 0);
                let f = (flags & 1) | if padded { frame::PADDED } else { 0 };
                self.client_window -= payload.len() as i64;
                if self.client_window < 0 {
                    self.misbehave("client DATA beyond its connection window");
                }
                self.put(false, frame::DATA, f, s, &payload);
                self.deliver(false)
            }
            Op::ClientWindowUpdate { stream, increment } => {
                self.start_client();
                let s = self.client_stream(stream);
                self.put(
                    false,
                    frame::WINDOW_UPDATE,
                    0,
                    s,
                    &(increment & 0x7fff_ffff).to_be_bytes(),
                );
                self.deliver(false)
            }
            Op::ClientSettings {
                flags,
                initial_window,
                max_frame,
            } => {
                let mut payload = Vec::new();
                if flags & 1 != 0 {
                    payload.extend(frame::SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes());
                    payload.extend(initial_window.to_be_bytes());
                }
                if flags & 2 != 0 {
                    payload.extend(frame::SETTINGS_MAX_FRAME_SIZE.to_be_bytes());
                    payload.extend(max_frame.to_be_bytes());
                }
                if flags & 4 != 0 {
                    payload.extend([0, 2, 0, 0, 0, 0]);
                }
                if !self.client_started {
                    self.client_started = true;
                    self.client_wire.extend_from_slice(frame::PREFACE);
                }
                self.put(false, frame::SETTINGS, 0, 0, &payload);
                self.deliver(false)
            }
            Op::ClientSettingsAck => {
                self.start_client();
                self.put(false, frame::SETTINGS, frame::ACK, 0, &[]);
                self.deliver(false)
            }
            Op::ClientPing { ack } => {
                self.start_client();
                let payload = self.pattern(b'p', 8);
                self.put(false, frame::PING, u8::from(ack), 0, &payload);
                self.deliver(false)
            }
            Op::ClientRst { stream, code } => {
                self.start_client();
                let s = self.client_stream(stream);
                self.put(
                    false,
                    frame::RST_STREAM,
                    0,
                    s,
                    &u32::from(code).to_be_bytes(),
                );
                self.deliver(false)
            }
            Op::ClientPriority { stream } => {
                self.start_client();
                let s = self.client_stream(stream);
                self.put(false, frame::PRIORITY, 0, s, &[0, 0, 0, 0, 15]);
                self.deliver(false)
            }
            Op::ClientRaw { first, ref bytes } => {
                if !first {
                    self.start_client();
                }
                self.misbehave("raw bytes from the client");
                self.client_wire.extend_from_slice(bytes);
                self.deliver(false)
            }
            Op::ServerSettings { table_size } => {
                let mut payload = Vec::new();
                if let Some(size) = table_size {
                    payload.extend(frame::SETTINGS_HEADER_TABLE_SIZE.to_be_bytes());
                    payload.extend(size.to_be_bytes());
                }
                // The first is the server's preface.
                self.server_started = true;
                self.start_server();
                self.put(true, frame::SETTINGS, 0, 0, &payload);
                self.deliver(true)
            }
            Op::ServerSettingsAck => {
                if self.acks_sent >= self.checker.upstream_settings() {
                    return Ok(());
                }
                self.acks_sent += 1;
                self.start_server();
                self.put(true, frame::SETTINGS, frame::ACK, 0, &[]);
                self.deliver(true)
            }
            Op::ServerHeaders { stream, flags } => {
                self.start_server();
                let s = self.server_stream(stream);
                let mut block = BytesMut::new();
                if flags & 8 != 0 {
                    hpack::encode_field(&mut block, b"grpc-status", b"0");
                    hpack::encode_field(&mut block, b"x-from", b"server");
                } else {
                    hpack::encode_field(&mut block, b":status", b"200");
                    hpack::encode_field(&mut block, b"content-type", b"application/grpc");
                    hpack::encode_field(&mut block, b"x-from", b"server");
                }
                if flags & 4 != 0 {
                    hpack::encode_field(&mut block, b"x-big", &[b'h'; 20_000]);
                }
                let end = flags & 1 != 0;
                let mut out = BytesMut::new();
                frame::put_header_block(&mut out, s, &block, end, self.checker.client_max_frame());
                if flags & 2 != 0 {
                    // The block's end held back: the HEADERS frame goes
                    // without END_HEADERS, the rest later.
                    let first = Header::parse(&out).map_or(out.len(), |h| h.total());
                    if first == out.len() {
                        let half = block.len() / 2;
                        let mut split = BytesMut::new();
                        frame::put_header(&mut split, half, frame::HEADERS, u8::from(end), s);
                        split.put_slice(&block[..half]);
                        frame::put_header(
                            &mut split,
                            block.len() - half,
                            frame::CONTINUATION,
                            frame::END_HEADERS,
                            s,
                        );
                        split.put_slice(&block[half..]);
                        out = split;
                    }
                    let first = Header::parse(&out).map_or(out.len(), |h| h.total());
                    self.server_wire.extend_from_slice(&out[..first]);
                    self.server_continuation = out[first..].to_vec();
                } else {
                    self.server_wire.extend_from_slice(&out);
                }
                self.deliver(true)
            }
            Op::ServerContinuation => {
                self.start_server();
                self.deliver(true)
            }
            Op::ServerData { stream, len, flags } => {
                self.start_server();
                let s = self.server_stream(stream);
                let padded = flags & 2 != 0;
                let pad = if padded { usize::from(len % 7) } else { 0 };
                let room = self.checker.client_max_frame() - usize::from(padded) - pad;
                let data = self.pattern(b's', usize::from(len).min(room));
                let mut payload = Vec::new();
                if padded {
                    payload.push(pad as u8);
                }
                payload.extend_from_slice(&data);
                payload.resize(payload.len() + pad, 0);
                let f = (flags & 1) | if padded { frame::PADDED } else { 0 };
                self.put(true, frame::DATA, f, s, &payload);
                self.deliver(true)
            }
            Op::ServerWindowUpdate { stream, increment } => {
                self.start_server();
                let s = self.server_stream(stream);
                self.put(
                    true,
                    frame::WINDOW_UPDATE,
                    0,
                    s,
                    &(increment & 0x7fff_ffff).to_be_bytes(),
                );
                self.deliver(true)
            }
            Op::ServerRst { stream, code } => {
                self.start_server();
                let s = self.server_stream(stream);
                self.put(
                    true,
                    frame::RST_STREAM,
                    0,
                    s,
                    &u32::from(code).to_be_bytes(),
                );
                self.deliver(true)
            }
            Op::ServerPing { ack } => {
                self.start_server();
                let payload = self.pattern(b'q', 8);
                self.put(true, frame::PING, u8::from(ack), 0, &payload);
                self.deliver(true)
            }
            Op::ServerGoaway { stream, code } => {
                self.start_server();
                let s = self.server_stream(stream);
                let mut payload = s.to_be_bytes().to_vec();
                payload.extend(u32::from(code).to_be_bytes());
                self.put(true, frame::GOAWAY, 0, 0, &payload);
                self.deliver(true)
            }
            Op::ServerRaw { ref bytes } => {
                self.misbehave("raw bytes from the server");
                self.server_wire.extend_from_slice(bytes);
                self.deliver(true)
            }
            Op::Reply { call, size, flags } => {
                let n = self.calls.len();
                let stream = match usize::from(call) % (n + 1) {
                    k if k < n => self.calls[n - 1 - k],
                    _ => self.client_streams.last().copied().unwrap_or(1),
                };
                let mut head = BytesMut::new();
                hpack::encode_field(&mut head, b":status", b"200");
                hpack::encode_field(&mut head, b"content-type", b"application/grpc");
                hpack::encode_field(&mut head, b"x-from", b"reply");
                if flags & 2 != 0 {
                    let big = vec![b'r'; 20_000];
                    hpack::encode_field(&mut head, b"x-big", &big);
                }
                let data = self.pattern(b'r', REPLY_SIZES[usize::from(size % 16)]);
                let trailers = (flags & 1 != 0).then(|| {
                    let mut t = BytesMut::new();
                    hpack::encode_field(&mut t, b"grpc-status", b"0");
                    hpack::encode_field(&mut t, b"x-from", b"reply");
                    t.freeze()
                });
                self.checker.stats.replies += 1;
                self.relay.reply(
                    stream,
                    Reply {
                        head: head.freeze(),
                        data,
                        trailers,
                    },
                );
                self.after(Ok(()))
            }
            Op::Drain => {
                self.checker.drain();
                self.relay.drain();
                self.after(Ok(()))
            }
            Op::ReleaseAcks => {
                self.relay.release_acks();
                self.after(Ok(()))
            }
            Op::Split { server, at } => {
                let cut = Some(usize::from(at));
                if server {
                    self.server_cut = cut;
                } else {
                    self.client_cut = cut;
                }
                Ok(())
            }
            Op::Flush { server } => {
                if server {
                    self.server_cut = None;
                } else {
                    self.client_cut = None;
                }
                self.deliver(server)
            }
            Op::StallPasses => {
                self.relay
                    .settle_stalled(Instant::now() + Duration::from_secs(2));
                self.after(Ok(()))
            }
        }
    }

    /// A request head: `path` indexes [`PATHS`]; `flags` 1 END_STREAM,
    /// 2 PADDED, 4 PRIORITY, 8 cut into CONTINUATIONs of `variant >> 4`
    /// bytes and more, 0x30 how the stream is picked (0, 1: the next;
    /// 2: `variant >> 4` further on; 3: one that opens no new stream);
    /// `variant & 15`: 4 two `:path`s, 5 none, 6 a regular field ahead of
    /// `:path`, 7 a field past 16 KiB, 8 the `:path` added to the dynamic
    /// table, 9 the `:path` from it, anything else the usual fields.
    fn client_headers(&mut self, path: u8, flags: u8, variant: u8) {
        let path = PATHS[usize::from(path) % PATHS.len()].as_bytes();
        let next = if self.last_stream == 0 {
            1
        } else {
            self.last_stream + 2
        };
        let stream = match (flags >> 4) & 3 {
            0 | 1 => next,
            2 => next + 2 * u32::from(variant >> 4),
            _ => {
                self.misbehave("HEADERS that open no new stream");
                if variant & 0x10 != 0 && self.last_stream != 0 {
                    self.last_stream
                } else {
                    next + 1
                }
            }
        };
        self.last_stream = self.last_stream.max(stream);
        self.client_streams.push(stream);
        let mut block = BytesMut::new();
        let put_path = |block: &mut BytesMut, indexed: &mut bool| match variant & 15 {
            5 => {}
            8 => {
                // Literal with incremental indexing, name :path (4).
                block.put_u8(0x44);
                block.put_u8(path.len() as u8);
                block.put_slice(path);
                *indexed = true;
            }
            9 => block.put_u8(0xbe),
            _ => hpack::encode_field(block, b":path", path),
        };
        if variant & 15 == 9 && !self.indexed {
            self.misbehave("an index past the dynamic table");
        }
        hpack::encode_field(&mut block, b":method", b"POST");
        hpack::encode_field(&mut block, b":scheme", b"http");
        if variant & 15 == 6 {
            hpack::encode_field(&mut block, b"content-type", b"application/grpc");
        }
        let mut indexed = self.indexed;
        put_path(&mut block, &mut indexed);
        self.indexed = indexed;
        if variant & 15 == 4 {
            let other = PATHS
                [(PATHS.iter().position(|p| p.as_bytes() == path).unwrap_or(0) + 1) % PATHS.len()];
            hpack::encode_field(&mut block, b":path", other.as_bytes());
        }
        hpack::encode_field(
            &mut block,
            b":authority",
            b"/run/containerd/containerd.sock",
        );
        hpack::encode_field(&mut block, b"content-type", b"application/grpc");
        hpack::encode_field(&mut block, b"te", b"trailers");
        hpack::encode_field(&mut block, b"grpc-timeout", b"5S");
        if variant & 15 == 7 {
            hpack::encode_field(&mut block, b"x-big", &vec![b'k'; 20_000]);
        }
        let chunk = if flags & 8 != 0 {
            1 + 3 * usize::from(variant >> 4)
        } else {
            frame::DEFAULT_MAX_FRAME - 6 - 5
        };
        let end = flags & 1 != 0;
        let padded = flags & 2 != 0;
        let priority = flags & 4 != 0;
        let mut chunks = block.chunks(chunk).peekable();
        let first = chunks.next().unwrap_or(&[]);
        let mut payload = Vec::new();
        let pad = if padded {
            1 + usize::from(variant % 5)
        } else {
            0
        };
        if padded {
            payload.push(pad as u8);
        }
        if priority {
            payload.extend([0, 0, 0, 0, 15]);
        }
        payload.extend_from_slice(first);
        payload.resize(payload.len() + pad, 0);
        let mut f = u8::from(end);
        if padded {
            f |= frame::PADDED;
        }
        if priority {
            f |= frame::PRIORITY_FLAG;
        }
        if chunks.peek().is_none() {
            f |= frame::END_HEADERS;
        }
        self.put(false, frame::HEADERS, f, stream, &payload);
        while let Some(c) = chunks.next() {
            let f = if chunks.peek().is_none() {
                frame::END_HEADERS
            } else {
                0
            };
            self.put(false, frame::CONTINUATION, f, stream, c);
        }
    }

    /// The pending write of one peer reaches the relay (up to a cut), and
    /// the relay reads both sides, as its driver's loop does.
    fn deliver(&mut self, server: bool) -> Result<(), Violation> {
        let (wire, cut) = if server {
            (&mut self.server_wire, &mut self.server_cut)
        } else {
            (&mut self.client_wire, &mut self.client_cut)
        };
        let n = cut.take().map_or(wire.len(), |c| c.min(wire.len()));
        let bytes: Vec<u8> = wire.drain(..n).collect();
        if server {
            self.relay.from_upstream.extend_from_slice(&bytes);
            self.server_unread.extend_from_slice(&bytes);
        } else {
            self.relay.from_client.extend_from_slice(&bytes);
            self.client_unread.extend_from_slice(&bytes);
        }
        let result = self
            .relay
            .client_frames()
            .and_then(|()| self.relay.upstream_frames());
        // As the driver does on every wake-up.
        self.relay.settle_stalled(Instant::now());
        self.after(result)
    }

    /// Reads all the relay wrote and took, and ends the step.
    fn after(&mut self, result: Result<(), RelayError>) -> Result<(), Violation> {
        let read = self
            .client_unread
            .len()
            .checked_sub(self.relay.from_client.len());
        let Some(read) = read else {
            return broken("input", "the client's bytes in the relay grew".into());
        };
        let taken: Vec<u8> = self.client_unread.drain(..read).collect();
        self.checker.client_read(&taken)?;
        let read = self
            .server_unread
            .len()
            .checked_sub(self.relay.from_upstream.len());
        let Some(read) = read else {
            return broken("input", "the server's bytes in the relay grew".into());
        };
        let taken: Vec<u8> = self.server_unread.drain(..read).collect();
        self.checker.server_read(&taken)?;
        let up = self.relay.to_upstream.split();
        if self.trace {
            eprintln!("  to server: {}", shapes(&up));
        }
        self.checker.wrote_to_server(&up)?;
        for call in std::mem::take(&mut self.relay.calls) {
            self.checker
                .handed_out(call.stream, call.path(), &call.body)?;
            self.calls.push(call.stream);
        }
        let down = self.relay.to_client.split();
        if self.trace {
            eprintln!("  to client: {}", shapes(&down));
        }
        let mut rest = &down[..];
        while let Some(h) = Header::parse(rest) {
            if rest.len() < h.total() {
                break;
            }
            if h.kind == frame::WINDOW_UPDATE
                && h.stream == 0
                && let Ok(increment) = frame::window_increment(&rest[frame::HEADER_LEN..h.total()])
            {
                self.client_window += i64::from(increment);
            }
            rest = &rest[h.total()..];
        }
        self.checker.wrote_to_client(&down)?;
        self.checker
            .end_step(self.relay.client_window().available())?;
        if let Err(e) = result {
            if self.trace {
                eprintln!("  relay error: {e}");
            }
            self.ended = true;
            self.checker.stats.relay_errors += 1;
            match self.misbehaved {
                Some(_) => self.checker.stats.misbehaved += 1,
                None => {
                    return broken(
                        "error-without-violation",
                        format!("the relay ended a connection both peers kept to HTTP/2: {e}"),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Frames as (type, stream, flags, length), for a trace.
fn shapes(mut bytes: &[u8]) -> String {
    if bytes.starts_with(frame::PREFACE) {
        bytes = &bytes[frame::PREFACE.len()..];
    }
    let mut out = Vec::new();
    while let Some(h) = Header::parse(bytes) {
        out.push(format!(
            "({}, {}, {:#x}, {})",
            h.kind, h.stream, h.flags, h.len
        ));
        bytes = bytes.get(h.total()..).unwrap_or_default();
    }
    if !bytes.is_empty() {
        out.push(format!("+{} bytes", bytes.len()));
    }
    out.join(" ")
}

/// The shortest input found, by dropping ops and simplifying them, that
/// still breaks the rule `class` (tolerating the known ones).
pub fn minimize(ops: &[Op], class: &str) -> Vec<Op> {
    let breaks = |ops: &[Op]| {
        std::panic::catch_unwind(|| run(ops, true))
            .map(|r| r.is_err_and(|f| f.violation.class == class))
            .unwrap_or(class == "panic")
    };
    let mut ops = ops.to_vec();
    if !breaks(&ops) {
        return ops;
    }
    let mut chunk = ops.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        let mut changed = false;
        while i < ops.len() {
            let mut fewer = ops.clone();
            fewer.drain(i..(i + chunk).min(ops.len()));
            if breaks(&fewer) {
                ops = fewer;
                changed = true;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 && !changed {
            break;
        }
        chunk = (chunk / 2).max(1);
    }
    ops
}
