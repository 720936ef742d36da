//! GKE check-based platform policies (SPEC §12): the `gkePolicy` form of a
//! Binary Authorization `PlatformPolicy` resource, as `gcloud beta container
//! binauthz policy export` prints it, kept in a bundle as
//! `platform-policy.yaml` (or `.yml`, `.json`).
//!
//! A policy is a list of check sets, each scoped to a namespace, a service
//! account or everything. The first check set whose scope matches the pod
//! applies; the image conforms when the check set (or the policy) exempts
//! it by name, or when every check in the set passes. Checks the node
//! cannot evaluate (they need Google's services: vulnerability scans, SLSA
//! provenance, upload times) parse, never pass, and are reported as
//! configuration errors, as GKE's `configErrorEvent` reports them.

mod dir_pattern;
pub(crate) mod evaluate;
pub(crate) mod model;
pub(crate) mod parse;

pub use dir_pattern::{DirPattern, DirPatternError};
pub use evaluate::{CheckResult, PlatformVerdict, evaluate_platform};
pub use model::{Check, CheckKind, CheckSet, FILE_NAMES, PlatformPolicy, Scope};
pub use parse::parse_platform_policy;
