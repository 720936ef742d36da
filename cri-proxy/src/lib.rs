//! attestgate-proxy: the node daemon. kubelet talks CRI to this process as
//! if it were containerd; it forwards everything to containerd, deciding on
//! PullImage and CreateContainer first.
//!
//! A call goes: `server.rs` (accept) → `connection.rs` (a thread relaying
//! the connection frame by frame to containerd through `relay`, which
//! takes out what `CriHooks` says: the two decided calls, StartContainer,
//! and ImageService calls when the image endpoint is apart) →
//! `intercept/{pull,create}.rs` (resolve the image through containerd,
//! decide with attestgate-node, write the audit record) → `upstream.rs`
//! (the same bytes to containerd, on the client the lookups use too).

pub mod check;
pub mod config;
pub mod connection;
pub mod continuous;
pub use attestgate_node::content;
pub mod cri;
pub mod grpc;
pub mod intercept;
pub mod metrics;
pub mod relay;
pub mod resolve;
pub mod server;
pub mod signatures;
pub mod upstream;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::UnixListener;

use attestgate_node::{AttestationCache, AuditLog, BundleStore, Decider};
use attestgate_registry::access::Registries;

use crate::config::Config;

/// Serves until SIGTERM or Ctrl-C, then drains.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    };
    serve_until(config, shutdown).await
}

/// The whole daemon, in this process, until `shutdown` resolves; then calls
/// in flight finish (for 30 s at most). What `run` serves, and what the
/// in-process tests start beside a CRI server of their own.
pub async fn serve_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::new());
    let store = Arc::new(BundleStore::new(
        config.node.bundle.clone(),
        metrics.clone(),
    ));
    {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.reload(true))
            .await
            .context("loading the bundle")?;
    }
    let audit = AuditLog::open(&config.node.audit_log).with_context(|| {
        format!(
            "cannot open the audit log {}",
            config.node.audit_log.display()
        )
    })?;
    // One client per endpoint, for lookups and decided calls alike.
    let runtime_client = upstream::Upstream::new(config.runtime_endpoint.clone());
    let image_client = if config.image_endpoint == config.runtime_endpoint {
        runtime_client.clone()
    } else {
        upstream::Upstream::new(config.image_endpoint.clone())
    };
    let runtime = resolve::ContainerdImages::new(runtime_client.clone(), image_client.clone());
    // Registry signatures (SPEC §11): looked up only while some attestor or
    // platform policy check of the bundle in force may count them, which a
    // new bundle may change; the registries' files are read now, so a
    // missing one is a start-up error rather than a silent anonymous lookup.
    let cache = AttestationCache::new(config.node.attestation_cache.clone());
    let access = &config.node.registries;
    let registries = match Registries::load(
        access.plain_http.clone(),
        &access.extra_ca,
        access.credentials.clone(),
        access.timeout,
    ) {
        Ok(registries) => Some(registries),
        Err(e) if config.node.evaluation.registry_attestors.is_none() => {
            // Only a bundle's platform policy could want them: the proxy
            // serves, and a pull's lookup adds nothing, as when it fails.
            tracing::warn!(error = %e, "the registries' configuration cannot be read; no registry signatures are looked up");
            None
        }
        Err(e) => return Err(anyhow::Error::msg(e)),
    };
    let signatures = registries.map(|registries| {
        Arc::new(signatures::Signatures {
            metrics: metrics.clone(),
            registries,
            limits: attestgate_registry::signatures::SignatureLimits::default(),
            cache: cache.clone(),
        })
    });
    let content = Some(content::ContentStore::new(
        &config.runtime_endpoint,
        content::CRI_NAMESPACE,
        Duration::from_secs(5),
    ));
    let gate = Arc::new(intercept::Gate {
        decider: Arc::new(
            Decider::new(
                store.clone(),
                config.node.evaluation.clone(),
                config.node.fail_mode,
                audit,
                metrics.clone(),
            )
            .with_attestation_cache(cache),
        ),
        metrics: metrics.clone(),
        runtime,
        upstream: runtime_client,
        images: image_client,
        unconfirmed: intercept::Unconfirmed::default(),
        pull_timeout: config.pull_timeout,
        signatures,
        content,
    });
    let validator = continuous::Validator {
        decider: gate.decider.clone(),
        containers: continuous::CriContainers {
            runtime: gate.upstream.clone(),
            images: gate.images.clone(),
        },
        metrics: metrics.clone(),
        action: config.cv_action,
        interval: config.cv_interval,
        // Watched whether or not decisions read it now: which keys do is
        // the bundle's to say (a platform policy's sigstore authorities).
        attestation_cache: Some(config.node.attestation_cache.clone()),
        rate: continuous::CONTAINERS_PER_SECOND,
        recorded: std::sync::Mutex::default(),
    };
    if config.cv_action == config::CvAction::Off {
        tracing::info!("continuous validation is off (cv_action = \"off\")");
    } else {
        tokio::spawn(validator.run());
    }
    let reopen_gate = gate.clone();
    attestgate_node::store::spawn_watcher(store, move || {
        // Said either way: after a rotation this line is how an operator
        // knows records go to the new file.
        match reopen_gate.decider.audit.reopen() {
            Ok(()) => tracing::info!(
                path = %reopen_gate.decider.audit.path().display(),
                "audit log reopened"
            ),
            Err(e) => tracing::error!(error = %e, "cannot reopen the audit log"),
        }
    })?;
    if let Some(addr) = config.metrics_listen {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, metrics).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }

    let listener = listen(&config.listen)?;
    tracing::info!(
        listen = %config.listen.display(),
        runtime = %config.runtime_endpoint.display(),
        bundle = %config.node.bundle.display(),
        audit_log = %config.node.audit_log.display(),
        "attestgate-proxy ready"
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let runtime: Arc<Path> = Arc::from(config.runtime_endpoint.as_path());
    let max_connections = connection_budget(config.max_connections);
    server::serve(
        listener,
        runtime,
        gate,
        shutdown,
        Duration::from_secs(30),
        server::Limits {
            max_connections,
            handshake: config.handshake_timeout,
            budget: relay::Budget::new(config.memory_budget),
        },
    )
    .await;
    Ok(())
}

