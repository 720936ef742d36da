//! One multiplexed HTTP/2 connection to containerd, re-established when
//! containerd restarts. Requests are forwarded as they came: same path,
//! headers (metadata, grpc-timeout) and body frames.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use crate::grpc::{Body, ProxyError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    /// Read on every call without a lock; replaced when the connection dies.
    current: ArcSwapOption<SendRequest<Body>>,
    /// Only one task (re)connects at a time.
    connecting: Mutex<()>,
}

impl Upstream {
    pub fn new(socket: PathBuf) -> Upstream {
        Upstream {
            inner: Arc::new(Inner {
                socket,
                current: ArcSwapOption::empty(),
                connecting: Mutex::new(()),
            }),
        }
    }

    /// A sender on a live connection, connecting if there is none.
    async fn sender(&self) -> Result<SendRequest<Body>, ProxyError> {
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.inner.socket))
            .await
            .map_err(|_| {
                ProxyError::Upstream(format!(
                    "connecting to {} timed out",
                    self.inner.socket.display()
                ))
            })?
            .map_err(|e| {
                ProxyError::Upstream(format!(
                    "cannot connect to {}: {e}",
                    self.inner.socket.display()
                ))
            })?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(8 << 20)
            .max_frame_size(1 << 20)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                ProxyError::Upstream(format!(
                    "HTTP/2 handshake with {}: {e}",
                    self.inner.socket.display()
                ))
            })?;
        let socket = self.inner.socket.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::info!(socket = %socket.display(), error = %e, "runtime connection closed");
            }
        });
        self.inner.current.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    fn live(&self) -> Option<SendRequest<Body>> {
        self.inner
            .current
            .load()
            .as_ref()
            .filter(|s| !s.is_closed())
            .map(|s| (**s).clone())
    }

    /// Sends one request upstream. A request that fails because the
    /// connection died before it was sent is retried once on a new
    /// connection (containerd restarted); anything else is reported.
    pub async fn send(&self, mut request: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        if request.uri().authority().is_none() {
            // HTTP/2 clients need :scheme and :authority; over a Unix socket
            // they carry no meaning, so any fixed value does.
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let uri = http::Uri::builder()
                .scheme("http")
                .authority("localhost")
                .path_and_query(path)
                .build();
            *request.uri_mut() =
                uri.map_err(|e| ProxyError::BadRequest(format!("request path: {e}")))?;
        }
        let mut sender = self.sender().await?;
        if sender.ready().await.is_err() {
            self.forget();
            sender = self.sender().await?;
            sender
                .ready()
                .await
                .map_err(|e| ProxyError::Upstream(e.to_string()))?;
        }
        match sender.try_send_request(request).await {
            Ok(response) => Ok(response),
            Err(mut failed) => {
                let error = failed.error().to_string();
                self.forget();
                // The request comes back only when it never left: safe to retry.
                match failed.take_message() {
                    Some(request) => {
                        let mut sender = self.sender().await?;
                        sender
                            .ready()
                            .await
                            .map_err(|e| ProxyError::Upstream(e.to_string()))?;
                        sender
                            .send_request(request)
                            .await
                            .map_err(|e| ProxyError::Upstream(e.to_string()))
                    }
                    None => Err(ProxyError::Upstream(error)),
                }
            }
        }
    }

    /// Drops the current connection after a failure, so the next call
    /// connects afresh; calls in flight on it finish on their own.
    fn forget(&self) {
        self.inner.current.store(None);
    }
}
