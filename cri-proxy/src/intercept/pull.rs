//! PullImage: a digest reference is decided before anything is pulled; a tag
//! is pulled, resolved to its repository digest, then decided, and removed
//! again when denied unless it was on the node before. So is an index by
//! digest that only its platform manifest's registry signature can admit,
//! as which platform containerd pulls is read from its content store.

use std::time::{Duration, Instant};

use attestgate_policy::{ImageRef, Operation};
use bytes::Bytes;
use http::request::Parts;
use prost::Message as _;

use attestgate_registry::signatures::CriAuth;

use super::permits::{self, REGISTRIES, RegistryPermit, registry_of};
use super::{Client, Gate, Subject, deadline};
use crate::content::PlatformLink;
use crate::cri::{Api, Pod, digest_for};
use crate::grpc::{self, ProxyError};
use crate::resolve::ImageRuntime;
use crate::signatures::{Fetched, LookupFailed};
use crate::upstream::{FullResponse, Reply, RequestBody};
use attestgate_policy::{Digest, RegistryAttestation};
use attestgate_registry::signatures::{credentials_from_cri, split_repository};

pub struct PullRequest {
    pub image: String,
    pub pod: Option<Pod>,
    /// The registry credentials kubelet sent, for the signature lookup.
    pub auth: Option<CriAuth>,
}

/// Either CRI version's AuthConfig, field for field.
macro_rules! auth_from {
    ($a:expr) => {
        $a.map(|a| CriAuth {
            username: a.username,
            password: a.password,
            auth: a.auth,
            server_address: a.server_address,
            identity_token: a.identity_token,
            registry_token: a.registry_token,
        })
    };
}

pub fn decode(api: Api, message: &[u8]) -> Result<PullRequest, ProxyError> {
    let bad = |e: prost::DecodeError| ProxyError::BadRequest(format!("PullImageRequest: {e}"));
    Ok(match api {
        Api::V1 => {
            let r = k8s_cri::v1::PullImageRequest::decode(message).map_err(bad)?;
            PullRequest {
                image: r.image.map(|i| i.image).unwrap_or_default(),
                pod: r.sandbox_config.map(pod_v1),
                auth: auth_from!(r.auth),
            }
        }
        Api::V1alpha2 => {
            let r = k8s_cri::v1alpha2::PullImageRequest::decode(message).map_err(bad)?;
            PullRequest {
                image: r.image.map(|i| i.image).unwrap_or_default(),
                pod: r.sandbox_config.map(pod_v1alpha2),
                auth: auth_from!(r.auth),
            }
        }
    })
}

/// Pod identity and metadata from either CRI version's sandbox config.
macro_rules! pod_from {
    ($name:ident, $api:ident) => {
        pub fn $name(c: k8s_cri::$api::PodSandboxConfig) -> Pod {
            let m = c.metadata.unwrap_or_default();
            Pod::new(m.namespace, m.name, m.uid, c.labels, c.annotations)
        }
    };
}

pod_from!(pod_v1, v1);
pod_from!(pod_v1alpha2, v1alpha2);

/// How long a pull whose client has left may go on with what it must
/// still do: look at what the node now holds, decide it, remove a denied
/// image the pull brought. Counted from the moment the client left; the
/// pull itself is cancelled then. containerd answers those lookups in
/// milliseconds, so the bound is met unless containerd is stuck, and it
/// keeps work from outliving its client for long: shutdown waits for it.
pub const AFTER_THE_CLIENT_LEFT: Duration = Duration::from_secs(30);

