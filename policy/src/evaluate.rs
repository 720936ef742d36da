//! Evaluation in SPEC §3 order: break-glass, allowlist, system images, rule
//! selection, evaluation mode, enforcement mode.

use std::fmt::Write as _;

use crate::bundle::{Bundle, CacheKey};
use crate::decision::{AttestorVerdict, Decision, ImageSubject, Outcome, Reason, RuleRef};
use crate::model::{
    AdmissionRule, Attestor, AttestorPublicKey, EnforcementMode, EvaluationMode,
    GlobalPolicyEvaluationMode, KeyMaterial, Occurrence, Signature,
};
use crate::payload::check_payload;
use crate::platform::evaluate::evaluate_platform;
use crate::reference::{Digest, ImageRef};
use crate::registry::RegistryAttestation;

pub use crate::context::{
    BREAK_GLASS_ANNOTATION, BREAK_GLASS_LABEL, DEFAULT_SYSTEM_IMAGES, PodContext, Settings,
};

/// Decides one image. `reference` is the name as the request gave it (for
/// the record); `image` is its normalised parse, with the digest filled in
/// when it was resolved.
///
/// Only the policy decides here; what happens when there is no valid bundle
/// or the image cannot be resolved (the fail mode) is the node's to say.
pub fn evaluate(
    bundle: &Bundle,
    settings: &Settings,
    reference: &str,
    image: &ImageRef,
    pod: &PodContext,
) -> Decision {
    evaluate_with(bundle, settings, reference, image, pod, &[])
}

/// [`evaluate`], with signatures from the registry offered beside the
/// bundle's occurrences (SPEC §11): each counts for the attestors that
/// `settings.registry_attestors` admits, under any of their PKIX keys.
/// The caller gives only attestations that may count for `image`'s digest.
///
/// With `settings.platform_policy_enforce` and a bundle that has a
/// platform policy, the platform policy must allow too: an image the
/// project policy allows and the platform policy does not is denied with
/// [`Reason::PlatformPolicy`]. The platform verdict is in the decision
/// either way, and dry run and break-glass apply to a platform denial as
/// to the project policy's own.
pub fn evaluate_with(
    bundle: &Bundle,
    settings: &Settings,
    reference: &str,
    image: &ImageRef,
    pod: &PodContext,
    registry: &[RegistryAttestation],
) -> Decision {
    let subject = ImageSubject::from_ref(reference, image);
    let (outcome, attestors) = evaluate_policy(bundle, settings, image, pod, registry);
    let (policy_allowed, policy_reason, dry_run) = match &outcome {
        Outcome::Allowlisted { .. } => (true, Reason::Allowlisted, false),
        Outcome::SystemImage { .. } => (true, Reason::SystemImage, false),
        Outcome::Rule {
            reason,
            enforcement_mode,
            ..
        } => {
            let allowed = matches!(reason, Reason::AlwaysAllow | Reason::Attested);
            (
                allowed,
                *reason,
                !allowed && *enforcement_mode == EnforcementMode::DryrunAuditLogOnly,
            )
        }
        // evaluate_policy never yields these.
        Outcome::NoPolicy { .. } | Outcome::Error { .. } => (false, Reason::Error, false),
    };
    let platform_policy = if settings.platform_policy_enforce {
        evaluate_platform(bundle, settings, image, pod, registry).map(|mut verdict| {
            verdict.enforced = true;
            verdict
        })
    } else {
        None
    };
    let (policy_allowed, policy_reason, dry_run) = match &platform_policy {
        Some(verdict) if policy_allowed && !verdict.conforms => {
            // The rule in force says what a denial does; an image allowed
            // by name has no rule, and a platform denial of it is enforced.
            let rule_dry_run = matches!(
                &outcome,
                Outcome::Rule {
                    enforcement_mode: EnforcementMode::DryrunAuditLogOnly,
                    ..
                }
            );
            (false, Reason::PlatformPolicy, rule_dry_run)
        }
        _ => (policy_allowed, policy_reason, dry_run),
    };
    let mut decision = Decision {
        allowed: policy_allowed,
        reason: policy_reason,
        overridden: None,
        enforced: true,
        outcome,
        attestors,
        image: subject,
        fail_open: false,
        platform_policy,
    };
    if dry_run {
        decision.allowed = true;
        decision.overridden = Some(decision.reason);
        decision.reason = Reason::DryRun;
        decision.enforced = false;
    }
    if pod.break_glass() {
        decision.broken_glass()
    } else {
        decision
    }
}

