//! The state directory and the bundle versions in it (SPEC §10).
//!
//! ```text
//! STATE/
//!   tuf/            trusted TUF metadata (rollback protection across restarts)
//!   blobs/          OCI blobs by digest, so an update fetches only what changed
//!   staging/        the artifact being fetched; emptied at every pass
//!   versions/v7-t12/  a verified bundle: its files and sync.json
//!   last.json       what the source answered last, for a conditional poll
//! BUNDLE -> STATE/versions/v7-t12   (one rename makes a version current)
//! ```
//!
//! A version directory is written whole and fsynced under a temporary
//! name, then renamed; the bundle symlink is replaced by one rename. A
//! syncer killed at any point leaves the bundle path at one whole version.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use attestgate_node::freshness::{self, Freshness};
use serde::{Deserialize, Serialize};

/// Versions kept in the state directory, the current one included: enough
/// to look at what changed, or to point the bundle back by hand.
pub const KEPT: usize = 3;

pub struct State {
    dir: PathBuf,
}

/// What the source answered the last time it was polled successfully.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Last {
    /// The source it was for: another source's validator means nothing.
    pub source: String,
    /// What tells an unchanged source: the manifest digest of an OCI
    /// artifact, an ETag, the digest of a directory's timestamp.json.
    pub validator: Option<String>,
    /// The version directory it led to.
    #[serde(default)]
    pub version: Option<String>,
    /// The OCI manifests of the versions kept, newest first: the blob
    /// cache keeps what they refer to.
    #[serde(default)]
    pub recent_manifests: Vec<String>,
}

impl State {
    pub fn open(dir: &Path) -> anyhow::Result<State> {
        for sub in ["tuf", "blobs", "versions"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("state directory {}", dir.join(sub).display()))?;
        }
        // The state holds what the node trusts: only its owner may change it.
        restrict(dir)?;
        Ok(State {
            dir: dir.to_path_buf(),
        })
    }

    pub fn tuf(&self) -> PathBuf {
        self.dir.join("tuf")
    }

    pub fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    fn versions(&self) -> PathBuf {
        self.dir.join("versions")
    }

    /// Where to fetch into: absent, whatever a killed pass left there
    /// removed. Made only when something new arrives, so an unchanged poll
    /// writes nothing.
    pub fn staging(&self) -> anyhow::Result<PathBuf> {
        let staging = self.dir.join("staging");
        remove_all(&staging)?;
        Ok(staging)
    }

    pub fn last(&self, source: &str) -> Option<Last> {
        let text = std::fs::read(self.dir.join("last.json")).ok()?;
        let last: Last = serde_json::from_slice(&text).ok()?;
        (last.source == source).then_some(last)
    }

    pub fn save_last(&self, last: &Last) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(last)?;
        write_durably(&self.dir.join("last.json"), &bytes)
    }

    /// Writes a verified bundle as the version `name` and returns its
    /// directory. Nothing is visible under that name until every file and
    /// the directory itself are on disk.
    pub fn write_version(
        &self,
        name: &str,
        files: &[(String, &[u8])],
        freshness: &Freshness,
        source: &str,
    ) -> anyhow::Result<PathBuf> {
        let versions = self.versions();
        let final_dir = versions.join(name);
        let staged = versions.join(format!(".{name}.partial"));
        remove_all(&staged)?;
        std::fs::create_dir(&staged)
            .with_context(|| format!("cannot create {}", staged.display()))?;
        let mut dirs = vec![staged.clone()];
        for (path, content) in files {
            // The names were checked against the bundle's file kinds when
            // the metadata was verified; a path that escapes is refused
            // here too, as a second line.
            if path
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
                || path.starts_with('/')
            {
                bail!("refusing to write {path:?} outside the bundle");
            }
            let target = staged.join(path);
            if let Some(parent) = target.parent()
                && !dirs.iter().any(|d| d == parent)
            {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
                dirs.push(parent.to_path_buf());
            }
            write_synced(&target, content)?;
        }
        write_synced(
            &staged.join(freshness::FILE),
            freshness.render(source).as_bytes(),
        )?;
        for dir in dirs.iter().rev() {
            sync_dir(dir)?;
        }
        // A version of this name left by a pass killed before it was made
        // current: the caller never names the bundle path's target, so it
        // can go.
        remove_all(&final_dir)?;
        std::fs::rename(&staged, &final_dir)
            .with_context(|| format!("cannot rename {} into place", staged.display()))?;
        sync_dir(&versions)?;
        Ok(final_dir)
    }

    /// Removes all but the newest [`KEPT`] versions, never `current`, and
    /// whatever a killed pass left half written.
    pub fn prune(&self, current: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let versions = self.versions();
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&versions)
            .with_context(|| format!("cannot list {}", versions.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") {
                remove_all(&path)?;
                continue;
            }
            if name.starts_with('.') {
                continue; // the node's indexes, removed with their version
            }
            let modified = entry.metadata()?.modified()?;
            found.push((modified, path));
        }
        found.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        let current = current.canonicalize().ok();
        let mut kept = 0;
        for (_, path) in found {
            let is_current = current.as_deref() == Some(path.as_path());
            if is_current || kept < KEPT - 1 {
                kept += usize::from(!is_current);
                continue;
            }
            // Where the node keeps this version's index: found while the
            // version is still there to resolve.
            let index = attestgate_node::store::index_path(&path);
            remove_all(&path)?;
            if let Some(index) = index {
                let _ = std::fs::remove_file(index);
            }
            removed.push(path);
        }
        Ok(removed)
    }
}

