//! The one decider: `attestgate_policy::evaluate` and the node's rules
//! around it, for every program that decides on the node.
//!
//! - No valid bundle is `NO_POLICY`, and an image the node could not
//!   resolve because of its own failure (containerd out of reach or out of
//!   time) is `ERROR`: both are settled by the fail mode.
//! - An image that cannot be decided because of what the request or the
//!   container says, or because containerd answered with an error (not
//!   found, ambiguous), is refused whatever the fail mode. Otherwise fail
//!   mode open would admit anything named badly enough (SPEC §9).
//! - Break-glass wins over both.
//! - A record that cannot be written to the audit log turns an allow into
//!   a refusal when the node fails closed: nothing runs unrecorded.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use attestgate_policy::{
    Decision, ImageRef, ImageSubject, Operation, PlatformVerdict, PodContext, PodRef,
    RecordContext, RegistryAttestation, RegistrySignature, Settings, evaluate_platform,
    evaluate_with,
};

use crate::attestations::AttestationCache;
use crate::audit::AuditLog;
use crate::config::FailMode;
use crate::hooks::Hooks;
use crate::store::{BundleStore, LoadedBundle};

/// Why an image could not be decided, by whose failure it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecidable {
    /// containerd could not be reached: the node's failure.
    #[error("{0}")]
    Unreachable(String),
    /// containerd did not answer in time: the node's failure.
    #[error("{0}")]
    TimedOut(String),
    /// The node's own failure otherwise (an answer it cannot make sense
    /// of, a task that died).
    #[error("{0}")]
    Internal(String),
    /// containerd answered with an error: the name or id given is not
    /// there, or names more than one thing.
    #[error("{0}")]
    Answered(String),
    /// What the request or the container says cannot be decided: a name
    /// that does not parse, no image, an image with nothing to decide by.
    #[error("{0}")]
    Invalid(String),
}

impl Undecidable {
    /// Whether the fail mode settles it: only the node's own failures.
    pub fn is_node_failure(&self) -> bool {
        matches!(
            self,
            Undecidable::Unreachable(_) | Undecidable::TimedOut(_) | Undecidable::Internal(_)
        )
    }

    /// The same failure, its message put in context.
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Undecidable {
        match self {
            Undecidable::Unreachable(m) => Undecidable::Unreachable(f(m)),
            Undecidable::TimedOut(m) => Undecidable::TimedOut(f(m)),
            Undecidable::Internal(m) => Undecidable::Internal(f(m)),
            Undecidable::Answered(m) => Undecidable::Answered(f(m)),
            Undecidable::Invalid(m) => Undecidable::Invalid(f(m)),
        }
    }
}

/// What a decision is about, besides the image.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub operation: Operation,
    /// The pod as far as it is known: what the policy's rules and
    /// break-glass read.
    pub pod: &'a PodContext,
    /// The pod as recorded, when there is one.
    pub pod_ref: Option<&'a PodRef>,
    pub container: Option<&'a str>,
}

/// How continuous validation finds a running container now.
pub struct WouldDecide {
    pub decision: Decision,
    /// The bundle that decided, for the record.
    pub bundle: Arc<LoadedBundle>,
    /// Whether admission, under this node's own settings, would refuse it
    /// too. A platform policy admission does not enforce still flags a
    /// container, but stopping it would only have kubelet create it again.
    pub admission_denies: bool,
}

/// A running container continuous validation decided again, and what it
/// did about it (`logged`, `stopped`, or why the stop failed).
#[derive(Debug, Clone, Copy)]
pub struct Revalidated<'a> {
    pub container_id: &'a str,
    pub action: &'a str,
}

pub struct Decider {
    pub store: Arc<BundleStore>,
    pub evaluation: Settings,
    pub fail_mode: FailMode,
    pub audit: AuditLog,
    /// Registry signatures verified at pulls; read only when
    /// `evaluation.registry_attestors` names any attestor or the bundle's
    /// platform policy has a check they may satisfy.
    pub attestations: Option<AttestationCache>,
    hooks: Arc<dyn Hooks>,
}

impl Decider {
    pub fn new(
        store: Arc<BundleStore>,
        evaluation: Settings,
        fail_mode: FailMode,
        audit: AuditLog,
        hooks: Arc<dyn Hooks>,
    ) -> Decider {
        Decider {
            store,
            evaluation,
            fail_mode,
            audit,
            attestations: None,
            hooks,
        }
    }

