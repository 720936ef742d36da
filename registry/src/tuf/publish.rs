//! Publishing: `repo init`, `publish`, `timestamp` and `rotate-root`.
//!
//! Roles are signed with tough's `SignedRole` directly rather than its
//! repository editor: the editor names targets by file name only (no
//! `attestors/` directory) and cannot write whole-second `expires`.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};
use tough::TargetName;
use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::{
    Hashes, KeyHolder, Metafile, Role, RoleKeys, RoleType, Root, Signed, Snapshot, Target, Targets,
    Timestamp,
};

use super::error::TufError;
use super::fs::{read, read_optional, sync_dir, write_atomic, write_synced};
use super::keys::PemKey;
use super::paths::check_bundle_path;

/// tough's editor only accepts metadata of this specification version.
const SPEC_VERSION: &str = "1.0.0";

/// `repo init`: the keys of each role and how many of them must sign.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub root_keys: Vec<PemKey>,
    pub root_threshold: u64,
    pub targets_keys: Vec<PemKey>,
    pub targets_threshold: u64,
    pub snapshot_keys: Vec<PemKey>,
    pub timestamp_keys: Vec<PemKey>,
    /// How long the first root is valid.
    pub expires: Duration,
}

/// `repo publish`: signing keys (matched to roles by key id) and lifetimes.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub keys: Vec<PemKey>,
    /// Lifetime of targets and snapshot.
    pub expires: Duration,
    pub timestamp_expires: Duration,
}

/// What `publish` signed.
#[derive(Debug, Clone)]
pub struct PublishReport {
    pub targets_version: u64,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
    /// Bundle paths signed as targets, sorted.
    pub files: Vec<String>,
    /// Bundle entries that are not bundle file kinds, left out.
    pub skipped: Vec<String>,
    /// What `policy check` would print as skipped attestations.
    pub warnings: Vec<String>,
}

/// `repo rotate-root`. `keys` are the current root's keys; the `*_keys`
/// options replace that role's keys (and threshold) in the new root.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    pub keys: Vec<PemKey>,
    pub new_root_keys: Vec<PemKey>,
    /// Defaults to the current root threshold.
    pub root_threshold: Option<u64>,
    pub targets_keys: Option<Vec<PemKey>>,
    pub targets_threshold: Option<u64>,
    pub snapshot_keys: Option<Vec<PemKey>>,
    pub timestamp_keys: Option<Vec<PemKey>>,
    pub expires: Duration,
}

/// Writes `DIR/metadata/1.root.json`; refuses a directory that already has
/// a root. Returns the path written.
pub async fn init(dir: &Path, options: &InitOptions) -> Result<PathBuf, TufError> {
    let metadata = dir.join("metadata");
    if latest_root_version(&metadata)?.is_some() {
        return Err(TufError::Usage(format!(
            "{} already has a root; use `repo rotate-root` to change its keys",
            dir.display()
        )));
    }
    let mut root = Root {
        spec_version: SPEC_VERSION.to_owned(),
        consistent_snapshot: false,
        version: NonZeroU64::MIN,
        expires: expires_in(options.expires)?,
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::new(),
    };
    set_role(
        &mut root,
        RoleType::Root,
        &options.root_keys,
        options.root_threshold,
        "--root-threshold",
    )?;
    set_role(
        &mut root,
        RoleType::Targets,
        &options.targets_keys,
        options.targets_threshold,
        "--targets-threshold",
    )?;
    set_role(
        &mut root,
        RoleType::Snapshot,
        &options.snapshot_keys,
        1,
        "the snapshot threshold",
    )?;
    set_role(
        &mut root,
        RoleType::Timestamp,
        &options.timestamp_keys,
        1,
        "the timestamp threshold",
    )?;
    let signed = sign(root.clone(), &root, &options.root_keys).await?;
    let parsed: Signed<Root> = parse_json(signed.buffer(), "the new root")?;
    root.verify_role(&parsed)
        .map_err(|e| TufError::Signature(format!("the new root does not verify: {e}")))?;
    std::fs::create_dir_all(&metadata)
        .map_err(|e| TufError::io(format!("creating {}", metadata.display()), e))?;
    let path = metadata.join("1.root.json");
    write_atomic(&path, signed.buffer())?;
    tracing::info!(path = %path.display(), "wrote the first root");
    Ok(path)
}

