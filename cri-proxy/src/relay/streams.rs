//! The stream table: every stream the client opened that is still open on
//! either side, relayed or muted, and the muted ones closed here lately.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::task::AbortHandle;

use super::budget::Charge;

/// Muted streams answered and closed on our side, remembered so that
/// frames the server still sends for them are not passed on.
const CLOSED_REMEMBERED: usize = 256;

pub(super) enum Stream<K> {
    Forward {
        client_done: bool,
        server_done: bool,
    },
    Muted(Box<Muted<K>>),
}

/// A muted stream: a call taken out, one refused by the hooks, or one
/// refused while draining.
pub(super) struct Muted<K> {
    /// What is handed out once the body is complete: none for a call
    /// refused here.
    pub(super) call: Option<(K, http::request::Parts)>,
    /// Our SETTINGS marker that the server must acknowledge before the
    /// client hears anything on this stream from us.
    pub(super) fence: u64,
    /// Refused (REFUSED_STREAM, while draining) rather than answered.
    pub(super) refused: bool,
    pub(super) body: BytesMut,
    pub(super) client_done: bool,
    pub(super) too_large: bool,
    /// Handed out or answered: the body is no longer collected.
    pub(super) dispatched: bool,
    /// The client's receive window for this stream: ours alone.
    pub(super) window: i64,
    pub(super) reply: Option<Outgoing>,
    pub(super) task: Option<AbortHandle>,
    /// What the stream holds of the memory budget: head, body, reply.
    pub(super) charge: Charge,
    /// Window for DATA that did not fit in the budget, not given back yet:
    /// the client is held to what it had.
    pub(super) withheld: u64,
    /// Bytes held while stalled that did not fit in the budget.
    pub(super) unfit: usize,
    /// Since when the call has waited for room; past `STALL_WAIT` it is
    /// refused.
    pub(super) stalled_since: Option<Instant>,
    /// When its HEADERS came.
    pub(super) opened: Instant,
}

