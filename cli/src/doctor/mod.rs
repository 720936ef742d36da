//! `attestgate doctor` (SPEC §13): whether this node is wired for
//! attestgate, one check per link kubelet → proxy → containerd → shim,
//! and the state the node decides by (bundle, sync, audit log, trust
//! root). Each check reads what the daemons read, as they read it; none
//! passes without having looked.
//!
//! Every node path is taken under `--root` (hidden; `/` on a node), the
//! paths found in configuration files included, so tests lay out a whole
//! node in a temporary directory.

mod audit_log;
mod bundle;
mod containerd;
mod endpoint;
mod kubelet;
mod proxy;
mod report;
mod root;
mod scrape;
mod sync;
mod trust;

use std::path::{Path, PathBuf};
use std::time::Duration;

use attestgate_node::config::{self, ConfigFile};
use serde::Deserialize;

use crate::Outcome;
use report::Check;
use root::Root;

/// The proxy's default socket (SPEC §8; cri-proxy/src/config.rs).
const DEFAULT_LISTEN: &str = "/run/attestgate/cri.sock";
/// attestgate-sync's defaults (SPEC §10; sync/src/config.rs).
const DEFAULT_SYNC_STATE: &str = "/var/lib/attestgate/sync";
const DEFAULT_TRUST_ROOT: &str = "/etc/attestgate/root.json";

/// How long a socket or metrics endpoint may take: a daemon on this
/// node answers in milliseconds, and doctor must not hang a script.
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(clap::Args)]
pub struct Args {
    /// The node's configuration file.
    #[arg(long, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// One line per check for people, or one JSON document for automation.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    output: Format,
    /// Check the node laid out under DIR instead of `/` (for tests).
    #[arg(long, value_name = "DIR", hide = true, default_value = "/")]
    root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// The proxy's keys doctor needs; `ConfigFile` has already refused keys
/// no program reads.
#[derive(Deserialize, Default)]
struct ProxyKeys {
    listen: Option<PathBuf>,
    runtime_endpoint: Option<String>,
    metrics_listen: Option<String>,
}

/// The syncer's keys doctor needs.
#[derive(Deserialize, Default)]
struct SyncKeys {
    bundle_source: Option<String>,
    trust_root: Option<PathBuf>,
    sync_state: Option<PathBuf>,
    sync_metrics_listen: Option<String>,
}

struct Node {
    file: ConfigFile,
    proxy: ProxyKeys,
    sync: SyncKeys,
}

fn read_config(root: &Root, path: &Path) -> (Check, Option<Node>) {
    const NAME: &str = "config";
    let shown = path.display();
    let real = root.path(path);
    // Only the default may be missing, as for the daemons.
    let file = if !real.exists() && path == Path::new(config::DEFAULT_PATH) {
        Ok(ConfigFile::default())
    } else {
        ConfigFile::read(&real)
    };
    let keys = file.and_then(|file| {
        let mut proxy: ProxyKeys = file.keys_of(config::PROXY)?;
        let mut sync: SyncKeys = file.keys_of(config::SYNC)?;
        // An empty value turns these off, as the proxy and the syncer read
        // them.
        let set = |value: Option<String>| value.filter(|v| !v.is_empty());
        proxy.metrics_listen = set(proxy.metrics_listen);
        sync.bundle_source = set(sync.bundle_source);
        sync.sync_metrics_listen = set(sync.sync_metrics_listen);
        Ok(Node { file, proxy, sync })
    });
    match keys {
        Ok(node) => {
            let detail = if node.file.path.is_some() {
                format!("{shown} is valid")
            } else {
                format!("no {shown}: every key takes its default")
            };
            (Check::pass(NAME, detail), Some(node))
        }
        Err(e) => (
            Check::fail(
                NAME,
                // The error names the file as doctor opened it; say it as
                // the node knows it.
                e.to_string()
                    .replace(&real.display().to_string(), &shown.to_string()),
                format!(
                    "fix {shown} (`attestgate-proxy --config {shown} --check-config` validates it)"
                ),
            ),
            None,
        ),
    }
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let root = Root::new(args.root);
    let now = time::OffsetDateTime::now_utc();
    let (config_check, node) = read_config(&root, &args.config);
    let mut checks = vec![config_check];
    let (containerd_check, runtime) = containerd::check(&root, containerd::DEFAULT_CONFIG);
    let path_var = std::env::var("PATH").unwrap_or_default();
    let shim_check = containerd::check_shim(&root, runtime.as_ref(), &path_var);
    match node {
        Some(node) => {
            let settings = node.file.settings();
            let listen = node
                .proxy
                .listen
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_LISTEN));
            let runtime_endpoint = node
                .proxy
                .runtime_endpoint
                .clone()
                .unwrap_or_else(|| config::DEFAULT_RUNTIME_ENDPOINT.to_string());
            checks.push(kubelet::check(&root, &listen, &runtime_endpoint));
            checks.push(containerd_check);
            checks.push(shim_check);
            checks.push(proxy::check_answers(&root, &listen, TIMEOUT));
            checks.push(proxy::check_socket(&root, &listen));
            checks.push(proxy::check_metrics(
                node.proxy.metrics_listen.as_deref(),
                TIMEOUT,
            ));
            checks.push(bundle::check(&root, &settings.bundle, now));
            let state = node
                .sync
                .sync_state
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SYNC_STATE));
            checks.push(sync::check(
                &root,
                &sync::Sync {
                    source: node.sync.bundle_source.as_deref(),
                    state: &state,
                    bundle: &settings.bundle,
                    metrics_listen: node.sync.sync_metrics_listen.as_deref(),
                },
                now,
                TIMEOUT,
            ));
            checks.push(audit_log::check(&root, &settings.audit_log));
            let trust_root = node.sync.trust_root.clone().or_else(|| {
                node.sync
                    .bundle_source
                    .as_ref()
                    .map(|_| PathBuf::from(DEFAULT_TRUST_ROOT))
            });
            checks.push(trust::check(&root, trust_root.as_deref()));
        }
        None => {
            let unchecked = |name: &'static str| {
                Check::fail(
                    name,
                    "not checked: the configuration cannot be read",
                    "fix the configuration first",
                )
            };
            checks.push(unchecked("kubelet"));
            checks.push(containerd_check);
            checks.push(shim_check);
            for name in [
                "proxy",
                "proxy_socket",
                "metrics",
                "bundle",
                "sync",
                "audit_log",
                "trust_root",
            ] {
                checks.push(unchecked(name));
            }
        }
    }
    explain_refusals(&mut checks, rustix::process::geteuid().as_raw());
    let rendered = match args.output {
        Format::Text => report::text(&checks),
        Format::Json => report::json(&checks),
    };
    print!("{rendered}");
    Ok(if report::all_pass(&checks) {
        Outcome::Success
    } else {
        Outcome::Deny
    })
}

