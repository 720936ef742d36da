//! `repo push DIR oci://…` and `repo pull oci://… DIR`: a repository carried
//! to and from a registry as one artifact (SPEC §10). The node config has
//! no registry keys yet, so how to reach the registry is given by flags
//! ([`Reach`], shared with `sign --cosign`).

use std::path::PathBuf;

use anyhow::Context;
use attestgate_node::config::Span;
use attestgate_registry::oci::{self, Credentials, Limits, OciRef, RegistryOptions};
use clap::Args;

use crate::Outcome;

/// The environment variable holding the password for `--username`, so it
/// never shows in the process list.
const PASSWORD_ENV: &str = "ATTESTGATE_REGISTRY_PASSWORD";

#[derive(Args)]
pub struct Reach {
    /// A registry (HOST or HOST:PORT) reached over plain HTTP; repeatable.
    /// Without a value: the registry the command talks to.
    #[arg(long = "plain-http", value_name = "HOST[:PORT]", num_args = 0..=1, default_missing_value = "")]
    plain_http: Vec<String>,
    /// Give up on a registry that does not answer for this long (30s, 2m).
    #[arg(long, value_name = "DUR", default_value = "30s")]
    timeout: Span,
    /// Log in as this user; the password is read from ATTESTGATE_REGISTRY_PASSWORD.
    #[arg(long, value_name = "USER")]
    username: Option<String>,
    /// A PEM file of CA certificates trusted beside the system's; repeatable.
    #[arg(long = "ca-file", value_name = "PEM")]
    ca_file: Vec<PathBuf>,
    /// A docker config.json (as `docker login` writes it) holding the
    /// registry's credentials; --username wins over it.
    #[arg(long = "registry-credentials", value_name = "CONFIG.json")]
    registry_credentials: Option<PathBuf>,
}

impl Reach {
    /// How to reach `registry` (HOST[:PORT]), the one the command talks to.
    pub fn options(&self, registry: &str) -> anyhow::Result<RegistryOptions> {
        anyhow::ensure!(!self.timeout.0.is_zero(), "--timeout must be more than 0s");
        let credentials = match (&self.username, &self.registry_credentials) {
            (Some(username), _) => Credentials::Basic {
                username: username.clone(),
                password: std::env::var(PASSWORD_ENV)
                    .with_context(|| format!("--username needs the password in {PASSWORD_ENV}"))?,
            },
            (None, Some(path)) => {
                let json =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                Credentials::from_docker_config(&json, registry)
                    .map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?
            }
            (None, None) => Credentials::Anonymous,
        };
        let mut extra_ca_pem = Vec::new();
        for path in &self.ca_file {
            extra_ca_pem
                .push(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
        }
        let plain_http = self
            .plain_http
            .iter()
            .map(|host| {
                if host.is_empty() {
                    registry.to_string()
                } else {
                    host.clone()
                }
            })
            .collect();
        Ok(RegistryOptions {
            plain_http,
            timeout: self.timeout.0,
            credentials,
            extra_ca_pem,
        })
    }
}

#[derive(Args)]
pub struct PushArgs {
    /// The repository directory (metadata/, targets/).
    pub dir: PathBuf,
    /// oci://HOST[:PORT]/REPO:TAG
    pub destination: String,
    #[command(flatten)]
    reach: Reach,
}

#[derive(Args)]
pub struct PullArgs {
    /// oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:…
    pub source: String,
    /// A new or empty directory.
    pub dir: PathBuf,
    #[command(flatten)]
    reach: Reach,
}

pub fn push(args: PushArgs) -> anyhow::Result<Outcome> {
    let to = OciRef::parse(&args.destination)?;
    let options = args.reach.options(&to.registry)?;
    let pushed = super::block_on(oci::push_dir(&args.dir, &to, &options))?
        .with_context(|| format!("pushing {} to {to}", args.dir.display()))?;
    eprintln!(
        "pushed {} files ({} blobs uploaded) to {to}",
        pushed.files.len(),
        pushed.uploaded
    );
    println!("{}", pushed.manifest_digest);
    Ok(Outcome::Success)
}

pub fn pull(args: PullArgs) -> anyhow::Result<Outcome> {
    let from = OciRef::parse(&args.source)?;
    let options = args.reach.options(&from.registry)?;
    let pulled = super::block_on(oci::pull_dir(
        &from,
        &args.dir,
        &options,
        &Limits::default(),
    ))?
    .with_context(|| format!("pulling {from} into {}", args.dir.display()))?;
    eprintln!(
        "pulled {} files from {from} into {}",
        pulled.files.len(),
        args.dir.display()
    );
    println!("{}", pulled.manifest_digest);
    Ok(Outcome::Success)
}
