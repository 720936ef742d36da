//! Configuration: `/etc/attestgate/config.toml`, every key overridable by a
//! flag of the same name (SPEC §8).

use std::path::PathBuf;

use anyhow::{Context, bail};
use attestgate_policy::NodeConfig;
use attestgate_policy::config::{self, ConfigFile};
use clap::Parser;

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
    /// What to do without a valid policy or on internal errors: closed or open.
    #[arg(long)]
    pub fail_mode: Option<String>,
    /// System image patterns allowed under globalPolicyEvaluationMode ENABLE (repeatable).
    #[arg(long = "system-image")]
    pub system_images: Vec<String>,
    /// Require attestations to name the image's own repository.
    #[arg(long)]
    pub strict_repository: Option<bool>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Client connections served at once; more are closed on accept
    /// [default: 1024].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: PathBuf,
    pub runtime_endpoint: PathBuf,
    pub image_endpoint: PathBuf,
    pub bundle: PathBuf,
    pub audit_log: PathBuf,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub node: NodeConfig,
    pub log_json: bool,
    pub max_connections: usize,
}

/// kubelet keeps two connections open and crictl one per command; a
/// thousand leaves room for tools and test suites running in parallel while
/// still bounding threads and descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Each connection is a thread: beyond this the node runs out first.
const MAX_MAX_CONNECTIONS: usize = 65_536;

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
        let (file, _) = ConfigFile::discover(flags.config.as_deref())?;
        let runtime_endpoint = socket_path(
            flags
                .runtime_endpoint
                .or(file.runtime_endpoint)
                .as_deref()
                .unwrap_or(config::DEFAULT_RUNTIME_ENDPOINT),
        )
        .context("runtime_endpoint")?;
        let image_endpoint = match flags.image_endpoint.or(file.image_endpoint) {
            Some(e) => socket_path(&e).context("image_endpoint")?,
            None => runtime_endpoint.clone(),
        };
        let patterns = if flags.system_images.is_empty() {
            file.system_images
        } else {
            Some(flags.system_images)
        };
        let node = config::node_config(
            flags.cluster.or(file.cluster),
            flags.fail_mode.or(file.fail_mode).as_deref(),
            patterns.as_deref(),
            flags.strict_repository.or(file.strict_repository),
        )?;
        let metrics_listen = match flags
            .metrics_listen
            .or(file.metrics_listen)
            .filter(|s| !s.is_empty())
        {
            Some(addr) => Some(
                addr.parse()
                    .with_context(|| format!("metrics_listen {addr:?}: expected HOST:PORT"))?,
            ),
            None => None,
        };
        let log_json = match flags.log_format.or(file.log_format).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => bail!("log_format {other:?}: expected text or json"),
        };
        let max_connections = flags
            .max_connections
            .or(file.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=MAX_MAX_CONNECTIONS).contains(&max_connections) {
            bail!("max_connections {max_connections}: expected 1 to {MAX_MAX_CONNECTIONS}");
        }
        Ok(Config {
            max_connections,
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| PathBuf::from("/run/attestgate/cri.sock")),
            runtime_endpoint,
            image_endpoint,
            bundle: flags
                .bundle
                .or(file.bundle)
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_BUNDLE)),
            audit_log: flags
                .audit_log
                .or(file.audit_log)
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_AUDIT_LOG)),
            metrics_listen,
            node,
            log_json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(config.node.cluster.as_deref(), Some("eu-west1-a.dev"));
        assert_eq!(config.node.fail_mode, attestgate_policy::FailMode::Open);
        assert_eq!(config.node.system_images.len(), 1);
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
