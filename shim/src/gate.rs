//! The decision at `start` (or at each Task.Create in forward mode): before
//! containerd has a task for the container, decide its image under the
//! node's bundle and configuration — the same ones the CRI proxy uses,
//! through the same decider — and record the decision (operation
//! `TaskCreate`) in the same audit log.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use attestgate_node::hooks::NoHooks;
use attestgate_node::store::Prepared;
use attestgate_node::{
    AttestationCache, AuditLog, BundleStore, ConfigError, ConfigFile, Decider, Request, Undecidable,
};
use attestgate_policy::{Decision, ImageRef, Operation, PodContext, PodRef};

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
    pod: PodContext,
    pod_record: Option<PodRef>,
    container: Option<String>,
}

/// A decision, and why no bundle was in force when that was the case.
pub struct Verdict {
    pub decision: Decision,
    pub bundle_error: Option<String>,
}

impl Verdict {
    /// The message containerd passes on for a refusal.
    pub fn deny_message(&self) -> String {
        let mut message = format!("SignatureValidationFailed: {}", self.decision.explanation());
        if let Some(detail) = &self.bundle_error {
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
    let decision = match subject.image {
        Ok(image) => decider.decide(&request, &subject.reference, &image, started),
        Err(why) => decider.undecidable(&request, &subject.reference, why, started),
    };
    Verdict {
        decision,
        bundle_error: store.error(),
    }
}

/// Without a readable configuration we know neither the fail mode nor the
/// bundle: refused, and said why where it will be looked for.
fn unconfigured(container: &Container<'_>, e: &ConfigError) -> Verdict {
    let settings = ConfigFile::default().settings();
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
    let ContainerImage { name, digest } = match lookup(address, namespace, &id) {
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
