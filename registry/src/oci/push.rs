//! `repo push`: a repository directory as one artifact. Blobs the registry
//! already has are not sent again, and the manifest is sent as built (the
//! digest nodes see is the digest printed here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION};

use super::error::OciError;
use super::fetch::Traffic;
use super::manifest::{self, EMPTY_CONFIG, Layer, MANIFEST_MEDIA_TYPE, sha256_digest};
use super::options::{Limits, RegistryOptions};
use super::reference::OciRef;
use super::wire::Session;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub manifest_digest: String,
    /// The files carried (layer titles), sorted.
    pub files: Vec<String>,
    /// Blobs sent; the others were in the registry already.
    pub uploaded: usize,
    pub traffic: Traffic,
}

/// Pushes the repository in `dir` (its `metadata/` and `targets/` trees;
/// anything else beside them is not part of it) to `to`, which must name a
/// tag. Refuses a tree a node with the default limits would refuse.
pub async fn push_dir(
    dir: &Path,
    to: &OciRef,
    options: &RegistryOptions,
) -> Result<Pushed, OciError> {
    if to.tag.is_none() || to.digest.is_some() {
        return Err(OciError::BadReference {
            reference: to.to_string(),
            why: "a push needs a :TAG (and no @digest)".into(),
        });
    }
    let root = dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || read_tree(&root))
        .await
        .map_err(|e| OciError::Local {
            path: dir.to_path_buf(),
            why: format!("reading the tree failed: {e}"),
        })??;
    let layers: Vec<Layer> = files
        .iter()
        .map(|(title, bytes)| Layer {
            title: title.clone(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
        })
        .collect();
    let manifest = manifest::build(&layers);
    let limits = Limits::default();
    manifest::parse(
        &manifest,
        limits.max_layers,
        limits.max_blob,
        limits.max_total,
    )
    .map_err(|refusal| OciError::Local {
        path: dir.to_path_buf(),
        why: format!("nodes would refuse this repository: {refusal:?}"),
    })?;
    let mut blobs: BTreeMap<String, Bytes> = BTreeMap::new();
    blobs.insert(
        sha256_digest(EMPTY_CONFIG),
        Bytes::from_static(EMPTY_CONFIG),
    );
    for (layer, (_, bytes)) in layers.iter().zip(&files) {
        blobs.insert(layer.digest.clone(), Bytes::from(bytes.clone()));
    }
    let mut session = Session::new(to, options)?;
    let mut uploaded = 0;
    for (digest, bytes) in &blobs {
        if push_blob(&mut session, digest, bytes.clone()).await? {
            uploaded += 1;
        }
    }
    let manifest_digest = put_manifest(&mut session, to, manifest).await?;
    tracing::info!(reference = %to, digest = %manifest_digest, files = layers.len(), uploaded, "pushed bundle artifact");
    Ok(Pushed {
        manifest_digest,
        files: files.into_iter().map(|(title, _)| title).collect(),
        uploaded,
        traffic: Traffic {
            requests: session.requests,
            bytes: session.bytes,
        },
    })
}

/// Pushes `blobs` and then `manifest` to `to` exactly as given, unchecked:
/// for tests and tools that need an artifact `push_dir` would never make.
/// Returns the manifest's digest.
pub async fn push_raw(
    to: &OciRef,
    blobs: &[Vec<u8>],
    manifest: &[u8],
    options: &RegistryOptions,
) -> Result<String, OciError> {
    let mut session = Session::new(to, options)?;
    for blob in blobs {
        let digest = sha256_digest(blob);
        push_blob(&mut session, &digest, Bytes::from(blob.clone())).await?;
    }
    put_manifest(&mut session, to, manifest.to_vec()).await
}

