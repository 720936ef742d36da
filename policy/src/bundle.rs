//! A bundle directory on local disk, loaded into an immutable value:
//!
//! ```text
//! BUNDLE/
//!   policy.yaml | policy.json
//!   attestors/     *.yaml | *.yml | *.json
//!   attestations/  *.json
//!   platform-policy.yaml | .yml | .json   (optional, SPEC §12)
//! ```
//!
//! Attestations are indexed by digest so a decision never scans the bundle,
//! and verified (attestor, digest) verdicts are cached so a repeated decision
//! does no cryptography. A bad policy or attestor makes the bundle invalid; a
//! bad occurrence is reported and skipped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest as _, Sha256};

use crate::decision::AttestorVerdict;
use crate::error::{BundleError, FieldError};
use crate::model::{Attestor, Occurrence, Policy};
use crate::node::{MAX_DOCUMENT_BYTES, Node, Path as FieldPath};
use crate::parse::{NoteInterner, attestor_from_node, occurrence_from_node, policy_from_node};
use crate::platform::model::PlatformPolicy;
use crate::platform::parse::platform_policy_from_node;
use crate::reference::Digest;

/// Verdict cache bound: requests name a few hundred images on a node; the
/// bound keeps a flood of distinct digests from growing memory without limit.
const CACHE_CAPACITY: usize = 16_384;

#[derive(Debug)]
pub struct Bundle {
    pub(crate) policy: Policy,
    pub(crate) attestors: HashMap<String, Attestor>,
    pub(crate) occurrences: Vec<Occurrence>,
    platform_policy: Option<PlatformPolicy>,
    by_digest: HashMap<Digest, Vec<u32>>,
    digest: String,
    warnings: Vec<FieldError>,
    cache: RwLock<HashMap<CacheKey, AttestorVerdict>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub attestor: String,
    pub digest: Digest,
    /// Only set in strict-repository mode, where the repository matters.
    pub repository: Option<String>,
    /// For a verdict from registry signatures: which ones.
    pub evidence: Option<[u8; 32]>,
}

impl Bundle {
    /// Loads a bundle directory. Errors list every problem that makes the
    /// bundle invalid; skipped occurrences are in [`Bundle::warnings`].
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let mut hasher = Sha256::new();
        let Rules {
            policy,
            attestors,
            platform_policy,
            errors,
        } = read_rules(dir, &mut hasher);

        let mut warnings = Vec::new();
        let mut occurrences = Vec::new();
        let mut notes = NoteInterner::default();
        for path in list_files(&dir.join("attestations"), &["json"], &mut warnings) {
            let mut sink = |result: Result<Occurrence, FieldError>| match result {
                Ok(o) => occurrences.push(o),
                Err(e) => warnings.push(e.in_file(&path)),
            };
            if let Err(e) = stream_occurrences(&path, &mut hasher, &mut notes, &mut sink) {
                warnings.push(e.in_file(&path));
            }
        }

