//! The node configuration file, `/etc/attestgate/config.toml` (SPEC §8).
//!
//! The proxy and the shim both read it, so that a container decided at
//! CreateContainer and again at Task.Create is decided under the same
//! bundle, cluster, fail mode and system images, and recorded in the same
//! audit log. Reading a file is all this module does.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::evaluate::{FailMode, NodeConfig};
use crate::glob::NamePattern;

pub const DEFAULT_PATH: &str = "/etc/attestgate/config.toml";
/// Names a configuration file for a process that takes no flags of ours:
/// containerd starts the shim with containerd's own environment.
pub const PATH_ENV: &str = "ATTESTGATE_CONFIG";
pub const DEFAULT_BUNDLE: &str = "/var/lib/attestgate/bundle";
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/attestgate/audit.jsonl";
pub const DEFAULT_RUNTIME_ENDPOINT: &str = "/run/containerd/containerd.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{key} {value:?}: {expected}")]
    Value {
        key: &'static str,
        value: String,
        expected: String,
    },
}

/// Every key of the file; what is absent takes the reader's default.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<PathBuf>,
    pub runtime_endpoint: Option<String>,
    pub image_endpoint: Option<String>,
    pub bundle: Option<PathBuf>,
    pub cluster: Option<String>,
    pub audit_log: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    pub fail_mode: Option<String>,
    pub system_images: Option<Vec<String>>,
    pub strict_repository: Option<bool>,
    pub log_format: Option<String>,
    /// The most client connections the proxy serves at once (each is a
    /// thread and a connection to containerd); past it, new ones are closed.
    pub max_connections: Option<usize>,
    /// The shim the containerd shim hands allowed containers to; a bare name
    /// is looked up on containerd's PATH.
    pub runc_shim: Option<PathBuf>,
    /// How the shim gates containers: "auto" (default: by containerd's
    /// version), "exec" (decide in `start`, then become the runc shim) or
    /// "forward" (a forwarder that decides every Task.Create).
    pub shim_mode: Option<String>,
}

/// How containerd-shim-attestgate-v2 puts itself between containerd and runc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimMode {
    Auto,
    Exec,
    Forward,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The file named explicitly, else by `ATTESTGATE_CONFIG`, else the
    /// default path; only the default may be missing (then every key takes
    /// its default). Returns the path read, if any.
    pub fn discover(explicit: Option<&Path>) -> Result<(ConfigFile, Option<PathBuf>), ConfigError> {
        let named = explicit.map(Path::to_path_buf).or_else(|| {
            std::env::var_os(PATH_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        match named {
            Some(path) => Ok((ConfigFile::read(&path)?, Some(path))),
            None => {
                let path = Path::new(DEFAULT_PATH);
                if path.exists() {
                    Ok((ConfigFile::read(path)?, Some(path.to_path_buf())))
                } else {
                    Ok((ConfigFile::default(), None))
                }
            }
        }
    }

    /// The settings a decision depends on, from the file alone.
    pub fn node_config(&self) -> Result<NodeConfig, ConfigError> {
        node_config(
            self.cluster.clone(),
            self.fail_mode.as_deref(),
            self.system_images.as_deref(),
            self.strict_repository,
        )
    }

    pub fn shim_mode(&self) -> Result<ShimMode, ConfigError> {
        match self.shim_mode.as_deref() {
            None | Some("auto") => Ok(ShimMode::Auto),
            Some("exec") => Ok(ShimMode::Exec),
            Some("forward") => Ok(ShimMode::Forward),
            Some(other) => Err(ConfigError::Value {
                key: "shim_mode",
                value: other.to_string(),
                expected: "expected auto, exec or forward".into(),
            }),
        }
    }

    pub fn bundle_dir(&self) -> PathBuf {
        self.bundle
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BUNDLE))
    }

    pub fn audit_log_path(&self) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_LOG))
    }
}

/// Builds the node's decision settings from configuration values, checking
/// each one.
pub fn node_config(
    cluster: Option<String>,
    fail_mode: Option<&str>,
    system_images: Option<&[String]>,
    strict_repository: Option<bool>,
) -> Result<NodeConfig, ConfigError> {
    let mut node = NodeConfig {
        cluster: cluster.filter(|c| !c.is_empty()),
        fail_mode: parse_fail_mode(fail_mode)?,
        strict_repository: strict_repository.unwrap_or(false),
        ..NodeConfig::default()
    };
    if let Some(patterns) = system_images {
        node.system_images = patterns
            .iter()
            .map(|p| {
                NamePattern::parse(p).map_err(|e| ConfigError::Value {
                    key: "system_images",
                    value: p.clone(),
                    expected: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(node)
}

pub fn parse_fail_mode(value: Option<&str>) -> Result<FailMode, ConfigError> {
    match value {
        None | Some("closed") => Ok(FailMode::Closed),
        Some("open") => Ok(FailMode::Open),
        Some(other) => Err(ConfigError::Value {
            key: "fail_mode",
            value: other.to_string(),
            expected: "expected closed or open".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_key_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "bundle = \"/b\"\ncluster = \"us-east1-b.prod\"\nfail_mode = \"open\"\n\
             system_images = [\"reg.test/pause*\"]\nstrict_repository = true\n\
             runc_shim = \"/usr/bin/containerd-shim-runc-v2\"\nshim_mode = \"forward\"\n",
        )
        .unwrap();
        let (file, read) = ConfigFile::discover(Some(&path)).unwrap();
        assert_eq!(read.as_deref(), Some(path.as_path()));
        let node = file.node_config().unwrap();
        assert_eq!(node.cluster.as_deref(), Some("us-east1-b.prod"));
        assert_eq!(node.fail_mode, FailMode::Open);
        assert!(node.strict_repository);
        assert_eq!(node.system_images.len(), 1);
        assert_eq!(file.bundle_dir(), PathBuf::from("/b"));
        assert_eq!(file.shim_mode().unwrap(), ShimMode::Forward);
        assert_eq!(file.audit_log_path(), PathBuf::from(DEFAULT_AUDIT_LOG));
    }

    #[test]
    fn mistakes_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "bundel = \"/b\"\n").unwrap();
        let e = ConfigFile::discover(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("bundel"), "{e}");
        std::fs::write(&path, "fail_mode = \"sometimes\"\n").unwrap();
        let e = ConfigFile::read(&path)
            .unwrap()
            .node_config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes"), "{e}");
        assert!(ConfigFile::discover(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
