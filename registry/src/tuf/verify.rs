//! Verifying a repository as a node does, with tough, against trust held
//! in a state directory — and closing what tough leaves open
//! (docs/design/bundle-sync.md §3.3): tough never reads back the root it
//! stores, writes its datastore in place, ignores a corrupt stored file,
//! and does not look at files it was not asked for.
//!
//! State directory layout (one syncer per directory):
//! - `datastore` → a symlink to `ds-XXXX/`, the committed tough datastore
//!   (`root.json`, `timestamp.json`, `snapshot.json`, `targets.json`,
//!   `latest_known_time.json`); replaced by one rename on commit;
//! - `high-water.json`: the highest versions ever committed, checked on
//!   every load, so a lost or corrupt datastore does not reopen rollback;
//! - `.work-XXXX/`: the copy of the datastore one run works on; removed
//!   unless committed, and swept at `Trust::open` after a crash.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tough::schema::{Root, Signed};
use tough::{
    ExpirationEnforcement, FilesystemTransport, IntoVec as _, RepositoryLoader, TargetName,
    Transport, TransportError, TransportErrorKind, TransportStream,
};
use url::Url;

use super::error::TufError;
use super::error::{SizeCap, from_tough};
use super::fs::{read_optional, sync_dir, write_atomic};
use super::paths::check_bundle_path;

const DATASTORE: &str = "datastore";
const HIGH_WATER: &str = "high-water.json";
const WORK_PREFIX: &str = ".work-";

/// Size limits on what a source may make us download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_root: u64,
    pub max_timestamp: u64,
    pub max_snapshot: u64,
    pub max_targets: u64,
    /// One target file, by its signed length.
    pub max_file: u64,
    /// All target files together, by their signed lengths.
    pub max_total: u64,
    /// Root versions followed in one load.
    pub max_root_updates: u64,
}

impl Default for Limits {
    /// Close to python-tuf's client defaults, so a repository one client
    /// accepts the other does too.
    fn default() -> Self {
        Limits {
            max_root: 512 * 1024,
            max_timestamp: 16 * 1024,
            max_snapshot: 2 * 1024 * 1024,
            max_targets: 5 * 1024 * 1024,
            max_file: 16 * 1024 * 1024,
            max_total: 64 * 1024 * 1024,
            max_root_updates: 256,
        }
    }
}

/// The highest versions committed; nothing lower is ever accepted again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct HighWater {
    root: u64,
    timestamp: u64,
    snapshot: u64,
    targets: u64,
}

/// Trust held in a state directory: the trusted root, tough's datastore and
/// the high-water mark of versions.
#[derive(Debug)]
pub struct Trust {
    state: PathBuf,
    /// Holds the directory of an ephemeral trust until it is dropped.
    _ephemeral: Option<tempfile::TempDir>,
    trusted_root: Vec<u8>,
    root_version: u64,
    high_water: HighWater,
}

impl Trust {
    /// `state`: a directory only this syncer uses (created if missing);
    /// `initial_root`: the `trust_root` file's bytes. The root walk starts
    /// from the higher of `initial_root` and the root committed last.
    pub fn open(state: &Path, initial_root: &[u8]) -> Result<Trust, TufError> {
        std::fs::create_dir_all(state)
            .map_err(|e| TufError::io(format!("creating {}", state.display()), e))?;
        sweep_work_dirs(state);
        let initial_version = self_verified_root(initial_root).map_err(|why| {
            TufError::Invalid(format!("the trust root is not a usable root: {why}"))
        })?;
        let mut trusted_root = initial_root.to_vec();
        let mut root_version = initial_version;
        if let Some(stored) = read_optional(&state.join(DATASTORE).join("root.json"))? {
            match self_verified_root(&stored) {
                Ok(version) if version > root_version => {
                    trusted_root = stored;
                    root_version = version;
                }
                Ok(_) => {}
                // The high-water mark still holds the root version.
                Err(why) => tracing::warn!(%why, "ignoring the stored root"),
            }
        }
        let high_water = match read_optional(&state.join(HIGH_WATER))? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                TufError::Invalid(format!(
                    "{}: {e}; it is written atomically, so this is damage, not a crash: restore it or start from an empty state directory",
                    state.join(HIGH_WATER).display()
                ))
            })?,
            None => HighWater::default(),
        };
        Ok(Trust {
            state: state.to_owned(),
            _ephemeral: None,
            trusted_root,
            root_version,
            high_water,
        })
    }

    /// A throwaway trust (`repo verify`): nothing outlives it.
    pub fn ephemeral(initial_root: &[u8]) -> Result<Trust, TufError> {
        let dir = tempfile::Builder::new()
            .prefix("attestgate-trust-")
            .tempdir()
            .map_err(|e| TufError::io("creating a temporary trust directory", e))?;
        let mut trust = Trust::open(dir.path(), initial_root)?;
        trust._ephemeral = Some(dir);
        Ok(trust)
    }

    /// The version of the root the next load starts from.
    pub fn root_version(&self) -> u64 {
        self.root_version
    }
}