        let policy = match policy {
            Some(p) if errors.is_empty() => p,
            _ => return Err(BundleError { errors }),
        };
        Ok(Bundle::assemble(
            policy,
            attestors,
            occurrences,
            warnings,
            format!("sha256:{}", hex::encode(hasher.finalize())),
        )
        .with_platform_policy(platform_policy))
    }

    /// The policy, attestors and platform policy of `dir` alone, checked
    /// as [`Bundle::load`] checks them.
    pub(crate) fn load_rules(dir: &Path) -> Result<LoadedRules, BundleError> {
        let Rules {
            policy,
            attestors,
            platform_policy,
            errors,
        } = read_rules(dir, &mut Sha256::new());
        match policy {
            Some(policy) if errors.is_empty() => Ok((policy, attestors, platform_policy)),
            _ => Err(BundleError { errors }),
        }
    }

    /// The same bundle with `platform_policy` in force beside its policy
    /// (or none).
    pub fn with_platform_policy(mut self, platform_policy: Option<PlatformPolicy>) -> Bundle {
        self.platform_policy = platform_policy;
        self
    }

    /// The bundle's platform policy (`platform-policy.yaml`, `.yml` or
    /// `.json`), if it has one.
    pub fn platform_policy(&self) -> Option<&PlatformPolicy> {
        self.platform_policy.as_ref()
    }

    /// Builds a bundle from values already parsed (tests, benchmarks, the CLI
    /// checking single files).
    pub fn from_parts(
        policy: Policy,
        attestors: Vec<Attestor>,
        occurrences: Vec<Occurrence>,
    ) -> Result<Bundle, BundleError> {
        let mut errors = Vec::new();
        let mut by_name = HashMap::new();
        for a in attestors {
            by_name.insert(a.name.clone(), a);
        }
        for (field, rule) in policy.rules() {
            for name in &rule.require_attestations_by {
                if !by_name.contains_key(name) {
                    errors.push(FieldError::new(
                        format!("{field}.requireAttestationsBy"),
                        None,
                        format!("attestor {name:?} is not in the bundle"),
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(BundleError { errors });
        }
        Ok(Bundle::assemble(
            policy,
            by_name,
            occurrences,
            Vec::new(),
            "sha256:unhashed".to_string(),
        ))
    }

    pub(crate) fn assemble(
        policy: Policy,
        attestors: HashMap<String, Attestor>,
        occurrences: Vec<Occurrence>,
        warnings: Vec<FieldError>,
        digest: String,
    ) -> Bundle {
        let mut by_digest: HashMap<Digest, Vec<u32>> = HashMap::with_capacity(occurrences.len());
        for (i, o) in occurrences.iter().enumerate() {
            // More than u32::MAX occurrences cannot be read into memory anyway.
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            by_digest
                .entry(o.resource_digest.clone())
                .or_default()
                .push(index);
        }
        Bundle {
            policy,
            attestors,
            occurrences,
            platform_policy: None,
            by_digest,
            digest,
            warnings,
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn attestor(&self, name: &str) -> Option<&Attestor> {
        self.attestors.get(name)
    }

    pub fn attestors(&self) -> impl Iterator<Item = &Attestor> {
        self.attestors.values()
    }

    pub fn occurrence_count(&self) -> usize {
        self.occurrences.len()
    }

    /// sha256 over every file the bundle was read from, in read order.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Occurrences and files that were skipped, with why.
    pub fn warnings(&self) -> &[FieldError] {
        &self.warnings
    }

    pub(crate) fn occurrences_for(&self, digest: &Digest) -> impl Iterator<Item = &Occurrence> {
        self.by_digest
            .get(digest)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.occurrences.get(i as usize))
    }

    /// Forgets every cached verdict, so the next decisions verify afresh
    /// (benchmarks of cold decisions; the verdicts themselves never go stale
    /// because a bundle never changes).
    pub fn clear_verification_cache(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }

    pub(crate) fn cached(&self, key: &CacheKey) -> Option<AttestorVerdict> {
        self.cache.read().ok()?.get(key).cloned()
    }

    pub(crate) fn remember(&self, key: CacheKey, verdict: AttestorVerdict) {
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(key, verdict);
        }
    }
}

/// What [`Bundle::load_rules`] gives: the policy, the attestors by name and
/// the platform policy.
pub(crate) type LoadedRules = (Policy, HashMap<String, Attestor>, Option<PlatformPolicy>);

/// The policy, the attestors (checked against each other) and the platform
/// policy of a bundle directory, and every error that makes the bundle
/// invalid.
struct Rules {
    policy: Option<Policy>,
    attestors: HashMap<String, Attestor>,
    platform_policy: Option<PlatformPolicy>,
    errors: Vec<FieldError>,
}

/// Reads the rules of `dir`, hashing their files into `hasher`.
fn read_rules(dir: &Path, hasher: &mut Sha256) -> Rules {
    let mut errors = Vec::new();

    let policy = match find_policy_file(dir) {
        Ok(path) => read_document(&path, hasher).and_then(|(text, _)| {
            Node::parse(&text)
                .and_then(|n| policy_from_node(&n))
                .map_err(|e| e.in_file(&path))
        }),
        Err(e) => Err(e),
    };
    let policy = match policy {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(e);
            None
        }
    };

    // Hashed after the policy, before the attestors, in both loaders alike.
    let platform_policy = match find_platform_policy_file(dir) {
        Ok(None) => None,
        Ok(Some(path)) => match read_document(&path, hasher).and_then(|(text, _)| {
            Node::parse(&text)
                .and_then(|n| platform_policy_from_node(&n))
                .map_err(|e| e.in_file(&path))
        }) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        Err(e) => {
            errors.push(e);
            None
        }
    };

    let mut attestors: HashMap<String, Attestor> = HashMap::new();
    let mut attestor_files: HashMap<String, PathBuf> = HashMap::new();
    for path in list_files(
        &dir.join("attestors"),
        &["yaml", "yml", "json"],
        &mut errors,
    ) {
        let parsed = read_document(&path, hasher).and_then(|(text, _)| {
            let root = Node::parse(&text)?;
            let items = attestor_items(&root)?;
            items
                .into_iter()
                .map(|(p, n)| attestor_from_node(n, p))
                .collect::<Result<Vec<_>, _>>()
        });
        match parsed {
            Ok(list) => {
                for attestor in list {
                    if let Some(previous) = attestor_files.get(&attestor.name) {
                        errors.push(
                            FieldError::new(
                                "name",
                                None,
                                format!(
                                    "attestor {:?} is also defined in {}",
                                    attestor.name,
                                    previous.display()
                                ),
                            )
                            .in_file(&path),
                        );
                        continue;
                    }
                    attestor_files.insert(attestor.name.clone(), path.clone());
                    attestors.insert(attestor.name.clone(), attestor);
                }
            }
            Err(e) => errors.push(e.in_file(&path)),
        }
    }

    if let Some(policy) = &policy {
        for (field, rule) in policy.rules() {
            for (i, name) in rule.require_attestations_by.iter().enumerate() {
                if !attestors.contains_key(name) {
                    let file = find_policy_file(dir).unwrap_or_else(|_| dir.join("policy.yaml"));
                    errors.push(
                        FieldError::new(
                            format!("{field}.requireAttestationsBy[{i}]"),
                            None,
                            format!("attestor {name:?} is not in the bundle's attestors/"),
                        )
                        .in_file(&file),
                    );
                }
            }
        }
    }

    Rules {
        policy,
        attestors,
        platform_policy,
        errors,
    }
}

/// The platform policy file, when the bundle has one (it is optional).
fn find_platform_policy_file(dir: &Path) -> Result<Option<PathBuf>, FieldError> {
    let mut present = Vec::new();
    for name in crate::platform::model::FILE_NAMES {
        let path = dir.join(name);
        if is_present(&path)? {
            present.push(path);
        }
    }
    match present.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(FieldError::new(
            "",
            None,
            format!(
                "more than one platform policy file ({}): only one may apply",
                present
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .in_file(dir)),
    }
}

fn find_policy_file(dir: &Path) -> Result<PathBuf, FieldError> {
    let yaml = dir.join("policy.yaml");
    let yml = dir.join("policy.yml");
    let json = dir.join("policy.json");
    let mut present = Vec::new();
    for path in [yaml, yml, json] {
        if is_present(&path)? {
            present.push(path);
        }
    }
    match present.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(
            FieldError::new("", None, "no policy.yaml or policy.json in the bundle").in_file(dir),
        ),
        _ => Err(FieldError::new(
            "",
            None,
            "more than one of policy.yaml, policy.yml and policy.json",
        )
        .in_file(dir)),
    }
}

/// Whether the bundle has the file `path`: only "no such entry" is
/// absence. Anything else (a dangling symlink, a directory, an entry that
/// cannot be read) is an error naming the file, because taking it for
/// absent would silently drop a policy the operator meant to apply.
fn is_present(path: &Path) -> Result<bool, FieldError> {
    let error = |why: String| FieldError::new("", None, why).in_file(path);
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(error(format!("cannot read: {e}"))),
    }
    // Follows a symlink (ConfigMap mounts are symlinks into `..data`).
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(true),
        Ok(_) => Err(error("not a regular file".to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(error(
            "dangling symlink: its target does not exist".to_string(),
        )),
        Err(e) => Err(error(format!("cannot read: {e}"))),
    }
}

/// Files with one of `extensions`, sorted; hidden entries (Kubernetes
/// ConfigMap mounts keep `..data` and timestamped copies) are skipped. A
/// missing directory is an empty one.
fn list_files(dir: &Path, extensions: &[&str], errors: &mut Vec<FieldError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(
                FieldError::new("", None, format!("cannot read directory: {e}")).in_file(dir),
            );
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| extensions.contains(&x))
                && p.is_file()
        })
        .collect();
    files.sort();
    files
}

