//! The decision at `start` (or at each Task.Create in forward mode): before
//! containerd has a task for the container, decide its image under the
//! node's bundle and configuration — the same ones the CRI proxy uses,
//! through the same decider — and record the decision (operation
//! `TaskCreate`) in the same audit log.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use attestgate_node::content::{ContentStore, PlatformsPresent};
use attestgate_node::hooks::NoHooks;
use attestgate_node::store::Prepared;
use attestgate_node::{
    AttestationCache, AuditLog, BundleStore, ConfigError, ConfigFile, Decider, Request, Undecidable,
};
use attestgate_policy::{Decision, ImageRef, Operation, PodContext, PodRef, RegistryAttestation};

use crate::containerd::{ContainerImage, Containerd, LookupError};
use crate::spec::SpecContext;

/// The container to decide, as containerd names it.
#[derive(Debug, Clone, Copy)]
pub struct Container<'a> {
    /// containerd's gRPC socket, to ask about the container's image.
    pub address: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub id: &'a str,
    /// The task bundle containerd wrote: the OCI spec, with the CRI's
    /// annotations when the CRI made the container.
    pub task_bundle: &'a Path,
}

/// Everything about the container that the decision and its record need.
struct Subject {
    reference: String,
    image: Result<ImageRef, Undecidable>,
    /// The image record targets an index, not the manifest that runs.
    index: bool,
    pod: PodContext,
    pod_record: Option<PodRef>,
    container: Option<String>,
}

/// A decision, and why no bundle was in force when that was the case.
pub struct Verdict {
    pub decision: Decision,
    pub bundle_error: Option<String>,
    /// Why cached signatures were not counted, when some were not.
    pub left_out: Option<String>,
}

impl Verdict {
    /// The message containerd passes on for a refusal.
    pub fn deny_message(&self) -> String {
        let mut message = format!("SignatureValidationFailed: {}", self.decision.explanation());
        for detail in self.bundle_error.iter().chain(&self.left_out) {
            message.push_str(" (");
            message.push_str(detail);
            message.push(')');
        }
        message
    }
}

/// Asks containerd for a container's image: `(address, namespace, id)`.
pub type Lookup<'l> = dyn FnMut(&str, &str, &str) -> Result<ContainerImage, LookupError> + 'l;

/// A lookup through `client` when given (already connected, or why it
/// could not be), else through a connection of its own.
pub fn lookup_once(
    client: Option<Result<Containerd, LookupError>>,
) -> impl FnMut(&str, &str, &str) -> Result<ContainerImage, LookupError> {
    let mut client = client;
    move |address, namespace, id| {
        client
            .take()
            .unwrap_or_else(|| Containerd::connect(address))?
            .container_image(namespace, id)
    }
}

/// Decides `container` under the configuration `config` (as read, or why
/// it could not be), asking containerd through `lookup`.
pub fn decide(
    container: &Container<'_>,
    lookup: &mut Lookup<'_>,
    config: Result<ConfigFile, ConfigError>,
) -> Verdict {
    let started = Instant::now();
    let config = match config {
        Ok(config) => config,
        Err(e) => return unconfigured(container, &e),
    };
    let settings = config.settings();
    let store = Arc::new(BundleStore::new(settings.bundle.clone(), Arc::new(NoHooks)));
    // The bundle is read while containerd is asked about the image: the two
    // are independent and together are most of the time `start` adds.
    // The index (or, without one, the whole bundle) is read while
    // containerd is asked about the image: the two are independent.
    let subject = std::thread::scope(|scope| {
        let preparing = scope.spawn(|| store.prepare());
        let subject = subject(container, lookup);
        // A load that panicked leaves no bundle: NO_POLICY, settled below.
        if let Ok(Prepared::Indexed(found)) = preparing.join() {
            let digest = subject.image.as_ref().ok().and_then(|i| i.digest.as_ref());
            store.load_indexed(&found, &digest.into_iter().collect::<Vec<_>>());
        }
        subject
    });
    let decider = Decider::new(
        store.clone(),
        settings.evaluation,
        settings.fail_mode,
        AuditLog::at(&settings.audit_log),
        Arc::new(NoHooks),
    )
    .with_attestation_cache(AttestationCache::new(settings.attestation_cache));
    let request = Request {
        operation: Operation::TaskCreate,
        pod: &subject.pod,
        pod_ref: subject.pod_record.as_ref(),
        container: subject.container.as_deref(),
    };
    let mut left_out = None;
    let decision = match subject.image {
        Ok(image) => {
            let cached = decider.cached_attestations(&image);
            let (counted, why) = counted_for_what_runs(cached, &image, subject.index, || {
                platforms_present(container, &subject.reference)
            });
            left_out = why;
            decider.decide_with(&request, &subject.reference, &image, &counted, started)
        }
        Err(why) => decider.undecidable(&request, &subject.reference, why, started),
    };
    Verdict {
        decision,
        bundle_error: store.error(),
        left_out,
    }
}