    /// Decisions also count what `cache` holds for the image (SPEC §11).
    pub fn with_attestation_cache(mut self, cache: AttestationCache) -> Decider {
        self.attestations = Some(cache);
        self
    }

    /// What the attestation cache holds for `image`'s digest: nothing when
    /// registry signatures count for no attestor and for no check of the
    /// bundle's platform policy, and nothing (reported, counted) when the
    /// entry cannot be read.
    pub fn cached_attestations(&self, image: &ImageRef) -> Vec<RegistryAttestation> {
        match self.load_cached(image) {
            Ok(held) => held,
            Err(e) => {
                self.hooks.attestation_cache_unreadable();
                tracing::warn!(error = %e, "attestation cache entry left out: the decision counts the bundle's attestations only");
                Vec::new()
            }
        }
    }

    /// [`Self::cached_attestations`], an unreadable entry an error.
    fn load_cached(
        &self,
        image: &ImageRef,
    ) -> Result<Vec<RegistryAttestation>, crate::attestations::CacheError> {
        let (Some(cache), Some(digest)) = (&self.attestations, &image.digest) else {
            return Ok(Vec::new());
        };
        if self.evaluation.registry_attestors.is_none() && !self.platform_uses_registry() {
            return Ok(Vec::new());
        }
        cache.load(digest)
    }

    /// Whether the bundle in force has a platform policy with a check that
    /// registry signatures may satisfy (SPEC §12): its verdict is wanted by
    /// continuous validation whatever `platform_policy_enforce` says.
    fn platform_uses_registry(&self) -> bool {
        self.store.current().is_some_and(|current| {
            current
                .bundle
                .platform_policy()
                .is_some_and(|p| p.uses_registry_signatures())
        })
    }

    /// The platform policy's verdict on `image` in `pod` under the bundle
    /// in force, with `registry` the signatures to count (those of
    /// [`Self::cached_attestations`], or found since): for continuous
    /// validation, which evaluates it whether or not admission enforces it.
    /// Nothing is recorded. None when no bundle is in force, the bundle has
    /// no platform policy, or a synced bundle is past its expiry.
    pub fn platform_verdict(
        &self,
        reference: &str,
        image: &ImageRef,
        pod: &PodContext,
        registry: &[RegistryAttestation],
    ) -> Option<PlatformVerdict> {
        // The name as requested only labels records; the verdict reads the
        // parsed image alone.
        let _ = reference;
        let current = self.store.current()?;
        if current.lapsed(time::OffsetDateTime::now_utc()).is_some() {
            return None;
        }
        evaluate_platform(&current.bundle, &self.evaluation, image, pod, registry)
    }

    /// Decides `image` (`reference` as the request named it, for the
    /// record) under the bundle in force, and records the decision.
    pub fn decide(
        &self,
        request: &Request<'_>,
        reference: &str,
        image: &ImageRef,
        started: Instant,
    ) -> Decision {
        let registry = self.cached_attestations(image);
        self.decide_with(request, reference, image, &registry, started)
    }

    /// Whether registry signatures could change how `image` is decided:
    /// the bundle in force requires attestations it does not have (`held`:
    /// the cache's, as [`Self::cached_attestations`] read them, and any
    /// found since), from attestors registry signatures may count for; or
    /// the platform policy, enforced, denies the image for want of a
    /// signature (enforced or not: continuous validation reads its verdict
    /// from the cache). A pull waits for its lookup only then. Nothing is
    /// recorded, and the cache is not read again: a caller asking more
    /// than once reads it once.
    pub fn needs_registry(
        &self,
        reference: &str,
        image: &ImageRef,
        pod: &PodContext,
        held: &[RegistryAttestation],
    ) -> bool {
        if image.digest.is_none() {
            return false;
        }
        let Some(current) = self.store.current() else {
            return false;
        };
        // Enforced or not: continuous validation decides by the platform
        // policy offline, from what the pull left in the cache.
        let platform_counts = self.platform_uses_registry();
        if self.evaluation.registry_attestors.is_none() && !platform_counts {
            return false;
        }
        let decision = evaluate_with(
            &current.bundle,
            &self.evaluation,
            reference,
            image,
            pod,
            held,
        );
        let project_wants = decision.overridden.unwrap_or(decision.reason)
            == attestgate_policy::Reason::MissingAttestations
            && decision
                .attestors
                .iter()
                .any(|a| !a.satisfied && self.evaluation.registry_attestors.admits(&a.name));
        let platform_wants = platform_counts
            && match &decision.platform_policy {
                Some(verdict) => verdict.wants_registry_signatures(),
                None => evaluate_platform(&current.bundle, &self.evaluation, image, pod, held)
                    .is_some_and(|verdict| verdict.wants_registry_signatures()),
            };
        project_wants || platform_wants
    }