impl<K> Drop for Muted<K> {
    fn drop(&mut self) {
        // A call nobody waits for any more (reset, connection gone) stops.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What is left to send of a reply.
pub(super) struct Outgoing {
    pub(super) head: Option<Bytes>,
    pub(super) data: Bytes,
    pub(super) trailers: Option<Bytes>,
}

/// Every stream the client opened that is still open on either side, and
/// the muted ones closed here lately.
pub(super) struct Streams<K> {
    open: HashMap<u32, Stream<K>>,
    closed: VecDeque<u32>,
    /// How many of `open` are muted: none, as a rule, and then nothing
    /// needs looking through for them.
    muted: usize,
}

impl<K> Default for Streams<K> {
    fn default() -> Self {
        Streams {
            open: HashMap::new(),
            closed: VecDeque::new(),
            muted: 0,
        }
    }
}

fn is_muted<K>(stream: &Stream<K>) -> bool {
    matches!(stream, Stream::Muted(_))
}

impl<K> Streams<K> {
    pub(super) fn get(&self, stream: u32) -> Option<&Stream<K>> {
        self.open.get(&stream)
    }

    pub(super) fn get_mut(&mut self, stream: u32) -> Option<&mut Stream<K>> {
        self.open.get_mut(&stream)
    }

    pub(super) fn insert(&mut self, stream: u32, state: Stream<K>) {
        self.muted += usize::from(is_muted(&state));
        if let Some(old) = self.open.insert(stream, state) {
            self.muted -= usize::from(is_muted(&old));
        }
    }

    pub(super) fn remove(&mut self, stream: u32) {
        if let Some(old) = self.open.remove(&stream) {
            self.muted -= usize::from(is_muted(&old));
        }
    }

    /// Since when the oldest call taken out whose request is still
    /// arriving has been.
    pub(super) fn arriving_since(&self) -> Option<std::time::Instant> {
        if self.muted == 0 {
            return None;
        }
        self.open
            .values()
            .filter_map(|s| match s {
                Stream::Muted(m) if m.call.is_some() && !m.dispatched => Some(m.opened),
                _ => None,
            })
            .min()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub(super) fn muted_mut(&mut self, stream: u32) -> Option<&mut Muted<K>> {
        match self.open.get_mut(&stream) {
            Some(Stream::Muted(s)) => Some(s),
            _ => None,
        }
    }

    pub(super) fn all_muted_mut(&mut self) -> impl Iterator<Item = &mut Muted<K>> {
        self.open.values_mut().filter_map(|s| match s {
            Stream::Muted(m) => Some(&mut **m),
            Stream::Forward { .. } => None,
        })
    }

    /// Forgets the streams past `last`: a GOAWAY said they were never
    /// processed and never will be.
    pub(super) fn keep_up_to(&mut self, last: u32) {
        self.open.retain(|&id, _| id <= last);
        self.muted = self.open.values().filter(|s| is_muted(s)).count();
    }

    pub(super) fn is_muted_open(&self, stream: u32) -> bool {
        matches!(self.open.get(&stream), Some(Stream::Muted(_)))
    }

    pub(super) fn is_forward_open(&self, stream: u32) -> bool {
        matches!(self.open.get(&stream), Some(Stream::Forward { .. }))
    }

    /// A muted stream closed here lately.
    pub(super) fn was_closed(&self, stream: u32) -> bool {
        self.closed.contains(&stream)
    }

    /// A stream the server does not know: muted, or muted and closed.
    pub(super) fn not_upstreams(&self, stream: u32) -> bool {
        self.is_muted_open(stream) || self.was_closed(stream)
    }

    /// A stream the client opened before (`last` is the last it opened)
    /// that is no longer open here: its DATA never goes on. Muted or not,
    /// the server has closed it or will never process it, and whether it
    /// was muted may be forgotten by now.
    pub(super) fn forgotten(&self, stream: u32, last: u32) -> bool {
        stream != 0 && stream <= last && !self.open.contains_key(&stream)
    }

    /// A stream the server must not be heard on by the client, apart from
    /// header blocks: muted, or muted and closed.
    pub(super) fn muted(&self, stream: u32) -> bool {
        match self.open.get(&stream) {
            Some(Stream::Muted(_)) => true,
            Some(Stream::Forward { .. }) => false,
            None => self.was_closed(stream),
        }
    }

    pub(super) fn maybe_done(&mut self, stream: u32) {
        if let Some(Stream::Forward {
            client_done: true,
            server_done: true,
        }) = self.open.get(&stream)
        {
            self.remove(stream);
        }
    }

    pub(super) fn server_done(&mut self, stream: u32) {
        if let Some(Stream::Forward { server_done, .. }) = self.open.get_mut(&stream) {
            *server_done = true;
            self.maybe_done(stream);
        }
    }

    /// A muted stream closed here: removed, and remembered for a while.
    pub(super) fn close(&mut self, stream: u32) {
        self.remove(stream);
        self.remember_closed(stream);
    }

    fn remember_closed(&mut self, stream: u32) {
        if self.closed.len() == CLOSED_REMEMBERED {
            self.closed.pop_front();
        }
        self.closed.push_back(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::*;
    use super::super::testing::*;

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
    fn data_on_a_muted_stream_closed_long_ago_never_reaches_the_server() {
        let mut r = relay();
        client_headers(&mut r, 1, "/svc/Intercepted", true);
        r.client_frames().unwrap();
        r.calls.clear();
        ack_fence(&mut r);
        r.reply(1, reply(b""));
        // Far more calls answered since than the relay remembers.
        for stream in (3..1200).step_by(2) {
            client_headers(&mut r, stream, "/svc/Intercepted", true);
            r.client_frames().unwrap();
            r.calls.clear();
            ack_fence(&mut r);
            r.reply(stream, reply(b""));
        }
        assert!(r.idle());
        r.to_upstream.clear();
        r.to_client.clear();
        put_data(&mut r.from_client, 1, b"late", true);
        r.client_frames().unwrap();
        assert!(r.to_upstream.is_empty(), "{:?}", shape(&mut r.to_upstream));
        // Its window goes back to the client all the same.
        let back = frames(&mut r.to_client);
        assert_eq!(
            back.iter()
                .map(|(h, p)| (h.kind, h.stream, window_increment(p).unwrap()))
                .collect::<Vec<_>>(),
            vec![(WINDOW_UPDATE, 0, 4)]
        );
        // DATA on a stream not yet opened is the server's to judge.
        put_data(&mut r.from_client, 1201, b"x", false);
        r.client_frames().unwrap();
        assert_eq!(shape(&mut r.to_upstream), vec![(DATA, 1201, 0)]);
    }
}