impl<R: ImageRuntime> Gate<R> {
    /// One pull, while `client` waits or after it left: its registry's
    /// permit, the pull upstream (cancelled there when the client leaves),
    /// then the decision, which is made whether or not anyone is left to
    /// hear it, since what arrived must not stay undecided.
    pub async fn pull(
        &self,
        api: Api,
        parts: Parts,
        body: Bytes,
        client: &mut Client,
    ) -> Result<Reply, ProxyError> {
        let started = Instant::now();
        let mut parts = super::with_pull_deadline(parts, self.pull_timeout);
        let request = decode(api, &grpc::single_message(body.clone())?)?;
        let subject = Subject {
            operation: Operation::PullImage,
            pod: request.pod.as_ref(),
            container: None,
        };

        let image = match ImageRef::parse(&request.image) {
            Ok(image) => image,
            Err(e) => {
                let decision = self.refuse(
                    &subject,
                    &request.image,
                    format!("cannot parse image reference: {e}"),
                    started,
                );
                settle(&decision)?;
                return self.forward(parts, body).await;
            }
        };

        if let Some(digest) = image.digest.clone() {
            // containerd pulls the digest and drops a tag written beside it;
            // the tag must not match an allowlist entry pinned to a tag.
            let pulled = ImageRef { tag: None, ..image };
            let pod = subject.pod_context();
            let mut held = self.cached(&pulled);
            if self
                .decider
                .needs_registry(&request.image, &pulled, &pod, &held)
                && let Some(lookup) = self.start_lookup(&pulled, digest.as_str(), &request)
                && let Some(fetched) = self.finish_lookup(lookup, &digest).await
            {
                held.extend(self.keep_found(fetched.clone(), &digest, None).await);
                // What counts for an index may be signed on its platform
                // manifest alone, and which one containerd pulls through it
                // is read from its content store, not assumed: such an
                // image is decided as a tag is, after the pull (and removed
                // again when denied and new).
                if self.content.is_some()
                    && self
                        .decider
                        .needs_registry(&request.image, &pulled, &pod, &held)
                    && self
                        .admitted_if_linked(&request.image, &pulled, &pod, &held, &fetched)
                        .await
                {
                    let pulling = Pulling {
                        request: &request,
                        image: &pulled,
                        subject: &subject,
                        lookup: Some(SignatureLookup::Finished(fetched)),
                        started,
                    };
                    return self
                        .pull_then_decide(api, parts, body, client, pulling)
                        .await;
                }
            }
            settle(&self.decide_with(&subject, &request.image, &pulled, &held, started))?;
            let _permit = self.registry_permit(&pulled, &mut parts, client).await?;
            return match until_left(client, self.pull_upstream(parts, body)).await {
                Some(pulled) => pulled.map(Reply::Full),
                // Decided already: nothing is left to do.
                None => Err(self.cancelled(&request.image)),
            };
        }

        // A tag: what it resolves to is only known after the pull. Its
        // signatures are looked up beside it, with the tag resolved at the
        // registry, so the lookup costs the pull nothing it need wait for.
        let lookup = self
            .start_lookup(&image, image.tag.as_deref().unwrap_or("latest"), &request)
            .map(SignatureLookup::Running);
        let pulling = Pulling {
            request: &request,
            image: &image,
            subject: &subject,
            lookup,
            started,
        };
        self.pull_then_decide(api, parts, body, client, pulling)
            .await
    }

