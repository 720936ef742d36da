//! Why carrying an artifact failed, in operator terms, with a stable reason
//! for logs and metrics and a split the syncer's exit code follows: a source
//! it could not reach (try again later) or an artifact it refuses.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference itself is malformed (a configuration mistake).
    #[error(
        "{reference:?} is not an OCI reference: {why} (expected oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:HEX)"
    )]
    BadReference { reference: String, why: String },
    /// No answer, or an answer that says "not now": connection refused,
    /// DNS, TLS, timeout, 5xx, 429.
    #[error("{reference}: registry unreachable: {why}")]
    Unreachable { reference: String, why: String },
    /// The registry took longer than the options allow to connect or to
    /// send the next bytes.
    #[error("{reference}: the registry did not answer within {}s: {why}", after.as_secs_f64())]
    Timeout {
        reference: String,
        after: std::time::Duration,
        why: String,
    },
    #[error("{reference}: {what} not found in the registry")]
    NotFound { reference: String, what: String },
    #[error("{reference}: the registry refused our credentials ({status}){hint}")]
    Unauthorized {
        reference: String,
        status: u16,
        hint: String,
    },
    /// The registry answered, but not as the distribution protocol says.
    #[error("{reference}: unexpected answer from the registry: {why}")]
    BadResponse { reference: String, why: String },
    /// Not an attestgate bundle as SPEC §10 shapes it, or one whose file
    /// names would leave the repository.
    #[error("{reference}: not an attestgate bundle artifact: {why}")]
    BadArtifact { reference: String, why: String },
    /// A manifest or index that is not what its media type promises (or of
    /// a media type not asked for).
    #[error("{reference}: {what} is not a usable manifest: {why}")]
    BadManifest {
        reference: String,
        what: String,
        why: String,
    },
    #[error("{reference}: {what} is too large: {size} bytes, the limit is {limit}")]
    TooLarge {
        reference: String,
        what: String,
        size: u64,
        limit: u64,
    },
    #[error("{reference}: {what} does not match its digest {expected}: {why}")]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        why: String,
    },
    /// The options themselves cannot be used (an extra CA that is not PEM).
    #[error("registry options: {why}")]
    BadOptions { why: String },
    /// The bundle directory to push, or the local directory pulled into.
    #[error("{}: {why}", path.display())]
    Local { path: PathBuf, why: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl OciError {
    /// A stable snake_case name for logs, metrics and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            OciError::BadReference { .. } => "bad_reference",
            OciError::Unreachable { .. } => "unreachable",
            OciError::Timeout { .. } => "timeout",
            OciError::NotFound { .. } => "not_found",
            OciError::Unauthorized { .. } => "unauthorized",
            OciError::BadResponse { .. } => "bad_response",
            OciError::BadArtifact { .. } => "bad_artifact",
            OciError::BadManifest { .. } => "bad_manifest",
            OciError::TooLarge { .. } => "too_large",
            OciError::DigestMismatch { .. } => "digest_mismatch",
            OciError::BadOptions { .. } => "bad_options",
            OciError::Local { .. } => "local",
            OciError::Io { .. } => "io",
        }
    }

    /// Whether the bundle could not be had, as opposed to had and refused:
    /// a missing tag, refused credentials, a timeout and a registry answering nonsense
    /// count as unreachable (the syncer exits 2 and tries again); a bad
    /// artifact and a size or digest violation are refusals (1). Local
    /// errors are neither.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            OciError::Unreachable { .. }
                | OciError::Timeout { .. }
                | OciError::NotFound { .. }
                | OciError::Unauthorized { .. }
                | OciError::BadResponse { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |source| OciError::Io { path, source }
    }
}
