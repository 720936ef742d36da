//! An index of a bundle's attestations by image digest, for programs that
//! decide once per process (the shim is a new process for every container,
//! the CLI for every command): with it they read the policy, the attestors
//! and only the occurrences for the image at hand, so a decision costs the
//! same whatever the number of attestations in the bundle.
//!
//! The index is bytes made from a loaded [`Bundle`] ([`Bundle::index`]);
//! whoever keeps it (the node's bundle store) decides where it lives and
//! binds it to the files it was made from with `stamp`, a value it checks
//! before use. The file:
//!
//! ```text
//! "attestgate-index 1\n"
//! u32 header length, header JSON {"digest", "stamp", "digests", "occurrences"}
//! table: one row per image digest, sorted: sha256(digest) (32 bytes), offset u64, length u32
//! entries: the occurrences for each digest, length-prefixed fields
//! ```
//! Integers are big-endian. Everything read is bounds-checked: a damaged
//! index is an error (the caller then loads the whole bundle), never a
//! panic or a wrong occurrence.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::bundle::Bundle;
use crate::error::BundleError;
use crate::model::{Occurrence, Signature};
use crate::reference::Digest;

const MAGIC: &[u8] = b"attestgate-index 1\n";
const ROW: usize = 32 + 8 + 4;
/// A header is four short fields; anything larger is not ours.
const MAX_HEADER: u32 = 64 << 10;
/// One image's occurrences; as a whole attestation file may be.
const MAX_ENTRY: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read the index: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an attestgate bundle index: {0}")]
    Format(&'static str),
    #[error("the index was made for other files (stamp {found}, expected {expected})")]
    Stale { found: String, expected: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    /// The digest of the bundle the index was made from.
    digest: String,
    /// The keeper's binding of the index to the bundle's files.
    stamp: String,
    digests: u64,
    occurrences: u64,
}

fn key(digest: &Digest) -> [u8; 32] {
    Sha256::digest(digest.as_str().as_bytes()).into()
}

impl Bundle {
    /// The index of this bundle's attestations, bound to `stamp`.
    pub fn index(&self, stamp: &str) -> Vec<u8> {
        let mut by_key: BTreeMap<[u8; 32], Vec<&Occurrence>> = BTreeMap::new();
        for occurrence in &self.occurrences {
            by_key
                .entry(key(&occurrence.resource_digest))
                .or_default()
                .push(occurrence);
        }
        let header = Header {
            digest: self.digest().to_string(),
            stamp: stamp.to_string(),
            digests: by_key.len() as u64,
            occurrences: self.occurrences.len() as u64,
        };
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut entries = Vec::new();
        let mut table = Vec::with_capacity(by_key.len() * ROW);
        for (key, occurrences) in &by_key {
            let start = entries.len() as u64;
            put_u32(&mut entries, occurrences.len() as u32);
            for occurrence in occurrences {
                encode(&mut entries, occurrence);
            }
            table.extend_from_slice(key);
            table.extend_from_slice(&start.to_be_bytes());
            table.extend_from_slice(&((entries.len() as u64 - start) as u32).to_be_bytes());
        }
        let mut out =
            Vec::with_capacity(MAGIC.len() + 4 + header.len() + table.len() + entries.len());
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, header.len() as u32);
        out.extend_from_slice(&header);
        out.extend_from_slice(&table);
        out.extend_from_slice(&entries);
        out
    }

    /// The bundle in `dir` for deciding the images `digests` only: the
    /// policy and attestors read and checked as [`Bundle::load`] does, the
    /// occurrences for those digests read from the index at `index`, which
    /// must carry `stamp`. The bundle's digest is the one the index
    /// recorded.
    pub fn load_indexed(
        dir: &Path,
        index: &Path,
        stamp: &str,
        digests: &[&Digest],
    ) -> Result<Bundle, IndexError> {
        let index = Index::open(index, stamp)?;
        let (policy, attestors, platform_policy) = Bundle::load_rules(dir)?;
        let mut occurrences = Vec::new();
        for digest in digests {
            occurrences.extend(index.occurrences(digest)?);
        }
        Ok(Bundle::assemble(
            policy,
            attestors,
            occurrences,
            Vec::new(),
            index.header.digest,
        )
        .with_platform_policy(platform_policy))
    }
}

struct Index {
    file: File,
    header: Header,
    table_at: u64,
    entries_at: u64,
}

impl Index {
    fn open(path: &Path, stamp: &str) -> Result<Index, IndexError> {
        let file = File::open(path)?;
        let mut magic = [0u8; MAGIC.len()];
        file.read_exact_at(&mut magic, 0)?;
        if magic != MAGIC {
            return Err(IndexError::Format("bad magic"));
        }
        let mut len = [0u8; 4];
        file.read_exact_at(&mut len, MAGIC.len() as u64)?;
        let len = u32::from_be_bytes(len);
        if len > MAX_HEADER {
            return Err(IndexError::Format("header too large"));
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact_at(&mut header, MAGIC.len() as u64 + 4)?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|_| IndexError::Format("bad header"))?;
        if header.stamp != stamp {
            return Err(IndexError::Stale {
                found: header.stamp,
                expected: stamp.to_string(),
            });
        }
        let table_at = MAGIC.len() as u64 + 4 + u64::from(len);
        let entries_at = header
            .digests
            .checked_mul(ROW as u64)
            .and_then(|t| t.checked_add(table_at))
            .ok_or(IndexError::Format("table too large"))?;
        if entries_at > file.metadata()?.len() {
            return Err(IndexError::Format("truncated table"));
        }
        Ok(Index {
            file,
            header,
            table_at,
            entries_at,
        })
    }