    /// Pulls what is decided only once it is on the node: the image's
    /// registry permit, what its name held before, the pull, then the
    /// decision of what arrived.
    async fn pull_then_decide(
        &self,
        api: Api,
        parts: Parts,
        body: Bytes,
        client: &mut Client,
        pulling: Pulling<'_>,
    ) -> Result<Reply, ProxyError> {
        let Pulling {
            request,
            image,
            subject,
            lookup,
            started,
        } = pulling;
        let mut parts = parts;
        let timeout = deadline(&parts.headers);
        let _permit = self.registry_permit(image, &mut parts, client).await?;
        // The name containerd stores: a tag written beside a digest is not.
        let name = image.to_string();
        // What the name held before the pull; unknown when containerd could
        // not say, and then nothing is removed.
        let before = until_left(client, self.runtime.image_status(api, &name, timeout))
            .await
            .ok_or(ProxyError::Cancelled)?
            .map(|found| found.map(|i| i.id));
        let pulled = match until_left(client, self.pull_upstream(parts, body)).await {
            Some(pulled) => Some(pulled?),
            None => {
                let _ = self.cancelled(&request.image);
                None
            }
        };
        let pulled = Pulled {
            api,
            reference: &request.image,
            name: &name,
            image,
            subject,
            before,
            answer: pulled,
            lookup,
            timeout,
            started,
        };
        match after_the_pull(client, self.what_arrived(pulled)).await {
            Some(answer) => answer,
            None => {
                self.metrics.pulls_left_undecided.inc();
                tracing::error!(
                    image = %request.image,
                    bound = ?AFTER_THE_CLIENT_LEFT,
                    "a pull whose client left could not be decided in time; what it brought \
                     stays on the node undecided (CreateContainer still decides it)"
                );
                Err(ProxyError::Deadline)
            }
        }
    }

    /// A permit of the registry `image` is pulled from, waited for within
    /// the pull's own deadline, of which what is left goes upstream; none
    /// once the client has left.
    async fn registry_permit(
        &self,
        image: &ImageRef,
        parts: &mut Parts,
        client: &mut Client,
    ) -> Result<RegistryPermit<'static>, ProxyError> {
        let whole = super::grpc_timeout(&parts.headers).unwrap_or(self.pull_timeout);
        let asked = tokio::time::Instant::now();
        let permit = until_left(client, REGISTRIES.permit(&registry_of(image), whole))
            .await
            .ok_or(ProxyError::Cancelled)??;
        let waited = asked.elapsed();
        if waited >= Duration::from_secs(1) {
            let left = whole.saturating_sub(waited);
            // gRPC's timeout: at most eight digits of a unit.
            let value = format!("{}m", left.as_millis().clamp(1, 99_999_999));
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                parts.headers.insert("grpc-timeout", value);
            }
        }
        Ok(permit)
    }

    /// The pull itself, read to its end.
    async fn pull_upstream(&self, parts: Parts, body: Bytes) -> Result<FullResponse, ProxyError> {
        let response = self
            .images
            .call(
                http::Request::from_parts(parts, ()),
                RequestBody::Full(body),
            )
            .await?;
        FullResponse::read(response).await
    }

    /// Counts a pull given up on upstream because its client left.
    fn cancelled(&self, reference: &str) -> ProxyError {
        self.metrics.pulls_cancelled.inc();
        tracing::info!(image = %reference, "the pull's client left; the pull is cancelled");
        ProxyError::Cancelled
    }

    /// Decides what a pull brought, and removes it again when it is denied
    /// and new to the node.
    async fn what_arrived(&self, pulled: Pulled<'_>) -> Result<Reply, ProxyError> {
        let Pulled {
            api,
            reference,
            name,
            image,
            subject,
            before,
            answer,
            lookup,
            timeout,
            started,
        } = pulled;
        let succeeded = answer.as_ref().is_some_and(|a| a.grpc_status() == Some(0));
        // The pull's own answer, for its client if it is still there.
        let answered = || answer.map(Reply::Full).ok_or(ProxyError::Cancelled);
        let after = match self.runtime.image_status(api, name, timeout).await {
            Ok(Some(info)) => info,
            // The pull failed and nothing reached the node, or containerd
            // cannot say (it is likely why the pull failed): the client
            // hears the pull's own failure.
            Ok(None) | Err(_) if !succeeded => return answered(),
            Ok(None) => {
                settle(&self.error(subject, reference, "image not found after pull", started))?;
                return answered();
            }
            Err(e) => {
                let why =
                    super::lookup_failure(&e)(format!("cannot resolve the pulled image: {e}"));
                settle(&self.undecidable(subject, reference, why, started))?;
                return answered();
            }
        };
        let new_to_the_node = before
            .as_ref()
            .is_ok_and(|before| before.as_deref() != Some(after.id.as_str()));
        if !succeeded && !new_to_the_node {
            return answered();
        }
        // A failed or cancelled pull (its deadline passing, its client
        // leaving) may still have stored the image: it is decided like any
        // other.
        // A pull by digest is decided by the digest it asked for, whatever
        // other digests of the repository containerd lists first.
        let resolved = match (&image.digest, digest_for(image, &after.repo_digests)) {
            (Some(_), _) | (None, None) => image.clone(),
            (None, Some(digest)) => image.with_digest(digest),
        };
        let mut held = self.cached(&resolved);
        let looked_up = match (lookup, &resolved.digest) {
            (Some(lookup), Some(digest))
                if self.decider.needs_registry(
                    reference,
                    &resolved,
                    &subject.pod_context(),
                    &held,
                ) =>
            {
                let link = self.platform_link(&image.repository, digest, &after).await;
                let fetched = match lookup {
                    SignatureLookup::Running(running) => self.finish_lookup(running, digest).await,
                    SignatureLookup::Finished(fetched) => Some(fetched),
                };
                match fetched {
                    Some(fetched) => self.keep_found(fetched, digest, link).await,
                    None => Vec::new(),
                }
            }
            // Not needed: it must not hold the pull up.
            (Some(SignatureLookup::Running(running)), _) => {
                running.abort();
                Vec::new()
            }
            (_, _) => Vec::new(),
        };
        held.extend(looked_up);
        let decision = self.decide_with(subject, reference, &resolved, &held, started);
        if decision.allowed {
            return answered();
        }
        // Removing an image removes every name it has: only an image that
        // is new to the node and known by nothing but this name goes.
        if new_to_the_node
            && known_only_as(&after, image)
            && let Err(e) = self.runtime.remove_image(api, &after.id, timeout).await
        {
            self.metrics.cleanup_errors.inc();
            tracing::error!(image = %reference, id = %after.id, error = %e, "denied image could not be removed");
        }
        Err(ProxyError::Denied(decision.explanation()))
    }

    /// Sends the call on, as the bytes it came in, to the endpoint that
    /// serves it.
    pub async fn forward(&self, parts: Parts, body: Bytes) -> Result<Reply, ProxyError> {
        self.upstream_for(parts.uri.path())
            .call(
                http::Request::from_parts(parts, ()),
                RequestBody::Full(body),
            )
            .await
            .map(Reply::Stream)
    }
}

