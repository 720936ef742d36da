//! Fetching a bundle artifact: one conditional request when nothing
//! changed, otherwise the manifest (bounded), the blobs not already cached
//! (each bounded and digest-checked as it streams), laid out as the
//! repository tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, ETAG, IF_NONE_MATCH};

use super::cache::BlobCache;
use super::error::OciError;
use super::manifest::{self, MANIFEST_MEDIA_TYPE, Refusal, sha256_digest};
use super::options::{Limits, RegistryOptions};
use super::reference::OciRef;
use super::wire::{Session, content_length};

/// What one fetch cost, as the registry saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// HTTP requests sent (token requests included).
    pub requests: u32,
    /// Response body bytes read.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The reference still names the manifest last synced.
    Unchanged,
    New {
        manifest_digest: String,
        /// The repository's files (layer titles), sorted.
        files: Vec<String>,
    },
}

/// A slow link still gets a blob through; a stalled one does not hold the
/// syncer for ever: the deadline grows with the declared size at 64 KiB/s.
fn blob_deadline(timeout: Duration, size: u64) -> Duration {
    timeout + Duration::from_secs(size / (64 << 10))
}

/// Fetches the artifact `from` names unless it is still `previous` (the
/// manifest digest last synced): then it costs one conditional request and
/// returns `Unchanged`. Otherwise lays the repository out under `dest`
/// (absent or empty), taking blobs from `blob_cache` (a directory of blobs
/// by digest, shared between polls) when they are there and right, and
/// keeping the manifest there for `prune`.
pub async fn fetch(
    from: &OciRef,
    previous: Option<&str>,
    dest: &Path,
    blob_cache: &Path,
    options: &RegistryOptions,
    limits: &Limits,
) -> Result<(Fetched, Traffic), OciError> {
    // A pinned digest cannot name anything else.
    if let (Some(pinned), Some(previous)) = (&from.digest, previous)
        && pinned == previous
    {
        return Ok((Fetched::Unchanged, Traffic::default()));
    }
    let mut session = Session::new(from, options)?;
    let result = fetch_in(&mut session, from, previous, dest, blob_cache, limits).await;
    let traffic = Traffic {
        requests: session.requests,
        bytes: session.bytes,
    };
    tracing::debug!(
        reference = %from,
        requests = traffic.requests,
        bytes = traffic.bytes,
        ok = result.is_ok(),
        "fetched bundle artifact"
    );
    result.map(|fetched| (fetched, traffic))
}

async fn fetch_in(
    session: &mut Session,
    from: &OciRef,
    previous: Option<&str>,
    dest: &Path,
    blob_cache: &Path,
    limits: &Limits,
) -> Result<Fetched, OciError> {
    let url = session.url(&format!("manifests/{}", from.manifest_reference()));
    let timeout = session.timeout;
    let response = session
        .send(|client| {
            let mut request = client
                .get(&url)
                .header(ACCEPT, MANIFEST_MEDIA_TYPE)
                .timeout(timeout);
            if let Some(previous) = previous {
                // distribution's ETag is the quoted manifest digest.
                request = request.header(IF_NONE_MATCH, format!("\"{previous}\""));
            }
            request
        })
        .await?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        if previous.is_none() {
            return Err(OciError::BadResponse {
                reference: from.to_string(),
                why: "304 Not Modified to an unconditional request".into(),
            });
        }
        return Ok(Fetched::Unchanged);
    }
    if !status.is_success() {
        return Err(
            session.status_error(status, &format!("manifest {}", from.manifest_reference()))
        );
    }
    let announced = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = session
        .read_capped(response, limits.max_manifest, "the manifest")
        .await?;
    let digest = sha256_digest(&bytes);
    let mismatch = |expected: &str, why: String| OciError::DigestMismatch {
        reference: from.to_string(),
        what: "the manifest".into(),
        expected: expected.to_string(),
        why,
    };
    if let Some(pinned) = &from.digest
        && *pinned != digest
    {
        return Err(mismatch(pinned, format!("its bytes hash to {digest}")));
    }
    if let Some(announced) = &announced
        && *announced != digest
    {
        return Err(mismatch(
            announced,
            format!("the registry announced it, but the bytes hash to {digest}"),
        ));
    }
    tracing::debug!(reference = %from, %digest, etag = ?etag, "manifest");
    // A registry that ignores If-None-Match still costs one request.
    if previous == Some(digest.as_str()) {
        return Ok(Fetched::Unchanged);
    }
    let artifact = manifest::parse(&bytes, limits.max_layers, limits.max_blob, limits.max_total)
        .map_err(|refusal| match refusal {
            Refusal::Shape(why) => OciError::BadArtifact {
                reference: from.to_string(),
                why,
            },
            Refusal::TooLarge { what, size, limit } => OciError::TooLarge {
                reference: from.to_string(),
                what,
                size,
                limit,
            },
        })?;
    prepare_empty_dir(dest).await?;
    let cache = BlobCache::open(blob_cache).await?;
    for (blob, size) in artifact.blobs() {
        if cache.holds(blob, size).await? {
            continue;
        }
        download(session, &cache, blob, size).await?;
    }
    for file in &artifact.files {
        let source = cache
            .path(&file.digest)
            .ok_or_else(|| OciError::BadArtifact {
                reference: from.to_string(),
                why: format!("layer {:?} has no sha256 digest", file.title),
            })?;
        let target = file
            .title
            .split('/')
            .fold(dest.to_path_buf(), |path, part| path.join(part));
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(OciError::io(parent))?;
        }
        tokio::fs::copy(&source, &target)
            .await
            .map_err(OciError::io(&target))?;
    }
    cache.put(&digest, &bytes).await?;
    Ok(Fetched::New {
        manifest_digest: digest,
        files: artifact.files.iter().map(|f| f.title.clone()).collect(),
    })
}