/// Signs the bundle's files as the next version of targets, snapshot and
/// timestamp. The repository is built in a staging directory and renamed
/// into place, so a failure leaves the previous version whole.
pub async fn publish(
    dir: &Path,
    bundle: &Path,
    options: &PublishOptions,
) -> Result<PublishReport, TufError> {
    let metadata = dir.join("metadata");
    let (_, root) = latest_root(&metadata)?;
    for role in [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp] {
        check_signers(&root.signed, role, &options.keys)?;
    }
    let warnings = check_bundle(bundle)?;
    let (files, skipped) = bundle_files(bundle)?;
    if files.is_empty() {
        return Err(TufError::Bundle {
            path: bundle.to_owned(),
            why: "no bundle files".into(),
        });
    }

    let previous = |file: &str| -> Result<u64, TufError> {
        Ok(match read_optional(&metadata.join(file))? {
            Some(bytes) => parse_json::<Signed<serde_json::Value>>(&bytes, file)?
                .signed
                .get("version")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            None => 0,
        })
    };
    let targets_version = next_version(previous("targets.json")?)?;
    let snapshot_version = next_version(previous("snapshot.json")?)?;
    let timestamp_version = next_version(previous("timestamp.json")?)?;
    let expires = expires_in(options.expires)?;

    let mut targets = Targets::new(SPEC_VERSION.to_owned(), targets_version, expires);
    let mut contents = Vec::with_capacity(files.len());
    for (name, path) in &files {
        let bytes = read(path)?;
        let target_name = TargetName::new(name.as_str()).map_err(|e| TufError::BadPath {
            path: name.clone(),
            why: e.to_string(),
        })?;
        targets.targets.insert(
            target_name,
            Target {
                length: bytes.len() as u64,
                hashes: sha256_hashes(&bytes),
                custom: HashMap::new(),
                _extra: HashMap::new(),
            },
        );
        contents.push((name.clone(), bytes));
    }
    let signed_targets = sign(targets, &root.signed, &options.keys).await?;

    let mut snapshot = Snapshot::new(SPEC_VERSION.to_owned(), snapshot_version, expires);
    snapshot.meta.insert(
        "targets.json".to_owned(),
        metafile(signed_targets.buffer(), targets_version),
    );
    let signed_snapshot = sign(snapshot, &root.signed, &options.keys).await?;

    let signed_timestamp = sign(
        timestamp_over(
            signed_snapshot.buffer(),
            snapshot_version,
            timestamp_version,
            options.timestamp_expires,
        )?,
        &root.signed,
        &options.keys,
    )
    .await?;

    let staging = tempfile::Builder::new()
        .prefix(".publish-")
        .tempdir_in(dir)
        .map_err(|e| {
            TufError::io(
                format!("creating a staging directory in {}", dir.display()),
                e,
            )
        })?;
    let stage_metadata = staging.path().join("metadata");
    let stage_targets = staging.path().join("targets");
    for version in root_versions(&metadata)? {
        let file = format!("{version}.root.json");
        write_synced(&stage_metadata.join(&file), &read(&metadata.join(&file))?)?;
    }
    write_synced(
        &stage_metadata.join("targets.json"),
        signed_targets.buffer(),
    )?;
    write_synced(
        &stage_metadata.join("snapshot.json"),
        signed_snapshot.buffer(),
    )?;
    write_synced(
        &stage_metadata.join("timestamp.json"),
        signed_timestamp.buffer(),
    )?;
    std::fs::create_dir_all(&stage_targets)
        .map_err(|e| TufError::io(format!("creating {}", stage_targets.display()), e))?;
    for (name, bytes) in &contents {
        write_synced(&stage_targets.join(name), bytes)?;
    }
    for sub in ["attestors", "attestations"] {
        let d = stage_targets.join(sub);
        if d.exists() {
            sync_dir(&d)?;
        }
    }
    sync_dir(&stage_targets)?;
    sync_dir(&stage_metadata)?;

    swap_in(dir, staging.path())?;
    tracing::info!(dir = %dir.display(), targets_version, "published");
    Ok(PublishReport {
        targets_version: targets_version.get(),
        snapshot_version: snapshot_version.get(),
        timestamp_version: timestamp_version.get(),
        files: files.into_iter().map(|(name, _)| name).collect(),
        skipped,
        warnings,
    })
}