/// A repository verified whole: every role, every target read and hash-checked.
#[derive(Debug)]
pub struct Verified {
    pub root_version: u64,
    pub targets_version: u64,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
    /// The earliest `expires` of the four roles.
    pub expires: time::OffsetDateTime,
    /// Bundle path and content of each target, sorted by path.
    pub files: Vec<(String, Bytes)>,
    work: tempfile::TempDir,
    high_water: HighWater,
}

/// Verifies the repository whose metadata and targets are at these base
/// URLs against `trust`. `listing`: the files the source holds, relative to
/// the repository root (`metadata/1.root.json`, `targets/policy.yaml`),
/// when the source can list them; any file the verified metadata does not
/// account for is refused. Nothing in `trust` changes until
/// `Verified::commit`.
pub async fn verify(
    trust: &Trust,
    metadata: Url,
    targets: Url,
    transport: Box<dyn Transport>,
    listing: Option<&[String]>,
    limits: &Limits,
) -> Result<Verified, TufError> {
    let work = tempfile::Builder::new()
        .prefix(WORK_PREFIX)
        .tempdir_in(&trust.state)
        .map_err(|e| {
            TufError::io(
                format!("creating a work directory in {}", trust.state.display()),
                e,
            )
        })?;
    copy_datastore(&trust.state.join(DATASTORE), work.path())?;

    let capped = Capped {
        inner: transport,
        metadata_base: metadata.clone(),
        limits: *limits,
    };
    let repository = RepositoryLoader::new(&trust.trusted_root, metadata, targets)
        .transport(capped)
        .limits(tough::Limits {
            max_root_size: limits.max_root,
            max_targets_size: limits.max_targets,
            max_timestamp_size: limits.max_timestamp,
            max_snapshot_size: limits.max_snapshot,
            max_root_updates: limits.max_root_updates,
        })
        .datastore(work.path())
        .expiration_enforcement(ExpirationEnforcement::Safe)
        .load()
        .await
        .map_err(from_tough)?;

    let versions = HighWater {
        root: repository.root().signed.version.get(),
        timestamp: repository.timestamp().signed.version.get(),
        snapshot: repository.snapshot().signed.version.get(),
        targets: repository.targets().signed.version.get(),
    };
    refuse_rollback(&versions, &trust.high_water)?;

    let signed_targets = &repository.targets().signed;
    if signed_targets
        .delegations
        .as_ref()
        .is_some_and(|d| !d.roles.is_empty())
    {
        return Err(TufError::Invalid(
            "targets.json delegates to other roles; bundle repositories have one targets role"
                .into(),
        ));
    }
    let mut names: Vec<(&TargetName, u64)> = signed_targets
        .targets
        .iter()
        .map(|(name, target)| (name, target.length))
        .collect();
    names.sort_by(|a, b| a.0.raw().cmp(b.0.raw()));
    let mut total: u64 = 0;
    for (name, length) in &names {
        check_bundle_path(name.raw())?;
        if *length > limits.max_file {
            return Err(TufError::TooLarge(format!(
                "target {} is {length} bytes, more than the {} allowed for one file",
                name.raw(),
                limits.max_file
            )));
        }
        total = total.saturating_add(*length);
    }
    if total > limits.max_total {
        return Err(TufError::TooLarge(format!(
            "the targets total {total} bytes, more than the {} allowed for a bundle",
            limits.max_total
        )));
    }
    if let Some(listing) = listing {
        refuse_unlisted(listing, versions.root, names.iter().map(|(n, _)| n.raw()))?;
    }

    let mut files = Vec::with_capacity(names.len());
    for (name, length) in names {
        let stream = repository
            .read_target(name)
            .await
            .map_err(from_tough)?
            .ok_or_else(|| TufError::Invalid(format!("target {} vanished", name.raw())))?;
        let bytes = stream.into_vec().await.map_err(from_tough)?;
        // tough stops at the signed length and checks the hash; a short
        // file fails the hash, but say so plainly if anything slips by.
        if bytes.len() as u64 != length {
            return Err(TufError::TargetMismatch(format!(
                "target {} is {} bytes, signed as {length}",
                name.raw(),
                bytes.len()
            )));
        }
        files.push((name.raw().to_owned(), Bytes::from(bytes)));
    }

    let earliest = [
        repository.root().signed.expires,
        repository.timestamp().signed.expires,
        repository.snapshot().signed.expires,
        repository.targets().signed.expires,
    ]
    .into_iter()
    .min()
    .unwrap_or(repository.timestamp().signed.expires);
    let expires = time::OffsetDateTime::from_unix_timestamp(earliest.as_second())
        .map_err(|e| TufError::Invalid(format!("expires {earliest}: {e}")))?;

    Ok(Verified {
        root_version: versions.root,
        targets_version: versions.targets,
        snapshot_version: versions.snapshot,
        timestamp_version: versions.timestamp,
        expires,
        files,
        work,
        high_water: versions,
    })
}