/// PKIX ids are URIs compared exactly; a PGP id is a fingerprint, which
/// tools print in either case and sometimes in groups of four.
fn key_id_matches(key: &AttestorPublicKey, id: &str) -> bool {
    match key.material {
        KeyMaterial::Pkix(_) => key.id == id,
        KeyMaterial::Pgp(_) => {
            let mut given = id.bytes().filter(|b| !b.is_ascii_whitespace());
            let mut own = key.id.bytes();
            loop {
                match (given.next(), own.next()) {
                    (None, None) => return true,
                    (Some(a), Some(b)) if a.eq_ignore_ascii_case(&b) => {}
                    _ => return false,
                }
            }
        }
    }
}

impl Decision {
    /// Break-glass: allowed whatever was decided, which stays on record.
    pub fn broken_glass(mut self) -> Decision {
        self.overridden = Some(self.overridden.unwrap_or(self.reason));
        self.allowed = true;
        self.reason = Reason::BreakGlass;
        self.enforced = false;
        self
    }

    /// No valid policy is in force: denied, as the policy cannot speak.
    pub fn no_policy(image: ImageSubject) -> Decision {
        Decision::unsettled(image, Outcome::NoPolicy { why: None }, Reason::NoPolicy)
    }

    /// No valid policy is in force, for the reason given: denied.
    pub fn no_policy_because(image: ImageSubject, why: impl Into<String>) -> Decision {
        Decision::unsettled(
            image,
            Outcome::NoPolicy {
                why: Some(why.into()),
            },
            Reason::NoPolicy,
        )
    }

    /// The image could not be decided (e.g. the runtime could not tell the
    /// digest): denied.
    pub fn error(image: ImageSubject, message: impl Into<String>) -> Decision {
        Decision::unsettled(
            image,
            Outcome::Error {
                message: message.into(),
            },
            Reason::Error,
        )
    }

    fn unsettled(image: ImageSubject, outcome: Outcome, reason: Reason) -> Decision {
        Decision {
            allowed: false,
            reason,
            overridden: None,
            enforced: true,
            outcome,
            attestors: Vec::new(),
            image,
            fail_open: false,
            platform_policy: None,
        }
    }

    /// A `NO_POLICY` or `ERROR` decision let through by a node that fails
    /// open; any other decision is returned as it is.
    pub fn failed_open(mut self) -> Decision {
        if matches!(self.reason, Reason::NoPolicy | Reason::Error) {
            self.allowed = true;
            self.enforced = false;
            self.fail_open = true;
        }
        self
    }
}

fn evaluate_policy(
    bundle: &Bundle,
    settings: &Settings,
    image: &ImageRef,
    pod: &PodContext,
    registry: &[RegistryAttestation],
) -> (Outcome, Vec<AttestorVerdict>) {
    let policy = bundle.policy();
    if let Some(p) = policy
        .admission_whitelist_patterns
        .iter()
        .find(|p| p.matches(image))
    {
        return (
            Outcome::Allowlisted {
                pattern: p.as_str().to_string(),
            },
            Vec::new(),
        );
    }
    if policy.global_policy_evaluation_mode == GlobalPolicyEvaluationMode::Enable
        && let Some(p) = settings.system_images.iter().find(|p| p.matches(image))
    {
        return (
            Outcome::SystemImage {
                pattern: p.as_str().to_string(),
            },
            Vec::new(),
        );
    }
    let (rule_ref, rule) = select_rule(bundle, settings, pod);
    let (reason, attestors) = match rule.evaluation_mode {
        EvaluationMode::AlwaysAllow => (Reason::AlwaysAllow, Vec::new()),
        EvaluationMode::AlwaysDeny => (Reason::AlwaysDeny, Vec::new()),
        EvaluationMode::RequireAttestation => {
            let verdicts: Vec<AttestorVerdict> = rule
                .require_attestations_by
                .iter()
                .map(|name| {
                    let verdict = attestor_verdict(bundle, settings, name, image);
                    if verdict.satisfied
                        || registry.is_empty()
                        || !settings.registry_attestors.admits(name)
                    {
                        return verdict;
                    }
                    registry_verdict(bundle, settings, name, image, verdict, registry)
                })
                .collect();
            let reason = if verdicts.iter().all(|v| v.satisfied) {
                Reason::Attested
            } else {
                Reason::MissingAttestations
            };
            (reason, verdicts)
        }
    };
    let outcome = Outcome::Rule {
        rule: rule_ref,
        evaluation_mode: rule.evaluation_mode,
        enforcement_mode: rule.enforcement_mode,
        reason,
    };
    (outcome, attestors)
}