/// Streams blob `digest` into the cache, refusing it as soon as it passes
/// `size` and unless its bytes hash to `digest`.
async fn download(
    session: &mut Session,
    cache: &BlobCache,
    digest: &str,
    size: u64,
) -> Result<(), OciError> {
    let url = session.url(&format!("blobs/{digest}"));
    let deadline = blob_deadline(session.timeout, size);
    let mut response = session
        .send(|client| client.get(&url).timeout(deadline))
        .await?;
    let status = response.status();
    if !status.is_success() {
        return Err(session.status_error(status, &format!("blob {digest}")));
    }
    let reference = session.reference();
    let too_large = |got: u64| OciError::TooLarge {
        reference: reference.clone(),
        what: format!("blob {digest} (the manifest says {size} bytes)"),
        size: got,
        limit: size,
    };
    if let Some(length) = content_length(response.headers())
        && length > size
    {
        return Err(too_large(length));
    }
    let mut partial = cache.partial(digest).await?;
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| session.transport_error(&e, format!("reading blob {digest}")))?;
        let Some(chunk) = chunk else { break };
        session.bytes += chunk.len() as u64;
        if partial.written + chunk.len() as u64 > size {
            return Err(too_large(partial.written + chunk.len() as u64));
        }
        partial.write(&chunk).await?;
    }
    let mismatch = |why: String| OciError::DigestMismatch {
        reference: reference.clone(),
        what: format!("blob {digest}"),
        expected: digest.to_string(),
        why,
    };
    if partial.written != size {
        return Err(mismatch(format!(
            "{} bytes arrived, the manifest says {size}",
            partial.written
        )));
    }
    let got = partial.digest();
    if got != digest {
        return Err(mismatch(format!("its bytes hash to {got}")));
    }
    partial.commit(cache, digest).await
}

/// `dir` made if absent; refused unless empty (a staging directory must
/// hold only what the artifact brought).
async fn prepare_empty_dir(dir: &Path) -> Result<(), OciError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(OciError::io(dir))?;
    if has_entries(dir).await? {
        return Err(OciError::Local {
            path: dir.to_path_buf(),
            why: "not empty: the repository is laid out only into an empty directory".into(),
        });
    }
    Ok(())
}

async fn has_entries(dir: &Path) -> Result<bool, OciError> {
    let mut entries = tokio::fs::read_dir(dir).await.map_err(OciError::io(dir))?;
    Ok(entries
        .next_entry()
        .await
        .map_err(OciError::io(dir))?
        .is_some())
}

/// What `pull_dir` brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub manifest_digest: String,
    pub files: Vec<String>,
    pub traffic: Traffic,
}

/// `repo pull`: the repository `from` names, into `dir`, which must not
/// exist or be empty. The tree appears whole or not at all: it is fetched
/// beside `dir` and renamed into place.
pub async fn pull_dir(
    from: &OciRef,
    dir: &Path,
    options: &RegistryOptions,
    limits: &Limits,
) -> Result<Pulled, OciError> {
    let existed = match tokio::fs::metadata(dir).await {
        Ok(_) => {
            if has_entries(dir).await? {
                return Err(OciError::Local {
                    path: dir.to_path_buf(),
                    why: "not empty: pull into a new or empty directory".into(),
                });
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(OciError::io(dir)(e)),
    };
    let name = dir
        .file_name()
        .ok_or_else(|| OciError::Local {
            path: dir.to_path_buf(),
            why: "names no directory".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(OciError::io(&parent))?;
    let staging = parent.join(format!(".{name}.pull-{}", std::process::id()));
    let result = pull_via(from, dir, existed, &staging, options, limits).await;
    if let Err(e) = tokio::fs::remove_dir_all(&staging).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %staging.display(), error = %e, "cannot remove the pull's staging directory");
    }
    result
}

async fn pull_via(
    from: &OciRef,
    dir: &Path,
    existed: bool,
    staging: &Path,
    options: &RegistryOptions,
    limits: &Limits,
) -> Result<Pulled, OciError> {
    let tree = staging.join("tree");
    let (fetched, traffic) =
        fetch(from, None, &tree, &staging.join("blobs"), options, limits).await?;
    let Fetched::New {
        manifest_digest,
        files,
    } = fetched
    else {
        return Err(OciError::BadResponse {
            reference: from.to_string(),
            why: "nothing came back".into(),
        });
    };
    if existed {
        tokio::fs::remove_dir(dir)
            .await
            .map_err(OciError::io(dir))?;
    }
    tokio::fs::rename(&tree, dir)
        .await
        .map_err(OciError::io(dir))?;
    Ok(Pulled {
        manifest_digest,
        files,
        traffic,
    })
}
