//! The simple-signing payload that attestations sign: produced byte for byte
//! as `gcloud container binauthz create-signature-payload` prints it, and
//! checked after a signature verifies.

use crate::reference::{Digest, ImageRef, ReferenceError};

pub const GCLOUD_PAYLOAD_TYPE: &str = "Google cloud binauthz container signature";

/// Payload types a verified attestation may carry.
pub const ACCEPTED_PAYLOAD_TYPES: &[&str] = &[
    GCLOUD_PAYLOAD_TYPE,
    "Google Cloud BinAuthz container signature",
    "atomic container signature",
    "cosign container image signature",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("artifact URL {0:?} must be REPOSITORY@DIGEST")]
    NotDigestUrl(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("payload is not a JSON object")]
    NotJson,
    #[error("payload has no critical.image.docker-manifest-digest")]
    NoDigest,
    #[error("payload names digest {found}, not {expected}")]
    DigestMismatch { found: String, expected: String },
    #[error("payload type {0:?} is not a container signature type")]
    UnknownType(String),
}

/// The payload for `REPOSITORY@DIGEST` (an optional `https://` is dropped).
pub fn signature_payload(artifact_url: &str) -> Result<String, PayloadError> {
    let url = artifact_url
        .strip_prefix("https://")
        .unwrap_or(artifact_url);
    let (repository, digest) = url
        .split_once('@')
        .ok_or_else(|| PayloadError::NotDigestUrl(artifact_url.to_string()))?;
    let parsed = ImageRef::parse(url)?;
    if parsed.tag.is_some() || parsed.digest.is_none() {
        return Err(PayloadError::NotDigestUrl(artifact_url.to_string()));
    }
    let digest = Digest::parse(digest)?;
    // gcloud's json.dumps(sort_keys=True, indent=2, separators=(',', ': '))
    // with ensure_ascii, plus a trailing newline.
    Ok(format!(
        "{{\n  \"critical\": {{\n    \"identity\": {{\n      \"docker-reference\": {}\n    }},\n    \"image\": {{\n      \"docker-manifest-digest\": {}\n    }},\n    \"type\": {}\n  }}\n}}\n",
        ascii_json_string(repository),
        ascii_json_string(digest.as_str()),
        ascii_json_string(GCLOUD_PAYLOAD_TYPE),
    ))
}

/// Checks a verified payload: it must name `expected` and be a container
/// signature.
pub fn check_payload(payload: &[u8], expected: &Digest) -> Result<(), PayloadError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| PayloadError::NotJson)?;
    let critical = value.get("critical").ok_or(PayloadError::NoDigest)?;
    let found = critical
        .get("image")
        .and_then(|i| i.get("docker-manifest-digest"))
        .and_then(|d| d.as_str())
        .ok_or(PayloadError::NoDigest)?;
    if found != expected.as_str() {
        return Err(PayloadError::DigestMismatch {
            found: found.to_string(),
            expected: expected.to_string(),
        });
    }
    let kind = critical
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    if !ACCEPTED_PAYLOAD_TYPES.contains(&kind) {
        return Err(PayloadError::UnknownType(kind.to_string()));
    }
    Ok(())
}

/// A JSON string literal as Python's `json.dumps(..., ensure_ascii=True)` writes it.
fn ascii_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn payload_matches_gcloud_bytes() {
        let payload = signature_payload(&format!("https://gcr.io/p/web@{D}")).unwrap();
        let expected = format!(
            "{{\n  \"critical\": {{\n    \"identity\": {{\n      \"docker-reference\": \"gcr.io/p/web\"\n    }},\n    \"image\": {{\n      \"docker-manifest-digest\": \"{D}\"\n    }},\n    \"type\": \"Google cloud binauthz container signature\"\n  }}\n}}\n"
        );
        assert_eq!(payload, expected);
        check_payload(payload.as_bytes(), &Digest::parse(D).unwrap()).unwrap();
    }

    #[test]
    fn tags_and_missing_digests_are_refused() {
        assert!(signature_payload("gcr.io/p/web:1").is_err());
        assert!(signature_payload(&format!("gcr.io/p/web:1@{D}")).is_err());
    }

    #[test]
    fn check_fails_because_digest_differs() {
        let payload = signature_payload(&format!("gcr.io/p/web@{D}")).unwrap();
        let other = Digest::parse(&format!("sha256:{}", "f".repeat(64))).unwrap();
        assert!(matches!(
            check_payload(payload.as_bytes(), &other),
            Err(PayloadError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn check_fails_because_type_unknown() {
        let payload = format!(
            r#"{{"critical":{{"image":{{"docker-manifest-digest":"{D}"}},"type":"my signature"}}}}"#
        );
        assert!(matches!(
            check_payload(payload.as_bytes(), &Digest::parse(D).unwrap()),
            Err(PayloadError::UnknownType(_))
        ));
    }

    #[test]
    fn every_accepted_type_passes() {
        for t in ACCEPTED_PAYLOAD_TYPES {
            let payload = format!(
                r#"{{"critical":{{"image":{{"docker-manifest-digest":"{D}"}},"type":"{t}"}}}}"#
            );
            check_payload(payload.as_bytes(), &Digest::parse(D).unwrap()).unwrap();
        }
    }

    #[test]
    fn non_ascii_is_escaped_like_python() {
        assert_eq!(
            ascii_json_string("é😀\u{1}"),
            "\"\\u00e9\\ud83d\\ude00\\u0001\""
        );
    }
}
