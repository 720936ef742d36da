//! What the node core tells the program it runs in, for its metrics. Every
//! method does nothing unless a program says otherwise: the shim counts
//! nothing, the proxy exports all of it.

use std::time::Duration;

use attestgate_policy::{Decision, Operation};

pub trait Hooks: Send + Sync {
    /// A decision was made and recorded (or failed to be).
    fn decided(&self, _operation: Operation, _decision: &Decision, _elapsed: Duration) {}
    /// A record could not be written to the audit log.
    fn audit_failed(&self) {}
    /// A new bundle came into force at this Unix time.
    fn bundle_loaded(&self, _unix_time: i64) {}
    /// A bundle was refused (the previous one, if any, stays).
    fn bundle_rejected(&self) {}
    /// Whether a valid bundle is in force, after every load attempt.
    fn bundle_valid(&self, _valid: bool) {}
    /// Until when (Unix time) the bundle coming into force may decide:
    /// a synced bundle's expiry; none for one that was not synced.
    fn bundle_expires(&self, _unix_time: Option<i64>) {}
    /// An attestation cache entry could not be read and was left out.
    fn attestation_cache_unreadable(&self) {}
}

/// Counts nothing.
pub struct NoHooks;

impl Hooks for NoHooks {}
