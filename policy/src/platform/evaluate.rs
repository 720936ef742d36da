//! A platform policy applied to one image and pod: which check set, and
//! each of its checks' result. Pure and synchronous, like the project
//! policy's evaluation; what a verdict does to an admission is for
//! [`crate::evaluate_with`] to say.

use crate::bundle::Bundle;
use crate::context::{PodContext, Settings};
use crate::glob::NamePattern;
use crate::model::{Attestor, KeyMaterial, Occurrence, Signature};
use crate::payload::check_payload;
use crate::reference::{Digest, ImageRef};
use crate::registry::{RegistryAttestation, RegistrySignature};

use super::model::{Check, CheckKind, CheckSet, PlatformPolicy, Scope};
pub use crate::platform_verdict::{CheckResult, PlatformVerdict};

/// Applies the bundle's platform policy to `image` in `pod`; none when the
/// bundle has no platform policy. `registry` are the signatures found
/// beside the image (SPEC §11), as for [`crate::evaluate_with`]. The
/// verdict is not enforced: [`PlatformVerdict::enforced`] is false.
pub fn evaluate_platform(
    bundle: &Bundle,
    settings: &Settings,
    image: &ImageRef,
    pod: &PodContext,
    registry: &[RegistryAttestation],
) -> Option<PlatformVerdict> {
    let policy = bundle.platform_policy()?;
    Some(verdict(policy, bundle, settings, image, pod, registry))
}

fn verdict(
    policy: &PlatformPolicy,
    bundle: &Bundle,
    settings: &Settings,
    image: &ImageRef,
    pod: &PodContext,
    registry: &[RegistryAttestation],
) -> PlatformVerdict {
    let mut verdict = PlatformVerdict {
        policy: policy.name.clone(),
        check_set: None,
        scope: None,
        conforms: true,
        enforced: false,
        exempted_by: None,
        checks: Vec::new(),
        config_errors: Vec::new(),
    };
    if let Some(pattern) = first_match(&policy.image_allowlist, image) {
        verdict.exempted_by = Some(pattern.to_string());
        return verdict;
    }
    // GKE: with no check set to apply, every image is allowed.
    let set = match choose(&policy.check_sets, pod) {
        Choice::None => return verdict,
        Choice::Applies(set) => set,
        Choice::Undecided(set) => {
            // Falling through to a later, looser set (or to "no set
            // applies") would fail open: the pod may well run as this
            // set's service account.
            verdict.check_set = Some(set.name.clone());
            verdict.scope = Some(set.scope.label());
            verdict.conforms = false;
            verdict.config_errors.push(format!(
                "check set {} (scope {}): the node cannot tell the pod's service account, \
                 so the check set that applies is unknown",
                set.name,
                set.scope.label()
            ));
            return verdict;
        }
    };
    verdict.check_set = Some(set.name.clone());
    verdict.scope = Some(set.scope.label());
    if let Some(pattern) = first_match(&set.image_allowlist, image) {
        verdict.exempted_by = Some(pattern.to_string());
        return verdict;
    }
    let context = Context {
        bundle,
        settings,
        image,
        registry,
    };
    for check in &set.checks {
        let (passed, detail) = context.run(check);
        if let CheckKind::Unsupported { kind } = &check.kind
            && !passed
        {
            verdict.config_errors.push(format!(
                "check {} ({kind}) cannot be evaluated on the node",
                check.name
            ));
        }
        verdict.checks.push(CheckResult {
            name: check.name.clone(),
            kind: check.kind.field_name().to_string(),
            passed,
            detail,
        });
    }
    verdict.conforms = verdict.checks.iter().all(|c| c.passed);
    verdict
}

/// Which check set applies to a pod, as far as the pod's context tells.
enum Choice<'p> {
    /// No check set's scope matches the pod.
    None,
    Applies(&'p CheckSet),
    /// The first set that may apply is scoped to a service account in the
    /// pod's namespace, and the pod's service account is unknown (kubelet
    /// does not send it over CRI).
    Undecided(&'p CheckSet),
}

/// The first check set whose scope matches `pod`, stopping at the first
/// one that cannot be decided.
fn choose<'p>(sets: &'p [CheckSet], pod: &PodContext) -> Choice<'p> {
    for set in sets {
        match &set.scope {
            Scope::Everything => return Choice::Applies(set),
            Scope::Namespace(ns) => {
                if pod.namespace.as_deref() == Some(ns.as_str()) {
                    return Choice::Applies(set);
                }
            }
            Scope::ServiceAccount { namespace, name } => {
                if pod.namespace.as_deref() != Some(namespace.as_str()) {
                    continue;
                }
                match pod.service_account.as_deref() {
                    None => return Choice::Undecided(set),
                    Some(sa) if sa == name.as_str() => return Choice::Applies(set),
                    Some(_) => {}
                }
            }
        }
    }
    Choice::None
}

fn first_match<'p>(patterns: &'p [NamePattern], image: &ImageRef) -> Option<&'p str> {
    patterns
        .iter()
        .find(|p| p.matches(image))
        .map(NamePattern::as_str)
}

struct Context<'a> {
    bundle: &'a Bundle,
    settings: &'a Settings,
    image: &'a ImageRef,
    registry: &'a [RegistryAttestation],
}