/// `verify` over a repository directory (`DIR/metadata`, `DIR/targets`),
/// with the directory's own listing.
pub async fn verify_dir(trust: &Trust, dir: &Path, limits: &Limits) -> Result<Verified, TufError> {
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| TufError::io(format!("opening {}", dir.display()), e))?;
    let base = |sub: &str| {
        Url::from_directory_path(dir.join(sub))
            .map_err(|()| TufError::Invalid(format!("{} is not an absolute path", dir.display())))
    };
    let mut listing = Vec::new();
    list_files(&dir, &dir, &mut listing)?;
    verify(
        trust,
        base("metadata")?,
        base("targets")?,
        Box::new(FilesystemTransport),
        Some(&listing),
        limits,
    )
    .await
}

impl Verified {
    /// Persists the new trusted metadata: fsynced, then made current by one
    /// rename, then the high-water mark (tmp → fsync → rename → fsync dir).
    pub fn commit(self, trust: &mut Trust) -> Result<(), TufError> {
        let work = self.work.path().to_owned();
        let root_bytes = read_optional(&work.join("root.json"))?;
        for entry in std::fs::read_dir(&work)
            .map_err(|e| TufError::io(format!("reading {}", work.display()), e))?
        {
            let path = entry
                .map_err(|e| TufError::io(format!("reading {}", work.display()), e))?
                .path();
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| TufError::io(format!("syncing {}", path.display()), e))?;
        }
        sync_dir(&work)?;
        let kept = self.work.keep();
        let name = kept
            .file_name()
            .ok_or_else(|| TufError::Invalid("work directory without a name".into()))?;
        let committed_name = format!(
            "ds-{}",
            name.to_string_lossy().trim_start_matches(WORK_PREFIX)
        );
        let committed = trust.state.join(&committed_name);
        std::fs::rename(&kept, &committed)
            .map_err(|e| TufError::io(format!("renaming {}", kept.display()), e))?;

        let link = trust.state.join(DATASTORE);
        let previous = std::fs::read_link(&link).ok();
        let tmp_link = trust.state.join(".datastore.tmp");
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&committed_name, &tmp_link)
            .map_err(|e| TufError::io(format!("creating {}", tmp_link.display()), e))?;
        std::fs::rename(&tmp_link, &link)
            .map_err(|e| TufError::io(format!("replacing {}", link.display()), e))?;
        sync_dir(&trust.state)?;

        let high_water = HighWater {
            root: self.high_water.root.max(trust.high_water.root),
            timestamp: self.high_water.timestamp.max(trust.high_water.timestamp),
            snapshot: self.high_water.snapshot.max(trust.high_water.snapshot),
            targets: self.high_water.targets.max(trust.high_water.targets),
        };
        let json = serde_json::to_vec_pretty(&high_water)
            .map_err(|e| TufError::Invalid(format!("encoding the high-water mark: {e}")))?;
        write_atomic(&trust.state.join(HIGH_WATER), &json)?;
        trust.high_water = high_water;

        if let Some(previous) = previous
            && previous != Path::new(&committed_name)
        {
            let old = trust.state.join(previous);
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(path = %old.display(), error = %e, "could not remove the previous datastore");
            }
        }
        if let Some(bytes) = root_bytes
            && let Ok(version) = self_verified_root(&bytes)
            && version >= trust.root_version
        {
            trust.trusted_root = bytes;
            trust.root_version = version;
        }
        tracing::info!(
            root = high_water.root,
            targets = high_water.targets,
            timestamp = high_water.timestamp,
            "committed trusted metadata"
        );
        Ok(())
    }
}

