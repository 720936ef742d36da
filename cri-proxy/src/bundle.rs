//! The bundle in force: loaded at start, reloaded when the directory
//! changes or on SIGHUP, swapped atomically. A bundle that fails to load
//! never replaces a good one; the reasons are logged and counted.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use attestgate_policy::Bundle;
use attestgate_policy::decision::{BundleRef, format_time};

use crate::metrics::Metrics;

pub struct LoadedBundle {
    pub bundle: Bundle,
    pub reference: BundleRef,
}

pub struct BundleStore {
    dir: PathBuf,
    current: ArcSwapOption<LoadedBundle>,
    /// Stat fingerprint of the files the bundle in force was read from.
    seen: std::sync::Mutex<Option<u64>>,
    metrics: Arc<Metrics>,
}

impl BundleStore {
    pub fn new(dir: PathBuf, metrics: Arc<Metrics>) -> BundleStore {
        BundleStore {
            dir,
            current: ArcSwapOption::empty(),
            seen: std::sync::Mutex::new(None),
            metrics,
        }
    }

    pub fn current(&self) -> Option<Arc<LoadedBundle>> {
        self.current.load_full()
    }

    /// Loads the directory if its files changed since the last attempt (or
    /// always, when `force`). Blocking: call from a blocking thread.
    pub fn reload(&self, force: bool) -> ReloadOutcome {
        let fingerprint = fingerprint(&self.dir);
        {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !force && *seen == Some(fingerprint) {
                return ReloadOutcome::Unchanged;
            }
        }
        let started = std::time::Instant::now();
        let outcome = match Bundle::load(&self.dir) {
            Ok(bundle) => {
                for warning in bundle.warnings() {
                    tracing::warn!(%warning, "attestation skipped");
                }
                let unchanged = self
                    .current()
                    .is_some_and(|c| c.bundle.digest() == bundle.digest());
                if unchanged {
                    ReloadOutcome::Unchanged
                } else {
                    let now = time::OffsetDateTime::now_utc();
                    let reference = BundleRef {
                        digest: bundle.digest().to_string(),
                        loaded_at: format_time(now),
                    };
                    tracing::info!(
                        dir = %self.dir.display(),
                        digest = %reference.digest,
                        attestors = bundle.attestors().count(),
                        attestations = bundle.occurrence_count(),
                        skipped = bundle.warnings().len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "bundle loaded"
                    );
                    self.current
                        .store(Some(Arc::new(LoadedBundle { bundle, reference })));
                    self.metrics.bundle_loads.inc();
                    self.metrics.bundle_loaded_at.set(now.unix_timestamp());
                    ReloadOutcome::Loaded
                }
            }
            Err(e) => {
                for error in &e.errors {
                    tracing::error!(%error, "invalid bundle");
                }
                if self.current().is_some() {
                    tracing::error!(dir = %self.dir.display(), "new bundle rejected; the previous bundle stays in force");
                } else {
                    tracing::error!(dir = %self.dir.display(), "no valid bundle: the fail mode applies");
                }
                self.metrics.bundle_load_errors.inc();
                ReloadOutcome::Invalid(e.errors.len())
            }
        };
        self.metrics
            .bundle_valid
            .set(i64::from(self.current().is_some()));
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint);
        outcome
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    Unchanged,
    Loaded,
    Invalid(usize),
}

/// Names, sizes, modification times and inodes of everything in the bundle:
/// cheap to compute, and it changes whenever a file is written or an
/// atomic symlink swap (Kubernetes ConfigMaps) replaces the content.
fn fingerprint(dir: &Path) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    fn visit(path: &Path, depth: usize, hasher: &mut std::collections::hash_map::DefaultHasher) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        use std::os::unix::fs::MetadataExt as _;
        path.hash(hasher);
        (
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino(),
            meta.is_dir(),
        )
            .hash(hasher);
        if meta.is_dir()
            && depth < 2
            && let Ok(entries) = std::fs::read_dir(path)
        {
            let mut names: Vec<PathBuf> =
                entries.filter_map(Result::ok).map(|e| e.path()).collect();
            names.sort();
            for name in names {
                visit(&name, depth + 1, hasher);
            }
        }
    }
    visit(dir, 0, &mut hasher);
    hasher.finish()
}

/// Reloads on SIGHUP (forced), on file-system events under the directory
/// (debounced), and every few seconds as a backstop for events inotify
/// cannot see (the directory itself replaced, network file systems).
pub fn spawn_watcher(
    store: Arc<BundleStore>,
    dir: PathBuf,
    on_hup: impl Fn() + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bool>(16);
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = events.try_send(false);
        }
    })?;
    use notify::Watcher as _;
    // The directory may not exist yet; the periodic check covers that case.
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::Recursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the bundle directory; polling only");
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let hup_tx = tx.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            on_hup();
            let _ = hup_tx.send(true).await;
        }
    });
    let tick_tx = tx;
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(5));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if tick_tx.send(false).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        // Keep the watcher alive as long as this task runs.
        let _watcher = watcher;
        while let Some(mut force) = rx.recv().await {
            // Let a burst of events (a whole bundle being copied in) settle.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while let Ok(more) = rx.try_recv() {
                force |= more;
            }
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || store.reload(force)).await;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_policy(dir: &Path, mode: &str) {
        let enforcement = if mode == "ALWAYS_ALLOW" {
            ""
        } else {
            "  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n"
        };
        std::fs::write(
            dir.join("policy.yaml"),
            format!("defaultAdmissionRule:\n  evaluationMode: {mode}\n{enforcement}"),
        )
        .unwrap();
    }

    #[test]
    fn a_bad_bundle_never_replaces_a_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::new(dir.path().to_path_buf(), Arc::new(Metrics::new()));
        assert_eq!(store.reload(false), ReloadOutcome::Invalid(1));
        assert!(store.current().is_none());
        write_policy(dir.path(), "ALWAYS_DENY");
        assert_eq!(store.reload(false), ReloadOutcome::Loaded);
        let good = store.current().unwrap().reference.digest.clone();
        std::fs::write(
            dir.path().join("policy.yaml"),
            "defaultAdmissionRule: {evaluationMode: SOMETIMES}\n",
        )
        .unwrap();
        assert_eq!(store.reload(false), ReloadOutcome::Invalid(1));
        assert_eq!(store.current().unwrap().reference.digest, good);
        assert_eq!(store.metrics.bundle_load_errors.get(), 2);
        write_policy(dir.path(), "ALWAYS_ALLOW");
        assert_eq!(store.reload(false), ReloadOutcome::Loaded);
        assert_ne!(store.current().unwrap().reference.digest, good);
        assert_eq!(store.reload(false), ReloadOutcome::Unchanged);
        assert_eq!(
            store.reload(true),
            ReloadOutcome::Unchanged,
            "same content, same bundle"
        );
    }
}
