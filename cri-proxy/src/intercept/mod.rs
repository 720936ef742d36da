//! The two CRI calls the proxy decodes: PullImage and CreateContainer. Each
//! resolves the image through the runtime, decides with attestgate-policy,
//! writes the audit record, and only then answers. StartContainer is taken
//! out of the stream too, not decoded, only held while a create by name is
//! being checked (see [`Unconfirmed`]).

pub mod create;
pub mod permits;
pub mod pull;
#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use attestgate_node::{Decider, Request, Undecidable};
use attestgate_policy::{Decision, ImageRef, Operation};
use bytes::Bytes;
use http::HeaderMap;
use http::request::Parts;
use tokio::sync::{RwLock, RwLockWriteGuard, Semaphore, oneshot};

use crate::cri::{Api, Pod};
use crate::grpc::ProxyError;
use crate::metrics::Metrics;
use crate::resolve::ImageRuntime;
use crate::upstream::{Reply, Upstream};

/// Everything a decision needs, shared by all connections.
pub struct Gate<R> {
    /// Shared with continuous validation, which decides by it too.
    pub decider: Arc<Decider>,
    pub metrics: Arc<Metrics>,
    pub runtime: R,
    /// containerd's runtime endpoint, for decided RuntimeService calls.
    pub upstream: Upstream,
    /// Its image endpoint (the same one unless `image_endpoint` differs),
    /// for every ImageService call the proxy forwards.
    pub images: Upstream,
    pub unconfirmed: Unconfirmed,
    /// The deadline a pull that names none goes to containerd with.
    pub pull_timeout: Duration,
    /// Registry signatures (SPEC §11); none when they count for no
    /// attestor.
    pub signatures: Option<Arc<crate::signatures::Signatures>>,
    /// containerd's content store, for the multi-arch link.
    pub content: Option<crate::content::ContentStore>,
}

impl<R> Gate<R> {
    /// Where a call to `path` goes: the image endpoint for the
    /// ImageService, the runtime endpoint for the rest.
    pub fn upstream_for(&self, path: &str) -> &Upstream {
        if crate::cri::is_image_service(path) {
            &self.images
        } else {
            &self.upstream
        }
    }
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

/// Decided creates in progress that outlive their client if need be (see
/// [`to_the_end`]): bounded, so resets cannot pile them up, and waited for
/// at shutdown. Pulls are bounded apart ([`permits`]), so slow pulls never
/// hold up a create.
const MAX_CREATES: u32 = 256;
static CREATES: Semaphore = Semaphore::const_new(MAX_CREATES as usize);

/// Resolves once no decided call is in progress.
pub async fn decided_calls_finished() {
    let _ = tokio::join!(permits::all_finished(), CREATES.acquire_many(MAX_CREATES));
}

/// Runs `work` to its end even when whoever waits for it goes (a client's
/// reset aborts the task answering it): stopping half-way could leave a
/// container on the node that nothing decided. Pulls have their own
/// ([`Gate::pull_to_the_end`]).
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

/// Whether the client of a call run in a task of its own still waits for
/// the answer: its waiter holds the other end, and drops it when the
/// client resets the call or its connection ends.
pub struct Client(Presence);

enum Presence {
    Waiting(oneshot::Receiver<std::convert::Infallible>),
    Left(tokio::time::Instant),
    /// Nobody to leave (the unit tests call the gate directly).
    Staying,
}

impl Client {
    /// The waiter's end, to hold while it waits, and the client as the
    /// work sees it.
    pub fn new() -> (oneshot::Sender<std::convert::Infallible>, Client) {
        let (waiting, gone) = oneshot::channel();
        (waiting, Client(Presence::Waiting(gone)))
    }

    pub fn staying() -> Client {
        Client(Presence::Staying)
    }