/// A new timestamp over the existing snapshot's bytes; returns its version.
pub async fn timestamp(dir: &Path, keys: &[PemKey], expires: Duration) -> Result<u64, TufError> {
    let metadata = dir.join("metadata");
    let (_, root) = latest_root(&metadata)?;
    check_signers(&root.signed, RoleType::Timestamp, keys)?;
    let snapshot_bytes = read(&metadata.join("snapshot.json"))?;
    let snapshot: Signed<Snapshot> = parse_json(&snapshot_bytes, "snapshot.json")?;
    let previous: Signed<Timestamp> =
        parse_json(&read(&metadata.join("timestamp.json"))?, "timestamp.json")?;
    let version = next_version(previous.signed.version.get())?;
    let signed = sign(
        timestamp_over(&snapshot_bytes, snapshot.signed.version, version, expires)?,
        &root.signed,
        keys,
    )
    .await?;
    write_atomic(&metadata.join("timestamp.json"), signed.buffer())?;
    tracing::info!(dir = %dir.display(), version = version.get(), "renewed the timestamp");
    Ok(version.get())
}

/// Writes root N+1, signed by thresholds of root N's keys and of its own;
/// both are verified before it is written. Returns the new version.
pub async fn rotate_root(dir: &Path, options: &RotateOptions) -> Result<u64, TufError> {
    let metadata = dir.join("metadata");
    let (version, old) = latest_root(&metadata)?;
    check_signers(&old.signed, RoleType::Root, &options.keys)?;
    let mut new_root = old.signed.clone();
    new_root.version = next_version(version)?;
    new_root.expires = expires_in(options.expires)?;
    let old_threshold = old
        .signed
        .roles
        .get(&RoleType::Root)
        .map_or(1, |r| r.threshold.get());
    set_role(
        &mut new_root,
        RoleType::Root,
        &options.new_root_keys,
        options.root_threshold.unwrap_or(old_threshold),
        "--root-threshold",
    )?;
    let replacements = [
        (
            RoleType::Targets,
            &options.targets_keys,
            options.targets_threshold,
        ),
        (RoleType::Snapshot, &options.snapshot_keys, None),
        (RoleType::Timestamp, &options.timestamp_keys, None),
    ];
    for (role, keys, threshold) in replacements {
        if let Some(keys) = keys {
            let threshold = threshold.unwrap_or(1);
            set_role(&mut new_root, role, keys, threshold, "the role's threshold")?;
        }
    }
    // Keys no role names any more are dropped, so the root says exactly who may sign.
    let named: BTreeSet<Decoded<Hex>> = new_root
        .roles
        .values()
        .flat_map(|r| r.keyids.iter().cloned())
        .collect();
    new_root.keys.retain(|id, _| named.contains(id));

    let by_old = sign(new_root.clone(), &old.signed, &options.keys).await?;
    let signed = sign(new_root.clone(), &new_root, &options.new_root_keys)
        .await?
        .add_old_signatures(by_old.signed().signatures.clone())
        .map_err(|e| TufError::Invalid(format!("combining the root signatures: {e}")))?;
    let parsed: Signed<Root> = parse_json(signed.buffer(), "the new root")?;
    old.signed.verify_role(&parsed).map_err(|e| {
        TufError::Signature(format!(
            "the new root is not signed by a threshold of root {version}'s keys: {e}"
        ))
    })?;
    new_root.verify_role(&parsed).map_err(|e| {
        TufError::Signature(format!(
            "the new root is not signed by a threshold of its own keys: {e}"
        ))
    })?;
    let path = metadata.join(format!("{}.root.json", new_root.version));
    write_atomic(&path, signed.buffer())?;
    tracing::info!(path = %path.display(), "wrote the next root");
    Ok(new_root.version.get())
}

fn check_bundle(bundle: &Path) -> Result<Vec<String>, TufError> {
    if bundle.join("policy.yml").exists() {
        return Err(TufError::Bundle {
            path: bundle.to_owned(),
            why: "policy.yml is not a file a bundle repository carries; rename it policy.yaml"
                .into(),
        });
    }
    // Exactly what `attestgate policy check` accepts.
    match attestgate_policy::Bundle::load(bundle) {
        Ok(loaded) => Ok(loaded.warnings().iter().map(ToString::to_string).collect()),
        Err(e) => Err(TufError::Bundle {
            path: bundle.to_owned(),
            why: e
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }),
    }
}