    fn row(&self, i: u64) -> Result<([u8; 32], u64, u32), IndexError> {
        let mut row = [0u8; ROW];
        self.file
            .read_exact_at(&mut row, self.table_at + i * ROW as u64)?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&row[..32]);
        let offset = u64::from_be_bytes(row[32..40].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(row[40..44].try_into().unwrap_or_default());
        Ok((key, offset, len))
    }

    /// The occurrences for `digest`: a binary search of the table, one read.
    fn occurrences(&self, digest: &Digest) -> Result<Vec<Occurrence>, IndexError> {
        let wanted = key(digest);
        let (mut low, mut high) = (0u64, self.header.digests);
        while low < high {
            let mid = low + (high - low) / 2;
            let (key, offset, len) = self.row(mid)?;
            match key.cmp(&wanted) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return self.entry(offset, len, digest),
            }
        }
        Ok(Vec::new())
    }

    fn entry(&self, offset: u64, len: u32, digest: &Digest) -> Result<Vec<Occurrence>, IndexError> {
        if len > MAX_ENTRY {
            return Err(IndexError::Format("entry too large"));
        }
        let mut bytes = vec![0u8; len as usize];
        let at = self
            .entries_at
            .checked_add(offset)
            .ok_or(IndexError::Format("entry out of range"))?;
        self.file.read_exact_at(&mut bytes, at)?;
        let mut reader = Reader(&bytes);
        let count = reader.u32()?;
        let mut notes = crate::parse::NoteInterner::default();
        let mut occurrences = Vec::new();
        for _ in 0..count {
            let occurrence = decode(&mut reader, &mut notes)?;
            // A row names its digest only by hash: the entry must agree.
            if occurrence.resource_digest != *digest {
                return Err(IndexError::Format("entry for another digest"));
            }
            occurrences.push(occurrence);
        }
        Ok(occurrences)
    }
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

fn put_option(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
    }
}

fn encode(out: &mut Vec<u8>, o: &Occurrence) {
    put_option(out, o.name.as_deref().map(str::as_bytes));
    put_bytes(out, o.note_name.as_bytes());
    put_bytes(out, o.resource_repository.as_bytes());
    put_bytes(out, o.resource_digest.as_str().as_bytes());
    put_option(out, o.serialized_payload.as_deref());
    put_u32(out, o.signatures.len() as u32);
    for signature in &o.signatures {
        let (kind, id, bytes) = match signature {
            Signature::Detached {
                public_key_id,
                signature,
            } => (0u8, public_key_id, signature),
            Signature::PgpAttached {
                public_key_id,
                message,
            } => (1u8, public_key_id, message),
        };
        out.push(kind);
        put_bytes(out, id.as_bytes());
        put_bytes(out, bytes);
    }
}

struct Reader<'b>(&'b [u8]);

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], IndexError> {
        if n > self.0.len() {
            return Err(IndexError::Format("entry cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, IndexError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, IndexError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn bytes(&mut self) -> Result<&'b [u8], IndexError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<&'b str, IndexError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| IndexError::Format("not UTF-8"))
    }

    fn option(&mut self) -> Result<Option<&'b [u8]>, IndexError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.bytes().map(Some),
            _ => Err(IndexError::Format("bad option tag")),
        }
    }
}

fn decode(
    r: &mut Reader<'_>,
    notes: &mut crate::parse::NoteInterner,
) -> Result<Occurrence, IndexError> {
    let name = r
        .option()?
        .map(|b| std::str::from_utf8(b).map(str::to_string))
        .transpose()
        .map_err(|_| IndexError::Format("not UTF-8"))?;
    let note_name: Arc<str> = notes.intern(r.string()?);
    let resource_repository = r.string()?.to_string();
    let resource_digest =
        Digest::parse(r.string()?).map_err(|_| IndexError::Format("bad digest"))?;
    let serialized_payload = r.option()?.map(<[u8]>::to_vec);
    let count = r.u32()?;
    let mut signatures = Vec::new();
    for _ in 0..count {
        let kind = r.u8()?;
        let public_key_id = r.string()?.to_string();
        let bytes = r.bytes()?.to_vec();
        signatures.push(match kind {
            0 => Signature::Detached {
                public_key_id,
                signature: bytes,
            },
            1 => Signature::PgpAttached {
                public_key_id,
                message: bytes,
            },
            _ => return Err(IndexError::Format("bad signature kind")),
        });
    }
    Ok(Occurrence {
        name,
        note_name,
        resource_repository,
        resource_digest,
        serialized_payload,
        signatures,
    })
}
