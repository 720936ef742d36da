//! Manifests and blobs by tag or digest, every one checked against its
//! digest and bounded before and while it arrives.

use attestgate_policy::Digest;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;

use super::common::{
    DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, SignatureLimits, digest_of,
};
use crate::oci::OciError;
use crate::oci::RegistryOptions;
use crate::oci::wire::Session;

/// A manifest fetched by tag or digest, its bytes checked against its
/// digest: the reference's when it is a digest; the Docker-Content-Digest
/// header's otherwise, which must match the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub digest: Digest,
    pub media_type: String,
    pub manifest: Vec<u8>,
}

/// A manifest an image index (or Docker manifest list) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub digest: Digest,
    pub media_type: String,
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
}

/// The four media types an image is pulled by.
const IMAGE_TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// The manifest `reference` (a tag or `sha256:…`) names in
/// `registry/repository`, as kubelet's pull would get it: an image
/// manifest or an index, OCI or Docker. Bounded by the default
/// [`SignatureLimits::max_manifest`].
pub async fn resolve(
    options: &RegistryOptions,
    registry: &str,
    repository: &str,
    reference: &str,
) -> Result<Resolved, OciError> {
    let mut session = Session::for_repository(registry, repository, options)?;
    check_reference(registry, repository, reference)?;
    let limit = SignatureLimits::default().max_manifest;
    match get_manifest(&mut session, reference, IMAGE_TYPES, limit).await? {
        Some(resolved) => Ok(resolved),
        None => Err(OciError::NotFound {
            reference: session.reference(),
            what: format!("manifest {reference}"),
        }),
    }
}

fn check_reference(registry: &str, repository: &str, reference: &str) -> Result<(), OciError> {
    let bad = |why: String| OciError::BadReference {
        reference: format!("{registry}/{repository}:{reference}"),
        why,
    };
    if reference.contains(':') {
        Digest::parse(reference).map_err(|e| bad(e.to_string()))?;
        Ok(())
    } else {
        crate::oci::reference::check_tag(reference).map_err(bad)
    }
}

/// The children of an image index or manifest list with their platforms;
/// none for an image manifest. A child whose digest is malformed is left
/// out: it could not be fetched by it anyway.
pub fn index_children(resolved: &Resolved) -> Vec<Child> {
    if resolved.media_type != OCI_INDEX && resolved.media_type != DOCKER_LIST {
        return Vec::new();
    }
    let Ok(index) = serde_json::from_slice::<Index>(&resolved.manifest) else {
        return Vec::new();
    };
    index
        .manifests
        .into_iter()
        .filter_map(|d| {
            let platform = d.platform.unwrap_or_default();
            Some(Child {
                digest: Digest::parse(&d.digest).ok()?,
                media_type: d.media_type,
                os: platform.os,
                architecture: platform.architecture,
                variant: platform.variant,
            })
        })
        .collect()
}

#[derive(Deserialize, Debug, Clone, Default)]
pub(super) struct Platform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

/// An OCI descriptor, as much of it as we read.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    #[serde(default)]
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) size: u64,
    #[serde(default)]
    pub(super) annotations: std::collections::BTreeMap<String, String>,
    pub(super) artifact_type: Option<String>,
    platform: Option<Platform>,
}

/// An image manifest (OCI or Docker v2).
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(super) struct ImageManifest {
    #[serde(default)]
    pub(super) layers: Vec<Descriptor>,
    pub(super) subject: Option<Descriptor>,
}

/// An image index (OCI), a manifest list (Docker) or a referrers listing.
#[derive(Deserialize, Debug, Clone)]
pub(super) struct Index {
    #[serde(default)]
    pub(super) manifests: Vec<Descriptor>,
}

