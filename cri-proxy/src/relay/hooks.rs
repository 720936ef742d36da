//! What the relay asks of the program around it, and what it hands out
//! and takes back: the seam between HTTP/2 and whatever the calls mean.

use std::fmt;

use bytes::Bytes;

use super::frame::{self, FrameError};
use super::hpack::DecodeError;

/// The largest request message a taken-out call may have (kubelet's
/// default is 16 MiB), plus the gRPC message prefix.
pub const MAX_REQUEST: usize = (16 << 20) + 5;

/// What the relay asks of the program around it.
pub trait Hooks {
    /// What a taken-out call is, as the classification found it, so that
    /// whoever answers it need not route it again.
    type Kind: Copy + fmt::Debug + Send + 'static;

    /// What to do with a call to `path`.
    fn handling(&self, path: &str) -> Handling<Self::Kind>;

    /// A call the relay serves (relays or takes out) was opened on `path`.
    fn opened(&mut self, path: &[u8]);

    /// The answer to a call the relay refuses without handing it out.
    fn refusal(&self, refusal: Refusal) -> Reply;
}

/// What the relay does with a call, by its `:path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling<K> {
    /// Passed on as it came.
    Relay,
    /// Taken out of the stream and handed out as a [`Call`] of this kind.
    TakeOut(K),
    /// Not served here: muted toward the server and refused at once.
    Refuse,
}

/// Why a call was answered by the relay itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A `:path` the hooks refuse (bounded to 256 characters).
    NotServed(String),
    /// A taken-out call's request head is not one call's (RFC 9113 §8.3),
    /// or too large to keep.
    BadHead(String),
    /// A taken-out call's request body is larger than this.
    TooLarge(usize),
    /// A taken-out call did not fit in the memory budget (of this many
    /// bytes) that all connections share.
    OverBudget(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the client did not start with the HTTP/2 preface")]
    Preface,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Hpack(#[from] DecodeError),
}

impl RelayError {
    /// The GOAWAY code the client is told.
    pub fn code(&self) -> u32 {
        match self {
            RelayError::Hpack(_) => frame::COMPRESSION_ERROR,
            _ => frame::PROTOCOL_ERROR,
        }
    }
}

/// A call taken out of the stream, whole: its kind, its head decoded
/// (exactly one of each pseudo-header, the `:path` it was classified by)
/// and its body as the client sent it.
#[derive(Debug)]
pub struct Call<K> {
    pub stream: u32,
    pub kind: K,
    pub head: http::request::Parts,
    pub body: Bytes,
}

impl<K> Call<K> {
    pub fn path(&self) -> &str {
        self.head.uri.path()
    }
}

/// A reply to inject: header blocks in our own (stateless) encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub head: Bytes,
    pub data: Bytes,
    pub trailers: Option<Bytes>,
}
