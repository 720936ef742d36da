//! Writing a signature as `cosign sign --key` does without a transparency
//! log: the simple-signing payload as one more layer of the image's
//! `sha256-<hex>.sig` manifest, the signature in the layer's annotation.

use std::collections::BTreeMap;

use attestgate_policy::Digest;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::common::{
    COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING, DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST,
    SignatureLimits, digest_of, sig_tag,
};
use super::resolve::get_manifest;
use crate::oci::push::{push_blob, put_manifest};
use crate::oci::wire::Session;
use crate::oci::{OciError, OciRef, RegistryOptions};

/// cosign's simple-signing payload for the image `digest` in
/// `docker_reference` (the repository with its registry, no tag), byte for
/// byte as Go's encoder writes cosign's struct: fields in struct order, no
/// spaces, `optional` null.
pub fn cosign_payload(docker_reference: &str, digest: &Digest) -> Vec<u8> {
    // serde_json escapes a string as Go does for every character a
    // repository name or digest can hold.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":{}}},"image":{{"docker-manifest-digest":{}}},"type":"cosign container image signature"}},"optional":null}}"#,
        quote(docker_reference),
        quote(digest.as_str()),
    )
    .into_bytes()
}

/// What [`push_cosign`] left in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedSignature {
    /// `sha256-<hex>.sig`
    pub tag: String,
    /// The digest of the `.sig` manifest the tag now names.
    pub manifest_digest: String,
    /// Layers (signatures) in it.
    pub layers: usize,
    /// False when the same payload and signature were there already and
    /// nothing was pushed.
    pub added: bool,
}

/// A layer descriptor, kept as it was for layers already there.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Layer {
    media_type: String,
    size: u64,
    digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    /// `urls`, `data`, `platform`, … of layers others wrote.
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct SigManifest {
    schema_version: u32,
    media_type: String,
    config: Layer,
    layers: Vec<Layer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

/// go-containerregistry's image config as cosign's `.sig` images carry
/// it: nothing in it is signed or read, but `cosign tree` and `crane`
/// expect an image config whose diff_ids are the layers.
#[derive(Serialize)]
struct Config<'a> {
    architecture: &'a str,
    created: &'a str,
    history: Vec<History<'a>>,
    os: &'a str,
    rootfs: RootFs<'a>,
    config: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a str>,
}

