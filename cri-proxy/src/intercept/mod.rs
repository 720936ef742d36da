//! The two CRI calls the proxy decodes: PullImage and CreateContainer. Each
//! resolves the image through the runtime, decides with attestgate-policy,
//! writes the audit record, and only then answers. StartContainer is taken
//! out of the stream too, not decoded, only held while a create by name is
//! being checked (see [`Unconfirmed`]).

pub mod create;
pub mod pull;
#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attestgate_node::{Decider, Request, Undecidable};
use attestgate_policy::{Decision, ImageRef, Operation, PodContext, PodRef};
use bytes::Bytes;
use http::HeaderMap;
use http::request::Parts;
use tokio::sync::{RwLock, RwLockWriteGuard, Semaphore, oneshot};

use crate::grpc::ProxyError;
use crate::metrics::Metrics;
use crate::resolve::{Api, ImageRuntime};
use crate::server::Reply;
use crate::upstream::Upstream;

/// Everything a decision needs, shared by all connections.
pub struct Gate<R> {
    pub decider: Decider,
    pub metrics: Arc<Metrics>,
    pub runtime: R,
    pub upstream: Upstream,
    pub unconfirmed: Unconfirmed,
}

/// Creates by name being checked for the image their container was really
/// made from, against StartContainer calls. From before such a create is
/// forwarded until its container is confirmed or removed, no start goes to
/// containerd, and it is forwarded only once the starts already sent are
/// answered. Starts are not decoded, and containerd resolves the id a start
/// gives by any unique prefix, so any start could be one for that
/// container. Starts share the lock among themselves; kubelet, which
/// creates by image id, never takes it exclusively.
#[derive(Default)]
pub struct Unconfirmed(RwLock<()>);

/// Decided calls in progress that outlive their client if need be (see
/// [`to_the_end`]): bounded, so resets cannot pile them up, and waited for
/// at shutdown. Pulls and creates apart, so slow pulls never hold up a
/// create.
const MAX_PULLS: u32 = 64;
static PULLS: Semaphore = Semaphore::const_new(MAX_PULLS as usize);
const MAX_CREATES: u32 = 256;
static CREATES: Semaphore = Semaphore::const_new(MAX_CREATES as usize);

/// Resolves once no decided call is in progress.
pub async fn decided_calls_finished() {
    let _ = tokio::join!(
        PULLS.acquire_many(MAX_PULLS),
        CREATES.acquire_many(MAX_CREATES)
    );
}

/// Runs `work` to its end even when whoever waits for it goes (a client's
/// reset aborts the task answering it): stopping half-way could leave an
/// image or a container on the node that nothing decided.
async fn to_the_end<T: Send + 'static>(
    slots: &'static Semaphore,
    work: impl Future<Output = Result<T, ProxyError>> + Send + 'static,
) -> Result<T, ProxyError> {
    let permit = slots
        .acquire()
        .await
        .map_err(|_| ProxyError::Internal("decisions are closed".into()))?;
    let (answered, answer) = oneshot::channel();
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(Err(e)) = answered.send(work.await)
            && !matches!(e, ProxyError::Denied(_))
        {
            tracing::warn!(error = %e, "a decided call whose client left failed");
        }
    });
    answer
        .await
        .map_err(|_| ProxyError::Internal("the call ended without an answer".into()))?
}

/// Pod identity and metadata: from a PodSandboxConfig, or as the runtime
/// recorded it for a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Pod {
    /// From a sandbox's metadata fields and its labels and annotations, as
    /// either CRI version carries them (config or status).
    pub fn new(
        namespace: String,
        name: String,
        uid: String,
        labels: impl IntoIterator<Item = (String, String)>,
        annotations: impl IntoIterator<Item = (String, String)>,
    ) -> Pod {
        Pod {
            namespace,
            name,
            uid,
            labels: labels.into_iter().collect(),
            annotations: annotations.into_iter().collect(),
        }
    }

    fn context(&self) -> PodContext {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        PodContext {
            namespace: non_empty(&self.namespace),
            name: non_empty(&self.name),
            uid: non_empty(&self.uid),
            // The CRI does not carry the pod's service account.
            service_account: None,
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
        }
    }

    fn record(&self) -> PodRef {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        PodRef {
            namespace: non_empty(&self.namespace),
            name: non_empty(&self.name),
            uid: non_empty(&self.uid),
        }
    }
}

/// What is being decided, for the record.
pub struct Subject<'a> {
    pub operation: Operation,
    pub pod: Option<&'a Pod>,
    pub container: Option<&'a str>,
}

/// A kubelet call carries `grpc-timeout`; our own runtime lookups get what
/// is left of it, bounded so a missing header cannot make us wait forever,
/// and given a floor so a client cannot make them fail (and, under fail
/// mode open, admit) by asking for a deadline nothing could meet.
pub fn deadline(headers: &HeaderMap) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(120);
    const FLOOR: Duration = Duration::from_secs(2);
    let Some(value) = headers.get("grpc-timeout").and_then(|v| v.to_str().ok()) else {
        return DEFAULT;
    };
    if value.len() < 2 {
        return DEFAULT;
    }
    let (amount, unit) = value.split_at(value.len() - 1);
    let Ok(amount) = amount.parse::<u64>() else {
        return DEFAULT;
    };
    let duration = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return DEFAULT,
    };
    duration.clamp(FLOOR, DEFAULT)
}

/// Runs `write`, which may block for long (a log on a slow or full disk,
/// a FIFO its reader has stopped reading), without holding up the tasks
/// queued on this worker of the runtime: its connection to containerd, the
/// other calls' decisions. They move to another thread meanwhile.
fn off_the_runtime<T>(write: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(write)
        }
        _ => write(),
    }
}