/// Descriptors one client connection holds: the client, containerd, its
/// epoll set and its eventfd.
const FDS_PER_CONNECTION: u64 = 4;
/// Descriptors for everything else: the listener, the audit log, bundle
/// watching, metrics, and the decisions' own connections to containerd.
const FDS_RESERVED: u64 = 128;

/// How many connections the open-file limit can hold, up to `wanted`.
///
/// The soft limit is raised to the hard one first, as Go programs
/// (containerd among them) do at start: the usual soft 1024 would otherwise
/// end connections with EMFILE at ~220 clients, long before the cap.
fn connection_budget(wanted: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current;
    if limit.current != limit.maximum && limit.maximum.is_some() {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => soft = limit.maximum,
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    let serving = connections_within(soft, wanted);
    if serving < wanted {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = soft,
            serving,
            "the open-file limit cannot hold max_connections; serving fewer"
        );
    }
    serving
}

/// The connections an open-file limit (`None`: unlimited) holds, up to
/// `wanted`, and at least one.
fn connections_within(open_file_limit: Option<u64>, wanted: usize) -> usize {
    let Some(limit) = open_file_limit else {
        return wanted;
    };
    let fits = usize::try_from(limit.saturating_sub(FDS_RESERVED) / FDS_PER_CONNECTION)
        .unwrap_or(usize::MAX)
        .max(1);
    fits.min(wanted)
}

/// The listening socket: handed over by systemd (LISTEN_FDS), or bound at
/// `path`, replacing a stale socket file a crash left behind but never one
/// another live proxy is serving.
fn listen(path: &Path) -> anyhow::Result<UnixListener> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 0 {
        let listener = fds
            .take_unix_listener(0)
            .context("LISTEN_FDS: fd 3 is not a Unix stream socket")?
            .context("LISTEN_FDS set but no socket passed")?;
        listener.set_nonblocking(true)?;
        tracing::info!("using the socket passed by systemd");
        return Ok(UnixListener::from_std(listener)?);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use by another process", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        tracing::info!(path = %path.display(), "removed a stale socket");
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_bounds_the_connections() {
        assert_eq!(connections_within(None, 1024), 1024);
        assert_eq!(connections_within(Some(1 << 20), 1024), 1024);
        // The usual soft limit: 1024 descriptors, 128 kept for the rest.
        assert_eq!(connections_within(Some(1024), 1024), 224);
        assert_eq!(connections_within(Some(1024), 100), 100);
        assert_eq!(connections_within(Some(16), 1024), 1);
    }
}