fn select_rule<'b>(
    bundle: &'b Bundle,
    settings: &Settings,
    pod: &PodContext,
) -> (RuleRef, &'b AdmissionRule) {
    let policy = bundle.policy();
    if let (Some(ns), Some(sa)) = (&pod.namespace, &pod.service_account) {
        let key = format!("{ns}:{sa}");
        if let Some(rule) = policy.kubernetes_service_account_admission_rules.get(&key) {
            return (RuleRef::ServiceAccount(key), rule);
        }
    }
    if let Some(ns) = &pod.namespace
        && let Some(rule) = policy.kubernetes_namespace_admission_rules.get(ns)
    {
        return (RuleRef::Namespace(ns.clone()), rule);
    }
    if let Some(cluster) = &settings.cluster
        && let Some(rule) = policy.cluster_admission_rules.get(cluster)
    {
        return (RuleRef::Cluster(cluster.clone()), rule);
    }
    (RuleRef::Default, &policy.default_admission_rule)
}

fn attestor_verdict(
    bundle: &Bundle,
    settings: &Settings,
    name: &str,
    image: &ImageRef,
) -> AttestorVerdict {
    let Some(digest) = &image.digest else {
        return AttestorVerdict {
            name: name.to_string(),
            satisfied: false,
            detail: "image has no digest".to_string(),
        };
    };
    let key = CacheKey {
        attestor: name.to_string(),
        digest: digest.clone(),
        repository: settings.strict_repository.then(|| image.repository.clone()),
        evidence: None,
    };
    if let Some(v) = bundle.cached(&key) {
        return v;
    }
    let verdict = match bundle.attestor(name) {
        // Bundle validation guarantees every required attestor exists.
        None => AttestorVerdict {
            name: name.to_string(),
            satisfied: false,
            detail: "attestor is not in the bundle".to_string(),
        },
        Some(attestor) => verify_attestor(
            bundle,
            attestor,
            digest,
            settings
                .strict_repository
                .then_some(image.repository.as_str()),
        ),
    };
    bundle.remember(key, verdict.clone());
    verdict
}

/// An attestor the bundle's occurrences left unsatisfied, tried with the
/// registry's signatures; the verdict is remembered for exactly these
/// signatures, so a decision with a warm attestation cache costs what one
/// with bundle occurrences does.
fn registry_verdict(
    bundle: &Bundle,
    settings: &Settings,
    name: &str,
    image: &ImageRef,
    from_bundle: AttestorVerdict,
    registry: &[RegistryAttestation],
) -> AttestorVerdict {
    let (Some(attestor), Some(digest)) = (bundle.attestor(name), &image.digest) else {
        return from_bundle;
    };
    let key = CacheKey {
        attestor: name.to_string(),
        digest: digest.clone(),
        repository: settings.strict_repository.then(|| image.repository.clone()),
        evidence: Some(evidence_digest(registry)),
    };
    if let Some(v) = bundle.cached(&key) {
        return v;
    }
    let mut problems = Problems::default();
    let mut verdict = None;
    for offered in registry {
        // Strict mode: a signature found beside the image in another
        // repository does not count, as an occurrence for another
        // repository does not.
        if settings.strict_repository && offered.found_in != image.repository {
            problems.add(format!(
                "from the registry {} (strict repository mode)",
                offered.found_in
            ));
            continue;
        }
        match crate::registry::verify(attestor, &offered.signature, &offered.signed_digest) {
            Ok(key_id) => {
                verdict = Some(AttestorVerdict {
                    name: name.to_string(),
                    satisfied: true,
                    detail: format!(
                        "{} from {} for {} verified with key {key_id}",
                        offered.signature.kind(),
                        offered.found_in,
                        offered.signed_digest
                    ),
                });
                break;
            }
            Err(problem) => problems.add(format!(
                "from the registry for {} {problem}",
                offered.signed_digest
            )),
        }
    }
    let verdict = verdict.unwrap_or_else(|| {
        let mut detail = from_bundle.detail;
        problems.append_to(&mut detail);
        AttestorVerdict {
            detail,
            ..from_bundle
        }
    });
    bundle.remember(key, verdict.clone());
    verdict
}

