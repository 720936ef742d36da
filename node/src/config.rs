//! The node configuration file, `/etc/attestgate/config.toml` (SPEC §8).
//!
//! Every program on the node reads the same file, so that a container
//! decided at CreateContainer and again at Task.Create is decided under the
//! same bundle, cluster, fail mode and system images, and recorded in the
//! same audit log. The keys they all read are typed here ([`NodeKeys`]);
//! each program types its own keys itself and takes them with
//! [`ConfigFile::keys_of`]. A key no program reads is an error in every
//! program, so a typo never passes silently.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use attestgate_policy::{NamePattern, RegistryAttestors, Settings};
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub const DEFAULT_PATH: &str = "/etc/attestgate/config.toml";
/// Names a configuration file for a process that takes no flags of ours:
/// containerd starts the shim with containerd's own environment.
pub const PATH_ENV: &str = "ATTESTGATE_CONFIG";
pub const DEFAULT_BUNDLE: &str = "/var/lib/attestgate/bundle";
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/attestgate/audit.jsonl";
pub const DEFAULT_RUNTIME_ENDPOINT: &str = "/run/containerd/containerd.sock";
pub const DEFAULT_ATTESTATION_CACHE: &str = "/var/lib/attestgate/attestations";

/// The keys each program reads itself, by program. Only the names live
/// here, so that every program can tell another program's key from a typo;
/// their types and meaning live with the program.
pub const PROGRAM_KEYS: &[(&str, &[&str])] = &[
    (
        PROXY,
        &[
            "listen",
            "runtime_endpoint",
            "image_endpoint",
            "metrics_listen",
            "log_format",
            "max_connections",
            "handshake_timeout",
            "memory_budget",
            "pull_timeout",
            "cv_interval",
            "cv_action",
        ],
    ),
    (SHIM, &["runc_shim", "shim_mode"]),
    (
        SYNC,
        &[
            "bundle_source",
            "trust_root",
            "sync_state",
            "sync_interval",
            "sync_metrics_listen",
            "log_format",
        ],
    ),
];
pub const PROXY: &str = "attestgate-proxy";
pub const SHIM: &str = "containerd-shim-attestgate-v2";
pub const SYNC: &str = "attestgate-sync";

/// The keys in the file every program reads.
const NODE_KEYS: &[&str] = &[
    "bundle",
    "cluster",
    "audit_log",
    "fail_mode",
    "system_images",
    "strict_repository",
    "registry_attestors",
    "attestation_cache",
    "registries",
    "registry_timeout",
    "registry_credentials",
    "platform_policy_enforce",
];

/// How long a registry may take to answer unless configured (SPEC §11).
pub const DEFAULT_REGISTRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

impl ConfigError {
    /// The file the error is about, when it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigError::Read { path, .. } | ConfigError::Invalid { path, .. } => Some(path),
            ConfigError::Value { .. } => None,
        }
    }
}

/// The audit log a configuration file names, read from it even when the
/// file is invalid for another reason (an unknown key, a bad value): a
/// refusal that the invalid file causes belongs in the log the node's other
/// records are in. None when the file is not TOML or names no absolute
/// path.
pub fn audit_log_named(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let log = Path::new(table.get("audit_log")?.as_str()?);
    log.is_absolute().then(|| log.to_path_buf())
}

/// What the node does when it cannot apply a policy: no valid bundle, or
/// its own failure to resolve an image (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    #[default]
    Closed,
    Open,
}

impl FromStr for FailMode {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<FailMode, ConfigError> {
        match value {
            "closed" => Ok(FailMode::Closed),
            "open" => Ok(FailMode::Open),
            other => Err(ConfigError::Value {
                key: "fail_mode",
                value: other.to_string(),
                expected: "expected closed or open".into(),
            }),
        }
    }
}

