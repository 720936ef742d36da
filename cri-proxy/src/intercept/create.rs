//! CreateContainer: the authoritative check. It covers images already on
//! the node however they got there. The name decided is the one the request
//! asked for; only a bare image id falls back to the image's repo digests.

use std::sync::Arc;
use std::time::Instant;

use attestgate_policy::{Decision, ImageRef, Operation};
use bytes::Bytes;
use http::request::Parts;
use prost::Message as _;

use super::pull::{pod_v1, pod_v1alpha2};
use super::{CREATES, Gate, Subject, deadline, to_the_end};
use crate::cri::{Api, Pod, digest_for, is_image_id};
use crate::grpc::{self, ProxyError};
use crate::resolve::{ImageInfo, ImageRuntime};
use crate::upstream::{FullResponse, Reply, RequestBody};

#[derive(Clone)]
pub struct CreateRequest {
    /// `config.image.image`: an image id, a digest reference or a tag.
    pub image: String,
    /// `config.image.user_specified_image` (kubelet 1.28+): the pod spec's name.
    pub user_specified_image: String,
    pub container: String,
    pub attempt: u32,
    pub pod_sandbox_id: String,
    /// The request's copy of the sandbox config: the client's word only.
    pub pod: Pod,
}

impl CreateRequest {
    /// The container's name for the record, when the request gives one.
    fn container_name(&self) -> Option<&str> {
        (!self.container.is_empty()).then_some(self.container.as_str())
    }
}

pub fn decode(api: Api, message: &[u8]) -> Result<CreateRequest, ProxyError> {
    let bad =
        |e: prost::DecodeError| ProxyError::BadRequest(format!("CreateContainerRequest: {e}"));
    Ok(match api {
        Api::V1 => {
            let r = k8s_cri::v1::CreateContainerRequest::decode(message).map_err(bad)?;
            let config = r.config.unwrap_or_default();
            let spec = config.image.unwrap_or_default();
            CreateRequest {
                image: spec.image,
                user_specified_image: spec.user_specified_image,
                attempt: config.metadata.as_ref().map_or(0, |m| m.attempt),
                container: config.metadata.map(|m| m.name).unwrap_or_default(),
                pod_sandbox_id: r.pod_sandbox_id,
                pod: r.sandbox_config.map(pod_v1).unwrap_or_default(),
            }
        }
        Api::V1alpha2 => {
            let r = k8s_cri::v1alpha2::CreateContainerRequest::decode(message).map_err(bad)?;
            let config = r.config.unwrap_or_default();
            let spec = config.image.unwrap_or_default();
            CreateRequest {
                image: spec.image,
                user_specified_image: String::new(),
                attempt: config.metadata.as_ref().map_or(0, |m| m.attempt),
                container: config.metadata.map(|m| m.name).unwrap_or_default(),
                pod_sandbox_id: r.pod_sandbox_id,
                pod: r.sandbox_config.map(pod_v1alpha2).unwrap_or_default(),
            }
        }
    })
}

/// A CreateContainer decision, and what it was made on when the image was
/// found: the image and the sandbox's pod.
struct Checked {
    decision: Decision,
    on: Option<(ImageInfo, Pod)>,
}

impl From<Decision> for Checked {
    fn from(decision: Decision) -> Checked {
        Checked { decision, on: None }
    }
}

/// The id of the container a successful CreateContainer response names.
fn created_container_id(api: Api, data: Bytes) -> Result<String, ProxyError> {
    let message = grpc::single_message(data)
        .map_err(|e| ProxyError::Internal(format!("CreateContainer response: {e}")))?;
    let bad = |e: prost::DecodeError| ProxyError::Internal(format!("CreateContainerResponse: {e}"));
    Ok(match api {
        Api::V1 => {
            k8s_cri::v1::CreateContainerResponse::decode(message)
                .map_err(bad)?
                .container_id
        }
        Api::V1alpha2 => {
            k8s_cri::v1alpha2::CreateContainerResponse::decode(message)
                .map_err(bad)?
                .container_id
        }
    })
}

/// How many times a container created from an image that was not admitted
/// is asked to be removed before it is left to the node's shim and to
/// kubelet's garbage collection.
const REMOVE_ATTEMPTS: u32 = 3;