fn read_document(path: &Path, hasher: &mut Sha256) -> Result<(String, u64), FieldError> {
    let io_error =
        |e: std::io::Error| FieldError::new("", None, format!("cannot read: {e}")).in_file(path);
    let file = File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(
            FieldError::new("", None, format!("larger than {MAX_DOCUMENT_BYTES} bytes"))
                .in_file(path),
        );
    }
    hash_file(hasher, path, &bytes);
    let len = bytes.len() as u64;
    let text = String::from_utf8(bytes)
        .map_err(|_| FieldError::new("", None, "not UTF-8 text").in_file(path))?;
    Ok((text, len))
}

fn hash_file(hasher: &mut Sha256, path: &Path, bytes: &[u8]) {
    hash_name(hasher, path);
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// Names count in the digest too: moving content between files changes it.
fn hash_name(hasher: &mut Sha256, path: &Path) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    hasher.update((name.len() as u64).to_be_bytes());
    hasher.update(name.as_bytes());
}

fn attestor_items(root: &Node) -> Result<Vec<(FieldPath, &Node)>, FieldError> {
    use crate::node::{Kind, Obj, list_items};
    match &root.kind {
        Kind::Seq(_) => list_items(root, &FieldPath::root()),
        Kind::Map(entries) if entries.iter().any(|(k, _)| k == "attestors") => {
            Obj::new(root, FieldPath::root())?.list("attestors")
        }
        _ => Ok(vec![(FieldPath::root(), root)]),
    }
}

