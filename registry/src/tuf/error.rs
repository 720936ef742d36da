//! Why a repository was refused or could not be made, in operator terms,
//! with a stable reason for metrics and logs.

use std::path::PathBuf;

use tough::TransportErrorKind;
use tough::schema::RoleType;

/// A refusal or failure. `reason()` classifies it; the message says what
/// was wrong.
#[derive(Debug, thiserror::Error)]
pub enum TufError {
    /// A version lower than one already trusted.
    #[error("{0}: rollback refused")]
    Rollback(String),
    /// Metadata past its `expires` (a freeze attack, or a publisher that
    /// stopped renewing).
    #[error("{0}: freeze refused")]
    Expired(String),
    /// Fewer valid signatures than a role's threshold; signatures by keys
    /// the root does not name for the role do not count.
    #[error("{0}")]
    Signature(String),
    /// A newer root not signed by thresholds of both the trusted root and
    /// itself, or not exactly the next version.
    #[error("{0}")]
    RootChain(String),
    /// A target (or metadata file) whose length or sha256 differs from what
    /// the metadata signs.
    #[error("{0}")]
    TargetMismatch(String),
    /// A file the source holds that the verified metadata does not account for.
    #[error("{path}: file in the source that the targets metadata does not list")]
    UnlistedFile { path: String },
    /// A target name that is not a bundle file kind, or would leave the
    /// bundle directory.
    #[error("target {path:?} refused: {why}")]
    BadPath { path: String, why: String },
    /// A download or a target past the configured limits.
    #[error("{0}")]
    TooLarge(String),
    /// The system clock is earlier than a time already seen.
    #[error(
        "system clock {system} is earlier than {latest_known}, a time already seen: clock stepped backwards, refusing until it catches up"
    )]
    ClockBackwards {
        system: String,
        latest_known: String,
    },
    /// The source could not be reached (connection, timeout, server error).
    #[error("source unreachable: {0}")]
    Unreachable(String),
    /// A private key that cannot sign TUF metadata, or is not readable.
    #[error("key {path}: {why}", path = .path.display())]
    Key { path: PathBuf, why: String },
    /// The bundle to publish is not one `policy check` accepts.
    #[error("bundle {path} refused: {why}", path = .path.display())]
    Bundle { path: PathBuf, why: String },
    /// Reading or writing local files (the repository, the state directory).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A request that cannot be met (threshold above the key count, a
    /// repository that already exists, missing keys for a role).
    #[error("{0}")]
    Usage(String),
    /// Anything else malformed.
    #[error("{0}")]
    Invalid(String),
}

impl TufError {
    /// A stable snake_case label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            TufError::Rollback(_) => "rollback",
            TufError::Expired(_) => "expired",
            TufError::Signature(_) => "signature",
            TufError::RootChain(_) => "root_chain",
            TufError::TargetMismatch(_) => "target_mismatch",
            TufError::UnlistedFile { .. } => "unlisted_file",
            TufError::BadPath { .. } => "bad_path",
            TufError::TooLarge(_) => "too_large",
            TufError::ClockBackwards { .. } => "clock_backwards",
            TufError::Unreachable(_) => "unreachable",
            TufError::Key { .. } => "key",
            TufError::Bundle { .. } => "bundle",
            TufError::Io { .. } => "io",
            TufError::Usage(_) => "usage",
            TufError::Invalid(_) => "invalid",
        }
    }

    /// True for failures to reach the source, which callers report
    /// differently from a refusal (exit 2 rather than 1).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TufError::Unreachable(_))
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> TufError {
        TufError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The file a role's metadata lives in, as operators see it.
fn role_file(role: RoleType) -> &'static str {
    match role {
        RoleType::Root => "root.json",
        RoleType::Snapshot => "snapshot.json",
        RoleType::Targets => "targets.json",
        RoleType::Timestamp => "timestamp.json",
        _ => "delegated targets metadata",
    }
}

