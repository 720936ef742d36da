//! The attestation cache (SPEC §11): registry signatures that verified when
//! the image was pulled, kept on local disk so that every later decision
//! (CreateContainer, the shim, a restart) is made with no network.
//!
//! One file per image digest, `sha256-<hex>.json`, replaced whole by a
//! rename after its bytes reached the disk, so a reader sees the old entry
//! or the new one, never half of either. What a file holds is evidence, not
//! a verdict: every decision verifies it again under the attestors of the
//! bundle in force, so damage can only fail to verify, and an attestor's
//! key removed from the bundle stops counting at once. Which digest a
//! signature was made for is the one claim taken on trust: the proxy read
//! that link from containerd's content store when it wrote the entry, in
//! a directory only it (root) writes.
//! An entry that cannot be read is reported and ignored.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use attestgate_policy::{Digest, RegistryAttestation, RegistrySignature};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// An entry holds a few signatures of a few hundred bytes each; anything
/// much larger was not written by us.
pub const MAX_ENTRY_BYTES: u64 = 1 << 20;
/// Signatures kept per digest; the newest win.
pub const MAX_SIGNATURES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("attestation cache {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("attestation cache entry {path}: {why}")]
    Corrupt { path: PathBuf, why: String },
}

#[derive(Debug, Clone)]
pub struct AttestationCache {
    dir: PathBuf,
}

/// What one successful lookup found for one signed digest: it replaces
/// what an earlier lookup found for that digest in the same repository, so
/// a signature deleted from the registry stops counting at the next pull
/// that looks up (a pull looks up only while the policy is not satisfied
/// without the registry).
#[derive(Debug, Clone)]
pub struct Found {
    pub signed_digest: Digest,
    pub found_in: String,
    /// Only signatures that verified for some attestor: nothing unverified
    /// is cached.
    pub verified: Vec<RegistrySignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    digest: String,
    attestations: Vec<EntryItem>,
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum EntryItem {
    Cosign {
        signed_digest: String,
        found_in: String,
        payload: String,
        signature: String,
    },
    Dsse {
        signed_digest: String,
        found_in: String,
        payload_type: String,
        payload: String,
        signatures: Vec<String>,
    },
}

impl EntryItem {
    fn from_attestation(a: &RegistryAttestation) -> EntryItem {
        let signed_digest = a.signed_digest.to_string();
        let found_in = a.found_in.clone();
        match &a.signature {
            RegistrySignature::Cosign { payload, signature } => EntryItem::Cosign {
                signed_digest,
                found_in,
                payload: STANDARD.encode(payload),
                signature: STANDARD.encode(signature),
            },
            RegistrySignature::Dsse {
                payload_type,
                payload,
                signatures,
            } => EntryItem::Dsse {
                signed_digest,
                found_in,
                payload_type: payload_type.clone(),
                payload: STANDARD.encode(payload),
                signatures: signatures.iter().map(|s| STANDARD.encode(s)).collect(),
            },
        }
    }

    fn to_attestation(&self) -> Result<RegistryAttestation, String> {
        let digest = |d: &str| Digest::parse(d).map_err(|e| e.to_string());
        let bytes = |field: &str, b: &str| {
            STANDARD
                .decode(b)
                .map_err(|e| format!("{field} is not base64: {e}"))
        };
        Ok(match self {
            EntryItem::Cosign {
                signed_digest,
                found_in,
                payload,
                signature,
            } => RegistryAttestation {
                signature: RegistrySignature::Cosign {
                    payload: bytes("payload", payload)?,
                    signature: bytes("signature", signature)?,
                },
                signed_digest: digest(signed_digest)?,
                found_in: found_in.clone(),
            },
            EntryItem::Dsse {
                signed_digest,
                found_in,
                payload_type,
                payload,
                signatures,
            } => RegistryAttestation {
                signature: RegistrySignature::Dsse {
                    payload_type: payload_type.clone(),
                    payload: bytes("payload", payload)?,
                    signatures: signatures
                        .iter()
                        .map(|s| bytes("signature", s))
                        .collect::<Result<_, _>>()?,
                },
                signed_digest: digest(signed_digest)?,
                found_in: found_in.clone(),
            },
        })
    }
}

impl AttestationCache {
    pub fn new(dir: impl Into<PathBuf>) -> AttestationCache {
        AttestationCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for `digest`: `sha256-<hex>.json`. A digest is checked hex,
    /// so the name cannot leave the directory.
    pub fn path_for(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}.json", digest.as_str().replace(':', "-")))
    }

