//! attestgate-sync: brings signed bundles (SPEC §10) from a registry, a
//! directory or a web server into the node's bundle store. The proxy and
//! the shim pick a new version up as they do any bundle change; nothing
//! they decide waits on this program or on the network.
//!
//! Exit codes with `--once`: 0 updated or current, 1 refused, 2
//! unreachable (or the node could not write); a daemon that cannot start
//! exits 2.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use attestgate_registry::access::Registries;
use attestgate_registry::oci::RegistryOptions;
use clap::Parser as _;

use attestgate_sync::config::{Config, Flags};
use attestgate_sync::metrics::{Metrics, ResultLabels};
use attestgate_sync::pass::{Outcome, Syncer};
use attestgate_sync::schedule::jittered;
use attestgate_sync::versions;

fn main() -> ExitCode {
    let flags = Flags::parse();
    if let Some(dir) = &flags.write_manual {
        use clap::CommandFactory as _;
        return match attestgate_node::manual::write(Flags::command(), dir) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "attestgate-sync: cannot write the manual under {}: {e}",
                    dir.display()
                );
                ExitCode::from(2)
            }
        };
    }
    let config = Config::load(flags);
    // The file may ask for JSON logs: read it before the first line.
    init_logging(config.as_ref().is_ok_and(|c| c.log_json));
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // journald and log files want no colour codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn registry_options(config: &Config) -> anyhow::Result<RegistryOptions> {
    // The registry (or web server) the source names: its CA and its
    // credentials, no other registry's.
    let host = config
        .source
        .as_deref()
        .and_then(|source| source.split_once("://"))
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or_default();
    // Only the source's own CA files are read: one for a registry the
    // syncer never talks to must not keep it from starting.
    let own_ca: Vec<_> = config
        .extra_ca
        .iter()
        .filter(|(for_host, _)| for_host == host)
        .cloned()
        .collect();
    Registries::load(
        config.plain_http.clone(),
        &own_ca,
        config.registry_credentials.clone(),
        config.registry_timeout,
    )
    .and_then(|registries| registries.options_for(host, None))
    .map_err(anyhow::Error::msg)
}

async fn run(config: Config) -> anyhow::Result<u8> {
    let Some(source) = config.source.clone() else {
        tracing::info!(
            "no bundle_source is configured (or --source given): the bundle directory is the node's own, nothing to sync"
        );
        return Ok(0);
    };
    let mut syncer = Syncer::new(
        &source,
        &config.state,
        &config.trust_root,
        &config.bundle,
        registry_options(&config)?,
    )?;
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = config.metrics_listen {
        let served = metrics.clone();
        // Bound before the first pass, so a wrong address fails at start.
        let listener = attestgate_node::metrics_http::bind(addr).await?;
        tokio::spawn(async move {
            attestgate_node::metrics_http::serve_on(listener, move || served.encode()).await;
        });
    }
    if let Some((_, Some(freshness))) = versions::current(syncer.bundle()) {
        metrics.version.set(freshness.version as i64);
        metrics.expires_at.set(freshness.expires.unix_timestamp());
    }
    if config.once {
        let outcome = syncer.pass().await;
        report(&syncer, &metrics, &outcome);
        return Ok(outcome.exit_code());
    }
    tracing::info!(
        source = %source,
        bundle = %config.bundle.display(),
        interval = ?config.interval,
        "syncing"
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let outcome = syncer.pass().await;
        report(&syncer, &metrics, &outcome);
        let wait = jittered(config.interval);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = terminate.recv() => {
                tracing::info!("stopping");
                return Ok(0);
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("stopping");
                return Ok(0);
            }
        }
    }
}

fn report(syncer: &Syncer, metrics: &Metrics, outcome: &Outcome) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    metrics
        .polls
        .get_or_create(&ResultLabels {
            result: outcome.result(),
        })
        .inc();
    metrics.requests.inc_by(u64::from(syncer.traffic.requests));
    metrics.bytes.inc_by(syncer.traffic.bytes);
    match outcome {
        Outcome::Updated { version, expires } => {
            tracing::info!(
                source = %syncer.source_text,
                version,
                expires = %attestgate_policy::decision::format_time(*expires),
                "new bundle version in force"
            );
            metrics.updates.inc();
            metrics.last_success.set(now);
            metrics.version.set(*version as i64);
            metrics.expires_at.set(expires.unix_timestamp());
        }
        Outcome::Current { version } => {
            tracing::debug!(version, "bundle is current");
            metrics.last_success.set(now);
            if let Some((_, Some(freshness))) = versions::current(syncer.bundle()) {
                metrics.expires_at.set(freshness.expires.unix_timestamp());
            }
        }
        Outcome::Refused { reason, message } | Outcome::Failed { reason, message } => {
            let what = if matches!(outcome, Outcome::Refused { .. }) {
                "refused"
            } else {
                "sync failed"
            };
            tracing::warn!(
                source = %syncer.source_text,
                reason,
                "{what}, the bundle in force stays: {message}"
            );
            metrics.failed(reason, now);
        }
    }
}