/// A duration as the configuration file and flags write it (SPEC §8): a
/// whole number and a unit, `30s`, `5m`, `1h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub std::time::Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(value: &str) -> Result<Span, String> {
        let seconds = scaled(value, &[("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)])
            .ok_or_else(|| {
                format!("{value:?}: expected a whole number and s, m, h or d (30s, 5m)")
            })?;
        Ok(Span(std::time::Duration::from_secs(seconds)))
    }
}

/// A whole number and one of `units` after it, as the number times the
/// unit's scale; none for anything else, or past `u64`.
fn scaled(value: &str, units: &[(&str, u64)]) -> Option<u64> {
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().ok()?;
    let (_, scale) = units.iter().find(|(name, _)| *name == unit)?;
    number.checked_mul(*scale)
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An amount of memory as the configuration file and flags write it: a
/// whole number and a binary unit, `512KiB`, `64MiB`, `1GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(value: &str) -> Result<Size, String> {
        scaled(
            value,
            &[("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)],
        )
        .map(Size)
        .ok_or_else(|| format!("{value:?}: expected a whole number and KiB, MiB or GiB (64MiB)"))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The keys every program reads; what is absent takes its default.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct NodeKeys {
    pub bundle: Option<PathBuf>,
    pub cluster: Option<String>,
    pub audit_log: Option<PathBuf>,
    pub fail_mode: Option<FailMode>,
    #[serde(default, deserialize_with = "patterns")]
    pub system_images: Option<Vec<NamePattern>>,
    pub strict_repository: Option<bool>,
    /// Attestors that registry signatures may count for; `"*"` for all.
    pub registry_attestors: Option<Vec<String>>,
    pub attestation_cache: Option<PathBuf>,
    #[serde(default)]
    pub registries: std::collections::BTreeMap<String, RegistryEntry>,
    pub registry_timeout: Option<Span>,
    pub registry_credentials: Option<PathBuf>,
    /// Enforce the bundle's platform policy at admission beside the project
    /// policy (SPEC §12); default false: only evaluated, never enforced.
    pub platform_policy_enforce: Option<bool>,
}

/// How the node reaches one registry, a `[registries."HOST[:PORT]"]`
/// table (SPEC §11): the syncer for bundles, the proxy for signatures.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// Reached over plain HTTP instead of HTTPS (a registry on the node's
    /// own network without TLS).
    #[serde(default)]
    pub plain_http: bool,
    /// A PEM file of CA certificates the registry's certificate chains to.
    pub ca_file: Option<PathBuf>,
}

/// Every way of reaching registries the configuration gives, defaults
/// filled in.
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    /// `HOST[:PORT]` reached over plain HTTP.
    pub plain_http: Vec<String>,
    /// CA files by the registry (`HOST[:PORT]`) they are for.
    pub extra_ca: Vec<(String, PathBuf)>,
    /// A docker `config.json` with credentials by registry.
    pub credentials: Option<PathBuf>,
    pub timeout: std::time::Duration,
}

fn patterns<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<NamePattern>>, D::Error> {
    let raw: Option<Vec<String>> = Option::deserialize(d)?;
    raw.map(|list| parse_system_images(&list).map_err(serde::de::Error::custom))
        .transpose()
}

/// System-image patterns, each checked.
pub fn parse_system_images(patterns: &[String]) -> Result<Vec<NamePattern>, ConfigError> {
    patterns
        .iter()
        .map(|p| {
            NamePattern::parse(p).map_err(|e| ConfigError::Value {
                key: "system_images",
                value: p.clone(),
                expected: e.to_string(),
            })
        })
        .collect()
}

/// How this node decides, with every default filled in.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub bundle: PathBuf,
    pub audit_log: PathBuf,
    pub fail_mode: FailMode,
    /// What the policy's evaluation depends on: cluster, system images,
    /// the attestors registry signatures count for.
    pub evaluation: Settings,
    /// Where verified registry signatures are kept (SPEC §11).
    pub attestation_cache: PathBuf,
    pub registries: RegistryAccess,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeKeys::default().settings()
    }
}

