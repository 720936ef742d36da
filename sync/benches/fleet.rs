//! The fleet benchmark (SPEC §10): one registry, K simulated nodes in this
//! process, each a real `Syncer` with its own state directory and bundle
//! symlink, polling at the daemon's interval with the daemon's jitter.
//! Publishes version 1 and lets every node take it, lets them poll
//! unchanged for at least one interval, then publishes version 2 with one
//! attestor changed and measures how long the fleet takes to switch, what
//! each poll and each update cost at the registry, and what the process
//! spent in CPU and memory.
//!
//! scripts/bench-fleet.sh starts the registry and runs this; by hand:
//! `cargo bench -p attestgate-sync --bench fleet -- --registry 127.0.0.1:PORT`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/repo.rs"]
mod repo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use attestgate_registry::oci::{self, OciRef, RegistryOptions};
use attestgate_registry::tuf::{self, Trust};
use attestgate_sync::pass::{Outcome, Syncer};
use attestgate_sync::schedule::jittered;
use clap::Parser;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

use repo::{Publisher, attestor_yaml};

#[derive(Parser, Debug)]
struct Args {
    /// `127.0.0.1:PORT` of a plain-HTTP registry to publish to.
    #[arg(long)]
    registry: String,
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Poll interval in seconds (the daemon's `sync_interval`), jittered
    /// ±10% as the daemon does.
    #[arg(long, default_value_t = 30.0)]
    interval: f64,
    /// Unchanged polls every node makes before version 2 is pushed.
    #[arg(long, default_value_t = 1)]
    unchanged_polls: usize,
    /// The registry's access log, to count its requests against ours.
    #[arg(long)]
    access_log: Option<PathBuf>,
    /// Where node state goes (default: a temporary directory in /tmp).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Sequential verifications timed after the fleet run.
    #[arg(long, default_value_t = 200)]
    verify_samples: usize,
    /// Attestor files in the bundle (one of them changes in version 2).
    #[arg(long, default_value_t = 8)]
    attestors: usize,
    /// cargo bench passes this to every bench binary.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One pass of one node.
struct Pass {
    ended: Instant,
    result: &'static str,
    version: Option<u64>,
    requests: u32,
    bytes: u64,
    reason: Option<&'static str>,
}

/// Process CPU (user + system) and memory, from /proc.
#[derive(Clone, Copy, Debug)]
struct Usage {
    cpu: Duration,
    rss_kib: u64,
    hwm_kib: u64,
}

fn usage() -> Usage {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces: fields are counted after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime, fields 14 and 15 of proc(5), 12th and 13th after
    // the name; USER_HZ is 100 on every Linux a node runs.
    let cpu = Duration::from_millis((ticks(11) + ticks(12)) * 10);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Usage {
        cpu,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Mean, min and max of a set of counts.
fn spread(values: &[u64]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    let sum: u64 = values.iter().sum();
    format!(
        "mean {:.2}, min {}, max {} (n = {})",
        sum as f64 / values.len() as f64,
        values.iter().min().unwrap(),
        values.iter().max().unwrap(),
        values.len()
    )
}

type Tree = BTreeMap<String, (u64, [u8; 32])>;

/// Every file of a repository tree by path, with its length and SHA-256.
fn tree(dir: &Path) -> Tree {
    fn walk(dir: &Path, prefix: &str, out: &mut Tree) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            // publish stages beside the tree; only metadata/ and targets/
            // are pushed.
            if prefix.is_empty() && name != "metadata" && name != "targets" {
                continue;
            }
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &path, out);
            } else {
                let bytes = std::fs::read(entry.path()).unwrap();
                out.insert(path, (bytes.len() as u64, Sha256::digest(&bytes).into()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

/// GETs of the bundle repository in the access log, by kind and status:
/// only nodes GET it (a push sends HEAD, POST and PUT).
fn access_log_gets(path: &Path, repository: &str) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let needle = format!("\"GET /v2/{repository}/");
    let mut by_status = BTreeMap::new();
    for line in text.lines() {
        let Some(at) = line.find(&needle) else {
            continue;
        };
        let rest = &line[at + 1..];
        let Some(close) = rest.find('"') else {
            continue;
        };
        let kind = if rest[..close].contains("/manifests/") {
            "manifest"
        } else {
            "blob"
        };
        let status = rest[close + 1..]
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string();
        *by_status.entry(format!("{kind} {status}")).or_insert(0) += 1;
    }
    by_status
}

fn bundle_files(publisher: &Publisher, attestors: usize, changed: &str) -> Vec<(String, String)> {
    (0..attestors)
        .map(|i| {
            let name = format!("a{i}");
            let description = if i == 0 { changed } else { "unchanged" };
            (
                format!("attestors/{name}.yaml"),
                attestor_yaml(&name, description, &publisher.attestor_pem),
            )
        })
        .collect()
}

fn policy(attestors: usize) -> String {
    let mut policy = String::from(
        "defaultAdmissionRule:\n  evaluationMode: REQUIRE_ATTESTATION\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n  requireAttestationsBy:\n",
    );
    for i in 0..attestors {
        policy.push_str(&format!("  - projects/fleet/attestors/a{i}\n"));
    }
    policy
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.nodes > 0, "--nodes must be at least 1");
    anyhow::ensure!(args.attestors > 0, "--attestors must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run(args))
}

/// Waits until `count` reaches `total`, or fails after `limit`.
async fn wait_for(
    count: &AtomicUsize,
    total: usize,
    what: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while count.load(Ordering::Relaxed) < total {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: only {} of {total} nodes after {limit:?}",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What the fleet tasks count as they go, for the phases to wait on.
#[derive(Default)]
struct Counters {
    at_v1: AtomicUsize,
    at_v2: AtomicUsize,
    /// Nodes that have made their unchanged polls at version 1.
    settled: AtomicUsize,
}

async fn node(
    i: usize,
    mut syncer: Syncer,
    interval: Duration,
    unchanged_polls: usize,
    counters: Arc<Counters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Pass> {
    let mut passes = Vec::new();
    // A fleet that has been up a while polls at every phase of the
    // interval, not all at once.
    let first = interval.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
    tokio::select! {
        () = tokio::time::sleep(first) => {}
        _ = stop.changed() => return passes,
    }
    let mut current_polls = 0;
    loop {
        let outcome = syncer.pass().await;
        let ended = Instant::now();
        let (version, reason) = match &outcome {
            Outcome::Updated { version, .. } | Outcome::Current { version } => {
                (Some(*version), None)
            }
            Outcome::Refused { reason, .. } | Outcome::Failed { reason, .. } => {
                (None, Some(*reason))
            }
        };
        match &outcome {
            Outcome::Updated { version: 1, .. } => {
                counters.at_v1.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Updated { version: 2, .. } => {
                counters.at_v2.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Current { version: 1 } => {
                current_polls += 1;
                if current_polls == unchanged_polls {
                    counters.settled.fetch_add(1, Ordering::Relaxed);
                }
            }
            Outcome::Refused { message, .. } | Outcome::Failed { message, .. } => {
                eprintln!("node {i}: {}: {message}", outcome.result());
            }
            _ => {}
        }
        passes.push(Pass {
            ended,
            result: outcome.result(),
            version,
            requests: syncer.traffic.requests,
            bytes: syncer.traffic.bytes,
            reason,
        });
        tokio::select! {
            () = tokio::time::sleep(jittered(interval)) => {}
            _ = stop.changed() => return passes,
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(args.interval);
    let temp = tempfile::Builder::new()
        .prefix("ag-fleet.")
        .tempdir_in("/tmp")
        .context("work directory")?;
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&work).with_context(|| format!("{}", work.display()))?;
    let repository = "bundles/fleet";
    let reference = OciRef::parse(&format!("oci://{}/{repository}:current", args.registry))
        .context("registry address")?;
    let options = RegistryOptions {
        plain_http: vec![args.registry.clone()],
        timeout: Duration::from_secs(30),
        ..RegistryOptions::default()
    };

    let publisher = Publisher::new(&work.join("publisher")).await;
    publisher.write_bundle(
        &policy(args.attestors),
        &bundle_files(&publisher, args.attestors, "first"),
    );
    let v1 = publisher.publish().await;
    let pushed = oci::push_dir(&publisher.repo(), &reference, &options)
        .await
        .context("pushing version 1")?;
    let tree_v1 = tree(&publisher.repo());
    println!(
        "fleet: {} nodes, interval {:?} ±10%, registry {}, {} CPUs",
        args.nodes,
        interval,
        args.registry,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "version {}: {} files, {} bytes, {} blobs uploaded",
        v1.targets_version,
        pushed.files.len(),
        tree_v1.values().map(|(len, _)| len).sum::<u64>(),
        pushed.uploaded
    );

    let before_nodes = usage();
    let source = reference.to_string();
    let mut syncers = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let dir = work.join(format!("nodes/{i}"));
        syncers.push(
            Syncer::new(
                &source,
                &dir.join("state"),
                &publisher.trust_root(),
                &dir.join("bundle"),
                options.clone(),
            )
            .with_context(|| format!("node {i}"))?,
        );
    }
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let after_nodes = usage();
    let tasks: Vec<_> = syncers
        .into_iter()
        .enumerate()
        .map(|(i, syncer)| {
            tokio::spawn(node(
                i,
                syncer,
                interval,
                args.unchanged_polls,
                counters.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    let k = args.nodes;
    wait_for(&counters.at_v1, k, "version 1", interval * 4).await?;
    let v1_done = Instant::now();
    let usage_v1 = usage();
    let polls_limit = interval * (2 + 2 * args.unchanged_polls as u32);
    wait_for(&counters.settled, k, "unchanged polls", polls_limit).await?;
    let steady_done = Instant::now();
    let usage_steady = usage();

    publisher.write_bundle(
        &policy(args.attestors),
        &bundle_files(&publisher, args.attestors, "second"),
    );
    let v2 = publisher.publish().await;
    let push_started = Instant::now();
    let pushed2 = oci::push_dir(&publisher.repo(), &reference, &options)
        .await
        .context("pushing version 2")?;
    let pushed_at = Instant::now();
    let usage_push = usage();
    let tree_v2 = tree(&publisher.repo());
    let changed: Vec<(&String, u64)> = tree_v2
        .iter()
        .filter(|(path, file)| tree_v1.get(*path) != Some(file))
        .map(|(path, (len, _))| (path, *len))
        .collect();
    wait_for(&counters.at_v2, k, "version 2", interval * 4).await?;
    let v2_done = Instant::now();
    let usage_v2 = usage();
    let _ = stop_tx.send(true);
    let mut all = Vec::with_capacity(k);
    for task in tasks {
        all.push(task.await.context("a node task")?);
    }

    let mut switch = Vec::with_capacity(k);
    let (mut first_req, mut first_bytes) = (Vec::new(), Vec::new());
    let (mut poll_req, mut poll_bytes) = (Vec::new(), Vec::new());
    let (mut update_req, mut update_bytes) = (Vec::new(), Vec::new());
    let mut problems: BTreeMap<String, u64> = BTreeMap::new();
    let (mut total_requests, mut passes_total) = (0u64, 0u64);
    let (mut current_steady, mut current_all) = (0u64, 0u64);
    for pass in all.iter().flatten() {
        passes_total += 1;
        total_requests += u64::from(pass.requests);
        match (pass.result, pass.version) {
            ("updated", Some(1)) => {
                first_req.push(u64::from(pass.requests));
                first_bytes.push(pass.bytes);
            }
            ("updated", Some(2)) => {
                update_req.push(u64::from(pass.requests));
                update_bytes.push(pass.bytes);
                switch.push(pass.ended.saturating_duration_since(pushed_at));
            }
            ("current", _) => {
                current_all += 1;
                poll_req.push(u64::from(pass.requests));
                poll_bytes.push(pass.bytes);
                if pass.ended > v1_done && pass.ended < push_started {
                    current_steady += 1;
                }
            }
            (result, _) => {
                *problems
                    .entry(format!("{result}/{}", pass.reason.unwrap_or("?")))
                    .or_insert(0) += 1;
            }
        }
    }
    switch.sort();

    println!();
    println!("== from the push of version 2 until each node has switched");
    println!(
        "push of version {} took {} ({} blobs uploaded, {} requests)",
        v2.targets_version,
        secs(pushed_at - push_started),
        pushed2.uploaded,
        pushed2.traffic.requests
    );
    println!(
        "p50 {}  p99 {}  max {}  (switched: {} of {} nodes; target: all within 60 s)",
        secs(percentile(&switch, 50.0)),
        secs(percentile(&switch, 99.0)),
        secs(switch.last().copied().unwrap_or_default()),
        switch.len(),
        k
    );
    println!(
        "every node at version 1 {} after the fleet started (first polls spread over one interval)",
        secs(v1_done - started)
    );

    println!();
    println!("== registry traffic per node and pass (Traffic)");
    println!(
        "first sync:     requests {}; bytes {}",
        spread(&first_req),
        spread(&first_bytes)
    );
    println!(
        "unchanged poll: requests {}; bytes {}",
        spread(&poll_req),
        spread(&poll_bytes)
    );
    println!(
        "update to v2:   requests {}; bytes {}",
        spread(&update_req),
        spread(&update_bytes)
    );
    let changed_bytes: u64 = changed.iter().map(|(_, len)| len).sum();
    println!(
        "files version 2 changed: {} ({} bytes): {}",
        changed.len(),
        changed_bytes,
        changed
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "an update that fetches only those: 1 manifest + {} blobs = {} requests; the whole repository is {} files, {} bytes",
        changed.len(),
        changed.len() + 1,
        tree_v2.len(),
        tree_v2.values().map(|(len, _)| len).sum::<u64>()
    );
    if problems.is_empty() {
        println!("refused or failed passes: none");
    } else {
        println!("refused or failed passes: {problems:?}");
    }
    println!(
        "passes: {passes_total}, {current_all} unchanged ({current_steady} of them between version 1 everywhere and the push)"
    );
    if let Some(log) = &args.access_log {
        // distribution writes a line as each request completes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let by_status = access_log_gets(log, repository);
        let logged: u64 = by_status.values().sum();
        let agree = |a: u64, b: u64| if a == b { "agree" } else { "DIFFER" };
        println!(
            "access log: {logged} GETs of {repository} {by_status:?}; Traffic counted {total_requests} requests: {}",
            agree(logged, total_requests)
        );
        let not_modified = by_status.get("manifest 304").copied().unwrap_or(0);
        println!(
            "access log: {not_modified} manifest 304s; {current_all} unchanged passes: {}",
            agree(not_modified, current_all)
        );
    }

    println!();
    println!("== process CPU and memory ({k} nodes in one process)");
    let kf = k as f64;
    let cpu_ms = |a: Usage, b: Usage| b.cpu.saturating_sub(a.cpu).as_secs_f64() * 1000.0;
    println!(
        "setting up {k} syncers: {:.0} ms CPU, RSS {} -> {} KiB",
        cpu_ms(before_nodes, after_nodes),
        before_nodes.rss_kib,
        after_nodes.rss_kib
    );
    println!(
        "first sync of the fleet: {:.0} ms CPU over {} = {:.2} ms per node",
        cpu_ms(after_nodes, usage_v1),
        secs(v1_done - started),
        cpu_ms(after_nodes, usage_v1) / kf
    );
    let steady_wall = (steady_done - v1_done).as_secs_f64();
    println!(
        "unchanged polling: {:.0} ms CPU over {} ({current_steady} polls) = {:.3} ms per poll, {:.1}% of one core",
        cpu_ms(usage_v1, usage_steady),
        secs(steady_done - v1_done),
        cpu_ms(usage_v1, usage_steady) / current_steady.max(1) as f64,
        cpu_ms(usage_v1, usage_steady) / steady_wall.max(0.001) / 10.0
    );
    println!(
        "update (push to all switched): {:.0} ms CPU over {} = {:.2} ms per node (the unchanged polls of nodes not yet switched included)",
        cpu_ms(usage_push, usage_v2),
        secs(v2_done - pushed_at),
        cpu_ms(usage_push, usage_v2) / kf
    );
    println!(
        "RSS at the end {} KiB, peak {} KiB; {:.1} KiB per node over the RSS before the syncers",
        usage_v2.rss_kib,
        usage_v2.hwm_kib,
        usage_v2.rss_kib.saturating_sub(before_nodes.rss_kib) as f64 / kf
    );

    // Verification alone, one at a time with the fleet stopped, so the
    // figure is not mixed with polling.
    let root = std::fs::read(publisher.trust_root())?;
    let limits = tuf::Limits::default();
    let samples = args.verify_samples.max(1);
    let (before, wall) = (usage(), Instant::now());
    for _ in 0..samples {
        let trust = Trust::ephemeral(&root).context("trust")?;
        tuf::verify_dir(&trust, &publisher.repo(), &limits)
            .await
            .context("verify")?;
    }
    println!(
        "TUF verification of the whole repository (verify_dir, {samples} runs): {:.3} ms CPU, {:.3} ms wall each",
        cpu_ms(before, usage()) / samples as f64,
        wall.elapsed().as_secs_f64() * 1000.0 / samples as f64
    );
    let (before, wall) = (usage(), Instant::now());
    for _ in 0..samples {
        attestgate_policy::Bundle::load(&publisher.bundle()).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    println!(
        "policy check of the bundle (Bundle::load, {samples} runs): {:.3} ms CPU, {:.3} ms wall each",
        cpu_ms(before, usage()) / samples as f64,
        wall.elapsed().as_secs_f64() * 1000.0 / samples as f64
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at the end: {}", load.trim());
    }
    drop(temp);
    Ok(())
}
