//! The decision at `start`: before containerd has a task for the container,
//! decide its image under the node's bundle and configuration — the same
//! ones the CRI proxy uses — and record the decision (operation
//! `TaskCreate`) in the same audit log.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use attestgate_policy::config::ConfigFile;
use attestgate_policy::decision::{BundleRef, audit_line, format_time};
use attestgate_policy::{
    Bundle, Decision, FailMode, ImageRef, ImageSubject, NodeConfig, Operation, PodContext, PodRef,
    RecordContext, evaluate,
};

use crate::args::Invocation;
use crate::containerd::{ContainerImage, Containerd, LookupError};
use crate::spec::SpecContext;

/// Everything about the container that the decision and its record need.
struct Subject {
    reference: String,
    image: Result<ImageRef, Undecidable>,
    pod: PodContext,
    pod_record: Option<PodRef>,
    container: Option<String>,
}

/// Why an image could not be decided.
struct Undecidable {
    message: String,
    /// The container itself is the cause (it has no image, or a name that
    /// cannot be read): refused whatever the fail mode, which is for the
    /// node's own failures; otherwise fail mode open would run any
    /// container created without an image (`ctr run --rootfs`).
    refuse: bool,
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

/// Decides the container `invocation` names, whose task bundle is
/// `bundle_dir` (or `-bundle`), asking containerd through `client` (or a
/// new connection). A decision that cannot be written to the audit log is
/// settled by the fail mode.
pub fn decide(
    invocation: &Invocation,
    bundle_dir: &Path,
    client: Option<Result<Containerd, LookupError>>,
) -> Verdict {
    let loaded = ConfigFile::discover(None)
        .and_then(|(file, _)| file.node_config().map(|node| (file, node)));
    decide_with(invocation, bundle_dir, client, loaded)
}

pub fn decide_with(
    invocation: &Invocation,
    bundle_dir: &Path,
    client: Option<Result<Containerd, LookupError>>,
    loaded: Result<(ConfigFile, NodeConfig), attestgate_policy::config::ConfigError>,
) -> Verdict {
    let (config, node) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            // Without a readable configuration we know neither the fail mode
            // nor the bundle: refuse, and say why where it will be looked for.
            let subject = ImageSubject {
                reference: invocation.id.clone().unwrap_or_default(),
                repository: None,
                digest: None,
            };
            let decision =
                Decision::error(subject, format!("configuration: {e}"), FailMode::Closed);
            let _ = append(
                &ConfigFile::default().audit_log_path(),
                &record(&decision, None, None, &NodeConfig::default(), None),
            );
            return Verdict {
                decision,
                bundle_error: None,
            };
        }
    };
    let bundle_dir = invocation
        .bundle
        .as_deref()
        .map(PathBuf::from)
        .unwrap_or_else(|| bundle_dir.to_path_buf());

    // The bundle is read while containerd is asked about the image: the two
    // are independent and together are most of the time `start` adds.
    let policy_dir = config.bundle_dir();
    let (loaded, subject) = std::thread::scope(|scope| {
        let loading = scope.spawn(|| {
            let loaded_at = format_time(time::OffsetDateTime::now_utc());
            Bundle::load(&policy_dir)
                .map(|bundle| {
                    let reference = BundleRef {
                        digest: bundle.digest().to_string(),
                        loaded_at,
                    };
                    (bundle, reference)
                })
                .map_err(|e| format!("bundle {}: {e}", policy_dir.display()))
        });
        let subject = subject(invocation, &bundle_dir, client);
        let loaded = loading
            .join()
            .unwrap_or_else(|_| Err(format!("bundle {}: loading failed", policy_dir.display())));
        (loaded, subject)
    });

    // No valid bundle is NO_POLICY, which the fail mode settles.
    let (bundle, bundle_ref, bundle_error) = match loaded {
        Ok((bundle, reference)) => (Some(bundle), Some(reference), None),
        Err(e) => (None, None, Some(e)),
    };

    let mut decision = match &subject.image {
        Ok(image) => evaluate(
            bundle.as_ref(),
            &node,
            &subject.reference,
            image,
            &subject.pod,
        ),
        Err(undecidable) => {
            let image = match ImageRef::parse(&subject.reference) {
                Ok(parsed) => ImageSubject::from_ref(&subject.reference, &parsed),
                Err(_) => ImageSubject {
                    reference: subject.reference.clone(),
                    repository: None,
                    digest: None,
                },
            };
            let fail_mode = if undecidable.refuse {
                FailMode::Closed
            } else {
                node.fail_mode
            };
            let decision = Decision::error(image, undecidable.message.clone(), fail_mode);
            if subject.pod.break_glass() {
                decision.broken_glass()
            } else {
                decision
            }
        }
    };

    let line = record(
        &decision,
        subject.pod_record.clone(),
        subject.container.clone(),
        &node,
        bundle_ref,
    );
    let audit_log = config.audit_log_path();
    if let Err(e) = append(&audit_log, &line)
        && node.fail_mode == FailMode::Closed
        && decision.allowed
    {
        decision = Decision::error(
            decision.image.clone(),
            format!("audit log {} cannot be written: {e}", audit_log.display()),
            FailMode::Closed,
        );
    }
    Verdict {
        decision,
        bundle_error,
    }
}