impl<R: ImageRuntime> Gate<R> {
    pub async fn create(
        self: Arc<Self>,
        api: Api,
        parts: Parts,
        body: Bytes,
    ) -> Result<Reply, ProxyError> {
        let started = Instant::now();
        let request = decode(api, &grpc::single_message(body.clone())?)?;
        let checked = self.check_create(api, &request, &parts, started).await;
        super::pull::settle(&checked.decision)?;
        // An image id names one image for good. A name is looked up again
        // by containerd at the create, and may have been moved to another
        // image since our look-up (a pull of the same tag, racing): the
        // container is checked for the image it was really created from.
        let Some((image, pod)) = checked.on.filter(|_| !is_image_id(&request.image)) else {
            return self.forward(parts, body).await;
        };
        to_the_end(&CREATES, async move {
            self.create_and_confirm(api, request, parts, body, image, pod, started)
                .await
        })
        .await
    }

    /// Forwards a create by name and checks the container it made.
    #[allow(clippy::too_many_arguments)]
    async fn create_and_confirm(
        &self,
        api: Api,
        request: CreateRequest,
        parts: Parts,
        body: Bytes,
        decided: ImageInfo,
        pod: Pod,
        started: Instant,
    ) -> Result<Reply, ProxyError> {
        let timeout = deadline(&parts.headers);
        let _checking = self.checking(timeout).await?;
        let created = match self
            .upstream
            .call(
                http::Request::from_parts(parts, ()),
                RequestBody::Full(body),
            )
            .await
        {
            Ok(response) => FullResponse::read(response).await,
            Err(e) => Err(e),
        };
        let (container_id, outcome) = match created {
            Ok(created) if created.grpc_status() != Some(0) => return Ok(Reply::Full(created)),
            Ok(created) => match created_container_id(api, created.data.clone()) {
                Ok(id) => (Some(id), Ok(Reply::Full(created))),
                Err(e) => (None, Err(e)),
            },
            Err(e) => (None, Err(e)),
        };
        let container_ids = match container_id {
            Some(id) => vec![id],
            // No reply, or none we can read (containerd went away in the
            // middle of the call, say): a container may have been made all
            // the same, and is found by the name the request gave it.
            None => match self.find_created(api, &request, timeout).await {
                Ok(ids) if ids.is_empty() => return outcome,
                Ok(ids) => ids,
                Err(e) => {
                    self.metrics.cleanup_errors.inc();
                    tracing::error!(container = %request.container, sandbox = %request.pod_sandbox_id, error = %e, "a create by name failed, and whether containerd made the container cannot be told");
                    return outcome;
                }
            },
        };
        let subject = Subject {
            operation: Operation::CreateContainer,
            pod: Some(&pod),
            container: request.container_name(),
        };
        // Every one is checked, even after one is refused.
        let mut refused = Ok(());
        for container_id in &container_ids {
            let confirmed = self
                .confirm_created(
                    api,
                    &request,
                    &subject,
                    &decided,
                    container_id,
                    timeout,
                    started,
                )
                .await;
            refused = refused.and(confirmed);
        }
        refused?;
        outcome
    }

    /// The containers a create whose reply was lost may have made, by the
    /// name it gave them; asked a few times, since containerd may still be
    /// making it, or be back from a restart only in a moment.
    async fn find_created(
        &self,
        api: Api,
        request: &CreateRequest,
        timeout: std::time::Duration,
    ) -> Result<Vec<String>, ProxyError> {
        let mut last = Ok(Vec::new());
        for pause_ms in [0, 500, 1500] {
            tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
            last = self
                .runtime
                .containers_named(
                    api,
                    &request.pod_sandbox_id,
                    &request.container,
                    request.attempt,
                    timeout,
                )
                .await;
            if last.as_ref().is_ok_and(|ids| !ids.is_empty()) {
                break;
            }
        }
        last
    }

    /// Whether the container was created from the image that was decided;
    /// if not, the image it was created from is decided, and the container
    /// removed unless that one is admitted too.
    #[allow(clippy::too_many_arguments)]
    async fn confirm_created(
        &self,
        api: Api,
        request: &CreateRequest,
        subject: &Subject<'_>,
        decided: &ImageInfo,
        container_id: &str,
        timeout: std::time::Duration,
        started: Instant,
    ) -> Result<(), ProxyError> {
        let asked = asked(request);
        let actual = match self
            .runtime
            .container_image(api, container_id, timeout)
            .await
        {
            Ok(Some(actual)) if actual == decided.id || decided.repo_digests.contains(&actual) => {
                return Ok(());
            }
            Ok(Some(actual)) => actual,
            // Gone, or not listed yet: refused, and asked to go all the same.
            Ok(None) => {
                let decision = self.refuse(
                    subject,
                    asked,
                    format!(
                        "container {container_id} is not there to confirm its image after the create"
                    ),
                    started,
                );
                self.remove_created(api, container_id, timeout).await;
                return super::pull::settle(&decision);
            }
            Err(e) => {
                let decision = self.error(
                    subject,
                    asked,
                    format!("cannot confirm the image of container {container_id}: {e}"),
                    started,
                );
                if !decision.allowed {
                    self.remove_created(api, container_id, timeout).await;
                }
                return super::pull::settle(&decision);
            }
        };
        tracing::warn!(
            image = %request.image,
            decided = %decided.id,
            created_from = %actual,
            container = %container_id,
            "the image name moved to another image between the check and the create; deciding the image created from"
        );
        let decision = match self.runtime.image_status(api, &actual, timeout).await {
            Ok(Some(info)) => self.decide_image(subject, request, &info, started),
            Ok(None) => self.refuse(
                subject,
                asked,
                format!(
                    "containerd created container {container_id} from image {actual}, not {} that was decided, and {actual} is no longer on the node",
                    decided.id
                ),
                started,
            ),
            Err(e) => self.error(
                subject,
                asked,
                format!(
                    "containerd created container {container_id} from image {actual}, not {} that was decided, and {actual} cannot be resolved: {e}",
                    decided.id
                ),
                started,
            ),
        };
        if !decision.allowed {
            self.remove_created(api, container_id, timeout).await;
        }
        super::pull::settle(&decision)
    }

