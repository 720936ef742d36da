//! The proxy's one client to containerd: a multiplexed HTTP/2 connection
//! per endpoint, re-established when containerd restarts, that carries
//! both the decided calls, forwarded as they came (same path, headers,
//! metadata, grpc-timeout and body), and the proxy's own lookups
//! (`unary`). The relay's connections are the client's own, not this.
//!
//! The `h2` crate is driven directly rather than through an HTTP client so
//! that the frames of a call are queued back to back and leave in one
//! write: every extra write wakes the peer once more, and on a busy node
//! those wake-ups are what a proxy costs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Request, Response};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use crate::grpc::ProxyError;

/// What an intercepted call answers.
pub enum Reply {
    /// containerd's response to the forwarded call.
    Stream(Response<RecvStream>),
    /// A response read in full before the decision (PullImage by tag).
    Full(FullResponse),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What goes upstream as the request body.
pub enum RequestBody {
    /// Read in full (an intercepted call): the original bytes.
    Full(Bytes),
}

#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    /// Read on every call without a lock; replaced when the connection dies.
    current: ArcSwapOption<SendRequest<Bytes>>,
    /// Only one task (re)connects at a time.
    connecting: Mutex<()>,
}

fn upstream_error(e: impl std::fmt::Display) -> ProxyError {
    ProxyError::Upstream(e.to_string())
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

    /// The socket this client connects to.
    pub fn socket(&self) -> &std::path::Path {
        &self.inner.socket
    }

    fn live(&self) -> Option<SendRequest<Bytes>> {
        self.inner.current.load().as_ref().map(|s| (**s).clone())
    }

    /// A sender on a live connection, connecting if there is none.
    async fn sender(&self) -> Result<SendRequest<Bytes>, ProxyError> {
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(sender) = self.live() {
            return Ok(sender);
        }
        let socket = &self.inner.socket;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(socket))
            .await
            .map_err(|_| {
                ProxyError::Upstream(format!("connecting to {} timed out", socket.display()))
            })?
            .map_err(|e| {
                ProxyError::Upstream(format!("cannot connect to {}: {e}", socket.display()))
            })?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(4 << 20)
            .initial_connection_window_size(8 << 20)
            .max_frame_size(1 << 20)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| {
                ProxyError::Upstream(format!("HTTP/2 handshake with {}: {e}", socket.display()))
            })?;
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::info!(socket = %inner.socket.display(), error = %e, "runtime connection closed");
            }
            // Whatever ended it, the next call connects afresh.
            inner.current.store(None);
        });
        self.inner.current.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    fn forget(&self) {
        self.inner.current.store(None);
    }

    /// Sends one call upstream and returns the response head and body
    /// stream. A call that could not even start because the connection had
    /// died (containerd restarted) is retried once on a new connection.
    pub async fn call(
        &self,
        head: Request<()>,
        body: RequestBody,
    ) -> Result<Response<RecvStream>, ProxyError> {
        let head = with_authority(head)?;
        let mut sender = self.ready_sender().await?;
        let (response, send) = sender.send_request(head, false).map_err(upstream_error)?;
        let pipe = send_body(send, body);
        let (piped, response) = tokio::join!(pipe, response);
        let response = response.map_err(upstream_error)?;
        // A server may answer before it has read the request (an unknown
        // method: trailers-only, then RST_STREAM NO_ERROR); once answered,
        // a request body it no longer wants is not an error.
        if let Err(e) = piped {
            tracing::debug!(error = %e, "request body not fully sent; the runtime had answered");
        }
        Ok(response)
    }

    /// A sender ready for a new stream. When the connection turns out dead
    /// (containerd restarted) it is dropped and one new connection tried,
    /// before the call is sent, so nothing is sent twice.
    async fn ready_sender(&self) -> Result<SendRequest<Bytes>, ProxyError> {
        match self.sender().await?.ready().await {
            Ok(sender) => Ok(sender),
            Err(_) => {
                self.forget();
                self.sender().await?.ready().await.map_err(upstream_error)
            }
        }
    }
}

/// A gRPC call's failure, as the caller of [`Upstream::unary`] sees it.
#[derive(Debug)]
pub enum UnaryError {
    /// The call did not reach the runtime, or got no answer in time.
    Proxy(ProxyError),
    /// The runtime answered with this gRPC status (never OK).
    Status { code: u32, message: String },
}

/// gRPC's NOT_FOUND.
pub const NOT_FOUND: u32 = 5;
const UNKNOWN: u32 = 2;
const DEADLINE_EXCEEDED: u32 = 4;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

impl UnaryError {
    /// As the decision code counts it: not reached (UNAVAILABLE included),
    /// out of time, or answered.
    pub fn into_proxy_error(self, operation: &str) -> ProxyError {
        match self {
            UnaryError::Proxy(e) => e,
            UnaryError::Status {
                code: UNAVAILABLE,
                message,
            } => ProxyError::Upstream(format!("{operation}: {message}")),
            UnaryError::Status {
                code: DEADLINE_EXCEEDED,
                ..
            } => ProxyError::Deadline,
            UnaryError::Status { code, message } => {
                ProxyError::Internal(format!("{operation}: {message} (gRPC status {code})"))
            }
        }
    }
}

