//! A bundle source (SPEC §10 `bundle_source`) polled and verified as a node
//! does: one conditional request when nothing changed, otherwise the whole
//! repository fetched and verified against the trust held. The syncer and
//! `attestgate repo verify` both go through here, so what an operator
//! checks by hand is what the node accepts.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use url::Url;

use crate::https::{self, HttpsError, HttpsTransport};
use crate::oci::{self, Fetched, OciError, OciRef, RegistryOptions, Traffic};
use crate::tuf::{self, Trust, TufError, Verified};

#[derive(Debug, Clone)]
pub enum Source {
    /// `oci://HOST[:PORT]/REPO:TAG`: the repository as one OCI artifact.
    Oci(OciRef),
    /// `file:///DIR`: a repository directory (removable media, a mirror).
    Dir(PathBuf),
    /// `https://HOST/PATH/`: a repository on a web server.
    Https(Url),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("bundle source {text:?}: {why}")]
    BadSource { text: String, why: String },
    #[error(transparent)]
    Tuf(#[from] TufError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Https(#[from] HttpsError),
    /// A repository directory that cannot be read.
    #[error("{path}: {source}", path = .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a poll is: the three ways it can end, for exit codes and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The source offered something that is not to be trusted.
    Refused,
    /// The source could not be had; the next poll tries again.
    Unreachable,
    /// This node could not read or write its own files.
    Local,
}

impl SourceError {
    /// A stable snake_case reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::BadSource { .. } => "bad_reference",
            SourceError::Tuf(e) => e.reason(),
            SourceError::Oci(e) => e.reason(),
            SourceError::Https(e) => e.reason(),
            SourceError::Unreadable { .. } => "unreachable",
        }
    }

    pub fn failure(&self) -> Failure {
        let local = matches!(
            self.reason(),
            "local" | "io" | "usage" | "key" | "bad_options"
        );
        // A reference this node cannot use is its configuration's fault,
        // not something the source served.
        let unreachable = self.reason() == "bad_reference"
            || match self {
                SourceError::BadSource { .. } | SourceError::Unreadable { .. } => true,
                SourceError::Tuf(e) => e.is_unreachable(),
                SourceError::Oci(e) => e.is_unreachable(),
                SourceError::Https(e) => e.is_unreachable(),
            };
        if local {
            Failure::Local
        } else if unreachable {
            Failure::Unreachable
        } else {
            Failure::Refused
        }
    }
}

impl Source {
    pub fn parse(text: &str) -> Result<Source, SourceError> {
        let bad = |why: &str| SourceError::BadSource {
            text: text.to_string(),
            why: why.to_string(),
        };
        if text.starts_with("oci://") {
            return Ok(Source::Oci(OciRef::parse(text)?));
        }
        if text.starts_with("file://") {
            let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
            let path = url
                .to_file_path()
                .map_err(|()| bad("expected file:///ABSOLUTE/DIR"))?;
            return Ok(Source::Dir(path));
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            let mut url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
            // A base names a directory: without the slash, joining would
            // replace its last segment.
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            return Ok(Source::Https(url));
        }
        Err(bad(
            "expected oci://HOST[:PORT]/REPO:TAG, file:///DIR or https://HOST/PATH/",
        ))
    }
}

/// Where a poll may keep what it fetches.
pub struct Scratch<'a> {
    /// An empty directory an OCI artifact is laid out in.
    pub staging: &'a Path,
    /// OCI blobs by digest, kept between polls.
    pub blobs: &'a Path,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub tuf: tuf::Limits,
    pub oci: oci::Limits,
}

#[derive(Debug)]
pub enum Polled {
    /// The source still answers as it did when `previous` was returned.
    Unchanged,
    New {
        verified: Verified,
        /// What to pass as `previous` next time.
        validator: String,
        /// The OCI manifest the version came in, for the blob cache.
        manifest: Option<String>,
    },
}

