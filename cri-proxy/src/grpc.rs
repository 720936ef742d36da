//! gRPC at the wire level: message framing, and the one place where errors
//! become gRPC statuses on the wire.

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

/// gRPC status codes we produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Cancelled = 1,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

/// Everything the proxy itself refuses or fails with.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The policy said no.
    #[error("SignatureValidationFailed: {0}")]
    Denied(String),
    /// The request could not be understood.
    #[error("{0}")]
    BadRequest(String),
    #[error("request message larger than {0} bytes")]
    TooLarge(usize),
    /// The calls in progress hold all the memory the proxy may use for
    /// them (`memory_budget`, in bytes).
    #[error(
        "the proxy is holding its whole memory budget ({0} bytes) for calls in progress; try again"
    )]
    OverBudget(usize),
    /// containerd could not be reached.
    #[error("runtime unavailable: {0}")]
    Upstream(String),
    #[error("deadline exceeded")]
    Deadline,
    /// The client went before the answer: nobody hears this one.
    #[error("the client cancelled the call")]
    Cancelled,
    #[error("{0}")]
    Internal(String),
    /// A call outside the CRI (containerd's own API, say): never forwarded.
    #[error("attestgate-proxy serves the CRI only; {0} is not forwarded")]
    NotServed(String),
}

impl ProxyError {
    fn code(&self) -> Code {
        match self {
            ProxyError::Denied(_) => Code::PermissionDenied,
            ProxyError::BadRequest(_) => Code::InvalidArgument,
            ProxyError::TooLarge(_) | ProxyError::OverBudget(_) => Code::ResourceExhausted,
            ProxyError::Upstream(_) => Code::Unavailable,
            ProxyError::Deadline => Code::DeadlineExceeded,
            ProxyError::Cancelled => Code::Cancelled,
            ProxyError::Internal(_) => Code::Internal,
            ProxyError::NotServed(_) => Code::Unimplemented,
        }
    }

    /// The head of a trailers-only gRPC response carrying this error.
    pub fn into_head(self) -> Response<()> {
        status_head(self.code(), &self.to_string())
    }
}

/// A trailers-only response: HTTP 200 with the gRPC status in the headers,
/// sent with END_STREAM, as gRPC servers answer calls they fail outright.
pub fn status_head(code: Code, message: &str) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code as u16));
    // Non-ASCII and control bytes are percent-encoded, as the gRPC spec says.
    let encoded: String =
        percent_encoding::utf8_percent_encode(message, &NON_PRINTABLE).to_string();
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
    response
}

/// Bytes outside printable ASCII, and '%' itself.
const NON_PRINTABLE: percent_encoding::AsciiSet = percent_encoding::CONTROLS.add(b'%');

/// The one message of a unary gRPC request body. Compressed messages are
/// refused: kubelet never compresses, and we must read what we decide on.
pub fn single_message(mut body: Bytes) -> Result<Bytes, ProxyError> {
    if body.len() < 5 {
        return Err(ProxyError::BadRequest(
            "request body is not a gRPC message".into(),
        ));
    }
    let compressed = body[0];
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if compressed != 0 {
        return Err(ProxyError::BadRequest(
            "compressed request messages are not supported".into(),
        ));
    }
    body.advance(5);
    if body.len() != len {
        return Err(ProxyError::BadRequest(format!(
            "request body holds {} bytes after a frame header announcing {len}",
            body.len()
        )));
    }
    Ok(body)
}

/// Frames one message, uncompressed.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// The gRPC status of a response read in full: trailers, or headers for a
/// trailers-only response.
pub fn response_status(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Option<u32> {
    trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let framed = frame(b"hello");
        assert_eq!(
            single_message(framed).unwrap(),
            Bytes::from_static(b"hello")
        );
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert!(single_message(Bytes::from_static(b"\0\0\0")).is_err());
        assert!(single_message(Bytes::from_static(b"\x01\0\0\0\x01x")).is_err());
        assert!(single_message(Bytes::from_static(b"\0\0\0\0\x02x")).is_err());
        let mut two = frame(b"a").to_vec();
        two.extend_from_slice(&frame(b"b"));
        assert!(single_message(Bytes::from(two)).is_err());
    }

    #[test]
    fn denial_is_permission_denied_with_the_kubelet_prefix() {
        let response =
            ProxyError::Denied("image x denied by rule default: ALWAYS_DENY".into()).into_head();
        assert_eq!(response.headers()["grpc-status"], "7");
        assert_eq!(
            response.headers()["grpc-message"],
            "SignatureValidationFailed: image x denied by rule default: ALWAYS_DENY"
        );
    }

    #[test]
    fn non_ascii_messages_are_percent_encoded() {
        let response = status_head(Code::Internal, "caf\u{e9} 100%");
        assert_eq!(response.headers()["grpc-message"], "caf%C3%A9 100%25");
    }
}