/// Names a set of registry signatures for the verdict cache: equal only
/// for the same signatures over the same payloads for the same digests.
fn evidence_digest(registry: &[RegistryAttestation]) -> [u8; 32] {
    use crate::registry::RegistrySignature;
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    // Counts first, so no two lists of fields read alike.
    field(&(registry.len() as u64).to_be_bytes());
    for offered in registry {
        field(offered.signed_digest.as_str().as_bytes());
        field(offered.found_in.as_bytes());
        match &offered.signature {
            RegistrySignature::Cosign { payload, signature } => {
                field(b"cosign");
                field(payload);
                field(signature);
            }
            RegistrySignature::Dsse {
                payload_type,
                payload,
                signatures,
            } => {
                field(b"dsse");
                field(payload_type.as_bytes());
                field(payload);
                field(&(signatures.len() as u64).to_be_bytes());
                for s in signatures {
                    field(s);
                }
            }
        }
    }
    hasher.finalize().into()
}

/// Why attestations for the right note and digest did not count, tallied.
#[derive(Default)]
struct Problems(Vec<(String, usize)>);

impl Problems {
    fn add(&mut self, problem: String) {
        match self.0.iter_mut().find(|(p, _)| *p == problem) {
            Some((_, n)) => *n += 1,
            None => self.0.push((problem, 1)),
        }
    }

    /// `; 2 signatures by unknown key id …` for each problem.
    fn append_to(&self, detail: &mut String) {
        for (problem, count) in &self.0 {
            let noun = if *count == 1 {
                "signature"
            } else {
                "signatures"
            };
            let _ = write!(detail, "; {count} {noun} {problem}");
        }
    }
}

fn verify_attestor(
    bundle: &Bundle,
    attestor: &Attestor,
    digest: &Digest,
    strict_repository: Option<&str>,
) -> AttestorVerdict {
    let mut problems = Problems::default();
    for occurrence in bundle.occurrences_for(digest) {
        if *occurrence.note_name != *attestor.note_reference {
            continue;
        }
        if let Some(repo) = strict_repository
            && occurrence.resource_repository != repo
        {
            problems.add(format!(
                "attestation for repository {} (strict repository mode)",
                occurrence.resource_repository
            ));
            continue;
        }
        for signature in &occurrence.signatures {
            match verify_signature(attestor, occurrence, signature, digest) {
                Ok(key_id) => {
                    let what = occurrence.name.as_deref().unwrap_or("attestation");
                    return AttestorVerdict {
                        name: attestor.name.clone(),
                        satisfied: true,
                        detail: format!("{what} verified with key {key_id}"),
                    };
                }
                Err(problem) => problems.add(problem),
            }
        }
    }
    let mut detail = format!("no attestation for {digest}");
    problems.append_to(&mut detail);
    AttestorVerdict {
        name: attestor.name.clone(),
        satisfied: false,
        detail,
    }
}

/// Verifies one signature; on success, the key id that verified it.
fn verify_signature<'a>(
    attestor: &'a Attestor,
    occurrence: &Occurrence,
    signature: &Signature,
    digest: &Digest,
) -> Result<&'a str, String> {
    let key_id = signature.public_key_id();
    let Some(key) = attestor
        .public_keys
        .iter()
        .find(|k| key_id_matches(k, key_id))
    else {
        return Err(format!("by unknown key id {key_id}"));
    };
    let verified_payload: std::borrow::Cow<'_, [u8]> = match (&key.material, signature) {
        (KeyMaterial::Pkix(pkix), Signature::Detached { signature, .. }) => {
            let Some(payload) = &occurrence.serialized_payload else {
                return Err(format!("by key {key_id} with no payload"));
            };
            pkix.verify(payload, signature)
                .map_err(|e| format!("by key {key_id} that fail to verify: {e}"))?;
            std::borrow::Cow::Borrowed(payload.as_slice())
        }
        (
            KeyMaterial::Pgp(pgp),
            Signature::Detached {
                signature: message, ..
            }
            | Signature::PgpAttached { message, .. },
        ) => {
            let literal = pgp
                .verify_attached(message)
                .map_err(|e| format!("by key {key_id} that fail to verify: {e}"))?;
            if let Some(payload) = &occurrence.serialized_payload
                && *payload != literal
            {
                return Err(format!(
                    "by key {key_id} over data other than the serialized payload"
                ));
            }
            std::borrow::Cow::Owned(literal)
        }
        (KeyMaterial::Pkix(_), Signature::PgpAttached { .. }) => {
            return Err(format!("by key {key_id} in PGP form but the key is PKIX"));
        }
    };
    check_payload(&verified_payload, digest)
        .map_err(|e| format!("by key {key_id} with a bad payload: {e}"))?;
    Ok(key.id.as_str())
}