/// A bare image id (`sha256:<64 hex>` or 64 hex), which names no repository.
pub fn is_image_id(image: &str) -> bool {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    // Lowercase only, as containerd parses digests: `sha256:<HEX>` is to it
    // the tag of an image named `sha256`, which can be moved.
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The repository digest of `image` among the runtime's repo digests
/// (`repo@sha256:…`), for the same normalised repository.
pub fn digest_for(image: &ImageRef, repo_digests: &[String]) -> Option<attestgate_policy::Digest> {
    repo_digests.iter().find_map(|rd| {
        let parsed = ImageRef::parse(rd).ok()?;
        (parsed.repository == image.repository)
            .then_some(parsed.digest)
            .flatten()
    })
}

impl<R: ImageRuntime> Gate<R> {
    /// PullImage, run to its decision and to the removal of an image it
    /// denies whatever the client does.
    pub async fn pull_to_the_end(
        self: Arc<Self>,
        api: Api,
        parts: Parts,
        body: Bytes,
    ) -> Result<Reply, ProxyError> {
        to_the_end(&PULLS, async move { self.pull(api, parts, body).await }).await
    }

    /// StartContainer, forwarded as it came once no create by name is
    /// being checked (see [`Unconfirmed`]); failed when that takes longer
    /// than the call may.
    pub async fn start(&self, parts: Parts, body: Bytes) -> Result<Reply, ProxyError> {
        let timeout = deadline(&parts.headers);
        let _starting = tokio::time::timeout(timeout, self.unconfirmed.0.read())
            .await
            .map_err(|_| ProxyError::Deadline)?;
        // Held until containerd's answer begins: it has handled the start.
        self.forward(parts, body).await
    }

    /// The exclusive side of [`Unconfirmed`], for a create by name.
    async fn checking(&self, timeout: Duration) -> Result<RwLockWriteGuard<'_, ()>, ProxyError> {
        tokio::time::timeout(timeout, self.unconfirmed.0.write())
            .await
            .map_err(|_| ProxyError::Deadline)
    }

    /// Decides one image and writes its audit record.
    pub fn decide(
        &self,
        subject: &Subject<'_>,
        reference: &str,
        image: &ImageRef,
        started: Instant,
    ) -> Decision {
        subject.as_request(|request| {
            off_the_runtime(|| self.decider.decide(request, reference, image, started))
        })
    }

    /// An image that could not be decided, recorded like any decision; the
    /// decider settles it by whose failure it is.
    pub fn undecidable(
        &self,
        subject: &Subject<'_>,
        reference: &str,
        why: Undecidable,
        started: Instant,
    ) -> Decision {
        subject.as_request(|request| {
            off_the_runtime(|| self.decider.undecidable(request, reference, why, started))
        })
    }

    /// The node's own failure, settled by the fail mode.
    pub fn error(
        &self,
        subject: &Subject<'_>,
        reference: &str,
        message: impl Into<String>,
        started: Instant,
    ) -> Decision {
        self.undecidable(
            subject,
            reference,
            Undecidable::Internal(message.into()),
            started,
        )
    }

    /// A request that cannot be decided because of what it says (a name that
    /// does not parse, an image that is not there): refused whatever the fail
    /// mode.
    pub fn refuse(
        &self,
        subject: &Subject<'_>,
        reference: &str,
        message: impl Into<String>,
        started: Instant,
    ) -> Decision {
        self.undecidable(
            subject,
            reference,
            Undecidable::Invalid(message.into()),
            started,
        )
    }
}

/// Whose failure a lookup's error is: containerd out of reach or out of
/// time is the node's; an error containerd answered (an id prefix two
/// images share, say) is about what the request named.
pub fn lookup_failure(error: &ProxyError) -> fn(String) -> Undecidable {
    match error {
        ProxyError::Upstream(_) => Undecidable::Unreachable,
        ProxyError::Deadline => Undecidable::TimedOut,
        _ => Undecidable::Answered,
    }
}

impl Subject<'_> {
    fn as_request<T>(&self, decide: impl FnOnce(&Request<'_>) -> T) -> T {
        let pod = self.pod.map(Pod::context).unwrap_or_default();
        let pod_ref = self.pod.map(Pod::record);
        decide(&Request {
            operation: self.operation,
            pod: &pod,
            pod_ref: pod_ref.as_ref(),
            container: self.container,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_parsed_and_bounded() {
        let mut h = HeaderMap::new();
        assert_eq!(deadline(&h), Duration::from_secs(120));
        h.insert("grpc-timeout", "2500m".parse().unwrap());
        assert_eq!(deadline(&h), Duration::from_millis(2500));
        h.insert("grpc-timeout", "1n".parse().unwrap());
        assert_eq!(deadline(&h), Duration::from_secs(2));
        h.insert("grpc-timeout", "5H".parse().unwrap());
        assert_eq!(deadline(&h), Duration::from_secs(120));
        h.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(deadline(&h), Duration::from_secs(120));
    }

    #[test]
    fn image_ids_are_told_from_names() {
        let hex = "a".repeat(64);
        assert!(is_image_id(&format!("sha256:{hex}")));
        assert!(is_image_id(&hex));
        assert!(!is_image_id("registry.test/app:1"));
        assert!(!is_image_id(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_image_id(&format!("registry.test/app@sha256:{hex}")));
    }

    #[test]
    fn repo_digest_must_be_for_the_same_repository() {
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let digests = vec![
            format!("mirror.test/app@{d1}"),
            format!("docker.io/library/app@{d2}"),
        ];
        let image = ImageRef::parse("app:1").unwrap();
        assert_eq!(digest_for(&image, &digests).unwrap().as_str(), d2);
        assert!(digest_for(&ImageRef::parse("other.test/app:1").unwrap(), &digests).is_none());
    }
}