impl Upstream {
    /// One unary gRPC call of the proxy's own (a lookup), on the same
    /// connection as the calls it forwards, bounded by `timeout` from
    /// connecting to the last byte of the answer.
    pub async fn unary<Response: prost::Message + Default>(
        &self,
        path: &str,
        request: &impl prost::Message,
        timeout: Duration,
    ) -> Result<Response, UnaryError> {
        let body = crate::grpc::frame(&request.encode_to_vec());
        let head = Request::builder()
            .method(http::Method::POST)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            // gRPC's timeout units: milliseconds, at most eight digits.
            .header(
                "grpc-timeout",
                format!("{}m", timeout.as_millis().clamp(1, 99_999_999)),
            )
            .body(())
            .map_err(|e| UnaryError::Proxy(ProxyError::Internal(e.to_string())))?;
        let call = async {
            let response = self.call(head, RequestBody::Full(body)).await?;
            FullResponse::read(response).await
        };
        let full = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| UnaryError::Proxy(ProxyError::Deadline))?
            .map_err(UnaryError::Proxy)?;
        // With no status, as gRPC's HTTP/2 mapping says: a gateway or
        // overload HTTP status is UNAVAILABLE, anything else UNKNOWN.
        let code = full
            .grpc_status()
            .unwrap_or(match full.head.status.as_u16() {
                429 | 502 | 503 | 504 => UNAVAILABLE,
                _ => UNKNOWN,
            });
        if code != 0 {
            let message = full
                .trailers
                .as_ref()
                .and_then(|t| t.get("grpc-message"))
                .or_else(|| full.head.headers.get("grpc-message"))
                .map(|v| {
                    percent_encoding::percent_decode(v.as_bytes())
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            return Err(UnaryError::Status { code, message });
        }
        let message = crate::grpc::single_message(full.data).map_err(|e| UnaryError::Status {
            code: INTERNAL,
            message: format!("{path}: the answer is not one gRPC message: {e}"),
        })?;
        Response::decode(message).map_err(|e| UnaryError::Status {
            code: INTERNAL,
            message: format!("{path}: the answer does not decode: {e}"),
        })
    }
}

/// HTTP/2 requests need :scheme and :authority; over a Unix socket they
/// carry no meaning, so any fixed value does when the client sent none.
fn with_authority(mut head: Request<()>) -> Result<Request<()>, ProxyError> {
    if head.uri().authority().is_none() {
        let path = head
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri = http::Uri::builder()
            .scheme("http")
            .authority("localhost")
            .path_and_query(path)
            .build();
        *head.uri_mut() = uri.map_err(|e| ProxyError::BadRequest(format!("request path: {e}")))?;
    }
    Ok(head)
}

async fn send_body(mut send: SendStream<Bytes>, body: RequestBody) -> Result<(), ProxyError> {
    match body {
        RequestBody::Full(bytes) => send.send_data(bytes, true).map_err(upstream_error),
    }
}

/// A response read in full: head, data and trailers.
pub struct FullResponse {
    pub head: http::response::Parts,
    pub data: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl FullResponse {
    pub async fn read(response: Response<RecvStream>) -> Result<FullResponse, ProxyError> {
        let (head, mut body) = response.into_parts();
        let mut data = bytes::BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(upstream_error)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(upstream_error)?;
        Ok(FullResponse {
            head,
            data: data.freeze(),
            trailers,
        })
    }

    /// The gRPC status: in the trailers, or in the head of a trailers-only response.
    pub fn grpc_status(&self) -> Option<u32> {
        crate::grpc::response_status(&self.head.headers, self.trailers.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that takes one call at a time and reports how each ended:
    /// containerd (grpc-go) cancels a call's context on RST_STREAM, so a
    /// pull the proxy gives up on stops there only if the reset is sent.
    async fn resets_seen(
        listener: tokio::net::UnixListener,
        answer_head: bool,
    ) -> tokio::sync::mpsc::Receiver<h2::Reason> {
        let (seen, resets) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let (io, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(io).await.unwrap();
            while let Some(Ok((_request, mut respond))) = connection.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let reason = if answer_head {
                        let mut body = respond.send_response(Response::new(()), false).unwrap();
                        std::future::poll_fn(|cx| body.poll_reset(cx)).await
                    } else {
                        std::future::poll_fn(|cx| respond.poll_reset(cx)).await
                    };
                    let _ = seen.send(reason.unwrap()).await;
                });
            }
        });
        resets
    }

    fn call_head() -> Request<()> {
        Request::builder()
            .method(http::Method::POST)
            .uri("/runtime.v1.ImageService/PullImage")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn a_call_given_up_on_is_reset_upstream_before_and_after_its_head() {
        for answer_head in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("runtime.sock");
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            let mut resets = resets_seen(listener, answer_head).await;
            let upstream = Upstream::new(socket);
            let call = async {
                let response = upstream
                    .call(call_head(), RequestBody::Full(Bytes::from_static(b"x")))
                    .await?;
                FullResponse::read(response).await
            };
            // Given up on while it waits: for its head, or for its body.
            let given_up = tokio::time::timeout(Duration::from_millis(200), call).await;
            assert!(given_up.is_err(), "the server never answers in full");
            let reason = tokio::time::timeout(Duration::from_secs(5), resets.recv())
                .await
                .expect("no reset reached the server");
            assert_eq!(reason, Some(h2::Reason::CANCEL), "head sent: {answer_head}");
        }
    }
}