/// A signature lookup under way (see [`crate::signatures`]).
type Lookup = tokio::task::JoinHandle<Result<Fetched, LookupFailed>>;

impl<R: ImageRuntime> Gate<R> {
    /// Starts looking up the signatures of `reference` (a tag or digest of
    /// `image`'s repository) in a task of its own; none when registry
    /// signatures count for no attestor.
    fn start_lookup(
        &self,
        image: &ImageRef,
        reference: &str,
        request: &PullRequest,
    ) -> Option<Lookup> {
        if !self.decider.counts_registry_signatures() {
            return None;
        }
        let signatures = self.signatures.clone()?;
        let credentials = split_repository(&image.repository).and_then(|(registry, _)| {
            request
                .auth
                .as_ref()
                .and_then(|auth| credentials_from_cri(auth, &registry))
        });
        let image = image.clone();
        let reference = reference.to_string();
        Some(tokio::spawn(async move {
            signatures.fetch(&image, &reference, credentials).await
        }))
    }

    /// Waits for `lookup` (bounded by the registry timeout it runs under).
    /// A failed lookup adds nothing; it is logged and counted.
    async fn finish_lookup(&self, lookup: Lookup, decided: &Digest) -> Option<Fetched> {
        let fetched = lookup.await.unwrap_or_else(|e| {
            Err(LookupFailed::new(
                "error",
                format!("the lookup task failed: {e}"),
            ))
        });
        self.metrics
            .registry_lookup(crate::signatures::result_label(&fetched));
        match fetched {
            Ok(fetched) => Some(fetched),
            Err(e) => {
                tracing::warn!(digest = %decided, error = %e, "registry signatures could not be looked up; the decision counts the bundle and the attestation cache only");
                None
            }
        }
    }

