//! One connection's relay state: what the client and the server sent and
//! are to get, the stream table, the compression context, the windows.
//! The frames are handled by `client.rs` and `upstream.rs`, the replies by
//! `inject.rs`, the timing of what may wait by `pacing.rs`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::task::AbortHandle;

use super::budget::Budget;

use super::flow::{ClientWindow, Held};
use super::frame::{self, Header};
use super::head::HeadFields;
use super::hooks::{Call, Hooks};
use super::hpack;
use super::streams::{Stream, Streams};

/// A client header block that has not ended yet.
pub(super) struct PartialBlock {
    pub(super) stream: u32,
    pub(super) end_stream: bool,
    /// The frames as they came, to pass on once the block is complete.
    pub(super) raw: BytesMut,
    pub(super) fragment: BytesMut,
}

/// One client connection's relay, without any I/O: bytes in, bytes out.
pub struct Relay<H: Hooks> {
    pub from_client: BytesMut,
    pub from_upstream: BytesMut,
    pub to_client: BytesMut,
    pub to_upstream: BytesMut,
    /// Calls taken out, for the connection to hand on.
    pub calls: Vec<Call<H::Kind>>,
    pub(super) hooks: H,
    pub(super) preface_seen: bool,
    pub(super) client_settings_seen: bool,
    pub(super) decoder: hpack::Decoder,
    pub(super) head: HeadFields,
    pub(super) path: Vec<u8>,
    pub(super) client_block: Option<PartialBlock>,
    pub(super) upstream_in_block: bool,
    /// Our own control frames for the client (window updates, resets),
    /// held while the server's header block is half passed on: nothing may
    /// come between a HEADERS frame and its CONTINUATIONs.
    pub(super) control: BytesMut,
    pub(super) streams: Streams<H::Kind>,
    pub(super) last_client_stream: u32,
    pub(super) window: ClientWindow,
    pub(super) client_initial_window: i64,
    pub(super) client_max_frame: usize,
    /// Connection-level window we owe the client for DATA we swallowed.
    pub(super) owed: u64,
    pub(super) held: Option<Held>,
    /// Muted streams whose reply is (partly) unsent.
    pub(super) replying: Vec<u32>,
    /// The last stream accepted, once we told the client to go away.
    pub(super) draining: Option<u32>,
    pub(super) goaway_pending: bool,
    /// The last stream id of a GOAWAY the server sent: a later GOAWAY of
    /// ours must not name a higher one (clients close on an increase).
    pub(super) upstream_goaway: Option<u32>,
    /// The lowest last stream id a GOAWAY to the client has named.
    pub(super) goaway_told: Option<u32>,
    /// SETTINGS frames the server has yet to acknowledge, in order: the
    /// client's (None) and our markers (their number).
    pub(super) settings_unacked: VecDeque<Option<u64>>,
    pub(super) fence_sent: u64,
    pub(super) fence_acked: u64,
    pub(super) fence_wanted: bool,
    /// What the client may still send on the connection, by its count.
    pub(super) client_send_window: i64,
    /// Connection window the server gave back that the client has not
    /// been told of yet. grpc-go returns window with a PING after nearly
    /// every request; passed on at once, the update alone would wake the
    /// client for nothing between request and reply.
    pub(super) held_window: u64,
    /// Our answers to the server's PINGs, waiting to travel with the next
    /// frames the server gets (see `release_acks`).
    pub(super) held_acks: BytesMut,
    /// Whether the server has sent HEADERS or DATA since the last client
    /// PING we passed it. grpc-go counts a PING that comes when it has
    /// written neither since the one before as a strike, and after two
    /// strikes closes the connection (GOAWAY ENHANCE_YOUR_CALM,
    /// "too_many_pings"). A client sends its PINGs after replies (BDP
    /// estimation), and the replies to taken-out calls are ours: passed
    /// on, the PINGs that follow a few creates in a row would have
    /// containerd close kubelet's connection.
    pub(super) upstream_wrote: bool,
    /// The server's SETTINGS (its preface) have gone to the client; before
    /// that, nothing of ours may (RFC 9113 §3.4).
    pub(super) upstream_preface_relayed: bool,
    /// What every connection's muted calls may hold together.
    pub(super) budget: Arc<Budget>,
    /// Muted streams whose DATA did not fit in the budget (see
    /// `settle_stalled`).
    pub(super) stalled: Vec<u32>,
}

impl<H: Hooks> Relay<H> {
    /// A relay on its own, with no bound on what its muted calls hold.
    pub fn new(hooks: H) -> Relay<H> {
        Relay::with_budget(hooks, Budget::unbounded())
    }

    /// A relay whose muted calls hold at most what `budget`, shared with
    /// the other connections, has room for.
    pub fn with_budget(hooks: H, budget: Arc<Budget>) -> Relay<H> {
        Relay {
            from_client: BytesMut::with_capacity(64 << 10),
            from_upstream: BytesMut::with_capacity(64 << 10),
            to_client: BytesMut::with_capacity(64 << 10),
            to_upstream: BytesMut::with_capacity(64 << 10),
            calls: Vec::new(),
            hooks,
            preface_seen: false,
            client_settings_seen: false,
            decoder: hpack::Decoder::new(),
            head: HeadFields::default(),
            path: Vec::new(),
            client_block: None,
            upstream_in_block: false,
            control: BytesMut::new(),
            streams: Streams::default(),
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
            goaway_told: None,
            settings_unacked: VecDeque::new(),
            fence_sent: 0,
            fence_acked: 0,
            fence_wanted: false,
            client_send_window: frame::DEFAULT_WINDOW,
            held_window: 0,
            held_acks: BytesMut::new(),
            upstream_wrote: true,
            upstream_preface_relayed: false,
            budget,
            stalled: Vec::new(),
        }
    }

    /// The client sent the preface and its first SETTINGS.
    pub fn client_handshaken(&self) -> bool {
        self.client_settings_seen
    }

    /// Since when the oldest call taken out whose request has not all
    /// come yet has been arriving.
    pub fn arriving_since(&self) -> Option<std::time::Instant> {
        self.streams.arriving_since()
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

    /// The task answering the call on `stream`, aborted if the call goes.
    pub fn set_task(&mut self, stream: u32, task: AbortHandle) {
        match self.streams.get_mut(stream) {
            Some(Stream::Muted(s)) => s.task = Some(task),
            _ => task.abort(),
        }
    }

    /// The client's connection window as the relay counts it.
    pub fn client_window(&self) -> &ClientWindow {
        &self.window
    }
}

/// Moves the frame `h` heads from the front of `from` to the end of `to`, as is.
pub(super) fn move_frame(from: &mut BytesMut, to: &mut BytesMut, h: &Header) {
    to.extend_from_slice(&from[..h.total()]);
    from.advance(h.total());
}

#[cfg(test)]
impl<H: Hooks> Relay<H> {
    pub(crate) fn hooks(&self) -> &H {
        &self.hooks
    }
}
