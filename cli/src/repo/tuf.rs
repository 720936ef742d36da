//! `repo init`, `publish`, `timestamp`, `rotate-root` and `verify`: thin
//! flags over attestgate-registry's TUF module.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use attestgate_node::config::Span;
use attestgate_registry::oci::Traffic;
use attestgate_registry::source::{self, Failure, Polled, Scratch, Source};
use attestgate_registry::tuf::{self, PemKey, Trust};
use clap::Args;
use sha2::{Digest as _, Sha256};

use crate::Outcome;

#[derive(Args)]
pub struct InitArgs {
    /// The repository directory; DIR/metadata/1.root.json is written.
    pub dir: PathBuf,
    /// A root key (PEM private key); repeat for several.
    #[arg(long = "root-key", required = true)]
    pub root_keys: Vec<PathBuf>,
    /// Root signatures a root needs, of the root keys.
    #[arg(long, default_value_t = 1)]
    pub root_threshold: u64,
    /// A targets key; repeat for several.
    #[arg(long = "targets-key", required = true)]
    pub targets_keys: Vec<PathBuf>,
    /// Targets signatures a bundle version needs.
    #[arg(long, default_value_t = 1)]
    pub targets_threshold: u64,
    /// The snapshot key (PEM private key).
    #[arg(long)]
    pub snapshot_key: PathBuf,
    /// The timestamp key (PEM private key); online, for renewals.
    #[arg(long)]
    pub timestamp_key: PathBuf,
    /// How long the root is valid.
    #[arg(long, default_value = "365d")]
    pub expires: Span,
}

#[derive(Args)]
pub struct PublishArgs {
    /// The repository directory `repo init` made.
    pub dir: PathBuf,
    /// The bundle directory whose files become the next version.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Signing keys (targets, snapshot, timestamp), matched to roles by key id.
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    /// Lifetime of targets and snapshot.
    #[arg(long, default_value = "30d")]
    pub expires: Span,
    /// Lifetime of the timestamp: how soon nodes notice a source frozen
    /// at this version (renew it with `repo timestamp`).
    #[arg(long, default_value = "7d")]
    pub timestamp_expires: Span,
}

#[derive(Args)]
pub struct TimestampArgs {
    /// The repository directory.
    pub dir: PathBuf,
    /// The timestamp key(s).
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    /// Lifetime of the new timestamp.
    #[arg(long, default_value = "1d")]
    pub expires: Span,
}

#[derive(Args)]
pub struct RotateRootArgs {
    /// The repository directory; DIR/metadata/N+1.root.json is written.
    pub dir: PathBuf,
    /// Keys of the current root (a threshold of them must sign).
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    /// Keys of the new root; repeat for several.
    #[arg(long = "new-root-key", required = true)]
    pub new_root_keys: Vec<PathBuf>,
    /// Defaults to the current root's threshold.
    #[arg(long)]
    pub root_threshold: Option<u64>,
    /// Replace the targets keys.
    #[arg(long = "targets-key")]
    pub targets_keys: Vec<PathBuf>,
    /// Targets signatures a version needs under the new root.
    #[arg(long)]
    pub targets_threshold: Option<u64>,
    /// Replace the snapshot key.
    #[arg(long)]
    pub snapshot_key: Option<PathBuf>,
    /// Replace the timestamp key.
    #[arg(long)]
    pub timestamp_key: Option<PathBuf>,
    /// How long the new root is valid.
    #[arg(long, default_value = "365d")]
    pub expires: Span,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// oci://HOST[:PORT]/REPO:TAG, file:///DIR, https://HOST/PATH/ or a directory.
    pub source: String,
    /// The trusted root to start from (e.g. DIR/metadata/1.root.json).
    #[arg(long)]
    pub root: PathBuf,
    #[command(flatten)]
    pub reach: super::oci::Reach,
}

fn keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PemKey>> {
    paths
        .iter()
        .map(|p| PemKey::from_file(p).map_err(anyhow::Error::from))
        .collect()
}

pub fn init(args: InitArgs) -> anyhow::Result<Outcome> {
    let options = tuf::InitOptions {
        root_keys: keys(&args.root_keys)?,
        root_threshold: args.root_threshold,
        targets_keys: keys(&args.targets_keys)?,
        targets_threshold: args.targets_threshold,
        snapshot_keys: keys(std::slice::from_ref(&args.snapshot_key))?,
        timestamp_keys: keys(std::slice::from_ref(&args.timestamp_key))?,
        expires: args.expires.0,
    };
    let path = super::block_on(tuf::init(&args.dir, &options))??;
    println!("wrote {}", path.display());
    Ok(Outcome::Success)
}

