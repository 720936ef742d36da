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
//! - [`signatures`]: the signatures an image's registry holds beside it
//!   (SPEC §11): cosign's `sha256-<hex>.sig` layers and sigstore bundle
//!   v0.3 referrers (the referrers API, or the fallback tag `sha256-<hex>`
//!   on registries without it, such as distribution 2.8), every blob
//!   digest-checked and bounded, malformed items skipped as problems while
//!   an unreachable registry fails the lookup; and the writing side of
//!   `attestgate sign --cosign`. It speaks through the same session as
//!   [`oci`] (credentials on the first request, Bearer tokens cached,
//!   plain-HTTP hosts, extra CAs, timeouts) and reads CRI PullImage
//!   credentials as containerd does.

pub mod access;
pub mod https;
pub mod oci;
pub mod signatures;
pub mod source;
pub mod tuf;