fn subject(
    invocation: &Invocation,
    bundle_dir: &Path,
    client: Option<Result<Containerd, LookupError>>,
) -> Subject {
    let id = invocation.id.clone().unwrap_or_default();
    let spec = SpecContext::read(bundle_dir);
    let (pod, pod_record, container) = match &spec {
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
    let fail = |reference: String, message: String, refuse: bool| Subject {
        reference,
        image: Err(Undecidable { message, refuse }),
        pod: pod.clone(),
        pod_record: pod_record.clone(),
        container: container.clone(),
    };
    let spec = match spec {
        Ok(spec) => spec,
        // A spec runc could not run either is the container's doing; one
        // that cannot be read at all is the node's.
        Err(e) => {
            let refuse = matches!(e, crate::spec::SpecError::Parse { .. });
            return fail(id, e.to_string(), refuse);
        }
    };
    let (Some(address), Some(namespace), false) = (
        invocation.address.as_deref(),
        invocation.namespace.as_deref(),
        id.is_empty(),
    ) else {
        return fail(
            id,
            "containerd did not say which container (-address, -namespace, -id)".into(),
            true,
        );
    };
    let client = client.unwrap_or_else(|| Containerd::connect(address));
    let ContainerImage { name, digest } =
        match client.and_then(|c| c.container_image(namespace, &id)) {
            Ok(found) => found,
            Err(e) => {
                let reference = spec.image_name().map_or_else(|| id.clone(), str::to_string);
                // The container's own records: no image, an image record
                // removed under it, or one with no content. containerd being
                // unreachable or slow is the node's failure.
                let refuse = match &e {
                    LookupError::NoImage(_) | LookupError::NoDigest(_) => true,
                    LookupError::Call { status, .. } => status.code() == tonic::Code::NotFound,
                    _ => false,
                };
                return fail(reference, e.to_string(), refuse);
            }
        };
    let image = ImageRef::parse(&name)
        .map_err(|e| format!("cannot parse image name {name:?}: {e}"))
        .and_then(|image| {
            attestgate_policy::Digest::parse(&digest)
                .map(|d| image.with_digest(d))
                .map_err(|e| format!("image {name}: {e}"))
        })
        .map_err(|message| Undecidable {
            message,
            refuse: true,
        });
    Subject {
        reference: name,
        image,
        pod,
        pod_record,
        container,
    }
}

fn record(
    decision: &Decision,
    pod: Option<PodRef>,
    container: Option<String>,
    node: &NodeConfig,
    bundle: Option<BundleRef>,
) -> String {
    decision.record_json(&RecordContext {
        operation: Operation::TaskCreate,
        time: time::OffsetDateTime::now_utc(),
        pod,
        container,
        cluster: node.cluster.clone(),
        bundle,
    })
}

/// One `write` of the whole line on an `O_APPEND` file: the proxy and other
/// shims append to the same log at the same time without interleaving.
fn append(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    file.write_all(&audit_line(&file, line))
}
