//! Prometheus metrics: decisions by reason, decision latency, forwarded
//! calls by method, bundle age and load errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::relay::Budget;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub operation: String,
    pub decision: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// The label for a call to `path`: `runtime.v1.RuntimeService/Version` for
/// a CRI method (the two CRI services, any method name of a letter and up to
/// 63 letters and digits, so methods added later get their own label),
/// `other` for anything else, so a client cannot grow the label set with
/// made-up services.
fn method_label(path: &str) -> String {
    let name = path.strip_prefix('/').unwrap_or(path);
    let cri = ["runtime.v1.", "runtime.v1alpha2."].iter().any(|version| {
        name.strip_prefix(version)
            .and_then(|rest| {
                rest.strip_prefix("RuntimeService/")
                    .or_else(|| rest.strip_prefix("ImageService/"))
            })
            .is_some_and(|method| {
                method.len() < 64
                    && method.starts_with(|c: char| c.is_ascii_uppercase())
                    && method.chars().all(|c| c.is_ascii_alphanumeric())
            })
    });
    if cri {
        name.to_string()
    } else {
        "other".to_string()
    }
}

pub struct Metrics {
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    pub decision_seconds: Family<OperationLabels, Histogram>,
    pub forwarded: Family<MethodLabels, Counter>,
    pub bundle_load_errors: Counter,
    pub bundle_loads: Counter,
    pub bundle_valid: Gauge,
    /// Unix time of the bundle in force; its age is computed at scrape time.
    pub bundle_loaded_at: Gauge<i64, AtomicI64>,
    bundle_age: Gauge<f64, AtomicU64>,
    /// Unix time a synced bundle in force expires; 0 for one not synced.
    bundle_expires_at: Gauge<i64, AtomicI64>,
    bundle_expires_in: Gauge<f64, AtomicU64>,
    pub audit_errors: Counter,
    /// Refused images or containers containerd would not remove.
    pub cleanup_errors: Counter,
    /// Pulls cancelled upstream because their client left first.
    pub pulls_cancelled: Counter,
    /// Pulls whose client left and whose outcome could not be decided
    /// within `intercept::pull::AFTER_THE_CLIENT_LEFT`.
    pub pulls_left_undecided: Counter,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    pub connections_closed: Family<ReasonLabels, Counter>,
    /// Intercepted calls refused for want of room in the memory budget.
    pub over_budget: Counter,
    /// Registry signature lookups (SPEC §11) by result: `found`, `none`,
    /// or the reason one failed.
    pub registry_lookups: Family<ReasonLabels, Counter>,
    /// Attestation cache entries that could not be read or written.
    pub attestation_cache_errors: Counter,
    memory_budget: Gauge,
    memory_held: Gauge,
    budget: std::sync::OnceLock<Arc<Budget>>,
    /// Running containers by the verdict of the last continuous-validation
    /// pass (SPEC §12): allow, deny, unknown.
    cv_containers: Family<VerdictLabels, Gauge>,
    cv_last_pass: Gauge<i64, AtomicI64>,
    cv_pass_seconds: Gauge<f64, AtomicU64>,
    pub cv_stopped: Counter,
    /// Lookups continuous validation could not make (a pass skipped, a
    /// container left undecided) and stops that failed.
    pub cv_errors: Counter,
    /// Platform policy checks the node cannot evaluate, as the last pass
    /// found them (GKE's configErrorEvent).
    pub cv_platform_config_errors: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub verdict: &'static str,
}