/// Classifies an error tough returned while loading or reading targets.
/// tough wraps size and hash failures of a download inside a transport
/// error, so the cause chain is searched for them first.
pub(crate) fn from_tough(err: tough::error::Error) -> TufError {
    use tough::error::Error as E;
    if let Some(found) = wrapped_download_failure(&err) {
        return found;
    }
    let text = err.to_string();
    match err {
        E::OlderMetadata {
            role: RoleType::Root,
            current_version,
            new_version,
            ..
        } => TufError::RootChain(format!(
            "root version {new_version} does not follow trusted root version {current_version}: root chain broken"
        )),
        E::OlderMetadata {
            role,
            current_version,
            new_version,
            ..
        } => TufError::Rollback(format!(
            "{} version {new_version} is lower than version {current_version} already trusted",
            role_file(role)
        )),
        E::OlderSnapshotInTimestamp { .. }
        | E::SnapshotRoleRollback { .. }
        | E::SnapshotRoleMissing { .. } => TufError::Rollback(text),
        E::ExpiredMetadata { role, .. } => {
            TufError::Expired(format!("{} is past its expires", role_file(role)))
        }
        E::VerifyMetadata {
            role: RoleType::Root,
            ..
        } => TufError::RootChain(format!(
            "a newer root is not signed by thresholds of the trusted root and of itself: root chain broken ({text})"
        )),
        E::VerifyMetadata { role, source, .. } => TufError::Signature(format!(
            "{}: {source}; signatures by keys the root does not name for the role do not count",
            role_file(role)
        )),
        E::VerifyRoleMetadata { .. } => TufError::Signature(text),
        E::VerifyTrustedMetadata { source, .. } => {
            TufError::Invalid(format!("the trusted root does not verify itself: {source}"))
        }
        E::MaxUpdatesExceeded { .. } => TufError::TooLarge(text),
        E::SystemTimeSteppedBackward {
            sys_time,
            latest_known_time,
        } => TufError::ClockBackwards {
            system: sys_time.to_string(),
            latest_known: latest_known_time.to_string(),
        },
        E::HashMismatch { .. } => TufError::TargetMismatch(text),
        E::MaxSizeExceeded { .. } => size_failure(&text),
        E::Transport { source, url, .. } => transport_failure(&source, url.as_str()),
        _ => TufError::Invalid(text),
    }
}

/// tough names its own limits "... argument"/"... parameter"; any other
/// specifier is a length signed in metadata, which a changed file exceeds.
fn size_failure(text: &str) -> TufError {
    if text.contains("argument") || text.contains("parameter") {
        TufError::TooLarge(format!("download past the size limit: {text}"))
    } else {
        TufError::TargetMismatch(format!("longer than its signed length: {text}"))
    }
}

fn transport_failure(source: &tough::TransportError, url: &str) -> TufError {
    match source.kind() {
        TransportErrorKind::FileNotFound => {
            TufError::Invalid(format!("{url}: not found in the source"))
        }
        TransportErrorKind::UnsupportedUrlScheme => {
            TufError::Invalid(format!("{url}: unsupported URL scheme"))
        }
        _ => TufError::Unreachable(format!("{url}: {}", chain_text(source))),
    }
}

/// A download stopped at one of our own size limits.
#[derive(Debug, thiserror::Error)]
#[error("{url} is larger than the {limit} bytes allowed for a {what}")]
pub(crate) struct SizeCap {
    pub(crate) url: String,
    pub(crate) what: &'static str,
    pub(crate) limit: u64,
}

fn wrapped_download_failure(err: &tough::error::Error) -> Option<TufError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    let mut url = String::new();
    while let Some(current) = cause {
        if let Some(transport) = current.downcast_ref::<tough::TransportError>() {
            url = format!("{}: ", transport.url());
        }
        if let Some(cap) = current.downcast_ref::<SizeCap>() {
            return Some(TufError::TooLarge(format!(
                "download past the size limit: {cap}"
            )));
        }
        if let Some(inner) = current.downcast_ref::<tough::error::Error>() {
            match inner {
                tough::error::Error::HashMismatch { .. } => {
                    return Some(TufError::TargetMismatch(format!("{url}{inner}")));
                }
                tough::error::Error::MaxSizeExceeded { .. } => {
                    return Some(size_failure(&format!("{url}{inner}")));
                }
                _ => {}
            }
        }
        cause = current.source();
    }
    None
}

fn chain_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}
