//! The bundle in force: loaded at start, reloaded when the directory
//! changes or on SIGHUP (with the `watch` feature), swapped atomically. A
//! bundle that fails to load never replaces a good one; the reasons are
//! logged, counted and kept for whoever must explain a `NO_POLICY`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use attestgate_policy::decision::{BundleRef, format_time};
use attestgate_policy::{Bundle, BundleError};

use attestgate_policy::Digest;
use attestgate_policy::index::IndexError;
use sha2::{Digest as _, Sha256};

use crate::freshness::Freshness;
use crate::hooks::Hooks;

pub struct LoadedBundle {
    pub bundle: Bundle,
    pub reference: BundleRef,
    /// Until when a synced bundle may decide; none for one that was not
    /// synced.
    pub freshness: Option<Freshness>,
}

impl LoadedBundle {
    fn new(
        bundle: Bundle,
        freshness: Option<Freshness>,
        now: time::OffsetDateTime,
    ) -> LoadedBundle {
        let reference = BundleRef {
            digest: bundle.digest().to_string(),
            loaded_at: format_time(now),
            version: freshness.map(|f| f.version),
            expires: freshness.map(|f| format_time(f.expires)),
        };
        LoadedBundle {
            bundle,
            reference,
            freshness,
        }
    }

    /// Why the bundle may not decide at `now`: a synced one past its
    /// expiry.
    pub fn lapsed(&self, now: time::OffsetDateTime) -> Option<String> {
        self.freshness?.lapsed(now)
    }
}

pub struct BundleStore {
    dir: PathBuf,
    current: ArcSwapOption<LoadedBundle>,
    /// Stat fingerprint of the files the bundle in force was read from.
    seen: Mutex<Option<String>>,
    /// Why the last attempt failed, while no valid bundle is in force.
    last_error: Mutex<Option<String>>,
    hooks: Arc<dyn Hooks>,
}

