//! Signatures beside the image in its registry (SPEC §11), fetched at
//! PullImage with the credentials kubelet sent, verified under the bundle's
//! attestors and kept in the attestation cache, from which every later
//! decision reads them with no network.
//!
//! A lookup is bounded by `registry_timeout` as a whole and adds nothing
//! when it fails: fewer attestations can only deny more. It is logged and
//! counted, never an error of the pull.

use std::sync::Arc;

use attestgate_node::attestations::Found;
use attestgate_node::{AttestationCache, Decider};
use attestgate_policy::{Digest, ImageRef, RegistrySignature};
use attestgate_registry::access::Registries;
use attestgate_registry::oci::Credentials;
use attestgate_registry::signatures::{self, Platform, SignatureLimits, split_repository};

use crate::metrics::Metrics;

/// The registry side of the proxy: how to reach registries, what a lookup
/// may cost, where what verified goes.
pub struct Signatures {
    pub metrics: Arc<Metrics>,
    pub registries: Registries,
    pub limits: SignatureLimits,
    pub cache: AttestationCache,
}

/// What one lookup brought: the digest the reference named there, and the
/// signatures beside it and beside the children of an index that this
/// node's platform would pull.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub digest: Digest,
    /// `registry/repository`, as the record names it.
    pub found_in: String,
    pub signatures: Vec<(Digest, Vec<RegistrySignature>)>,
}

impl Signatures {
    /// Looks up the signatures for `reference` (a tag or a digest of
    /// `image`'s repository), within the registry timeout. Errors are the
    /// lookup's reason for the metrics and the log.
    pub async fn fetch(
        &self,
        image: &ImageRef,
        reference: &str,
        credentials: Option<Credentials>,
    ) -> Result<Fetched, String> {
        let timeout = self.registries.timeout();
        match tokio::time::timeout(timeout, self.fetch_unbounded(image, reference, credentials))
            .await
        {
            Ok(fetched) => fetched,
            Err(_) => Err(format!("timeout: no answer within {timeout:?}")),
        }
    }

    async fn fetch_unbounded(
        &self,
        image: &ImageRef,
        reference: &str,
        credentials: Option<Credentials>,
    ) -> Result<Fetched, String> {
        let (registry, path) = split_repository(&image.repository)
            .ok_or_else(|| format!("bad_reference: {} names no registry", image.repository))?;
        let options = self
            .registries
            .options_for(&registry, credentials)
            .map_err(|e| format!("config: {e}"))?;
        let found = signatures::lookup_image(
            &options,
            &registry,
            path,
            reference,
            &Platform::this_machine(),
            &self.limits,
        )
        .await
        .map_err(|e| format!("{}: {e}", e.reason()))?;
        for problem in &found.problems {
            tracing::info!(image = %image.repository, problem, "a registry signature was skipped");
        }
        for failure in &found.failed_children {
            self.metrics.registry_lookup("platform_failed");
            tracing::warn!(image = %image.repository, failure, "the signatures of the platform manifest could not be looked up");
        }
        Ok(Fetched {
            digest: found.digest,
            found_in: image.repository.clone(),
            signatures: found.signatures,
        })
    }

    /// Keeps what verified for `decided` (the digest the node decides the
    /// image by): the signatures made for it, and those made for the one
    /// digest containerd links it to (`linked`: the platform manifest it
    /// pulled through an index, or the index it was pulled through).
    /// Nothing unverified is written.
    pub fn keep(
        &self,
        decider: &Decider,
        metrics: &Arc<Metrics>,
        decided: &Digest,
        linked: Option<&Digest>,
        fetched: &Fetched,
    ) {
        let found: Vec<Found> = fetched
            .signatures
            .iter()
            .filter(|(signed, _)| signed == decided || Some(signed) == linked)
            .map(|(signed, sigs)| Found {
                signed_digest: signed.clone(),
                found_in: fetched.found_in.clone(),
                verified: decider.verified_signatures(signed, sigs.clone()),
            })
            .collect();
        if found.is_empty() {
            return;
        }
        if let Err(e) = self.cache.store(decided, &found) {
            metrics.attestation_cache_errors.inc();
            tracing::error!(error = %e, "verified registry signatures could not be cached");
        }
    }
}

/// How a lookup went, for the metrics: `found`, `none`, or the reason it
/// failed (the error's first word).
pub fn result_label(result: &Result<Fetched, String>) -> &'static str {
    match result {
        Ok(f) if f.signatures.iter().any(|(_, s)| !s.is_empty()) => "found",
        Ok(_) => "none",
        Err(e) => match e.split(':').next().unwrap_or_default() {
            "timeout" => "timeout",
            "unreachable" => "unreachable",
            "unauthorized" => "unauthorized",
            "too_large" => "too_large",
            "config" => "config",
            _ => "error",
        },
    }
}

/// A lookup can be skipped when the policy does not look at attestations
/// from the registry at all.
pub fn wanted(decider: &Decider) -> bool {
    !decider.evaluation.registry_attestors.is_none()
}
