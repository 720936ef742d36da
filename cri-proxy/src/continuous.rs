//! Continuous validation (SPEC §12): every running container decided again
//! under the bundle in force, within seconds of a bundle or
//! attestation-cache change and every `cv_interval`.
//!
//! A container the policy would now deny gets one `ContinuousValidation`
//! record per pass; one still allowed writes nothing. With `cv_action =
//! "stop"` it is stopped too, unless its pod is admitted by break-glass;
//! kubelet's restart of it is then a CreateContainer, decided as any other.
//!
//! A pass runs in one task of its own, off the request path: its calls to
//! containerd are one at a time, on the connection forwarded calls use (a
//! lookup is a small unary call beside them), and paced to
//! [`CONTAINERS_PER_SECOND`], so a node of a thousand containers is done in
//! seconds without taking the runtime from kubelet.
//!
//! What runs is known from containerd, not from what the proxy saw: its
//! CRI list, each container's image as containerd recorded it at the
//! create, and its sandbox's pod. Containers made outside the CRI are the
//! shim's to decide, at Task.Create.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use attestgate_node::{Decider, Request, Revalidated, WouldDecide};
use attestgate_policy::{Decision, ImageRef, Operation};

use crate::config::CvAction;
use crate::cri::{Pod, is_image_id};
use crate::grpc::ProxyError;
use crate::intercept::create::carried;
use crate::metrics::Metrics;
use crate::resolve::ImageInfo;
use crate::upstream::{NOT_FOUND, UnaryError, Upstream};

/// How many containers a pass decides per second at most.
pub const CONTAINERS_PER_SECOND: u32 = 200;
/// How often the bundle in force and the attestation cache are looked at
/// for a change: "within seconds", at the cost of one stat.
const CHANGE_POLL: Duration = Duration::from_secs(2);
/// A pass containerd could not serve is tried again this much later.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Each call to containerd a pass makes.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// What a stopped container is given to exit, as Kubernetes' default
/// termination grace period.
const STOP_GRACE_SECONDS: i64 = 30;

/// A container containerd lists as running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    pub id: String,
    pub name: String,
    pub sandbox_id: String,
    /// The image id containerd recorded at the create.
    pub image_id: String,
}

