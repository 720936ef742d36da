//! The Prometheus endpoint every node daemon serves on an address of its
//! own: `GET /metrics`, anything else 404.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct ListenError {
    pub addr: std::net::SocketAddr,
    pub source: std::io::Error,
}

/// Serves `GET /metrics` on `addr`, the body made by `encode` at every
/// scrape, until the task is dropped.
pub async fn serve<F>(addr: std::net::SocketAddr, encode: F) -> Result<(), ListenError>
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    let listener = bind(addr).await?;
    serve_on(listener, encode).await;
    Ok(())
}

pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ListenError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    tracing::info!(%addr, "serving metrics");
    Ok(listener)
}

/// Serves `GET /metrics` on a bound listener until the task is dropped.
pub async fn serve_on<F>(listener: tokio::net::TcpListener, encode: F)
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let encode = encode.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let encode = encode.clone();
                    async move {
                        if request.uri().path() == "/metrics" {
                            hyper::Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(encode())))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        }
                    }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