/// Run by another user than root, doctor is refused what the node's
/// programs, running as root, may do: a refusal is then doctor's, and the
/// remedy says so instead of sending the administrator after a fault that
/// may not be there.
fn explain_refusals(checks: &mut [Check], uid: u32) {
    if uid == 0 {
        return;
    }
    for check in checks
        .iter_mut()
        .filter(|c| !c.ok && c.detail.contains("os error 13"))
    {
        check.remedy = Some(format!(
            "doctor runs as uid {uid} and was refused: run it as root (`sudo attestgate doctor`), \
             as the node's programs run"
        ));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn empty_values_are_off_as_the_daemons_read_them() {
        let (_dir, root) = root::laid_out(&[(
            "/etc/attestgate/config.toml",
            "metrics_listen = \"\"\nbundle_source = \"\"\nsync_metrics_listen = \"\"\n",
        )]);
        let (check, node) = read_config(&root, Path::new(config::DEFAULT_PATH));
        assert!(check.ok, "{check:?}");
        let node = node.unwrap();
        assert_eq!(node.proxy.metrics_listen, None);
        assert_eq!(node.sync.bundle_source, None);
        assert_eq!(node.sync.sync_metrics_listen, None);
    }

    #[test]
    fn a_refusal_of_a_user_other_than_root_says_run_as_root() {
        let refused = || {
            Check::fail(
                "proxy",
                format!(
                    "nothing answers on /run/attestgate/cri.sock: {}",
                    std::io::Error::from_raw_os_error(13)
                ),
                "start it",
            )
        };
        let mut checks = vec![refused(), Check::fail("bundle", "invalid", "fix it")];
        explain_refusals(&mut checks, 1000);
        assert!(
            checks[0]
                .remedy
                .as_deref()
                .unwrap()
                .contains("run it as root")
        );
        assert_eq!(checks[1].remedy.as_deref(), Some("fix it"));
        // The audit log's access(2) says it the same way.
        assert!(
            rustix::io::Errno::ACCESS
                .to_string()
                .contains("os error 13")
        );
        let mut checks = vec![refused()];
        explain_refusals(&mut checks, 0);
        assert_eq!(checks[0].remedy.as_deref(), Some("start it"));
    }
}