/// The seam between continuous validation and containerd: the CRI in
/// production, a fake in unit tests and the benchmark.
pub trait Containers: Send + Sync + 'static {
    fn running(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<RunningContainer>, ProxyError>> + Send;
    /// Every sandbox's pod, by sandbox id.
    fn pods(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<HashMap<String, Pod>, ProxyError>> + Send;
    /// The name the container's image was asked for (the pod spec's when
    /// containerd kept it), `Ok(None)` once the container is gone.
    fn asked_image(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<String>, ProxyError>> + Send;
    fn image(
        &self,
        image_id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<ImageInfo>, ProxyError>> + Send;
    fn stop(
        &self,
        container_id: &str,
        grace_seconds: i64,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ProxyError>> + Send;
}

/// containerd's RuntimeService and ImageService, CRI v1 (containerd 1.6
/// and later serve it; only v1 carries the pod spec's image name).
#[derive(Clone)]
pub struct CriContainers {
    pub runtime: Upstream,
    pub images: Upstream,
}

macro_rules! path {
    ($service:literal, $method:literal) => {
        concat!("/runtime.v1.", $service, "/", $method)
    };
}

impl Containers for CriContainers {
    async fn running(&self, timeout: Duration) -> Result<Vec<RunningContainer>, ProxyError> {
        use k8s_cri::v1::{
            ContainerFilter, ContainerState, ContainerStateValue, ListContainersRequest,
            ListContainersResponse,
        };
        let request = ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                ..ContainerFilter::default()
            }),
        };
        let response: ListContainersResponse = self
            .runtime
            .unary(path!("RuntimeService", "ListContainers"), &request, timeout)
            .await
            .map_err(|e| e.into_proxy_error("ListContainers"))?;
        Ok(response
            .containers
            .into_iter()
            .map(|c| RunningContainer {
                name: c.metadata.map(|m| m.name).unwrap_or_default(),
                id: c.id,
                sandbox_id: c.pod_sandbox_id,
                image_id: c.image_ref,
            })
            .collect())
    }

    async fn pods(&self, timeout: Duration) -> Result<HashMap<String, Pod>, ProxyError> {
        use k8s_cri::v1::{ListPodSandboxRequest, ListPodSandboxResponse};
        let response: ListPodSandboxResponse = self
            .runtime
            .unary(
                path!("RuntimeService", "ListPodSandbox"),
                &ListPodSandboxRequest { filter: None },
                timeout,
            )
            .await
            .map_err(|e| e.into_proxy_error("ListPodSandbox"))?;
        Ok(response
            .items
            .into_iter()
            .map(|sandbox| {
                let m = sandbox.metadata.unwrap_or_default();
                let pod = Pod::new(
                    m.namespace,
                    m.name,
                    m.uid,
                    sandbox.labels,
                    sandbox.annotations,
                );
                (sandbox.id, pod)
            })
            .collect())
    }

    async fn asked_image(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<Option<String>, ProxyError> {
        use k8s_cri::v1::{ContainerStatusRequest, ContainerStatusResponse};
        // Verbose: the status's own image field is the image's first tag
        // as containerd lists it now, not the name asked for; the config
        // the container was created with is in the verbose info.
        let request = ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose: true,
        };
        let answer: Result<ContainerStatusResponse, _> = self
            .runtime
            .unary(
                path!("RuntimeService", "ContainerStatus"),
                &request,
                timeout,
            )
            .await;
        match answer {
            Ok(response) => {
                let from_status = response
                    .status
                    .and_then(|s| s.image)
                    .map(|spec| spec.user_specified_image)
                    .unwrap_or_default();
                let created_as = response
                    .info
                    .get("info")
                    .and_then(|info| asked_in_created_config(info));
                Ok(Some(created_as.unwrap_or(from_status)))
            }
            Err(UnaryError::Status {
                code: NOT_FOUND, ..
            }) => Ok(None),
            Err(e) => Err(e.into_proxy_error("ContainerStatus")),
        }
    }

    async fn image(
        &self,
        image_id: &str,
        timeout: Duration,
    ) -> Result<Option<ImageInfo>, ProxyError> {
        use k8s_cri::v1::{ImageSpec, ImageStatusRequest, ImageStatusResponse};
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image_id.to_string(),
                ..ImageSpec::default()
            }),
            verbose: false,
        };
        let response: ImageStatusResponse = self
            .images
            .unary(path!("ImageService", "ImageStatus"), &request, timeout)
            .await
            .map_err(|e| e.into_proxy_error("ImageStatus"))?;
        Ok(response.image.map(|i| ImageInfo {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
        }))
    }

    async fn stop(
        &self,
        container_id: &str,
        grace_seconds: i64,
        timeout: Duration,
    ) -> Result<(), ProxyError> {
        use k8s_cri::v1::{StopContainerRequest, StopContainerResponse};
        let request = StopContainerRequest {
            container_id: container_id.to_string(),
            timeout: grace_seconds,
        };
        let _: StopContainerResponse = self
            .runtime
            .unary(path!("RuntimeService", "StopContainer"), &request, timeout)
            .await
            .map_err(|e| e.into_proxy_error("StopContainer"))?;
        Ok(())
    }
}

/// The image name a container's create asked for, from the config
/// containerd keeps in its verbose status (`config.image`): the pod spec's
/// name when containerd kept it, else the image field when it is a name
/// (empty when it is an image id, which names nothing). None when the
/// info holds no such config.
pub fn asked_in_created_config(info: &str) -> Option<String> {
    let info: serde_json::Value = serde_json::from_str(info).ok()?;
    let image = info.get("config")?.get("image")?;
    let field = |name: &str| {
        image
            .get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let asked = field("user_specified_image")
        .or_else(|| field("userSpecifiedImage"))
        .or_else(|| field("image").filter(|name| !is_image_id(name)))
        .unwrap_or_default();
    Some(asked.to_string())
}

/// How one running container fared in a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Not decided: containerd could not say what it runs, or no valid
    /// bundle is in force. Nothing is recorded or stopped.
    Unknown,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Allowed => "allow",
            Verdict::Denied => "deny",
            Verdict::Unknown => "unknown",
        }
    }
}

/// What one pass found, by verdict.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassSummary {
    pub allowed: u64,
    pub denied: u64,
    pub unknown: u64,
    pub stopped: u64,
}

impl PassSummary {
    fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Allowed => self.allowed += 1,
            Verdict::Denied => self.denied += 1,
            Verdict::Unknown => self.unknown += 1,
        }
    }
}

pub struct Validator<C> {
    pub decider: Arc<Decider>,
    pub containers: C,
    pub metrics: Arc<Metrics>,
    pub action: CvAction,
    pub interval: Duration,
    /// The attestation cache's directory, when decisions read it: a change
    /// there is a reason to decide again.
    pub attestation_cache: Option<PathBuf>,
    pub rate: u32,
    /// Containers recorded as denied, with the bundle that denied them.
    pub recorded: Mutex<HashMap<String, String>>,
}

