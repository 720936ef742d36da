//! Handing calls out and injecting their replies toward the client:
//! after the server acknowledged the marker behind the call's reset,
//! within the client's windows and frame size, never inside one of the
//! server's header blocks.

use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::budget::{STREAM_OVERHEAD, Share};
use super::client::STALL_WAIT;
use super::frame;
use super::hooks::{Call, Hooks, MAX_REQUEST, Refusal, Reply};
use super::state::Relay;
use super::streams::{Outgoing, Stream};

/// Replies this small are kept whatever the budget says: a decided call's
/// answer (a pull's, a create's) is a few hundred bytes, and one that
/// was acted on must be heard as it is.
const SMALL_REPLY: usize = 64 << 10;

impl<H: Hooks> Relay<H> {
    /// The answer to a call taken out.
    pub fn reply(&mut self, stream: u32, reply: Reply) {
        let mut reply = reply;
        if let Some(s) = self.streams.muted_mut(stream)
            && s.reply.is_none()
        {
            let size = reply.head.len()
                + reply.data.len()
                + reply.trailers.as_ref().map_or(0, |t| t.len());
            if size <= SMALL_REPLY {
                s.charge.force(size);
            } else if !s.charge.try_add(size, Share::Whole) {
                // Forwarded, not decided (an image list, say): the client
                // may ask again.
                reply = self.hooks.refusal(Refusal::OverBudget(self.budget.limit()));
                s.charge.force(reply.head.len());
            }
            s.reply = Some(Outgoing {
                head: Some(reply.head),
                data: reply.data,
                trailers: reply.trailers,
            });
            self.replying.push(stream);
        }
        self.pump();
    }

    /// Sends what it can of the replies to muted calls, between the
    /// server's frames (never inside one of its header blocks).
    pub fn pump(&mut self) {
        // Nothing of ours may come inside one of the server's header
        // blocks, nor ahead of its SETTINGS, which open every server's
        // side of a connection (RFC 9113 §3.4).
        if self.upstream_in_block || !self.upstream_preface_relayed {
            return;
        }
        if !self.control.is_empty() {
            self.to_client.unsplit(self.control.split());
        }
        self.pass_held_window();
        if self.goaway_pending {
            self.goaway_pending = false;
            let ours = self.draining.unwrap_or(self.last_client_stream);
            let last = self.upstream_goaway.map_or(ours, |theirs| theirs.min(ours));
            let last = self.goaway_told.map_or(last, |told| told.min(last));
            self.goaway_told = Some(last);
            frame::put_goaway(&mut self.to_client, last, frame::NO_ERROR);
        }
        let mut i = 0;
        while i < self.replying.len() {
            let stream = self.replying[i];
            if let Some(Stream::Muted(s)) = self.streams.get(stream)
                && s.fence > self.fence_acked
            {
                i += 1;
                continue;
            }
            if self.pump_one(stream) {
                self.replying.swap_remove(i);
                if let Some(Stream::Muted(s)) = self.streams.get(stream)
                    && !s.client_done
                    && !s.refused
                {
                    // Answered before the request ended: the rest is not wanted.
                    frame::put_rst_stream(&mut self.to_client, stream, frame::NO_ERROR);
                }
                self.close_stream(stream);
            } else {
                i += 1;
            }
        }
    }

    /// True once the reply on `stream` is all sent.
    fn pump_one(&mut self, stream: u32) -> bool {
        let Some(Stream::Muted(s)) = self.streams.get_mut(stream) else {
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

    /// Hands a complete request out, or answers it at once when it is too
    /// large to decode.
    pub(super) fn dispatch(&mut self, stream: u32) {
        let Some(Stream::Muted(s)) = self.streams.get_mut(stream) else {
            return;
        };
        if s.dispatched {
            return;
        }
        s.dispatched = true;
        if s.too_large {
            s.body = BytesMut::new();
            s.charge.release_all();
            s.charge.force(STREAM_OVERHEAD);
            self.reject(stream, Refusal::TooLarge(MAX_REQUEST - 5));
            return;
        }
        let body = std::mem::take(&mut s.body).freeze();
        if let Some((kind, head)) = s.call.take() {
            self.calls.push(Call {
                stream,
                kind,
                head,
                body,
            });
        }
    }

    /// Answers a muted call as the hooks answer a refusal, without
    /// handing it out.
    pub(super) fn reject(&mut self, stream: u32, refusal: Refusal) {
        if let Some(s) = self.streams.muted_mut(stream) {
            s.dispatched = true;
        }
        let reply = self.hooks.refusal(refusal);
        self.reply(stream, reply);
    }

    /// A muted stream that ends here without our reply (reset by the
    /// client, or answered by the server first).
    pub(super) fn close_muted(&mut self, stream: u32) {
        self.close_stream(stream);
        self.replying.retain(|&s| s != stream);
    }

    /// Closes a muted stream; the connection window held back for it goes
    /// back to the client, or the connection would lose it for good.
    fn close_stream(&mut self, stream: u32) {
        if let Some(s) = self.streams.muted_mut(stream) {
            let withheld = std::mem::take(&mut s.withheld);
            if withheld > 0 {
                self.owed += withheld;
                self.give_back_owed();
            }
        }
        self.stalled.retain(|&s| s != stream);
        self.streams.close(stream);
    }

    /// A call that found no room in the memory budget: refused before it
    /// is decided, its bytes let go, the window held back for it given
    /// back.
    pub(super) fn over_budget(&mut self, stream: u32) {
        if let Some(s) = self.streams.muted_mut(stream) {
            s.body = BytesMut::new();
            s.charge.release_all();
            s.charge.force(STREAM_OVERHEAD);
            s.stalled_since = None;
            s.unfit = 0;
            self.owed += std::mem::take(&mut s.withheld);
        }
        self.stalled.retain(|&s| s != stream);
        self.give_back_owed();
        self.reject(stream, Refusal::OverBudget(self.budget.limit()));
    }

    /// When the calls held back for want of budget are next to be looked
    /// at (see `settle_stalled`).
    pub fn stall_deadline(&self) -> Option<Instant> {
        self.stalled
            .iter()
            .filter_map(|&stream| self.streams.get(stream))
            .filter_map(|s| match s {
                Stream::Muted(m) => m.stalled_since,
                Stream::Forward { .. } => None,
            })
            .min()
            .map(|since| since + STALL_WAIT)
    }

    /// Calls held back for want of budget: given their window once there
    /// is room, refused once they have waited `STALL_WAIT`. Another
    /// connection giving room back does not wake this one, so the deadline
    /// is when they are looked at last.
    pub fn settle_stalled(&mut self, now: Instant) {
        if self.stalled.is_empty() {
            return;
        }
        for stream in std::mem::take(&mut self.stalled) {
            let Some(s) = self.streams.muted_mut(stream) else {
                continue;
            };
            let Some(since) = s.stalled_since else {
                continue;
            };
            if s.charge.fits(Share::Arriving) {
                let withheld = std::mem::take(&mut s.withheld);
                s.stalled_since = None;
                s.unfit = 0;
                self.owed += withheld;
                let mut left = withheld;
                while left > 0 {
                    let increment = left.min(frame::MAX_WINDOW as u64);
                    frame::put_window_update(&mut self.control, stream, increment as u32);
                    left -= increment;
                }
            } else if since + STALL_WAIT <= now {
                self.over_budget(stream);
            } else {
                self.stalled.push(stream);
            }
        }
        self.give_back_owed();
        self.pump();
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::*;
    use super::super::testing::*;

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
}