    /// Whether registry signatures may count for anything under the bundle
    /// in force: an attestor `registry_attestors` lists, or a check of its
    /// platform policy. A pull looks its image's signatures up only then.
    pub fn counts_registry_signatures(&self) -> bool {
        !self.evaluation.registry_attestors.is_none() || self.platform_uses_registry()
    }

    /// Of `signatures`, found in the registry for `signed_digest`, those
    /// that verify for some attestor registry signatures may count for in
    /// the bundle in force, or under the keys of a platform policy check
    /// (sigstore authorities, attestation authenticators), so that the
    /// check can be decided offline later: what may be cached. None
    /// without a bundle.
    pub fn verified_signatures(
        &self,
        signed_digest: &attestgate_policy::Digest,
        signatures: Vec<RegistrySignature>,
    ) -> Vec<RegistrySignature> {
        let Some(current) = self.store.current() else {
            return Vec::new();
        };
        let admitted: Vec<_> = current
            .bundle
            .attestors()
            .filter(|a| self.evaluation.registry_attestors.admits(&a.name))
            .chain(
                current
                    .bundle
                    .platform_policy()
                    .into_iter()
                    .flat_map(|p| p.registry_verifiers()),
            )
            .collect();
        let verifies = |signature: &RegistrySignature| {
            admitted.iter().any(|attestor| {
                attestgate_policy::registry::verify(attestor, signature, signed_digest).is_ok()
            })
        };
        signatures
            .into_iter()
            .filter_map(|signature| match signature {
                // An envelope's list of signatures is covered by none of
                // them: only those that verify are kept, so padding a
                // genuine envelope cannot bloat (or spoil) the cache.
                RegistrySignature::Dsse {
                    payload_type,
                    payload,
                    signatures,
                } => {
                    let kept: Vec<Vec<u8>> = signatures
                        .into_iter()
                        .filter(|one| {
                            verifies(&RegistrySignature::Dsse {
                                payload_type: payload_type.clone(),
                                payload: payload.clone(),
                                signatures: vec![one.clone()],
                            })
                        })
                        .take(1)
                        .collect();
                    (!kept.is_empty()).then_some(RegistrySignature::Dsse {
                        payload_type,
                        payload,
                        signatures: kept,
                    })
                }
                cosign => verifies(&cosign).then_some(cosign),
            })
            .collect()
    }

    /// [`Decider::decide`] with these registry signatures instead of the
    /// cache's: for a pull whose lookup found them, or for the shim, which
    /// counts only those of the cache's that bind to what runs.
    pub fn decide_with(
        &self,
        request: &Request<'_>,
        reference: &str,
        image: &ImageRef,
        registry: &[RegistryAttestation],
        started: Instant,
    ) -> Decision {
        // One load: the bundle that decides is the one the record names.
        let current = self.store.current();
        let now = time::OffsetDateTime::now_utc();
        let lapsed = current.as_ref().and_then(|loaded| loaded.lapsed(now));
        let decision = match (&current, lapsed) {
            (Some(_), Some(why)) => self.settle(
                Decision::no_policy_because(ImageSubject::from_ref(reference, image), why),
                true,
                request.pod,
            ),
            (Some(loaded), None) => evaluate_with(
                &loaded.bundle,
                &self.evaluation,
                reference,
                image,
                request.pod,
                registry,
            ),
            (None, _) => self.settle(
                Decision::no_policy(ImageSubject::from_ref(reference, image)),
                true,
                request.pod,
            ),
        };
        self.record(request, decision, current.as_deref(), started)
    }