/// The version the bundle path points at now, and its freshness.
pub fn current(bundle: &Path) -> Option<(PathBuf, Option<Freshness>)> {
    let target = bundle.canonicalize().ok()?;
    let freshness = Freshness::of(&target).ok().flatten();
    Some((target, freshness))
}

/// Points the bundle path at `version` with one rename, so a reader sees
/// the old version or the new one, never neither.
pub fn make_current(bundle: &Path, version: &Path) -> anyhow::Result<()> {
    let parent = bundle
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    match std::fs::symlink_metadata(bundle) {
        Ok(meta) if !meta.file_type().is_symlink() => bail!(
            "the bundle path {} is a {}, not a symlink attestgate-sync manages: move it away (a hand-made bundle is not replaced)",
            bundle.display(),
            if meta.is_dir() { "directory" } else { "file" }
        ),
        _ => {}
    }
    let name = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    let link = parent.join(format!(".{name}.attestgate-sync.{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(version, &link)
        .with_context(|| format!("cannot create {}", link.display()))?;
    if let Err(e) = std::fs::rename(&link, bundle) {
        let _ = std::fs::remove_file(&link);
        return Err(e)
            .with_context(|| format!("cannot point {} at the new version", bundle.display()));
    }
    sync_dir(parent)
}

fn write_synced(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces `path` whole: written beside it, fsynced, renamed over it.
pub fn write_durably(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let staged = path.with_extension(format!("tmp.{}", std::process::id()));
    write_synced(&staged, content)?;
    std::fs::rename(&staged, path)
        .with_context(|| format!("cannot rename {} into place", staged.display()))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync {}", dir.display()))
}

fn remove_all(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn restrict(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut permissions = std::fs::metadata(dir)?.permissions();
    if permissions.mode() & 0o022 != 0 {
        permissions.set_mode(permissions.mode() & !0o022);
        std::fs::set_permissions(dir, permissions)
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn freshness(version: u64) -> Freshness {
        Freshness {
            version,
            expires: time::macros::datetime!(2030-01-01 0:00 UTC),
        }
    }

    #[test]
    fn a_version_is_made_current_by_one_rename_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("state")).unwrap();
        let bundle = dir.path().join("bundle");
        let mut made = Vec::new();
        for n in 1..=5u64 {
            let policy = format!("name: v{n}\n");
            let version = state
                .write_version(
                    &format!("v{n}"),
                    &[
                        ("policy.yaml".into(), policy.as_bytes()),
                        ("attestors/ci.yaml".into(), b"x".as_slice()),
                    ],
                    &freshness(n),
                    "file:///src",
                )
                .unwrap();
            make_current(&bundle, &version).unwrap();
            // The index the node writes beside each version it reads.
            let index = attestgate_node::store::index_path(&version).unwrap();
            std::fs::write(&index, b"index").unwrap();
            // Modification times order the versions; make them distinct.
            std::thread::sleep(std::time::Duration::from_millis(20));
            made.push(version);
            let read = std::fs::read_to_string(bundle.join("policy.yaml")).unwrap();
            assert_eq!(read, policy);
            let (_, f) = current(&bundle).unwrap();
            assert_eq!(f, Some(freshness(n)));
            state.prune(&bundle).unwrap();
        }
        let left: Vec<bool> = made.iter().map(|v| v.exists()).collect();
        assert_eq!(left, [false, false, true, true, true]);
        let indexes = std::fs::read_dir(dir.path().join("state/versions"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".attestgate-index")
            })
            .count();
        assert_eq!(indexes, 3, "a removed version's index goes with it");
        assert!(
            std::fs::symlink_metadata(&bundle)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_hand_made_bundle_directory_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("state")).unwrap();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        std::fs::write(bundle.join("policy.yaml"), "mine").unwrap();
        let version = state
            .write_version("v1", &[], &freshness(1), "file:///src")
            .unwrap();
        let e = make_current(&bundle, &version).unwrap_err().to_string();
        assert!(e.contains("not a symlink"), "{e}");
        assert_eq!(
            std::fs::read_to_string(bundle.join("policy.yaml")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn a_path_out_of_the_bundle_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("state")).unwrap();
        for path in ["../x", "/etc/x", "a//b", "attestors/../../x"] {
            let files = [(path.to_string(), b"x".as_slice())];
            assert!(
                state
                    .write_version("v1", &files, &freshness(1), "s")
                    .is_err(),
                "{path}"
            );
        }
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn the_last_answer_is_only_for_the_source_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let last = Last {
            source: "oci://a/b:c".into(),
            validator: Some("sha256:00".into()),
            version: Some("v1-t1-r1".into()),
            recent_manifests: vec!["sha256:00".into()],
        };
        state.save_last(&last).unwrap();
        assert_eq!(state.last("oci://a/b:c"), Some(last));
        assert_eq!(state.last("oci://a/b:d"), None);
    }
}
