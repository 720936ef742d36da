//! One client connection, relayed frame by frame to a connection of its own
//! to containerd, the way a byte relay would: one task, big reads, every
//! frame that is ready leaves in one write. Only PullImage and
//! CreateContainer are taken out of the stream, decided, and answered here
//! (see `state.rs`).

pub mod flow;
pub mod frame;
pub mod hpack;
pub mod state;

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
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

/// One side of the relay: a socket the runtime watches for input only.
///
/// Tokio's own sockets are registered for input and output alike, edge
/// triggered, so every time the peer takes what we wrote the kernel's
/// "room to write" edge wakes the runtime for nothing: two wake-ups per
/// call, on a hop whose whole cost is wake-ups. Output readiness is asked
/// for only while a write is stuck, through a second registration of a
/// duplicate descriptor (epoll tells descriptors apart), dropped again once
/// the backlog is gone.
struct Side {
    socket: AsyncFd<StdUnixStream>,
    stuck: Option<AsyncFd<StdUnixStream>>,
}

/// Registers `socket` with the runtime for `interest` only.
///
/// Tokio deprecated the safe constructor because an arbitrary `AsRawFd`
/// may hand out a different descriptor later, or close it, under the
/// registration; its replacement is `unsafe`, which this workspace forbids.
/// A std `UnixStream` owned by the `AsyncFd` keeps one descriptor, open,
/// for as long as it lives, which is exactly the guarantee asked for.
#[allow(deprecated)]
fn watch_socket(socket: StdUnixStream, interest: Interest) -> io::Result<AsyncFd<StdUnixStream>> {
    AsyncFd::with_interest(socket, interest)
}

impl Side {
    fn new(stream: UnixStream) -> io::Result<Side> {
        let stream = stream.into_std()?;
        stream.set_nonblocking(true)?;
        Ok(Side {
            socket: watch_socket(stream, Interest::READABLE)?,
            stuck: None,
        })
    }

    /// Reads what is there; false once the peer closed its side.
    ///
    /// A read that did not fill `scratch` emptied the socket (a Unix stream
    /// socket hands over everything queued, up to the buffer's size), so we
    /// tell the runtime it is no longer readable right away instead of
    /// learning it from one more read that fails with EAGAIN. Readiness that
    /// arrived after the read is kept by tokio (it compares event ticks), so
    /// no wake-up is lost.
    fn read_some(&self, scratch: &mut [u8], buf: &mut BytesMut) -> io::Result<bool> {
        let mut got = None;
        let tried = self.socket.try_io(Interest::READABLE, |mut stream| {
            let n = stream.read(scratch)?;
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

    /// Writes what the socket takes.
    fn write_some(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        while !buf.is_empty() {
            let written = match &self.stuck {
                Some(stuck) => stuck.try_io(Interest::WRITABLE, |mut s| s.write(buf)),
                None => (&mut self.socket.get_ref()).write(buf),
            };
            match written {
                Ok(n) => buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.stuck.is_none() {
                        let duplicate = self.socket.get_ref().try_clone()?;
                        self.stuck = Some(watch_socket(duplicate, Interest::WRITABLE)?);
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.stuck = None;
        Ok(())
    }

    async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await.map(|_| ())
    }

    /// Resolves once a stuck write may go on (never while none is stuck).
    async fn writable(&self) -> io::Result<()> {
        match &self.stuck {
            Some(stuck) => stuck.writable().await.map(|_| ()),
            None => std::future::pending().await,
        }
    }

    /// Writes all of `buf`, waiting for room as needed.
    async fn write_all(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        loop {
            self.write_some(buf)?;
            if buf.is_empty() {
                return Ok(());
            }
            self.writable().await?;
        }
    }
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
    let (mut client, mut upstream) = match (Side::new(client), Side::new(upstream)) {
        (Ok(client), Ok(upstream)) => (client, upstream),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot watch the connection's sockets; closing it");
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
        &mut client,
        &mut upstream,
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
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, upstream.write_all(&mut relay.to_upstream))
                .await;
        }
        Ok(End::RuntimeClosed) => {
            // Whatever containerd said last (GOAWAY) reaches the client.
            let _ =
                tokio::time::timeout(FLUSH_TIMEOUT, client.write_all(&mut relay.to_client)).await;
            tracing::debug!("runtime closed the connection");
        }
        Ok(End::Drained) => {}
        Err(Failure::Io(e)) => tracing::debug!(error = %e, "connection ended"),
        Err(Failure::Protocol(e)) => {
            tracing::info!(error = %e, "ending a client connection that broke HTTP/2");
            // After what is already queued, which may end in the rest of a
            // frame written only in part.
            frame::put_goaway(&mut relay.to_client, 0, e.code());
            let _ =
                tokio::time::timeout(FLUSH_TIMEOUT, client.write_all(&mut relay.to_client)).await;
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
    client: &mut Side,
    upstream: &mut Side,
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
            client.read_some(&mut scratch, &mut relay.from_client)?
        } else {
            true
        };
        let upstream_open = if relay.from_upstream.len() < BUFFER_LIMIT && backlog_ok {
            upstream.read_some(&mut scratch, &mut relay.from_upstream)?
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
        upstream.write_some(&mut relay.to_upstream)?;
        client.write_some(&mut relay.to_client)?;
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
            Reply::error(e)
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