impl Context<'_> {
    /// Whether `check` passes, and why.
    fn run(&self, check: &Check) -> (bool, String) {
        if let Some(pattern) = first_match(&check.image_allowlist, self.image) {
            return (
                true,
                format!("exempted by imageAllowlist pattern {pattern}"),
            );
        }
        match &check.kind {
            CheckKind::AlwaysDeny => (false, "alwaysDeny".to_string()),
            CheckKind::ImageAllowlist => (
                false,
                format!("image {} matches no allowPattern", self.image.repository),
            ),
            CheckKind::TrustedDirectory { patterns } => {
                match patterns.iter().find(|p| p.matches(self.image)) {
                    Some(p) => (true, format!("in trusted directory {}", p.as_str())),
                    None => (
                        false,
                        format!(
                            "{} is in no trusted directory ({})",
                            self.image.repository,
                            patterns
                                .iter()
                                .map(|p| p.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                }
            }
            CheckKind::SimpleSigningAttestation {
                attestation_projects,
                authenticators,
            } => self.simple_signing(attestation_projects, authenticators),
            CheckKind::SigstoreSignature { authorities } => self.sigstore(authorities),
            CheckKind::Unsupported { kind } => (
                false,
                format!("{kind} needs Google Cloud services and cannot be evaluated on the node"),
            ),
        }
    }

    fn digest(&self) -> Result<&Digest, (bool, String)> {
        self.image
            .digest
            .as_ref()
            .ok_or_else(|| (false, "image has no digest".to_string()))
    }

    /// Registry signatures that may count for the image: in strict
    /// repository mode, only those found beside it.
    fn offered(&self) -> impl Iterator<Item = &RegistryAttestation> {
        self.registry.iter().filter(|offered| {
            !self.settings.strict_repository || offered.found_in == self.image.repository
        })
    }

    fn simple_signing(&self, projects: &[String], authenticators: &[Attestor]) -> (bool, String) {
        let digest = match self.digest() {
            Ok(d) => d,
            Err(failed) => return failed,
        };
        let mut considered = 0usize;
        for occurrence in self.bundle.occurrences_for(digest) {
            if !in_projects(occurrence, projects) {
                continue;
            }
            if self.settings.strict_repository
                && occurrence.resource_repository != self.image.repository
            {
                continue;
            }
            considered += 1;
            for authenticator in authenticators {
                if let Some(key_id) = verify_occurrence(authenticator, occurrence, digest) {
                    let what = occurrence.name.as_deref().unwrap_or("attestation");
                    return (
                        true,
                        format!(
                            "{what} verified by authenticator {} with key {key_id}",
                            authenticator.name
                        ),
                    );
                }
            }
        }
        // cosign's `.sig` layers are simple-signing payloads too.
        for offered in self.offered() {
            if !matches!(offered.signature, RegistrySignature::Cosign { .. }) {
                continue;
            }
            considered += 1;
            for authenticator in authenticators {
                if let Ok(key_id) = crate::registry::verify(
                    authenticator,
                    &offered.signature,
                    &offered.signed_digest,
                ) {
                    return (
                        true,
                        format!(
                            "{} from {} for {} verified by authenticator {} with key {key_id}",
                            offered.signature.kind(),
                            offered.found_in,
                            offered.signed_digest,
                            authenticator.name
                        ),
                    );
                }
            }
        }
        (
            false,
            format!(
                "no attestation for {digest} verifies under authenticator {} ({considered} considered)",
                names(authenticators)
            ),
        )
    }

    fn sigstore(&self, authorities: &[Attestor]) -> (bool, String) {
        let digest = match self.digest() {
            Ok(d) => d,
            Err(failed) => return failed,
        };
        let mut considered = 0usize;
        for offered in self.offered() {
            considered += 1;
            for authority in authorities {
                if let Ok(key_id) =
                    crate::registry::verify(authority, &offered.signature, &offered.signed_digest)
                {
                    return (
                        true,
                        format!(
                            "{} from {} for {} verified by authority {} with key {key_id}",
                            offered.signature.kind(),
                            offered.found_in,
                            offered.signed_digest,
                            authority.name
                        ),
                    );
                }
            }
        }
        (
            false,
            format!(
                "no registry signature for {digest} verifies under authority {} ({considered} considered)",
                names(authorities)
            ),
        )
    }
}

fn names(attestors: &[Attestor]) -> String {
    attestors
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `containerAnalysisAttestationProjects`: an occurrence is in project P
/// when its name is `projects/P/occurrences/…`; one without a name (a
/// hand-made file) is placed by its note's project.
fn in_projects(occurrence: &Occurrence, projects: &[String]) -> bool {
    if projects.is_empty() {
        return true;
    }
    let owner = occurrence
        .name
        .as_deref()
        .unwrap_or(occurrence.note_name.as_ref());
    let project = owner
        .strip_prefix("projects/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    projects
        .iter()
        .any(|p| p.strip_prefix("projects/") == Some(project))
}

/// SPEC §4 without the note and key id: a detached signature over the
/// payload that verifies under one of the authenticator's keys (any may
/// sign: GKE names no key id to match), and a payload that names `digest`.
fn verify_occurrence(
    authenticator: &Attestor,
    occurrence: &Occurrence,
    digest: &Digest,
) -> Option<String> {
    let payload = occurrence.serialized_payload.as_ref()?;
    for signature in &occurrence.signatures {
        let Signature::Detached { signature, .. } = signature else {
            continue;
        };
        for key in &authenticator.public_keys {
            let KeyMaterial::Pkix(pkix) = &key.material else {
                continue;
            };
            if pkix.verify(payload, signature).is_ok() && check_payload(payload, digest).is_ok() {
                return Some(key.id.clone());
            }
        }
    }
    None
}
