//! The Binary Authorization resources: policy, rules, attestors, keys and
//! attestation occurrences, as validated values.

use std::collections::HashMap;
use std::sync::Arc;

use crate::glob::NamePattern;
use crate::reference::Digest;
use crate::verify::{PgpKey, PkixKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvaluationMode {
    AlwaysAllow,
    RequireAttestation,
    AlwaysDeny,
}

impl EvaluationMode {
    pub const NAMES: &[(&str, EvaluationMode)] = &[
        ("ALWAYS_ALLOW", EvaluationMode::AlwaysAllow),
        ("REQUIRE_ATTESTATION", EvaluationMode::RequireAttestation),
        ("ALWAYS_DENY", EvaluationMode::AlwaysDeny),
    ];

    pub fn name(self) -> &'static str {
        match self {
            EvaluationMode::AlwaysAllow => "ALWAYS_ALLOW",
            EvaluationMode::RequireAttestation => "REQUIRE_ATTESTATION",
            EvaluationMode::AlwaysDeny => "ALWAYS_DENY",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnforcementMode {
    EnforcedBlockAndAuditLog,
    DryrunAuditLogOnly,
}

impl EnforcementMode {
    pub const NAMES: &[(&str, EnforcementMode)] = &[
        (
            "ENFORCED_BLOCK_AND_AUDIT_LOG",
            EnforcementMode::EnforcedBlockAndAuditLog,
        ),
        ("DRYRUN_AUDIT_LOG_ONLY", EnforcementMode::DryrunAuditLogOnly),
    ];

    pub fn name(self) -> &'static str {
        match self {
            EnforcementMode::EnforcedBlockAndAuditLog => "ENFORCED_BLOCK_AND_AUDIT_LOG",
            EnforcementMode::DryrunAuditLogOnly => "DRYRUN_AUDIT_LOG_ONLY",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionRule {
    pub evaluation_mode: EvaluationMode,
    pub require_attestations_by: Vec<String>,
    pub enforcement_mode: EnforcementMode,
}

/// `globalPolicyEvaluationMode`; unspecified behaves as `DISABLE`, as in GCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GlobalPolicyEvaluationMode {
    Enable,
    #[default]
    Disable,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: Option<String>,
    pub description: Option<String>,
    pub global_policy_evaluation_mode: GlobalPolicyEvaluationMode,
    pub admission_whitelist_patterns: Vec<NamePattern>,
    pub default_admission_rule: AdmissionRule,
    pub cluster_admission_rules: HashMap<String, AdmissionRule>,
    pub kubernetes_namespace_admission_rules: HashMap<String, AdmissionRule>,
    pub kubernetes_service_account_admission_rules: HashMap<String, AdmissionRule>,
    /// Parsed and validated, never selected: a node has no Istio identity.
    pub istio_service_identity_admission_rules: HashMap<String, AdmissionRule>,
}

impl Policy {
    /// Every rule of the policy with the field path it came from.
    pub fn rules(&self) -> impl Iterator<Item = (String, &AdmissionRule)> {
        std::iter::once((
            "defaultAdmissionRule".to_string(),
            &self.default_admission_rule,
        ))
        .chain(
            self.cluster_admission_rules
                .iter()
                .map(|(k, r)| (format!("clusterAdmissionRules[{k:?}]"), r)),
        )
        .chain(
            self.kubernetes_namespace_admission_rules
                .iter()
                .map(|(k, r)| (format!("kubernetesNamespaceAdmissionRules[{k:?}]"), r)),
        )
        .chain(
            self.kubernetes_service_account_admission_rules
                .iter()
                .map(|(k, r)| (format!("kubernetesServiceAccountAdmissionRules[{k:?}]"), r)),
        )
        .chain(
            self.istio_service_identity_admission_rules
                .iter()
                .map(|(k, r)| (format!("istioServiceIdentityAdmissionRules[{k:?}]"), r)),
        )
    }
}

#[derive(Debug, Clone)]
pub enum KeyMaterial {
    Pkix(PkixKey),
    Pgp(PgpKey),
}

#[derive(Debug, Clone)]
pub struct AttestorPublicKey {
    pub id: String,
    pub comment: Option<String>,
    pub material: KeyMaterial,
}

#[derive(Debug, Clone)]
pub struct Attestor {
    pub name: String,
    pub description: Option<String>,
    pub note_reference: String,
    pub public_keys: Vec<AttestorPublicKey>,
}

/// One signature of an attestation: by which key id, over what.
#[derive(Debug, Clone)]
pub enum Signature {
    /// A detached signature over the occurrence's serialized payload.
    Detached {
        public_key_id: String,
        signature: Vec<u8>,
    },
    /// An OpenPGP signed message whose literal data must be the payload
    /// (v1 `signatures[]` with a PGP key, or v1beta1 `pgpSignedAttestation`).
    PgpAttached {
        public_key_id: String,
        message: Vec<u8>,
    },
}

impl Signature {
    pub fn public_key_id(&self) -> &str {
        match self {
            Signature::Detached { public_key_id, .. }
            | Signature::PgpAttached { public_key_id, .. } => public_key_id,
        }
    }
}

/// One attestation occurrence, validated.
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub name: Option<String>,
    /// Shared: thousands of occurrences name the same note.
    pub note_name: Arc<str>,
    /// The normalised repository of the resource URI.
    pub resource_repository: String,
    pub resource_digest: Digest,
    /// The signed bytes; `None` for a v1beta1 PGP attestation, whose payload
    /// is the literal data of the signed message.
    pub serialized_payload: Option<Vec<u8>>,
    pub signatures: Vec<Signature>,
}