fn refuse_rollback(loaded: &HighWater, trusted: &HighWater) -> Result<(), TufError> {
    let pairs = [
        ("root.json", loaded.root, trusted.root),
        ("timestamp.json", loaded.timestamp, trusted.timestamp),
        ("snapshot.json", loaded.snapshot, trusted.snapshot),
        ("targets.json", loaded.targets, trusted.targets),
    ];
    for (file, version, high) in pairs {
        if version < high {
            return Err(TufError::Rollback(format!(
                "{file} version {version} is lower than version {high} already trusted"
            )));
        }
    }
    Ok(())
}

fn refuse_unlisted<'a>(
    listing: &[String],
    root_version: u64,
    targets: impl Iterator<Item = &'a str>,
) -> Result<(), TufError> {
    let mut allowed: std::collections::HashSet<String> = [
        "metadata/timestamp.json",
        "metadata/snapshot.json",
        "metadata/targets.json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    allowed.extend((1..=root_version).map(|k| format!("metadata/{k}.root.json")));
    allowed.extend(targets.map(|t| format!("targets/{t}")));
    for path in listing {
        let path = path.trim_start_matches("./");
        if !allowed.contains(path) {
            return Err(TufError::UnlistedFile {
                path: path.to_owned(),
            });
        }
    }
    Ok(())
}

/// The version of a root that parses and is signed by a threshold of its own keys.
fn self_verified_root(bytes: &[u8]) -> Result<u64, String> {
    let root: Signed<Root> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    root.signed.verify_role(&root).map_err(|e| e.to_string())?;
    Ok(root.signed.version.get())
}

fn copy_datastore(from: &Path, to: &Path) -> Result<(), TufError> {
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TufError::io(format!("reading {}", from.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| TufError::io(format!("reading {}", from.display()), e))?;
        let path = entry.path();
        if path.is_file() {
            std::fs::copy(&path, to.join(entry.file_name()))
                .map_err(|e| TufError::io(format!("copying {}", path.display()), e))?;
        }
    }
    Ok(())
}

/// Work directories of runs that were killed before they finished.
fn sweep_work_dirs(state: &Path) {
    let Ok(entries) = std::fs::read_dir(state) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(WORK_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), TufError> {
    let what = || format!("listing {}", dir.display());
    for entry in std::fs::read_dir(dir).map_err(|e| TufError::io(what(), e))? {
        let entry = entry.map_err(|e| TufError::io(what(), e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| TufError::io(what(), e))?;
        if kind.is_dir() {
            list_files(root, &path, out)?;
        } else {
            // A FIFO would hang the reader and a device (a link to
            // /dev/zero) would never end: only regular files, links to
            // them followed.
            let regular = std::fs::metadata(&path).map_err(|e| TufError::io(what(), e))?;
            if !regular.is_file() {
                return Err(TufError::Invalid(format!(
                    "{}: not a regular file",
                    path.display()
                )));
            }
            let relative = path.strip_prefix(root).unwrap_or(&path);
            out.push(relative.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Caps every download by what it is, whatever lengths the metadata
/// claims: a signed `length` bounds a file only once its signer is trusted.
#[derive(Debug, Clone)]
struct Capped {
    inner: Box<dyn Transport>,
    metadata_base: Url,
    limits: Limits,
}

impl Capped {
    fn cap_for(&self, url: &Url) -> (u64, &'static str) {
        if url.as_str().starts_with(self.metadata_base.as_str()) {
            let file = url
                .path_segments()
                .and_then(|mut s| s.next_back())
                .unwrap_or("");
            match file {
                "timestamp.json" => (self.limits.max_timestamp, "timestamp"),
                "snapshot.json" => (self.limits.max_snapshot, "snapshot"),
                "targets.json" => (self.limits.max_targets, "targets metadata"),
                f if f.ends_with(".root.json") => (self.limits.max_root, "root"),
                _ => (self.limits.max_file, "file"),
            }
        } else {
            (self.limits.max_file, "file")
        }
    }
}

#[tough::async_trait]
impl Transport for Capped {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let (cap, what) = self.cap_for(&url);
        let stream = self.inner.fetch(url.clone()).await?;
        let mut seen: u64 = 0;
        let capped = stream.map(move |chunk| {
            let chunk = chunk?;
            seen = seen.saturating_add(chunk.len() as u64);
            if seen > cap {
                return Err(TransportError::new_with_cause(
                    TransportErrorKind::Other,
                    url.as_str(),
                    SizeCap {
                        url: url.to_string(),
                        what,
                        limit: cap,
                    },
                ));
            }
            Ok(chunk)
        });
        let boxed: Pin<
            Box<dyn futures_util::Stream<Item = Result<Bytes, TransportError>> + Send + Sync>,
        > = Box::pin(capped);
        Ok(boxed)
    }
}
