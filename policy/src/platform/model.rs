//! A platform policy as the bundle holds it, validated: apart from its
//! parser and its evaluation, which both read it.

use super::dir_pattern::DirPattern;
use crate::glob::NamePattern;
use crate::model::Attestor;

/// The bundle file names a platform policy may have, in the order the
/// loader looks for them.
/// `.yml` as for `policy.yml`: a name the loader skipped would be a policy
/// silently not applied.
pub const FILE_NAMES: &[&str] = &[
    "platform-policy.yaml",
    "platform-policy.yml",
    "platform-policy.json",
];

/// One platform policy, validated.
#[derive(Debug, Clone)]
pub struct PlatformPolicy {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Kept as exported: it says which revision the bundle carries.
    pub update_time: Option<String>,
    pub etag: Option<String>,
    /// `gkePolicy.imageAllowlist`: images exempted from the whole policy.
    pub image_allowlist: Vec<NamePattern>,
    pub check_sets: Vec<CheckSet>,
}

impl PlatformPolicy {
    /// Whether some check can be satisfied by signatures found in the
    /// registry, so that the node must keep and read them (SPEC §11).
    pub fn uses_registry_signatures(&self) -> bool {
        self.checks().any(|check| {
            matches!(
                check.kind,
                CheckKind::SigstoreSignature { .. } | CheckKind::SimpleSigningAttestation { .. }
            )
        })
    }

    /// The keys registry signatures may verify under for some check, each
    /// set as an attestor named after its authority or authenticator.
    pub fn registry_verifiers(&self) -> impl Iterator<Item = &Attestor> {
        self.checks().flat_map(|check| match &check.kind {
            CheckKind::SigstoreSignature { authorities } => authorities.iter(),
            CheckKind::SimpleSigningAttestation { authenticators, .. } => authenticators.iter(),
            _ => [].iter(),
        })
    }

    /// The checks the node cannot evaluate, which never pass: reported on
    /// every continuous-validation pass, as GKE's `configErrorEvent`.
    pub fn config_errors(&self) -> Vec<String> {
        self.check_sets
            .iter()
            .flat_map(|set| {
                set.checks
                    .iter()
                    .filter_map(move |check| match &check.kind {
                        CheckKind::Unsupported { kind } => Some(format!(
                            "check set {}: check {} ({kind}) cannot be evaluated on the node",
                            set.name, check.name
                        )),
                        _ => None,
                    })
            })
            .collect()
    }

    fn checks(&self) -> impl Iterator<Item = &Check> {
        self.check_sets.iter().flat_map(|set| set.checks.iter())
    }
}

/// Which pods a check set applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No scope (or an empty one): every pod.
    Everything,
    Namespace(String),
    /// `kubernetesServiceAccount: namespace:name`.
    ServiceAccount {
        namespace: String,
        name: String,
    },
}

impl Scope {
    /// As the decision record names it, in the project policy's words for
    /// its rules (`namespace:NS`, `serviceAccount:NS:SA`).
    pub fn label(&self) -> String {
        match self {
            Scope::Everything => "everything".to_string(),
            Scope::Namespace(ns) => format!("namespace:{ns}"),
            Scope::ServiceAccount { namespace, name } => {
                format!("serviceAccount:{namespace}:{name}")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckSet {
    /// `displayName`, else `checkSets[N]`: how the record names the set.
    pub name: String,
    pub scope: Scope,
    /// Images exempted from every check of the set.
    pub image_allowlist: Vec<NamePattern>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone)]
pub struct Check {
    /// `displayName`, else `checkSets[N].checks[M]`.
    pub name: String,
    /// The check's own `imageAllowlist`: an image it matches passes the
    /// check without the check being evaluated. For a check that is only
    /// an allowlist ([`CheckKind::ImageAllowlist`]), the whole check.
    pub image_allowlist: Vec<NamePattern>,
    pub kind: CheckKind,
}

#[derive(Debug, Clone)]
pub enum CheckKind {
    AlwaysDeny,
    /// A check with an `imageAllowlist` and nothing else: passes exactly
    /// when the image matches one of its patterns.
    ImageAllowlist,
    TrustedDirectory {
        patterns: Vec<DirPattern>,
    },
    SimpleSigningAttestation {
        /// `containerAnalysisAttestationProjects`: `projects/P` whose
        /// occurrences count; empty for all the bundle holds.
        attestation_projects: Vec<String>,
        /// One attestor per authenticator, holding its PKIX key set.
        authenticators: Vec<Attestor>,
    },
    SigstoreSignature {
        /// One attestor per authority, holding its public key set.
        authorities: Vec<Attestor>,
    },
    /// A check the node cannot evaluate: its field name (or names).
    Unsupported {
        kind: String,
    },
}

impl CheckKind {
    /// The field name the policy gives the check by.
    pub fn field_name(&self) -> &str {
        match self {
            CheckKind::AlwaysDeny => "alwaysDeny",
            CheckKind::ImageAllowlist => "imageAllowlist",
            CheckKind::TrustedDirectory { .. } => "trustedDirectoryCheck",
            CheckKind::SimpleSigningAttestation { .. } => "simpleSigningAttestationCheck",
            CheckKind::SigstoreSignature { .. } => "sigstoreSignatureCheck",
            CheckKind::Unsupported { kind } => kind,
        }
    }
}
