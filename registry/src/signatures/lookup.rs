//! Finding the signatures beside an image: its cosign `.sig` manifest and
//! its sigstore bundle referrers.

use std::collections::BTreeSet;

use attestgate_policy::{Digest, RegistrySignature};
use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::ACCEPT;

use super::bundle::parse_bundle;
use super::common::{
    COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
    SIGSTORE_BUNDLE_V03, SignatureLimits, referrers_tag, sig_tag,
};
use super::resolve::{Descriptor, ImageManifest, Index, get_blob, get_manifest};
use crate::oci::wire::Session;
use crate::oci::{OciError, RegistryOptions};

/// What one lookup found and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// Every signature whose bytes matched their digests, unverified.
    pub signatures: Vec<RegistrySignature>,
    /// What was skipped and why, one line each, for the log.
    pub problems: Vec<String>,
    /// HTTP requests sent (token requests included).
    pub requests: u32,
    /// Response body bytes read.
    pub bytes: u64,
}

/// Every signature `registry/repository` holds beside `digest`: the layers
/// of cosign's `sha256-<hex>.sig` and the DSSE envelopes of sigstore bundle
/// v0.3 referrers (through the referrers API, or the fallback tag
/// `sha256-<hex>` where the registry has none).
///
/// A malformed item (bad base64, bytes that are not their digest, a
/// referrer of another image, a bundle of another version) is skipped and
/// named in `problems`. An `Err` means the lookup could not be complete:
/// the registry unreachable or timing out (each request is bounded by
/// `options.timeout`; the caller bounds the whole), credentials refused,
/// 5xx, or the `.sig` manifest or the referrers listing over its limit.
pub async fn lookup(
    options: &RegistryOptions,
    registry: &str,
    repository: &str,
    digest: &Digest,
    limits: &SignatureLimits,
) -> Result<Lookup, OciError> {
    let mut session = Session::for_repository(registry, repository, options)?;
    let mut found = Lookup::default();
    let result = match cosign_layers(&mut session, digest, limits, &mut found).await {
        Ok(()) => bundles(&mut session, digest, limits, &mut found).await,
        Err(e) => Err(e),
    };
    found.requests = session.requests;
    found.bytes = session.bytes;
    tracing::debug!(
        reference = %session.reference(),
        %digest,
        signatures = found.signatures.len(),
        problems = found.problems.len(),
        requests = found.requests,
        bytes = found.bytes,
        ok = result.is_ok(),
        "registry signature lookup"
    );
    result.map(|()| found)
}

/// Whether a failure to fetch one item only spoils that item: the registry
/// answered, and what it holds there is wrong. Everything else (no answer,
/// refused credentials, 5xx) would spoil the next request as well.
fn spoils_only_the_item(error: &OciError) -> bool {
    matches!(
        error,
        OciError::NotFound { .. }
            | OciError::DigestMismatch { .. }
            | OciError::TooLarge { .. }
            | OciError::BadManifest { .. }
            | OciError::BadResponse { .. }
    )
}

