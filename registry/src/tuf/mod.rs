//! Bundle repositories (SPEC §10): a TUF repository (specification 1.0)
//! whose targets are a bundle's files, named by their bundle paths.
//!
//! - `keys`: PEM private keys as openssl and `attestgate keygen` write them,
//!   as a tough key source.
//! - `publish`: `repo init`, `publish`, `timestamp`, `rotate-root`.
//! - `verify`: a source checked as a node checks it, against trust kept in
//!   a state directory (`Trust`), closing the gaps tough leaves (see
//!   docs/design/bundle-sync.md §3.3).
//!
//! Repositories are written with `consistent_snapshot: false` and `expires`
//! in whole seconds, so python-tuf and tough read the same file names and
//! python-tuf accepts the dates.

mod error;
mod fs;
mod keys;
mod paths;
mod publish;
mod verify;

#[cfg(test)]
mod tests;

pub use error::TufError;
pub use keys::PemKey;
pub use paths::check_bundle_path;
pub use publish::{
    InitOptions, PublishOptions, PublishReport, RotateOptions, init, publish, rotate_root,
    timestamp,
};
pub use verify::{Limits, Trust, Verified, verify, verify_dir};
