//! Blobs kept between polls, by digest (`CACHE/sha256/<hex>`), so an update
//! fetches only the files that changed. Nothing in it is trusted: a blob is
//! re-hashed before use and discarded when it does not match, and writes
//! go through a temporary file and a rename, so a crash leaves either the
//! whole blob or none.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::OciError;
use super::manifest::{referenced_digests, sha256_digest};
use super::reference::check_digest;

const PARTIAL_PREFIX: &str = ".partial-";

pub(crate) struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    pub(crate) async fn open(root: &Path) -> Result<BlobCache, OciError> {
        let dir = root.join("sha256");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(OciError::io(&dir))?;
        Ok(BlobCache { dir })
    }

    /// Where `digest` is kept; `None` for a digest that is not sha256 hex
    /// (it could name any path).
    pub(crate) fn path(&self, digest: &str) -> Option<PathBuf> {
        check_digest(digest).ok().map(|hex| self.dir.join(hex))
    }

    /// Whether the cache holds `digest` with `size` bytes; a blob that is
    /// there but wrong is removed.
    pub(crate) async fn holds(&self, digest: &str, size: u64) -> Result<bool, OciError> {
        let Some(path) = self.path(digest) else {
            return Ok(false);
        };
        let length = match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(OciError::io(&path)(e)),
        };
        if length == size {
            let bytes = tokio::fs::read(&path).await.map_err(OciError::io(&path))?;
            if sha256_digest(&bytes) == digest {
                return Ok(true);
            }
        }
        tracing::warn!(blob = digest, path = %path.display(), "cached blob does not match its digest; fetching it again");
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(OciError::io(&path)(e)),
        }
    }

    /// A new, unique temporary file in the cache for a blob on its way in.
    pub(crate) async fn partial(&self, digest: &str) -> Result<Partial, OciError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let name = format!(
            "{PARTIAL_PREFIX}{hex}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(OciError::io(&path))?;
        Ok(Partial {
            path,
            file: Some(file),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Stores `bytes` as `digest` (tmp + rename).
    pub(crate) async fn put(&self, digest: &str, bytes: &[u8]) -> Result<(), OciError> {
        let mut partial = self.partial(digest).await?;
        partial.write(bytes).await?;
        partial.commit(self, digest).await
    }

    pub(crate) async fn read(&self, digest: &str) -> Option<Vec<u8>> {
        tokio::fs::read(self.path(digest)?).await.ok()
    }
}

/// A blob being written; removed unless committed.
pub(crate) struct Partial {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    pub(crate) written: u64,
}

impl Partial {
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), OciError> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        if let Some(file) = self.file.as_mut() {
            file.write_all(bytes)
                .await
                .map_err(OciError::io(&self.path))?;
        }
        Ok(())
    }

    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    /// Makes the blob `digest` (the caller checked it) visible in the cache.
    pub(crate) async fn commit(mut self, cache: &BlobCache, digest: &str) -> Result<(), OciError> {
        let target = cache.path(digest).ok_or_else(|| OciError::Local {
            path: cache.dir.clone(),
            why: format!("{digest:?} is not a sha256 digest"),
        })?;
        if let Some(mut file) = self.file.take() {
            file.flush().await.map_err(OciError::io(&self.path))?;
            file.sync_all().await.map_err(OciError::io(&self.path))?;
        }
        tokio::fs::rename(&self.path, &target)
            .await
            .map_err(OciError::io(&target))?;
        // Committed: nothing left to clean up.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            self.file.take();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes from the blob cache at `root` every blob that none of the
/// manifests `keep` (digests of manifests fetched into this cache) refers
/// to, and leftovers of interrupted downloads; the kept manifests stay.
/// Returns how many files were removed. Not to be run while a fetch into
/// the same cache is under way.
pub async fn prune(root: &Path, keep: &[&str]) -> Result<usize, OciError> {
    let cache = BlobCache::open(root).await?;
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for manifest in keep {
        let Some(hex) = check_digest(manifest).ok() else {
            continue;
        };
        wanted.insert(hex.to_string());
        if let Some(bytes) = cache.read(manifest).await {
            for digest in referenced_digests(&bytes) {
                if let Ok(hex) = check_digest(&digest) {
                    wanted.insert(hex.to_string());
                }
            }
        }
    }
    let mut removed = 0;
    let mut entries = tokio::fs::read_dir(&cache.dir)
        .await
        .map_err(OciError::io(&cache.dir))?;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(OciError::io(&cache.dir))?
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if wanted.contains(&name) {
            continue;
        }
        let path = entry.path();
        match tokio::fs::remove_file(&path).await {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(OciError::io(&path)(e)),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wrong_blob_is_dropped_and_pruning_keeps_what_manifests_name() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).await.unwrap();
        let a = sha256_digest(b"a");
        let b = sha256_digest(b"b");
        cache.put(&a, b"a").await.unwrap();
        cache.put(&b, b"b").await.unwrap();
        assert!(cache.holds(&a, 1).await.unwrap());
        assert!(!cache.holds(&a, 2).await.unwrap(), "wrong size");
        assert!(!cache.path(&a).unwrap().exists(), "removed");
        std::fs::write(cache.path(&b).unwrap(), b"c").unwrap();
        assert!(!cache.holds(&b, 1).await.unwrap(), "wrong content");
        assert!(!cache.path(&b).unwrap().exists(), "removed");

        let layers = [super::super::manifest::Layer {
            title: "targets/a".into(),
            digest: a.clone(),
            size: 1,
        }];
        let manifest = super::super::manifest::build(&layers);
        let manifest_digest = sha256_digest(&manifest);
        cache.put(&manifest_digest, &manifest).await.unwrap();
        cache.put(&a, b"a").await.unwrap();
        cache.put(&b, b"b").await.unwrap();
        let partial = cache.partial(&b).await.unwrap();
        std::mem::forget(partial); // an interrupted download's leftover
        assert_eq!(prune(dir.path(), &[&manifest_digest]).await.unwrap(), 2);
        assert!(cache.path(&a).unwrap().exists());
        assert!(cache.path(&manifest_digest).unwrap().exists());
        assert!(!cache.path(&b).unwrap().exists());
        assert_eq!(prune(dir.path(), &[]).await.unwrap(), 2);
    }
}