/// Hashes what passes through, so streamed files count in the bundle digest.
struct HashingReader<'h, R> {
    inner: R,
    hasher: &'h mut Sha256,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

type Sink<'s> = dyn FnMut(Result<Occurrence, FieldError>) + 's;

/// Reads an attestation file element by element, so a file of 100,000
/// occurrences never sits in memory as one document.
fn stream_occurrences(
    path: &Path,
    hasher: &mut Sha256,
    notes: &mut NoteInterner,
    sink: &mut Sink<'_>,
) -> Result<(), FieldError> {
    let file =
        File::open(path).map_err(|e| FieldError::new("", None, format!("cannot read: {e}")))?;
    hash_name(hasher, path);
    // Hash below the buffer, so the hasher sees large chunks; but no larger
    // than the file, as the buffer is zeroed before its first fill, and a
    // bundle of small files is read by every container start in the shim.
    let size = file.metadata().map_or(1 << 20, |m| m.len());
    let capacity = usize::try_from(size.clamp(8 << 10, 1 << 20)).unwrap_or(1 << 20);
    let reader = BufReader::with_capacity(
        capacity,
        HashingReader {
            inner: file,
            hasher,
        },
    );
    read_occurrences(reader, notes, sink)
}

/// Reads attestation occurrences from any JSON source (one occurrence, an
/// array, or `{"occurrences": [...]}`): the good ones and one error per bad
/// one. The error is for a document that could not be read to its end;
/// what was read before it is still returned.
pub fn parse_occurrence_stream<R: Read>(reader: R) -> (Vec<Occurrence>, Vec<FieldError>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut notes = NoteInterner::default();
    let mut sink = |r: Result<Occurrence, FieldError>| match r {
        Ok(o) => good.push(o),
        Err(e) => bad.push(e),
    };
    if let Err(e) = read_occurrences(BufReader::new(reader), &mut notes, &mut sink) {
        bad.push(e);
    }
    (good, bad)
}

