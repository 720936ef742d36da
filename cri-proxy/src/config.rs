//! Configuration: `/etc/attestgate/config.toml`, every key overridable by a
//! flag of the same name (SPEC §8).

use std::path::PathBuf;

use anyhow::{Context, bail};
use attestgate_node::config::{self, ConfigFile, FailMode, NodeSettings, Size, Span};
use clap::Parser;
use serde::Deserialize;

#[derive(Parser, Debug, Default)]
#[command(
    name = "attestgate-proxy",
    version,
    about = "CRI proxy enforcing Binary Authorization policy on the node"
)]
pub struct Flags {
    /// Configuration file [default: $ATTESTGATE_CONFIG, else
    /// /etc/attestgate/config.toml, which may be missing].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Unix socket kubelet connects to.
    #[arg(long)]
    pub listen: Option<PathBuf>,
    /// containerd's CRI socket.
    #[arg(long)]
    pub runtime_endpoint: Option<String>,
    /// Image service socket, when it differs from the runtime's.
    #[arg(long)]
    pub image_endpoint: Option<String>,
    /// Bundle directory: policy, attestors/, attestations/.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// This node's cluster name, GCP form location.clusterId.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Audit log (JSON lines, appended).
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Prometheus metrics address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// What to do without a valid policy or on the node's own failures:
    /// closed or open.
    #[arg(long, value_parser = clap::value_parser!(FailModeArg))]
    pub fail_mode: Option<FailModeArg>,
    /// System image patterns allowed under globalPolicyEvaluationMode ENABLE (repeatable).
    #[arg(long = "system-image")]
    pub system_images: Vec<String>,
    /// Require attestations to name the image's own repository.
    #[arg(long)]
    pub strict_repository: Option<bool>,
    /// Enforce the bundle's platform policy (platform-policy.yaml) at
    /// PullImage and CreateContainer beside the project policy (SPEC §12)
    /// [default: false].
    #[arg(long)]
    pub platform_policy_enforce: Option<bool>,
    /// Log format: text or json.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Client connections served at once; more are closed on accept
    /// [default: 1024].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// How long a new client connection may take to send the HTTP/2
    /// preface and its first SETTINGS before it is closed [default: 10s].
    #[arg(long)]
    pub handshake_timeout: Option<Span>,
    /// The deadline a pull that names none (kubelet's) is sent to
    /// containerd with [default: 30m].
    #[arg(long)]
    pub pull_timeout: Option<Span>,
    /// Memory every connection's intercepted calls may hold together
    /// (request heads and bodies until answered, replies until read);
    /// past it senders are held back, then refused with RESOURCE_EXHAUSTED
    /// [default: 64MiB].
    #[arg(long)]
    pub memory_budget: Option<Size>,
    /// An attestor registry signatures may count for, `*` for all
    /// (repeatable; SPEC §11).
    #[arg(long = "registry-attestor")]
    pub registry_attestors: Vec<String>,
    /// Where verified registry signatures are kept
    /// [default: /var/lib/attestgate/attestations].
    #[arg(long)]
    pub attestation_cache: Option<PathBuf>,
    /// A registry reached over plain HTTP, HOST[:PORT] (repeatable).
    #[arg(long = "plain-http")]
    pub plain_http: Vec<String>,
    /// How long a registry signature lookup may take [default: 5s].
    #[arg(long)]
    pub registry_timeout: Option<Span>,
    /// A docker config.json with registry credentials, used when a pull
    /// brings none.
    #[arg(long)]
    pub registry_credentials: Option<PathBuf>,
    /// How often every running container is decided again, besides
    /// within seconds of a bundle or attestation-cache change [default: 1h].
    #[arg(long)]
    pub cv_interval: Option<Span>,
    /// What continuous validation does with a running container the
    /// policy now denies: log (a record), stop it too, or off (no
    /// continuous validation) [default: log].
    #[arg(long, value_enum)]
    pub cv_action: Option<CvAction>,
    /// Print the configuration in force (flags and defaults applied) as
    /// TOML, check what it names (the bundle loads, the audit log and the
    /// sockets' directories can be used), and exit: 0 when nothing is
    /// wrong, 1 otherwise.
    #[arg(long)]
    pub check_config: bool,
    /// Write this program's man pages and bash and zsh completions under
    /// DIR and exit (for the package build).
    #[arg(long, hide = true, value_name = "DIR")]
    pub write_manual: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FailModeArg {
    Closed,
    Open,
}

impl From<FailModeArg> for FailMode {
    fn from(arg: FailModeArg) -> FailMode {
        match arg {
            FailModeArg::Closed => FailMode::Closed,
            FailModeArg::Open => FailMode::Open,
        }
    }
}

/// The proxy's own keys in the configuration file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ProxyKeys {
    listen: Option<PathBuf>,
    runtime_endpoint: Option<String>,
    image_endpoint: Option<String>,
    metrics_listen: Option<String>,
    log_format: Option<LogFormat>,
    /// The most client connections the proxy serves at once (each is a
    /// thread and a connection to containerd); past it, new ones are closed.
    max_connections: Option<usize>,
    handshake_timeout: Option<Span>,
    pull_timeout: Option<Span>,
    memory_budget: Option<Size>,
    cv_interval: Option<Span>,
    cv_action: Option<CvAction>,
}