/// The bundle's files of the kinds a repository carries, by bundle path,
/// and the entries left out.
type BundleFiles = (Vec<(String, PathBuf)>, Vec<String>);

fn bundle_files(bundle: &Path) -> Result<BundleFiles, TufError> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for (name, path, is_dir) in entries(bundle)? {
        if is_dir && (name == "attestors" || name == "attestations") {
            for (inner, inner_path, inner_is_dir) in entries(&path)? {
                let bundle_path = format!("{name}/{inner}");
                if !inner_is_dir && check_bundle_path(&bundle_path).is_ok() {
                    files.push((bundle_path, inner_path));
                } else {
                    skipped.push(bundle_path);
                }
            }
        } else if !is_dir && check_bundle_path(&name).is_ok() {
            files.push((name, path));
        } else {
            skipped.push(if is_dir { format!("{name}/") } else { name });
        }
    }
    files.sort();
    skipped.sort();
    Ok((files, skipped))
}

fn entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, TufError> {
    let what = || format!("reading directory {}", dir.display());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| TufError::io(what(), e))? {
        let entry = entry.map_err(|e| TufError::io(what(), e))?;
        let path = entry.path();
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            path.clone(),
            path.is_dir(),
        ));
    }
    Ok(out)
}

/// Moves the staged `metadata/` and `targets/` over the repository's,
/// putting the old ones back if the second rename fails.
fn swap_in(dir: &Path, staging: &Path) -> Result<(), TufError> {
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| {
            TufError::io(
                format!("renaming {} to {}", from.display(), to.display()),
                e,
            )
        })
    };
    let live_targets = dir.join("targets");
    let live_metadata = dir.join("metadata");
    let old_targets = staging.join("old-targets");
    let old_metadata = staging.join("old-metadata");
    let had_targets = live_targets.exists();
    if had_targets {
        rename(&live_targets, &old_targets)?;
    }
    if let Err(e) = rename(&staging.join("targets"), &live_targets) {
        if had_targets {
            let _ = std::fs::rename(&old_targets, &live_targets);
        }
        return Err(e);
    }
    let restore_targets = || {
        let _ = std::fs::rename(&live_targets, staging.join("targets"));
        if had_targets {
            let _ = std::fs::rename(&old_targets, &live_targets);
        }
    };
    if let Err(e) = rename(&live_metadata, &old_metadata) {
        restore_targets();
        return Err(e);
    }
    if let Err(e) = rename(&staging.join("metadata"), &live_metadata) {
        let _ = std::fs::rename(&old_metadata, &live_metadata);
        restore_targets();
        return Err(e);
    }
    sync_dir(dir)
}

/// Whole seconds: python-tuf refuses fractional seconds in `expires`.
fn expires_in(lifetime: Duration) -> Result<jiff::Timestamp, TufError> {
    let now = jiff::Timestamp::now().as_second();
    let seconds = i64::try_from(lifetime.as_secs())
        .ok()
        .and_then(|s| now.checked_add(s))
        .ok_or_else(|| TufError::Usage(format!("lifetime {lifetime:?} is too long")))?;
    jiff::Timestamp::from_second(seconds)
        .map_err(|e| TufError::Usage(format!("lifetime {lifetime:?}: {e}")))
}

fn next_version(previous: u64) -> Result<NonZeroU64, TufError> {
    previous
        .checked_add(1)
        .and_then(NonZeroU64::new)
        .ok_or_else(|| TufError::Invalid(format!("version {previous} cannot be incremented")))
}

fn sha256_hashes(bytes: &[u8]) -> Hashes {
    Hashes {
        sha256: Decoded::from(Sha256::digest(bytes).to_vec()),
        _extra: HashMap::new(),
    }
}

fn metafile(bytes: &[u8], version: NonZeroU64) -> Metafile {
    Metafile {
        length: Some(bytes.len() as u64),
        hashes: Some(sha256_hashes(bytes)),
        version,
        _extra: HashMap::new(),
    }
}