/// Which denied containers a pass records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recording {
    /// Every one: at start, on the interval, under a new bundle.
    Every,
    /// Those not recorded as denied under the same bundle before.
    NewOnly,
}

/// What a change is noticed by: the bundle in force and the cache
/// directory's modification time (every entry is written by a rename into
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    bundle: Option<String>,
    cache: Option<SystemTime>,
}

impl<C: Containers> Validator<C> {
    /// Passes for as long as the proxy runs: one at start, then on every
    /// change and every interval.
    pub async fn run(self) {
        let mut seen = self.inputs();
        let mut next = self.next_pass(self.pass().await.is_some());
        let mut poll = tokio::time::interval(CHANGE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            poll.tick().await;
            let now = self.inputs();
            let due = tokio::time::Instant::now() >= next;
            if now == seen && !due {
                continue;
            }
            // A cache entry is written at every pull that finds
            // signatures: such a pass records only what it newly finds
            // denied, or the log would repeat every denial each time.
            let recording = if due || now.bundle != seen.bundle {
                Recording::Every
            } else {
                Recording::NewOnly
            };
            if now != seen {
                tracing::info!(
                    "the bundle or the attestation cache changed; running containers are decided again"
                );
            }
            seen = now;
            let done = self.pass_recording(recording).await.is_some();
            if due || recording == Recording::Every {
                next = self.next_pass(done);
            }
        }
    }

    /// When the next pass is due without a change: after the interval, or
    /// soon after one containerd could not serve (it may be starting).
    fn next_pass(&self, done: bool) -> tokio::time::Instant {
        let wait = if done {
            self.interval
        } else {
            RETRY_AFTER.min(self.interval)
        };
        let now = tokio::time::Instant::now();
        now.checked_add(wait).unwrap_or(now + RETRY_AFTER)
    }

    fn inputs(&self) -> Inputs {
        Inputs {
            bundle: self
                .decider
                .store
                .current()
                .map(|c| c.reference.digest.clone()),
            cache: self
                .attestation_cache
                .as_ref()
                .and_then(|dir| std::fs::metadata(dir).and_then(|m| m.modified()).ok()),
        }
    }

    /// Decides every running container once, recording every one denied;
    /// None when containerd could not list them.
    pub async fn pass(&self) -> Option<PassSummary> {
        self.pass_recording(Recording::Every).await
    }

