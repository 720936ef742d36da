//! One client connection, relayed frame by frame to a connection of its own
//! to containerd, the way a byte relay would: one task, big reads, every
//! frame that is ready leaves in one write. Only PullImage and
//! CreateContainer are taken out of the stream, decided, and answered here
//! (see `state.rs`).

pub mod flow;
pub mod frame;
pub mod hpack;
pub mod state;

use std::io::{self, Read as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use socket2::SockRef;
use tokio::io::{AsyncWriteExt as _, Interest};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use crate::grpc::ProxyError;
use crate::intercept::Gate;
use crate::resolve::ImageRuntime;
use crate::server::{Reply as GateReply, Route, route};
use crate::upstream::FullResponse;
use state::{Call, Relay, Reply};

/// Input we read ahead, per direction, before waiting for the other side
/// to take what we already have.
const BUFFER_LIMIT: usize = 1 << 20;
/// What may wait for a client that does not read: past it, neither side is
/// read (containerd's headers and our window updates are not flow
/// controlled, so nothing else bounds them).
const CLIENT_BACKLOG_LIMIT: usize = 4 << 20;
const READ_CHUNK: usize = 64 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection may take to hand over its last bytes.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

fn intercepted(path: &str) -> bool {
    route(path) != Route::Forward
}

/// Reads what is there; false once the peer closed its side.
///
/// A read that did not fill `scratch` emptied the socket (a Unix stream
/// socket hands over everything queued, up to the buffer's size), so we
/// tell the runtime it is no longer readable right away instead of learning
/// it from one more read that fails with EAGAIN: one system call less per
/// message, which is most of what separates a relay from a plain `socat`.
/// Readiness that arrived after the read is kept by tokio (it compares
/// event ticks), so no wake-up is lost.
fn read_some(stream: &UnixStream, scratch: &mut [u8], buf: &mut BytesMut) -> io::Result<bool> {
    let mut got = None;
    let tried = stream.try_io(Interest::READABLE, || {
        let n = (&*SockRef::from(stream)).read(scratch)?;
        got = Some(n);
        if n > 0 && n < scratch.len() {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match (got, tried) {
        (Some(0), _) => Ok(false),
        (Some(n), _) => {
            buf.extend_from_slice(&scratch[..n]);
            Ok(true)
        }
        (None, Err(e)) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
        (None, _) => Ok(true),
    }
}

fn write_some(stream: &UnixStream, buf: &mut BytesMut) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves one client connection until either side closes it, or until
/// shutdown asks it to finish (GOAWAY) the calls it has.
pub async fn connection<R: ImageRuntime>(
    client: UnixStream,
    runtime: Arc<Path>,
    gate: Arc<Gate<R>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&*runtime)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(runtime = %runtime.display(), error = %e, "cannot connect to the runtime; closing the client connection");
            return;
        }
        Err(_) => {
            tracing::warn!(runtime = %runtime.display(), "connecting to the runtime timed out; closing the client connection");
            return;
        }
    };
    let mut relay = Relay::new(intercepted, Some(gate.metrics.clone()));
    let (replies_tx, mut replies) = mpsc::unbounded_channel::<(u32, Reply)>();
    let mut draining = *shutdown.borrow();
    if draining {
        relay.drain();
    }
    let end = run(
        &client,
        &upstream,
        &mut relay,
        &gate,
        &replies_tx,
        &mut replies,
        &mut shutdown,
        &mut draining,
    )
    .await;
    match end {
        Ok(End::ClientClosed) => {
            let mut upstream = upstream;
            let _ =
                tokio::time::timeout(FLUSH_TIMEOUT, upstream.write_all(&relay.to_upstream)).await;
        }
        Ok(End::RuntimeClosed) => {
            // Whatever containerd said last (GOAWAY) reaches the client.
            let mut client = client;
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, client.write_all(&relay.to_client)).await;
            tracing::debug!("runtime closed the connection");
        }
        Ok(End::Drained) => {}
        Err(Failure::Io(e)) => tracing::debug!(error = %e, "connection ended"),
        Err(Failure::Protocol(e)) => {
            tracing::info!(error = %e, "ending a client connection that broke HTTP/2");
            // After what is already queued, which may end in the rest of a
            // frame written only in part.
            frame::put_goaway(&mut relay.to_client, 0, e.code());
            let mut client = client;
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, client.write_all(&relay.to_client)).await;
        }
    }
}

enum End {
    ClientClosed,
    RuntimeClosed,
    Drained,
}

