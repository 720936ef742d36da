//! attestgate's network side. Only this crate and the binaries talk to a
//! network; no decision waits on it: what it brings is verified and written
//! to local disk, and the node decides from there.
//!
//! - [`tuf`]: bundle repositories (SPEC §10): publishing (`attestgate repo`)
//!   and verifying a repository as a node would, with trust that survives
//!   restarts.
//! - [`oci`]: a repository carried as one OCI artifact, pushed and pulled
//!   with conditional requests and size limits.
//! - [`access`]: how a node program reaches any registry: plain HTTP,
//!   CA files and credentials, each for its own host only.
//! - [`https`]: a repository on a web server, as a TUF transport.
//! - [`source`]: a `bundle_source` polled and verified as a node does it.

pub mod access;
pub mod https;
pub mod oci;
pub mod source;
pub mod tuf;