    async fn pass_recording(&self, recording: Recording) -> Option<PassSummary> {
        let started = Instant::now();
        let mut summary = PassSummary::default();
        let listed = match self.containers.running(CALL_TIMEOUT).await {
            Ok(listed) => listed,
            Err(e) => {
                self.metrics.cv_errors.inc();
                tracing::warn!(error = %e, "continuous validation cannot list the running containers; the pass is skipped");
                return None;
            }
        };
        let pods = match self.containers.pods(CALL_TIMEOUT).await {
            Ok(pods) => pods,
            Err(e) => {
                self.metrics.cv_errors.inc();
                tracing::warn!(error = %e, "continuous validation cannot list the pods; the pass is skipped");
                return None;
            }
        };
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.retain(|id, _| listed.iter().any(|c| &c.id == id));
        }
        self.report_config_errors();
        let mut images: HashMap<String, Option<ImageInfo>> = HashMap::new();
        // Unpaced only where a rate is too high to be a bound at all.
        let period = Duration::from_secs(1) / self.rate.max(1);
        let mut pace = (period >= Duration::from_micros(1)).then(|| {
            let mut pace = tokio::time::interval(period);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            pace
        });
        for container in &listed {
            if let Some(pace) = pace.as_mut() {
                pace.tick().await;
            }
            let verdict = self
                .revalidate(
                    container,
                    pods.get(&container.sandbox_id),
                    &mut images,
                    &mut summary,
                    recording,
                )
                .await;
            summary.count(verdict);
        }
        let by_verdict = [
            (Verdict::Allowed.label(), summary.allowed),
            (Verdict::Denied.label(), summary.denied),
            (Verdict::Unknown.label(), summary.unknown),
        ];
        self.metrics.cv_pass(by_verdict, started.elapsed());
        tracing::info!(
            containers = listed.len(),
            allowed = summary.allowed,
            denied = summary.denied,
            unknown = summary.unknown,
            stopped = summary.stopped,
            took = ?started.elapsed(),
            "continuous validation pass done"
        );
        Some(summary)
    }

    /// The platform policy's checks the node cannot evaluate, on every
    /// pass (they never pass, so what they cover is denied).
    fn report_config_errors(&self) {
        let errors = self
            .decider
            .store
            .current()
            .and_then(|c| c.bundle.platform_policy().map(|p| p.config_errors()))
            .unwrap_or_default();
        self.metrics
            .cv_platform_config_errors
            .set(i64::try_from(errors.len()).unwrap_or(i64::MAX));
        for error in &errors {
            tracing::warn!(error = %error, "platform policy configuration error: the check never passes");
        }
    }

    async fn revalidate(
        &self,
        container: &RunningContainer,
        pod: Option<&Pod>,
        images: &mut HashMap<String, Option<ImageInfo>>,
        summary: &mut PassSummary,
        recording: Recording,
    ) -> Verdict {
        let info = match images.get(&container.image_id) {
            Some(known) => known.clone(),
            None => match self
                .containers
                .image(&container.image_id, CALL_TIMEOUT)
                .await
            {
                Ok(found) => {
                    images.insert(container.image_id.clone(), found.clone());
                    found
                }
                Err(e) => {
                    self.metrics.cv_errors.inc();
                    tracing::warn!(container = %container.id, image = %container.image_id, error = %e, "continuous validation cannot look up a running container's image");
                    return Verdict::Unknown;
                }
            },
        };
        let Some(info) = info else {
            // Its image removed from under it: what runs is still that
            // image, and nothing on the node can tell what it was.
            tracing::warn!(container = %container.id, image = %container.image_id, "a running container's image is no longer on the node; it is not decided");
            return Verdict::Unknown;
        };
        let asked = match self
            .containers
            .asked_image(&container.id, CALL_TIMEOUT)
            .await
        {
            Ok(Some(asked)) => asked,
            // Gone since the list.
            Ok(None) => return Verdict::Unknown,
            Err(e) => {
                self.metrics.cv_errors.inc();
                tracing::warn!(container = %container.id, error = %e, "continuous validation cannot read a running container's status");
                return Verdict::Unknown;
            }
        };
        let Some(pod) = pod else {
            // Its sandbox gone since the list, or never listed: without its
            // namespace and annotations (break-glass), the default rule
            // would decide a pod that may have another.
            tracing::warn!(container = %container.id, sandbox = %container.sandbox_id, "a running container's pod sandbox is not listed; it is not decided");
            return Verdict::Unknown;
        };
        let context = pod.context();
        let record = pod.record();
        let decided = crate::intercept::off_the_runtime(|| self.decide(&asked, &info, &context));
        let Some(WouldDecide {
            decision,
            bundle,
            admission_denies,
        }) = decided
        else {
            return Verdict::Unknown;
        };
        if decision.allowed {
            self.forget(&container.id);
            return Verdict::Allowed;
        }
        if recording == Recording::NewOnly && self.known(&container.id, &bundle) {
            return Verdict::Denied;
        }
        let stop = self.action == CvAction::Stop && !context.break_glass() && admission_denies;
        let action = if stop {
            "stop"
        } else if self.action == CvAction::Stop && !admission_denies {
            // kubelet would only create it again: admission lets it in.
            "logged: admission does not enforce the platform policy"
        } else {
            "logged"
        };
        let request = Request {
            operation: Operation::ContinuousValidation,
            pod: &context,
            pod_ref: Some(&record),
            container: Some(&container.name),
        };
        let revalidated = Revalidated {
            container_id: &container.id,
            action,
        };
        let recorded = crate::intercept::off_the_runtime(|| {
            self.decider.record_revalidation(
                &request,
                decision,
                &bundle,
                revalidated,
                Instant::now(),
            )
        });
        if !recorded {
            // Nothing is stopped unrecorded; the next pass tries again.
            tracing::error!(container = %container.id, "a container the policy denies is not stopped: its record could not be written");
            return Verdict::Denied;
        }
        self.remember(&container.id, &bundle);
        if stop {
            let bound = CALL_TIMEOUT + Duration::from_secs(STOP_GRACE_SECONDS.unsigned_abs());
            match self
                .containers
                .stop(&container.id, STOP_GRACE_SECONDS, bound)
                .await
            {
                Ok(()) => {
                    summary.stopped += 1;
                    self.metrics.cv_stopped.inc();
                }
                Err(e) => {
                    self.metrics.cv_errors.inc();
                    // Recorded again and stopped at the next pass that
                    // records everything.
                    self.forget(&container.id);
                    tracing::error!(container = %container.id, error = %e, "a container the policy denies could not be stopped");
                }
            }
        }
        Verdict::Denied
    }

    /// Whether `container` was recorded as denied under `bundle` already.
    fn known(&self, container: &str, bundle: &attestgate_node::LoadedBundle) -> bool {
        self.recorded
            .lock()
            .is_ok_and(|r| r.get(container) == Some(&bundle.reference.digest))
    }

    fn remember(&self, container: &str, bundle: &attestgate_node::LoadedBundle) {
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.insert(container.to_string(), bundle.reference.digest.clone());
        }
    }

    fn forget(&self, container: &str) {
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.remove(container);
        }
    }

    /// As CreateContainer decides: by the name asked for as far as the
    /// image carries it, else by each repository digest it has (allowed
    /// when one is). None when it cannot be told (see
    /// [`Decider::would_decide`]).
    fn decide(
        &self,
        asked: &str,
        info: &ImageInfo,
        pod: &attestgate_policy::PodContext,
    ) -> Option<WouldDecide> {
        if !asked.is_empty()
            && !is_image_id(asked)
            && let Ok(name) = ImageRef::parse(asked)
            && let Some(resolved) = carried(info, &name)
        {
            return self.decider.would_decide(asked, &resolved, pod);
        }
        let mut last = None;
        for repo_digest in &info.repo_digests {
            let Ok(image) = ImageRef::parse(repo_digest) else {
                continue;
            };
            let decided = self.decider.would_decide(repo_digest, &image, pod)?;
            if decided.decision.allowed {
                return Some(decided);
            }
            last = Some(decided);
        }
        // No digest to decide by: as the create would, refused.
        last.or_else(|| {
            let bundle = self
                .decider
                .store
                .current()
                .filter(|b| b.lapsed(time::OffsetDateTime::now_utc()).is_none())?;
            let subject = attestgate_policy::ImageSubject {
                reference: asked.to_string(),
                repository: None,
                digest: None,
            };
            let decision = Decision::error(
                subject,
                format!("image {} has no repository digest to decide", info.id),
            );
            let decision = if pod.break_glass() {
                decision.broken_glass()
            } else {
                decision
            };
            let admission_denies = !decision.allowed;
            Some(WouldDecide {
                decision,
                bundle,
                admission_denies,
            })
        })
    }
}