/// Of the cached registry signatures for `image`, those that count for the
/// container. A signature found beside a platform manifest was cached for
/// the index the proxy pulled it through (SPEC §11), and the CRI runs that
/// platform; the shim also sees containers made for another platform of
/// the same index (`ctr run --platform`), and cannot tell which one a
/// container runs. So such a signature counts here only while its manifest
/// is the one platform of the index on the node, as `present` (asked only
/// then) reads from containerd's content store. An index's own signature
/// covers each of its platforms, and counts as it is. Also returns why
/// signatures were left out, for the refusal's message.
fn counted_for_what_runs(
    cached: Vec<RegistryAttestation>,
    image: &ImageRef,
    index: bool,
    present: impl FnOnce() -> Result<Option<PlatformsPresent>, String>,
) -> (Vec<RegistryAttestation>, Option<String>) {
    let Some(digest) = &image.digest else {
        return (cached, None);
    };
    if !index || cached.iter().all(|a| &a.signed_digest == digest) {
        return (cached, None);
    }
    let cached_len = cached.len();
    let (only, left_out) = match present() {
        Ok(Some(platforms)) if &platforms.index == digest => match platforms.present.as_slice() {
            [only] => (Some(only.clone()), None),
            [] => (
                None,
                Some("signatures of platform manifests not counted: none of the index's platforms is on the node".into()),
            ),
            several => (
                None,
                Some(format!(
                    "signatures of platform manifests not counted: the node holds {} of the \
                     index's platforms, and which one the container runs cannot be told",
                    several.len()
                )),
            ),
        },
        Ok(_) => (
            None,
            Some(
                "signatures of platform manifests not counted: the image is no longer that index"
                    .into(),
            ),
        ),
        Err(e) => (
            None,
            Some(format!(
                "signatures of platform manifests not counted: containerd's content store \
                 could not say which platform is on the node: {e}"
            )),
        ),
    };
    let counted = cached
        .into_iter()
        .filter(|a| &a.signed_digest == digest || Some(&a.signed_digest) == only.as_ref())
        .collect::<Vec<_>>();
    // The one platform held may be another than any that was signed.
    let left_out = left_out.or_else(|| {
        (counted.len() < cached_len).then(|| {
            "signatures of platform manifests not counted: the platform of the index on the \
             node is not the one they were made for"
                .to_string()
        })
    });
    (counted, left_out)
}