/// The simple-signing layers of cosign's `.sig` manifest.
async fn cosign_layers(
    session: &mut Session,
    digest: &Digest,
    limits: &SignatureLimits,
    found: &mut Lookup,
) -> Result<(), OciError> {
    let tag = sig_tag(digest);
    // cosign writes OCI types unless COSIGN_DOCKER_MEDIA_TYPES is set.
    let manifest = match get_manifest(
        session,
        &tag,
        &[OCI_MANIFEST, DOCKER_MANIFEST],
        limits.max_manifest,
    )
    .await
    {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return Ok(()),
        Err(e @ (OciError::DigestMismatch { .. } | OciError::BadManifest { .. })) => {
            found.problems.push(format!("cosign signatures {tag}: {e}"));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let parsed: ImageManifest = match serde_json::from_slice(&manifest.manifest) {
        Ok(parsed) => parsed,
        Err(e) => {
            found.problems.push(format!(
                "cosign signatures {tag}: not an image manifest: {e}"
            ));
            return Ok(());
        }
    };
    if parsed.layers.len() > limits.max_layers {
        return Err(OciError::TooLarge {
            reference: session.reference(),
            what: format!("the layers of {tag}"),
            size: parsed.layers.len() as u64,
            limit: limits.max_layers as u64,
        });
    }
    for (i, layer) in parsed.layers.iter().enumerate() {
        let name = format!("{tag} layer {i}");
        if layer.media_type != COSIGN_SIMPLESIGNING {
            found.problems.push(format!(
                "{name}: media type {:?}, not a simple-signing payload",
                layer.media_type
            ));
            continue;
        }
        let Some(annotation) = layer.annotations.get(COSIGN_SIGNATURE_ANNOTATION) else {
            found.problems.push(format!(
                "{name}: no {COSIGN_SIGNATURE_ANNOTATION} annotation"
            ));
            continue;
        };
        let signature = match base64::engine::general_purpose::STANDARD.decode(annotation.trim()) {
            Ok(signature) if !signature.is_empty() => signature,
            Ok(_) => {
                found
                    .problems
                    .push(format!("{name}: the signature is empty"));
                continue;
            }
            Err(e) => {
                found
                    .problems
                    .push(format!("{name}: the signature is not base64: {e}"));
                continue;
            }
        };
        let Some(payload) = fetch_item(
            session,
            layer,
            limits.max_payload,
            &name,
            &mut found.problems,
        )
        .await?
        else {
            continue;
        };
        found
            .signatures
            .push(RegistrySignature::Cosign { payload, signature });
    }
    Ok(())
}

/// The blob `descriptor` names, `None` (and a problem) when that blob is
/// wrong; an `Err` when the registry cannot be used any more.
async fn fetch_item(
    session: &mut Session,
    descriptor: &Descriptor,
    limit: u64,
    name: &str,
    problems: &mut Vec<String>,
) -> Result<Option<Vec<u8>>, OciError> {
    let digest = match Digest::parse(&descriptor.digest) {
        Ok(digest) => digest,
        Err(e) => {
            problems.push(format!("{name}: {e}"));
            return Ok(None);
        }
    };
    match get_blob(session, &digest, descriptor.size, limit, name).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if spoils_only_the_item(&e) => {
            problems.push(format!("{name}: {e}"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The DSSE envelopes of the bundle referrers of `digest`.
async fn bundles(
    session: &mut Session,
    digest: &Digest,
    limits: &SignatureLimits,
    found: &mut Lookup,
) -> Result<(), OciError> {
    let Some(listing) = referrers(session, digest, limits, found).await? else {
        return Ok(());
    };
    if listing.manifests.len() > limits.max_referrers {
        return Err(OciError::TooLarge {
            reference: session.reference(),
            what: format!("the referrers of {digest}"),
            size: listing.manifests.len() as u64,
            limit: limits.max_referrers as u64,
        });
    }
    let mut seen = BTreeSet::new();
    for descriptor in listing.manifests {
        // The fallback index lists every referrer; the API may ignore the
        // filter. Other artifacts (SBOMs, attestations of other formats)
        // are not signatures we read.
        if descriptor.artifact_type.as_deref() != Some(SIGSTORE_BUNDLE_V03) {
            continue;
        }
        if !seen.insert(descriptor.digest.clone()) {
            continue;
        }
        let name = format!("referrer {}", descriptor.digest);
        match bundle_of(session, digest, &descriptor, limits, &name, found).await {
            Ok(()) => {}
            Err(e) if spoils_only_the_item(&e) => found.problems.push(format!("{name}: {e}")),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The referrers listing: the API's answer, else the fallback tag's index;
/// `None` when neither has one.
async fn referrers(
    session: &mut Session,
    digest: &Digest,
    limits: &SignatureLimits,
    found: &mut Lookup,
) -> Result<Option<Index>, OciError> {
    let url = session.url(&format!("referrers/{digest}"));
    let timeout = session.timeout;
    let response = session
        .send(|client| {
            client
                .get(&url)
                .query(&[("artifactType", SIGSTORE_BUNDLE_V03)])
                .header(ACCEPT, OCI_INDEX)
                .timeout(timeout)
        })
        .await?;
    let status = response.status();
    let what = format!("the referrers of {digest}");
    let listing = if status.is_success() {
        session
            .read_capped(response, limits.max_manifest, &what)
            .await?
    } else if matches!(
        status,
        // distribution 2.8 has no such route and answers 404 in plain
        // text; others say they do not implement it.
        StatusCode::NOT_FOUND
            | StatusCode::BAD_REQUEST
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED
    ) {
        // Its body says nothing we need; it is not read.
        drop(response);
        let tag = referrers_tag(digest);
        match get_manifest(session, &tag, &[OCI_INDEX], limits.max_manifest).await {
            Ok(Some(index)) => index.manifest,
            Ok(None) => return Ok(None),
            Err(e @ (OciError::DigestMismatch { .. } | OciError::BadManifest { .. })) => {
                found.problems.push(format!("referrers tag {tag}: {e}"));
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    } else {
        return Err(session.status_error(status, &what));
    };
    match serde_json::from_slice::<Index>(&listing) {
        Ok(index) => Ok(Some(index)),
        Err(e) => {
            found
                .problems
                .push(format!("{what}: not an image index: {e}"));
            Ok(None)
        }
    }
}

/// One referrer: its manifest by digest, its subject checked, its bundle
/// layers read.
async fn bundle_of(
    session: &mut Session,
    digest: &Digest,
    descriptor: &Descriptor,
    limits: &SignatureLimits,
    name: &str,
    found: &mut Lookup,
) -> Result<(), OciError> {
    let referrer = match Digest::parse(&descriptor.digest) {
        Ok(referrer) => referrer,
        Err(e) => {
            found.problems.push(format!("{name}: {e}"));
            return Ok(());
        }
    };
    if descriptor.size > limits.max_manifest {
        return Err(OciError::TooLarge {
            reference: session.reference(),
            what: name.to_string(),
            size: descriptor.size,
            limit: limits.max_manifest,
        });
    }
    let Some(manifest) =
        get_manifest(session, referrer.as_str(), &[OCI_MANIFEST], descriptor.size).await?
    else {
        found
            .problems
            .push(format!("{name}: listed, but not in the registry"));
        return Ok(());
    };
    let parsed: ImageManifest = match serde_json::from_slice(&manifest.manifest) {
        Ok(parsed) => parsed,
        Err(e) => {
            found
                .problems
                .push(format!("{name}: not an image manifest: {e}"));
            return Ok(());
        }
    };
    // Anyone who may push may list anything under the fallback tag.
    let subject = parsed.subject.as_ref().map(|s| s.digest.as_str());
    if subject != Some(digest.as_str()) {
        found.problems.push(format!(
            "{name}: its subject is {}, not {digest}",
            subject.unwrap_or("missing")
        ));
        return Ok(());
    }
    let layers: Vec<&Descriptor> = parsed
        .layers
        .iter()
        .filter(|l| l.media_type == SIGSTORE_BUNDLE_V03)
        .take(limits.max_layers)
        .collect();
    if layers.is_empty() {
        found
            .problems
            .push(format!("{name}: no layer of type {SIGSTORE_BUNDLE_V03}"));
    }
    for (i, layer) in layers.into_iter().enumerate() {
        let layer_name = format!("{name} layer {i}");
        let Some(bytes) = fetch_item(
            session,
            layer,
            limits.max_bundle,
            &layer_name,
            &mut found.problems,
        )
        .await?
        else {
            continue;
        };
        match parse_bundle(&bytes) {
            Ok(signature) => found.signatures.push(signature),
            Err(why) => found.problems.push(format!("{layer_name}: {why}")),
        }
    }
    Ok(())
}