    /// Keeps what verified of `fetched` for `decided` and the digest
    /// containerd links it to. Returns what
    /// [`crate::signatures::Signatures::keep`] does.
    async fn keep_found(
        &self,
        fetched: Fetched,
        decided: &Digest,
        link: Option<PlatformLink>,
    ) -> Vec<RegistryAttestation> {
        let Some(signatures) = &self.signatures else {
            return Vec::new();
        };
        // A tag that moved between the lookup and the pull: what was found
        // is for another image, unless containerd links the two.
        let linked = link.as_ref().and_then(|l| {
            if &l.index == decided {
                Some(&l.platform)
            } else if &l.platform == decided {
                Some(&l.index)
            } else {
                None
            }
        });
        if &fetched.digest != decided && Some(&fetched.digest) != linked {
            tracing::info!(found = %fetched.digest, pulled = %decided, "the tag named another digest at the registry than the pull brought; its signatures are not used");
            return Vec::new();
        }
        // Verifying and an fsynced write: off the runtime's worker.
        super::off_the_runtime(|| signatures.keep(&self.decider, decided, linked, fetched))
    }

    /// Whether `image` would be admitted were containerd to link it to the
    /// other digest `fetched` holds signatures for (the platform manifest
    /// of an index), beside what is `held` already: only then is it worth
    /// pulling before the decision. Nothing is recorded, and what verifies
    /// here is verified again after the pull, since the bundle in force
    /// may change while the image is pulled and only what verifies under
    /// the one that decides may be cached.
    async fn admitted_if_linked(
        &self,
        reference: &str,
        image: &ImageRef,
        pod: &attestgate_policy::PodContext,
        held: &[RegistryAttestation],
        fetched: &Fetched,
    ) -> bool {
        let Some(decided) = &image.digest else {
            return false;
        };
        super::off_the_runtime(|| {
            let mut offered = held.to_vec();
            for (signed, found) in &fetched.signatures {
                if signed == decided {
                    continue;
                }
                let verified = self.decider.verified_signatures(signed, found.clone());
                offered.extend(verified.into_iter().map(|signature| RegistryAttestation {
                    signature,
                    signed_digest: signed.clone(),
                    found_in: fetched.found_in.clone(),
                }));
            }
            offered.len() > held.len()
                && !self.decider.needs_registry(reference, image, pod, &offered)
        })
    }

    /// The platform manifest containerd pulled through the image's index,
    /// read from its content store; none for a single manifest, or when
    /// containerd cannot say (then only the index's own signatures count).
    async fn platform_link(
        &self,
        repository: &str,
        decided: &Digest,
        after: &crate::resolve::ImageInfo,
    ) -> Option<PlatformLink> {
        let content = self.content.as_ref()?;
        // The name the digest decided is stored under, not whichever name
        // containerd lists first.
        let name = format!("{repository}@{decided}");
        let bound = self
            .signatures
            .as_ref()
            .map_or(Duration::from_secs(5), |s| s.registries.timeout());
        match tokio::time::timeout(bound, content.platform_link(&name, &after.id)).await {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => {
                tracing::warn!(image = %name, error = %e, "containerd's content store could not tell which platform manifest was pulled");
                None
            }
            Err(_) => {
                tracing::warn!(image = %name, ?bound, "containerd's content store did not tell in time which platform manifest was pulled");
                None
            }
        }
    }
}

/// A signature lookup beside a pull: still running, or done before it.
enum SignatureLookup {
    Running(Lookup),
    Finished(Fetched),
}