    async fn remove_created(&self, api: Api, container_id: &str, timeout: std::time::Duration) {
        for attempt in 1..=REMOVE_ATTEMPTS {
            match self
                .runtime
                .remove_container(api, container_id, timeout)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(container = %container_id, attempt, error = %e, "a container created from an image that was not admitted could not be removed");
                    // containerd may be restarting: worth a moment's wait.
                    if attempt < REMOVE_ATTEMPTS {
                        tokio::time::sleep(std::time::Duration::from_millis(200) * attempt).await;
                    }
                }
            }
        }
        self.metrics.cleanup_errors.inc();
    }

    async fn check_create(
        &self,
        api: Api,
        request: &CreateRequest,
        parts: &Parts,
        started: Instant,
    ) -> Checked {
        let container = request.container_name();
        let timeout = deadline(&parts.headers);
        let asked = asked(request);
        // The pod context (namespace rules, break-glass) is the sandbox's,
        // as containerd recorded it when the pod was started: the request's
        // copy of the sandbox config is the client's word, and claiming
        // another namespace or a break-glass annotation there must not
        // change the decision.
        // Until the sandbox is known, a refusal names the pod the request
        // claims, without its labels and annotations: a break-glass among
        // them would turn the refusal into an admission.
        let claimed_pod = Pod {
            labels: Default::default(),
            annotations: Default::default(),
            ..request.pod.clone()
        };
        let claimed = Subject {
            operation: Operation::CreateContainer,
            pod: Some(&claimed_pod),
            container,
        };
        // Two independent round trips to containerd, made at once.
        let (sandbox, image) = tokio::join!(
            self.runtime
                .pod_sandbox(api, &request.pod_sandbox_id, timeout),
            self.runtime.image_status(api, &request.image, timeout),
        );
        let sandbox = match self.found(
            sandbox,
            &claimed,
            asked,
            || format!("pod sandbox {:?} does not exist", request.pod_sandbox_id),
            |e| format!("cannot look up pod sandbox {}: {e}", request.pod_sandbox_id),
            started,
        ) {
            Ok(sandbox) => sandbox,
            Err(refused) => return Checked::from(*refused),
        };
        if let Some(mismatch) = identity_mismatch(&request.pod, &sandbox) {
            return Checked::from(self.refuse(
                &claimed,
                asked,
                format!(
                    "the request's sandbox config does not match pod sandbox {}: {mismatch}",
                    request.pod_sandbox_id
                ),
                started,
            ));
        }
        let subject = Subject {
            operation: Operation::CreateContainer,
            pod: Some(&sandbox),
            container,
        };
        // An image not on the node is refused: containerd would refuse it
        // too, and refusing here closes the window in which it could appear
        // between our check and its create.
        let info = match self.found(
            image,
            &subject,
            asked,
            || format!("image {} is not on the node", request.image),
            |e| format!("cannot resolve image {}: {e}", request.image),
            started,
        ) {
            Ok(info) => info,
            Err(refused) => return Checked::from(*refused),
        };

        let decision = self.decide_image(&subject, request, &info, started);
        Checked {
            decision,
            on: Some((info, sandbox)),
        }
    }

    /// What a runtime lookup found, or the decision that ends the check: a
    /// thing that is not there is refused, a lookup containerd could not
    /// answer (unreachable, out of time) is settled by the fail mode.
    ///
    /// A lookup containerd answered with an error is refused in either
    /// mode: it is about what the request named. An id prefix that two of
    /// containerd's records share is such an error, and a client that
    /// removes one of the two right after its create would otherwise have
    /// fail mode open admit, unchecked, whichever is left.
    fn found<T>(
        &self,
        lookup: Result<Option<T>, ProxyError>,
        subject: &Subject<'_>,
        asked: &str,
        missing: impl FnOnce() -> String,
        failed: impl FnOnce(ProxyError) -> String,
        started: Instant,
    ) -> Result<T, Box<Decision>> {
        match lookup {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(Box::new(self.refuse(subject, asked, missing(), started))),
            Err(e) => {
                let why = super::lookup_failure(&e)(failed(e));
                Err(Box::new(self.undecidable(subject, asked, why, started)))
            }
        }
    }

    /// Decides the image `info` for the request: by the name the request
    /// asked for as far as the image carries it, else by its repo digests.
    fn decide_image(
        &self,
        subject: &Subject<'_>,
        request: &CreateRequest,
        info: &ImageInfo,
        started: Instant,
    ) -> Decision {
        // The name decided is the one the request asked for (SPEC §5): the
        // pod spec's, else the image field when that is a name. Either is
        // only the client's word: containerd runs the image `image`
        // resolves to, by name, by id or by any unique prefix of its id. A
        // name counts only as far as that image carries it; otherwise
        // naming a system or allowlisted image would admit anything.
        let is_name = |field: &str| !field.is_empty() && !is_image_id(field);
        let pod_spec_name = Some(request.user_specified_image.as_str()).filter(|n| is_name(n));
        let named = pod_spec_name.or(Some(request.image.as_str()).filter(|n| is_name(n)));
        if let Some(name) = named {
            let image = match ImageRef::parse(name) {
                Ok(image) => image,
                Err(e) => {
                    return self.refuse(
                        subject,
                        name,
                        format!("cannot parse image reference: {e}"),
                        started,
                    );
                }
            };
            match carried(info, &image) {
                Some(resolved) => return self.decide(subject, name, &resolved, started),
                None if pod_spec_name.is_some() => {
                    return self.refuse(
                        subject,
                        name,
                        format!(
                            "the image being created ({}) does not go by this name",
                            request.image
                        ),
                        started,
                    );
                }
                // Not a name of the image, so containerd found it by a short
                // id: decided as a bare id is.
                None => {
                    tracing::debug!(image = %name, id = %info.id, "image field resolved as an id prefix");
                }
            }
        }
        self.decide_by_repo_digests(subject, &request.image, &info.repo_digests, started)
    }

    /// A bare image id: each repository digest the image carries is
    /// decided, and the container is allowed if one is. Every candidate is
    /// recorded. Another name the image carries (a tag) never lends it its
    /// allowlisting.
    fn decide_by_repo_digests(
        &self,
        subject: &Subject<'_>,
        id: &str,
        repo_digests: &[String],
        started: Instant,
    ) -> Decision {
        let mut last = None;
        for repo_digest in repo_digests {
            let Ok(image) = ImageRef::parse(repo_digest) else {
                continue;
            };
            let decision = self.decide(subject, repo_digest, &image, started);
            if decision.allowed {
                return decision;
            }
            last = Some(decision);
        }
        // No digest names it, so nothing can vouch for it: refused even
        // under fail mode open, which is for the node failing, not the image.
        last.unwrap_or_else(|| {
            self.refuse(
                subject,
                id,
                format!("image {id} has no repository digest to decide"),
                started,
            )
        })
    }
}