    /// For continuous validation (SPEC §12): how `image` would be decided
    /// now for a container already running in `pod`, by the project policy
    /// and the platform policy alike, recording nothing.
    ///
    /// None when it cannot be told: no valid bundle is in force (a
    /// NO_POLICY verdict would flag, and under `cv_action = "stop"` end,
    /// every container on the node because the node lost its policy, not
    /// because any image changed), or the image's attestation-cache entry
    /// cannot be read (its signatures would be missing, not revoked).
    pub fn would_decide(
        &self,
        reference: &str,
        image: &ImageRef,
        pod: &PodContext,
    ) -> Option<WouldDecide> {
        let current = self.store.current()?;
        if current.lapsed(time::OffsetDateTime::now_utc()).is_some() {
            return None;
        }
        let registry = match self.load_cached(image) {
            Ok(held) => held,
            Err(e) => {
                self.hooks.attestation_cache_unreadable();
                tracing::warn!(error = %e, "attestation cache entry unreadable: the running container is not decided");
                return None;
            }
        };
        let under = |settings: &Settings| {
            evaluate_with(&current.bundle, settings, reference, image, pod, &registry)
        };
        // Continuous validation evaluates the platform policy as GKE's
        // does, whether or not admission enforces it: both must allow.
        let unenforced_platform =
            current.bundle.platform_policy().is_some() && !self.evaluation.platform_policy_enforce;
        let (decision, admission_denies) = if unenforced_platform {
            let decision = under(&Settings {
                platform_policy_enforce: true,
                ..self.evaluation.clone()
            });
            let admission_denies = !decision.allowed && !under(&self.evaluation).allowed;
            (decision, admission_denies)
        } else {
            let decision = under(&self.evaluation);
            let admission_denies = !decision.allowed;
            (decision, admission_denies)
        };
        Some(WouldDecide {
            decision,
            bundle: current,
            admission_denies,
        })
    }

    /// Records what continuous validation found for the running container
    /// `container_id` under `bundle` (the one [`Self::would_decide`] decided
    /// by), and `action`, what it does about it. Whether the record was
    /// written: a container is stopped only once it is.
    pub fn record_revalidation(
        &self,
        request: &Request<'_>,
        decision: Decision,
        bundle: &LoadedBundle,
        revalidated: Revalidated<'_>,
        started: Instant,
    ) -> bool {
        self.write_reporting(request, decision, Some(bundle), Some(revalidated), started)
            .1
    }

    /// An image that could not be decided, settled by whose failure it is
    /// and recorded like any decision.
    pub fn undecidable(
        &self,
        request: &Request<'_>,
        reference: &str,
        why: Undecidable,
        started: Instant,
    ) -> Decision {
        let image = match ImageRef::parse(reference) {
            Ok(parsed) => ImageSubject::from_ref(reference, &parsed),
            Err(_) => ImageSubject {
                reference: reference.to_string(),
                repository: None,
                digest: None,
            },
        };
        let node_failure = why.is_node_failure();
        let decision = self.settle(
            Decision::error(image, why.to_string()),
            node_failure,
            request.pod,
        );
        self.record(request, decision, self.store.current().as_deref(), started)
    }

    fn settle(&self, decision: Decision, node_failure: bool, pod: &PodContext) -> Decision {
        let decision = if node_failure && self.fail_mode == FailMode::Open {
            decision.failed_open()
        } else {
            decision
        };
        if pod.break_glass() {
            decision.broken_glass()
        } else {
            decision
        }
    }

    /// Writes the record; when it cannot be written, the fail mode decides.
    fn record(
        &self,
        request: &Request<'_>,
        decision: Decision,
        current: Option<&LoadedBundle>,
        started: Instant,
    ) -> Decision {
        self.write_reporting(request, decision, current, None, started)
            .0
    }

    /// [`Self::record`], for a decision about `revalidated` when given, and
    /// whether the record reached the log.
    fn write_reporting(
        &self,
        request: &Request<'_>,
        decision: Decision,
        current: Option<&LoadedBundle>,
        revalidated: Option<Revalidated<'_>>,
        started: Instant,
    ) -> (Decision, bool) {
        let ctx = RecordContext {
            operation: request.operation,
            time: time::OffsetDateTime::now_utc(),
            pod: request.pod_ref.cloned(),
            container: request.container.map(str::to_string),
            container_id: revalidated.map(|r| r.container_id.to_string()),
            action: revalidated.map(|r| r.action.to_string()),
            cluster: self.evaluation.cluster.clone(),
            bundle: current.map(|c| c.reference.clone()),
        };
        let line = decision.record_json(&ctx);
        let written = self.audit.append(&line);
        let recorded = written.is_ok();
        let decision = match written {
            Ok(()) => decision,
            Err(e) => {
                self.hooks.audit_failed();
                tracing::error!(error = %e, path = %self.audit.path().display(), record = %line, "cannot write the audit log");
                if self.fail_mode == FailMode::Closed && decision.allowed {
                    Decision::error(
                        decision.image.clone(),
                        format!(
                            "audit log {} cannot be written: {e}",
                            self.audit.path().display()
                        ),
                    )
                } else {
                    decision
                }
            }
        };
        self.hooks
            .decided(request.operation, &decision, started.elapsed());
        let operation = operation_name(request.operation);
        if decision.allowed {
            tracing::debug!(operation, reason = %decision.reason, "{}", decision.explanation());
        } else {
            tracing::info!(operation, reason = %decision.reason, "{}", decision.explanation());
        }
        (decision, recorded)
    }