fn latency_histogram() -> Histogram {
    // 10 µs … ~20 s: a cached decision to a slow pull.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-5, 2.5, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("attestgate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        let decision_seconds = Family::<OperationLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let forwarded = Family::<MethodLabels, Counter>::default();
        let bundle_load_errors = Counter::default();
        let bundle_loads = Counter::default();
        let bundle_valid = Gauge::default();
        let bundle_loaded_at = Gauge::<i64, AtomicI64>::default();
        let bundle_age = Gauge::<f64, AtomicU64>::default();
        let bundle_expires_at = Gauge::<i64, AtomicI64>::default();
        let bundle_expires_in = Gauge::<f64, AtomicU64>::default();
        let audit_errors = Counter::default();
        let cleanup_errors = Counter::default();
        let pulls_cancelled = Counter::default();
        let pulls_left_undecided = Counter::default();
        let connections_open = Gauge::default();
        let connections_refused = Counter::default();
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        let over_budget = Counter::default();
        let registry_lookups = Family::<ReasonLabels, Counter>::default();
        let attestation_cache_errors = Counter::default();
        let memory_budget = Gauge::default();
        let memory_held = Gauge::default();
        registry.register(
            "calls_over_budget",
            "Intercepted calls refused with RESOURCE_EXHAUSTED because the memory budget was in use",
            over_budget.clone(),
        );
        registry.register(
            "memory_budget_bytes",
            "What intercepted calls may hold together (memory_budget)",
            memory_budget.clone(),
        );
        registry.register(
            "memory_held_bytes",
            "What intercepted calls hold now: request heads and bodies until answered, replies until read",
            memory_held.clone(),
        );
        registry.register(
            "connections_closed",
            "Client connections ended, by why: client_closed, runtime_closed, drained, handshake_timeout, evicted (to make room at max_connections), refused (no room), protocol_error, io_error, runtime_unreachable, setup_failed",
            connections_closed.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections being served",
            connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections closed on accept because max_connections were open",
            connections_refused.clone(),
        );
        registry.register(
            "cleanup_errors",
            "Refused images or containers the runtime could not remove",
            cleanup_errors.clone(),
        );
        registry.register(
            "pulls_cancelled",
            "Pulls cancelled at the runtime because their client left before the answer",
            pulls_cancelled.clone(),
        );
        registry.register(
            "registry_lookups",
            "Lookups of signatures beside an image in its registry, by result (found, none, or why one failed)",
            registry_lookups.clone(),
        );
        registry.register(
            "attestation_cache_errors",
            "Attestation cache entries that could not be read (and were left out) or written",
            attestation_cache_errors.clone(),
        );
        registry.register(
            "pulls_left_undecided",
            "Pulls whose client left and whose image could not be decided (and, if denied, removed) in time",
            pulls_left_undecided.clone(),
        );
        registry.register(
            "decisions",
            "Image decisions by operation, decision and reason",
            decisions.clone(),
        );
        registry.register(
            "decision_duration_seconds",
            "Time to decide, including runtime lookups",
            decision_seconds.clone(),
        );
        registry.register(
            "forwarded_calls",
            "CRI calls forwarded to the runtime, by method",
            forwarded.clone(),
        );
        registry.register(
            "bundle_load_errors",
            "Bundle loads rejected as invalid",
            bundle_load_errors.clone(),
        );
        registry.register(
            "bundle_loads",
            "Bundles loaded and put in force",
            bundle_loads.clone(),
        );
        registry.register(
            "bundle_valid",
            "1 when a valid bundle is in force",
            bundle_valid.clone(),
        );
        registry.register(
            "bundle_loaded_timestamp_seconds",
            "When the bundle in force was loaded",
            bundle_loaded_at.clone(),
        );
        registry.register(
            "bundle_age_seconds",
            "Age of the bundle in force",
            bundle_age.clone(),
        );
        registry.register(
            "bundle_expiry_timestamp_seconds",
            "When the synced bundle in force expires (its TUF metadata's earliest expiry); 0 for a bundle that was not synced",
            bundle_expires_at.clone(),
        );
        registry.register(
            "bundle_expires_in_seconds",
            "Time left until the synced bundle in force expires and NO_POLICY applies (negative once it has); 0 for a bundle that was not synced",
            bundle_expires_in.clone(),
        );
        registry.register(
            "audit_write_errors",
            "Audit records that could not be written",
            audit_errors.clone(),
        );
        let cv_containers = Family::<VerdictLabels, Gauge>::default();
        let cv_last_pass = Gauge::<i64, AtomicI64>::default();
        let cv_pass_seconds = Gauge::<f64, AtomicU64>::default();
        let cv_stopped = Counter::default();
        let cv_errors = Counter::default();
        registry.register(
            "cv_containers",
            "Running containers by the verdict of the last continuous-validation pass (allow, deny, unknown: not decided)",
            cv_containers.clone(),
        );
        registry.register(
            "cv_last_pass_timestamp_seconds",
            "When the last continuous-validation pass finished",
            cv_last_pass.clone(),
        );
        registry.register(
            "cv_pass_duration_seconds",
            "How long the last continuous-validation pass took",
            cv_pass_seconds.clone(),
        );
        registry.register(
            "cv_stopped",
            "Running containers continuous validation stopped (cv_action = stop)",
            cv_stopped.clone(),
        );
        registry.register(
            "cv_errors",
            "Continuous-validation lookups containerd did not answer, and stops that failed",
            cv_errors.clone(),
        );
        let cv_platform_config_errors = Gauge::default();
        registry.register(
            "cv_platform_config_errors",
            "Checks of the platform policy in force the node cannot evaluate (they never pass), as the last continuous-validation pass found them",
            cv_platform_config_errors.clone(),
        );
        Metrics {
            cv_platform_config_errors,
            cv_containers,
            cv_last_pass,
            cv_pass_seconds,
            cv_stopped,
            cv_errors,
            registry,
            decisions,
            decision_seconds,
            forwarded,
            bundle_load_errors,
            bundle_loads,
            bundle_valid,
            bundle_loaded_at,
            bundle_age,
            bundle_expires_at,
            bundle_expires_in,
            audit_errors,
            cleanup_errors,
            pulls_cancelled,
            pulls_left_undecided,
            connections_open,
            connections_refused,
            connections_closed,
            over_budget,
            registry_lookups,
            attestation_cache_errors,
            memory_budget,
            memory_held,
            budget: std::sync::OnceLock::new(),
        }
    }

    /// The budget whose use the metrics report.
    pub fn watch_budget(&self, budget: Arc<Budget>) {
        self.memory_budget
            .set(i64::try_from(budget.limit()).unwrap_or(i64::MAX));
        let _ = self.budget.set(budget);
    }

    pub fn observe_decision(
        &self,
        operation: &str,
        allowed: bool,
        reason: &str,
        elapsed: Duration,
    ) {
        self.decisions
            .get_or_create(&DecisionLabels {
                operation: operation.to_string(),
                decision: if allowed { "allow" } else { "deny" }.to_string(),
                reason: reason.to_string(),
            })
            .inc();
        self.decision_seconds
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a forwarded call. Method names come from the request path; only
    /// CRI service paths get their own label so a client cannot grow the
    /// label set without bound.
    /// The counter of calls to `path`, for a connection to keep: looking it
    /// up takes a hash and a lock, which is worth avoiding once per call.
    pub fn forwarded_counter(&self, path: &str) -> Counter {
        self.forwarded
            .get_or_create(&MethodLabels {
                method: method_label(path),
            })
            .clone()
    }

    /// What a continuous-validation pass found (containers by verdict),
    /// and when it finished.
    pub fn cv_pass(&self, by_verdict: [(&'static str, u64); 3], took: Duration) {
        for (verdict, count) in by_verdict {
            self.cv_containers
                .get_or_create(&VerdictLabels { verdict })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.cv_last_pass.set(now);
        self.cv_pass_seconds.set(took.as_secs_f64());
    }

    pub fn registry_lookup(&self, result: &'static str) {
        self.registry_lookups
            .get_or_create(&ReasonLabels { reason: result })
            .inc();
    }

    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn encode(&self) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let loaded_at = self.bundle_loaded_at.get();
        if loaded_at > 0 {
            self.bundle_age.set((now - loaded_at).max(0) as f64);
        }
        let expires_at = self.bundle_expires_at.get();
        if expires_at > 0 {
            self.bundle_expires_in.set((expires_at - now) as f64);
        }
        if let Some(budget) = self.budget.get() {
            self.memory_held
                .set(i64::try_from(budget.used()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` until the task is dropped.
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: std::sync::Arc<Metrics>,
) -> anyhow::Result<()> {
    attestgate_node::metrics_http::serve(addr, move || metrics.encode())
        .await
        .map_err(|e| anyhow::anyhow!("metrics_listen: {e}"))
}

/// What the node core reports, counted.
impl attestgate_node::Hooks for Metrics {
    fn decided(
        &self,
        operation: attestgate_policy::Operation,
        decision: &attestgate_policy::Decision,
        elapsed: Duration,
    ) {
        self.observe_decision(
            attestgate_node::decide::operation_name(operation),
            decision.allowed,
            decision.reason.as_str(),
            elapsed,
        );
    }

    fn audit_failed(&self) {
        self.audit_errors.inc();
    }

    fn bundle_loaded(&self, unix_time: i64) {
        self.bundle_loads.inc();
        self.bundle_loaded_at.set(unix_time);
    }

    fn bundle_rejected(&self) {
        self.bundle_load_errors.inc();
    }

    fn bundle_valid(&self, valid: bool) {
        self.bundle_valid.set(i64::from(valid));
    }

    fn bundle_expires(&self, unix_time: Option<i64>) {
        self.bundle_expires_at.set(unix_time.unwrap_or(0));
        if unix_time.is_none() {
            self.bundle_expires_in.set(0.0);
        }
    }

    fn attestation_cache_unreadable(&self) {
        self.attestation_cache_errors.inc();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_synced_bundle_s_time_left_is_exported() {
        use attestgate_node::Hooks as _;
        let metrics = super::Metrics::new();
        let at = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
        metrics.bundle_expires(Some(at));
        let text = metrics.encode();
        assert!(
            text.contains(&format!("attestgate_bundle_expiry_timestamp_seconds {at}")),
            "{text}"
        );
        let left: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("attestgate_bundle_expires_in_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((3590.0..=3600.0).contains(&left), "{left}");
        metrics.bundle_expires(None);
        assert!(
            metrics
                .encode()
                .contains("attestgate_bundle_expiry_timestamp_seconds 0")
        );
    }

    #[test]
    fn method_labels_are_bounded_to_cri_services() {
        use super::method_label;
        assert_eq!(
            method_label("/runtime.v1.RuntimeService/Version"),
            "runtime.v1.RuntimeService/Version"
        );
        assert_eq!(
            method_label("runtime.v1alpha2.ImageService/PullImage"),
            "runtime.v1alpha2.ImageService/PullImage"
        );
        assert_eq!(method_label("/runtime.v1.Made.Up/X"), "other");
        assert_eq!(method_label("/runtime.v1.RuntimeService/a-b"), "other");
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "other");
    }
}