/// The name the request asked for: the pod spec's, else the image field.
fn asked(request: &CreateRequest) -> &str {
    if !request.user_specified_image.is_empty() {
        &request.user_specified_image
    } else {
        &request.image
    }
}

/// Where the request's sandbox config names another pod than the sandbox
/// is: namespace, name and uid never change for a pod, so kubelet never
/// differs here. Labels and annotations may (a pod's metadata can be
/// edited), so they are not compared; the sandbox's are the ones decided on.
/// A field the request leaves out claims nothing.
fn identity_mismatch(claimed: &Pod, sandbox: &Pod) -> Option<String> {
    [
        ("namespace", &claimed.namespace, &sandbox.namespace),
        ("name", &claimed.name, &sandbox.name),
        ("uid", &claimed.uid, &sandbox.uid),
    ]
    .into_iter()
    .find(|(_, claimed, actual)| !claimed.is_empty() && claimed != actual)
    .map(|(field, claimed, actual)| {
        format!("it gives {field} {claimed:?}, the sandbox has {actual:?}")
    })
}

/// `name` as the image carries it, pinned to the image's digest; `None`
/// when the image does not go by that name. A repository counts when the
/// image has a digest in it (that very digest, when the name has one); a tag
/// is kept only when it is one of the image's own, so a tag named beside a
/// digest, or one that has moved on to another image, lends nothing.
pub fn carried(info: &ImageInfo, name: &ImageRef) -> Option<ImageRef> {
    let own_tag = |tag: &str| {
        info.repo_tags.iter().any(|t| {
            ImageRef::parse(t).is_ok_and(|t| {
                t.repository == name.repository && t.tag.as_deref().unwrap_or("latest") == tag
            })
        })
    };
    // A name with neither tag nor digest means `latest`, as kubelet pulls it.
    let asked_tag = match (&name.tag, &name.digest) {
        (Some(tag), _) => Some(tag.as_str()),
        (None, None) => Some("latest"),
        (None, Some(_)) => None,
    };
    let tagged = asked_tag.is_some_and(own_tag);
    let digest = match &name.digest {
        Some(digest) => {
            let confirmed = info.repo_digests.iter().any(|rd| {
                ImageRef::parse(rd).is_ok_and(|rd| {
                    rd.repository == name.repository && rd.digest.as_ref() == Some(digest)
                })
            });
            if !confirmed {
                return None;
            }
            Some(digest.clone())
        }
        None => {
            let digest = digest_for(name, &info.repo_digests);
            if digest.is_none() && !tagged {
                return None;
            }
            digest
        }
    };
    Some(ImageRef {
        repository: name.repository.clone(),
        tag: asked_tag.filter(|_| tagged).map(str::to_string),
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intercept::testing::{CONTAINER_ID, FakeRuntime, SANDBOX_ID, gate, sandbox};
    use attestgate_node::FailMode;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// `registry.test/app:1`, image id `digest('1')`, and a policy that
    /// admits it by its repo digest `digest('a')` alone.
    fn allowlisted_app() -> (ImageInfo, String) {
        let signed = ImageInfo {
            id: digest('1'),
            repo_tags: vec!["registry.test/app:1".into()],
            repo_digests: vec![format!("registry.test/app@{}", digest('a'))],
        };
        let policy = format!(
            "admissionWhitelistPatterns:
- namePattern: registry.test/app@{}
defaultAdmissionRule:
  evaluationMode: ALWAYS_DENY
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
",
            digest('a')
        );
        (signed, policy)
    }

    fn create(image: &str, user_specified_image: &str) -> CreateRequest {
        CreateRequest {
            image: image.into(),
            user_specified_image: user_specified_image.into(),
            container: "app".into(),
            attempt: 0,
            pod_sandbox_id: SANDBOX_ID.into(),
            pod: sandbox(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_containerd_answered_with_an_error_is_refused_even_failing_open() {
        let signed = ImageInfo {
            id: format!("sha256:3f{}", "a".repeat(62)),
            repo_tags: vec!["docker.io/library/nginx:1".into()],
            repo_digests: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let policy = "defaultAdmissionRule:
  evaluationMode: ALWAYS_DENY
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
";
        let parts = http::Request::new(()).into_parts().0;
        let mut open = gate(dir.path(), policy, FailMode::Open, signed.clone());
        // Two images whose ids begin alike: containerd cannot resolve the
        // prefix, and would resolve it once either is removed.
        open.runtime.images.push(ImageInfo {
            id: format!("sha256:3f{}", "b".repeat(62)),
            repo_tags: vec!["evil.test/x:1".into()],
            repo_digests: Vec::new(),
        });
        let decision = open
            .check_create(Api::V1, &create("3f", ""), &parts, Instant::now())
            .await
            .decision;
        assert!(!decision.allowed, "{}", decision.explanation());
        assert!(
            decision.explanation().contains("ambiguous"),
            "{}",
            decision.explanation()
        );
        // containerd out of reach is the node's failure: the fail mode's.
        let open = gate(dir.path(), policy, FailMode::Open, signed);
        let unreachable = open.found::<()>(
            Err(ProxyError::Upstream("connection refused".into())),
            &Subject {
                operation: Operation::CreateContainer,
                pod: None,
                container: None,
            },
            "3f",
            String::new,
            |e| e.to_string(),
            Instant::now(),
        );
        let admitted = unreachable.expect_err("nothing found");
        assert!(admitted.allowed, "{}", admitted.explanation());
    }

    #[tokio::test(start_paused = true)]
    async fn names_the_image_does_not_carry_admit_nothing() {
        let id = format!("sha256:3f5ab2{}", "c".repeat(58));
        let unsigned = ImageInfo {
            id: id.clone(),
            repo_tags: vec!["evil.test/x:1".into()],
            repo_digests: vec![format!("evil.test/x@sha256:{}", "d".repeat(64))],
        };
        let dir = tempfile::tempdir().unwrap();
        // What a node admits without attestations: Docker Hub's library by
        // name, and (globalPolicyEvaluationMode) the pause image.
        let policy = "globalPolicyEvaluationMode: ENABLE
admissionWhitelistPatterns:
- namePattern: docker.io/library/*
defaultAdmissionRule:
  evaluationMode: ALWAYS_DENY
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
";
        let parts = http::Request::new(()).into_parts().0;
        // A well-formed digest that is not this image's.
        let unconfirmed = format!("docker.io/library/nginx@sha256:{}", "f".repeat(64));
        for fail_mode in [FailMode::Closed, FailMode::Open] {
            let unsigned_on_node = gate(dir.path(), policy, fail_mode, unsigned.clone());
            for (image, user_specified) in [
                // A short id, which containerd resolves by prefix.
                ("3f5ab2", ""),
                ("sha256:3f5ab2", ""),
                (id.as_str(), "registry.k8s.io/pause:3.10"),
                (id.as_str(), "nginx:1.25"),
                (id.as_str(), unconfirmed.as_str()),
                (id.as_str(), "docker.io/library/nginx@sha256:0000"),
                ("evil.test/x:1", "!not a name"),
            ] {
                let decision = unsigned_on_node
                    .check_create(
                        Api::V1,
                        &create(image, user_specified),
                        &parts,
                        Instant::now(),
                    )
                    .await
                    .decision;
                assert!(
                    !decision.allowed,
                    "{image} named {user_specified:?} ({fail_mode:?}): {}",
                    decision.explanation()
                );
            }
            // An image that goes by no name at all, created by its id.
            let nameless = gate(
                dir.path(),
                policy,
                fail_mode,
                ImageInfo {
                    id: id.clone(),
                    repo_tags: Vec::new(),
                    repo_digests: Vec::new(),
                },
            );
            let decision = nameless
                .check_create(Api::V1, &create(&id, ""), &parts, Instant::now())
                .await
                .decision;
            assert!(
                !decision.allowed,
                "nameless ({fail_mode:?}): {}",
                decision.explanation()
            );
            // The image's own name is what decides when nothing else holds.
            let own = unsigned_on_node
                .check_create(Api::V1, &create("3f5ab2", ""), &parts, Instant::now())
                .await
                .decision;
            assert!(
                own.explanation().contains("evil.test/x"),
                "{}",
                own.explanation()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pod_is_the_sandbox_s_not_the_request_s() {
        let unsigned = ImageInfo {
            id: format!("sha256:{}", "c".repeat(64)),
            repo_tags: vec!["evil.test/x:1".into()],
            repo_digests: vec![format!("evil.test/x@sha256:{}", "d".repeat(64))],
        };
        let dir = tempfile::tempdir().unwrap();
        let policy = "defaultAdmissionRule:
  evaluationMode: ALWAYS_DENY
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
kubernetesNamespaceAdmissionRules:
  kube-system:
    evaluationMode: ALWAYS_ALLOW
    enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
";
        let parts = http::Request::new(()).into_parts().0;
        for fail_mode in [FailMode::Closed, FailMode::Open] {
            let node = gate(dir.path(), policy, fail_mode, unsigned.clone());
            let decide = |request: CreateRequest| {
                let node = &node;
                let parts = &parts;
                async move {
                    node.check_create(Api::V1, &request, parts, Instant::now())
                        .await
                        .decision
                }
            };
            let mut in_kube_system = create("evil.test/x:1", "");
            in_kube_system.pod.namespace = "kube-system".into();
            let mut break_glass = create("evil.test/x:1", "");
            break_glass.pod.annotations.insert(
                "alpha.image-policy.k8s.io/break-glass".into(),
                "true".into(),
            );
            break_glass
                .pod
                .labels
                .insert("image-policy.k8s.io/break-glass".into(), "true".into());
            let mut no_such_sandbox = create("evil.test/x:1", "");
            no_such_sandbox.pod_sandbox_id = "0ther".into();
            let mut no_sandbox_config = create("evil.test/x:1", "");
            no_sandbox_config.pod = Pod::default();
            // Break-glass claimed together with another pod, or a sandbox
            // that does not exist: refusals that must stay refusals.
            let mut glass_elsewhere = break_glass.clone();
            glass_elsewhere.pod.uid = "forged".into();
            let mut glass_nowhere = break_glass.clone();
            glass_nowhere.pod_sandbox_id = "0ther".into();
            for (what, request, says) in [
                ("another namespace", in_kube_system, "does not match"),
                ("break-glass", break_glass, "ALWAYS_DENY"),
                (
                    "break-glass, another uid",
                    glass_elsewhere,
                    "does not match",
                ),
                ("break-glass, no sandbox", glass_nowhere, "does not exist"),
                ("an unknown sandbox", no_such_sandbox, "does not exist"),
                // Decided on the sandbox's pod all the same.
                ("no sandbox config", no_sandbox_config, "ALWAYS_DENY"),
            ] {
                let decision = decide(request).await;
                assert!(
                    !decision.allowed && decision.explanation().contains(says),
                    "{what} ({fail_mode:?}): {}",
                    decision.explanation()
                );
            }
        }
        // The sandbox's own namespace is what decides.
        let allow_prod = policy.replace("kube-system", "prod");
        let node = gate(dir.path(), &allow_prod, FailMode::Closed, unsigned);
        let decision = node
            .check_create(
                Api::V1,
                &create("evil.test/x:1", ""),
                &parts,
                Instant::now(),
            )
            .await
            .decision;
        assert!(decision.allowed, "{}", decision.explanation());
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_created_from_another_image_than_the_one_decided_is_removed() {
        let (signed, policy) = allowlisted_app();
        // Where the tag points once a pull of the same name, racing the
        // create, has landed.
        let unsigned = ImageInfo {
            id: digest('2'),
            repo_tags: vec!["registry.test/app:1".into()],
            repo_digests: vec![format!("registry.test/app@{}", digest('b'))],
        };
        let dir = tempfile::tempdir().unwrap();
        let parts = http::Request::new(()).into_parts().0;
        let request = create("registry.test/app:1", "");
        for fail_mode in [FailMode::Closed, FailMode::Open] {
            let mut node = gate(dir.path(), &policy, fail_mode, signed.clone());
            node.runtime.images.push(unsigned.clone());
            let checked = node
                .check_create(Api::V1, &request, &parts, Instant::now())
                .await;
            assert!(
                checked.decision.allowed,
                "{}",
                checked.decision.explanation()
            );
            let (decided, pod) = checked.on.unwrap();
            assert_eq!(decided.id, signed.id);
            let subject = Subject {
                operation: Operation::CreateContainer,
                pod: Some(&pod),
                container: Some("app"),
            };
            let cases = [
                ("the image decided", Ok(Some(signed.id.clone())), None),
                (
                    "its repo digest",
                    Ok(Some(signed.repo_digests[0].clone())),
                    None,
                ),
                (
                    "the image the tag moved to",
                    Ok(Some(unsigned.id.clone())),
                    Some(digest('b')),
                ),
                (
                    "an image gone since",
                    Ok(Some(digest('3'))),
                    Some("no longer on the node".to_string()),
                ),
                ("no container", Ok(None), Some("is not there".to_string())),
                (
                    "containerd cannot say",
                    Err(()),
                    (fail_mode == FailMode::Closed).then(|| "containerd is restarting".to_string()),
                ),
            ];
            for (what, created_from, refused_with) in cases {
                node.runtime.created_from = created_from;
                node.runtime.removed_containers.lock().unwrap().clear();
                let confirmed = node
                    .confirm_created(
                        Api::V1,
                        &request,
                        &subject,
                        &decided,
                        CONTAINER_ID,
                        std::time::Duration::from_secs(1),
                        Instant::now(),
                    )
                    .await;
                let removed = node.runtime.removed_containers.lock().unwrap().clone();
                match refused_with {
                    None => {
                        assert!(confirmed.is_ok(), "{what} ({fail_mode:?}): {confirmed:?}");
                        assert!(removed.is_empty(), "{what} ({fail_mode:?})");
                    }
                    Some(says) => {
                        assert!(
                            matches!(&confirmed, Err(ProxyError::Denied(m)) if m.contains(&says)),
                            "{what} ({fail_mode:?}): {confirmed:?}"
                        );
                        // Asked to go even when not listed: removal is
                        // idempotent, and a listing can lag.
                        assert_eq!(removed, [CONTAINER_ID], "{what} ({fail_mode:?})");
                    }
                }
            }
        }
        // The refusal names the image the container was created from.
        let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        assert!(
            audit
                .lines()
                .any(|l| l.contains(&digest('b')) && l.contains("\"decision\":\"deny\"")),
            "{audit}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_whose_reply_is_lost_is_checked_by_the_container_s_name() {
        let (signed, policy) = allowlisted_app();
        let dir = tempfile::tempdir().unwrap();
        let request = create("registry.test/app:1", "");
        let body = grpc::frame(b"");
        // containerd is not there to answer (the gate's upstream socket
        // does not exist), yet a container by the request's name exists.
        for (created_from, removed) in [
            (Some(digest('2')), vec![CONTAINER_ID.to_string()]),
            (Some(signed.id.clone()), vec![]),
            (None, vec![]),
        ] {
            let mut node = gate(dir.path(), &policy, FailMode::Closed, signed.clone());
            node.runtime.created_from = Ok(created_from.clone());
            let parts = http::Request::new(()).into_parts().0;
            let outcome = node
                .create_and_confirm(
                    Api::V1,
                    request.clone(),
                    parts,
                    body.clone(),
                    signed.clone(),
                    sandbox(),
                    Instant::now(),
                )
                .await;
            let expected_denied = removed.len() == 1;
            assert!(
                matches!(
                    (&outcome, expected_denied),
                    (Err(ProxyError::Denied(_)), true) | (Err(ProxyError::Upstream(_)), false)
                ),
                "{created_from:?}: {:?}",
                outcome.err()
            );
            assert_eq!(*node.runtime.removed_containers.lock().unwrap(), removed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn starts_wait_for_a_create_being_checked_and_it_for_them() {
        use tokio::time::error::Elapsed;
        let dir = tempfile::tempdir().unwrap();
        let policy = "defaultAdmissionRule:
  evaluationMode: ALWAYS_ALLOW
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
";
        let node = gate(dir.path(), policy, FailMode::Closed, ImageInfo::default());
        let wait = std::time::Duration::from_millis(100);
        // Nothing listens upstream: a start that is let through fails with
        // Unavailable at once, one that waits times out here.
        async fn start(node: &Gate<FakeRuntime>) -> Result<Result<Reply, ProxyError>, Elapsed> {
            let parts = http::Request::new(()).into_parts().0;
            let wait = std::time::Duration::from_millis(100);
            tokio::time::timeout(wait, node.start(parts, grpc::frame(b""))).await
        }
        assert!(matches!(
            start(&node).await,
            Ok(Err(ProxyError::Upstream(_)))
        ));
        let checking = node.checking(wait).await.unwrap();
        assert!(
            start(&node).await.is_err(),
            "a start went through during a check"
        );
        drop(checking);
        assert!(matches!(
            start(&node).await,
            Ok(Err(ProxyError::Upstream(_)))
        ));
        // A start in flight holds a check back until it is answered.
        let starting = node.unconfirmed.0.read().await;
        assert!(matches!(
            node.checking(wait).await,
            Err(ProxyError::Deadline)
        ));
        drop(starting);
        assert!(node.checking(wait).await.is_ok());
    }

    fn decided_as(info: &ImageInfo, name: &str) -> Option<String> {
        carried(info, &ImageRef::parse(name).unwrap()).map(|image| image.to_string())
    }

    #[test]
    fn a_name_counts_only_as_far_as_the_image_carries_it() {
        let d = format!("sha256:{}", "a".repeat(64));
        let other = format!("sha256:{}", "b".repeat(64));
        let info = ImageInfo {
            id: "x".into(),
            repo_tags: vec![
                "registry.test/app:1".into(),
                "docker.io/library/nginx:latest".into(),
            ],
            repo_digests: vec![format!("registry.test/app@{d}")],
        };
        let pinned = format!("registry.test/app@{d}");
        let tagged = format!("registry.test/app:1@{d}");
        assert_eq!(
            decided_as(&info, "registry.test/app:1"),
            Some(tagged.clone())
        );
        assert_eq!(decided_as(&info, &tagged), Some(tagged.clone()));
        assert_eq!(decided_as(&info, &pinned), Some(pinned.clone()));
        // A tag that moved on, or one written beside the digest, is not lent.
        assert_eq!(
            decided_as(&info, "registry.test/app:2"),
            Some(pinned.clone())
        );
        assert_eq!(
            decided_as(&info, &format!("registry.test/app:2@{d}")),
            Some(pinned.clone())
        );
        // Names of images it is not.
        assert_eq!(
            decided_as(&info, &format!("registry.test/app@{other}")),
            None
        );
        assert_eq!(decided_as(&info, &format!("mirror.test/app@{d}")), None);
        assert_eq!(decided_as(&info, "registry.k8s.io/pause:3.10"), None);
        assert_eq!(decided_as(&info, "nginx:1.25"), None);
        // A short id containerd resolves by prefix reads as a Docker Hub name.
        assert_eq!(decided_as(&info, "3f5ab2"), None);
        // Tagged but with no digest in that repository: by name alone.
        assert_eq!(
            decided_as(&info, "nginx").as_deref(),
            Some("docker.io/library/nginx:latest")
        );
        let imported = ImageInfo {
            repo_digests: Vec::new(),
            ..info
        };
        assert_eq!(decided_as(&imported, &pinned), None);
        assert_eq!(
            decided_as(&imported, "registry.test/app:1").as_deref(),
            Some("registry.test/app:1")
        );
        assert_eq!(decided_as(&imported, "registry.test/app:2"), None);
    }
}