    pub fn audit_path(&self) -> &Path {
        self.audit.path()
    }
}

pub fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::PullImage => "PullImage",
        Operation::CreateContainer => "CreateContainer",
        Operation::TaskCreate => "TaskCreate",
        Operation::Evaluate => "Evaluate",
        Operation::ContinuousValidation => "ContinuousValidation",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::hooks::NoHooks;
    use attestgate_policy::Reason;

    const GLASS: &str = "image-policy.k8s.io/break-glass";

    fn decider(dir: &Path, policy: Option<&str>, fail_mode: FailMode) -> Decider {
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        if let Some(policy) = policy {
            std::fs::write(bundle.join("policy.yaml"), policy).unwrap();
        }
        let store = Arc::new(BundleStore::new(bundle, Arc::new(NoHooks)));
        store.reload(true);
        Decider::new(
            store,
            Settings::default(),
            fail_mode,
            AuditLog::open(&dir.join("audit.jsonl")).unwrap(),
            Arc::new(NoHooks),
        )
    }

    const DENY: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n";

    fn glass() -> PodContext {
        let mut pod = PodContext::default();
        pod.labels.insert(GLASS.into(), "true".into());
        pod
    }

    fn request(pod: &PodContext) -> Request<'_> {
        Request {
            operation: Operation::CreateContainer,
            pod,
            pod_ref: None,
            container: Some("app"),
        }
    }

    fn lines(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn no_policy_follows_the_fail_mode_and_break_glass_wins() {
        let image = ImageRef::parse("registry.test/app:1").unwrap();
        let pod = PodContext::default();
        for (mode, allowed) in [(FailMode::Closed, false), (FailMode::Open, true)] {
            let dir = tempfile::tempdir().unwrap();
            let d = decider(dir.path(), None, mode).decide(
                &request(&pod),
                "registry.test/app:1",
                &image,
                Instant::now(),
            );
            assert_eq!((d.allowed, d.reason), (allowed, Reason::NoPolicy));
            assert_eq!(d.explanation().contains("fail mode open"), allowed);
            assert_eq!(lines(dir.path()).len(), 1);
        }
        let dir = tempfile::tempdir().unwrap();
        let glass = glass();
        let d = decider(dir.path(), None, FailMode::Closed).decide(
            &request(&glass),
            "registry.test/app:1",
            &image,
            Instant::now(),
        );
        assert!(d.allowed);
        assert_eq!(
            (d.reason, d.overridden),
            (Reason::BreakGlass, Some(Reason::NoPolicy))
        );
    }

    const ALLOW: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n";

    /// A decider over a synced bundle that allows everything, version 4,
    /// expiring `expires`.
    fn synced(dir: &Path, expires: &str, fail_mode: FailMode) -> Decider {
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            bundle.join(crate::freshness::FILE),
            format!(r#"{{"version": 4, "expires": "{expires}"}}"#),
        )
        .unwrap();
        decider(dir, Some(ALLOW), fail_mode)
    }

    #[test]
    fn a_synced_bundle_past_its_expiry_decides_nothing() {
        let image = ImageRef::parse("registry.test/app:1").unwrap();
        let pod = PodContext::default();
        let decide = |d: &Decider| {
            d.decide(
                &request(&pod),
                "registry.test/app:1",
                &image,
                Instant::now(),
            )
        };

        let dir = tempfile::tempdir().unwrap();
        let fresh = synced(dir.path(), "2999-01-01T00:00:00Z", FailMode::Closed);
        let d = decide(&fresh);
        assert_eq!((d.allowed, d.reason), (true, Reason::AlwaysAllow));
        let record: serde_json::Value = serde_json::from_str(&lines(dir.path())[0]).unwrap();
        assert_eq!(record["bundle"]["version"], 4);
        assert_eq!(record["bundle"]["expires"], "2999-01-01T00:00:00.000000Z");

        for (mode, allowed) in [(FailMode::Closed, false), (FailMode::Open, true)] {
            let dir = tempfile::tempdir().unwrap();
            let lapsed = synced(dir.path(), "2020-01-01T00:00:00Z", mode);
            assert!(
                lapsed.store.current().is_some(),
                "loaded, but not to decide"
            );
            let d = decide(&lapsed);
            assert_eq!((d.allowed, d.reason), (allowed, Reason::NoPolicy));
            assert!(
                d.explanation()
                    .contains("synced bundle version 4 expired at 2020-01-01T00:00:00.000000Z"),
                "{}",
                d.explanation()
            );
            let record: serde_json::Value = serde_json::from_str(&lines(dir.path())[0]).unwrap();
            assert_eq!(record["reason"], "NO_POLICY");
            assert_eq!(record["bundle"]["version"], 4);
        }
        // A bundle not synced has neither.
        let dir = tempfile::tempdir().unwrap();
        decide(&decider(dir.path(), Some(ALLOW), FailMode::Closed));
        let record: serde_json::Value = serde_json::from_str(&lines(dir.path())[0]).unwrap();
        assert!(record["bundle"].get("version").is_none(), "{record}");
        assert!(record["bundle"].get("expires").is_none(), "{record}");
    }

    #[test]
    fn the_fail_mode_settles_the_node_s_failures_only() {
        let pod = PodContext::default();
        let node = [
            Undecidable::Unreachable("containerd is not there".into()),
            Undecidable::TimedOut("containerd is slow".into()),
            Undecidable::Internal("lost".into()),
        ];
        let request_s = [
            Undecidable::Answered("ambiguous digest".into()),
            Undecidable::Invalid("no image".into()),
        ];
        for mode in [FailMode::Closed, FailMode::Open] {
            let dir = tempfile::tempdir().unwrap();
            let decider = decider(dir.path(), Some(DENY), mode);
            for why in node.iter().chain(&request_s) {
                let d = decider.undecidable(
                    &request(&pod),
                    "registry.test/app:1",
                    why.clone(),
                    Instant::now(),
                );
                let expected = mode == FailMode::Open && why.is_node_failure();
                assert_eq!(d.allowed, expected, "{why:?} under {mode:?}");
                assert_eq!(d.reason, Reason::Error);
                assert!(d.explanation().contains(&why.to_string()));
            }
            assert_eq!(lines(dir.path()).len(), 5);
        }
    }

    #[test]
    fn break_glass_wins_over_errors_of_either_kind() {
        let dir = tempfile::tempdir().unwrap();
        let decider = decider(dir.path(), Some(DENY), FailMode::Closed);
        let glass = glass();
        for why in [
            Undecidable::Invalid("bad name".into()),
            Undecidable::Unreachable("x".into()),
        ] {
            let d =
                decider.undecidable(&request(&glass), "registry.test/app:1", why, Instant::now());
            assert!(d.allowed);
            assert_eq!(
                (d.reason, d.overridden),
                (Reason::BreakGlass, Some(Reason::Error))
            );
        }
    }

    #[test]
    fn an_allow_that_cannot_be_recorded_is_refused_when_failing_closed() {
        const ALLOW: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n";
        let image = ImageRef::parse("registry.test/app:1").unwrap();
        let pod = PodContext::default();
        for (mode, allowed) in [(FailMode::Closed, false), (FailMode::Open, true)] {
            let dir = tempfile::tempdir().unwrap();
            let decider = decider(dir.path(), Some(ALLOW), mode);
            let log = dir.path().join("audit.jsonl");
            std::fs::rename(&log, dir.path().join("rotated")).unwrap();
            std::fs::create_dir(&log).unwrap();
            decider.audit.reopen().unwrap_err();
            let d = decider.decide(
                &request(&pod),
                "registry.test/app:1",
                &image,
                Instant::now(),
            );
            assert_eq!(d.allowed, allowed, "{mode:?}");
            if !allowed {
                assert_eq!(d.reason, Reason::Error);
                assert!(d.explanation().contains("cannot be written"));
            }
        }
    }

    #[test]
    fn the_record_names_the_bundle_that_decided() {
        let dir = tempfile::tempdir().unwrap();
        let decider = decider(dir.path(), Some(DENY), FailMode::Closed);
        let image = ImageRef::parse("registry.test/app:1").unwrap();
        let pod = PodContext::default();
        let d = decider.decide(
            &request(&pod),
            "registry.test/app:1",
            &image,
            Instant::now(),
        );
        assert_eq!(d.reason, Reason::AlwaysDeny);
        let digest = decider.store.current().unwrap().reference.digest.clone();
        let line = &lines(dir.path())[0];
        assert!(
            line.contains(&digest) && line.contains("\"container\":\"app\""),
            "{line}"
        );
    }
    const PLATFORM_DENY_PROD: &str = "gkePolicy:\n  checkSets:\n  - displayName: prod\n    scope:\n      kubernetesNamespace: prod\n    imageAllowlist:\n      allowPattern: [\"registry.test/exempt/*\"]\n    checks:\n    - displayName: nothing-runs\n      alwaysDeny: true\n";

    /// A decider over a bundle that allows everything, with `platform` as
    /// its platform policy and `enforce` as `platform_policy_enforce`.
    fn platform_decider(dir: &Path, platform: &str, enforce: bool, policy: &str) -> Decider {
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("platform-policy.yaml"), platform).unwrap();
        let mut decider = decider(dir, Some(policy), FailMode::Closed);
        decider.evaluation.platform_policy_enforce = enforce;
        decider
    }

    fn in_namespace(namespace: &str) -> PodContext {
        PodContext {
            namespace: Some(namespace.to_string()),
            ..PodContext::default()
        }
    }

    #[test]
    fn an_enforced_platform_policy_must_allow_too_and_is_recorded() {
        let image = ImageRef::parse("registry.test/app:1").unwrap();
        let prod = in_namespace("prod");
        for operation in [
            Operation::PullImage,
            Operation::CreateContainer,
            Operation::TaskCreate,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let decider = platform_decider(dir.path(), PLATFORM_DENY_PROD, true, ALLOW);
            let request = Request {
                operation,
                pod: &prod,
                pod_ref: None,
                container: Some("app"),
            };
            let d = decider.decide(&request, "registry.test/app:1", &image, Instant::now());
            assert_eq!((d.allowed, d.reason), (false, Reason::PlatformPolicy));
            assert!(
                d.explanation().contains(
                    "denied by platform policy check set prod: check nothing-runs (alwaysDeny) failed"
                ),
                "{}",
                d.explanation()
            );
            let record: serde_json::Value = serde_json::from_str(&lines(dir.path())[0]).unwrap();
            assert_eq!(record["reason"], "PLATFORM_POLICY");
            assert_eq!(record["platform_policy"]["check_set"], "prod");
            assert_eq!(record["platform_policy"]["conforms"], false);
            assert_eq!(record["platform_policy"]["enforced"], true);
            assert_eq!(
                record["platform_policy"]["checks"][0]["name"],
                "nothing-runs"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let decider = platform_decider(dir.path(), PLATFORM_DENY_PROD, true, ALLOW);
        // Outside the check set's scope, and exempted by it: allowed.
        let other = in_namespace("dev");
        let d = decider.decide(
            &request(&other),
            "registry.test/app:1",
            &image,
            Instant::now(),
        );
        assert_eq!((d.allowed, d.reason), (true, Reason::AlwaysAllow));
        let exempt = ImageRef::parse("registry.test/exempt/app:1").unwrap();
        let d = decider.decide(
            &request(&prod),
            "registry.test/exempt/app:1",
            &exempt,
            Instant::now(),
        );
        assert!(d.allowed);
        // Break-glass wins over a platform denial as over any.
        let mut glass = glass();
        glass.namespace = Some("prod".into());
        let d = decider.decide(
            &request(&glass),
            "registry.test/app:1",
            &image,
            Instant::now(),
        );
        assert_eq!(
            (d.allowed, d.reason, d.overridden),
            (true, Reason::BreakGlass, Some(Reason::PlatformPolicy))
        );
        // A project rule in dry run makes the platform denial a dry run too.
        let dir = tempfile::tempdir().unwrap();
        let dry = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: DRYRUN_AUDIT_LOG_ONLY\n";
        let decider = platform_decider(dir.path(), PLATFORM_DENY_PROD, true, dry);
        let d = decider.decide(
            &request(&prod),
            "registry.test/app:1",
            &image,
            Instant::now(),
        );
        assert_eq!(
            (d.allowed, d.reason, d.overridden),
            (true, Reason::DryRun, Some(Reason::PlatformPolicy))
        );
        let record: serde_json::Value = serde_json::from_str(&lines(dir.path())[0]).unwrap();
        assert_eq!(record["enforced"], false);
        assert_eq!(record["platform_policy"]["conforms"], false);
    }

    #[test]
    fn an_unenforced_platform_policy_is_ignored_at_admission_but_evaluated_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let decider = platform_decider(dir.path(), PLATFORM_DENY_PROD, false, ALLOW);
        let image = ImageRef::parse("registry.test/app:1").unwrap();
        let prod = in_namespace("prod");
        let d = decider.decide(
            &request(&prod),
            "registry.test/app:1",
            &image,
            Instant::now(),
        );
        assert_eq!((d.allowed, d.reason), (true, Reason::AlwaysAllow));
        assert!(!lines(dir.path())[0].contains("platform_policy"));
        // Continuous validation asks without recording anything.
        let verdict = decider
            .platform_verdict("registry.test/app:1", &image, &prod, &[])
            .unwrap();
        assert!(!verdict.conforms && !verdict.enforced);
        assert_eq!(verdict.check_set.as_deref(), Some("prod"));
        assert_eq!(lines(dir.path()).len(), 1);
        // No platform policy, no verdict.
        let dir = tempfile::tempdir().unwrap();
        let plain = decider_with_policy(dir.path(), ALLOW);
        assert!(
            plain
                .platform_verdict("registry.test/app:1", &image, &prod, &[])
                .is_none()
        );
    }

    fn decider_with_policy(dir: &Path, policy: &str) -> Decider {
        decider(dir, Some(policy), FailMode::Closed)
    }

    fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = std::process::Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl {args:?}");
        out.stdout
    }

    #[test]
    fn signatures_under_platform_keys_are_kept_and_read_back_without_registry_attestors() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let key_path = key.to_str().unwrap();
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                key_path,
            ],
            None,
        );
        let public =
            String::from_utf8(openssl(&["pkey", "-pubout", "-in", key_path], None)).unwrap();
        let pem: String = public
            .lines()
            .map(|l| format!("                {l}\n"))
            .collect();
        let platform = format!(
            "gkePolicy:\n  checkSets:\n  - checks:\n    - displayName: signed\n      sigstoreSignatureCheck:\n        sigstoreAuthorities:\n        - publicKeySet:\n            publicKeys:\n            - publicKeyPem: |\n{pem}"
        );
        let mut decider = platform_decider(dir.path(), &platform, true, ALLOW);
        assert!(decider.evaluation.registry_attestors.is_none());
        let cache = AttestationCache::new(dir.path().join("cache"));
        decider = decider.with_attestation_cache(cache.clone());

        let digest =
            attestgate_policy::Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let payload = format!(
            "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"registry.test/app\"}},\"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
        )
        .into_bytes();
        let signature = openssl(&["dgst", "-sha256", "-sign", key_path], Some(&payload));
        let good = RegistrySignature::Cosign {
            payload: payload.clone(),
            signature,
        };
        let forged = RegistrySignature::Cosign {
            payload,
            signature: vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
        };
        let kept = decider.verified_signatures(&digest, vec![good.clone(), forged]);
        assert_eq!(kept, vec![good]);

        let image = ImageRef::parse(&format!("registry.test/app@{digest}")).unwrap();
        let pod = PodContext::default();
        assert!(decider.needs_registry("registry.test/app", &image, &pod, &[]));
        cache
            .store(
                &digest,
                &[crate::attestations::Found {
                    signed_digest: digest.clone(),
                    found_in: "registry.test/app".into(),
                    verified: kept,
                }],
            )
            .unwrap();
        let held = decider.cached_attestations(&image);
        assert_eq!(held.len(), 1, "the cache is read for the platform policy");
        assert!(!decider.needs_registry("registry.test/app", &image, &pod, &held));
        let d = decider.decide(&request(&pod), "registry.test/app", &image, Instant::now());
        assert_eq!(
            (d.allowed, d.reason),
            (true, Reason::AlwaysAllow),
            "{}",
            d.explanation()
        );
        assert!(d.platform_policy.unwrap().conforms);

        // Unenforced, a pull still looks the signatures up and waits for
        // them: continuous validation decides by the platform policy from
        // what the pull left in the cache.
        decider.evaluation.platform_policy_enforce = false;
        assert!(decider.counts_registry_signatures());
        assert!(decider.needs_registry("registry.test/app", &image, &pod, &[]));
        assert!(!decider.needs_registry("registry.test/app", &image, &pod, &held));
    }
}