pub fn publish(args: PublishArgs) -> anyhow::Result<Outcome> {
    let options = tuf::PublishOptions {
        keys: keys(&args.keys)?,
        expires: args.expires.0,
        timestamp_expires: args.timestamp_expires.0,
    };
    let report = super::block_on(tuf::publish(&args.dir, &args.bundle, &options))??;
    for warning in &report.warnings {
        eprintln!("warning: skipped: {warning}");
    }
    for skipped in &report.skipped {
        eprintln!("not published (not a bundle file): {skipped}");
    }
    println!(
        "published version {} ({} file(s)): {}",
        report.targets_version,
        report.files.len(),
        report.files.join(", ")
    );
    Ok(Outcome::Success)
}

pub fn timestamp(args: TimestampArgs) -> anyhow::Result<Outcome> {
    let keys = keys(&args.keys)?;
    let version = super::block_on(tuf::timestamp(&args.dir, &keys, args.expires.0))??;
    println!("timestamp version {version}");
    Ok(Outcome::Success)
}

pub fn rotate_root(args: RotateRootArgs) -> anyhow::Result<Outcome> {
    let optional = |path: &Option<PathBuf>| -> anyhow::Result<Option<Vec<PemKey>>> {
        path.as_ref()
            .map(|p| keys(std::slice::from_ref(p)))
            .transpose()
    };
    let options = tuf::RotateOptions {
        keys: keys(&args.keys)?,
        new_root_keys: keys(&args.new_root_keys)?,
        root_threshold: args.root_threshold,
        targets_keys: if args.targets_keys.is_empty() {
            None
        } else {
            Some(keys(&args.targets_keys)?)
        },
        targets_threshold: args.targets_threshold,
        snapshot_keys: optional(&args.snapshot_key)?,
        timestamp_keys: optional(&args.timestamp_key)?,
        expires: args.expires.0,
    };
    let version = super::block_on(tuf::rotate_root(&args.dir, &options))??;
    println!(
        "wrote {}",
        args.dir
            .join(format!("metadata/{version}.root.json"))
            .display()
    );
    Ok(Outcome::Success)
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<Outcome> {
    let root = std::fs::read(&args.root)
        .with_context(|| format!("cannot read {}", args.root.display()))?;
    let trust =
        Trust::ephemeral(&root).with_context(|| format!("--root {}", args.root.display()))?;
    // A plain path is a directory, as for `policy check`.
    let text = if args.source.contains("://") {
        args.source.clone()
    } else {
        let dir = std::path::absolute(&args.source)
            .with_context(|| format!("{}: not a path", args.source))?;
        if !dir.is_dir() {
            bail!("{}: not a directory", dir.display());
        }
        url::Url::from_directory_path(&dir)
            .map_err(|()| anyhow::anyhow!("{}: not a local path", dir.display()))?
            .to_string()
    };
    let source = Source::parse(&text)?;
    // The host a bare --plain-http or the credentials file applies to.
    let host = match &source {
        Source::Oci(reference) => reference.registry.clone(),
        Source::Https(url) => match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        },
        Source::Dir(_) => String::new(),
    };
    let options = args.reach.options(&host)?;
    let scratch_dir = tempfile::tempdir().context("a scratch directory")?;
    let staging = scratch_dir.path().join("staging");
    let blobs = scratch_dir.path().join("blobs");
    let scratch = Scratch {
        staging: &staging,
        blobs: &blobs,
    };
    let mut traffic = Traffic::default();
    let polled = super::block_on(source::poll(
        &source,
        None,
        &trust,
        &scratch,
        &options,
        &source::Limits::default(),
        &mut traffic,
    ))?;
    match polled {
        Ok(Polled::New { verified, .. }) => {
            print_verified(&args.source, &verified);
            Ok(Outcome::Success)
        }
        Ok(Polled::Unchanged) => bail!("{}: nothing to verify", args.source),
        Err(e) if e.failure() == Failure::Refused => {
            eprintln!("attestgate: {}: refused ({}): {e}", args.source, e.reason());
            Ok(Outcome::Deny)
        }
        Err(e) => Err(e.into()),
    }
}

fn print_verified(source: &str, v: &tuf::Verified) {
    let expires = v
        .expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| v.expires.to_string());
    println!("{source}: verified");
    println!(
        "root version {}, targets version {}, snapshot version {}, timestamp version {}",
        v.root_version, v.targets_version, v.snapshot_version, v.timestamp_version
    );
    println!("expires {expires}");
    for (name, bytes) in &v.files {
        println!(
            "{name} {} bytes sha256:{:x}",
            bytes.len(),
            Sha256::digest(bytes)
        );
    }
}
