//! The relay's state for one client connection and its own connection to
//! containerd, without any I/O: bytes in, bytes out. Frames pass through
//! as they are, header blocks included: each is decoded on the way, to
//! read `:path` and to follow the client's compression context, but what
//! containerd gets is the client's own bytes, so containerd's decoder stays
//! in step with the client's encoder and does no more work than without us.
//!
//! Intercepted calls (PullImage, CreateContainer, StartContainer) are
//! *muted* toward containerd: their header block goes on (it is part of the
//! compression context), without END_STREAM and followed at once by
//! RST_STREAM, and none of their DATA ever follows. A gRPC server reads the
//! whole request message before it runs a handler, so containerd never acts
//! on them. The request is collected here, decided, and the reply injected
//! toward the client, but only once containerd has acknowledged an empty
//! SETTINGS frame sent after the reset: everything containerd will ever say
//! on that stream (an early refusal of a malformed request, say) comes
//! before that acknowledgement, so nothing of containerd's can follow our
//! reply.
//!
//! Connection-level WINDOW_UPDATEs are adjusted for the injected bytes
//! (see `flow.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::task::AbortHandle;

use super::flow::ClientWindow;
use super::frame::{self, FrameError, Header};
use super::hpack::{self, DecodeError};
use crate::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;

/// The largest request message we decode (kubelet's default is 16 MiB),
/// plus the gRPC message prefix.
const MAX_DECODED_REQUEST: usize = (16 << 20) + 5;
/// All undecided intercepted request bodies of one connection together.
const CONNECTION_BUFFER_LIMIT: usize = 64 << 20;
/// A header block from the client larger than this ends the connection.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The request head of an intercepted call, decoded, that we keep to
/// decide it.
const MAX_KEPT_HEAD: usize = 64 << 10;
/// Muted streams answered and closed on our side, remembered so that
/// frames either side still sends for them are not passed on.
const CLOSED_REMEMBERED: usize = 256;
/// Distinct methods whose counters a connection keeps at hand.
const COUNTERS_KEPT: usize = 64;
/// While the client may still send this much, containerd's connection
/// window updates wait to travel with the next frame the client gets
/// anyway (see `held_window`).
const CLIENT_WINDOW_LOW: i64 = 32 << 10;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the client did not start with the HTTP/2 preface")]
    Preface,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Hpack(#[from] DecodeError),
}

impl RelayError {
    /// The GOAWAY code the client is told.
    pub fn code(&self) -> u32 {
        match self {
            RelayError::Hpack(_) => frame::COMPRESSION_ERROR,
            _ => frame::PROTOCOL_ERROR,
        }
    }
}

/// A call to decide: the request as the client sent it.
#[derive(Debug)]
pub struct Call {
    pub stream: u32,
    pub path: String,
    /// The request head, as a header block in our own (stateless) encoding.
    pub head: Bytes,
    pub body: Bytes,
}

/// A reply to inject: header blocks in our own encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub head: Bytes,
    pub data: Bytes,
    pub trailers: Option<Bytes>,
}

impl Reply {
    /// A trailers-only gRPC error.
    pub fn error(error: crate::grpc::ProxyError) -> Reply {
        let (parts, ()) = error.into_head().into_parts();
        Reply {
            head: hpack::encode_response(Some(parts.status.as_u16()), &parts.headers).freeze(),
            data: Bytes::new(),
            trailers: None,
        }
    }
}

enum Stream {
    Forward {
        client_done: bool,
        server_done: bool,
    },
    Intercept(Box<Intercepted>),
}

/// A muted stream: an intercepted call, or one refused while draining.
struct Intercepted {
    head: Bytes,
    path: String,
    /// Our SETTINGS marker that containerd must acknowledge before the
    /// client hears anything on this stream from us.
    fence: u64,
    /// Refused (REFUSED_STREAM) rather than decided.
    refused: bool,
    body: BytesMut,
    client_done: bool,
    too_large: bool,
    dispatched: bool,
    /// The client's receive window for this stream: ours alone.
    window: i64,
    reply: Option<Outgoing>,
    task: Option<AbortHandle>,
}

impl Drop for Intercepted {
    fn drop(&mut self) {
        // A call nobody waits for any more (reset, connection gone) stops.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Outgoing {
    head: Option<Bytes>,
    data: Bytes,
    trailers: Option<Bytes>,
}

/// containerd's DATA held back for want of client window (see `flow.rs`).
struct Held {
    stream: u32,
    end_stream: bool,
    rest: Bytes,
}

struct PartialBlock {
    stream: u32,
    end_stream: bool,
    /// The frames as they came, to pass on once the block is complete.
    raw: BytesMut,
    fragment: BytesMut,
}

/// The decoded fields of the last request head, kept for an intercepted
/// call: names and values back to back in `bytes`.
#[derive(Default)]
struct HeadFields {
    bytes: Vec<u8>,
    /// (name start, value start, value end) in `bytes`.
    fields: Vec<(usize, usize, usize)>,
    complete: bool,
}

impl HeadFields {
    fn clear(&mut self) {
        self.bytes.clear();
        self.fields.clear();
        self.complete = true;
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        if !self.complete || self.bytes.len() + name.len() + value.len() > MAX_KEPT_HEAD {
            self.complete = false;
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.fields
            .push((start, start + name.len(), self.bytes.len()));
    }

    /// The head in our stateless encoding.
    fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.bytes.len() + 8 * self.fields.len());
        for &(start, mid, end) in &self.fields {
            hpack::encode_field(&mut out, &self.bytes[start..mid], &self.bytes[mid..end]);
        }
        out.freeze()
    }
}

/// What the relay does with a call, by its `:path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Passed on as it came.
    Relay,
    /// Taken out of the stream and answered by the proxy (a `Call`).
    Intercept,
    /// Not served here: muted toward containerd and answered UNIMPLEMENTED.
    Refuse,
}

pub struct Relay {
    pub from_client: BytesMut,
    pub from_upstream: BytesMut,
    pub to_client: BytesMut,
    pub to_upstream: BytesMut,
    /// Calls to decide, for the connection to start.
    pub calls: Vec<Call>,
    handling: fn(&str) -> Handling,
    metrics: Option<Arc<Metrics>>,
    preface_seen: bool,
    client_settings_seen: bool,
    decoder: hpack::Decoder,
    head: HeadFields,
    path: Vec<u8>,
    counters: Vec<(Box<[u8]>, Counter)>,
    client_block: Option<PartialBlock>,
    upstream_in_block: bool,
    /// Our own control frames for the client (window updates, resets),
    /// held while containerd's header block is half passed on: nothing may
    /// come between a HEADERS frame and its CONTINUATIONs.
    control: BytesMut,
    streams: HashMap<u32, Stream>,
    closed: VecDeque<u32>,
    last_client_stream: u32,
    window: ClientWindow,
    client_initial_window: i64,
    client_max_frame: usize,
    /// Connection-level window we owe the client for DATA we swallowed.
    owed: u64,
    held: Option<Held>,
    /// Intercepted streams whose reply is (partly) unsent.
    replying: Vec<u32>,
    /// The last stream accepted, once we told the client to go away.
    draining: Option<u32>,
    goaway_pending: bool,
    /// The last stream id of a GOAWAY containerd sent: a later GOAWAY of
    /// ours must not name a higher one (clients close on an increase).
    upstream_goaway: Option<u32>,
    /// SETTINGS frames containerd has yet to acknowledge, in order: the
    /// client's (None) and our markers (their number).
    settings_unacked: VecDeque<Option<u64>>,
    fence_sent: u64,
    fence_acked: u64,
    fence_wanted: bool,
    /// What the client may still send on the connection, by its count.
    client_send_window: i64,
    /// Connection window containerd gave back that the client has not
    /// been told of yet. containerd (grpc-go) returns window with a PING
    /// after nearly every request; passed on at once, the update alone
    /// would wake the client for nothing between request and reply.
    held_window: u64,
    /// Our answers to containerd's PINGs, waiting to travel with the next
    /// frames containerd gets (see `release_acks`).
    held_acks: BytesMut,
    /// Whether containerd has sent HEADERS or DATA since the last client
    /// PING we passed it. grpc-go counts a PING that comes when it has
    /// written neither since the one before as a strike, and after two
    /// strikes closes the connection (GOAWAY ENHANCE_YOUR_CALM,
    /// "too_many_pings"). A client sends its PINGs after replies (BDP
    /// estimation), and the replies to intercepted calls are ours: passed
    /// on, the PINGs that follow a few creates in a row would have
    /// containerd close kubelet's connection.
    upstream_wrote: bool,
    /// containerd's SETTINGS (its preface) have gone to the client; before
    /// that, nothing of ours may (RFC 9113 §3.4).
    upstream_preface_relayed: bool,
}

