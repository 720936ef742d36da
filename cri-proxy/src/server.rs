//! The CRI endpoint kubelet talks to. Every call is forwarded to containerd
//! at the HTTP/2 level without decoding — unary and streaming, headers,
//! trailers and status as they are — except PullImage and CreateContainer,
//! which are read in full, decided, and then forwarded as the same bytes.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixListener;

use crate::grpc::{self, Body, ProxyError};
use crate::intercept::Gate;
use crate::resolve::{Api, ImageRuntime};

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

pub async fn handle<R: ImageRuntime>(
    gate: Arc<Gate<R>>,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    gate.metrics.forwarded(&path);
    let result = match route(&path) {
        Route::Forward => {
            let request =
                request.map(|b| b.map_err(|e| Box::new(e) as grpc::BoxError).boxed_unsync());
            gate.upstream
                .send(request)
                .await
                .map(|r| r.map(|b| b.map_err(|e| Box::new(e) as grpc::BoxError).boxed_unsync()))
        }
        Route::Pull(api) => match read_body(request).await {
            Ok((parts, body)) => gate.pull(api, parts, body).await,
            Err(e) => Err(e),
        },
        Route::Create(api) => match read_body(request).await {
            Ok((parts, body)) => gate.create(api, parts, body).await,
            Err(e) => Err(e),
        },
    };
    result.unwrap_or_else(|e| {
        if !matches!(e, ProxyError::Denied(_)) {
            tracing::warn!(method = %path, error = %e, "call failed in the proxy");
        }
        e.into_response()
    })
}

async fn read_body(
    request: Request<Incoming>,
) -> Result<(http::request::Parts, Bytes), ProxyError> {
    let (parts, body) = request.into_parts();
    let collected = Limited::new(body, MAX_DECODED_REQUEST + 5)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ProxyError::TooLarge(MAX_DECODED_REQUEST)
            } else {
                ProxyError::BadRequest(format!("reading request: {e}"))
            }
        })?;
    Ok((parts, collected.to_bytes()))
}

/// Serves kubelet on `listener` until `shutdown` resolves, then lets calls in
/// flight finish (bounded by `grace`).
pub async fn serve<R: ImageRuntime>(
    listener: UnixListener,
    gate: Arc<Gate<R>>,
    shutdown: impl Future<Output = ()>,
    grace: std::time::Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(1 << 20)
        .max_concurrent_streams(1000);
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
                let gate = gate.clone();
                let service = hyper::service::service_fn(move |request| {
                    let gate = gate.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(gate, request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "client connection ended");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for calls in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all calls finished"),
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
