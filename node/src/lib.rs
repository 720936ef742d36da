//! attestgate-node: what every attestgate program on the node shares, so
//! that a container decided at CreateContainer by the proxy and again at
//! Task.Create by the shim is decided by the same rules.
//!
//! - [`config`]: `/etc/attestgate/config.toml`, the keys every program
//!   reads, typed; each program parses its own keys itself.
//! - [`store`]: the bundle in force (load, atomic swap, last good kept,
//!   and with the `watch` feature, reload on change and on SIGHUP).
//! - [`audit`]: the one audit log writer.
//! - [`attestations`]: the attestation cache, registry signatures that
//!   verified at the pull, for decisions made with no network.
//! - [`decide`]: the one decider: `attestgate_policy::evaluate` plus the
//!   node's rules around it (the fail mode applies to the node's own
//!   failures only, break-glass wins over errors, a record that cannot be
//!   written closes).
//! - [`freshness`]: until when a synced bundle may decide.
//! - [`hooks`]: what a program may count (metrics) as the others work.
//! - `manual` (feature `manual`): man pages and shell completions from a
//!   program's clap definitions, for the package.
//! - `metrics_http` (feature `metrics`): the Prometheus endpoint the
//!   daemons serve.

#![forbid(unsafe_code)]

pub mod attestations;
pub mod audit;
pub mod config;
#[cfg(feature = "containerd")]
pub mod content;
pub mod decide;
pub mod freshness;
pub mod hooks;
#[cfg(feature = "manual")]
pub mod manual;
#[cfg(feature = "metrics")]
pub mod metrics_http;
pub mod store;

pub use attestations::AttestationCache;
pub use audit::AuditLog;
pub use config::{ConfigError, ConfigFile, FailMode, NodeSettings};
pub use decide::{Decider, Request, Revalidated, Undecidable, WouldDecide};
pub use hooks::Hooks;
pub use store::{BundleStore, LoadedBundle, ReloadOutcome};
