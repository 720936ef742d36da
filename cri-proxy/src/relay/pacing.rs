//! Pacing: when what each side is owed goes out. What a peer is owed but
//! need not hear at once (our answers to the server's PINGs, window the
//! server gave back) waits to travel with the next write to that peer, so
//! that it costs no wake-up of its own; the server's DATA beyond the
//! client's window waits for the window (see `flow.rs`).

use bytes::Buf;

use super::frame;
use super::hooks::Hooks;
use super::state::Relay;

/// While the client may still send this much, the server's connection
/// window updates wait to travel with the next frame the client gets
/// anyway (see `held_window`).
const CLIENT_WINDOW_LOW: i64 = 32 << 10;

impl<H: Hooks> Relay<H> {
    /// Answers to the server's PINGs are waiting (for `release_acks`).
    /// Only once they may go: after the client's preface and SETTINGS.
    pub fn acks_held(&self) -> bool {
        !self.held_acks.is_empty() && self.client_settings_seen
    }

    /// Queues the held PING answers for the server.
    ///
    /// grpc-go PINGs with nearly every request it reads, usually in the
    /// same write as its reply. Answered at once, the answer would go out
    /// between reading that reply and passing it on, and wake the server
    /// while the client is being answered; held, it rides along with the
    /// next frames for the server (the client's next call, as a rule), or
    /// goes alone once the connection driver's short deadline passes.
    /// Whole client header blocks are all `to_upstream` ever holds, so the
    /// answers never land inside one.
    pub fn release_acks(&mut self) {
        // Never ahead of the client's preface and SETTINGS, which open
        // every client's side of a connection.
        if self.acks_held() {
            self.to_upstream.unsplit(self.held_acks.split());
        }
    }

    /// Tells the client of the window the server gave back, once it runs
    /// low or a frame goes to the client anyway.
    pub(super) fn pass_held_window(&mut self) {
        if self.held_window > 0
            && (self.client_send_window < CLIENT_WINDOW_LOW || !self.to_client.is_empty())
        {
            let increment = self.held_window.min(frame::MAX_WINDOW as u64);
            frame::put_window_update(&mut self.to_client, 0, increment as u32);
            self.held_window -= increment;
            self.client_send_window += increment as i64;
        }
    }

    /// Sends what the window allows of held-back data; true when none is left.
    pub(super) fn release_held(&mut self) -> bool {
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
            self.streams.server_done(stream);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::*;
    use super::super::testing::*;

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
}