impl Relay {
    pub fn new(handling: fn(&str) -> Handling, metrics: Option<Arc<Metrics>>) -> Relay {
        Relay {
            from_client: BytesMut::with_capacity(64 << 10),
            from_upstream: BytesMut::with_capacity(64 << 10),
            to_client: BytesMut::with_capacity(64 << 10),
            to_upstream: BytesMut::with_capacity(64 << 10),
            calls: Vec::new(),
            handling,
            metrics,
            preface_seen: false,
            client_settings_seen: false,
            decoder: hpack::Decoder::new(),
            head: HeadFields::default(),
            path: Vec::new(),
            counters: Vec::new(),
            client_block: None,
            upstream_in_block: false,
            control: BytesMut::new(),
            streams: HashMap::new(),
            closed: VecDeque::new(),
            last_client_stream: 0,
            window: ClientWindow::default(),
            client_initial_window: frame::DEFAULT_WINDOW,
            client_max_frame: frame::DEFAULT_MAX_FRAME,
            owed: 0,
            held: None,
            replying: Vec::new(),
            draining: None,
            goaway_pending: false,
            upstream_goaway: None,
            settings_unacked: VecDeque::new(),
            fence_sent: 0,
            fence_acked: 0,
            fence_wanted: false,
            client_send_window: frame::DEFAULT_WINDOW,
            held_window: 0,
            held_acks: BytesMut::new(),
            upstream_wrote: true,
            upstream_preface_relayed: false,
        }
    }

    /// No call is in flight.
    pub fn idle(&self) -> bool {
        self.streams.is_empty() && self.held.is_none()
    }

    /// Refuses new calls (GOAWAY) and lets the ones in flight finish.
    pub fn drain(&mut self) {
        if self.draining.is_none() {
            self.draining = Some(self.last_client_stream);
            self.goaway_pending = true;
            self.pump();
        }
    }

    /// Answers to containerd's PINGs are waiting (for `release_acks`).
    pub fn acks_held(&self) -> bool {
        !self.held_acks.is_empty()
    }

    /// Queues the held PING answers for containerd.
    ///
    /// grpc-go PINGs with nearly every request it reads, usually in the
    /// same write as its reply. Answered at once, the answer would go out
    /// between reading that reply and passing it on, and wake containerd
    /// while the client is being answered; held, it rides along with the
    /// next frames for containerd (the client's next call, as a rule), or
    /// goes alone once the connection driver's short deadline passes.
    /// Whole client header blocks are all `to_upstream` ever holds, so the
    /// answers never land inside one.
    pub fn release_acks(&mut self) {
        if !self.held_acks.is_empty() {
            self.to_upstream.unsplit(self.held_acks.split());
        }
    }

    /// The task deciding the call on `stream`, aborted if the call goes.
    pub fn set_task(&mut self, stream: u32, task: AbortHandle) {
        match self.streams.get_mut(&stream) {
            Some(Stream::Intercept(s)) => s.task = Some(task),
            _ => task.abort(),
        }
    }

    /// The answer to an intercepted call.
    pub fn reply(&mut self, stream: u32, reply: Reply) {
        if let Some(Stream::Intercept(s)) = self.streams.get_mut(&stream)
            && s.reply.is_none()
        {
            s.reply = Some(Outgoing {
                head: Some(reply.head),
                data: reply.data,
                trailers: reply.trailers,
            });
            self.replying.push(stream);
        }
        self.pump();
    }

    // ---- client → containerd ----

    /// Handles every complete frame the client sent.
    pub fn client_frames(&mut self) -> Result<(), RelayError> {
        if !self.preface_seen {
            if self.from_client.len() < frame::PREFACE.len() {
                return Ok(());
            }
            if !self.from_client.starts_with(frame::PREFACE) {
                return Err(RelayError::Preface);
            }
            self.from_client.advance(frame::PREFACE.len());
            self.to_upstream.extend_from_slice(frame::PREFACE);
            self.preface_seen = true;
        }
        while let Some(h) = Header::parse(&self.from_client) {
            if self.from_client.len() < h.total() {
                break;
            }
            self.client_frame(h)?;
        }
        if self.fence_wanted {
            self.fence_wanted = false;
            frame::put_empty_settings(&mut self.to_upstream);
            self.fence_sent += 1;
            self.settings_unacked.push_back(Some(self.fence_sent));
        }
        if self.owed > 0 {
            // Window for what we swallowed, in one update per batch.
            let owed = u32::try_from(self.owed.min(frame::MAX_WINDOW as u64)).unwrap_or(0);
            frame::put_window_update(&mut self.control, 0, owed);
            self.owed -= u64::from(owed);
            self.client_send_window += i64::from(owed);
        }
        self.pump();
        if !self.to_upstream.is_empty() {
            self.release_acks();
        }
        Ok(())
    }

    fn pass_client_frame(&mut self, h: &Header) {
        move_frame(&mut self.from_client, &mut self.to_upstream, h);
    }

    fn client_frame(&mut self, h: Header) -> Result<(), RelayError> {
        if !self.client_settings_seen {
            // Our SETTINGS markers must not come ahead of the client's.
            if h.kind != frame::SETTINGS || h.has(frame::ACK) {
                return Err(RelayError::Protocol(
                    "the client did not start with SETTINGS",
                ));
            }
            self.client_settings_seen = true;
        }
        if let Some(block) = &mut self.client_block {
            if h.kind != frame::CONTINUATION || h.stream != block.stream {
                return Err(RelayError::Protocol("header block interrupted"));
            }
            block
                .fragment
                .extend_from_slice(&self.from_client[frame::HEADER_LEN..h.total()]);
            block.raw.extend_from_slice(&self.from_client[..h.total()]);
            self.from_client.advance(h.total());
            if block.fragment.len() > MAX_HEADER_BLOCK {
                return Err(RelayError::Protocol("header block too large"));
            }
            if h.has(frame::END_HEADERS)
                && let Some(block) = self.client_block.take()
            {
                self.client_headers(block.stream, block.end_stream, &block.raw, &block.fragment)?;
            }
            return Ok(());
        }
        match h.kind {
            frame::HEADERS => {
                let raw = self.from_client.split_to(h.total());
                let fragment = frame::headers_fragment(&h, &raw[frame::HEADER_LEN..])?;
                if h.has(frame::END_HEADERS) {
                    self.client_headers(h.stream, h.has(frame::END_STREAM), &raw, fragment)?;
                } else {
                    self.client_block = Some(PartialBlock {
                        stream: h.stream,
                        end_stream: h.has(frame::END_STREAM),
                        fragment: BytesMut::from(fragment),
                        raw,
                    });
                }
            }
            frame::CONTINUATION => return Err(RelayError::Protocol("CONTINUATION out of place")),
            frame::DATA => self.client_data(&h)?,
            frame::WINDOW_UPDATE => self.client_window_update(&h)?,
            frame::RST_STREAM => match self.streams.get(&h.stream) {
                Some(Stream::Intercept(_)) => {
                    tracing::debug!(stream = h.stream, "the client reset an intercepted call");
                    self.close_intercepted(h.stream);
                    self.from_client.advance(h.total());
                }
                Some(Stream::Forward { .. }) => {
                    self.streams.remove(&h.stream);
                    self.pass_client_frame(&h);
                }
                None if self.closed.contains(&h.stream) => self.from_client.advance(h.total()),
                None => self.pass_client_frame(&h),
            },
            frame::SETTINGS => {
                if !h.has(frame::ACK) {
                    self.client_settings(&h)?;
                    self.settings_unacked.push_back(None);
                }
                self.pass_client_frame(&h);
            }
            frame::PRIORITY if self.not_upstreams(h.stream) => self.from_client.advance(h.total()),
            frame::PING if !h.has(frame::ACK) && h.len == 8 && h.stream == 0 => {
                if std::mem::take(&mut self.upstream_wrote) || !self.upstream_preface_relayed {
                    self.pass_client_frame(&h);
                } else {
                    // Answered here: to containerd it would be a strike
                    // (see `upstream_wrote`). PING is between the two ends
                    // of one connection, and we are the client's.
                    frame::put_ping_ack(
                        &mut self.control,
                        &self.from_client[frame::HEADER_LEN..h.total()],
                    );
                    self.from_client.advance(h.total());
                }
            }
            _ => self.pass_client_frame(&h),
        }
        Ok(())
    }

