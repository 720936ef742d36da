//! Signatures found beside the image in its registry (SPEC §11): cosign's
//! `sha256-<hex>.sig` layers and sigstore bundles' DSSE envelopes, verified
//! with an attestor's PKIX keys.
//!
//! Nothing here fetches anything: the node brings the signatures in (and
//! keeps them in its attestation cache); this module only says whether one
//! counts for an attestor. cosign names no key id, so each of the
//! attestor's PKIX keys is tried. Certificates and transparency-log entries
//! are neither required nor trusted: they never reach this module.

use std::collections::BTreeSet;

use crate::model::{Attestor, KeyMaterial};
use crate::payload::check_payload;
use crate::reference::Digest;

/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// Statement types whose `subject` names what was signed.
const STATEMENT_TYPES: &[&str] = &[
    "https://in-toto.io/Statement/v1",
    "https://in-toto.io/Statement/v0.1",
];

/// One signature as the registry held it, after its bytes were checked
/// against their digests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegistrySignature {
    /// A layer of cosign's `.sig` manifest: the simple-signing payload (the
    /// layer blob, exactly as fetched) and the raw signature bytes (from
    /// the `dev.cosignproject.cosign/signature` annotation, base64-decoded).
    Cosign {
        payload: Vec<u8>,
        signature: Vec<u8>,
    },
    /// A sigstore bundle's DSSE envelope: the payload type, the payload
    /// (base64-decoded) and each signature's raw bytes.
    Dsse {
        payload_type: String,
        payload: Vec<u8>,
        signatures: Vec<Vec<u8>>,
    },
}

impl RegistrySignature {
    /// How the record names this kind of signature.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistrySignature::Cosign { .. } => "cosign signature",
            RegistrySignature::Dsse { .. } => "sigstore bundle",
        }
    }
}

/// A registry signature offered for one decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryAttestation {
    pub signature: RegistrySignature,
    /// The digest the signature must name: the image's own, or one the node
    /// read from containerd's content store as the image's index or the
    /// platform manifest pulled through it (SPEC §11, multi-arch). Whoever
    /// offers the attestation for an image vouches for that link.
    pub signed_digest: Digest,
    /// Where it was found (`registry/repository`), for the record.
    pub found_in: String,
}

/// Which attestors registry signatures may count for (`registry_attestors`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RegistryAttestors {
    /// None: the bundle's occurrences alone decide.
    #[default]
    None,
    /// Every attestor (`"*"`).
    All,
    Named(BTreeSet<String>),
}

impl RegistryAttestors {
    /// From the configured list: `"*"` anywhere means every attestor.
    pub fn from_list<S: AsRef<str>>(names: &[S]) -> RegistryAttestors {
        if names.is_empty() {
            RegistryAttestors::None
        } else if names.iter().any(|n| n.as_ref() == "*") {
            RegistryAttestors::All
        } else {
            RegistryAttestors::Named(names.iter().map(|n| n.as_ref().to_string()).collect())
        }
    }

    pub fn admits(&self, attestor: &str) -> bool {
        match self {
            RegistryAttestors::None => false,
            RegistryAttestors::All => true,
            RegistryAttestors::Named(names) => names.contains(attestor),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, RegistryAttestors::None)
    }
}

/// DSSE's pre-authentication encoding: what a DSSE signature signs.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// Whether `signature` counts for `attestor` as a signature of `digest`:
/// on success, the id of the key that verified it; otherwise why not, in
/// the words the record uses ("… that fail to verify").
pub fn verify(
    attestor: &Attestor,
    signature: &RegistrySignature,
    digest: &Digest,
) -> Result<String, String> {
    let keys: Vec<_> = attestor
        .public_keys
        .iter()
        .filter_map(|k| match &k.material {
            KeyMaterial::Pkix(pkix) => Some((k.id.as_str(), pkix)),
            KeyMaterial::Pgp(_) => None,
        })
        .collect();
    if keys.is_empty() {
        return Err("that no PKIX key of the attestor can verify".to_string());
    }
    match signature {
        RegistrySignature::Cosign { payload, signature } => {
            let Some(id) = keys
                .iter()
                .find(|(_, key)| key.verify(payload, signature).is_ok())
                .map(|(id, _)| *id)
            else {
                return Err("that verify under none of the attestor's keys".to_string());
            };
            check_payload(payload, digest).map_err(|e| format!("with a bad payload: {e}"))?;
            Ok(id.to_string())
        }
        RegistrySignature::Dsse {
            payload_type,
            payload,
            signatures,
        } => {
            if payload_type != IN_TOTO_PAYLOAD_TYPE {
                return Err(format!("with payload type {payload_type:?}, not in-toto"));
            }
            let signed = pae(payload_type, payload);
            let Some(id) = keys
                .iter()
                .find(|(_, key)| signatures.iter().any(|s| key.verify(&signed, s).is_ok()))
                .map(|(id, _)| *id)
            else {
                return Err("that verify under none of the attestor's keys".to_string());
            };
            check_statement(payload, digest).map_err(|e| format!("with a bad statement: {e}"))?;
            Ok(id.to_string())
        }
    }
}

/// An in-toto statement counts for `digest` when one of its subjects names
/// it. Checked only after the signature verified, like a payload.
fn check_statement(payload: &[u8], digest: &Digest) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| "not a JSON object".to_string())?;
    let kind = value
        .get("_type")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    if !STATEMENT_TYPES.contains(&kind) {
        return Err(format!("statement type {kind:?} is not in-toto's"));
    }
    let (algorithm, hex) = digest
        .as_str()
        .split_once(':')
        .ok_or_else(|| "digest without an algorithm".to_string())?;
    let subjects = value
        .get("subject")
        .and_then(|s| s.as_array())
        .ok_or_else(|| "no subject".to_string())?;
    let names = subjects.iter().any(|s| {
        s.get("digest")
            .and_then(|d| d.get(algorithm))
            .and_then(|d| d.as_str())
            .is_some_and(|d| d == hex)
    });
    if names {
        Ok(())
    } else {
        Err(format!("no subject is {digest}"))
    }
}

/// The predicate type of a statement, for the record; none when it has none.
pub fn predicate_type(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(value.get("predicateType")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pae_is_dsse_s_own_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn a_statement_counts_only_for_a_digest_it_names() {
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        let other = Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap();
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"x","digest":{{"sha256":"{}"}}}},{{"digest":{{"sha256":"{}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#,
            "c".repeat(64),
            "a".repeat(64)
        );
        check_statement(statement.as_bytes(), &d).unwrap();
        assert!(
            check_statement(statement.as_bytes(), &other)
                .unwrap_err()
                .contains("no subject")
        );
        let wrong_type = statement.replace("in-toto.io/Statement/v1", "example.com/Statement");
        assert!(check_statement(wrong_type.as_bytes(), &d).is_err());
        assert!(check_statement(b"[]", &d).is_err());
        assert_eq!(
            predicate_type(statement.as_bytes()).as_deref(),
            Some("https://sigstore.dev/cosign/sign/v1")
        );
    }

    #[test]
    fn registry_attestors_star_means_all() {
        assert!(RegistryAttestors::from_list::<&str>(&[]).is_none());
        assert!(RegistryAttestors::from_list(&["a", "*"]).admits("b"));
        let named = RegistryAttestors::from_list(&["projects/p/attestors/a"]);
        assert!(named.admits("projects/p/attestors/a"));
        assert!(!named.admits("projects/p/attestors/b"));
    }
}
