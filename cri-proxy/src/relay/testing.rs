//! What the relay's tests share: a relay past its preface, hooks that
//! take out and refuse calls by path, and frame readers.

pub(crate) use bytes::{Buf, Bytes, BytesMut};

use super::frame::*;
pub(crate) use super::hpack;
pub(crate) use super::{Handling, Hooks, Refusal, Relay, RelayError, Reply};

/// Hooks that take out calls to `…/Intercepted` and refuse those to
/// `/not.served.…`, and answer a refusal as a gRPC server would.
#[derive(Default)]
pub(crate) struct TestHooks {
    pub(crate) opened: Vec<Vec<u8>>,
}

impl Hooks for TestHooks {
    type Kind = ();

    fn handling(&self, path: &str) -> Handling<()> {
        if path.ends_with("/Intercepted") {
            Handling::TakeOut(())
        } else if path.starts_with("/not.served.") {
            Handling::Refuse
        } else {
            Handling::Relay
        }
    }

    fn opened(&mut self, path: &[u8]) {
        self.opened.push(path.to_vec());
    }

    fn refusal(&self, refusal: Refusal) -> Reply {
        let (code, message) = match refusal {
            Refusal::NotServed(path) => ("12", format!("{path} is not served")),
            Refusal::BadHead(e) => ("3", e),
            Refusal::TooLarge(n) => ("8", format!("larger than {n}")),
            Refusal::OverBudget(n) => ("8", format!("over a budget of {n}")),
        };
        let mut head = BytesMut::new();
        hpack::encode_field(&mut head, b":status", b"200");
        hpack::encode_field(&mut head, b"grpc-status", code.as_bytes());
        hpack::encode_field(&mut head, b"grpc-message", message.as_bytes());
        Reply {
            head: head.freeze(),
            data: Bytes::new(),
            trailers: None,
        }
    }
}

pub(crate) type TestRelay = Relay<TestHooks>;

/// A relay past the client's preface, containerd having acknowledged its
/// SETTINGS but not yet sent its own.
pub(crate) fn relay_before_server_settings() -> TestRelay {
    let mut r = Relay::new(TestHooks::default());
    r.from_client.extend_from_slice(PREFACE);
    put_header(&mut r.from_client, 0, SETTINGS, 0, 0);
    r.client_frames().unwrap();
    r.to_upstream.clear();
    put_header(&mut r.from_upstream, 0, SETTINGS, ACK, 0);
    r.upstream_frames().unwrap();
    r.to_client.clear();
    r
}

/// A relay past the connection preface of both sides, containerd having
/// acknowledged the client's first SETTINGS.
pub(crate) fn relay() -> TestRelay {
    relay_within(super::Budget::unbounded())
}

/// As [`relay`], its muted calls held to `budget`.
pub(crate) fn relay_within(budget: std::sync::Arc<super::Budget>) -> TestRelay {
    let mut r = Relay::with_budget(TestHooks::default(), budget);
    r.from_client.extend_from_slice(PREFACE);
    put_header(&mut r.from_client, 0, SETTINGS, 0, 0);
    r.client_frames().unwrap();
    r.to_upstream.clear();
    // containerd's own SETTINGS, then its acknowledgement of the client's.
    put_header(&mut r.from_upstream, 0, SETTINGS, 0, 0);
    put_header(&mut r.from_upstream, 0, SETTINGS, ACK, 0);
    r.upstream_frames().unwrap();
    r.to_client.clear();
    r
}

/// What containerd got of a muted call: its header block, our reset
/// right behind it, and the marker.
pub(crate) fn assert_muted(r: &mut TestRelay, stream: u32) {
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
pub(crate) fn ack_fence(r: &mut TestRelay) {
    put_header(&mut r.from_upstream, 0, SETTINGS, ACK, 0);
    r.upstream_frames().unwrap();
}

/// All frames in `buf`: (header, payload).
pub(crate) fn frames(buf: &mut BytesMut) -> Vec<(Header, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(h) = Header::parse(buf) {
        out.push((h, buf[HEADER_LEN..h.total()].to_vec()));
        buf.advance(h.total());
    }
    assert!(buf.is_empty(), "trailing partial frame");
    out
}

pub(crate) fn shape(buf: &mut BytesMut) -> Vec<(u8, u32, u8)> {
    frames(buf)
        .iter()
        .map(|(h, _)| (h.kind, h.stream, h.flags))
        .collect()
}

pub(crate) fn ping_frame() -> BytesMut {
    let mut ping = BytesMut::new();
    put_header(&mut ping, 8, PING, 0, 0);
    ping.extend_from_slice(b"12345678");
    ping
}

pub(crate) fn request_block(path: &str) -> BytesMut {
    let mut b = BytesMut::new();
    hpack::encode_field(&mut b, b":method", b"POST");
    hpack::encode_field(&mut b, b":scheme", b"http");
    hpack::encode_field(&mut b, b":path", path.as_bytes());
    hpack::encode_field(&mut b, b"grpc-timeout", b"5S");
    b
}

pub(crate) fn client_headers(r: &mut TestRelay, stream: u32, path: &str, end: bool) {
    put_header_block(
        &mut r.from_client,
        stream,
        &request_block(path),
        end,
        16_384,
    );
}

pub(crate) fn reply(data: &[u8]) -> Reply {
    Reply {
        head: Bytes::from_static(b"\x88"),
        data: Bytes::copy_from_slice(data),
        trailers: None,
    }
}