    /// A stream containerd does not know: intercepted, or closed by us.
    fn not_upstreams(&self, stream: u32) -> bool {
        matches!(self.streams.get(&stream), Some(Stream::Intercept(_)))
            || self.closed.contains(&stream)
    }

    fn client_headers(
        &mut self,
        stream: u32,
        end_stream: bool,
        raw: &[u8],
        block: &[u8],
    ) -> Result<(), RelayError> {
        if stream.is_multiple_of(2) || stream <= self.last_client_stream {
            // Trailers, or a stream id used before: no gRPC client sends
            // either, and containerd would end the connection over them
            // too. We end it ourselves because containerd may not have
            // registered every id below the last (a block it refused as
            // malformed), so such a block could open a call there that
            // nothing decided, and dropping it would desynchronise the
            // compression context.
            return Err(RelayError::Protocol(
                "HEADERS that do not open a new stream",
            ));
        }
        let head = &mut self.head;
        let path = &mut self.path;
        head.clear();
        path.clear();
        let mut intercept = false;
        let mut not_served = None;
        let mut intercepted_path = None;
        let handling = self.handling;
        self.decoder.decode(block, |name, value| {
            if name == b":path" {
                // Whichever `:path` containerd would read, if any of them
                // is an intercepted method, or one not served, the call is
                // muted.
                let value_str = String::from_utf8_lossy(value);
                match handling(&value_str) {
                    Handling::Intercept if !intercept => {
                        intercept = true;
                        intercepted_path = Some(value_str.into_owned());
                    }
                    Handling::Refuse if not_served.is_none() => {
                        // Named back to the client, who wrote it: bounded.
                        not_served = Some(value_str.chars().take(256).collect::<String>());
                    }
                    _ => {}
                }
                if path.is_empty() {
                    path.extend_from_slice(value);
                }
            }
            head.push(name, value);
        })?;
        self.last_client_stream = stream;
        let refused = self.draining.is_some_and(|last| stream > last);
        if !refused && not_served.is_none() {
            self.count_call();
        }
        let muted = intercept || refused || not_served.is_some();
        let at = self.to_upstream.len();
        self.to_upstream.extend_from_slice(raw);
        if !muted {
            self.streams.insert(
                stream,
                Stream::Forward {
                    client_done: end_stream,
                    server_done: false,
                },
            );
            return Ok(());
        }
        // containerd must never see this request end: no END_STREAM, no
        // DATA, and a reset right behind the header block.
        self.to_upstream[at + 4] &= !frame::END_STREAM;
        frame::put_rst_stream(&mut self.to_upstream, stream, frame::CANCEL);
        self.fence_wanted = true;
        let complete_head = self.head.complete;
        let call = Intercepted {
            head: if refused || !complete_head {
                Bytes::new()
            } else {
                self.head.encode()
            },
            path: intercepted_path.unwrap_or_default(),
            fence: self.fence_sent + 1,
            refused,
            body: BytesMut::new(),
            client_done: end_stream,
            too_large: false,
            dispatched: refused,
            window: self.client_initial_window,
            reply: None,
            task: None,
        };
        self.streams
            .insert(stream, Stream::Intercept(Box::new(call)));
        if refused {
            self.replying.push(stream);
        } else if let Some(path) = not_served {
            self.reject(stream, crate::grpc::ProxyError::NotServed(path));
        } else if !complete_head {
            self.reject(
                stream,
                crate::grpc::ProxyError::BadRequest(format!(
                    "request head larger than {MAX_KEPT_HEAD} bytes"
                )),
            );
        } else if end_stream {
            self.dispatch(stream);
        }
        Ok(())
    }

    /// Counts a call to the `:path` just decoded.
    fn count_call(&mut self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let path = &self.path[..];
        if let Some((_, counter)) = self.counters.iter().find(|(p, _)| &p[..] == path) {
            counter.inc();
            return;
        }
        let counter = metrics.forwarded_counter(&String::from_utf8_lossy(path));
        counter.inc();
        if self.counters.len() < COUNTERS_KEPT {
            self.counters.push((path.into(), counter));
        }
    }

    fn client_data(&mut self, h: &Header) -> Result<(), RelayError> {
        self.client_send_window -= h.len as i64;
        // Request bodies of intercepted calls are held in memory until
        // decided, and their window is given back at once: bound what one
        // connection can make us hold.
        let buffered: usize = if matches!(self.streams.get(&h.stream), Some(Stream::Intercept(_))) {
            self.streams
                .values()
                .filter_map(|s| match s {
                    Stream::Intercept(i) if !i.dispatched => Some(i.body.len()),
                    _ => None,
                })
                .sum()
        } else {
            0
        };
        match self.streams.get_mut(&h.stream) {
            Some(Stream::Intercept(s)) => {
                let raw = self.from_client.split_to(h.total());
                let data = frame::unpad(h, &raw[frame::HEADER_LEN..])?;
                self.owed += h.len as u64;
                if !s.dispatched {
                    if s.body.len() + data.len() > MAX_DECODED_REQUEST
                        || buffered + data.len() > CONNECTION_BUFFER_LIMIT
                    {
                        s.too_large = true;
                    } else {
                        s.body.extend_from_slice(data);
                    }
                }
                if h.has(frame::END_STREAM) {
                    s.client_done = true;
                } else if h.len > 0 {
                    // The stream's window is ours to give back.
                    frame::put_window_update(&mut self.control, h.stream, h.len as u32);
                }
                if s.client_done || s.too_large {
                    self.dispatch(h.stream);
                }
            }
            Some(Stream::Forward { client_done, .. }) => {
                if h.has(frame::END_STREAM) {
                    *client_done = true;
                    self.pass_client_frame(h);
                    self.maybe_done(h.stream);
                } else {
                    self.pass_client_frame(h);
                }
            }
            None if self.closed.contains(&h.stream) => {
                self.owed += h.len as u64;
                self.from_client.advance(h.total());
            }
            None => self.pass_client_frame(h),
        }
        Ok(())
    }

    fn client_window_update(&mut self, h: &Header) -> Result<(), RelayError> {
        let increment = frame::window_increment(&self.from_client[frame::HEADER_LEN..h.total()])?;
        if h.stream == 0 && increment > 0 {
            self.from_client.advance(h.total());
            let passed = self.window.client_update(increment);
            if passed > 0 {
                frame::put_window_update(&mut self.to_upstream, 0, passed);
            }
            return Ok(());
        }
        match self.streams.get_mut(&h.stream) {
            Some(Stream::Intercept(s)) => {
                s.window = (s.window + i64::from(increment)).min(frame::MAX_WINDOW);
                self.from_client.advance(h.total());
            }
            None if self.closed.contains(&h.stream) => self.from_client.advance(h.total()),
            _ => self.pass_client_frame(h),
        }
        Ok(())
    }