/// Containers held in memory, for unit tests and the benchmark: what a
/// pass reads, and the stops it asked for.
pub mod fake {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::{Containers, RunningContainer};
    use crate::cri::Pod;
    use crate::grpc::ProxyError;
    use crate::resolve::ImageInfo;

    #[derive(Default)]
    pub struct FakeContainers {
        pub running: Vec<RunningContainer>,
        pub pods: HashMap<String, Pod>,
        /// The name each container's image was asked for, by container id.
        pub asked: HashMap<String, String>,
        pub images: HashMap<String, ImageInfo>,
        pub stopped: Mutex<Vec<String>>,
    }

    impl FakeContainers {
        /// A container `id` in sandbox `sandbox` of `pod`, running `image`
        /// as asked for by `asked`.
        pub fn add(&mut self, id: &str, sandbox: &str, pod: Pod, asked: &str, image: ImageInfo) {
            self.running.push(RunningContainer {
                id: id.to_string(),
                name: format!("{id}-name"),
                sandbox_id: sandbox.to_string(),
                image_id: image.id.clone(),
            });
            self.pods.insert(sandbox.to_string(), pod);
            self.asked.insert(id.to_string(), asked.to_string());
            self.images.insert(image.id.clone(), image);
        }

        pub fn stopped(&self) -> Vec<String> {
            self.stopped.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    impl Containers for FakeContainers {
        async fn running(&self, _: Duration) -> Result<Vec<RunningContainer>, ProxyError> {
            Ok(self.running.clone())
        }

        async fn pods(&self, _: Duration) -> Result<HashMap<String, Pod>, ProxyError> {
            Ok(self.pods.clone())
        }

        async fn asked_image(&self, id: &str, _: Duration) -> Result<Option<String>, ProxyError> {
            Ok(self.asked.get(id).cloned())
        }

        async fn image(&self, id: &str, _: Duration) -> Result<Option<ImageInfo>, ProxyError> {
            Ok(self.images.get(id).cloned())
        }

        async fn stop(&self, id: &str, _: i64, _: Duration) -> Result<(), ProxyError> {
            if let Ok(mut stopped) = self.stopped.lock() {
                stopped.push(id.to_string());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::fake::FakeContainers;
    use super::*;
    use attestgate_node::{AuditLog, BundleStore, FailMode};
    use attestgate_policy::Settings;

    const REPO: &str = "reg.example/team/app";
    const GLASS: &str = "alpha.image-policy.k8s.io/break-glass";

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// An image of REPO tagged `tag`, with digest `d`.
    fn image(tag: &str, d: char) -> ImageInfo {
        ImageInfo {
            // The config's digest: not the manifest's.
            id: format!("sha256:{}{d}", "f".repeat(63)),
            repo_tags: vec![format!("{REPO}:{tag}")],
            repo_digests: vec![format!("{REPO}@{}", digest(d))],
        }
    }

    fn pod(name: &str) -> Pod {
        Pod {
            namespace: "prod".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            ..Pod::default()
        }
    }

    /// Admits the tag `:good` by name and denies everything else.
    const ALLOW_GOOD: &str = "admissionWhitelistPatterns:\n- namePattern: reg.example/team/app:good\ndefaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n";
    const ALLOW_ALL: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n";

    struct Node {
        dir: tempfile::TempDir,
        store: Arc<BundleStore>,
        decider: Arc<Decider>,
        metrics: Arc<Metrics>,
    }

    impl Node {
        fn new(policy: &str) -> Node {
            let dir = tempfile::tempdir().unwrap();
            let metrics = Arc::new(Metrics::new());
            let bundle = dir.path().join("bundle");
            std::fs::create_dir_all(&bundle).unwrap();
            if !policy.is_empty() {
                std::fs::write(bundle.join("policy.yaml"), policy).unwrap();
            }
            let store = Arc::new(BundleStore::new(bundle, metrics.clone()));
            store.reload(true);
            let decider = Arc::new(Decider::new(
                store.clone(),
                Settings::default(),
                FailMode::Closed,
                AuditLog::open(&dir.path().join("audit.jsonl")).unwrap(),
                metrics.clone(),
            ));
            Node {
                dir,
                store,
                decider,
                metrics,
            }
        }

        fn policy(&self, policy: &str) {
            std::fs::write(self.dir.path().join("bundle/policy.yaml"), policy).unwrap();
            self.store.reload(true);
        }

        fn validator(
            &self,
            containers: FakeContainers,
            action: CvAction,
        ) -> Validator<FakeContainers> {
            Validator {
                decider: self.decider.clone(),
                containers,
                metrics: self.metrics.clone(),
                action,
                interval: Duration::from_secs(3600),
                attestation_cache: None,
                rate: 10_000,
                recorded: Mutex::default(),
            }
        }

        fn audit(&self) -> Vec<serde_json::Value> {
            std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    /// One container admitted by its tag, one whose tag the policy does
    /// not allow, one in a break-glass pod.
    fn three_containers() -> FakeContainers {
        let mut containers = FakeContainers::default();
        containers.add(
            "good",
            "s1",
            pod("good"),
            &format!("{REPO}:good"),
            image("good", 'a'),
        );
        containers.add(
            "bad",
            "s2",
            pod("bad"),
            &format!("{REPO}:bad"),
            image("bad", 'b'),
        );
        let mut glass = pod("glass");
        glass.annotations.insert(GLASS.into(), "true".into());
        containers.add(
            "glass",
            "s3",
            glass,
            &format!("{REPO}:bad"),
            image("bad", 'b'),
        );
        containers
    }

    #[tokio::test]
    async fn a_denied_container_gets_one_record_and_an_allowed_one_none() {
        let node = Node::new(ALLOW_GOOD);
        let validator = node.validator(three_containers(), CvAction::Log);
        let summary = validator.pass().await.unwrap();
        assert_eq!(
            summary,
            PassSummary {
                allowed: 2,
                denied: 1,
                unknown: 0,
                stopped: 0
            }
        );
        let audit = node.audit();
        assert_eq!(audit.len(), 1, "{audit:#?}");
        let record = &audit[0];
        assert_eq!(record["operation"], "ContinuousValidation");
        assert_eq!(record["decision"], "deny");
        assert_eq!(record["reason"], "ALWAYS_DENY");
        assert_eq!(record["container_id"], "bad");
        assert_eq!(record["container"], "bad-name");
        assert_eq!(record["action"], "logged");
        assert_eq!(record["pod"]["name"], "bad");
        assert_eq!(record["image"]["reference"], format!("{REPO}:bad"));
        assert_eq!(record["image"]["digest"], digest('b'));
        assert!(validator.containers.stopped().is_empty());
        // Each pass records again what it finds.
        validator.pass().await.unwrap();
        assert_eq!(node.audit().len(), 2);
    }

    #[tokio::test]
    async fn stop_stops_what_is_denied_and_never_a_break_glass_pod() {
        let node = Node::new(ALLOW_GOOD);
        let validator = node.validator(three_containers(), CvAction::Stop);
        let summary = validator.pass().await.unwrap();
        assert_eq!(summary.stopped, 1);
        assert_eq!(validator.containers.stopped(), vec!["bad".to_string()]);
        let audit = node.audit();
        assert_eq!(audit.len(), 1, "{audit:#?}");
        assert_eq!(audit[0]["action"], "stop");
    }

    #[tokio::test]
    async fn a_name_the_image_does_not_carry_lends_it_nothing() {
        let node = Node::new(ALLOW_GOOD);
        let mut containers = FakeContainers::default();
        // Asked for as `:good`, but the image goes by `:bad` only: decided
        // by its digest, which nothing allows.
        containers.add(
            "c",
            "s",
            pod("p"),
            &format!("{REPO}:good"),
            image("bad", 'b'),
        );
        let validator = node.validator(containers, CvAction::Log);
        assert_eq!(validator.pass().await.unwrap().denied, 1);
        let audit = node.audit();
        assert_eq!(audit[0]["image"]["digest"], digest('b'));
        assert_eq!(audit[0]["reason"], "ALWAYS_DENY");
    }

    #[tokio::test]
    async fn without_a_valid_bundle_nothing_is_decided_or_stopped() {
        let node = Node::new("");
        assert!(node.store.current().is_none());
        let validator = node.validator(three_containers(), CvAction::Stop);
        let summary = validator.pass().await.unwrap();
        assert_eq!(summary.unknown, 3, "{summary:?}");
        assert!(node.audit().is_empty());
        assert!(validator.containers.stopped().is_empty());
    }

    #[tokio::test]
    async fn an_image_gone_from_the_node_is_not_decided() {
        let node = Node::new(ALLOW_GOOD);
        let mut containers = three_containers();
        containers.images.clear();
        let validator = node.validator(containers, CvAction::Stop);
        assert_eq!(validator.pass().await.unwrap().unknown, 3);
        assert!(node.audit().is_empty());
    }

    #[tokio::test]
    async fn the_platform_policy_counts_though_admission_does_not_enforce_it() {
        let node = Node::new(ALLOW_ALL);
        // The pods in namespace `prod` meet a check set that denies, and a
        // check the node cannot evaluate.
        std::fs::write(
            node.dir.path().join("bundle/platform-policy.yaml"),
            "gkePolicy:\n  checkSets:\n  - displayName: prod\n    scope:\n      kubernetesNamespace: prod\n    checks:\n    - displayName: nothing-runs\n      alwaysDeny: true\n    - displayName: scanned\n      vulnerabilityCheck:\n        maximumFixableSeverity: MEDIUM\n  - displayName: rest\n    checks:\n    - imageAllowlist:\n        allowPattern: ['**']\n",
        )
        .unwrap();
        node.store.reload(true);
        assert!(!node.decider.evaluation.platform_policy_enforce);
        let mut containers = FakeContainers::default();
        containers.add(
            "p",
            "s1",
            pod("in-prod"),
            &format!("{REPO}:good"),
            image("good", 'a'),
        );
        let mut elsewhere = pod("elsewhere");
        elsewhere.namespace = "dev".into();
        containers.add(
            "d",
            "s2",
            elsewhere,
            &format!("{REPO}:good"),
            image("good", 'a'),
        );
        let validator = node.validator(containers, CvAction::Log);
        let summary = validator.pass().await.unwrap();
        assert_eq!((summary.allowed, summary.denied), (1, 1), "{summary:?}");
        let audit = node.audit();
        assert_eq!(audit.len(), 1, "{audit:#?}");
        assert_eq!(audit[0]["container_id"], "p");
        assert_eq!(audit[0]["reason"], "PLATFORM_POLICY");
        assert_eq!(audit[0]["platform_policy"]["check_set"], "prod");
        let errors = audit[0]["platform_policy"]["config_errors"].to_string();
        assert!(errors.contains("scanned"), "{errors}");
        assert_eq!(node.metrics.cv_platform_config_errors.get(), 1);
    }

    #[tokio::test]
    async fn a_platform_policy_admission_does_not_enforce_is_logged_not_stopped() {
        let node = Node::new(ALLOW_ALL);
        std::fs::write(
            node.dir.path().join("bundle/platform-policy.yaml"),
            "gkePolicy:\n  checkSets:\n  - displayName: nothing\n    checks:\n    - alwaysDeny: true\n",
        )
        .unwrap();
        node.store.reload(true);
        let validator = node.validator(three_containers(), CvAction::Stop);
        let summary = validator.pass().await.unwrap();
        // The break-glass pod is allowed; the other two flagged, not
        // stopped: kubelet would only create them again.
        assert_eq!((summary.denied, summary.stopped), (2, 0), "{summary:?}");
        assert!(validator.containers.stopped().is_empty());
        for record in node.audit() {
            assert_eq!(
                record["action"],
                "logged: admission does not enforce the platform policy"
            );
        }
    }

    #[tokio::test]
    async fn an_unreadable_cache_entry_or_a_missing_sandbox_decides_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("policy.yaml"), ALLOW_GOOD).unwrap();
        let store = Arc::new(BundleStore::new(bundle, metrics.clone()));
        store.reload(true);
        let cache = attestgate_node::AttestationCache::new(dir.path().join("cache"));
        let settings = Settings {
            registry_attestors: attestgate_policy::RegistryAttestors::All,
            ..Settings::default()
        };
        let decider = Arc::new(
            Decider::new(
                store,
                settings,
                FailMode::Closed,
                AuditLog::open(&dir.path().join("audit.jsonl")).unwrap(),
                metrics.clone(),
            )
            .with_attestation_cache(cache.clone()),
        );
        let bad = attestgate_policy::Digest::parse(&digest('b')).unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        std::fs::write(cache.path_for(&bad), b"{not json").unwrap();
        let mut containers = three_containers();
        // `good`'s sandbox is gone from the list.
        containers.pods.remove("s1");
        let validator = Validator {
            decider,
            containers,
            metrics,
            action: CvAction::Stop,
            interval: Duration::from_secs(3600),
            attestation_cache: None,
            rate: 10_000,
            recorded: Mutex::default(),
        };
        let summary = validator.pass().await.unwrap();
        // `good`: no pod; `bad` and `glass`: their image's entry unreadable.
        assert_eq!(summary.unknown, 3, "{summary:?}");
        assert!(validator.containers.stopped().is_empty());
        let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default();
        assert!(audit.is_empty(), "{audit}");
    }

    #[tokio::test]
    async fn a_pass_after_a_cache_change_records_only_new_denials() {
        let node = Node::new(ALLOW_GOOD);
        let validator = node.validator(three_containers(), CvAction::Log);
        validator.pass().await.unwrap();
        assert_eq!(node.audit().len(), 1);
        let again = validator.pass_recording(Recording::NewOnly).await.unwrap();
        assert_eq!(again.denied, 1, "still counted as denied");
        assert_eq!(node.audit().len(), 1, "not recorded twice");
        // Under a new bundle, recorded again.
        node.policy(&format!("{ALLOW_GOOD}# changed\n"));
        validator.pass_recording(Recording::NewOnly).await.unwrap();
        assert_eq!(node.audit().len(), 2);
    }

    #[test]
    fn the_name_asked_for_is_read_from_the_config_the_container_was_created_with() {
        let info = |image: &str| {
            format!(
                r#"{{"sandboxID":"s","config":{{"metadata":{{"name":"app"}},"image":{image}}}}}"#
            )
        };
        assert_eq!(
            asked_in_created_config(&info(
                r#"{"image":"sha256:1111111111111111111111111111111111111111111111111111111111111111","user_specified_image":"reg.example/app:1"}"#
            )),
            Some("reg.example/app:1".into())
        );
        assert_eq!(
            asked_in_created_config(&info(r#"{"image":"reg.example/app:2"}"#)),
            Some("reg.example/app:2".into())
        );
        // An image id names nothing: decided by the repository digests.
        assert_eq!(
            asked_in_created_config(&info(
                r#"{"image":"sha256:1111111111111111111111111111111111111111111111111111111111111111"}"#
            )),
            Some(String::new())
        );
        assert_eq!(asked_in_created_config("{}"), None);
        assert_eq!(asked_in_created_config("not json"), None);
    }

    #[tokio::test]
    async fn a_bundle_change_is_decided_within_seconds() {
        let node = Node::new(ALLOW_ALL);
        let validator = node.validator(three_containers(), CvAction::Log);
        let running = tokio::spawn(validator.run());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(node.audit().is_empty(), "everything is allowed at first");
        node.policy(ALLOW_GOOD);
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.audit().is_empty() {
            assert!(
                Instant::now() < deadline,
                "no pass after the bundle changed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.abort();
        let audit = node.audit();
        assert_eq!(audit.len(), 1, "{audit:#?}");
        assert_eq!(audit[0]["container_id"], "bad");
    }
}
