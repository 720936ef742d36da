//! The media types, tags, limits and digests every part of the signature
//! lookup shares.

/// The media type of a cosign `.sig` layer: the simple-signing payload.
pub const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the signature, base64 (standard, padded).
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// A sigstore bundle v0.3: the referrer's `artifactType` and its layer's
/// media type.
pub const SIGSTORE_BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Caps for one lookup. A signature is a few hundred bytes; these leave
/// room for what cosign and sigstore write while keeping what a hostile
/// repository can make a node read small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureLimits {
    /// A `.sig` manifest, a referrer manifest, a referrers index.
    pub max_manifest: u64,
    /// One simple-signing payload.
    pub max_payload: u64,
    /// One sigstore bundle (JSON).
    pub max_bundle: u64,
    /// Layers of one `.sig` manifest (cosign itself reads up to 1000).
    pub max_layers: usize,
    /// Descriptors in the referrers listing.
    pub max_referrers: usize,
}

impl Default for SignatureLimits {
    fn default() -> Self {
        SignatureLimits {
            max_manifest: 1 << 20,
            max_payload: 64 << 10,
            max_bundle: 1 << 20,
            max_layers: 100,
            max_referrers: 100,
        }
    }
}

/// cosign's tag for the signatures of `digest` (`sha256-<hex>.sig`).
pub fn sig_tag(digest: &attestgate_policy::Digest) -> String {
    format!("{}.sig", digest.as_str().replacen(':', "-", 1))
}

/// The OCI referrers fallback tag for `digest` (distribution-spec 1.1):
/// the algorithm cut to 32 characters, `-`, the encoded part cut to 64.
pub fn referrers_tag(digest: &attestgate_policy::Digest) -> String {
    let (algorithm, encoded) = digest
        .as_str()
        .split_once(':')
        .unwrap_or(("sha256", digest.as_str()));
    let clean = |text: &str, max: usize| -> String {
        text.chars()
            .take(max)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!("{}-{}", clean(algorithm, 32), clean(encoded, 64))
}

/// `algorithm:hex` of `bytes` under `algorithm`; `None` for an algorithm
/// we cannot compute, which then cannot be checked and is refused.
pub(crate) fn digest_of(algorithm: &str, bytes: &[u8]) -> Option<String> {
    use sha2::Digest as _;
    match algorithm {
        "sha256" => Some(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        )),
        "sha512" => Some(format!(
            "sha512:{}",
            hex::encode(sha2::Sha512::digest(bytes))
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use attestgate_policy::Digest;

    #[test]
    fn tags_are_cosign_s_and_the_referrers_fallback() {
        let d = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        assert_eq!(sig_tag(&d), format!("sha256-{}.sig", "ab".repeat(32)));
        assert_eq!(referrers_tag(&d), format!("sha256-{}", "ab".repeat(32)));
        let long = Digest::parse(&format!("sha512:{}", "c".repeat(128))).unwrap();
        assert_eq!(referrers_tag(&long), format!("sha512-{}", "c".repeat(64)));
    }
}