fn timestamp_over(
    snapshot_bytes: &[u8],
    snapshot_version: NonZeroU64,
    version: NonZeroU64,
    lifetime: Duration,
) -> Result<Timestamp, TufError> {
    let mut timestamp = Timestamp::new(SPEC_VERSION.to_owned(), version, expires_in(lifetime)?);
    timestamp.meta.insert(
        "snapshot.json".to_owned(),
        metafile(snapshot_bytes, snapshot_version),
    );
    Ok(timestamp)
}

/// Names `keys` (deduplicated by key id) as the role's keys in `root`.
fn set_role(
    root: &mut Root,
    role: RoleType,
    keys: &[PemKey],
    threshold: u64,
    threshold_flag: &str,
) -> Result<(), TufError> {
    let mut ids: Vec<Decoded<Hex>> = Vec::new();
    for key in keys {
        let id = key.decoded_key_id()?;
        if !ids.contains(&id) {
            root.keys.insert(id.clone(), key.tuf_key()?);
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(TufError::Usage(format!(
            "the {role} role needs at least one key"
        )));
    }
    let threshold = NonZeroU64::new(threshold)
        .ok_or_else(|| TufError::Usage(format!("{threshold_flag} must be at least 1")))?;
    if threshold.get() > ids.len() as u64 {
        return Err(TufError::Usage(format!(
            "{threshold_flag} {threshold} is more than the {} distinct key(s) given for the {role} role",
            ids.len()
        )));
    }
    root.roles.insert(
        role,
        RoleKeys {
            keyids: ids,
            threshold,
            _extra: HashMap::new(),
        },
    );
    Ok(())
}

/// Refuses before signing when `keys` hold fewer of the role's keys than
/// its threshold, naming the role and how many are needed.
fn check_signers(root: &Root, role: RoleType, keys: &[PemKey]) -> Result<(), TufError> {
    let role_keys = root
        .roles
        .get(&role)
        .ok_or_else(|| TufError::Invalid(format!("the root names no keys for the {role} role")))?;
    let mut matching: Vec<&str> = keys
        .iter()
        .map(PemKey::key_id)
        .filter(|id| {
            role_keys
                .keyids
                .iter()
                .any(|k| hex::encode(k.as_ref() as &[u8]) == *id)
        })
        .collect();
    matching.sort_unstable();
    matching.dedup();
    let needed = role_keys.threshold.get();
    if (matching.len() as u64) < needed {
        return Err(TufError::Usage(format!(
            "the {role} role needs {needed} signature(s) but --key gives {} of its keys (the root names {} key(s) for it)",
            matching.len(),
            role_keys.keyids.len()
        )));
    }
    Ok(())
}

async fn sign<T: Role + serde::Serialize>(
    role: T,
    root: &Root,
    keys: &[PemKey],
) -> Result<SignedRole<T>, TufError> {
    let sources: Vec<Box<dyn KeySource>> = keys
        .iter()
        .cloned()
        .map(|k| Box::new(k) as Box<dyn KeySource>)
        .collect();
    let rng = SystemRandom::new();
    SignedRole::new(role, &KeyHolder::Root(root.clone()), &sources, &rng)
        .await
        .map_err(|e| TufError::Signature(format!("signing {}: {e}", T::TYPE)))
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, TufError> {
    serde_json::from_slice(bytes).map_err(|e| TufError::Invalid(format!("{what}: {e}")))
}

/// The versions N of `metadata/N.root.json`, sorted.
fn root_versions(metadata: &Path) -> Result<Vec<u64>, TufError> {
    let entries = match std::fs::read_dir(metadata) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TufError::io(format!("reading {}", metadata.display()), e)),
    };
    let mut versions: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".root.json")?
                .parse()
                .ok()
        })
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

fn latest_root_version(metadata: &Path) -> Result<Option<u64>, TufError> {
    Ok(root_versions(metadata)?.last().copied())
}

fn latest_root(metadata: &Path) -> Result<(u64, Signed<Root>), TufError> {
    let version = latest_root_version(metadata)?.ok_or_else(|| {
        TufError::Usage(format!(
            "{} has no N.root.json; run `repo init` first",
            metadata.display()
        ))
    })?;
    let file = format!("{version}.root.json");
    let root: Signed<Root> = parse_json(&read(&metadata.join(&file))?, &file)?;
    Ok((version, root))
}
