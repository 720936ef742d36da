//! A decision is data: the rule chosen, each attestor's verdict and why.
//! The one-line explanation (CLI, gRPC error) and the JSON audit record are
//! both rendered from the same [`Decision`] value.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::model::{EnforcementMode, EvaluationMode};
use crate::platform_verdict::PlatformVerdict;
use crate::reference::ImageRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    BreakGlass,
    Allowlisted,
    SystemImage,
    AlwaysAllow,
    Attested,
    AlwaysDeny,
    MissingAttestations,
    DryRun,
    NoPolicy,
    Error,
    /// The project policy allowed the image and the bundle's platform
    /// policy, enforced (`platform_policy_enforce`), did not: none of the
    /// project policy's reasons says that truthfully (`ALWAYS_DENY` and
    /// `MISSING_ATTESTATIONS` name the project rule's own verdict, which
    /// was an allow), and audit queries must be able to tell the two
    /// policies' denials apart.
    PlatformPolicy,
}

impl Reason {
    pub const ALL: &[Reason] = &[
        Reason::BreakGlass,
        Reason::Allowlisted,
        Reason::SystemImage,
        Reason::AlwaysAllow,
        Reason::Attested,
        Reason::AlwaysDeny,
        Reason::MissingAttestations,
        Reason::DryRun,
        Reason::NoPolicy,
        Reason::Error,
        Reason::PlatformPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BreakGlass => "BREAK_GLASS",
            Reason::Allowlisted => "ALLOWLISTED",
            Reason::SystemImage => "SYSTEM_IMAGE",
            Reason::AlwaysAllow => "ALWAYS_ALLOW",
            Reason::Attested => "ATTESTED",
            Reason::AlwaysDeny => "ALWAYS_DENY",
            Reason::MissingAttestations => "MISSING_ATTESTATIONS",
            Reason::DryRun => "DRY_RUN",
            Reason::NoPolicy => "NO_POLICY",
            Reason::Error => "ERROR",
            Reason::PlatformPolicy => "PLATFORM_POLICY",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rule of the policy decided: `default`, `cluster:KEY`,
/// `namespace:NS` or `serviceAccount:NS:SA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleRef {
    Default,
    Cluster(String),
    Namespace(String),
    ServiceAccount(String),
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Default => f.write_str("default"),
            RuleRef::Cluster(k) => write!(f, "cluster:{k}"),
            RuleRef::Namespace(k) => write!(f, "namespace:{k}"),
            RuleRef::ServiceAccount(k) => write!(f, "serviceAccount:{k}"),
        }
    }
}

impl Serialize for RuleRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestorVerdict {
    pub name: String,
    pub satisfied: bool,
    pub detail: String,
}

/// The image as decided: what was asked for, normalised, and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSubject {
    pub reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl ImageSubject {
    pub fn from_ref(reference: &str, image: &ImageRef) -> ImageSubject {
        ImageSubject {
            reference: reference.to_string(),
            repository: Some(image.repository.clone()),
            digest: image.digest.as_ref().map(|d| d.to_string()),
        }
    }

    /// How the image is named in explanations: pinned when the digest is known.
    pub fn display_name(&self) -> String {
        match (&self.repository, &self.digest) {
            (Some(repo), Some(digest)) => format!("{repo}@{digest}"),
            _ => self.reference.clone(),
        }
    }
}

/// What the policy said and why, before break-glass, dry run or fail mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowlisted {
        pattern: String,
    },
    SystemImage {
        pattern: String,
    },
    Rule {
        rule: RuleRef,
        evaluation_mode: EvaluationMode,
        enforcement_mode: EnforcementMode,
        reason: Reason,
    },
    /// No valid bundle; `why`, when the node knows more than that (a
    /// synced bundle past its expiry).
    NoPolicy {
        why: Option<String>,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// For `DRY_RUN` and `BREAK_GLASS`: the reason the policy alone gave.
    pub overridden: Option<Reason>,
    pub enforced: bool,
    pub outcome: Outcome,
    pub attestors: Vec<AttestorVerdict>,
    pub image: ImageSubject,
    /// Set by the fail mode for `NO_POLICY` / `ERROR`.
    pub fail_open: bool,
    /// The platform policy's verdict (SPEC §12), when one was evaluated.
    pub platform_policy: Option<PlatformVerdict>,
}

impl Decision {
    pub fn rule(&self) -> Option<&RuleRef> {
        match &self.outcome {
            Outcome::Rule { rule, .. } => Some(rule),
            _ => None,
        }
    }

