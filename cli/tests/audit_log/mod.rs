//! Decision records as the node writes them (policy `record_json`), for the
//! audit query tests and benchmark.

#![allow(dead_code)]

use attestgate_policy::decision::{BundleRef, format_time};
use attestgate_policy::model::{EnforcementMode, EvaluationMode};
use attestgate_policy::{
    AttestorVerdict, Decision, ImageSubject, Operation, Outcome, PodRef, Reason, RecordContext,
    RuleRef,
};
use time::OffsetDateTime;

pub struct Entry<'a> {
    pub time: OffsetDateTime,
    pub operation: Operation,
    pub reason: Reason,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub repository: &'a str,
    pub tag: &'a str,
    /// 64 hex digits.
    pub digest_hex: &'a str,
}

impl Entry<'_> {
    pub fn allowed(&self) -> bool {
        !matches!(
            self.reason,
            Reason::AlwaysDeny | Reason::MissingAttestations | Reason::Error | Reason::NoPolicy
        )
    }

    /// The record's line, without newline.
    pub fn line(&self) -> String {
        let digest = format!("sha256:{}", self.digest_hex);
        let attestor = "projects/acme/attestors/ci".to_string();
        let decision = Decision {
            allowed: self.allowed(),
            reason: self.reason,
            overridden: None,
            enforced: true,
            outcome: Outcome::Rule {
                rule: RuleRef::Namespace(self.namespace.to_string()),
                evaluation_mode: EvaluationMode::RequireAttestation,
                enforcement_mode: EnforcementMode::EnforcedBlockAndAuditLog,
                reason: self.reason,
            },
            attestors: vec![AttestorVerdict {
                name: attestor,
                satisfied: self.allowed(),
                detail: if self.allowed() {
                    format!("attestation for {digest} verified, key ni:///sha-256;k1")
                } else {
                    format!(
                        "no attestation for {digest}; 1 signature by unknown key id ni:///sha-256;k2"
                    )
                },
            }],
            image: ImageSubject {
                reference: format!("{}:{}", self.repository, self.tag),
                repository: Some(self.repository.to_string()),
                digest: Some(digest.clone()),
            },
            fail_open: false,
            platform_policy: None,
        };
        let ctx = RecordContext {
            operation: self.operation,
            time: self.time,
            pod: Some(PodRef {
                namespace: Some(self.namespace.to_string()),
                name: Some(self.pod.to_string()),
                uid: Some("6f1c2a4e-0d3b-4f5a-9c8e-7b6a5d4c3b2a".to_string()),
            }),
            container: Some("app".to_string()),
            container_id: None,
            action: None,
            cluster: Some("us-east1-b.prod".to_string()),
            bundle: Some(BundleRef {
                digest: "sha256:5d1e3c7a9b0f2e4d6c8a1b3f5e7d9c0a2b4f6e8d1c3a5b7f9e0d2c4a6b8f1e3d"
                    .to_string(),
                loaded_at: format_time(self.time),
                version: None,
                expires: None,
            }),
        };
        decision.record_json(&ctx)
    }
}
