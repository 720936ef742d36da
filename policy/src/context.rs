//! What a decision depends on besides the bundle: the pod it is for and
//! the settings of whoever decides. Shared by the project policy's
//! evaluation and the platform policy's, which must not import each other.

use std::collections::BTreeMap;

use crate::glob::NamePattern;
use crate::registry::RegistryAttestors;

pub const BREAK_GLASS_LABEL: &str = "image-policy.k8s.io/break-glass";
pub const BREAK_GLASS_ANNOTATION: &str = "alpha.image-policy.k8s.io/break-glass";

/// What a decision depends on besides the bundle and the pod: facts about
/// where it is made, given by whoever decides (the node's configuration, the
/// CLI's flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The node's cluster, GCP form `location.clusterId`.
    pub cluster: Option<String>,
    /// Images allowed when `globalPolicyEvaluationMode: ENABLE`.
    pub system_images: Vec<NamePattern>,
    /// Require an attestation's resource URI to name the same repository.
    pub strict_repository: bool,
    /// Attestors that signatures from the registry may count for (SPEC §11).
    pub registry_attestors: RegistryAttestors,
    /// Whether the bundle's platform policy must allow too (SPEC §12,
    /// `platform_policy_enforce`); when false, admission ignores it.
    pub platform_policy_enforce: bool,
}

pub const DEFAULT_SYSTEM_IMAGES: &[&str] = &["registry.k8s.io/pause*"];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster: None,
            system_images: DEFAULT_SYSTEM_IMAGES
                .iter()
                .filter_map(|p| NamePattern::parse(p).ok())
                .collect(),
            strict_repository: false,
            registry_attestors: RegistryAttestors::None,
            platform_policy_enforce: false,
        }
    }
}

/// The pod a request is for. Everything is optional: the shim may know
/// nothing beyond the image.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub service_account: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl PodContext {
    pub fn break_glass(&self) -> bool {
        self.labels
            .get(BREAK_GLASS_LABEL)
            .is_some_and(|v| v == "true")
            || self
                .annotations
                .get(BREAK_GLASS_ANNOTATION)
                .is_some_and(|v| v == "true")
    }
}