    fn client_settings(&mut self, h: &Header) -> Result<(), RelayError> {
        let payload = &self.from_client[frame::HEADER_LEN..h.total()];
        for (id, value) in frame::settings(payload)? {
            match id {
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value).min(frame::MAX_WINDOW);
                    let delta = value - self.client_initial_window;
                    self.client_initial_window = value;
                    for stream in self.streams.values_mut() {
                        if let Stream::Intercept(s) = stream {
                            s.window += delta;
                        }
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    self.client_max_frame =
                        (value as usize).clamp(frame::DEFAULT_MAX_FRAME, 0xff_ffff);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Hands a complete intercepted request over for its decision, or
    /// answers it at once when it is too large to decode.
    fn dispatch(&mut self, stream: u32) {
        let Some(Stream::Intercept(s)) = self.streams.get_mut(&stream) else {
            return;
        };
        if s.dispatched {
            return;
        }
        s.dispatched = true;
        if s.too_large {
            s.body = BytesMut::new();
            self.reject(
                stream,
                crate::grpc::ProxyError::TooLarge(MAX_DECODED_REQUEST - 5),
            );
            return;
        }
        self.calls.push(Call {
            stream,
            path: s.path.clone(),
            head: s.head.clone(),
            body: std::mem::take(&mut s.body).freeze(),
        });
    }

    /// Answers an intercepted call with an error without deciding it.
    fn reject(&mut self, stream: u32, error: crate::grpc::ProxyError) {
        if let Some(Stream::Intercept(s)) = self.streams.get_mut(&stream) {
            s.dispatched = true;
        }
        self.reply(stream, Reply::error(error));
    }

    fn maybe_done(&mut self, stream: u32) {
        if let Some(Stream::Forward {
            client_done: true,
            server_done: true,
        }) = self.streams.get(&stream)
        {
            self.streams.remove(&stream);
        }
    }

    fn close_intercepted(&mut self, stream: u32) {
        self.streams.remove(&stream);
        self.replying.retain(|&s| s != stream);
        self.remember_closed(stream);
    }

    fn remember_closed(&mut self, stream: u32) {
        if self.closed.len() == CLOSED_REMEMBERED {
            self.closed.pop_front();
        }
        self.closed.push_back(stream);
    }

    // ---- containerd → client ----

    /// Passes on every complete frame containerd sent, as far as the
    /// client's window allows.
    pub fn upstream_frames(&mut self) -> Result<(), RelayError> {
        if !self.release_held() {
            // Replies to intercepted calls need not wait behind held data.
            self.pump();
            return Ok(());
        }
        while let Some(h) = Header::parse(&self.from_upstream) {
            if self.from_upstream.len() < h.total() {
                break;
            }
            if self.upstream_in_block {
                if h.kind != frame::CONTINUATION {
                    return Err(RelayError::Protocol("runtime interrupted a header block"));
                }
                self.upstream_in_block = !h.has(frame::END_HEADERS);
                self.pass_upstream_frame(&h);
                continue;
            }
            if matches!(h.kind, frame::HEADERS | frame::DATA) {
                self.upstream_wrote = true;
            }
            match h.kind {
                frame::DATA if self.muted(h.stream) => {
                    // Never the client's: containerd gets its window back.
                    self.from_upstream.advance(h.total());
                    if h.len > 0 {
                        frame::put_window_update(&mut self.to_upstream, 0, h.len as u32);
                    }
                }
                frame::DATA => {
                    let available = self.window.available();
                    if h.len <= available {
                        self.window.forwarded(h.len);
                        self.pass_upstream_frame(&h);
                        if h.has(frame::END_STREAM) {
                            self.server_done(h.stream);
                        }
                    } else if !h.has(frame::PADDED) && available > 0 {
                        // What fits goes now; the rest waits for the window.
                        let raw = self.from_upstream.split_to(h.total()).freeze();
                        let payload = raw.slice(frame::HEADER_LEN..);
                        frame::put_data(
                            &mut self.to_client,
                            h.stream,
                            &payload[..available],
                            false,
                        );
                        self.window.forwarded(available);
                        self.held = Some(Held {
                            stream: h.stream,
                            end_stream: h.has(frame::END_STREAM),
                            rest: payload.slice(available..),
                        });
                        break;
                    } else {
                        break;
                    }
                }
                frame::HEADERS => {
                    // Passed on whatever the stream: the client's decoder
                    // must see every block containerd encoded.
                    self.upstream_in_block = !h.has(frame::END_HEADERS);
                    self.pass_upstream_frame(&h);
                    if matches!(self.streams.get(&h.stream), Some(Stream::Intercept(_))) {
                        // containerd answered a muted call before our reset
                        // reached it (a request it found malformed): that
                        // answer is what the client would have had without
                        // us, so ours is dropped.
                        self.close_intercepted(h.stream);
                        if !h.has(frame::END_STREAM) {
                            frame::put_rst_stream(&mut self.control, h.stream, frame::CANCEL);
                        }
                    } else if h.has(frame::END_STREAM) {
                        self.server_done(h.stream);
                    }
                }
                frame::RST_STREAM | frame::WINDOW_UPDATE
                    if h.stream != 0 && self.muted(h.stream) =>
                {
                    self.from_upstream.advance(h.total());
                }
                frame::WINDOW_UPDATE if h.stream == 0 => {
                    let increment =
                        frame::window_increment(&self.from_upstream[frame::HEADER_LEN..h.total()]);
                    match increment {
                        Ok(increment) if increment > 0 => {
                            self.held_window += u64::from(increment);
                            self.from_upstream.advance(h.total());
                        }
                        // containerd's own protocol error: the client judges it.
                        _ => self.pass_upstream_frame(&h),
                    }
                }
                frame::PING
                    if !h.has(frame::ACK) && h.len == 8 && self.upstream_goaway.is_none() =>
                {
                    // PING is between the two ends of one connection: this
                    // one is ours to answer. Passed on, it would cost the
                    // client a wake-up and a write, and us another relay,
                    // per call. Once containerd is going away its PINGs
                    // pass, as it times its last GOAWAY by the client's.
                    frame::put_ping_ack(
                        &mut self.held_acks,
                        &self.from_upstream[frame::HEADER_LEN..h.total()],
                    );
                    self.from_upstream.advance(h.total());
                }
                frame::RST_STREAM => {
                    if matches!(self.streams.get(&h.stream), Some(Stream::Forward { .. })) {
                        self.streams.remove(&h.stream);
                    }
                    self.pass_upstream_frame(&h);
                }
                frame::SETTINGS if h.has(frame::ACK) => match self.settings_unacked.pop_front() {
                    Some(Some(fence)) => {
                        self.fence_acked = fence;
                        self.from_upstream.advance(h.total());
                    }
                    _ => self.pass_upstream_frame(&h),
                },
                frame::SETTINGS => {
                    let payload = &self.from_upstream[frame::HEADER_LEN..h.total()];
                    for (id, value) in frame::settings(payload)? {
                        if id == frame::SETTINGS_HEADER_TABLE_SIZE {
                            self.decoder.allow_table_size(value as usize);
                        }
                    }
                    self.pass_upstream_frame(&h);
                    self.upstream_preface_relayed = true;
                }
                frame::GOAWAY => {
                    let payload = &self.from_upstream[frame::HEADER_LEN..h.total()];
                    if let Some(last) = payload.get(..4) {
                        let last =
                            u32::from_be_bytes([last[0], last[1], last[2], last[3]]) & 0x7fff_ffff;
                        self.upstream_goaway =
                            Some(self.upstream_goaway.map_or(last, |l| l.min(last)));
                        // Streams past `last` were never processed and never
                        // will be; the client may retry them elsewhere, so
                        // muted ones are not answered either.
                        self.streams.retain(|&id, _| id <= last);
                        self.replying.retain(|&id| id <= last);
                    }
                    self.pass_upstream_frame(&h);
                }
                _ => self.pass_upstream_frame(&h),
            }
        }
        self.pump();
        if !self.to_upstream.is_empty() {
            self.release_acks();
        }
        Ok(())
    }

    /// A stream containerd must not be heard on by the client, apart from
    /// header blocks: muted, or muted and closed.
    fn muted(&self, stream: u32) -> bool {
        match self.streams.get(&stream) {
            Some(Stream::Intercept(_)) => true,
            Some(Stream::Forward { .. }) => false,
            None => self.closed.contains(&stream),
        }
    }

    fn pass_upstream_frame(&mut self, h: &Header) {
        move_frame(&mut self.from_upstream, &mut self.to_client, h);
    }

    /// Sends what the window allows of held-back data; true when none is left.
    fn release_held(&mut self) -> bool {
        let Some(held) = &mut self.held else {
            return true;
        };
        let n = self.window.available().min(held.rest.len());
        if n == 0 {
            return false;
        }
        let last = n == held.rest.len();
        frame::put_data(
            &mut self.to_client,
            held.stream,
            &held.rest[..n],
            last && held.end_stream,
        );
        self.window.forwarded(n);
        held.rest.advance(n);
        if !last {
            return false;
        }
        let (stream, end) = (held.stream, held.end_stream);
        self.held = None;
        if end {
            self.server_done(stream);
        }
        true
    }

    fn server_done(&mut self, stream: u32) {
        if let Some(Stream::Forward { server_done, .. }) = self.streams.get_mut(&stream) {
            *server_done = true;
            self.maybe_done(stream);
        }
    }

    // ---- injected replies ----

    /// Sends what it can of the replies to intercepted calls, between
    /// containerd's frames (never inside one of its header blocks).
    pub fn pump(&mut self) {
        if self.upstream_in_block {
            return;
        }
        if !self.control.is_empty() {
            self.to_client.unsplit(self.control.split());
        }
        if self.held_window > 0
            && (self.client_send_window < CLIENT_WINDOW_LOW || !self.to_client.is_empty())
        {
            let increment = self.held_window.min(frame::MAX_WINDOW as u64);
            frame::put_window_update(&mut self.to_client, 0, increment as u32);
            self.held_window -= increment;
            self.client_send_window += increment as i64;
        }
        if self.goaway_pending {
            self.goaway_pending = false;
            let ours = self.draining.unwrap_or(self.last_client_stream);
            let last = self.upstream_goaway.map_or(ours, |theirs| theirs.min(ours));
            frame::put_goaway(&mut self.to_client, last, frame::NO_ERROR);
        }
        let mut i = 0;
        while i < self.replying.len() {
            let stream = self.replying[i];
            if let Some(Stream::Intercept(s)) = self.streams.get(&stream)
                && s.fence > self.fence_acked
            {
                i += 1;
                continue;
            }
            if self.pump_one(stream) {
                self.replying.swap_remove(i);
                if let Some(Stream::Intercept(s)) = self.streams.get(&stream)
                    && !s.client_done
                    && !s.refused
                {
                    // Answered before the request ended: the rest is not wanted.
                    frame::put_rst_stream(&mut self.to_client, stream, frame::NO_ERROR);
                }
                self.streams.remove(&stream);
                self.remember_closed(stream);
            } else {
                i += 1;
            }
        }
    }

    /// True once the reply on `stream` is all sent.
    fn pump_one(&mut self, stream: u32) -> bool {
        let Some(Stream::Intercept(s)) = self.streams.get_mut(&stream) else {
            return true;
        };
        if s.refused {
            frame::put_rst_stream(&mut self.to_client, stream, frame::REFUSED_STREAM);
            return true;
        }
        let Some(out) = s.reply.as_mut() else {
            return true;
        };
        let max_frame = self.client_max_frame;
        if let Some(head) = out.head.take() {
            let end = out.data.is_empty() && out.trailers.is_none();
            frame::put_header_block(&mut self.to_client, stream, &head, end, max_frame);
            if end {
                return true;
            }
        }
        while !out.data.is_empty() {
            let stream_window = usize::try_from(s.window.max(0)).unwrap_or(0);
            let n = out
                .data
                .len()
                .min(self.window.available())
                .min(stream_window)
                .min(max_frame);
            if n == 0 {
                return false;
            }
            let end = n == out.data.len() && out.trailers.is_none();
            frame::put_data(&mut self.to_client, stream, &out.data[..n], end);
            out.data.advance(n);
            self.window.injected(n);
            s.window -= n as i64;
        }
        if let Some(trailers) = out.trailers.take() {
            frame::put_header_block(&mut self.to_client, stream, &trailers, true, max_frame);
        }
        true
    }
}

/// Moves the frame `h` heads from the front of `from` to the end of `to`, as is.
fn move_frame(from: &mut BytesMut, to: &mut BytesMut, h: &Header) {
    to.extend_from_slice(&from[..h.total()]);
    from.advance(h.total());
}

#[cfg(test)]
mod tests {
    use super::*;
    use frame::*;

    fn intercept(path: &str) -> Handling {
        if path.ends_with("/Intercepted") {
            Handling::Intercept
        } else if path.starts_with("/not.served.") {
            Handling::Refuse
        } else {
            Handling::Relay
        }
    }

    /// A relay past the connection preface, containerd having acknowledged
    /// the client's first SETTINGS.
    fn relay() -> Relay {
        let mut r = Relay::new(intercept, None);
        r.from_client.extend_from_slice(PREFACE);
        put_header(&mut r.from_client, 0, SETTINGS, 0, 0);
        r.client_frames().unwrap();
        r.to_upstream.clear();
        put_header(&mut r.from_upstream, 0, SETTINGS, ACK, 0);
        r.upstream_frames().unwrap();
        r.to_client.clear();
        r
    }

    /// What containerd got of a muted call: its header block, our reset
    /// right behind it, and the marker.
    fn assert_muted(r: &mut Relay, stream: u32) {
        assert_eq!(
            shape(&mut r.to_upstream),
            vec![
                (HEADERS, stream, END_HEADERS),
                (RST_STREAM, stream, 0),
                (SETTINGS, 0, 0)
            ]
        );
    }

    /// containerd acknowledges the next SETTINGS frame, our marker.
    fn ack_fence(r: &mut Relay) {
        put_header(&mut r.from_upstream, 0, SETTINGS, ACK, 0);
        r.upstream_frames().unwrap();
    }

    /// All frames in `buf`: (header, payload).
    fn frames(buf: &mut BytesMut) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(h) = Header::parse(buf) {
            out.push((h, buf[HEADER_LEN..h.total()].to_vec()));
            buf.advance(h.total());
        }
        assert!(buf.is_empty(), "trailing partial frame");
        out
    }

    fn shape(buf: &mut BytesMut) -> Vec<(u8, u32, u8)> {
        frames(buf)
            .iter()
            .map(|(h, _)| (h.kind, h.stream, h.flags))
            .collect()
    }

    fn ping_frame() -> BytesMut {
        let mut ping = BytesMut::new();
        put_header(&mut ping, 8, PING, 0, 0);
        ping.extend_from_slice(b"12345678");
        ping
    }

    fn request_block(path: &str) -> BytesMut {
        let mut b = BytesMut::new();
        hpack::encode_field(&mut b, b":method", b"POST");
        hpack::encode_field(&mut b, b":scheme", b"http");
        hpack::encode_field(&mut b, b":path", path.as_bytes());
        hpack::encode_field(&mut b, b"grpc-timeout", b"5S");
        b
    }

    fn client_headers(r: &mut Relay, stream: u32, path: &str, end: bool) {
        put_header_block(
            &mut r.from_client,
            stream,
            &request_block(path),
            end,
            16_384,
        );
    }

    fn reply(data: &[u8]) -> Reply {
        Reply {
            head: Bytes::from_static(b"\x88"),
            data: Bytes::copy_from_slice(data),
            trailers: None,
        }
    }

    #[test]
    fn forwarded_calls_pass_untouched() {
        let mut r = relay();
        // An indexing client: the second call refers to its dynamic table.
        let mut sent_by_client = BytesMut::new();
        put_header_block(
            &mut sent_by_client,
            1,
            b"\x83\x86\x44\x0c/svc/Version",
            false,
            16_384,
        );
        put_data(&mut sent_by_client, 1, b"\0\0\0\0\0", true);
        put_header_block(&mut sent_by_client, 3, b"\x83\x86\xbe", true, 16_384);
        r.from_client.extend_from_slice(&sent_by_client);
        r.client_frames().unwrap();
        assert_eq!(&r.to_upstream[..], &sent_by_client[..]);
        r.to_upstream.clear();
        assert!(!r.idle());

        // containerd's answers pass untouched and close the streams.
        let mut answer = BytesMut::new();
        for stream in [1, 3] {
            put_header_block(&mut answer, stream, b"\x88", false, 16_384);
            put_data(&mut answer, stream, b"\0\0\0\0\x02hi", false);
            put_header_block(
                &mut answer,
                stream,
                b"\x40\x0bgrpc-status\x010",
                true,
                16_384,
            );
        }
        r.from_upstream.extend_from_slice(&answer);
        r.upstream_frames().unwrap();
        assert_eq!(&r.to_client[..], &answer[..]);
        assert!(r.idle());
        assert!(r.to_upstream.is_empty());
    }

    #[test]
    fn header_blocks_that_open_no_new_stream_end_the_connection() {
        // A lower id again (containerd may not have registered it), an
        // even id, trailers on an open stream: none of them goes on.
        let cases: [&[(u32, &str, bool)]; 3] = [
            &[
                (3, "/svc/Intercepted", false),
                (1, "/svc/Intercepted", true),
            ],
            &[(2, "/svc/Version", true)],
            &[(1, "/svc/Version", false), (1, "/svc/Intercepted", true)],
        ];
        for case in cases {
            let mut r = relay();
            let (last, earlier) = case.split_last().unwrap();
            for &(stream, path, end) in earlier {
                client_headers(&mut r, stream, path, end);
            }
            r.client_frames().unwrap();
            r.to_upstream.clear();
            client_headers(&mut r, last.0, last.1, last.2);
            let e = r.client_frames().unwrap_err();
            assert_eq!(e.code(), PROTOCOL_ERROR);
            assert!(r.to_upstream.is_empty(), "{:?}", shape(&mut r.to_upstream));
        }
    }

    #[test]
    fn intercepted_calls_are_muted_toward_containerd() {
        let mut r = relay();
        client_headers(&mut r, 1, "/svc/Intercepted", false);
        put_data(&mut r.from_client, 1, b"\0\0\0\0\x03", false);
        put_data(&mut r.from_client, 1, b"abc", true);
        // A forwarded call after it keeps its own stream id.
        client_headers(&mut r, 3, "/svc/Version", true);
        r.client_frames().unwrap();
        let sent = frames(&mut r.to_upstream);
        let got: Vec<_> = sent
            .iter()
            .map(|(h, _)| (h.kind, h.stream, h.flags))
            .collect();
        // The block goes on, for the compression context, but not its
        // end nor its body: a reset follows it at once, and the SETTINGS
        // marker closes the batch.
        assert_eq!(
            got,
            vec![
                (HEADERS, 1, END_HEADERS),
                (RST_STREAM, 1, 0),
                (HEADERS, 3, END_HEADERS | END_STREAM),
                (SETTINGS, 0, 0),
            ]
        );
        assert_eq!(&sent[0].1[..], &request_block("/svc/Intercepted")[..]);
        assert_eq!(&sent[1].1[..], &CANCEL.to_be_bytes());

        assert_eq!(r.calls.len(), 1);
        let call = r.calls.pop().unwrap();
        assert_eq!((call.stream, call.path.as_str()), (1, "/svc/Intercepted"));
        assert_eq!(&call.body[..], b"\0\0\0\0\x03abc");
        assert_eq!(
            hpack::fields_of_own(&call.head).unwrap()[3],
            (b"grpc-timeout".to_vec(), b"5S".to_vec())
        );
        // The client gets back the window of what we swallowed: the stream
        // window for the frame that did not end it, and the connection's.
        let back = frames(&mut r.to_client);
        let updates: Vec<_> = back
            .iter()
            .map(|(h, p)| (h.kind, h.stream, window_increment(p).unwrap()))
            .collect();
        assert_eq!(updates, vec![(WINDOW_UPDATE, 1, 5), (WINDOW_UPDATE, 0, 8)]);

        // Whatever containerd still sends on the stream (apart from header
        // blocks) is not the client's; its DATA window goes back to it.
        put_rst_stream(&mut r.from_upstream, 1, CANCEL);
        put_window_update(&mut r.from_upstream, 1, 10);
        put_data(&mut r.from_upstream, 1, b"xyz", false);
        r.upstream_frames().unwrap();
        assert!(r.to_client.is_empty(), "{:?}", shape(&mut r.to_client));
        let up = frames(&mut r.to_upstream);
        assert_eq!(up.len(), 1);
        assert_eq!(
            (up[0].0.stream, window_increment(&up[0].1).unwrap()),
            (0, 3)
        );
    }

    #[test]
    fn calls_not_served_are_muted_and_answered_unimplemented_at_once() {
        let mut r = relay();
        // Not even the request's end is awaited: a streaming client may
        // wait for an answer before it ends its side.
        client_headers(&mut r, 1, "/not.served.Images/Create", false);
        put_data(&mut r.from_client, 1, b"\0\0\0\0\x03", false);
        r.client_frames().unwrap();
        assert!(r.calls.is_empty(), "nothing to decide");
        assert_muted(&mut r, 1);
        ack_fence(&mut r);
        let sent = frames(&mut r.to_client);
        let head = sent
            .iter()
            .find(|(h, _)| h.kind == HEADERS && h.stream == 1)
            .expect("an answer");
        assert!(head.0.flags & END_STREAM != 0, "trailers only");
        let fields = hpack::fields_of_own(&head.1).unwrap();
        let field = |name: &[u8]| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(field(b"grpc-status").as_deref(), Some("12"));
        assert!(
            field(b"grpc-message").is_some_and(|m| m.contains("not.served.Images")),
            "{fields:?}"
        );
        // The rest of the call goes nowhere.
        put_data(&mut r.from_client, 1, b"abc", true);
        r.client_frames().unwrap();
        assert!(r.to_upstream.is_empty(), "{:?}", shape(&mut r.to_upstream));
        assert!(r.calls.is_empty());
    }

    #[test]
    fn a_reply_waits_for_containerd_to_pass_the_marker() {
        let mut r = relay();
        client_headers(&mut r, 1, "/svc/Intercepted", true);
        r.client_frames().unwrap();
        r.calls.clear();
        r.to_upstream.clear();
        // A SETTINGS of the client's own, after our marker.
        put_header(&mut r.from_client, 0, SETTINGS, 0, 0);
        r.client_frames().unwrap();
        r.reply(1, reply(b"ok"));
        assert!(
            r.to_client.is_empty(),
            "decided, but containerd may still speak"
        );
        ack_fence(&mut r);
        let got = shape(&mut r.to_client);
        assert_eq!(got, vec![(HEADERS, 1, END_HEADERS), (DATA, 1, END_STREAM)]);
        assert!(r.idle());
        // The next acknowledgement is for the client's SETTINGS: it passes.
        ack_fence(&mut r);
        assert_eq!(shape(&mut r.to_client), vec![(SETTINGS, 0, ACK)]);
    }

    #[test]
    fn containerd_answering_a_muted_call_first_is_what_the_client_gets() {
        let mut r = relay();
        client_headers(&mut r, 1, "/svc/Intercepted", true);
        r.client_frames().unwrap();
        assert_eq!(r.calls.len(), 1);
        // An early refusal (trailers-only), ahead of the marker's ack.
        let mut refusal = BytesMut::new();
        put_header_block(
            &mut refusal,
            1,
            b"\x88\x40\x0bgrpc-status\x0212",
            true,
            16_384,
        );
        r.from_upstream.extend_from_slice(&refusal);
        ack_fence(&mut r);
        assert_eq!(&r.to_client[..], &refusal[..]);
        r.to_client.clear();
        assert!(r.idle());
        // Our decision, when it comes, is dropped.
        r.reply(1, reply(b"late"));
        assert!(r.to_client.is_empty());
    }

    #[test]
    fn muted_calls_past_containerds_goaway_are_left_to_the_client() {
        let mut r = relay();
        client_headers(&mut r, 1, "/svc/Intercepted", true);
        client_headers(&mut r, 3, "/svc/Intercepted", true);
        r.client_frames().unwrap();
        assert_eq!(r.calls.len(), 2);
        let mut goaway = BytesMut::new();
        put_goaway(&mut goaway, 1, NO_ERROR);
        r.from_upstream.extend_from_slice(&goaway);
        ack_fence(&mut r);
        r.reply(3, reply(b"three"));
        r.reply(1, reply(b"one"));
        let got = shape(&mut r.to_client);
        assert_eq!(
            got,
            vec![
                (GOAWAY, 0, 0),
                (HEADERS, 1, END_HEADERS),
                (DATA, 1, END_STREAM)
            ]
        );
        assert!(r.idle());
    }

    #[test]
    fn containerds_pings_are_answered_here_until_it_goes_away() {
        let mut r = relay();
        let ping = ping_frame();
        r.from_upstream.extend_from_slice(&ping);
        r.upstream_frames().unwrap();
        assert!(r.to_client.is_empty());
        // The answer waits for company (or the driver's deadline).
        assert!(r.acks_held());
        assert!(r.to_upstream.is_empty());
        r.release_acks();
        assert!(!r.acks_held());
        let up = frames(&mut r.to_upstream);
        assert_eq!(up.len(), 1);
        assert_eq!((up[0].0.kind, up[0].0.flags), (PING, ACK));
        assert_eq!(&up[0].1[..], b"12345678");
        // Answers to the client's own PINGs pass.
        let mut pong = BytesMut::new();
        put_header(&mut pong, 8, PING, ACK, 0);
        pong.extend_from_slice(b"abcdefgh");
        r.from_upstream.extend_from_slice(&pong);
        r.upstream_frames().unwrap();
        assert_eq!(&r.to_client[..], &pong[..]);
        r.to_client.clear();
        // A shutting-down containerd times its last GOAWAY by the
        // client's answer, so from then on its PINGs are the client's.
        put_goaway(&mut r.from_upstream, 0x7fff_ffff, NO_ERROR);
        r.from_upstream.extend_from_slice(&ping);
        r.upstream_frames().unwrap();
        let got = shape(&mut r.to_client);
        assert_eq!(got, vec![(GOAWAY, 0, 0), (PING, 0, 0)]);
        assert!(r.to_upstream.is_empty());
    }

    #[test]
    fn client_pings_reach_containerd_only_after_it_wrote_something() {
        let mut r = relay();
        let ping = ping_frame();
        // Nothing containerd could count against the client yet: passed.
        r.from_client.extend_from_slice(&ping);
        r.client_frames().unwrap();
        assert_eq!(shape(&mut r.to_upstream), vec![(PING, 0, 0)]);
        // Nothing of ours goes to the client ahead of containerd's preface.
        r.from_client.extend_from_slice(&ping);
        r.client_frames().unwrap();
        assert_eq!(shape(&mut r.to_upstream), vec![(PING, 0, 0)]);
        assert!(r.to_client.is_empty());
        put_header(&mut r.from_upstream, 0, SETTINGS, 0, 0);
        r.upstream_frames().unwrap();
        assert_eq!(shape(&mut r.to_client), vec![(SETTINGS, 0, 0)]);
        // A PING on a stream is the client's protocol error: containerd's
        // to judge, as before.
        let mut on_stream = BytesMut::new();
        put_header(&mut on_stream, 8, PING, 0, 1);
        on_stream.extend_from_slice(b"12345678");
        r.from_client.extend_from_slice(&on_stream);
        r.client_frames().unwrap();
        assert_eq!(shape(&mut r.to_upstream), vec![(PING, 1, 0)]);
        // Another before containerd wrote HEADERS or DATA (the client heard
        // replies we gave): grpc-go's strike, answered here instead.
        r.from_client.extend_from_slice(&ping);
        r.client_frames().unwrap();
        assert!(r.to_upstream.is_empty());
        let back = frames(&mut r.to_client);
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].0.kind, back[0].0.flags), (PING, ACK));
        assert_eq!(&back[0].1[..], b"12345678");
        // containerd answers a call: the next PING is its again.
        let block = request_block("/runtime.v1.RuntimeService/Version");
        put_header(&mut r.from_client, block.len(), HEADERS, END_HEADERS, 1);
        r.from_client.extend_from_slice(&block);
        r.client_frames().unwrap();
        r.to_upstream.clear();
        let mut head = BytesMut::new();
        hpack::encode_field(&mut head, b":status", b"200");
        put_header(&mut r.from_upstream, head.len(), HEADERS, END_HEADERS, 1);
        r.from_upstream.extend_from_slice(&head);
        r.upstream_frames().unwrap();
        r.to_client.clear();
        r.from_client.extend_from_slice(&ping);
        r.client_frames().unwrap();
        assert_eq!(shape(&mut r.to_upstream), vec![(PING, 0, 0)]);
        assert!(r.to_client.is_empty());
    }

    #[test]
    fn answers_to_containerds_pings_travel_with_the_clients_next_frames() {
        let mut r = relay();
        let ping = ping_frame();
        r.from_upstream.extend_from_slice(&ping);
        r.upstream_frames().unwrap();
        assert!(r.to_upstream.is_empty());
        // The client's next call goes first, the answer right behind it,
        // in the same write.
        let block = request_block("/runtime.v1.RuntimeService/Version");
        put_header(&mut r.from_client, block.len(), HEADERS, END_HEADERS, 1);
        r.from_client.extend_from_slice(&block);
        r.client_frames().unwrap();
        assert!(!r.acks_held());
        let got = shape(&mut r.to_upstream);
        assert_eq!(got, vec![(HEADERS, 1, END_HEADERS), (PING, 0, ACK)]);
        // The next PING is held again.
        r.from_upstream.extend_from_slice(&ping);
        r.upstream_frames().unwrap();
        assert!(r.acks_held());
    }

    #[test]
    fn containerds_window_updates_travel_with_the_next_frame_unless_needed() {
        let mut r = relay();
        put_window_update(&mut r.from_upstream, 0, 9);
        r.upstream_frames().unwrap();
        assert!(r.to_client.is_empty(), "the client has window to spare");
        // The reply that follows takes the update along.
        client_headers(&mut r, 1, "/svc/Version", false);
        put_data(&mut r.from_client, 1, b"\0\0\0\0\0", true);
        r.client_frames().unwrap();
        put_header_block(&mut r.from_upstream, 1, b"\x88", true, 16_384);
        r.upstream_frames().unwrap();
        let got: Vec<_> = frames(&mut r.to_client)
            .iter()
            .map(|(h, p)| {
                (
                    h.kind,
                    h.stream,
                    if h.kind == WINDOW_UPDATE {
                        window_increment(p).unwrap()
                    } else {
                        0
                    },
                )
            })
            .collect();
        assert_eq!(got, vec![(HEADERS, 1, 0), (WINDOW_UPDATE, 0, 9)]);

        // A client short of window gets it at once.
        client_headers(&mut r, 3, "/svc/Upload", false);
        for _ in 0..3 {
            put_data(&mut r.from_client, 3, &[0; 16_384], false);
        }
        r.client_frames().unwrap();
        put_window_update(&mut r.from_upstream, 0, 49_152);
        r.upstream_frames().unwrap();
        let got = frames(&mut r.to_client);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].0.kind, window_increment(&got[0].1).unwrap()),
            (WINDOW_UPDATE, 49_152)
        );
    }

    #[test]
    fn injected_replies_respect_windows_and_frame_size() {
        let mut r = relay();
        // The client allows 10-byte stream windows only.
        let mut settings = BytesMut::new();
        put_header(&mut settings, 6, SETTINGS, 0, 0);
        settings.extend_from_slice(&[0, 4, 0, 0, 0, 10]);
        r.from_client.extend_from_slice(&settings);
        client_headers(&mut r, 1, "/svc/Intercepted", true);
        r.client_frames().unwrap();
        assert_eq!(
            &r.to_upstream[..settings.len()],
            &settings[..],
            "settings pass on"
        );
        r.to_upstream.clear();
        assert_eq!(r.calls.len(), 1);
        r.calls.clear();
        // containerd acknowledges the client's SETTINGS, then our marker.
        ack_fence(&mut r);
        ack_fence(&mut r);
        assert_eq!(shape(&mut r.to_client), vec![(SETTINGS, 0, ACK)]);

        r.reply(
            1,
            Reply {
                head: Bytes::from_static(b"\x88"),
                data: Bytes::from(vec![b'x'; 25]),
                trailers: Some(Bytes::from_static(b"\x00\x0bgrpc-status\x010")),
            },
        );
        let sent = frames(&mut r.to_client);
        let shape: Vec<_> = sent
            .iter()
            .map(|(h, p)| (h.kind, h.flags, p.len()))
            .collect();
        assert_eq!(shape, vec![(HEADERS, END_HEADERS, 1), (DATA, 0, 10)]);
        // More stream window: the rest, then the trailers end the stream.
        put_window_update(&mut r.from_client, 1, 100);
        r.client_frames().unwrap();
        assert!(
            r.to_upstream.is_empty(),
            "intercepted stream's update is ours"
        );
        let sent = frames(&mut r.to_client);
        let shape: Vec<_> = sent
            .iter()
            .map(|(h, p)| (h.kind, h.flags, p.len()))
            .collect();
        assert_eq!(
            shape,
            vec![(DATA, 0, 15), (HEADERS, END_STREAM | END_HEADERS, 15)]
        );
        assert!(r.idle());

        // Our 25 bytes are repaid before containerd hears of any update.
        put_window_update(&mut r.from_client, 0, 20);
        r.client_frames().unwrap();
        assert!(r.to_upstream.is_empty());
        put_window_update(&mut r.from_client, 0, 20);
        r.client_frames().unwrap();
        let sent = frames(&mut r.to_upstream);
        assert_eq!(window_increment(&sent[0].1).unwrap(), 15);
    }

    #[test]
    fn containerd_data_beyond_the_client_window_is_held_back() {
        let mut r = relay();
        client_headers(&mut r, 1, "/svc/Intercepted", true);
        client_headers(&mut r, 3, "/svc/List", true);
        r.client_frames().unwrap();
        r.calls.clear();
        r.to_upstream.clear();
        ack_fence(&mut r);
        r.reply(1, reply(&[b'y'; 100]));
        r.to_client.clear();
        // containerd believes the whole 65,535 is still there and uses it.
        let mut answer = BytesMut::new();
        put_header_block(&mut answer, 3, b"\x88", false, 16_384);
        for _ in 0..4 {
            put_data(&mut answer, 3, &[0; 16_000], false);
        }
        put_data(&mut answer, 3, &[0; 1_535], true);
        r.from_upstream.extend_from_slice(&answer);
        r.upstream_frames().unwrap();
        let sent = frames(&mut r.to_client);
        let data: usize = sent
            .iter()
            .filter(|(h, _)| h.kind == DATA)
            .map(|(h, _)| h.len)
            .sum();
        assert_eq!(data, 65_535 - 100, "never more than the client's window");
        assert!(!sent.last().unwrap().0.has(END_STREAM));
        assert!(!r.idle());

        // The client's update releases the rest, and containerd hears only
        // of what it sent itself.
        put_window_update(&mut r.from_client, 0, 65_535);
        r.client_frames().unwrap();
        r.upstream_frames().unwrap();
        let sent = frames(&mut r.to_client);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0.len, 100);
        assert!(sent[0].0.has(END_STREAM));
        let up = frames(&mut r.to_upstream);
        assert_eq!(window_increment(&up[0].1).unwrap(), 65_535 - 100);
        assert!(r.idle());
    }

    #[test]
    fn a_reset_cancels_an_intercepted_call_and_late_frames_are_swallowed() {
        let mut r = relay();
        client_headers(&mut r, 1, "/svc/Intercepted", false);
        put_rst_stream(&mut r.from_client, 1, 0x8);
        put_data(&mut r.from_client, 1, b"late", true);
        r.client_frames().unwrap();
        // Nothing of the client's reset or data: containerd had ours.
        assert_muted(&mut r, 1);
        assert!(r.calls.is_empty());
        assert!(r.idle());
        // The late DATA still counted against the connection window.
        let back = frames(&mut r.to_client);
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].0.stream, window_increment(&back[0].1).unwrap()),
            (0, 4)
        );
        // A reply that comes anyway is dropped.
        r.reply(1, reply(b""));
        assert!(r.to_client.is_empty());
    }

    #[test]
    fn injected_frames_never_split_a_runtime_header_block() {
        let mut r = relay();
        client_headers(&mut r, 1, "/svc/Intercepted", true);
        client_headers(&mut r, 3, "/svc/Version", true);
        r.client_frames().unwrap();
        ack_fence(&mut r);
        // containerd's HEADERS without END_HEADERS, CONTINUATION not here yet.
        put_header(&mut r.from_upstream, 1, HEADERS, 0, 3);
        r.from_upstream.extend_from_slice(b"\x88");
        r.upstream_frames().unwrap();
        r.reply(1, reply(b""));
        assert_eq!(frames(&mut r.to_client).len(), 1);
        put_header(&mut r.from_upstream, 0, CONTINUATION, END_HEADERS, 3);
        r.upstream_frames().unwrap();
        let sent = frames(&mut r.to_client);
        let shape: Vec<_> = sent.iter().map(|(h, _)| (h.kind, h.stream)).collect();
        assert_eq!(shape, vec![(CONTINUATION, 3), (HEADERS, 1)]);
    }

    #[test]
    fn draining_refuses_new_streams() {
        let mut r = relay();
        client_headers(&mut r, 1, "/svc/Version", false);
        r.client_frames().unwrap();
        r.drain();
        let sent = frames(&mut r.to_client);
        assert_eq!(sent[0].0.kind, GOAWAY);
        assert_eq!(&sent[0].1[..4], &[0, 0, 0, 1]);
        r.to_upstream.clear();
        client_headers(&mut r, 3, "/svc/Version", true);
        r.client_frames().unwrap();
        // Muted toward containerd, refused toward the client once
        // containerd has passed the marker.
        assert_muted(&mut r, 3);
        assert!(r.to_client.is_empty());
        ack_fence(&mut r);
        let sent = frames(&mut r.to_client);
        assert_eq!((sent[0].0.kind, sent[0].0.stream), (RST_STREAM, 3));
        assert_eq!(&sent[0].1[..], &REFUSED_STREAM.to_be_bytes());
        assert!(!r.idle(), "stream 1 is still in flight");
        put_data(&mut r.from_client, 1, b"", true);
        r.client_frames().unwrap();
        put_header_block(&mut r.from_upstream, 1, b"\x88", true, 16_384);
        r.upstream_frames().unwrap();
        assert!(r.idle());
    }

    #[test]
    fn protocol_violations_end_the_connection() {
        let mut r = Relay::new(intercept, None);
        r.from_client
            .extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(r.client_frames(), Err(RelayError::Preface)));

        let mut r = relay();
        put_header(&mut r.from_client, 0, CONTINUATION, END_HEADERS, 1);
        assert!(r.client_frames().is_err());

        let mut r = Relay::new(intercept, None);
        r.from_client.extend_from_slice(PREFACE);
        client_headers(&mut r, 1, "/svc/Version", true);
        assert!(r.client_frames().is_err(), "SETTINGS must come first");

        let mut r = relay();
        put_header(&mut r.from_client, 1, HEADERS, END_HEADERS, 1);
        r.from_client.extend_from_slice(&[0xff]);
        let e = r.client_frames().unwrap_err();
        assert_eq!(e.code(), COMPRESSION_ERROR);
    }
}
