//! A bundle repository carried as one OCI artifact (SPEC §10): an image
//! manifest with `artifactType: application/vnd.attestgate.bundle.v1`, the
//! empty config, one layer per file titled with its path in the repository,
//! so `oras pull` unpacks it into the same tree.
//!
//! Nothing here is trusted for what a bundle says — TUF verifies the tree
//! afterwards — but everything is bounded: sizes are checked against
//! limits before and while bytes arrive, every blob against its digest, and
//! titles may only name files under `metadata/` and `targets/`.
//!
//! The distribution API is spoken over reqwest directly rather than through
//! oci-client: a poll must cost exactly one conditional request
//! (`If-None-Match` with the last manifest digest, which distribution
//! answers with 304), and oci-client has neither conditional requests nor
//! size limits.

mod cache;
pub(crate) mod error;
mod fetch;
pub(crate) mod manifest;
pub(crate) mod options;
pub(crate) mod push;
pub(crate) mod reference;
pub(crate) mod wire;

pub use cache::prune;
pub use error::OciError;
pub use fetch::{Fetched, Pulled, Traffic, fetch, pull_dir};
pub use manifest::{
    ARTIFACT_TYPE, EMPTY_CONFIG_MEDIA_TYPE, FILE_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, TITLE,
    check_title,
};
pub use options::{Credentials, Limits, RegistryOptions};
pub use push::{Pushed, push_dir, push_raw};
pub use reference::OciRef;