/// Sends blob `digest` unless the repository has it; true when sent.
pub(crate) async fn push_blob(
    session: &mut Session,
    digest: &str,
    bytes: Bytes,
) -> Result<bool, OciError> {
    let url = session.url(&format!("blobs/{digest}"));
    let timeout = session.timeout;
    let head = session
        .send(|client| client.head(&url).timeout(timeout))
        .await?;
    match head.status() {
        status if status.is_success() => return Ok(false),
        StatusCode::NOT_FOUND => {}
        status => return Err(session.status_error(status, &format!("blob {digest}"))),
    }
    let start = session.url("blobs/uploads/");
    let begun = session
        .send(|client| client.post(&start).timeout(timeout))
        .await?;
    if begun.status() != StatusCode::ACCEPTED {
        return Err(session.status_error(begun.status(), "a blob upload"));
    }
    let location = begun
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| OciError::BadResponse {
            reference: session.reference(),
            why: "a blob upload began without a Location".into(),
        })?;
    let mut target =
        url::Url::parse(&session.absolute(location)).map_err(|e| OciError::BadResponse {
            reference: session.reference(),
            why: format!("upload Location {location:?}: {e}"),
        })?;
    target.query_pairs_mut().append_pair("digest", digest);
    let deadline = timeout + std::time::Duration::from_secs(bytes.len() as u64 / (64 << 10));
    let put = session
        .send(|client| {
            client
                .put(target.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(bytes.clone())
                .timeout(deadline)
        })
        .await?;
    if put.status() != StatusCode::CREATED {
        return Err(session.status_error(put.status(), &format!("uploading blob {digest}")));
    }
    Ok(true)
}

pub(crate) async fn put_manifest(
    session: &mut Session,
    to: &OciRef,
    manifest: Vec<u8>,
) -> Result<String, OciError> {
    let digest = sha256_digest(&manifest);
    let url = session.url(&format!("manifests/{}", to.manifest_reference()));
    let timeout = session.timeout;
    let body = Bytes::from(manifest);
    let response = session
        .send(|client| {
            client
                .put(&url)
                .header(CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
                .body(body.clone())
                .timeout(timeout)
        })
        .await?;
    let status = response.status();
    if status != StatusCode::CREATED {
        let detail = session
            .read_capped(response, 64 << 10, "the registry's answer")
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let error = session.status_error(status, "the manifest");
        return Err(match error {
            OciError::BadResponse { reference, why } => OciError::BadResponse {
                reference,
                why: format!("{why}: {}", detail.trim()),
            },
            other => other,
        });
    }
    if let Some(stored) = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        && stored != digest
    {
        return Err(OciError::BadResponse {
            reference: to.to_string(),
            why: format!("the registry stored the manifest as {stored}, not as sent ({digest})"),
        });
    }
    Ok(digest)
}

/// The repository's files by title (`metadata/…`, `targets/…`), sorted,
/// symbolic links followed (tough may link targets).
fn read_tree(root: &Path) -> Result<Vec<(String, Vec<u8>)>, OciError> {
    let metadata = root.join("metadata");
    if !metadata.is_dir() {
        return Err(OciError::Local {
            path: root.to_path_buf(),
            why: "not a bundle repository: no metadata/ directory".into(),
        });
    }
    let mut files = Vec::new();
    for top in ["metadata", "targets"] {
        let path = root.join(top);
        if path.is_dir() {
            walk(&path, top, 0, &mut files)?;
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), OciError> {
    // Deeper than any bundle path; a link cycle ends here.
    if depth > 32 {
        return Err(OciError::Local {
            path: dir.to_path_buf(),
            why: "directories nested too deep (a symbolic link loop?)".into(),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(OciError::io(dir))?;
    for entry in entries {
        let entry = entry.map_err(OciError::io(dir))?;
        let path: PathBuf = entry.path();
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| OciError::Local {
            path: path.clone(),
            why: "the file name is not UTF-8".into(),
        })?;
        let title = format!("{prefix}/{name}");
        let meta = std::fs::metadata(&path).map_err(OciError::io(&path))?;
        if meta.is_dir() {
            walk(&path, &title, depth + 1, out)?;
        } else if meta.is_file() {
            manifest::check_title(&title).map_err(|why| OciError::Local {
                path: path.clone(),
                why: format!("cannot be carried as {title:?}: {why}"),
            })?;
            out.push((title, std::fs::read(&path).map_err(OciError::io(&path))?));
        } else {
            return Err(OciError::Local {
                path,
                why: "neither a file nor a directory".into(),
            });
        }
    }
    Ok(())
}
