//! The CRI endpoint kubelet talks to. Every client connection gets its own
//! connection to containerd and is relayed frame by frame (`relay`): calls
//! pass through without being decoded — unary and streaming, headers,
//! trailers and status as they are — except PullImage and CreateContainer,
//! which are read in full, decided, and then forwarded as the same bytes.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use h2::RecvStream;
use http::Response;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};

use crate::intercept::Gate;
use crate::resolve::{Api, ImageRuntime};
use crate::upstream::FullResponse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Pull(Api),
    Create(Api),
    Forward,
}

pub fn route(path: &str) -> Route {
    // gRPC servers route on "service/method" after dropping one leading
    // slash (grpc-go before 1.79.3 even without it), so both spellings must
    // be decided: otherwise "runtime.v1.ImageService/PullImage" would pull
    // with no decision.
    match path.strip_prefix('/').unwrap_or(path) {
        "runtime.v1.ImageService/PullImage" => Route::Pull(Api::V1),
        "runtime.v1alpha2.ImageService/PullImage" => Route::Pull(Api::V1alpha2),
        "runtime.v1.RuntimeService/CreateContainer" => Route::Create(Api::V1),
        "runtime.v1alpha2.RuntimeService/CreateContainer" => Route::Create(Api::V1alpha2),
        _ => Route::Forward,
    }
}

/// What an intercepted call answers.
pub enum Reply {
    /// containerd's response to the forwarded call.
    Stream(Response<RecvStream>),
    /// A response read in full before the decision (PullImage by tag).
    Full(FullResponse),
}

/// Serves kubelet on `listener` until `shutdown` resolves, then lets calls in
/// flight finish (bounded by `grace`).
pub async fn serve<R: ImageRuntime>(
    listener: UnixListener,
    runtime: Arc<Path>,
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
                let connection = crate::relay::connection(stream, runtime.clone(), gate.clone(), stop_rx.clone());
                let alive = alive_tx.clone();
                tokio::spawn(async move {
                    connection.await;
                    drop(alive);
                });
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
        // What grpc-go routes without the leading slash is decided too.
        assert_eq!(
            route("runtime.v1.ImageService/PullImage"),
            Route::Pull(Api::V1)
        );
        assert_eq!(
            route("runtime.v1.RuntimeService/CreateContainer"),
            Route::Create(Api::V1)
        );
        assert_eq!(route("//runtime.v1.ImageService/PullImage"), Route::Forward);
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
