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
use attestgate_policy::{Digest, ImageRef, RegistryAttestation, RegistrySignature};
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

/// Why a lookup added nothing: `reason` labels the metric, `message`
/// goes to the log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct LookupFailed {
    pub reason: &'static str,
    pub message: String,
}

impl LookupFailed {
    pub fn new(reason: &'static str, message: impl Into<String>) -> LookupFailed {
        LookupFailed {
            reason,
            message: message.into(),
        }
    }
}

impl Signatures {
    /// Looks up the signatures for `reference` (a tag or a digest of
    /// `image`'s repository), within the registry timeout.
    pub async fn fetch(
        &self,
        image: &ImageRef,
        reference: &str,
        credentials: Option<Credentials>,
    ) -> Result<Fetched, LookupFailed> {
        let timeout = self.registries.timeout();
        match tokio::time::timeout(timeout, self.fetch_unbounded(image, reference, credentials))
            .await
        {
            Ok(fetched) => fetched,
            Err(_) => Err(LookupFailed::new(
                "timeout",
                format!("no answer within {timeout:?}"),
            )),
        }
    }

    async fn fetch_unbounded(
        &self,
        image: &ImageRef,
        reference: &str,
        credentials: Option<Credentials>,
    ) -> Result<Fetched, LookupFailed> {
        let (registry, path) = split_repository(&image.repository).ok_or_else(|| {
            LookupFailed::new(
                "bad_reference",
                format!("{} names no registry", image.repository),
            )
        })?;
        let options = self
            .registries
            .options_for(&registry, credentials)
            .map_err(|e| LookupFailed::new("config", e))?;
        let found = signatures::lookup_image(
            &options,
            &registry,
            path,
            reference,
            &Platform::this_machine(),
            &self.limits,
        )
        .await
        .map_err(|e| LookupFailed::new(e.reason(), e.to_string()))?;
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
    /// Nothing unverified is written. Returns every signature found for
    /// those digests, verified or not, for the decision to explain.
    pub fn keep(
        &self,
        decider: &Decider,
        decided: &Digest,
        linked: Option<&Digest>,
        fetched: Fetched,
    ) -> Vec<RegistryAttestation> {
        let Fetched {
            found_in,
            signatures,
            ..
        } = fetched;
        let signatures: Vec<_> = signatures
            .into_iter()
            .filter(|(signed, _)| signed == decided || Some(signed) == linked)
            .collect();
        let found: Vec<Found> = signatures
            .iter()
            .map(|(signed, sigs)| Found {
                signed_digest: signed.clone(),
                found_in: found_in.clone(),
                verified: decider.verified_signatures(signed, sigs.clone()),
            })
            .collect();
        if !found.is_empty()
            && let Err(e) = self.cache.store(decided, &found)
        {
            self.metrics.attestation_cache_errors.inc();
            tracing::error!(error = %e, "verified registry signatures could not be cached");
        }
        signatures
            .into_iter()
            .flat_map(|(signed_digest, sigs)| {
                let found_in = found_in.clone();
                sigs.into_iter().map(move |signature| RegistryAttestation {
                    signature,
                    signed_digest: signed_digest.clone(),
                    found_in: found_in.clone(),
                })
            })
            .collect()
    }
}

/// How a lookup went, for the metrics: `found`, `none`, or why it failed.
pub fn result_label(result: &Result<Fetched, LookupFailed>) -> &'static str {
    match result {
        Ok(f) if f.signatures.iter().any(|(_, s)| !s.is_empty()) => "found",
        Ok(_) => "none",
        Err(e) => e.reason,
    }
}