/// Polls `source`: unchanged since `previous` (a validator an earlier poll
/// returned) costs one request, or one read of a directory's timestamp;
/// anything else is fetched and verified whole against `trust`, which
/// changes only when the caller commits the result.
pub async fn poll(
    source: &Source,
    previous: Option<&str>,
    trust: &Trust,
    scratch: &Scratch<'_>,
    options: &RegistryOptions,
    limits: &Limits,
    traffic: &mut Traffic,
) -> Result<Polled, SourceError> {
    match source {
        Source::Oci(reference) => {
            let (fetched, spent) = oci::fetch(
                reference,
                previous,
                scratch.staging,
                scratch.blobs,
                options,
                &limits.oci,
            )
            .await?;
            *traffic = spent;
            match fetched {
                Fetched::Unchanged => Ok(Polled::Unchanged),
                Fetched::New {
                    manifest_digest, ..
                } => Ok(Polled::New {
                    verified: tuf::verify_dir(trust, scratch.staging, &limits.tuf).await?,
                    validator: manifest_digest.clone(),
                    manifest: Some(manifest_digest),
                }),
            }
        }
        Source::Dir(dir) => {
            // The timestamp changes with every publish and every renewal:
            // its digest tells an unchanged directory.
            let timestamp = dir.join("metadata/timestamp.json");
            let bytes = read_capped(&timestamp, limits.tuf.max_timestamp)?;
            let validator = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            if previous == Some(validator.as_str()) {
                return Ok(Polled::Unchanged);
            }
            Ok(Polled::New {
                verified: tuf::verify_dir(trust, dir, &limits.tuf).await?,
                validator,
                manifest: None,
            })
        }
        Source::Https(base) => {
            let (unchanged, validator) =
                https::timestamp_unchanged(base, previous, options).await?;
            if unchanged && previous.is_some() {
                return Ok(Polled::Unchanged);
            }
            let join = |sub: &str| {
                base.join(sub).map_err(|e| SourceError::BadSource {
                    text: base.to_string(),
                    why: e.to_string(),
                })
            };
            let largest = limits.tuf.max_file.max(limits.tuf.max_targets);
            let transport = HttpsTransport::new(options, largest)?;
            let verified = tuf::verify(
                trust,
                join("metadata/")?,
                join("targets/")?,
                Box::new(transport),
                None,
                &limits.tuf,
            )
            .await?;
            Ok(Polled::New {
                verified,
                validator,
                manifest: None,
            })
        }
    }
}

/// A directory source's file, read only if it is a regular file no larger
/// than `cap`: a FIFO would hang the syncer, a link to /dev/zero fill it.
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, SourceError> {
    use std::io::Read as _;
    let unreadable = |source: std::io::Error| SourceError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(SourceError::Tuf(TufError::Invalid(format!(
            "{}: not a regular file",
            path.display()
        ))));
    }
    if meta.len() > cap {
        return Err(SourceError::Tuf(TufError::TooLarge(format!(
            "{} is {} bytes, more than the {cap} allowed",
            path.display(),
            meta.len()
        ))));
    }
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > cap {
        return Err(SourceError::Tuf(TufError::TooLarge(format!(
            "{} grew past the {cap} bytes allowed while read",
            path.display()
        ))));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sources_are_told_apart_by_scheme_and_a_wrong_one_says_what_is_expected() {
        assert!(matches!(
            Source::parse("oci://127.0.0.1:5000/bundles/prod:v1").unwrap(),
            Source::Oci(_)
        ));
        match Source::parse("file:///media/usb/repo").unwrap() {
            Source::Dir(path) => assert_eq!(path, PathBuf::from("/media/usb/repo")),
            other => panic!("{other:?}"),
        }
        match Source::parse("https://mirror.example/attestgate").unwrap() {
            Source::Https(url) => assert_eq!(url.as_str(), "https://mirror.example/attestgate/"),
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("metadata")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("metadata/timestamp.json"))
            .unwrap();
        let e = read_capped(&dir.path().join("metadata/timestamp.json"), 16 << 10).unwrap_err();
        assert_eq!(e.failure(), Failure::Refused, "{e}");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        for wrong in ["ftp://x/y", "/plain/path", "file://relative/dir"] {
            let e = Source::parse(wrong).unwrap_err();
            assert_eq!(e.failure(), Failure::Unreachable, "{wrong}");
            assert!(e.to_string().contains(wrong), "{e}");
        }
    }
}
