//! The CRI endpoint kubelet talks to. Every call is forwarded to containerd
//! at the HTTP/2 level without decoding — unary and streaming, headers,
//! trailers and status as they are — except PullImage and CreateContainer,
//! which are read in full, decided, and then forwarded as the same bytes.

use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Request, Response};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use crate::grpc::ProxyError;
use crate::intercept::Gate;
use crate::resolve::{Api, ImageRuntime};
use crate::upstream::{FullResponse, RequestBody, pipe};

/// The largest request message we decode (kubelet's default is 16 MiB).
const MAX_DECODED_REQUEST: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Pull(Api),
    Create(Api),
    Forward,
}

fn route(path: &str) -> Route {
    match path {
        "/runtime.v1.ImageService/PullImage" => Route::Pull(Api::V1),
        "/runtime.v1alpha2.ImageService/PullImage" => Route::Pull(Api::V1alpha2),
        "/runtime.v1.RuntimeService/CreateContainer" => Route::Create(Api::V1),
        "/runtime.v1alpha2.RuntimeService/CreateContainer" => Route::Create(Api::V1alpha2),
        _ => Route::Forward,
    }
}

/// What goes back to the client.
pub enum Reply {
    /// containerd's response, streamed through as it comes.
    Stream(Response<RecvStream>),
    /// A response read in full before the decision (PullImage by tag).
    Full(FullResponse),
}

async fn answer<R: ImageRuntime>(
    gate: &Gate<R>,
    request: Request<RecvStream>,
) -> Result<Reply, ProxyError> {
    let path = request.uri().path();
    gate.metrics.forwarded(path);
    match route(path) {
        Route::Forward => {
            let (head, body) = request.into_parts();
            gate.upstream
                .call(Request::from_parts(head, ()), RequestBody::Stream(body))
                .await
                .map(Reply::Stream)
        }
        Route::Pull(api) => {
            let (head, body) = read_body(request).await?;
            gate.pull(api, head, body).await
        }
        Route::Create(api) => {
            let (head, body) = read_body(request).await?;
            gate.create(api, head, body).await
        }
    }
}

/// Serves one call: answers it, and gives up on it (which cancels the call
/// upstream) if the client resets the stream first.
async fn handle<R: ImageRuntime>(
    gate: Arc<Gate<R>>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let path = request.uri().path().to_string();
    let reply = tokio::select! {
        reply = answer(&gate, request) => reply,
        reset = std::future::poll_fn(|cx| respond.poll_reset(cx)) => {
            tracing::debug!(method = %path, ?reset, "client cancelled the call");
            return;
        }
    };
    let sent = match reply {
        Ok(Reply::Stream(response)) => {
            let (head, body) = response.into_parts();
            let end = body.is_end_stream();
            match respond.send_response(Response::from_parts(head, ()), end) {
                Ok(mut send) if !end => pipe(body, &mut send).await,
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Ok(Reply::Full(full)) => {
            // Head, message and trailers queued together leave in one write.
            respond
                .send_response(Response::from_parts(full.head, ()), false)
                .and_then(|mut send| match full.trailers {
                    Some(trailers) => {
                        send.send_data(full.data, false)?;
                        send.send_trailers(trailers)
                    }
                    None => send.send_data(full.data, true),
                })
        }
        Err(e) => {
            if !matches!(e, ProxyError::Denied(_)) {
                tracing::warn!(method = %path, error = %e, "call failed in the proxy");
            }
            respond.send_response(e.into_head(), true).map(|_| ())
        }
    };
    if let Err(e) = sent {
        tracing::debug!(method = %path, error = %e, "response not delivered");
    }
}

async fn read_body(
    request: Request<RecvStream>,
) -> Result<(http::request::Parts, Bytes), ProxyError> {
    let (head, mut body) = request.into_parts();
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| ProxyError::BadRequest(format!("reading request: {e}")))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if collected.len() + chunk.len() > MAX_DECODED_REQUEST + 5 {
            return Err(ProxyError::TooLarge(MAX_DECODED_REQUEST));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok((head, collected.freeze()))
}

/// One client connection: accepts calls until it closes, or until shutdown
/// asks it to finish (GOAWAY) the calls it has.
async fn connection<R: ImageRuntime>(
    stream: UnixStream,
    gate: Arc<Gate<R>>,
    mut shutdown: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let handshake = h2::server::Builder::new()
        .initial_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(1 << 20)
        .max_concurrent_streams(1000)
        .handshake::<_, Bytes>(stream)
        .await;
    let mut conn = match handshake {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/2 handshake with a client failed");
            return;
        }
    };
    let mut draining = *shutdown.borrow();
    if draining {
        conn.graceful_shutdown();
    }
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => {
                    tokio::spawn(handle(gate.clone(), request, respond));
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "client connection ended");
                    break;
                }
                None => break,
            },
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
        }
    }
}

/// Serves kubelet on `listener` until `shutdown` resolves, then lets calls in
/// flight finish (bounded by `grace`).
pub async fn serve<R: ImageRuntime>(
    listener: UnixListener,
    gate: Arc<Gate<R>>,
    shutdown: impl Future<Output = ()>,
    grace: std::time::Duration,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a sender; when all are gone, all calls are done.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                tokio::spawn(connection(stream, gate.clone(), stop_rx.clone(), alive_tx.clone()));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for calls in flight");
    let _ = stop_tx.send(true);
    drop(alive_tx);
    tokio::select! {
        _ = alive_rx.recv() => tracing::info!("all calls finished"),
        () = tokio::time::sleep(grace) => tracing::warn!("calls still in flight after {grace:?}; exiting"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pull_and_create_are_intercepted() {
        assert_eq!(
            route("/runtime.v1.ImageService/PullImage"),
            Route::Pull(Api::V1)
        );
        assert_eq!(
            route("/runtime.v1alpha2.RuntimeService/CreateContainer"),
            Route::Create(Api::V1alpha2)
        );
        for path in [
            "/runtime.v1.RuntimeService/StartContainer",
            "/runtime.v1.ImageService/ImageStatus",
            "/runtime.v1.RuntimeService/GetContainerEvents",
            "/runtime.v2.RuntimeService/CreateContainer",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(route(path), Route::Forward, "{path}");
        }
    }
}
