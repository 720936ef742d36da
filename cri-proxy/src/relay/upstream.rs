//! The server's side: its frames, passed toward the client as far as the
//! client's window allows, apart from what it says on muted streams and
//! what is between it and us alone (its PINGs, our markers' ACKs).

use bytes::Buf;

use super::flow::Held;
use super::frame::{self, Header};
use super::hooks::{Hooks, RelayError};
use super::state::{Relay, move_frame};

impl<H: Hooks> Relay<H> {
    /// Passes on every complete frame the server sent, as far as the
    /// client's window allows.
    pub fn upstream_frames(&mut self) -> Result<(), RelayError> {
        if !self.release_held() {
            // Replies to taken-out calls need not wait behind held data.
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
                frame::DATA if self.streams.muted(h.stream) => {
                    // Never the client's: the server gets its window back.
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
                            self.streams.server_done(h.stream);
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
                frame::PUSH_PROMISE => {
                    // A header block too: nothing of ours may come between
                    // its frames.
                    self.upstream_in_block = !h.has(frame::END_HEADERS);
                    self.pass_upstream_frame(&h);
                }
                frame::HEADERS => {
                    // Passed on whatever the stream: the client's decoder
                    // must see every block the server encoded.
                    self.upstream_in_block = !h.has(frame::END_HEADERS);
                    self.pass_upstream_frame(&h);
                    if self.streams.is_muted_open(h.stream) {
                        // The server answered a muted call before our reset
                        // reached it (a request it found malformed): that
                        // answer is what the client would have had without
                        // us, so ours is dropped.
                        self.close_muted(h.stream);
                        if !h.has(frame::END_STREAM) {
                            frame::put_rst_stream(&mut self.control, h.stream, frame::CANCEL);
                        }
                    } else if h.has(frame::END_STREAM) {
                        self.streams.server_done(h.stream);
                    }
                }
                frame::RST_STREAM | frame::WINDOW_UPDATE
                    if h.stream != 0 && self.streams.muted(h.stream) =>
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
                        // The server's own protocol error: the client judges it.
                        _ => self.pass_upstream_frame(&h),
                    }
                }
                frame::PING
                    if !h.has(frame::ACK) && h.len == 8 && self.upstream_goaway.is_none() =>
                {
                    // PING is between the two ends of one connection: this
                    // one is ours to answer. Passed on, it would cost the
                    // client a wake-up and a write, and us another relay,
                    // per call. Once the server is going away its PINGs
                    // pass, as it times its last GOAWAY by the client's.
                    frame::put_ping_ack(
                        &mut self.held_acks,
                        &self.from_upstream[frame::HEADER_LEN..h.total()],
                    );
                    self.from_upstream.advance(h.total());
                }
                frame::RST_STREAM => {
                    if self.streams.is_forward_open(h.stream) {
                        self.streams.remove(h.stream);
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
                        self.streams.keep_up_to(last);
                        self.replying.retain(|&id| id <= last);
                        // A client closes the connection when a GOAWAY names
                        // a higher stream than one before it: after ours
                        // (a drain), the server's says no more than ours did.
                        let told = self.goaway_told.map_or(last, |told| told.min(last));
                        self.goaway_told = Some(told);
                        let at = self.to_client.len() + frame::HEADER_LEN;
                        self.pass_upstream_frame(&h);
                        if told < last {
                            let reserved = self.to_client[at] & 0x80;
                            self.to_client[at..at + 4].copy_from_slice(&told.to_be_bytes());
                            self.to_client[at] |= reserved;
                        }
                    } else {
                        self.pass_upstream_frame(&h);
                    }
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

    pub(super) fn pass_upstream_frame(&mut self, h: &Header) {
        move_frame(&mut self.from_upstream, &mut self.to_client, h);
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::*;
    use super::super::testing::*;

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
}