/// `GET manifests/<reference>` accepting `accept`; `None` when the
/// registry has no such manifest. The bytes are bounded by `limit`,
/// checked against the digest the reference or the registry names, and
/// refused unless their media type is one of `accept`.
pub(super) async fn get_manifest(
    session: &mut Session,
    reference: &str,
    accept: &[&str],
    limit: u64,
) -> Result<Option<Resolved>, OciError> {
    let url = session.url(&format!("manifests/{reference}"));
    let timeout = session.timeout;
    let accept_header = accept.join(", ");
    let response = session
        .send(|client| {
            client
                .get(&url)
                .header(ACCEPT, &accept_header)
                .timeout(timeout)
        })
        .await?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(session.status_error(status, &format!("manifest {reference}")));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let announced = header(reqwest::header::HeaderName::from_static(
        "docker-content-digest",
    ));
    let content_type = header(CONTENT_TYPE).map(|t| {
        t.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let what = format!("manifest {reference}");
    let bytes = session.read_capped(response, limit, &what).await?;
    let mismatch = |expected: &str, why: String| OciError::DigestMismatch {
        reference: session.reference(),
        what: what.clone(),
        expected: expected.to_string(),
        why,
    };
    let bad = |why: String| OciError::BadManifest {
        reference: session.reference(),
        what: what.clone(),
        why,
    };
    let pinned = Digest::parse(reference).ok();
    let digest = match (pinned, announced) {
        (Some(pinned), announced) => {
            check_bytes(&bytes, &pinned).map_err(|why| mismatch(pinned.as_str(), why))?;
            if let Some(announced) = announced
                && announced != pinned.as_str()
            {
                return Err(mismatch(
                    pinned.as_str(),
                    format!("the registry announced {announced}"),
                ));
            }
            pinned
        }
        (None, Some(announced)) => {
            let announced_digest = Digest::parse(&announced).map_err(|e| {
                mismatch(
                    &announced,
                    format!("the registry's digest is malformed: {e}"),
                )
            })?;
            check_bytes(&bytes, &announced_digest).map_err(|why| {
                mismatch(&announced, format!("the registry announced it, but {why}"))
            })?;
            announced_digest
        }
        // What a manifest's digest is: no header changes it.
        (None, None) => {
            let computed = digest_of("sha256", &bytes).unwrap_or_default();
            Digest::parse(&computed).map_err(|e| bad(e.to_string()))?
        }
    };
    let media_type = media_type_of(&bytes, content_type.as_deref()).map_err(bad)?;
    if !accept.contains(&media_type.as_str()) {
        return Err(bad(format!(
            "its media type is {media_type}, not one of {}",
            accept.join(", ")
        )));
    }
    Ok(Some(Resolved {
        digest,
        media_type,
        manifest: bytes,
    }))
}

/// Why `bytes` are not what `digest` names, if they are not.
pub(super) fn check_bytes(bytes: &[u8], digest: &Digest) -> Result<(), String> {
    let (algorithm, _) = digest.as_str().split_once(':').unwrap_or_default();
    match digest_of(algorithm, bytes) {
        Some(got) if got == digest.as_str() => Ok(()),
        Some(got) => Err(format!("its bytes hash to {got}")),
        None => Err(format!("{algorithm} digests cannot be checked")),
    }
}

/// The media type the manifest says it has (schema 2 puts it in the body;
/// OCI may leave it to the Content-Type), both agreeing when both are
/// there.
fn media_type_of(bytes: &[u8], content_type: Option<&str>) -> Result<String, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        schema_version: Option<u64>,
        media_type: Option<String>,
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON manifest: {e}"))?;
    if head.schema_version != Some(2) {
        return Err(format!("schemaVersion is {:?}, not 2", head.schema_version));
    }
    match (head.media_type, content_type) {
        (Some(body), Some(header)) if !header.is_empty() && body != header => {
            Err(format!("it says it is {body}, the registry says {header}"))
        }
        (Some(body), _) => Ok(body),
        (None, Some(header)) if !header.is_empty() => Ok(header.to_string()),
        (None, _) => Err("it has no media type".into()),
    }
}

/// Blob `digest` of `size` bytes (as its descriptor says), refused before
/// asking when `size` passes `limit`, and while arriving when the registry
/// sends more than `size`; then checked against `digest`.
pub(super) async fn get_blob(
    session: &mut Session,
    digest: &Digest,
    size: u64,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, OciError> {
    if size > limit {
        return Err(OciError::TooLarge {
            reference: session.reference(),
            what: what.to_string(),
            size,
            limit,
        });
    }
    let url = session.url(&format!("blobs/{digest}"));
    let timeout = session.timeout;
    let response = session
        .send(|client| client.get(&url).timeout(timeout))
        .await?;
    let status = response.status();
    if !status.is_success() {
        return Err(session.status_error(status, what));
    }
    let bytes = session.read_capped(response, size, what).await?;
    let mismatch = |why: String| OciError::DigestMismatch {
        reference: session.reference(),
        what: what.to_string(),
        expected: digest.to_string(),
        why,
    };
    if bytes.len() as u64 != size {
        return Err(mismatch(format!(
            "{} bytes arrived, its descriptor says {size}",
            bytes.len()
        )));
    }
    check_bytes(&bytes, digest).map_err(mismatch)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn resolved(media_type: &str, manifest: &str) -> Resolved {
        Resolved {
            digest: Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap(),
            media_type: media_type.into(),
            manifest: manifest.as_bytes().to_vec(),
        }
    }

    #[test]
    fn an_index_names_its_children_with_their_platforms() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{a}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{b}","size":11,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:nothex","size":11}},
              {{"mediaType":"application/vnd.in-toto+json","digest":"{b}","size":3}}]}}"#
        );
        let children = index_children(&resolved(OCI_INDEX, &index));
        assert_eq!(children.len(), 3, "{children:?}");
        assert_eq!(children[0].digest.as_str(), a);
        assert_eq!(children[0].os.as_deref(), Some("linux"));
        assert_eq!(children[0].architecture.as_deref(), Some("arm64"));
        assert_eq!(children[0].variant.as_deref(), Some("v8"));
        assert_eq!(children[1].variant, None);
        assert_eq!(children[2].os, None);
        assert_eq!(children[2].media_type, "application/vnd.in-toto+json");
        let list = index.replace(OCI_INDEX, DOCKER_LIST);
        assert_eq!(index_children(&resolved(DOCKER_LIST, &list)).len(), 3);
        // A single manifest has no children, whatever its body holds.
        assert!(index_children(&resolved(OCI_MANIFEST, &index)).is_empty());
        assert!(index_children(&resolved(OCI_INDEX, "not json")).is_empty());
    }

    #[test]
    fn a_media_type_comes_from_the_body_or_the_header_and_both_must_agree() {
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}"}}"#);
        assert_eq!(media_type_of(body.as_bytes(), None).unwrap(), OCI_MANIFEST);
        assert_eq!(
            media_type_of(body.as_bytes(), Some(OCI_MANIFEST)).unwrap(),
            OCI_MANIFEST
        );
        assert!(media_type_of(body.as_bytes(), Some(DOCKER_MANIFEST)).is_err());
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2}"#, Some(OCI_INDEX)).unwrap(),
            OCI_INDEX
        );
        assert!(media_type_of(br#"{"schemaVersion":2}"#, None).is_err());
        assert!(media_type_of(br#"{"schemaVersion":1}"#, Some(OCI_INDEX)).is_err());
        assert!(media_type_of(b"[]", Some(OCI_INDEX)).is_err());
    }
}