/// Go's zero time, which go-containerregistry writes for times not set.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Adds `signature` over `payload` to `digest`'s `.sig` manifest in
/// `registry/repository`, as cosign 2 does: the layers already there are
/// kept as they are, the payload is one more uncompressed layer with the
/// signature (base64) in its annotation, unless a layer with the same
/// payload and signature is there already (then nothing is pushed).
/// Concurrent signers race as they do with cosign: the last PUT wins.
pub async fn push_cosign(
    options: &RegistryOptions,
    registry: &str,
    repository: &str,
    digest: &Digest,
    payload: &[u8],
    signature: &[u8],
) -> Result<PushedSignature, OciError> {
    let tag = sig_tag(digest);
    let mut session = Session::for_repository(registry, repository, options)?;
    let limit = SignatureLimits::default().max_manifest;
    let existing =
        get_manifest(&mut session, &tag, &[OCI_MANIFEST, DOCKER_MANIFEST], limit).await?;
    let mut layers = match &existing {
        Some(existing) => {
            let parsed: SigManifest =
                serde_json::from_slice(&existing.manifest).map_err(|e| OciError::BadManifest {
                    reference: session.reference(),
                    what: format!("manifest {tag}"),
                    why: format!("not a cosign signature manifest, left alone: {e}"),
                })?;
            parsed.layers
        }
        None => Vec::new(),
    };
    let payload_digest = digest_of("sha256", payload).unwrap_or_default();
    let b64 = base64::engine::general_purpose::STANDARD;
    let same = layers.iter().any(|layer| {
        layer.digest == payload_digest
            && layer
                .annotations
                .get(COSIGN_SIGNATURE_ANNOTATION)
                .and_then(|a| b64.decode(a.trim()).ok())
                .is_some_and(|s| s == signature)
    });
    if let (true, Some(existing)) = (same, &existing) {
        return Ok(PushedSignature {
            tag,
            manifest_digest: existing.digest.to_string(),
            layers: layers.len(),
            added: false,
        });
    }
    layers.push(Layer {
        media_type: COSIGN_SIMPLESIGNING.to_string(),
        size: payload.len() as u64,
        digest: payload_digest.clone(),
        annotations: BTreeMap::from([(
            COSIGN_SIGNATURE_ANNOTATION.to_string(),
            b64.encode(signature),
        )]),
        rest: BTreeMap::new(),
    });
    let config = serde_json::to_vec(&Config {
        architecture: "",
        created: ZERO_TIME,
        history: layers
            .iter()
            .map(|_| History { created: ZERO_TIME })
            .collect(),
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.digest.as_str()).collect(),
        },
        config: BTreeMap::new(),
    })
    .map_err(|e| bad_json(&session, e))?;
    let config_digest = digest_of("sha256", &config).unwrap_or_default();
    let manifest = SigManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.to_string(),
        config: Layer {
            media_type: OCI_CONFIG.to_string(),
            size: config.len() as u64,
            digest: config_digest.clone(),
            annotations: BTreeMap::new(),
            rest: BTreeMap::new(),
        },
        layers,
        annotations: None,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| bad_json(&session, e))?;
    push_blob(
        &mut session,
        &payload_digest,
        Bytes::copy_from_slice(payload),
    )
    .await?;
    push_blob(&mut session, &config_digest, Bytes::from(config)).await?;
    let to = OciRef {
        registry: registry.to_string(),
        repository: repository.to_string(),
        tag: Some(tag.clone()),
        digest: None,
    };
    let manifest_digest = put_manifest(&mut session, &to, manifest_bytes).await?;
    tracing::info!(reference = %to, %manifest_digest, layers = manifest.layers.len(), "pushed cosign signature");
    Ok(PushedSignature {
        tag,
        manifest_digest,
        layers: manifest.layers.len(),
        added: true,
    })
}

fn bad_json(session: &Session, e: serde_json::Error) -> OciError {
    OciError::Local {
        path: session.reference().into(),
        why: format!("cannot encode the signature manifest: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_payload_is_cosign_s_byte_for_byte() {
        let d = Digest::parse(&format!("sha256:{}", "0123456789abcdef".repeat(4))).unwrap();
        let payload = cosign_payload("registry.example:5000/team/app", &d);
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"registry.example:5000/team/app\"}},\"image\":{{\"docker-manifest-digest\":\"sha256:{}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}",
                "0123456789abcdef".repeat(4)
            )
        );
        // attestgate's own payload check accepts it for that digest.
        attestgate_policy::payload::check_payload(&cosign_payload("r/a", &d), &d).unwrap();
    }

    #[test]
    fn a_config_is_go_containerregistry_s_shape() {
        let config = serde_json::to_string(&Config {
            architecture: "",
            created: ZERO_TIME,
            history: vec![History { created: ZERO_TIME }],
            os: "",
            rootfs: RootFs {
                kind: "layers",
                diff_ids: vec!["sha256:aa"],
            },
            config: BTreeMap::new(),
        })
        .unwrap();
        assert_eq!(
            config,
            r#"{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"config":{}}"#
        );
    }

    #[test]
    fn layers_others_wrote_keep_their_fields() {
        let text = r#"{"mediaType":"m","size":3,"digest":"sha256:x","annotations":{"a":"1","dev.sigstore.cosign/bundle":"{}"},"urls":["u"]}"#;
        let layer: Layer = serde_json::from_str(text).unwrap();
        let again: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&layer).unwrap()).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
    }
}
