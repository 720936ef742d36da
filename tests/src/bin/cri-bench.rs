//! CRI call throughput and latency through three paths in the same run:
//! containerd directly, a plain byte relay (socat), and attestgate-proxy.
//! Rounds vary the order of the paths (see `ORDERS`) so drift in the
//! machine's load hits all three alike. Then CreateContainer +
//! StartContainer latency, proxy vs direct, alternating.
//!
//! Run by `scripts/bench-proxy.sh`, which sets up the node.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use attestgate_e2e::cri::{Cri, pod_config};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    direct: String,
    #[arg(long)]
    relay: String,
    #[arg(long)]
    proxy: String,
    /// Rounds of every (path, method, concurrency) cell.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per cell per round.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Image for the create+start measurement (signed, on the node).
    #[arg(long)]
    image: Option<String>,
    #[arg(long, default_value_t = 60)]
    create_iterations: usize,
    #[arg(long, default_value = "/tmp/cri-bench-logs")]
    log_dir: String,
    #[arg(long, default_value = "")]
    cgroup_parent: String,
    /// The relay's process, for its CPU time per call (children included:
    /// socat forks one per connection).
    #[arg(long)]
    relay_pid: Option<u32>,
    /// The proxy's process, for its CPU time per call.
    #[arg(long)]
    proxy_pid: Option<u32>,
}

/// CPU time a process and its reaped children have used, in seconds
/// (utime, stime, cutime, cstime of /proc/PID/stat).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is 3rd.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..15)?
        .iter()
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    Some(ticks / 100.0)
}

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Version,
    ListContainers,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Version => "Version",
            Method::ListContainers => "ListContainers",
        }
    }
}

async fn call(cri: &Cri, method: Method) {
    match method {
        Method::Version => {
            cri.version().await.expect("Version");
        }
        Method::ListContainers => {
            cri.list_containers().await.expect("ListContainers");
        }
    }
}

const WARM_UP_CALLS: usize = 20;