fn read_occurrences<R: BufRead>(
    mut reader: R,
    notes: &mut NoteInterner,
    sink: &mut Sink<'_>,
) -> Result<(), FieldError> {
    let io_error = |e: std::io::Error| FieldError::new("", None, format!("cannot read: {e}"));
    let mut line = 1u64;
    let first = loop {
        let buf = reader.fill_buf().map_err(io_error)?;
        if buf.is_empty() {
            break None;
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                line += count_newlines(&buf[..i]);
                let first = buf[i];
                reader.consume(i);
                break Some(first);
            }
            None => {
                let n = buf.len();
                line += count_newlines(buf);
                reader.consume(n);
            }
        }
    };
    match first {
        None => Ok(()),
        // `gcloud ... --format=json` writes an array: split it into elements
        // and parse each from a slice, much faster than serde_json's
        // byte-at-a-time reader, and a syntax error stays in its element.
        Some(b'[') => split_array(&mut reader, line, notes, sink),
        Some(_) => {
            let mut de = serde_json::Deserializer::from_reader(reader);
            let result = (&mut de).deserialize_any(TopVisitor { notes, sink });
            result.and_then(|()| de.end()).map_err(|e| {
                let location = (e.line() > 0).then(|| crate::error::Location {
                    line: e.line() as u64 + line - 1,
                    column: e.column() as u64,
                });
                FieldError::new("", location, format!("invalid JSON: {e}"))
            })
        }
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Splits a top-level JSON array into its elements without parsing them.
struct ArraySplitter {
    element: Vec<u8>,
    element_line: u64,
    oversized: bool,
    depth: u32,
    in_string: bool,
    escaped: bool,
    index: usize,
}

impl ArraySplitter {
    fn push(&mut self, byte: u8, line: u64) {
        if self.element.is_empty() {
            self.element_line = line;
        }
        if self.element.len() < MAX_DOCUMENT_BYTES {
            self.element.push(byte);
        } else {
            self.oversized = true;
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.element.len() + bytes.len() <= MAX_DOCUMENT_BYTES {
            self.element.extend_from_slice(bytes);
        } else {
            self.oversized = true;
        }
    }

    fn finish(&mut self, notes: &mut NoteInterner, sink: &mut Sink<'_>) {
        let path = FieldPath::starting(format!("[{}]", self.index));
        let at = |line: u64, column: u64| Some(crate::error::Location { line, column });
        let result = if self.oversized {
            Err(path.error(
                None,
                format!("occurrence larger than {MAX_DOCUMENT_BYTES} bytes"),
            ))
        } else {
            match serde_json::from_slice::<Node>(&self.element) {
                Ok(node) => occurrence_from_node(&node, path, notes),
                Err(e) => Err(FieldError::new(
                    path.to_string(),
                    at(
                        self.element_line + e.line().saturating_sub(1) as u64,
                        e.column() as u64,
                    ),
                    format!("invalid JSON: {e}"),
                )),
            }
        };
        let result = result.map_err(|mut e| {
            if e.location.is_none() {
                e.location = at(self.element_line, 1);
            }
            e
        });
        sink(result);
        self.element.clear();
        self.oversized = false;
        self.index += 1;
    }
}

fn split_array<R: BufRead>(
    reader: &mut R,
    mut line: u64,
    notes: &mut NoteInterner,
    sink: &mut Sink<'_>,
) -> Result<(), FieldError> {
    let io_error = |e: std::io::Error| FieldError::new("", None, format!("cannot read: {e}"));
    let mut s = ArraySplitter {
        element: Vec::with_capacity(4096),
        element_line: line,
        oversized: false,
        depth: 0,
        in_string: false,
        escaped: false,
        index: 0,
    };
    // The '[' is still in the reader.
    reader.consume(1);
    let mut closed = false;
    let mut expecting_element = false;
    loop {
        let buf = reader.fill_buf().map_err(io_error)?;
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        let mut i = 0;
        while i < len {
            let b = buf[i];
            i += 1;
            if closed {
                if !b.is_ascii_whitespace() {
                    return Err(FieldError::new(
                        "",
                        Some(crate::error::Location { line, column: 1 }),
                        "invalid JSON: trailing characters after the array",
                    ));
                }
                if b == b'\n' {
                    line += 1;
                }
                continue;
            }
            if b == b'\n' {
                line += 1;
            }
            if s.in_string {
                s.push(b, line);
                if s.escaped {
                    s.escaped = false;
                } else if b == b'\\' {
                    s.escaped = true;
                } else if b == b'"' {
                    s.in_string = false;
                } else {
                    // Most of an attestation file is base64 inside strings:
                    // copy up to the next quote or backslash in one go.
                    let rest = &buf[i..];
                    let run = rest
                        .iter()
                        .position(|&c| c == b'"' || c == b'\\' || c == b'\n')
                        .unwrap_or(rest.len());
                    s.extend(&rest[..run]);
                    i += run;
                }
                continue;
            }
            match b {
                b'"' => {
                    s.in_string = true;
                    s.push(b, line);
                }
                b'{' | b'[' => {
                    s.depth += 1;
                    s.push(b, line);
                }
                b'}' | b']' if s.depth > 0 => {
                    s.depth -= 1;
                    s.push(b, line);
                }
                b']' => {
                    if !s.element.is_empty() {
                        s.finish(notes, sink);
                    } else if expecting_element {
                        return Err(FieldError::new(
                            "",
                            Some(crate::error::Location { line, column: 1 }),
                            "invalid JSON: trailing comma in array",
                        ));
                    }
                    closed = true;
                }
                b',' if s.depth == 0 => {
                    if s.element.is_empty() {
                        return Err(FieldError::new(
                            "",
                            Some(crate::error::Location { line, column: 1 }),
                            "invalid JSON: empty array element",
                        ));
                    }
                    s.finish(notes, sink);
                    expecting_element = true;
                }
                b if b.is_ascii_whitespace() && s.element.is_empty() => {}
                b => s.push(b, line),
            }
        }
        reader.consume(len);
    }
    if closed {
        Ok(())
    } else {
        Err(FieldError::new(
            "",
            Some(crate::error::Location { line, column: 1 }),
            "invalid JSON: the array is not closed (file truncated?)",
        ))
    }
}

struct TopVisitor<'a, 's> {
    notes: &'a mut NoteInterner,
    sink: &'a mut Sink<'s>,
}

impl<'de> Visitor<'de> for TopVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an occurrence, a list of occurrences or {\"occurrences\": [...]}")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        ElementsVisitor {
            notes: self.notes,
            sink: self.sink,
            prefix: String::new(),
        }
        .visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut fields: Vec<(String, Node)> = Vec::new();
        let mut listed = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "occurrences" {
                listed = true;
                map.next_value_seed(ElementsVisitor {
                    notes: self.notes,
                    sink: self.sink,
                    prefix: "occurrences".to_string(),
                })?;
            } else {
                let value: Node = map.next_value()?;
                fields.push((key, value));
            }
        }
        if !listed {
            let node = Node {
                kind: crate::node::Kind::Map(fields),
                location: None,
            };
            (self.sink)(occurrence_from_node(&node, FieldPath::root(), self.notes));
        }
        Ok(())
    }
}

struct ElementsVisitor<'a, 's> {
    notes: &'a mut NoteInterner,
    sink: &'a mut Sink<'s>,
    prefix: String,
}

impl<'de> DeserializeSeed<'de> for ElementsVisitor<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementsVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of occurrences")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        while let Some(node) = seq.next_element::<Node>()? {
            let path = FieldPath::starting(format!("{}[{index}]", self.prefix));
            (self.sink)(occurrence_from_node(&node, path, self.notes));
            index += 1;
        }
        Ok(())
    }
}