impl NodeKeys {
    pub fn settings(&self) -> NodeSettings {
        let defaults = Settings::default();
        NodeSettings {
            bundle: self
                .bundle
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_BUNDLE)),
            audit_log: self
                .audit_log
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_LOG)),
            fail_mode: self.fail_mode.unwrap_or_default(),
            evaluation: Settings {
                cluster: self.cluster.clone().filter(|c| !c.is_empty()),
                system_images: self.system_images.clone().unwrap_or(defaults.system_images),
                strict_repository: self.strict_repository.unwrap_or(false),
                registry_attestors: RegistryAttestors::from_list(
                    self.registry_attestors.as_deref().unwrap_or_default(),
                ),
                platform_policy_enforce: self.platform_policy_enforce.unwrap_or(false),
            },
            attestation_cache: self
                .attestation_cache
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ATTESTATION_CACHE)),
            registries: RegistryAccess {
                plain_http: self
                    .registries
                    .iter()
                    .filter(|(_, entry)| entry.plain_http)
                    .map(|(host, _)| host.clone())
                    .collect(),
                extra_ca: self
                    .registries
                    .iter()
                    .filter_map(|(host, entry)| Some((host.clone(), entry.ca_file.clone()?)))
                    .collect(),
                credentials: self.registry_credentials.clone(),
                timeout: self
                    .registry_timeout
                    .map_or(DEFAULT_REGISTRY_TIMEOUT, |span| span.0),
            },
        }
    }
}

