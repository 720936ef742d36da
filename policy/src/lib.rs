//! attestgate-policy: Google Cloud Binary Authorization's policy language,
//! attestation verification and evaluation, for deciding on the node.
//!
//! The crate is synchronous and knows no sockets: it reads bundle files and
//! nothing more. The CRI proxy, the containerd shim and the CLI all decide
//! through it:
//!
//! 1. [`Bundle::load`] reads a bundle directory (policy, attestors,
//!    attestation occurrences) into an immutable value, indexing attestations
//!    by digest.
//! 2. [`evaluate`] applies SPEC §3 to one image and pod and returns a
//!    [`Decision`]: data, not a boolean.
//! 3. [`Decision::explanation`] and [`Decision::record_json`] render that one
//!    value for people and for the audit log.

pub mod bundle;
mod context;
pub mod decision;
pub mod error;
pub mod evaluate;
pub mod glob;
pub mod index;
pub mod model;
mod names;
mod node;
pub mod parse;
pub mod payload;
pub mod platform;
mod platform_verdict;
pub mod reference;
pub mod registry;
pub mod verify;

pub use bundle::Bundle;
pub use decision::{
    AttestorVerdict, Decision, ImageSubject, Operation, Outcome, PodRef, Reason, RecordContext,
    RuleRef,
};
pub use error::{BundleError, FieldError, Location};
pub use evaluate::{PodContext, Settings, evaluate, evaluate_with};
pub use glob::NamePattern;
pub use platform::{CheckResult, PlatformPolicy, PlatformVerdict, evaluate_platform};
pub use reference::{Digest, ImageRef};
pub use registry::{RegistryAttestation, RegistryAttestors, RegistrySignature};
