//! The client's side: its frames, read and passed toward the server, or
//! kept back when they belong to a muted call.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use super::budget::{Charge, STREAM_OVERHEAD, Share};
use super::frame::{self, Header};
use super::hooks::{Handling, Hooks, MAX_REQUEST, Refusal, RelayError};
use super::state::{PartialBlock, Relay, move_frame};
use super::streams::{Muted, Stream};

/// How long a call whose DATA did not fit in the memory budget is held
/// back, waiting for room, before it is refused. Long enough for calls
/// being decided to finish and give theirs back; short enough that a
/// client held back hears why soon.
pub(super) const STALL_WAIT: Duration = Duration::from_secs(1);
/// What one connection's stalled calls may hold beyond the budget (what
/// arrived within the window the client already had): the most the budget
/// can be overrun by per connection. Past it, the call that would add more
/// is refused at once.
const UNFIT_LIMIT: usize = 32 << 10;
/// A header block from the client larger than this ends the connection.
const MAX_HEADER_BLOCK: usize = 1 << 20;

impl<H: Hooks> Relay<H> {
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
        self.give_back_owed();
        self.pump();
        if !self.to_upstream.is_empty() {
            self.release_acks();
        }
        Ok(())
    }

    /// Window for what we swallowed, in one update per batch.
    pub(super) fn give_back_owed(&mut self) {
        while self.owed > 0 {
            let owed = u32::try_from(self.owed.min(frame::MAX_WINDOW as u64)).unwrap_or(0);
            frame::put_window_update(&mut self.control, 0, owed);
            self.owed -= u64::from(owed);
            self.client_send_window += i64::from(owed);
        }
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
            frame::RST_STREAM => match self.streams.get(h.stream) {
                Some(Stream::Muted(_)) => {
                    tracing::debug!(stream = h.stream, "the client reset an intercepted call");
                    self.close_muted(h.stream);
                    self.from_client.advance(h.total());
                }
                Some(Stream::Forward { .. }) => {
                    self.streams.remove(h.stream);
                    self.pass_client_frame(&h);
                }
                None if self.streams.was_closed(h.stream) => self.from_client.advance(h.total()),
                None => self.pass_client_frame(&h),
            },
            frame::SETTINGS => {
                if !h.has(frame::ACK) {
                    self.client_settings(&h)?;
                    self.settings_unacked.push_back(None);
                }
                self.pass_client_frame(&h);
            }
            frame::PRIORITY if self.streams.not_upstreams(h.stream) => {
                self.from_client.advance(h.total())
            }
            frame::PING if !h.has(frame::ACK) && h.len == 8 && h.stream == 0 => {
                if std::mem::take(&mut self.upstream_wrote) || !self.upstream_preface_relayed {
                    self.pass_client_frame(&h);
                } else {
                    // Answered here: to the server it would be a strike
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

    fn client_headers(
        &mut self,
        stream: u32,
        end_stream: bool,
        raw: &[u8],
        block: &[u8],
    ) -> Result<(), RelayError> {
        if stream.is_multiple_of(2) || stream <= self.last_client_stream {
            // Trailers, or a stream id used before: no gRPC client sends
            // either, and the server would end the connection over them
            // too. We end it ourselves because the server may not have
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
        let mut taken: Option<(H::Kind, String)> = None;
        let mut not_served = None;
        let hooks = &self.hooks;
        self.decoder.decode(block, |name, value| {
            if name == b":path" {
                // Whichever `:path` the server would read, if any of them
                // is a call taken out, or one not served, the call is
                // muted.
                let value_str = String::from_utf8_lossy(value);
                match hooks.handling(&value_str) {
                    Handling::TakeOut(kind) if taken.is_none() => {
                        taken = Some((kind, value_str.into_owned()));
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
            self.hooks.opened(&self.path);
        }
        let muted = taken.is_some() || refused || not_served.is_some();
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
        // The server must never see this request end: no END_STREAM, no
        // DATA, and a reset right behind the header block.
        self.to_upstream[at + 4] &= !frame::END_STREAM;
        frame::put_rst_stream(&mut self.to_upstream, stream, frame::CANCEL);
        self.fence_wanted = true;
        let mut bad_head = None;
        let call = match taken {
            Some((kind, path)) if !refused && not_served.is_none() => {
                match self.head.request(&path) {
                    Ok(head) => Some((kind, head)),
                    Err(e) => {
                        bad_head = Some(e);
                        None
                    }
                }
            }
            _ => None,
        };
        // Every muted stream is counted; only a call to hand out holds its
        // head until answered, and must find room for it. One that finds
        // none waits for room like DATA that does not fit (its DATA is
        // held back behind it), unless it is whole already.
        let mut charge = Charge::new(&self.budget);
        let mut stalled_since = None;
        let mut over_budget = false;
        let mut unfit = 0;
        if call.is_some() {
            let cost = STREAM_OVERHEAD + self.head.size();
            let share = if end_stream {
                Share::Whole
            } else {
                Share::Arriving
            };
            if !charge.try_add(cost, share) {
                if end_stream {
                    charge.force(STREAM_OVERHEAD);
                    over_budget = true;
                } else {
                    charge.force(cost);
                    stalled_since = Some(Instant::now());
                    unfit = cost;
                    self.stalled.push(stream);
                }
            }
        } else {
            charge.force(STREAM_OVERHEAD);
        }
        let muted = Muted {
            call,
            fence: self.fence_sent + 1,
            refused,
            body: BytesMut::new(),
            client_done: end_stream,
            too_large: false,
            dispatched: refused,
            window: self.client_initial_window,
            reply: None,
            task: None,
            charge,
            withheld: 0,
            unfit,
            stalled_since,
            opened: Instant::now(),
        };
        self.streams.insert(stream, Stream::Muted(Box::new(muted)));
        if refused {
            self.replying.push(stream);
        } else if let Some(path) = not_served {
            self.reject(stream, Refusal::NotServed(path));
        } else if let Some(e) = bad_head {
            self.reject(stream, Refusal::BadHead(format!("request head: {e}")));
        } else if over_budget || self.unfit_held() > UNFIT_LIMIT {
            self.over_budget(stream);
        } else if end_stream {
            self.dispatch(stream);
        }
        Ok(())
    }

    /// What this connection's stalled calls hold beyond the budget.
    fn unfit_held(&self) -> usize {
        self.stalled
            .iter()
            .filter_map(|&stream| match self.streams.get(stream) {
                Some(Stream::Muted(s)) => Some(s.unfit),
                _ => None,
            })
            .sum()
    }

    fn client_data(&mut self, h: &Header) -> Result<(), RelayError> {
        self.client_send_window -= h.len as i64;
        if self.client_send_window < 0 && self.streams.is_muted_open(h.stream) {
            // Held here, never seen by the server: only we can tell the
            // client it overran the window, and what it sends beyond it
            // would be held beyond any budget.
            return Err(RelayError::Protocol(
                "DATA beyond the connection's flow-control window",
            ));
        }
        match self.streams.get_mut(h.stream) {
            Some(Stream::Muted(s)) => {
                let raw = self.from_client.split_to(h.total());
                let data = frame::unpad(h, &raw[frame::HEADER_LEN..])?;
                let window = h.len as u64;
                let end = h.has(frame::END_STREAM);
                if end {
                    s.client_done = true;
                }
                let collecting = !s.dispatched && !s.too_large;
                if collecting && s.body.len() + data.len() > MAX_REQUEST {
                    s.too_large = true;
                }
                if !collecting || s.too_large {
                    // Not kept: its window goes back at once, and so does
                    // what was held back.
                    self.owed += window + std::mem::take(&mut s.withheld);
                    s.stalled_since = None;
                    s.unfit = 0;
                    if !end && h.len > 0 {
                        frame::put_window_update(&mut self.control, h.stream, h.len as u32);
                    }
                    if s.too_large {
                        self.stalled.retain(|&id| id != h.stream);
                        self.dispatch(h.stream);
                    }
                    return Ok(());
                }
                s.body.extend_from_slice(data);
                // The last frame makes the call whole: it may use all of
                // the budget. Bytes behind a stall wait their turn.
                let share = if end { Share::Whole } else { Share::Arriving };
                if s.stalled_since.is_none() && s.charge.try_add(data.len(), share) {
                    self.owed += window;
                    if !end && h.len > 0 {
                        // The stream's window is ours to give back.
                        frame::put_window_update(&mut self.control, h.stream, h.len as u32);
                    }
                } else {
                    // Already here, within the window the client had: held,
                    // but the window is not given back, so the client can
                    // send no more than it has until there is room.
                    s.charge.force(data.len());
                    s.unfit += data.len();
                    s.withheld += window;
                    if s.stalled_since.is_none() {
                        s.stalled_since = Some(Instant::now());
                        self.stalled.push(h.stream);
                    }
                    if self.unfit_held() > UNFIT_LIMIT {
                        self.over_budget(h.stream);
                        return Ok(());
                    }
                }
                if !end {
                    return Ok(());
                }
                let Some(s) = self.streams.muted_mut(h.stream) else {
                    return Ok(());
                };
                if s.stalled_since.is_some() {
                    if !s.charge.fits(Share::Whole) {
                        self.over_budget(h.stream);
                        return Ok(());
                    }
                    // Whole, and it fits after all.
                    self.owed += std::mem::take(&mut s.withheld);
                    s.stalled_since = None;
                    s.unfit = 0;
                    self.stalled.retain(|&id| id != h.stream);
                }
                self.dispatch(h.stream);
            }
            Some(Stream::Forward { client_done, .. }) => {
                if h.has(frame::END_STREAM) {
                    *client_done = true;
                    self.pass_client_frame(h);
                    self.streams.maybe_done(h.stream);
                } else {
                    self.pass_client_frame(h);
                }
            }
            None => {
                if self.streams.forgotten(h.stream, self.last_client_stream) {
                    self.owed += h.len as u64;
                    self.from_client.advance(h.total());
                } else {
                    self.pass_client_frame(h);
                }
            }
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
        match self.streams.get_mut(h.stream) {
            Some(Stream::Muted(s)) => {
                s.window = (s.window + i64::from(increment)).min(frame::MAX_WINDOW);
                self.from_client.advance(h.total());
            }
            Some(Stream::Forward { .. }) => self.pass_client_frame(h),
            None => {
                if self.streams.was_closed(h.stream) {
                    self.from_client.advance(h.total());
                } else {
                    self.pass_client_frame(h);
                }
            }
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
                    for s in self.streams.all_muted_mut() {
                        s.window += delta;
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
}

#[cfg(test)]
mod tests {
    use super::super::frame::*;
    use super::super::testing::*;

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
        assert_eq!((call.stream, call.path()), (1, "/svc/Intercepted"));
        assert_eq!(&call.body[..], b"\0\0\0\0\x03abc");
        assert_eq!(call.head.method, http::Method::POST);
        assert_eq!(call.head.headers["grpc-timeout"], "5S");
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
    fn client_pings_reach_containerd_only_after_it_wrote_something() {
        let mut r = relay_before_server_settings();
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
        let mut r = Relay::new(TestHooks::default());
        r.from_client
            .extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(r.client_frames(), Err(RelayError::Preface)));

        let mut r = relay();
        put_header(&mut r.from_client, 0, CONTINUATION, END_HEADERS, 1);
        assert!(r.client_frames().is_err());

        let mut r = Relay::new(TestHooks::default());
        r.from_client.extend_from_slice(PREFACE);
        client_headers(&mut r, 1, "/svc/Version", true);
        assert!(r.client_frames().is_err(), "SETTINGS must come first");

        let mut r = relay();
        put_header(&mut r.from_client, 1, HEADERS, END_HEADERS, 1);
        r.from_client.extend_from_slice(&[0xff]);
        let e = r.client_frames().unwrap_err();
        assert_eq!(e.code(), COMPRESSION_ERROR);
    }

    #[test]
    fn the_hooks_hear_of_every_call_served_and_of_none_refused() {
        let mut r = relay();
        client_headers(&mut r, 1, "/svc/Version", true);
        client_headers(&mut r, 3, "/svc/Intercepted", true);
        client_headers(&mut r, 5, "/not.served.Images/List", true);
        r.client_frames().unwrap();
        r.drain();
        client_headers(&mut r, 7, "/svc/Version", true);
        r.client_frames().unwrap();
        assert_eq!(
            r.hooks().opened,
            vec![b"/svc/Version".to_vec(), b"/svc/Intercepted".to_vec()]
        );
    }
}
