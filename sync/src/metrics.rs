//! attestgate-sync's metrics (SPEC §10), on an address of its own: when
//! the last sync succeeded, when and why one last failed, the version in
//! force and the time it has left.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub polls: Family<ResultLabels, Counter>,
    pub failures: Family<ReasonLabels, Counter>,
    pub last_failure: Family<ReasonLabels, Gauge<i64, AtomicI64>>,
    pub last_success: Gauge<i64, AtomicI64>,
    pub updates: Counter,
    pub version: Gauge<i64, AtomicI64>,
    pub expires_at: Gauge<i64, AtomicI64>,
    expires_in: Gauge<f64, AtomicU64>,
    pub requests: Counter,
    pub bytes: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("attestgate_sync");
        let polls = Family::<ResultLabels, Counter>::default();
        registry.register(
            "polls",
            "Polls of the bundle source, by result: updated, current, refused, unreachable",
            polls.clone(),
        );
        let failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "failures",
            "Syncs that did not bring a bundle, by reason (rollback, expired, signature, ...)",
            failures.clone(),
        );
        let last_failure = Family::<ReasonLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "last_failure_timestamp_seconds",
            "Unix time of the last failed sync, by reason",
            last_failure.clone(),
        );
        let last_success = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last sync that ended with a verified bundle in force",
            last_success.clone(),
        );
        let updates = Counter::default();
        registry.register(
            "updates",
            "New bundle versions made current",
            updates.clone(),
        );
        let version = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "bundle_version",
            "TUF targets version of the bundle in force (0 before the first sync)",
            version.clone(),
        );
        let expires_at = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "bundle_expiry_timestamp_seconds",
            "Unix time the bundle in force expires (the earliest expires of its metadata)",
            expires_at.clone(),
        );
        let expires_in = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "bundle_expires_in_seconds",
            "Seconds until the bundle in force expires; negative once it has",
            expires_in.clone(),
        );
        let requests = Counter::default();
        registry.register(
            "registry_requests",
            "HTTP requests made to an OCI source",
            requests.clone(),
        );
        let bytes = Counter::default();
        registry.register(
            "registry_received_bytes",
            "Body bytes received from an OCI source",
            bytes.clone(),
        );
        Metrics {
            registry,
            polls,
            failures,
            last_failure,
            last_success,
            updates,
            version,
            expires_at,
            expires_in,
            requests,
            bytes,
        }
    }

    pub fn failed(&self, reason: &'static str, now: i64) {
        self.failures.get_or_create(&ReasonLabels { reason }).inc();
        self.last_failure
            .get_or_create(&ReasonLabels { reason })
            .set(now);
    }

    pub fn encode(&self) -> String {
        let at = self.expires_at.get();
        if at > 0 {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            self.expires_in.set((at - now) as f64);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