    /// One line that says what was decided and why.
    pub fn explanation(&self) -> String {
        let image = self.image.display_name();
        let policy_part = match &self.outcome {
            Outcome::Allowlisted { pattern } => {
                format!("image {image} allowed: matches allowlist pattern {pattern}")
            }
            Outcome::SystemImage { pattern } => {
                format!("image {image} allowed: system image (pattern {pattern})")
            }
            Outcome::Rule { rule, reason, .. } => match reason {
                Reason::AlwaysAllow => {
                    format!("image {image} allowed by rule {rule}: ALWAYS_ALLOW")
                }
                Reason::Attested => {
                    let names: Vec<&str> = self.attestors.iter().map(|a| a.name.as_str()).collect();
                    format!(
                        "image {image} allowed by rule {rule}: attested by {}",
                        names.join(", ")
                    )
                }
                Reason::AlwaysDeny => format!("image {image} denied by rule {rule}: ALWAYS_DENY"),
                _ => {
                    let failed: Vec<String> = self
                        .attestors
                        .iter()
                        .filter(|a| !a.satisfied)
                        .map(|a| format!("attestor {} not satisfied ({})", a.name, a.detail))
                        .collect();
                    format!("image {image} denied by rule {rule}: {}", failed.join("; "))
                }
            },
            Outcome::NoPolicy { why: None } => format!("no valid policy loaded for image {image}"),
            Outcome::NoPolicy { why: Some(why) } => {
                format!("no valid policy loaded for image {image}: {why}")
            }
            Outcome::Error { message } => format!("error deciding image {image}: {message}"),
        };
        let policy_part = match &self.platform_policy {
            Some(verdict) if self.overridden.unwrap_or(self.reason) == Reason::PlatformPolicy => {
                format!(
                    "image {image} denied by {}; project policy: {policy_part}",
                    verdict.summary()
                )
            }
            Some(verdict) if !verdict.conforms => format!("{policy_part}; {}", verdict.summary()),
            _ => policy_part,
        };
        match self.reason {
            Reason::DryRun => format!(
                "dry run: {} (allowed: enforcementMode is DRYRUN_AUDIT_LOG_ONLY)",
                policy_part.replacen(" denied ", " would be denied ", 1)
            ),
            Reason::BreakGlass => {
                format!("break-glass: image {image} allowed; policy alone: {policy_part}")
            }
            Reason::NoPolicy | Reason::Error => {
                let mode = if self.fail_open {
                    "allowed: fail mode open"
                } else {
                    "denied: fail mode closed"
                };
                format!("{policy_part} ({mode})")
            }
            _ => policy_part,
        }
    }

    fn evaluation_mode(&self) -> Option<EvaluationMode> {
        match &self.outcome {
            Outcome::Rule {
                evaluation_mode, ..
            } => Some(*evaluation_mode),
            _ => None,
        }
    }

    fn enforcement_mode(&self) -> Option<EnforcementMode> {
        match &self.outcome {
            Outcome::Rule {
                enforcement_mode, ..
            } => Some(*enforcement_mode),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Operation {
    PullImage,
    CreateContainer,
    TaskCreate,
    Evaluate,
    /// A running container decided again (SPEC §12).
    ContinuousValidation,
}

/// Pod identity as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleRef {
    pub digest: String,
    pub loaded_at: String,
    /// A synced bundle's version and the earliest expiry of the metadata
    /// it was verified with (SPEC §10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// Everything around a decision that the audit record carries.
#[derive(Debug, Clone)]
pub struct RecordContext {
    pub operation: Operation,
    pub time: time::OffsetDateTime,
    pub pod: Option<PodRef>,
    pub container: Option<String>,
    /// The running container's id, for continuous validation, whose
    /// records are about a container rather than a request.
    pub container_id: Option<String>,
    /// What continuous validation did about a container it found denied:
    /// `logged`, `stopped`, or why the stop failed.
    pub action: Option<String>,
    pub cluster: Option<String>,
    pub bundle: Option<BundleRef>,
}

#[derive(Serialize)]
struct Record<'a> {
    time: String,
    operation: Operation,
    decision: &'static str,
    reason: Reason,
    enforced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    overridden: Option<Reason>,
    image: &'a ImageSubject,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a PodRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a RuleRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evaluation_mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enforcement_mode: Option<&'static str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attestors: &'a [AttestorVerdict],
    #[serde(skip_serializing_if = "Option::is_none")]
    platform_policy: Option<&'a PlatformVerdict>,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<&'a BundleRef>,
}

/// RFC 3339 UTC with microseconds, as in `2026-01-02T03:04:05.123456Z`.
pub fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

impl Decision {
    /// The audit record (SPEC §6) as one line of JSON, without newline.
    pub fn record_json(&self, ctx: &RecordContext) -> String {
        let record = Record {
            time: format_time(ctx.time),
            operation: ctx.operation,
            decision: if self.allowed { "allow" } else { "deny" },
            reason: self.reason,
            enforced: self.enforced,
            overridden: self.overridden,
            image: &self.image,
            pod: ctx.pod.as_ref(),
            container: ctx.container.as_deref(),
            container_id: ctx.container_id.as_deref(),
            action: ctx.action.as_deref(),
            cluster: ctx.cluster.as_deref(),
            rule: self.rule(),
            evaluation_mode: self.evaluation_mode().map(EvaluationMode::name),
            enforcement_mode: self.enforcement_mode().map(EnforcementMode::name),
            attestors: &self.attestors,
            platform_policy: self.platform_policy.as_ref(),
            message: self.explanation(),
            bundle: ctx.bundle.as_ref(),
        };
        // Serialising plain strings and enums into a String cannot fail; the
        // fallback keeps the audit line well-formed if it ever did.
        serde_json::to_string(&record).unwrap_or_else(|e| {
            format!(r#"{{"time":{:?},"decision":"deny","reason":"ERROR","message":"cannot serialise decision: {e}"}}"#, format_time(ctx.time))
        })
    }
}

/// Labels and annotations as the pod carries them.
pub type StringMap = BTreeMap<String, String>;