    /// Resolves once the client has left (at once if it had), with when.
    pub async fn left(&mut self) -> tokio::time::Instant {
        match &mut self.0 {
            Presence::Waiting(gone) => {
                // Nothing is ever sent: only the end being dropped arrives.
                let _ = gone.await;
                let at = tokio::time::Instant::now();
                self.0 = Presence::Left(at);
                at
            }
            Presence::Left(at) => *at,
            Presence::Staying => std::future::pending().await,
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
/// kubelet's pulls carry no deadline, and one from a registry that accepts
/// connections and never answers would otherwise hold its slot for good.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A pull's request head, with `timeout` as its `grpc-timeout` when it
/// names none, so that containerd ends the pull (and answers
/// DEADLINE_EXCEEDED) once it passes.
pub fn with_pull_deadline(
    mut parts: http::request::Parts,
    timeout: Duration,
) -> http::request::Parts {
    if !parts.headers.contains_key("grpc-timeout") {
        // gRPC's timeout: at most eight digits of a unit.
        let seconds = timeout.as_secs().clamp(1, 99_999_999);
        if let Ok(value) = http::HeaderValue::from_str(&format!("{seconds}S")) {
            parts.headers.insert("grpc-timeout", value);
        }
    }
    parts
}

pub fn deadline(headers: &HeaderMap) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(120);
    const FLOOR: Duration = Duration::from_secs(2);
    grpc_timeout(headers).map_or(DEFAULT, |t| t.clamp(FLOOR, DEFAULT))
}

/// The call's `grpc-timeout`, as it says; none when it is missing or
/// unreadable.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 {
        return None;
    }
    let (amount, unit) = value.split_at(value.len() - 1);
    let amount = amount.parse::<u64>().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Runs `write`, which may block for long (a log on a slow or full disk,
/// a FIFO its reader has stopped reading), without holding up the tasks
/// queued on this worker of the runtime: its connection to containerd, the
/// other calls' decisions. They move to another thread meanwhile.
pub(crate) fn off_the_runtime<T>(write: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(write)
        }
        _ => write(),
    }
}

impl<R: ImageRuntime> Gate<R> {
    /// PullImage, run to its decision and to the removal of an image it
    /// denies even when the client leaves: the pull itself is then
    /// cancelled upstream, and what it brought is decided within
    /// [`pull::AFTER_THE_CLIENT_LEFT`] (see [`Gate::pull`]).
    pub async fn pull_to_the_end(
        self: Arc<Self>,
        api: Api,
        parts: Parts,
        body: Bytes,
    ) -> Result<Reply, ProxyError> {
        let in_progress = permits::InProgress::enter();
        let (waiting, mut client) = Client::new();
        let (answered, answer) = oneshot::channel();
        tokio::spawn(async move {
            let _in_progress = in_progress;
            let pulled = self.pull(api, parts, body, &mut client).await;
            if let Err(Err(e)) = answered.send(pulled)
                && !matches!(e, ProxyError::Denied(_) | ProxyError::Cancelled)
            {
                tracing::warn!(error = %e, "a pull whose client left failed");
            }
        });
        let answer = answer.await;
        drop(waiting);
        answer.map_err(|_| ProxyError::Internal("the call ended without an answer".into()))?
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

    /// [`Gate::decide`], with the registry signatures a pull already holds
    /// (`held`: the cache's, read by [`Gate::cached`], and what its lookup
    /// just brought, verified or not, so that the record says why one did
    /// not count) in place of a fresh read of the cache.
    pub fn decide_with(
        &self,
        subject: &Subject<'_>,
        reference: &str,
        image: &ImageRef,
        held: &[attestgate_policy::RegistryAttestation],
        started: Instant,
    ) -> Decision {
        subject.as_request(|request| {
            off_the_runtime(|| {
                self.decider
                    .decide_with(request, reference, image, held, started)
            })
        })
    }

    /// What the attestation cache holds for `image`, read once for all a
    /// pull asks of it.
    pub fn cached(&self, image: &ImageRef) -> Vec<attestgate_policy::RegistryAttestation> {
        off_the_runtime(|| self.decider.cached_attestations(image))
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
    pub fn pod_context(&self) -> attestgate_policy::PodContext {
        self.pod.map(Pod::context).unwrap_or_default()
    }

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
    fn a_pull_without_a_deadline_gets_one_and_one_with_keeps_its_own() {
        let (parts, ()) = http::Request::new(()).into_parts();
        let given = with_pull_deadline(parts, Duration::from_secs(1800));
        assert_eq!(given.headers["grpc-timeout"], "1800S");
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts
            .headers
            .insert("grpc-timeout", http::HeaderValue::from_static("20S"));
        let kept = with_pull_deadline(parts, Duration::from_secs(1800));
        assert_eq!(kept.headers["grpc-timeout"], "20S");
        assert_eq!(kept.headers.get_all("grpc-timeout").iter().count(), 1);
    }
}
