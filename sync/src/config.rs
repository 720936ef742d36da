//! attestgate-sync's configuration: the node's `config.toml` (its keys
//! `bundle_source`, `trust_root`, `sync_state`, `bundle`, `sync_interval`,
//! and the registry keys), every key overridable by a flag (SPEC §10).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use attestgate_node::config::{self, ConfigFile, Span};
use clap::Parser;
use serde::Deserialize;

pub const DEFAULT_TRUST_ROOT: &str = "/etc/attestgate/root.json";
pub const DEFAULT_STATE: &str = "/var/lib/attestgate/sync";
/// Half the minute in which every node is to have taken a new bundle, so
/// that a node that just missed a push still makes it.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// A registry on the node's network answers in milliseconds; five seconds
/// (SPEC §11's default for the same key) is a registry in trouble, and the
/// next poll comes soon enough. Large blobs get more, by their size.
pub use attestgate_node::config::DEFAULT_REGISTRY_TIMEOUT;

#[derive(Parser, Debug, Default)]
#[command(
    name = "attestgate-sync",
    version,
    about = "Brings signed bundles (TUF) from a registry, a directory or a web server into the node's bundle store"
)]
pub struct Flags {
    /// Configuration file [default: $ATTESTGATE_CONFIG, else
    /// /etc/attestgate/config.toml, which may be missing].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where bundles come from: oci://HOST[:PORT]/REPO:TAG, file:///DIR or
    /// https://HOST/PATH/.
    #[arg(long)]
    pub source: Option<String>,
    /// The first trusted TUF root, installed with the node
    /// [default: /etc/attestgate/root.json].
    #[arg(long)]
    pub trust_root: Option<PathBuf>,
    /// State directory: trusted metadata, bundle versions, blob cache
    /// [default: /var/lib/attestgate/sync].
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The bundle path the proxy and the shim read: a symlink this program
    /// points at the current version [default: /var/lib/attestgate/bundle].
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// How often to poll the source (with jitter) [default: 30s].
    #[arg(long)]
    pub interval: Option<Span>,
    /// Sync once and exit: 0 updated or current, 1 refused, 2 unreachable.
    #[arg(long)]
    pub once: bool,
    /// Write this program's man pages and bash and zsh completions under
    /// DIR and exit (for the package build).
    #[arg(long, hide = true, value_name = "DIR")]
    pub write_manual: Option<PathBuf>,
    /// Prometheus metrics address, e.g. 127.0.0.1:9465.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// A registry reached over plain HTTP, HOST[:PORT] (repeatable).
    #[arg(long = "plain-http")]
    pub plain_http: Vec<String>,
    /// How long the source may take to answer [default: 5s].
    #[arg(long)]
    pub registry_timeout: Option<Span>,
    /// A docker config.json holding the source registry's credentials.
    #[arg(long)]
    pub registry_credentials: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct SyncKeys {
    bundle_source: Option<String>,
    trust_root: Option<PathBuf>,
    sync_state: Option<PathBuf>,
    sync_interval: Option<Span>,
    sync_metrics_listen: Option<String>,
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// None: no `bundle_source`, nothing to sync.
    pub source: Option<String>,
    pub trust_root: PathBuf,
    pub state: PathBuf,
    pub bundle: PathBuf,
    pub interval: Duration,
    pub once: bool,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub plain_http: Vec<String>,
    /// CA files by the registry (`HOST[:PORT]`) they are for.
    pub extra_ca: Vec<(String, PathBuf)>,
    /// A docker `config.json` with the source registry's credentials.
    pub registry_credentials: Option<PathBuf>,
    pub registry_timeout: Duration,
    pub log_json: bool,
}

impl Config {
    pub fn load(flags: Flags) -> anyhow::Result<Config> {
        let file = ConfigFile::discover(flags.config.as_deref())?;
        let own: SyncKeys = file.keys_of(config::SYNC)?;
        // Without a source the node's bundle directory is its own (SPEC
        // §10): nothing to sync, and nothing wrong.
        let source = flags.source.or(own.bundle_source).filter(|s| !s.is_empty());
        let interval = flags
            .interval
            .or(own.sync_interval)
            .map_or(DEFAULT_INTERVAL, |span| span.0);
        if interval.is_zero() {
            bail!("sync_interval 0s: give the source a moment between polls");
        }
        let access = file.node.settings().registries;
        let registry_timeout = flags.registry_timeout.map_or(access.timeout, |span| span.0);
        if registry_timeout.is_zero() {
            bail!("registry_timeout 0s: no request could finish");
        }
        let metrics_listen = match flags
            .metrics_listen
            .or(own.sync_metrics_listen)
            .filter(|s| !s.is_empty())
        {
            Some(addr) => Some(
                addr.parse()
                    .with_context(|| format!("sync_metrics_listen {addr:?}: expected HOST:PORT"))?,
            ),
            None => None,
        };
        let mut plain_http = flags.plain_http;
        plain_http.extend(access.plain_http);
        Ok(Config {
            source,
            trust_root: flags
                .trust_root
                .or(own.trust_root)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_TRUST_ROOT)),
            state: flags
                .state
                .or(own.sync_state)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE)),
            bundle: flags
                .bundle
                .or(file.node.bundle.clone())
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_BUNDLE)),
            interval,
            once: flags.once,
            metrics_listen,
            plain_http,
            extra_ca: access.extra_ca,
            registry_credentials: flags.registry_credentials.or(access.credentials),
            registry_timeout,
            log_json: flags.log_format.or(own.log_format) == Some(LogFormat::Json),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str, args: &[&str]) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.toml");
        std::fs::write(&path, file)?;
        let mut argv = vec!["attestgate-sync", "--config"];
        let path = path.to_string_lossy().into_owned();
        argv.push(&path);
        argv.extend_from_slice(args);
        Config::load(Flags::try_parse_from(argv)?)
    }

    #[test]
    fn flags_override_the_file_key_by_key() {
        let config = load(
            "bundle = \"/b\"\nbundle_source = \"oci://r.example/p:v1\"\nsync_interval = \"1m\"\n\
             [registries.\"127.0.0.1:5000\"]\nplain_http = true\n",
            &["--interval", "5s", "--state", "/s"],
        )
        .unwrap();
        assert_eq!(config.source.as_deref(), Some("oci://r.example/p:v1"));
        assert_eq!(config.interval, Duration::from_secs(5));
        assert_eq!(config.state, PathBuf::from("/s"));
        assert_eq!(config.bundle, PathBuf::from("/b"));
        assert_eq!(config.trust_root, PathBuf::from(DEFAULT_TRUST_ROOT));
        assert_eq!(config.plain_http, vec!["127.0.0.1:5000".to_string()]);
        assert_eq!(config.registry_timeout, DEFAULT_REGISTRY_TIMEOUT);
    }

    #[test]
    fn no_source_is_nothing_to_sync_and_a_typo_is_an_error_that_says_so() {
        assert_eq!(load("", &[]).unwrap().source, None);
        let typo = load("bundle_sourc = \"x\"\n", &["--source", "file:///x"])
            .unwrap_err()
            .to_string();
        assert!(typo.contains("bundle_sourc"), "{typo}");
        let zero = load("", &["--source", "file:///x", "--interval", "0s"])
            .unwrap_err()
            .to_string();
        assert!(zero.contains("sync_interval"), "{zero}");
    }

    #[test]
    fn the_proxy_does_not_trip_over_the_syncer_keys() {
        // Every program reads the same file: a key of the syncer's is not a
        // typo to the proxy or the shim.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "bundle_source = \"file:///x\"\nsync_interval = \"30s\"\n",
        )
        .unwrap();
        let file = ConfigFile::read(&path).unwrap();
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NoKeys {}
        let _: NoKeys = file.keys_of(config::SHIM).unwrap();
    }
}