/// What continuous validation does with a running container the policy
/// now denies (SPEC §12).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CvAction {
    /// A record, as GKE's continuous validation writes.
    #[default]
    Log,
    /// A record, and the container stopped (never one admitted by
    /// break-glass); kubelet's restart is then decided at its create.
    Stop,
    /// No continuous validation: running containers are decided only when
    /// created (a node whose every container restarts often, say).
    Off,
}

/// GKE's continuous validation takes up to a day; an hour catches what no
/// change on the node announces (an attestation's key revoked upstream
/// arrives as a bundle change, which is seen within seconds anyway).
pub const DEFAULT_CV_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
/// A month: past it the timer is no check at all.
pub const MAX_CV_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: PathBuf,
    pub runtime_endpoint: PathBuf,
    pub image_endpoint: PathBuf,
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The keys every program on the node shares: bundle, audit log, fail
    /// mode, what evaluation depends on.
    pub node: NodeSettings,
    pub log_json: bool,
    pub max_connections: usize,
    pub handshake_timeout: std::time::Duration,
    pub pull_timeout: std::time::Duration,
    pub memory_budget: usize,
    pub cv_interval: std::time::Duration,
    pub cv_action: CvAction,
    /// The configuration file read, if any (none when the default path is
    /// missing).
    pub file: Option<PathBuf>,
}

/// What intercepted calls may hold together unless configured: four of
/// the largest requests a call may carry (16 MiB), a small share of a
/// small node's memory.
pub const DEFAULT_MEMORY_BUDGET: u64 = 64 << 20;
/// Calls still arriving get three quarters of the budget (see
/// `relay::budget`); below this, the largest request could never arrive.
pub const MIN_MEMORY_BUDGET: u64 = 32 << 20;

/// kubelet keeps two connections open and crictl one per command; a
/// thousand leaves room for tools and test suites running in parallel while
/// still bounding threads and descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Each connection is a thread: beyond this the node runs out first.
const MAX_MAX_CONNECTIONS: usize = 65_536;
/// kubelet and crictl send the preface and SETTINGS with the connection;
/// grpc-go's own server allows 120 s, far more than a client on the same
/// node needs, and every second of it is a slot an idle attacker holds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `unix:///run/x.sock`, `unix:/run/x.sock` or a plain path.
fn socket_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if path.is_empty() || endpoint.contains("://") && !endpoint.starts_with("unix://") {
        bail!("endpoint {endpoint:?}: only unix sockets are supported");
    }
    Ok(PathBuf::from(path))
}