/// Runs `concurrency` callers for `seconds`; returns (calls/s, latencies).
async fn cell(cri: &Cri, method: Method, concurrency: usize, seconds: f64) -> (f64, Vec<Duration>) {
    for _ in 0..WARM_UP_CALLS {
        call(cri, method).await;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let cri = cri.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                call(&cri, method).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    (all.len() as f64 / elapsed, all)
}

use attestgate_e2e::stats::{ORDERS, median, median_with_interval, percentile};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut paths = vec![
        ("direct", Cri::connect(&args.direct).await?),
        ("relay", Cri::connect(&args.relay).await?),
        ("proxy", Cri::connect(&args.proxy).await?),
    ];
    let methods = [Method::Version, Method::ListContainers];
    let concurrencies = [1usize, 4];
    // results[path][method][concurrency] = per-round (calls/s, p50 µs, p99 µs)
    let cpu_before = [args.relay_pid, args.proxy_pid].map(|pid| pid.and_then(cpu_seconds));
    let mut calls_per_path = [0usize; 3];
    let mut results =
        vec![
            vec![vec![Vec::<(f64, f64, f64)>::new(); concurrencies.len()]; methods.len()];
            paths.len()
        ];
    for round in 0..args.rounds {
        let order = ORDERS[round % ORDERS.len()];
        for (mi, &method) in methods.iter().enumerate() {
            for (ci, &concurrency) in concurrencies.iter().enumerate() {
                for &pi in &order {
                    let (rate, mut latencies) =
                        cell(&paths[pi].1, method, concurrency, args.seconds).await;
                    calls_per_path[pi] += latencies.len() + WARM_UP_CALLS;
                    latencies.sort();
                    let p50 = percentile(&latencies, 0.5).as_secs_f64() * 1e6;
                    let p99 = percentile(&latencies, 0.99).as_secs_f64() * 1e6;
                    results[pi][mi][ci].push((rate, p50, p99));
                }
            }
        }
        eprintln!("round {}/{} done", round + 1, args.rounds);
    }

    println!(
        "CRI calls, median of {} rounds x {:.1} s per cell (paths alternated each round)",
        args.rounds, args.seconds
    );
    println!(
        "| method | concurrency | path | calls/s | p50 µs | p99 µs | throughput vs direct | added p50 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (mi, method) in methods.iter().enumerate() {
        for (ci, concurrency) in concurrencies.iter().enumerate() {
            let stat = |pi: usize| {
                let cells = &results[pi][mi][ci];
                (
                    median(cells.iter().map(|c| c.0).collect()),
                    median(cells.iter().map(|c| c.1).collect()),
                    median(cells.iter().map(|c| c.2).collect()),
                )
            };
            let (direct_rate, direct_p50, _) = stat(0);
            for (pi, (name, _)) in paths.iter().enumerate() {
                let (rate, p50, p99) = stat(pi);
                println!(
                    "| {} | {concurrency} | {name} | {rate:.0} | {p50:.0} | {p99:.0} | {:.2}x | {:+.0} |",
                    method.name(),
                    rate / direct_rate,
                    p50 - direct_p50
                );
            }
        }
    }

    // The same two paths in the same round ran back to back: comparing
    // them round by round takes out what the machine did between rounds.
    println!();
    println!(
        "Proxy against the relay, round by round (median over rounds, 95 % interval of that median):"
    );
    println!(
        "| method | concurrency | proxy / relay calls/s | rounds proxy ahead | proxy - relay p50 µs | verdict |"
    );
    println!("|---|---|---|---|---|---|");
    for (mi, method) in methods.iter().enumerate() {
        for (ci, concurrency) in concurrencies.iter().enumerate() {
            let (relay, proxy) = (&results[1][mi][ci], &results[2][mi][ci]);
            let ratios: Vec<f64> = relay.iter().zip(proxy).map(|(r, p)| p.0 / r.0).collect();
            let p50s: Vec<f64> = relay.iter().zip(proxy).map(|(r, p)| p.1 - r.1).collect();
            let ahead = ratios.iter().filter(|&&r| r >= 1.0).count();
            let (ratio, ratio_low, ratio_high) = median_with_interval(ratios);
            let (p50, p50_low, p50_high) = median_with_interval(p50s);
            let verdict = if ratio_high < 1.0 || p50_low > 0.0 {
                "proxy slower"
            } else if ratio_low > 1.0 && p50_high < 0.0 {
                "proxy faster"
            } else {
                "level"
            };
            println!(
                "| {} | {concurrency} | {ratio:.3} [{ratio_low:.3}, {ratio_high:.3}] | {ahead}/{} | {p50:+.1} [{p50_low:+.1}, {p50_high:+.1}] | {verdict} |",
                method.name(),
                relay.len()
            );
        }
    }

    // socat's per-connection children are reaped once their connection
    // closes, and only then counted in its CPU time.
    drop(paths.remove(1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_after = [args.relay_pid, args.proxy_pid].map(|pid| pid.and_then(cpu_seconds));
    let mut hop_cpu = Vec::new();
    for (i, (name, calls)) in [("relay", calls_per_path[1]), ("proxy", calls_per_path[2])]
        .into_iter()
        .enumerate()
    {
        if let (Some(before), Some(after)) = (cpu_before[i], cpu_after[i]) {
            hop_cpu.push(format!(
                "{name} {:.1} µs ({calls} calls)",
                (after - before) * 1e6 / calls as f64
            ));
        }
    }
    if !hop_cpu.is_empty() {
        println!();
        println!("CPU time of the hop per call: {}", hop_cpu.join(", "));
    }

    if let Some(image) = &args.image {
        let direct = &paths[0].1;
        let proxy = &paths[1].1;
        std::fs::create_dir_all(&args.log_dir)?;
        let pod = pod_config("bench", "create-start", &args.log_dir, &args.cgroup_parent);
        let image_id = direct.pull(image, None).await?;
        let pod_id = direct.run_pod(&pod).await?;
        let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for i in 0..args.create_iterations * 2 {
            // Pairs, each in the other order from the last, so neither path
            // always follows the other's clean-up.
            let proxy_first = (i / 2) % 2 == 0;
            let (which, cri) = if (i % 2 == 0) == proxy_first {
                (0, proxy)
            } else {
                (1, direct)
            };
            let started = Instant::now();
            let id = cri
                .create_container(&pod_id, &pod, &format!("c{i}"), &image_id, image, &[])
                .await?;
            cri.start_container(&id).await?;
            times[which].push(started.elapsed().as_secs_f64() * 1e3);
            // Clean up outside the timed part.
            let mut rt = direct.runtime.clone();
            rt.stop_container(k8s_cri::v1::StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await?;
            rt.remove_container(k8s_cri::v1::RemoveContainerRequest { container_id: id })
                .await?;
        }
        let _ = direct.stop_pod(&pod_id).await;
        let _ = direct.remove_pod(&pod_id).await;
        let proxy_median = median(times[0].clone());
        let direct_median = median(times[1].clone());
        let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        println!();
        println!(
            "CreateContainer + StartContainer, {} each, alternating (two-attestor policy on the proxy)",
            args.create_iterations
        );
        println!("| path | median ms | mean ms |");
        println!("|---|---|---|");
        println!("| direct | {direct_median:.1} | {:.1} |", mean(&times[1]));
        println!("| proxy | {proxy_median:.1} | {:.1} |", mean(&times[0]));
        println!(
            "proxy / direct (median): {:.3}x",
            proxy_median / direct_median
        );
        let pairs: Vec<f64> = times[0].iter().zip(&times[1]).map(|(p, d)| p / d).collect();
        let (ratio, low, high) = median_with_interval(pairs);
        println!(
            "proxy / direct, pair by pair: median {ratio:.3}x, 95 % interval [{low:.3}, {high:.3}]"
        );
    }
    Ok(())
}
