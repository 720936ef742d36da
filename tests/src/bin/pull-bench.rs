//! PullImage of a signed image three ways in the same run (SPEC §11
//! benchmark): direct to containerd, through the proxy with the image
//! attested in the bundle, and through the proxy with its cosign signature
//! in the registry (looked up beside the pull, the attestation cache
//! emptied first so every pull looks up). Rounds rotate the order of the
//! paths; each pull starts with the image removed, so every one fetches
//! its layers. Then the signature lookup alone, as the proxy makes it, for
//! what the pull would wait were it not run beside it. Then
//! CreateContainer through the proxy for an image whose
//! signature is in the warm attestation cache against one attested in the
//! bundle, alternating.
//!
//! Run by `scripts/bench-signatures.sh`, which sets up the node.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Instant;

use attestgate_e2e::cri::{Cri, pod_config};
use attestgate_e2e::stats::{ORDERS, median_with_interval};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    direct: String,
    #[arg(long)]
    proxy: String,
    /// Signed by a cosign signature in the registry only.
    #[arg(long)]
    registry_signed: String,
    /// Attested in the bundle only.
    #[arg(long)]
    bundle_signed: String,
    /// The proxy's attestation cache, emptied before each registry pull.
    #[arg(long)]
    cache: PathBuf,
    #[arg(long, default_value_t = 24)]
    rounds: usize,
    #[arg(long, default_value_t = 40)]
    create_iterations: usize,
    #[arg(long, default_value = "/tmp/pull-bench-logs")]
    log_dir: String,
    #[arg(long, default_value = "")]
    cgroup_parent: String,
}

/// How long a removed image is given before the next pull is timed.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

fn empty(dir: &PathBuf) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `host:port`, the repository path and the tag of `host:port/path:tag`.
fn split_reference(reference: &str) -> anyhow::Result<(String, String, String)> {
    let (name, tag) = reference
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .ok_or_else(|| anyhow::anyhow!("{reference} names no tag"))?;
    let (registry, repository) = name
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{reference} names no registry"))?;
    Ok((registry.into(), repository.into(), tag.into()))
}

fn row(name: &str, v: Vec<f64>) {
    let (m, low, high) = median_with_interval(v);
    println!("| {name} | {m:.2} [{low:.2}, {high:.2}] |");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let direct = Cri::connect(&args.direct).await?;
    let proxy = Cri::connect(&args.proxy).await?;
    let paths: [(&str, &Cri, &str); 3] = [
        (
            "direct, registry-signed image",
            &direct,
            &args.registry_signed,
        ),
        ("proxy, bundle attestation", &proxy, &args.bundle_signed),
        ("proxy, registry signature", &proxy, &args.registry_signed),
    ];
    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        for &pi in &ORDERS[round % ORDERS.len()] {
            let (_, cri, image) = paths[pi];
            // Untimed: the image goes, so the pull fetches it again, and
            // the cache is emptied, so the proxy looks up again.
            let _ = direct.remove_image(image).await;
            empty(&args.cache);
            // containerd collects what the removal freed (snapshots,
            // blobs) after it answers; a pull that overlaps the
            // collection measures it, not the path.
            tokio::time::sleep(SETTLE).await;
            let started = Instant::now();
            cri.pull(image, None).await?;
            times[pi].push(started.elapsed().as_secs_f64() * 1e3);
        }
        eprintln!("round {}/{} done", round + 1, args.rounds);
    }
    println!(
        "PullImage by tag, {} rounds (paths rotated each round), ms: median [95 % interval]",
        args.rounds
    );
    println!("| path | pull ms |");
    println!("|---|---|");
    for (pi, (name, _, _)) in paths.iter().enumerate() {
        row(name, times[pi].clone());
    }
    let minus = |a: usize, b: usize| -> Vec<f64> {
        times[a].iter().zip(&times[b]).map(|(x, y)| x - y).collect()
    };
    let ratio = |a: usize, b: usize| -> Vec<f64> {
        times[a].iter().zip(&times[b]).map(|(x, y)| x / y).collect()
    };
    println!();
    println!("Round by round: median [95 % interval]");
    println!("| comparison | value |");
    println!("|---|---|");
    row("registry signature - direct, ms", minus(2, 0));
    row("registry signature - bundle attestation, ms", minus(2, 1));
    row("bundle attestation - direct, ms", minus(1, 0));
    row("registry signature / bundle attestation", ratio(2, 1));

    // The lookup on its own, as the proxy makes it beside a pull by tag
    // (resolve the tag, the `.sig` tag, the referrers API and its fallback
    // tag): what the pull would wait for were it not run alongside.
    let mut lookups = Vec::new();
    let (registry, repository, tag) = split_reference(&args.registry_signed)?;
    let options = attestgate_registry::oci::RegistryOptions {
        plain_http: vec![registry.clone()],
        ..Default::default()
    };
    let limits = attestgate_registry::signatures::SignatureLimits::default();
    let platform = attestgate_registry::signatures::Platform::this_machine();
    for _ in 0..args.rounds {
        let started = Instant::now();
        let found = attestgate_registry::signatures::lookup_image(
            &options,
            &registry,
            &repository,
            &tag,
            &platform,
            &limits,
        )
        .await?;
        lookups.push(started.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            found.signatures.iter().any(|(_, s)| !s.is_empty()),
            "the lookup found no signature"
        );
    }
    println!();
    println!("| the signature lookup alone, {} times | ms |", args.rounds);
    println!("|---|---|");
    row(
        "lookup by tag (resolve, .sig, referrers, fallback tag)",
        lookups,
    );

    // CreateContainer with the cache warm: pull both once more through the
    // proxy, which leaves the registry-signed image's signature cached.
    for image in [&args.registry_signed, &args.bundle_signed] {
        proxy.pull(image, None).await?;
    }
    std::fs::create_dir_all(&args.log_dir)?;
    let pod = pod_config("bench", "create", &args.log_dir, &args.cgroup_parent);
    let pod_id = direct.run_pod(&pod).await?;
    let mut creates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..args.create_iterations * 2 {
        let which = (i + i / 2) % 2;
        let image = if which == 0 {
            &args.registry_signed
        } else {
            &args.bundle_signed
        };
        let started = Instant::now();
        let id = proxy
            .create_container(&pod_id, &pod, &format!("c{i}"), image, image, &[])
            .await?;
        creates[which].push(started.elapsed().as_secs_f64() * 1e3);
        let mut rt = direct.runtime.clone();
        rt.remove_container(k8s_cri::v1::RemoveContainerRequest { container_id: id })
            .await?;
    }
    let _ = direct.stop_pod(&pod_id).await;
    let _ = direct.remove_pod(&pod_id).await;
    println!();
    println!(
        "CreateContainer through the proxy, {} each, alternating, ms: median [95 % interval]",
        args.create_iterations
    );
    println!("| attestation | create ms |");
    println!("|---|---|");
    row("registry signature, warm cache", creates[0].clone());
    row("bundle attestation", creates[1].clone());
    let pairs: Vec<f64> = creates[0]
        .iter()
        .zip(&creates[1])
        .map(|(c, b)| c / b)
        .collect();
    let (r, low, high) = median_with_interval(pairs);
    println!("cache / bundle, pair by pair: median {r:.3}x, 95 % interval [{low:.3}, {high:.3}]");
    Ok(())
}