/// A pull to be decided once it is on the node, for
/// [`Gate::pull_then_decide`].
struct Pulling<'a> {
    request: &'a PullRequest,
    /// The image as pulled: a tag, or a digest with no tag beside it.
    image: &'a ImageRef,
    subject: &'a Subject<'a>,
    lookup: Option<SignatureLookup>,
    started: Instant,
}

/// A pull as it came back, for [`Gate::what_arrived`].
struct Pulled<'a> {
    api: Api,
    /// As the request named it, for the record.
    reference: &'a str,
    /// As containerd stores it.
    name: &'a str,
    image: &'a ImageRef,
    subject: &'a Subject<'a>,
    /// The id the name held before the pull.
    before: Result<Option<String>, ProxyError>,
    /// The pull's answer; none when it was cancelled.
    answer: Option<FullResponse>,
    /// The signature lookup beside the pull.
    lookup: Option<SignatureLookup>,
    timeout: Duration,
    started: Instant,
}

/// `work`, unless the client leaves first: then it is dropped, which for
/// a call upstream resets its stream, and containerd cancels it.
async fn until_left<T>(client: &mut Client, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        _ = client.left() => None,
    }
}

/// `work`, to its end while the client waits; once it has left, within
/// [`AFTER_THE_CLIENT_LEFT`] of that, holding one of the few slots for
/// such work (see [`super::permits::LEFT_BEHIND`]). None when the bound
/// passed first.
async fn after_the_pull<T>(client: &mut Client, work: impl Future<Output = T>) -> Option<T> {
    tokio::pin!(work);
    let left_at = tokio::select! {
        // A client that has already left does nothing without its slot.
        biased;
        at = client.left() => at,
        done = &mut work => return Some(done),
    };
    tokio::time::timeout_at(left_at + AFTER_THE_CLIENT_LEFT, async {
        let _slot = permits::left_behind_slot().await;
        work.await
    })
    .await
    .ok()
}

/// A refusal becomes the call's error; an admission lets it go on.
pub fn settle(decision: &attestgate_policy::Decision) -> Result<(), ProxyError> {
    if decision.allowed {
        Ok(())
    } else {
        Err(ProxyError::Denied(decision.explanation()))
    }
}