impl BundleStore {
    pub fn new(dir: PathBuf, hooks: Arc<dyn Hooks>) -> BundleStore {
        BundleStore {
            dir,
            current: ArcSwapOption::empty(),
            seen: Mutex::new(None),
            last_error: Mutex::new(None),
            hooks,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn current(&self) -> Option<Arc<LoadedBundle>> {
        self.current.load_full()
    }

    /// Why the last load failed, when it did and no bundle is in force.
    pub fn error(&self) -> Option<String> {
        if self.current().is_some() {
            return None;
        }
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads the directory if its files changed since the last attempt (or
    /// always, when `force`). Blocking: call from a blocking thread.
    pub fn reload(&self, force: bool) -> ReloadOutcome {
        let fingerprint = fingerprint(&self.dir);
        {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !force && seen.as_deref() == Some(fingerprint.as_str()) {
                return ReloadOutcome::Unchanged;
            }
        }
        let started = std::time::Instant::now();
        // A synced bundle is a symlink the syncer renames to switch
        // versions: every file is read through the directory it named when
        // the load began, or a switch halfway would join one version's
        // policy to the other's attestors or `sync.json`.
        let resolved = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        let loaded = Bundle::load(&resolved).and_then(|bundle| {
            Freshness::of(&resolved)
                .map(|freshness| (bundle, freshness))
                .map_err(|e| BundleError { errors: vec![e] })
        });
        let outcome = match loaded {
            Ok((bundle, freshness)) => {
                for warning in bundle.warnings() {
                    tracing::warn!(%warning, "attestation skipped");
                }
                let unchanged = self.current().is_some_and(|c| {
                    c.bundle.digest() == bundle.digest() && c.freshness == freshness
                });
                if unchanged {
                    ReloadOutcome::Unchanged
                } else {
                    let now = time::OffsetDateTime::now_utc();
                    let loaded = LoadedBundle::new(bundle, freshness, now);
                    tracing::info!(
                        dir = %self.dir.display(),
                        digest = %loaded.reference.digest,
                        version = ?loaded.reference.version,
                        expires = ?loaded.reference.expires,
                        attestors = loaded.bundle.attestors().count(),
                        attestations = loaded.bundle.occurrence_count(),
                        skipped = loaded.bundle.warnings().len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "bundle loaded"
                    );
                    self.keep_index(&resolved, &loaded.bundle, &fingerprint);
                    self.hooks
                        .bundle_expires(freshness.map(|f| f.expires.unix_timestamp()));
                    self.current.store(Some(Arc::new(loaded)));
                    self.hooks.bundle_loaded(now.unix_timestamp());
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
                self.hooks.bundle_rejected();
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("bundle {}: {e}", self.dir.display()));
                ReloadOutcome::Invalid(e.errors.len())
            }
        };
        self.hooks.bundle_valid(self.current().is_some());
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint);
        outcome
    }
}

impl BundleStore {
    /// For a program that decides once (the shim, the CLI): whether the
    /// bundle's index is there and made for the files as they are now;
    /// if not, the whole bundle is loaded. Blocking.
    pub fn prepare(&self) -> Prepared {
        // The version a synced bundle's symlink names now: the index and
        // every file are read from it, while the stamp, taken after, tells
        // whether the symlink still names it.
        let resolved = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        let stamp = fingerprint(&self.dir);
        if let Some(index) = index_path(&resolved)
            && std::fs::File::open(&index).is_ok()
        {
            return Prepared::Indexed(Indexed {
                dir: resolved,
                index,
                stamp,
            });
        }
        Prepared::Loaded(self.reload(true))
    }

    /// Puts in force the bundle read for the images `digests` only, from
    /// the index [`BundleStore::prepare`] found; when the index turns out
    /// unusable (stale, damaged), the whole bundle instead.
    pub fn load_indexed(&self, prepared: &Indexed, digests: &[&Digest]) -> ReloadOutcome {
        let Indexed { dir, index, stamp } = prepared;
        let loaded = attestgate_policy::Bundle::load_indexed(dir, index, stamp, digests).and_then(
            |bundle| {
                Freshness::of(dir)
                    .map(|freshness| (bundle, freshness))
                    .map_err(|_| IndexError::Io(std::io::ErrorKind::InvalidData.into()))
            },
        );
        match loaded {
            Ok((bundle, freshness)) => {
                let now = time::OffsetDateTime::now_utc();
                self.hooks
                    .bundle_expires(freshness.map(|f| f.expires.unix_timestamp()));
                self.current
                    .store(Some(Arc::new(LoadedBundle::new(bundle, freshness, now))));
                self.hooks.bundle_loaded(now.unix_timestamp());
                self.hooks.bundle_valid(true);
                ReloadOutcome::Loaded
            }
            Err(e) => {
                tracing::debug!(index = %index.display(), error = %e, "index not used; loading the whole bundle");
                self.reload(true)
            }
        }
    }

    /// Writes the index of `bundle`, read from files whose stat
    /// fingerprint was `stamp`, unless one for them is there already.
    /// Best effort: a bundle beside which nothing can be written (a
    /// read-only mount) is just read whole by each process.
    fn keep_index(&self, resolved: &Path, bundle: &attestgate_policy::Bundle, stamp: &str) {
        // Beside the version the bundle was read from, which the symlink
        // may no longer name.
        let Some(path) = index_path(resolved) else {
            return;
        };
        if attestgate_policy::Bundle::load_indexed(resolved, &path, stamp, &[]).is_ok() {
            return;
        }
        if let Err(e) = write_atomically(&path, &bundle.index(stamp)) {
            tracing::debug!(path = %path.display(), error = %e, "cannot write the bundle index");
        }
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
fn fingerprint(dir: &Path) -> String {
    fn visit(path: &Path, depth: usize, hasher: &mut Sha256) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        use std::os::unix::fs::MetadataExt as _;
        let name = path.as_os_str().as_encoded_bytes();
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name);
        // The change time too: unlike the modification time, no one can
        // set it back after writing.
        for n in [
            meta.len(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
            meta.ino(),
            meta.dev(),
            u64::from(meta.is_dir()),
        ] {
            hasher.update(n.to_be_bytes());
        }
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
    let mut hasher = Sha256::new();
    visit(dir, 0, &mut hasher);
    hex::encode(hasher.finalize())
}

/// For a program that must change nothing on the node (the CLI, which may
/// run as a user who cannot write beside the bundle): the bundle at `dir`
/// for the images `digests` only, read through its index when one is there
/// and made for the files as they are now. Only reads: on an error (no
/// index, a stale or damaged one, an invalid bundle) the caller loads the
/// whole bundle itself, and no index is written for next time.
pub fn read_indexed(dir: &Path, digests: &[&Digest]) -> Result<Bundle, IndexError> {
    // Read through the version a synced bundle's symlink names now; a
    // switch after this changes the stamp, and the index no longer fits.
    let resolved = dir.canonicalize().map_err(IndexError::Io)?;
    let index = index_path(&resolved).ok_or(IndexError::Io(std::io::ErrorKind::NotFound.into()))?;
    Bundle::load_indexed(&resolved, &index, &fingerprint(dir), digests)
}

/// Where the index of the bundle at `dir` is kept: beside the directory
/// it resolves to, so that each version of a synced bundle (`current` a
/// symlink to it) has its own, and a bundle's own files never change.
pub fn index_path(dir: &Path) -> Option<PathBuf> {
    let real = dir.canonicalize().ok()?;
    let name = real.file_name()?.to_string_lossy().into_owned();
    Some(real.parent()?.join(format!(".{name}.attestgate-index")))
}

/// Writes `bytes` to `path` whole or not at all: a reader sees the old
/// index or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let staged = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&staged)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&staged, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    result
}

/// A bundle version with an index, found by [`BundleStore::prepare`].
pub struct Indexed {
    /// The directory the bundle path named: a synced bundle's version.
    pub dir: PathBuf,
    pub index: PathBuf,
    /// The bundle's fingerprint when it was found.
    pub stamp: String,
}

/// What [`BundleStore::prepare`] found.
pub enum Prepared {
    /// A valid index: the bundle is to be read for the images at hand.
    Indexed(Indexed),
    /// No usable index: the whole bundle was loaded (and an index written
    /// for next time, where it could be).
    Loaded(ReloadOutcome),
}

/// Reloads on SIGHUP (forced), on file-system events under the directory
/// (debounced), and every few seconds as a backstop for events inotify
/// cannot see (the directory itself replaced, network file systems).
/// `on_hup` runs first on every SIGHUP (the audit log's reopen, say).
#[cfg(feature = "watch")]
pub fn spawn_watcher(
    store: Arc<BundleStore>,
    on_hup: impl Fn() + Send + Sync + 'static,
) -> notify::Result<()> {
    use std::time::Duration;
    let dir = store.dir().to_path_buf();
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
    // A synced bundle is a symlink renamed over: that shows in the
    // directory holding it, not in the version it named before.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = watcher.watch(parent, notify::RecursiveMode::NonRecursive);
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Default)]
    struct Counted {
        rejected: std::sync::atomic::AtomicU64,
    }

    impl Hooks for Counted {
        fn bundle_rejected(&self) {
            self.rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

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
        // The bundle in a directory of its own: its index goes beside it.
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("bundle");
        std::fs::create_dir(&dir).unwrap();
        let hooks = Arc::new(Counted::default());
        let store = BundleStore::new(dir.clone(), hooks.clone());
        assert_eq!(store.reload(false), ReloadOutcome::Invalid(1));
        assert!(store.current().is_none());
        assert!(
            store.error().unwrap().contains("policy"),
            "{:?}",
            store.error()
        );
        write_policy(&dir, "ALWAYS_DENY");
        assert_eq!(store.reload(false), ReloadOutcome::Loaded);
        let good = store.current().unwrap().reference.digest.clone();
        std::fs::write(
            dir.join("policy.yaml"),
            "defaultAdmissionRule: {evaluationMode: SOMETIMES}\n",
        )
        .unwrap();
        assert_eq!(store.reload(false), ReloadOutcome::Invalid(1));
        assert_eq!(store.current().unwrap().reference.digest, good);
        assert_eq!(hooks.rejected.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(store.error().is_none(), "a good bundle is in force");
        write_policy(&dir, "ALWAYS_ALLOW");
        assert_eq!(store.reload(false), ReloadOutcome::Loaded);
        assert_ne!(store.current().unwrap().reference.digest, good);
        assert_eq!(store.reload(false), ReloadOutcome::Unchanged);
        assert_eq!(
            store.reload(true),
            ReloadOutcome::Unchanged,
            "same content, same bundle"
        );
    }

    /// Two versions as attestgate-sync lays them out: directories with a
    /// `sync.json` each, the bundle a symlink to one of them.
    fn synced_version(parent: &Path, version: u64, mode: &str) -> PathBuf {
        let dir = parent.join(format!("v{version}"));
        std::fs::create_dir(&dir).unwrap();
        write_policy(&dir, mode);
        std::fs::write(
            dir.join(crate::freshness::FILE),
            format!("{{\"version\":{version},\"expires\":\"2999-01-01T00:00:00Z\"}}\n"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn an_index_found_before_a_switch_is_read_with_its_own_version_after_it() {
        let parent = tempfile::tempdir().unwrap();
        let v1 = synced_version(parent.path(), 1, "ALWAYS_ALLOW");
        let v2 = synced_version(parent.path(), 2, "ALWAYS_DENY");
        let bundle = parent.path().join("bundle");
        std::os::unix::fs::symlink(&v1, &bundle).unwrap();
        let store = BundleStore::new(bundle.clone(), Arc::new(crate::hooks::NoHooks));
        // A first load writes v1's index; the next program finds it.
        assert_eq!(store.reload(true), ReloadOutcome::Loaded);
        let Prepared::Indexed(found) = store.prepare() else {
            panic!("no index beside version 1");
        };
        let link = parent.path().join(".bundle.new");
        std::os::unix::fs::symlink(&v2, &link).unwrap();
        std::fs::rename(&link, &bundle).unwrap();
        // Decided by version 1 whole, as a decision begun just before the
        // switch is: its index, its policy, its sync.json — never one
        // version's files under the other's name.
        assert_eq!(store.load_indexed(&found, &[]), ReloadOutcome::Loaded);
        let loaded = store.current().unwrap();
        assert_eq!(loaded.reference.version, Some(1));
        assert_eq!(
            loaded
                .bundle
                .policy()
                .default_admission_rule
                .evaluation_mode,
            attestgate_policy::model::EvaluationMode::AlwaysAllow,
        );
        assert_eq!(loaded.reference.digest, Bundle::load(&v1).unwrap().digest());
        // The next one-shot program finds version 2.
        let Prepared::Indexed(found) = store.prepare() else {
            assert_eq!(store.current().unwrap().reference.version, Some(2));
            return;
        };
        assert_eq!(store.load_indexed(&found, &[]), ReloadOutcome::Loaded);
        assert_eq!(store.current().unwrap().reference.version, Some(2));
    }

    fn occurrence(digest: &str) -> String {
        format!(
            r#"{{"name":"o-{digest}","noteName":"projects/p/notes/n","kind":"ATTESTATION",
            "resourceUri":"https://registry.test/app@{digest}",
            "attestation":{{"serializedPayload":"e30=","signatures":[{{"publicKeyId":"k","signature":"AAAA"}}]}}}}"#
        )
    }

    /// A bundle (in a directory of its own, for the index beside it) with
    /// one attestation for each of `n` digests.
    fn attested_bundle(n: usize) -> (tempfile::TempDir, PathBuf, Vec<String>) {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("bundle");
        std::fs::create_dir_all(dir.join("attestations")).unwrap();
        write_policy(&dir, "ALWAYS_DENY");
        let digests: Vec<String> = (0..n)
            .map(|i| format!("sha256:{}", format!("{i:02}").repeat(32)))
            .collect();
        let all: Vec<String> = digests.iter().map(|d| occurrence(d)).collect();
        std::fs::write(
            dir.join("attestations/all.json"),
            format!("[{}]", all.join(",")),
        )
        .unwrap();
        (parent, dir, digests)
    }

    #[test]
    fn a_new_sync_of_the_same_files_is_a_new_version_and_a_bad_one_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("bundle");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("policy.yaml"),
            "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n",
        )
        .unwrap();
        let sync = |text: &str| std::fs::write(dir.join(crate::freshness::FILE), text).unwrap();
        sync(r#"{"version": 1, "expires": "2999-01-01T00:00:00Z"}"#);
        let store = BundleStore::new(dir.clone(), Arc::new(crate::hooks::NoHooks));
        assert_eq!(store.reload(false), ReloadOutcome::Loaded);
        assert_eq!(store.current().unwrap().reference.version, Some(1));
        // Only the metadata was renewed: the same files, a new version.
        sync(r#"{"version": 2, "expires": "2999-02-01T00:00:00Z"}"#);
        assert_eq!(store.reload(true), ReloadOutcome::Loaded);
        let current = store.current().unwrap();
        assert_eq!(current.reference.version, Some(2));
        assert_eq!(
            current.reference.expires.as_deref(),
            Some("2999-02-01T00:00:00.000000Z")
        );
        // One that cannot say until when is refused; version 2 stays.
        sync(r#"{"version": 3}"#);
        assert_eq!(store.reload(true), ReloadOutcome::Invalid(1));
        assert_eq!(store.current().unwrap().reference.version, Some(2));
        // The one-shot path (the shim's) reads it too.
        sync(r#"{"version": 3, "expires": "2999-03-01T00:00:00Z"}"#);
        let one_shot = BundleStore::new(dir.clone(), Arc::new(crate::hooks::NoHooks));
        let outcome = match one_shot.prepare() {
            Prepared::Indexed(found) => one_shot.load_indexed(&found, &[]),
            Prepared::Loaded(outcome) => outcome,
        };
        assert_eq!(outcome, ReloadOutcome::Loaded);
        assert_eq!(one_shot.current().unwrap().reference.version, Some(3));
    }

    #[test]
    fn one_shot_loads_read_only_the_image_s_attestations_through_the_index() {
        let (_parent, dir, digests) = attested_bundle(20);
        let full = BundleStore::new(dir.clone(), Arc::new(crate::hooks::NoHooks));
        assert_eq!(full.reload(true), ReloadOutcome::Loaded);
        let whole = full.current().unwrap();
        assert_eq!(whole.bundle.occurrence_count(), 20);
        let index = index_path(&dir).unwrap();
        assert!(index.exists(), "written beside the bundle");

        let wanted = Digest::parse(&digests[3]).unwrap();
        let one_shot = BundleStore::new(dir.clone(), Arc::new(crate::hooks::NoHooks));
        let Prepared::Indexed(found) = one_shot.prepare() else {
            panic!("the index is there and current");
        };
        assert_eq!(
            one_shot.load_indexed(&found, &[&wanted]),
            ReloadOutcome::Loaded
        );
        let indexed = one_shot.current().unwrap();
        assert_eq!(indexed.bundle.occurrence_count(), 1);
        assert_eq!(indexed.reference.digest, whole.reference.digest);

        // The files change: the index no longer applies and is not used.
        std::fs::write(
            dir.join("attestations/all.json"),
            format!(
                "[{}]",
                digests[..5]
                    .iter()
                    .map(|d| occurrence(d))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )
        .unwrap();
        let after = BundleStore::new(dir.clone(), Arc::new(crate::hooks::NoHooks));
        let Prepared::Indexed(found) = after.prepare() else {
            panic!("an index file is there");
        };
        assert_eq!(
            after.load_indexed(&found, &[&wanted]),
            ReloadOutcome::Loaded
        );
        let reloaded = after.current().unwrap();
        assert_eq!(
            reloaded.bundle.occurrence_count(),
            5,
            "the whole new bundle"
        );
        assert_ne!(reloaded.reference.digest, whole.reference.digest);
        // ... and the index was made anew for the files as they are.
        let again = BundleStore::new(dir, Arc::new(crate::hooks::NoHooks));
        let Prepared::Indexed(found) = again.prepare() else {
            panic!("index rewritten");
        };
        assert_eq!(
            again.load_indexed(&found, &[&wanted]),
            ReloadOutcome::Loaded
        );
        assert_eq!(
            again.current().unwrap().reference.digest,
            reloaded.reference.digest
        );
        assert_eq!(again.current().unwrap().bundle.occurrence_count(), 1);
    }

    #[test]
    fn without_an_index_a_one_shot_load_reads_the_whole_bundle() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("bundle");
        std::fs::create_dir_all(&dir).unwrap();
        write_policy(&dir, "ALWAYS_DENY");
        let store = BundleStore::new(dir.clone(), Arc::new(crate::hooks::NoHooks));
        assert!(matches!(
            store.prepare(),
            Prepared::Loaded(ReloadOutcome::Loaded)
        ));
        assert!(store.current().is_some());
        // A garbage index is not trusted: the whole bundle is read instead.
        std::fs::write(index_path(&dir).unwrap(), b"garbage").unwrap();
        let store = BundleStore::new(dir, Arc::new(crate::hooks::NoHooks));
        let Prepared::Indexed(found) = store.prepare() else {
            panic!("a file is there");
        };
        assert_eq!(store.load_indexed(&found, &[]), ReloadOutcome::Loaded);
        assert!(store.current().is_some());
    }

    #[test]
    fn a_read_only_load_uses_a_current_index_and_never_writes_one() {
        let (_parent, dir, digests) = attested_bundle(3);
        let wanted = Digest::parse(&digests[1]).unwrap();
        let index = index_path(&dir).unwrap();
        assert!(read_indexed(&dir, &[&wanted]).is_err(), "no index yet");
        assert!(!index.exists(), "and none written");

        let store = BundleStore::new(dir.clone(), Arc::new(crate::hooks::NoHooks));
        assert_eq!(store.reload(true), ReloadOutcome::Loaded);
        let bundle = read_indexed(&dir, &[&wanted]).unwrap();
        assert_eq!(bundle.occurrence_count(), 1);
        assert_eq!(
            bundle.digest(),
            store.current().unwrap().bundle.digest(),
            "the digest of the whole bundle"
        );

        std::fs::write(
            dir.join("attestations/all.json"),
            format!(
                "[{}]",
                digests[..2]
                    .iter()
                    .map(|d| occurrence(d))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )
        .unwrap();
        let written = std::fs::read(&index).unwrap();
        assert!(
            matches!(
                read_indexed(&dir, &[&wanted]),
                Err(IndexError::Stale { .. })
            ),
            "the files changed"
        );
        assert_eq!(std::fs::read(&index).unwrap(), written, "left as it was");
    }
}