    /// What the cache holds for `digest`; nothing when it holds nothing.
    /// An entry that cannot be read is an error, for the caller to report
    /// and then decide without it.
    pub fn load(&self, digest: &Digest) -> Result<Vec<RegistryAttestation>, CacheError> {
        let path = self.path_for(digest);
        let corrupt = |why: String| CacheError::Corrupt {
            path: path.clone(),
            why,
        };
        let bytes = match read_capped(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(Vec::new()),
            // Not ours to have written: corrupt, so a writer replaces it.
            Err(ReadError::Refused(why)) => return Err(corrupt(why)),
            Err(ReadError::Io(source)) => {
                return Err(CacheError::Io {
                    path: path.clone(),
                    source,
                });
            }
        };
        let entry: EntryFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not an entry: {e}")))?;
        if entry.digest != digest.as_str() {
            return Err(corrupt(format!(
                "holds signatures for {}, not {digest}",
                entry.digest
            )));
        }
        entry
            .attestations
            .iter()
            .map(|item| item.to_attestation().map_err(&corrupt))
            .collect()
    }

    /// Records what lookups found for `digest`, merged with what the entry
    /// held: each `Found` replaces the earlier signatures for its signed
    /// digest and repository. A corrupt entry is replaced.
    pub fn store(&self, digest: &Digest, found: &[Found]) -> Result<(), CacheError> {
        // Two pulls of one digest at once (from two repositories) would
        // each merge into what they read and the later rename would drop
        // the other's signatures: writers take turns. Only the proxy
        // writes; readers need no lock, a rename being atomic.
        static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = WRITING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        let held = match self.load(digest) {
            Ok(held) => held,
            Err(CacheError::Corrupt { path, why }) => {
                tracing::warn!(path = %path.display(), why, "replacing a corrupt attestation cache entry");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let mut kept = held.clone();
        kept.retain(|held| {
            !found
                .iter()
                .any(|f| f.signed_digest == held.signed_digest && f.found_in == held.found_in)
        });
        for f in found {
            for signature in &f.verified {
                let attestation = RegistryAttestation {
                    signature: signature.clone(),
                    signed_digest: f.signed_digest.clone(),
                    found_in: f.found_in.clone(),
                };
                if !kept.contains(&attestation) {
                    kept.push(attestation);
                }
            }
        }
        if kept.len() > MAX_SIGNATURES {
            kept.drain(..kept.len() - MAX_SIGNATURES);
        }
        // An entry a reader would refuse must never be written: the
        // oldest signatures go first.
        let mut bytes = Vec::new();
        while !kept.is_empty() {
            bytes = serde_json::to_vec(&EntryFile {
                digest: digest.to_string(),
                attestations: kept.iter().map(EntryItem::from_attestation).collect(),
            })
            .map_err(|e| CacheError::Corrupt {
                path: self.path_for(digest),
                why: e.to_string(),
            })?;
            if bytes.len() as u64 <= MAX_ENTRY_BYTES {
                break;
            }
            kept.remove(0);
        }
        // A pull of an image already cached finds what it found before:
        // the entry stands as it is, with no write and no fsync.
        // (In order too: what was found again moves to the end, the last
        // the trim above drops.)
        if !held.is_empty() && kept == held {
            return Ok(());
        }
        let path = self.path_for(digest);
        if kept.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
                _ => Ok(()),
            };
        }
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let mut temp = tempfile::Builder::new()
            .prefix(".entry-")
            .tempfile_in(&self.dir)
            .map_err(io(&self.dir))?;
        temp.write_all(&bytes).map_err(io(temp.path()))?;
        temp.as_file().sync_all().map_err(io(temp.path()))?;
        temp.persist(&path).map_err(|e| io(&path)(e.error))?;
        // The rename itself reaches the disk with the directory.
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

enum ReadError {
    /// What is there is no entry of ours.
    Refused(String),
    Io(std::io::Error),
}

/// The file's bytes, none when there is no file; refused past
/// [`MAX_ENTRY_BYTES`] and when it is not a regular file (a FIFO planted
/// in its place must not hang a decision).
fn read_capped(path: &Path) -> Result<Option<Vec<u8>>, ReadError> {
    use std::io::Read as _;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    };
    if !meta.file_type().is_file() {
        return Err(ReadError::Refused("not a regular file".into()));
    }
    if meta.len() > MAX_ENTRY_BYTES {
        return Err(ReadError::Refused(format!(
            "{} bytes, more than the {MAX_ENTRY_BYTES} an entry may hold",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_ENTRY_BYTES + 1).read_to_end(&mut bytes))
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_ENTRY_BYTES {
        return Err(ReadError::Refused("grew past the cap while read".into()));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn cosign(n: u8) -> RegistrySignature {
        RegistrySignature::Cosign {
            payload: vec![b'{', n, b'}'],
            signature: vec![n; 8],
        }
    }

    #[test]
    fn entries_round_trip_and_a_lookup_replaces_what_it_found_before() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AttestationCache::new(dir.path().join("attestations"));
        let image = digest('a');
        let index = digest('b');
        assert!(cache.load(&image).unwrap().is_empty());
        let found = |d: &Digest, sigs: Vec<RegistrySignature>| Found {
            signed_digest: d.clone(),
            found_in: "reg.test/app".into(),
            verified: sigs,
        };
        cache
            .store(&image, &[found(&image, vec![cosign(1), cosign(2)])])
            .unwrap();
        cache
            .store(
                &image,
                &[found(
                    &index,
                    vec![RegistrySignature::Dsse {
                        payload_type: "application/vnd.in-toto+json".into(),
                        payload: b"{}".to_vec(),
                        signatures: vec![vec![9; 4]],
                    }],
                )],
            )
            .unwrap();
        let held = cache.load(&image).unwrap();
        assert_eq!(held.len(), 3);
        assert_eq!(held[2].signed_digest, index);
        // The index's found again, still last: the entry is not written
        // again.
        use std::os::unix::fs::MetadataExt as _;
        let inode = || std::fs::metadata(cache.path_for(&image)).unwrap().ino();
        let before = inode();
        let index_found = found(&index, vec![held[2].signature.clone()]);
        cache.store(&image, &[index_found]).unwrap();
        assert_eq!(inode(), before, "an unchanged entry was rewritten");
        assert_eq!(cache.load(&image).unwrap(), held);
        // The image's found again moves to the end: written.
        cache
            .store(&image, &[found(&image, vec![cosign(1), cosign(2)])])
            .unwrap();
        assert_ne!(inode(), before);
        assert_eq!(cache.load(&image).unwrap()[0].signed_digest, index);
        // A later lookup for the image's own digest that found one
        // signature: the other is gone, the index's stays.
        cache
            .store(&image, &[found(&image, vec![cosign(2)])])
            .unwrap();
        let held = cache.load(&image).unwrap();
        assert_eq!(held.len(), 2);
        assert!(held.iter().all(|a| a.signature != cosign(1)));
        // Nothing left: no file.
        cache
            .store(&image, &[found(&image, vec![]), found(&index, vec![])])
            .unwrap();
        assert!(!cache.path_for(&image).exists());
    }

    fn replaced_by_a_write(cache: &AttestationCache, image: &Digest) {
        let found = Found {
            signed_digest: image.clone(),
            found_in: "r".into(),
            verified: vec![cosign(3)],
        };
        cache.store(image, &[found]).unwrap();
        assert_eq!(cache.load(image).unwrap().len(), 1);
    }

    #[test]
    fn a_corrupt_entry_is_an_error_to_readers_and_replaced_by_writers() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AttestationCache::new(dir.path());
        let image = digest('a');
        let path = cache.path_for(&image);
        for junk in [
            b"{\"digest\":".to_vec(),
            format!(r#"{{"digest":"{}","attestations":[]}}"#, digest('c')).into_bytes(),
            format!(
                r#"{{"digest":"{image}","attestations":[{{"kind":"cosign","signed_digest":"{image}","found_in":"r","payload":"!!","signature":""}}]}}"#
            )
            .into_bytes(),
            vec![b' '; (MAX_ENTRY_BYTES + 1) as usize],
        ] {
            std::fs::write(&path, &junk).unwrap();
            assert!(cache.load(&image).is_err());
            // Whatever it is, the next write replaces it.
            replaced_by_a_write(&cache, &image);
        }
        std::fs::write(&path, b"garbage").unwrap();
        replaced_by_a_write(&cache, &image);
        // No stray temporary files.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
