//! A sigstore bundle v0.3 (protojson of `dev.sigstore.bundle.v1.Bundle`)
//! read for its DSSE envelope. The verification material (key hint,
//! certificates, transparency-log entries, timestamps) is not read: SPEC
//! §11 trusts none of it, and the attestor's keys are tried regardless.

use attestgate_policy::RegistrySignature;
use base64::Engine as _;
use serde_json::Value;

use super::common::SIGSTORE_BUNDLE_V03;

/// protobuf-specs also spells v0.3 this way (and sigstore-go accepts it).
const SIGSTORE_BUNDLE_V03_PARAMETER: &str = "application/vnd.dev.sigstore.bundle+json;version=0.3";

/// The envelope of `bytes`, or why it is none we can use.
pub(super) fn parse_bundle(bytes: &[u8]) -> Result<RegistrySignature, String> {
    let bundle: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the bundle is not JSON: {e}"))?;
    let media_type = bundle
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or("the bundle has no mediaType")?;
    if media_type != SIGSTORE_BUNDLE_V03 && media_type != SIGSTORE_BUNDLE_V03_PARAMETER {
        return Err(format!(
            "the bundle is {media_type:?}; only sigstore bundle v0.3 is read"
        ));
    }
    let Some(envelope) = bundle.get("dsseEnvelope") else {
        return Err(if bundle.get("messageSignature").is_some() {
            "the bundle holds a message signature (a signed blob), not a DSSE envelope".into()
        } else {
            "the bundle has no dsseEnvelope".into()
        });
    };
    let payload_type = envelope
        .get("payloadType")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the envelope has no payloadType")?;
    let payload = envelope
        .get("payload")
        .and_then(Value::as_str)
        .ok_or("the envelope has no payload")?;
    let payload = decode(payload).map_err(|e| format!("the envelope's payload: {e}"))?;
    let listed = envelope
        .get("signatures")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
        .ok_or("the envelope has no signatures")?;
    let mut signatures = Vec::with_capacity(listed.len());
    for (i, entry) in listed.iter().enumerate() {
        let sig = entry
            .get("sig")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the envelope's signature {i} has no sig"))?;
        let sig = decode(sig).map_err(|e| format!("the envelope's signature {i}: {e}"))?;
        if sig.is_empty() {
            return Err(format!("the envelope's signature {i} is empty"));
        }
        signatures.push(sig);
    }
    Ok(RegistrySignature::Dsse {
        payload_type: payload_type.to_string(),
        payload,
        signatures,
    })
}

/// protojson writes bytes as standard padded base64 and reads either
/// alphabet, padded or not; so do we.
fn decode(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    standard
        .decode(text)
        .or_else(|_| url_safe.decode(text))
        .map_err(|e| format!("not base64: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn bundle(media_type: &str, content: &str) -> Vec<u8> {
        format!(
            r#"{{"mediaType":"{media_type}","verificationMaterial":{{"publicKey":{{"hint":"aGludA=="}},"tlogEntries":[]}},{content}}}"#
        )
        .into_bytes()
    }

    fn dsse(payload: &[u8], sigs: &[&[u8]]) -> String {
        let sigs: Vec<String> = sigs
            .iter()
            .map(|s| format!(r#"{{"sig":"{}","keyid":""}}"#, b64(s)))
            .collect();
        format!(
            r#""dsseEnvelope":{{"payload":"{}","payloadType":"application/vnd.in-toto+json","signatures":[{}]}}"#,
            b64(payload),
            sigs.join(",")
        )
    }

    #[test]
    fn a_v0_3_bundle_gives_its_envelope() {
        let got = parse_bundle(&bundle(
            SIGSTORE_BUNDLE_V03,
            &dsse(b"{\"_type\":1}", &[b"sig-one", b"sig-two"]),
        ))
        .unwrap();
        assert_eq!(
            got,
            RegistrySignature::Dsse {
                payload_type: "application/vnd.in-toto+json".into(),
                payload: b"{\"_type\":1}".to_vec(),
                signatures: vec![b"sig-one".to_vec(), b"sig-two".to_vec()],
            }
        );
        // The other spelling of v0.3, and unpadded URL-safe base64.
        let other = bundle(SIGSTORE_BUNDLE_V03_PARAMETER, &dsse(b"x", &[b"\xfb\xff"]))
            .into_iter()
            .collect::<Vec<u8>>();
        let text = String::from_utf8(other).unwrap().replace("+/8=", "-_8");
        assert!(text.contains("-_8"), "{text}");
        let RegistrySignature::Dsse { signatures, .. } = parse_bundle(text.as_bytes()).unwrap()
        else {
            panic!("not dsse");
        };
        assert_eq!(signatures, vec![b"\xfb\xff".to_vec()]);
    }

    #[test]
    fn other_versions_message_signatures_and_broken_envelopes_are_refused() {
        let envelope = dsse(b"{}", &[b"s"]);
        let refused = |bytes: Vec<u8>, needle: &str| {
            let why = parse_bundle(&bytes).unwrap_err();
            assert!(why.contains(needle), "{needle:?} not in {why:?}");
        };
        refused(
            bundle(
                "application/vnd.dev.sigstore.bundle+json;version=0.2",
                &envelope,
            ),
            "only sigstore bundle v0.3",
        );
        refused(
            bundle(
                "application/vnd.dev.sigstore.bundle+json;version=0.1",
                &envelope,
            ),
            "only sigstore bundle v0.3",
        );
        refused(
            bundle(
                SIGSTORE_BUNDLE_V03,
                r#""messageSignature":{"messageDigest":{"algorithm":"SHA2_256","digest":"AA=="},"signature":"AA=="}"#,
            ),
            "message signature",
        );
        refused(
            bundle(SIGSTORE_BUNDLE_V03, r#""other":1"#),
            "no dsseEnvelope",
        );
        refused(br#"{"dsseEnvelope":{}}"#.to_vec(), "no mediaType");
        refused(b"not json".to_vec(), "not JSON");
        refused(
            bundle(SIGSTORE_BUNDLE_V03, &envelope.replace(&b64(b"{}"), "%%%")),
            "payload: not base64",
        );
        refused(
            bundle(SIGSTORE_BUNDLE_V03, &envelope.replace(&b64(b"s"), "!!")),
            "signature 0: not base64",
        );
        refused(
            bundle(SIGSTORE_BUNDLE_V03, &dsse(b"{}", &[])),
            "no signatures",
        );
        refused(
            bundle(
                SIGSTORE_BUNDLE_V03,
                &envelope.replace(r#","payloadType":"application/vnd.in-toto+json""#, ""),
            ),
            "no payloadType",
        );
    }
}
