//! Signatures kept beside an image in its own registry (SPEC §11): cosign's
//! `sha256-<hex>.sig` manifests (one simple-signing layer per signature,
//! the signature in a layer annotation) and sigstore bundles v0.3 attached
//! as OCI referrers, found through the referrers API or, where the
//! registry has none (distribution 2.8), through the fallback tag
//! `sha256-<hex>`.
//!
//! Nothing found here is trusted: [`lookup`] only brings the bytes in,
//! checked against their digests and bounded by [`SignatureLimits`], and
//! `attestgate_policy::registry::verify` decides whether a signature counts
//! for an attestor. The registry is untrusted for everything but
//! availability: a referrer whose subject is another image, a layer whose
//! bytes are not its digest, a bundle of another version are skipped and
//! reported as problems, while what prevents the lookup from being complete
//! (no answer, a timeout, refused credentials, a listing over its limit)
//! fails it as a whole, so the caller can log and count it.
//!
//! [`push_cosign`] writes what `cosign sign --key` (cosign 2, or 3 with
//! `--new-bundle-format=false`) writes, so `cosign verify` reads it too.

mod bundle;
mod common;
mod cosign;
mod cri;
mod image;
mod lookup;
mod resolve;

pub use common::{
    COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING, SIGSTORE_BUNDLE_V03, SignatureLimits,
    referrers_tag, sig_tag,
};
pub use cosign::{PushedSignature, cosign_payload, push_cosign};
pub use cri::{CriAuth, credentials_from_cri};
pub use image::{ImageSignatures, Platform, lookup_image, split_repository};
pub use lookup::{Lookup, lookup};
pub use resolve::{Child, Resolved, index_children, resolve};
