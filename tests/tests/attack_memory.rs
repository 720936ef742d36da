//! Attacks on the proxy's memory and connection slots, by raw HTTP/2
//! clients on its socket, with kubelet-like clients beside them: what the
//! proxy holds stays within its budget plus a fixed overhead per
//! connection, and kubelet is still served.
//!
//! The figures (RSS, what was refused, how long kubelet's calls took) are
//! printed; `cargo test -p attestgate-e2e --test attack_memory --
//! --nocapture` shows them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use attestgate_e2e::flood::{Flooder, Tally};
use attestgate_e2e::metrics::{free_local_addr, rss, scrape, value};
use attestgate_e2e::node::Node;

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

const ALLOW: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n";
const MIB: f64 = (1 << 20) as f64;

/// Room for a thousand sockets of our own, whatever the shell left.
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.unwrap_or(65_536).min(65_536);
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        },
    )
    .unwrap();
}

/// Hostile connections pumped on a thread of their own until `stop`.
struct Flood {
    calls: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<Tally>>,
}

impl Flood {
    fn start(socket: PathBuf, connections: usize, path: &'static str, declared: usize) -> Flood {
        let calls = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let (c, s, n) = (calls.clone(), stop.clone(), connected.clone());
        let thread = std::thread::spawn(move || {
            let mut tally = Tally::default();
            let mut flooders = Vec::new();
            for _ in 0..connections {
                match Flooder::connect(&socket, path, 0, declared) {
                    Ok(f) => flooders.push(f),
                    Err(e) => panic!("attacker {} cannot connect: {e}", flooders.len()),
                }
                n.fetch_add(1, Ordering::Relaxed);
            }
            while !s.load(Ordering::Relaxed) {
                let calls = c.load(Ordering::Relaxed);
                let mut moved = false;
                for f in &mut flooders {
                    f.set_calls(calls);
                    moved |= f.pump(&mut tally);
                }
                if !moved {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            tally
        });
        Flood {
            calls,
            stop,
            connected,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The proxy at a cap of `cap` connections, with `args` besides, and a
/// kubelet-like client connected before any attack: the metrics' address,
/// the proxy's pid, the client, and the proxy's RSS with it alone.
async fn proxy_at_the_cap(
    node: &mut Node,
    cap: usize,
    args: &[&str],
) -> (String, u32, attestgate_e2e::cri::Cri, u64) {
    raise_open_files();
    node.policy(ALLOW);
    let addr = free_local_addr();
    let cap = cap.to_string();
    let mut all = vec!["--metrics-listen", &addr, "--max-connections", &cap];
    all.extend_from_slice(args);
    // The proxy's own open-file limit must hold the cap: four descriptors
    // a connection. prlimit execs the proxy: the pid is the proxy's.
    node.start_proxy_with(&["prlimit", "--nofile=8192:8192", "--"], &[], &all);
    let pid = node.proxy_pid().expect("the proxy runs");
    let kubelet = node.via_proxy().await;
    kubelet.version().await.unwrap();
    let (alone, _) = rss(pid);
    (addr, pid, kubelet, alone)
}

async fn metric(addr: &str, name: &str) -> f64 {
    value(&scrape(addr).await, name).unwrap_or(0.0)
}

/// Waits up to `within` for the metric to reach `at_least`.
async fn metric_reaches(addr: &str, name: &str, at_least: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let v = metric(addr, name).await;
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a kubelet does on a node under attack: it is served, and in time.
async fn kubelet_is_served(node: &Node, kubelet: &attestgate_e2e::cri::Cri) -> Duration {
    let started = Instant::now();
    kubelet
        .version()
        .await
        .expect("Version on kubelet's connection");
    kubelet
        .pull(&node.app_image, None)
        .await
        .expect("an allowed pull on kubelet's connection");
    let fresh = node.via_proxy().await;
    fresh.version().await.expect("Version on a new connection");
    fresh
        .pull(&node.pause_image, None)
        .await
        .expect("an allowed pull on a new connection");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ending_request_bodies_at_the_connection_cap_stay_within_the_budget() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    // As many as the cap: kubelet's connections must make room.
    const ATTACKERS: usize = 1000;
    const BUDGET: f64 = 64.0 * MIB;
    let (addr, pid, kubelet, alone) =
        proxy_at_the_cap(&mut node, ATTACKERS, &["--memory-budget", "64MiB"]).await;

    // The attack's connections, first only said hello.
    let mut flood = Flood::start(
        node.proxy_sock.clone(),
        ATTACKERS,
        "/runtime.v1.RuntimeService/CreateContainer",
        (16 << 20) - 64,
    );
    let open = metric_reaches(
        &addr,
        "attestgate_connections_open",
        ATTACKERS as f64,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        open >= ATTACKERS as f64,
        "{open} connections open of {ATTACKERS} ({} connected)",
        flood.connected.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle, _) = rss(pid);
    let per_connection = (idle.saturating_sub(alone)) as f64 / ATTACKERS as f64;

    // Then four calls each whose bodies never end, just under 16 MiB
    // declared, sent as fast as flow control lets them; a new one for
    // every one answered.
    flood.calls.store(4, Ordering::Relaxed);
    let held = metric_reaches(
        &addr,
        "attestgate_memory_held_bytes",
        0.74 * BUDGET,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        held >= 0.74 * BUDGET,
        "the attack never filled the budget: {held}"
    );
    let refused = metric_reaches(
        &addr,
        "attestgate_calls_over_budget_total",
        100.0,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        refused >= 100.0,
        "{refused} calls refused for want of budget"
    );

    // kubelet is served meanwhile, on its connection and a new one, and
    // the proxy's memory stays bounded while the attack goes on.
    let mut peak_held = 0.0f64;
    let mut served = Vec::new();
    for _ in 0..3 {
        served.push(kubelet_is_served(&node, &kubelet).await);
        peak_held = peak_held.max(metric(&addr, "attestgate_memory_held_bytes").await);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (during, peak) = rss(pid);
    let refused = metric(&addr, "attestgate_calls_over_budget_total").await;
    let evicted = metric(
        &addr,
        r#"attestgate_connections_closed_total{reason="evicted"}"#,
    )
    .await;
    let turned_away = metric(&addr, "attestgate_connections_refused_total").await;
    let tally = flood.stop();
    eprintln!(
        "never-ending bodies: {ATTACKERS} connections x 4 calls declaring 16 MiB each; \
         proxy RSS alone {:.1} MiB, with the connections idle {:.1} MiB ({:.0} KiB each), \
         under attack {:.1} MiB (peak {:.1} MiB); held at most {:.1} MiB of a {:.0} MiB budget; \
         {refused} calls refused RESOURCE_EXHAUSTED; attackers sent {:.1} MiB of body in {} calls \
         ({} answered RESOURCE_EXHAUSTED, {} reset, {} connections lost); at the cap, \
         {evicted} connections evicted to make room for kubelet's and {turned_away} refused; \
         kubelet served in {:?}",
        alone as f64 / MIB,
        idle as f64 / MIB,
        per_connection / 1024.0,
        during as f64 / MIB,
        peak as f64 / MIB,
        peak_held / MIB,
        BUDGET / MIB,
        tally.body_bytes_sent as f64 / MIB,
        tally.calls_opened,
        tally.exhausted,
        tally.reset,
        tally.connections_lost,
        served,
    );
    // Without a budget each connection held up to 64 MiB; now all of them
    // together hold the budget, overrun by at most 32 KiB a connection.
    assert!(
        peak_held <= BUDGET + (ATTACKERS as f64) * 40.0 * 1024.0,
        "held {peak_held} bytes"
    );
    // In memory, the bodies may take up to twice what they hold (their
    // buffers grow by doubling), and each busy connection's read buffers
    // grow to about 200 KiB (measured: 255 MiB over the idle figure at a
    // thousand connections, debug build).
    let over_idle = peak.saturating_sub(idle) as f64;
    assert!(
        over_idle <= BUDGET * 2.0 + (ATTACKERS as f64) * 256.0 * 1024.0,
        "RSS grew by {:.1} MiB under attack",
        over_idle / MIB
    );
    assert!(tally.exhausted > 0, "{tally:?}");
    // kubelet's idle connection made room for the last attacker; its new
    // ones made room by closing attackers whose requests never end.
    assert!(tally.connections_lost >= 1, "{tally:?}");
    assert!(evicted >= 2.0, "{evicted} evicted");
    for took in served {
        assert!(took < Duration::from_secs(20), "kubelet waited {took:?}");
    }
    // Once the attackers go, what they held goes with them.
    let drained = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let held = metric(&addr, "attestgate_memory_held_bytes").await;
            if held < MIB || Instant::now() > deadline {
                break held;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(drained < MIB, "{drained} bytes still held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_say_hello_cannot_fill_the_cap() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    const CAP: usize = 1024;
    const SILENT: usize = 1100;
    let (addr, pid, kubelet, alone) =
        proxy_at_the_cap(&mut node, CAP, &["--handshake-timeout", "5s"]).await;
    // More connections than the cap, none of which ever sends a byte.
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(std::os::unix::net::UnixStream::connect(&node.proxy_sock).unwrap());
    }
    let evicted = metric_reaches(
        &addr,
        r#"attestgate_connections_closed_total{reason="evicted"}"#,
        (SILENT + 1 - CAP) as f64,
        Duration::from_secs(30),
    )
    .await;
    let (full, _) = rss(pid);
    // kubelet's connection, which said hello long ago, is not among them,
    // and a new client is served at once.
    let took = kubelet_is_served(&node, &kubelet).await;
    // The rest go when their handshake time is up.
    let timed_out = metric_reaches(
        &addr,
        r#"attestgate_connections_closed_total{reason="handshake_timeout"}"#,
        (CAP - 2) as f64,
        Duration::from_secs(30),
    )
    .await;
    let closed_after = started.elapsed();
    let (after, peak) = rss(pid);
    eprintln!(
        "silent connections: {SILENT} against a cap of {CAP}; {evicted} evicted to make room, \
         {timed_out} closed at the 5s handshake deadline within {closed_after:?}; kubelet \
         served in {took:?}; proxy RSS alone {:.1} MiB, at the cap {:.1} MiB, after {:.1} MiB \
         (peak {:.1} MiB)",
        alone as f64 / MIB,
        full as f64 / MIB,
        after as f64 / MIB,
        peak as f64 / MIB,
    );
    assert!(evicted >= (SILENT + 1 - CAP) as f64, "{evicted} evicted");
    assert!(timed_out >= (CAP - 2) as f64, "{timed_out} timed out");
    assert!(took < Duration::from_secs(10), "kubelet waited {took:?}");
    assert!(
        peak.saturating_sub(alone) as f64 <= (CAP as f64) * 256.0 * 1024.0,
        "RSS grew by {:.1} MiB",
        peak.saturating_sub(alone) as f64 / MIB
    );
    drop(silent);
}