/// The file as read: the node's keys typed, the programs' keys kept for
/// them.
#[derive(Debug, Default, Clone)]
pub struct ConfigFile {
    /// The file read; `None` when none was (the default path is missing).
    pub path: Option<PathBuf>,
    pub node: NodeKeys,
    programs: toml::Table,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ConfigFile::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut node = toml::Table::new();
        for key in NODE_KEYS {
            if let Some((key, value)) = table.remove_entry(*key) {
                node.insert(key, value);
            }
        }
        if let Some(unknown) = table.keys().find(|key| !is_program_key(key)) {
            return Err(invalid(format!(
                "unknown key `{unknown}` (known: {})",
                known_keys().join(", ")
            )));
        }
        let node = NodeKeys::deserialize(node).map_err(|e| invalid(e.to_string()))?;
        Ok(ConfigFile {
            path: Some(path.to_path_buf()),
            node,
            programs: table,
        })
    }

    /// The file named explicitly, else by `ATTESTGATE_CONFIG`, else the
    /// default path; only the default may be missing (then every key takes
    /// its default).
    pub fn discover(explicit: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let named = explicit.map(Path::to_path_buf).or_else(|| {
            std::env::var_os(PATH_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        match named {
            Some(path) => ConfigFile::read(&path),
            None => {
                let path = Path::new(DEFAULT_PATH);
                if path.exists() {
                    ConfigFile::read(path)
                } else {
                    Ok(ConfigFile::default())
                }
            }
        }
    }

    /// `program`'s own keys (see [`PROGRAM_KEYS`]), as its type `T`.
    pub fn keys_of<T: DeserializeOwned>(&self, program: &str) -> Result<T, ConfigError> {
        let names = PROGRAM_KEYS
            .iter()
            .find(|(name, _)| *name == program)
            .map_or(&[][..], |(_, keys)| *keys);
        let own: toml::Table = self
            .programs
            .iter()
            .filter(|(key, _)| names.contains(&key.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        T::deserialize(own).map_err(|e| ConfigError::Invalid {
            path: self
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)),
            message: e.to_string(),
        })
    }

    pub fn settings(&self) -> NodeSettings {
        self.node.settings()
    }
}

fn is_program_key(key: &str) -> bool {
    PROGRAM_KEYS.iter().any(|(_, keys)| keys.contains(&key))
}

fn known_keys() -> Vec<&'static str> {
    let mut all: Vec<&str> = NODE_KEYS.to_vec();
    all.extend(
        PROGRAM_KEYS
            .iter()
            .flat_map(|(_, keys)| keys.iter().copied()),
    );
    all.sort_unstable();
    all
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_invalid_file_still_names_its_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "audit_log = \"/srv/audit.jsonl\"\nbogus_key = 1\n").unwrap();
        let e = ConfigFile::read(&file).unwrap_err();
        assert_eq!(e.path(), Some(file.as_path()));
        assert_eq!(
            e.path().and_then(audit_log_named),
            Some(PathBuf::from("/srv/audit.jsonl"))
        );
        for text in [
            "audit_log = \"relative.jsonl\"\n",
            "audit_log = 3\n",
            "audit_log = [\n",
            "",
        ] {
            std::fs::write(&file, text).unwrap();
            assert_eq!(audit_log_named(&file), None, "{text:?}");
        }
        assert_eq!(audit_log_named(&dir.path().join("missing.toml")), None);
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields)]
    struct ShimKeys {
        runc_shim: Option<PathBuf>,
        shim_mode: Option<String>,
    }

    #[test]
    fn every_key_is_read_and_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "bundle = \"/b\"\ncluster = \"us-east1-b.prod\"\nfail_mode = \"open\"\n\
             system_images = [\"reg.test/pause*\"]\nstrict_repository = true\n\
             runc_shim = \"/usr/bin/containerd-shim-runc-v2\"\nshim_mode = \"forward\"\n\
             listen = \"/run/a.sock\"\nplatform_policy_enforce = true\n",
        )
        .unwrap();
        let file = ConfigFile::discover(Some(&path)).unwrap();
        assert_eq!(file.path.as_deref(), Some(path.as_path()));
        let node = file.settings();
        assert_eq!(node.evaluation.cluster.as_deref(), Some("us-east1-b.prod"));
        assert_eq!(node.fail_mode, FailMode::Open);
        assert!(node.evaluation.strict_repository);
        assert!(node.evaluation.platform_policy_enforce);
        assert_eq!(node.evaluation.system_images.len(), 1);
        assert_eq!(node.bundle, PathBuf::from("/b"));
        assert_eq!(node.audit_log, PathBuf::from(DEFAULT_AUDIT_LOG));
        let shim: ShimKeys = file.keys_of(SHIM).unwrap();
        assert_eq!(shim.shim_mode.as_deref(), Some("forward"));
        assert!(shim.runc_shim.is_some());
    }

    #[test]
    fn mistakes_are_errors_that_name_the_file_and_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "bundel = \"/b\"\n").unwrap();
        let e = ConfigFile::discover(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("bundel"), "{e}");
        std::fs::write(&path, "fail_mode = \"sometimes\"\n").unwrap();
        let e = ConfigFile::read(&path).unwrap_err().to_string();
        assert!(e.contains("sometimes"), "{e}");
        std::fs::write(&path, "system_images = [\"reg.test/**x\"]\n").unwrap();
        assert!(ConfigFile::read(&path).is_err());
        assert!(ConfigFile::discover(Some(&dir.path().join("missing.toml"))).is_err());
        assert!("sometimes".parse::<FailMode>().is_err());
        assert_eq!("open".parse::<FailMode>().unwrap(), FailMode::Open);
    }

    #[test]
    fn without_a_file_every_key_takes_its_default() {
        let node = ConfigFile::default().settings();
        assert_eq!(node.bundle, PathBuf::from(DEFAULT_BUNDLE));
        assert_eq!(node.fail_mode, FailMode::Closed);
        assert_eq!(node.evaluation.system_images.len(), 1);
        assert!(!node.evaluation.platform_policy_enforce);
    }

    #[test]
    fn durations_and_sizes_parse_as_the_file_writes_them() {
        use std::time::Duration;
        assert_eq!("30s".parse(), Ok(Span(Duration::from_secs(30))));
        assert_eq!("5m".parse(), Ok(Span(Duration::from_secs(300))));
        assert_eq!("1h".parse(), Ok(Span(Duration::from_secs(3600))));
        assert_eq!("7d".parse(), Ok(Span(Duration::from_secs(7 * 86_400))));
        assert_eq!("0s".parse(), Ok(Span(Duration::ZERO)));
        for wrong in [
            "",
            "30",
            "s",
            "1.5s",
            "-1s",
            "10ms",
            "1 s",
            "99999999999999999999d",
        ] {
            assert!(wrong.parse::<Span>().is_err(), "{wrong:?}");
        }
        assert_eq!("64MiB".parse(), Ok(Size(64 << 20)));
        assert_eq!("512KiB".parse(), Ok(Size(512 << 10)));
        assert_eq!("2GiB".parse(), Ok(Size(2 << 30)));
        for wrong in ["64", "64MB", "MiB", "-1MiB", "1.5GiB", "99999999999999GiB"] {
            assert!(wrong.parse::<Size>().is_err(), "{wrong:?}");
        }
    }
}