/// The platforms of the index `name` that containerd holds, asked on a
/// connection of its own: rarely needed, so the common start pays nothing.
fn platforms_present(
    container: &Container<'_>,
    name: &str,
) -> Result<Option<PlatformsPresent>, String> {
    let (Some(address), Some(namespace)) = (container.address, container.namespace) else {
        return Err("containerd did not say where it is (-address, -namespace)".into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    let store = ContentStore::new(
        &crate::containerd::socket_path(address),
        namespace,
        crate::containerd::LOOKUP_TIMEOUT,
    );
    runtime
        .block_on(store.platforms_present(name))
        .map_err(|e| e.to_string())
}

/// Without a readable configuration we know neither the fail mode nor the
/// bundle: refused, and said why where it will be looked for: the audit
/// log the file names, if it still names one, else the default.
fn unconfigured(container: &Container<'_>, e: &ConfigError) -> Verdict {
    let mut settings = ConfigFile::default().settings();
    if let Some(log) = e.path().and_then(attestgate_node::config::audit_log_named) {
        settings.audit_log = log;
    }
    let decider = Decider::new(
        Arc::new(BundleStore::new(settings.bundle, Arc::new(NoHooks))),
        settings.evaluation,
        attestgate_node::FailMode::Closed,
        AuditLog::at(&settings.audit_log),
        Arc::new(NoHooks),
    );
    let pod = PodContext::default();
    let request = Request {
        operation: Operation::TaskCreate,
        pod: &pod,
        pod_ref: None,
        container: None,
    };
    let decision = decider.undecidable(
        &request,
        container.id,
        Undecidable::Invalid(format!("configuration: {e}")),
        Instant::now(),
    );
    Verdict {
        decision,
        bundle_error: None,
        left_out: None,
    }
}

fn subject(container: &Container<'_>, lookup: &mut Lookup<'_>) -> Subject {
    let id = container.id.to_string();
    let spec = SpecContext::read(container.task_bundle);
    let (pod, pod_record, container_name) = match &spec {
        Ok(spec) => match spec.pod() {
            // A sandbox is the pod itself, not one of its containers.
            Some((pod, record)) if spec.is_sandbox() => (pod, Some(record), None),
            Some((pod, record)) => (
                pod,
                Some(record),
                Some(spec.container_name().unwrap_or(&id).to_string()),
            ),
            None => (spec.plain_context(), None, Some(id.clone())),
        },
        Err(_) => (PodContext::default(), None, Some(id.clone())),
    };
    let fail = |reference: String, why: Undecidable| Subject {
        reference,
        image: Err(why),
        index: false,
        pod: pod.clone(),
        pod_record: pod_record.clone(),
        container: container_name.clone(),
    };
    let spec = match spec {
        Ok(spec) => spec,
        // A spec runc could not run either is the container's doing; one
        // that cannot be read at all is the node's.
        Err(e) => {
            let why = match e {
                crate::spec::SpecError::Parse { .. } => Undecidable::Invalid(e.to_string()),
                crate::spec::SpecError::Read { .. } => Undecidable::Internal(e.to_string()),
            };
            return fail(id, why);
        }
    };
    let (Some(address), Some(namespace), false) =
        (container.address, container.namespace, id.is_empty())
    else {
        return fail(
            id,
            Undecidable::Invalid(
                "containerd did not say which container (-address, -namespace, -id)".into(),
            ),
        );
    };
    let ContainerImage {
        name,
        digest,
        index,
    } = match lookup(address, namespace, &id) {
        Ok(found) => found,
        Err(e) => {
            let reference = spec.image_name().map_or_else(|| id.clone(), str::to_string);
            return fail(reference, failure(&e));
        }
    };
    let image = ImageRef::parse(&name)
        .map_err(|e| format!("cannot parse image name {name:?}: {e}"))
        .and_then(|image| {
            attestgate_policy::Digest::parse(&digest)
                .map(|d| image.with_digest(d))
                .map_err(|e| format!("image {name}: {e}"))
        })
        .map_err(Undecidable::Invalid);
    Subject {
        reference: name,
        image,
        index,
        pod,
        pod_record,
        container: container_name,
    }
}

/// Whose failure a lookup's error is. The container's own records (no
/// image, an image record removed under it, one with no content) are the
/// container's; containerd being unreachable or slow is the node's.
fn failure(e: &LookupError) -> Undecidable {
    let message = e.to_string();
    match e {
        LookupError::NoImage(_) | LookupError::NoDigest(_) => Undecidable::Invalid(message),
        LookupError::Call { status, .. } if status.code() == tonic::Code::NotFound => {
            Undecidable::Answered(message)
        }
        LookupError::Connect { .. } => Undecidable::Unreachable(message),
        LookupError::Timeout(_) => Undecidable::TimedOut(message),
        _ => Undecidable::Internal(message),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use attestgate_policy::{Digest, RegistrySignature};

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn signed(d: &Digest) -> RegistryAttestation {
        RegistryAttestation {
            signature: RegistrySignature::Cosign {
                payload: b"{}".to_vec(),
                signature: b"sig".to_vec(),
            },
            signed_digest: d.clone(),
            found_in: "registry.test/app".into(),
        }
    }

    fn image(d: &Digest) -> ImageRef {
        ImageRef::parse("registry.test/app:1")
            .unwrap()
            .with_digest(d.clone())
    }

    fn signed_digests(kept: &(Vec<RegistryAttestation>, Option<String>)) -> Vec<Digest> {
        kept.0.iter().map(|a| a.signed_digest.clone()).collect()
    }

    #[test]
    fn a_platform_signature_counts_for_its_index_only_while_it_is_the_one_platform_held() {
        let (index, amd64, arm64) = (digest('c'), digest('a'), digest('b'));
        let cached = vec![signed(&index), signed(&amd64)];
        let held = |present: Vec<Digest>| {
            let index = index.clone();
            move || Ok(Some(PlatformsPresent { index, present }))
        };
        let one = counted_for_what_runs(
            cached.clone(),
            &image(&index),
            true,
            held(vec![amd64.clone()]),
        );
        assert_eq!(signed_digests(&one), vec![index.clone(), amd64.clone()]);
        // Another platform fetched beside it: which one runs is unknown.
        let two = counted_for_what_runs(
            cached.clone(),
            &image(&index),
            true,
            held(vec![amd64.clone(), arm64.clone()]),
        );
        assert_eq!(signed_digests(&two), vec![index.clone()]);
        assert!(two.1.unwrap().contains("holds 2 of the index's platforms"));
        assert_eq!(one.1, None);
        // Only the other platform held.
        let other = counted_for_what_runs(cached.clone(), &image(&index), true, held(vec![arm64]));
        assert_eq!(signed_digests(&other), vec![index.clone()]);
        assert!(other.1.unwrap().contains("not the one they were made for"));
        let none = counted_for_what_runs(cached.clone(), &image(&index), true, held(vec![]));
        assert_eq!(signed_digests(&none), vec![index.clone()]);
        assert!(none.1.unwrap().contains("none of the index's platforms"));
        // containerd cannot say: not counted.
        let unknown = counted_for_what_runs(cached.clone(), &image(&index), true, || {
            Err("down".to_string())
        });
        assert_eq!(signed_digests(&unknown), vec![index.clone()]);
        assert!(unknown.1.unwrap().contains("down"));
    }

    #[test]
    fn an_index_signature_counts_for_a_platform_manifest_without_asking() {
        let (index, amd64) = (digest('c'), digest('a'));
        let kept = counted_for_what_runs(
            vec![signed(&index), signed(&amd64)],
            &image(&amd64),
            false,
            || panic!("not asked"),
        );
        assert_eq!(signed_digests(&kept), vec![index, amd64.clone()]);
        // Nothing linked: containerd is not asked either.
        let own = counted_for_what_runs(vec![signed(&amd64)], &image(&amd64), true, || {
            panic!("not asked")
        });
        assert_eq!(signed_digests(&own), vec![amd64]);
    }
}