enum Failure {
    Io(io::Error),
    Protocol(state::RelayError),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

impl From<state::RelayError> for Failure {
    fn from(e: state::RelayError) -> Self {
        Failure::Protocol(e)
    }
}

#[allow(clippy::too_many_arguments)]
async fn run<R: ImageRuntime>(
    client: &UnixStream,
    upstream: &UnixStream,
    relay: &mut Relay,
    gate: &Arc<Gate<R>>,
    replies_tx: &mpsc::UnboundedSender<(u32, Reply)>,
    replies: &mut mpsc::UnboundedReceiver<(u32, Reply)>,
    shutdown: &mut watch::Receiver<bool>,
    draining: &mut bool,
) -> Result<End, Failure> {
    let mut scratch = vec![0; READ_CHUNK];
    loop {
        let backlog_ok = relay.to_client.len() < CLIENT_BACKLOG_LIMIT;
        let client_open = if relay.to_upstream.len() < BUFFER_LIMIT && backlog_ok {
            read_some(client, &mut scratch, &mut relay.from_client)?
        } else {
            true
        };
        let upstream_open = if relay.from_upstream.len() < BUFFER_LIMIT && backlog_ok {
            read_some(upstream, &mut scratch, &mut relay.from_upstream)?
        } else {
            true
        };
        relay.client_frames()?;
        relay.upstream_frames()?;
        for call in relay.calls.drain(..).collect::<Vec<_>>() {
            let stream = call.stream;
            let task = tokio::spawn(decide(gate.clone(), call, replies_tx.clone()));
            relay.set_task(stream, task.abort_handle());
        }
        write_some(upstream, &mut relay.to_upstream)?;
        write_some(client, &mut relay.to_client)?;
        if !client_open {
            return Ok(End::ClientClosed);
        }
        if !upstream_open {
            return Ok(End::RuntimeClosed);
        }
        if *draining && relay.idle() && relay.to_client.is_empty() {
            return Ok(End::Drained);
        }
        tokio::select! {
            biased;
            r = client.readable(), if relay.to_upstream.len() < BUFFER_LIMIT
                && relay.to_client.len() < CLIENT_BACKLOG_LIMIT => r?,
            r = upstream.readable(), if relay.from_upstream.len() < BUFFER_LIMIT
                && relay.to_client.len() < CLIENT_BACKLOG_LIMIT => r?,
            r = client.writable(), if !relay.to_client.is_empty() => r?,
            r = upstream.writable(), if !relay.to_upstream.is_empty() => r?,
            Some((stream, reply)) = replies.recv() => relay.reply(stream, reply),
            _ = shutdown.changed(), if !*draining => {
                *draining = true;
                relay.drain();
            }
        }
    }
}

/// Decides one intercepted call and sends back the reply to inject.
async fn decide<R: ImageRuntime>(
    gate: Arc<Gate<R>>,
    call: Call,
    replies: mpsc::UnboundedSender<(u32, Reply)>,
) {
    let reply = match answer(&gate, &call).await {
        Ok(reply) => reply,
        Err(e) => {
            if !matches!(e, ProxyError::Denied(_)) {
                tracing::warn!(method = %call.path, error = %e, "call failed in the proxy");
            }
            let (head, ()) = e.into_head().into_parts();
            Reply {
                head: hpack::encode_response(Some(head.status.as_u16()), &head.headers).freeze(),
                data: Bytes::new(),
                trailers: None,
            }
        }
    };
    let _ = replies.send((call.stream, reply));
}

async fn answer<R: ImageRuntime>(gate: &Gate<R>, call: &Call) -> Result<Reply, ProxyError> {
    let parts = request_parts(&call.head)?;
    let body = call.body.clone();
    let reply = match route(&call.path) {
        Route::Pull(api) => gate.pull(api, parts, body).await?,
        Route::Create(api) => gate.create(api, parts, body).await?,
        Route::Forward => return Err(ProxyError::Internal("not an intercepted call".into())),
    };
    let full = match reply {
        GateReply::Stream(response) => FullResponse::read(response).await?,
        GateReply::Full(full) => full,
    };
    Ok(Reply {
        head: hpack::encode_response(Some(full.head.status.as_u16()), &full.head.headers).freeze(),
        data: full.data,
        trailers: full
            .trailers
            .map(|t| hpack::encode_response(None, &t).freeze()),
    })
}

/// The request head the decision code works with, from the header block.
fn request_parts(head: &[u8]) -> Result<http::request::Parts, ProxyError> {
    let bad = |what: String| ProxyError::BadRequest(format!("request head: {what}"));
    let fields = hpack::fields_of_own(head).map_err(|e| bad(e.to_string()))?;
    let mut request = http::Request::builder();
    let (mut scheme, mut authority, mut path) = (None, None, None);
    for (name, value) in &fields {
        match name.as_slice() {
            b":method" => request = request.method(value.as_slice()),
            b":scheme" => scheme = Some(value.as_slice()),
            b":authority" => authority = Some(value.as_slice()),
            b":path" => path = Some(value.as_slice()),
            n if n.starts_with(b":") => {}
            _ => request = request.header(name.as_slice(), value.as_slice()),
        }
    }
    let path = path.ok_or_else(|| bad("no :path".into()))?;
    let uri = match (scheme, authority) {
        (Some(scheme), Some(authority)) => http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build(),
        _ => http::Uri::builder().path_and_query(path).build(),
    }
    .map_err(|e| bad(e.to_string()))?;
    let (parts, ()) = request
        .uri(uri)
        .body(())
        .map_err(|e| bad(e.to_string()))?
        .into_parts();
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parts_come_from_our_own_block() {
        let mut block = BytesMut::new();
        hpack::encode_field(&mut block, b":method", b"POST");
        hpack::encode_field(&mut block, b":scheme", b"http");
        hpack::encode_field(&mut block, b":authority", b"localhost");
        hpack::encode_field(&mut block, b":path", b"/runtime.v1.ImageService/PullImage");
        hpack::encode_field(&mut block, b"grpc-timeout", b"120S");
        let parts = request_parts(&block).unwrap();
        assert_eq!(parts.method, http::Method::POST);
        assert_eq!(
            parts.uri.to_string(),
            "http://localhost/runtime.v1.ImageService/PullImage"
        );
        assert_eq!(parts.headers["grpc-timeout"], "120S");

        let mut no_path = BytesMut::new();
        hpack::encode_field(&mut no_path, b":method", b"POST");
        assert!(request_parts(&no_path).is_err());
    }
}