impl Config {
    pub fn load(flags: Flags) -> anyhow::Result<Config> {
        let mut file = ConfigFile::discover(flags.config.as_deref())?;
        let own: ProxyKeys = file.keys_of(config::PROXY)?;
        // Flags override the file, key by key.
        let keys = &mut file.node;
        keys.bundle = flags.bundle.or(keys.bundle.take());
        keys.audit_log = flags.audit_log.or(keys.audit_log.take());
        keys.cluster = flags.cluster.or(keys.cluster.take());
        keys.fail_mode = flags.fail_mode.map(FailMode::from).or(keys.fail_mode);
        keys.strict_repository = flags.strict_repository.or(keys.strict_repository);
        keys.platform_policy_enforce = flags
            .platform_policy_enforce
            .or(keys.platform_policy_enforce);
        if !flags.registry_attestors.is_empty() {
            keys.registry_attestors = Some(flags.registry_attestors.clone());
        }
        keys.attestation_cache = flags.attestation_cache.or(keys.attestation_cache.take());
        for host in &flags.plain_http {
            keys.registries.entry(host.clone()).or_default().plain_http = true;
        }
        keys.registry_timeout = flags.registry_timeout.or(keys.registry_timeout);
        if keys.registry_timeout.is_some_and(|t| t.0.is_zero()) {
            bail!("registry_timeout 0s: no lookup could finish");
        }
        keys.registry_credentials = flags
            .registry_credentials
            .or(keys.registry_credentials.take());
        if !flags.system_images.is_empty() {
            keys.system_images = Some(config::parse_system_images(&flags.system_images)?);
        }
        let runtime_endpoint = socket_path(
            flags
                .runtime_endpoint
                .or(own.runtime_endpoint)
                .as_deref()
                .unwrap_or(config::DEFAULT_RUNTIME_ENDPOINT),
        )
        .context("runtime_endpoint")?;
        let image_endpoint = match flags.image_endpoint.or(own.image_endpoint) {
            Some(e) => socket_path(&e).context("image_endpoint")?,
            None => runtime_endpoint.clone(),
        };
        let metrics_listen = match flags
            .metrics_listen
            .or(own.metrics_listen)
            .filter(|s| !s.is_empty())
        {
            Some(addr) => Some(
                addr.parse()
                    .with_context(|| format!("metrics_listen {addr:?}: expected HOST:PORT"))?,
            ),
            None => None,
        };
        let log_json = flags.log_format.or(own.log_format) == Some(LogFormat::Json);
        let max_connections = flags
            .max_connections
            .or(own.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=MAX_MAX_CONNECTIONS).contains(&max_connections) {
            bail!("max_connections {max_connections}: expected 1 to {MAX_MAX_CONNECTIONS}");
        }
        let handshake_timeout = flags
            .handshake_timeout
            .or(own.handshake_timeout)
            .map_or(DEFAULT_HANDSHAKE_TIMEOUT, |span| span.0);
        if handshake_timeout.is_zero() {
            bail!("handshake_timeout 0s: a connection needs some time to say hello");
        }
        let pull_timeout = flags
            .pull_timeout
            .or(own.pull_timeout)
            .map_or(crate::intercept::DEFAULT_PULL_TIMEOUT, |span| span.0);
        if pull_timeout.is_zero() {
            bail!("pull_timeout 0s: no pull could finish");
        }
        let memory_budget = flags
            .memory_budget
            .or(own.memory_budget)
            .map_or(DEFAULT_MEMORY_BUDGET, |size| size.0);
        if memory_budget < MIN_MEMORY_BUDGET {
            bail!(
                "memory_budget {memory_budget} bytes: expected at least 32MiB, or a 16 MiB request could never be taken"
            );
        }
        let memory_budget = usize::try_from(memory_budget)
            .with_context(|| format!("memory_budget {memory_budget} bytes: too large"))?;
        let cv_interval = flags
            .cv_interval
            .or(own.cv_interval)
            .map_or(DEFAULT_CV_INTERVAL, |span| span.0);
        if !(std::time::Duration::from_secs(1)..=MAX_CV_INTERVAL).contains(&cv_interval) {
            bail!("cv_interval {cv_interval:?}: expected 1s to 30d");
        }
        let cv_action = flags.cv_action.or(own.cv_action).unwrap_or_default();
        Ok(Config {
            file: file.path.clone(),
            cv_interval,
            cv_action,
            max_connections,
            memory_budget,
            handshake_timeout,
            pull_timeout,
            listen: flags
                .listen
                .or(own.listen)
                .unwrap_or_else(|| PathBuf::from("/run/attestgate/cri.sock")),
            runtime_endpoint,
            image_endpoint,
            metrics_listen,
            node: file.settings(),
            log_json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_timeout_is_a_duration_from_the_file_or_a_flag() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let load = |text: &str, flag: Option<&str>| {
            std::fs::write(&file, text).unwrap();
            Config::load(Flags {
                config: Some(file.clone()),
                handshake_timeout: flag.map(|f| f.parse().unwrap()),
                ..Flags::default()
            })
        };
        assert_eq!(
            load("", None).unwrap().handshake_timeout,
            DEFAULT_HANDSHAKE_TIMEOUT
        );
        let from_file = load("handshake_timeout = \"30s\"\n", None).unwrap();
        assert_eq!(from_file.handshake_timeout, Duration::from_secs(30));
        let from_flag = load("handshake_timeout = \"30s\"\n", Some("2s")).unwrap();
        assert_eq!(from_flag.handshake_timeout, Duration::from_secs(2));
        assert_eq!(
            load("pull_timeout = \"1h\"\n", None).unwrap().pull_timeout,
            Duration::from_secs(3600)
        );
        assert!(load("pull_timeout = \"0s\"\n", None).is_err());
        for wrong in ["\"0s\"", "\"10\"", "10"] {
            let error = load(&format!("handshake_timeout = {wrong}\n"), None).unwrap_err();
            assert!(
                format!("{error:#}").contains("handshake_timeout")
                    || format!("{error:#}").contains("expected"),
                "{error:#}"
            );
        }
    }

    #[test]
    fn the_memory_budget_is_a_size_with_a_floor() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let load = |text: &str, flag: Option<&str>| {
            std::fs::write(&file, text).unwrap();
            Config::load(Flags {
                config: Some(file.clone()),
                memory_budget: flag.map(|f| f.parse().unwrap()),
                ..Flags::default()
            })
        };
        assert_eq!(load("", None).unwrap().memory_budget, 64 << 20);
        assert_eq!(
            load("memory_budget = \"1GiB\"\n", None)
                .unwrap()
                .memory_budget,
            1 << 30
        );
        assert_eq!(
            load("memory_budget = \"1GiB\"\n", Some("48MiB"))
                .unwrap()
                .memory_budget,
            48 << 20
        );
        let small = load("memory_budget = \"16MiB\"\n", None).unwrap_err();
        assert!(format!("{small:#}").contains("at least 32MiB"), "{small:#}");
        assert!(load("memory_budget = \"64MB\"\n", None).is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "listen = \"/run/a.sock\"\ncluster = \"us-east1-b.prod\"\nfail_mode = \"open\"\nsystem_images = [\"reg/pause*\"]\n").unwrap();
        let config = Config::load(Flags {
            config: Some(file.clone()),
            cluster: Some("eu-west1-a.dev".into()),
            ..Flags::default()
        })
        .unwrap();
        assert_eq!(config.listen, PathBuf::from("/run/a.sock"));
        assert_eq!(
            config.node.evaluation.cluster.as_deref(),
            Some("eu-west1-a.dev")
        );
        assert_eq!(config.node.fail_mode, FailMode::Open);
        assert_eq!(config.node.evaluation.system_images.len(), 1);
        assert_eq!(
            config.runtime_endpoint,
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(config.image_endpoint, config.runtime_endpoint);
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        std::fs::write(&file, "max_connections = 8\n").unwrap();
        let from_file = Config::load(Flags {
            config: Some(file.clone()),
            ..Flags::default()
        })
        .unwrap();
        assert_eq!(from_file.max_connections, 8);
        let from_flag = Config::load(Flags {
            config: Some(file.clone()),
            max_connections: Some(3),
            ..Flags::default()
        })
        .unwrap();
        assert_eq!(from_flag.max_connections, 3);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "lisen = \"/x\"\n").unwrap();
        assert!(
            Config::load(Flags {
                config: Some(file.clone()),
                ..Flags::default()
            })
            .is_err()
        );
        std::fs::write(&file, "max_connections = 0\n").unwrap();
        assert!(
            Config::load(Flags {
                config: Some(file.clone()),
                ..Flags::default()
            })
            .is_err()
        );
        std::fs::write(&file, "fail_mode = \"sometimes\"\n").unwrap();
        assert!(
            Config::load(Flags {
                config: Some(file.clone()),
                ..Flags::default()
            })
            .is_err()
        );
        assert!(
            Config::load(Flags {
                config: Some(dir.path().join("missing.toml")),
                ..Flags::default()
            })
            .is_err()
        );
    }

    #[test]
    fn endpoints_accept_unix_urls() {
        assert_eq!(
            socket_path("unix:///run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        assert_eq!(
            socket_path("/run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
    }
}