/// Whether every name the runtime has for the image is `image`'s repository
/// (its tags and its digests), so that removing it takes nothing else away.
pub fn known_only_as(info: &crate::resolve::ImageInfo, image: &ImageRef) -> bool {
    // containerd stores a name pulled with neither tag nor digest as
    // `latest`; one pulled by digest, with no tag at all.
    let pulled_tag = match (&image.tag, &image.digest) {
        (Some(tag), _) => Some(tag.as_str()),
        (None, Some(_)) => None,
        (None, None) => Some("latest"),
    };
    info.repo_tags
        .iter()
        .chain(info.repo_digests.iter())
        .all(|name| {
            ImageRef::parse(name).is_ok_and(|n| {
                n.repository == image.repository
                    && n.tag.as_deref().is_none_or(|tag| Some(tag) == pulled_tag)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intercept::testing::gate;
    use crate::resolve::ImageInfo;
    use attestgate_node::FailMode;

    fn pull_request(image: &str) -> Bytes {
        let message = k8s_cri::v1::PullImageRequest {
            image: Some(k8s_cri::v1::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        grpc::frame(&message)
    }

    #[tokio::test(start_paused = true)]
    async fn a_tag_beside_a_digest_is_not_what_is_pulled() {
        let d = format!("sha256:{}", "a".repeat(64));
        let dir = tempfile::tempdir().unwrap();
        let nothing = ImageInfo {
            id: format!("sha256:{}", "e".repeat(64)),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
        };
        let policy = "admissionWhitelistPatterns:
- namePattern: registry.test/app:1.0
defaultAdmissionRule:
  evaluationMode: ALWAYS_DENY
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
";
        let closed = gate(dir.path(), policy, FailMode::Closed, nothing);
        let parts = || http::Request::new(()).into_parts().0;
        // containerd pulls the digest, whatever tag is written beside it.
        let pinned = closed
            .pull(
                Api::V1,
                parts(),
                pull_request(&format!("registry.test/app:1.0@{d}")),
                &mut Client::staying(),
            )
            .await;
        assert!(
            matches!(pinned, Err(ProxyError::Denied(_))),
            "{:?}",
            pinned.err()
        );
        // A name that does not parse is refused even with fail mode open.
        let open = gate(
            dir.path(),
            policy,
            FailMode::Open,
            ImageInfo {
                id: String::new(),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
            },
        );
        let garbage = open
            .pull(
                Api::V1,
                parts(),
                pull_request("Not/A Name"),
                &mut Client::staying(),
            )
            .await;
        assert!(
            matches!(garbage, Err(ProxyError::Denied(_))),
            "{:?}",
            garbage.err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_pull_must_do_after_its_client_left_is_bounded() {
        let (waiting, mut client) = Client::new();
        // While the client waits, the work takes as long as it takes.
        let slow = after_the_pull(&mut client, async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "decided"
        });
        assert_eq!(slow.await, Some("decided"));
        drop(waiting);
        let left = tokio::time::Instant::now();
        let stuck = after_the_pull(&mut client, std::future::pending::<()>()).await;
        assert_eq!(stuck, None);
        assert_eq!(left.elapsed(), AFTER_THE_CLIENT_LEFT);
        // What can be done in time is done.
        let quick = after_the_pull(&mut client, async {});
        assert_eq!(quick.await, Some(()));
    }

    #[tokio::test(start_paused = true)]
    async fn work_is_dropped_as_soon_as_the_client_leaves() {
        let (waiting, mut client) = Client::new();
        let dropped = std::sync::Arc::new(());
        let held = dropped.clone();
        let work = async move {
            let _held = held;
            std::future::pending::<()>().await
        };
        let gone = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(waiting);
        });
        assert_eq!(until_left(&mut client, work).await, None);
        assert_eq!(
            std::sync::Arc::strong_count(&dropped),
            1,
            "the work was dropped"
        );
        gone.await.unwrap();
    }

    #[test]
    fn only_an_image_known_by_the_pulled_name_alone_is_removed() {
        let d = format!("sha256:{}", "a".repeat(64));
        let image = ImageRef::parse("registry.test/app:2").unwrap();
        let alone = ImageInfo {
            id: "x".into(),
            repo_tags: vec!["registry.test/app:2".into()],
            repo_digests: vec![format!("registry.test/app@{d}")],
        };
        assert!(known_only_as(&alone, &image));
        let shared = ImageInfo {
            repo_tags: vec!["registry.test/app:1".into(), "registry.test/app:2".into()],
            ..alone.clone()
        };
        assert!(!known_only_as(&shared, &image));
        let elsewhere = ImageInfo {
            repo_digests: vec![format!("mirror.test/app@{d}")],
            ..alone
        };
        assert!(!known_only_as(&elsewhere, &image));
        // Pulled with no tag, it is stored as `latest`.
        let untagged = ImageRef::parse("registry.test/app").unwrap();
        let latest = ImageInfo {
            id: "x".into(),
            repo_tags: vec!["registry.test/app:latest".into()],
            repo_digests: vec![format!("registry.test/app@{d}")],
        };
        assert!(known_only_as(&latest, &untagged));
        assert!(!known_only_as(&shared, &untagged));
        // Pulled by digest, it has no tag: a tag is another name, `latest`
        // (preloaded by an import) included.
        let pinned = ImageRef::parse(&format!("registry.test/app@{d}")).unwrap();
        let by_digest = ImageInfo {
            id: "x".into(),
            repo_tags: Vec::new(),
            repo_digests: vec![format!("registry.test/app@{d}")],
        };
        assert!(known_only_as(&by_digest, &pinned));
        assert!(!known_only_as(&latest, &pinned));
    }
}
