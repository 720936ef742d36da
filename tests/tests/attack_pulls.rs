//! Issue 14's pull attack on a real node: 64 pulls from a registry that
//! accepts TCP and never answers, through the proxy. Whether their clients
//! go away (kubelet gives up when the pod goes) or stay, a pull of an
//! allowed image from the node's own registry through the proxy answers
//! within 1 s of the same pull sent straight to containerd, other calls are
//! served, the proxy's memory stays small, and once the hung pulls' clients
//! have left, containerd has let go of them and shutdown is prompt.
//!
//! The figures are printed: `cargo test -p attestgate-e2e --test
//! attack_pulls -- --nocapture` (as root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use attestgate_e2e::cri::Cri;
use attestgate_e2e::metrics::{free_local_addr, rss, sample};
use attestgate_e2e::node::Node;

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

const ALLOW: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n";

/// As many pulls as once used up every pull permit the proxy had.
const ATTACK: usize = 64;

/// The pulls the proxy lets through to one registry at once
/// (`intercept::permits::PER_REGISTRY`).
const PER_REGISTRY: usize = 16;

/// A registry that accepts connections, reads what it is sent, and never
/// answers: how many connections it took, and how many of them the
/// client (containerd) has since closed, as it does when a pull is
/// cancelled.
struct Silent {
    addr: String,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (counted, ended) = (accepted.clone(), closed.clone());
        std::thread::spawn(move || {
            for mut connection in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                let ended = ended.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while matches!(connection.read(&mut buf), Ok(n) if n > 0) {}
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Silent {
            addr,
            accepted,
            closed,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Waits until `done` holds, for `within` at most; whether it did.
async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// The proxy's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    rss(pid).0 / 1024
}

/// How long `cri` takes to pull `image`, which is removed first so that
/// it is really pulled.
async fn timed_pull(cri: &Cri, image: &str) -> Duration {
    cri.remove_image(image).await.unwrap();
    assert!(cri.image_status(image).await.unwrap().is_none());
    let started = Instant::now();
    cri.pull(image, None).await.unwrap();
    started.elapsed()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Clients {
    /// Give up on their pulls (kubelet does when the pod goes).
    Leave,
    /// Stay connected, waiting.
    Stay,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_from_a_registry_that_never_answers_whose_clients_left_hold_up_nothing() {
    attack(Clients::Leave).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_from_a_registry_that_never_answers_whose_clients_wait_hold_up_only_their_own() {
    attack(Clients::Stay).await;
}

async fn attack(clients: Clients) {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.policy(ALLOW);
    let silent = Silent::start();
    node.plain_http_registry(&silent.addr);
    let metrics = free_local_addr();
    node.start_proxy(&["--metrics-listen", &metrics]);
    let pid = node.proxy_pid().unwrap();
    let rss_before = rss_kib(pid);

    // The attack: each pull of an image of its own, on a connection of its
    // own, as pods on a node would have them.
    let mut hung = Vec::new();
    for i in 0..ATTACK {
        let cri = node.via_proxy().await;
        let image = format!("{}/attack/hung-{i}:1", silent.addr);
        hung.push(tokio::spawn(async move { cri.pull(&image, None).await }));
    }
    // The proxy lets as many through as a registry may have at once.
    assert!(
        eventually(Duration::from_secs(30), || silent.accepted()
            >= PER_REGISTRY)
        .await,
        "containerd reached the silent registry {} times",
        silent.accepted()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reached = silent.accepted();
    eprintln!(
        "attack ({clients:?}): {ATTACK} pulls through the proxy, {reached} reached the silent registry"
    );
    assert!(
        reached <= PER_REGISTRY,
        "the silent registry holds {reached} pulls"
    );

    if clients == Clients::Leave {
        for pull in &hung {
            pull.abort();
        }
        hung.clear();
        // containerd cancels the pulls the proxy cancels, and closes their
        // connections to the registry.
        let let_go = eventually(Duration::from_secs(20), || silent.closed() >= reached).await;
        let cancelled = sample(&metrics, "attestgate_pulls_cancelled_total").unwrap_or(0.0);
        eprintln!(
            "clients left: containerd closed {}/{} registry connections, pulls_cancelled_total {cancelled}",
            silent.closed(),
            reached
        );
        assert!(let_go, "containerd still holds pulls the proxy gave up on");
        assert!(cancelled >= 1.0);
    }

    // kubelet's own calls are served, and an allowed pull from the node's
    // registry answers as fast as containerd's own, within 1 s.
    let proxied = node.via_proxy().await;
    let direct = node.direct().await;
    tokio::time::timeout(Duration::from_secs(2), proxied.version())
        .await
        .expect("Version through the proxy within 2 s")
        .unwrap();
    let image = node.app_image.clone();
    let straight = timed_pull(&direct, &image).await;
    let through_proxy = tokio::time::timeout(Duration::from_secs(60), timed_pull(&proxied, &image))
        .await
        .expect("the allowed pull through the proxy answered");
    eprintln!(
        "allowed pull of {image}: direct {:.0} ms, through the proxy {:.0} ms",
        straight.as_secs_f64() * 1e3,
        through_proxy.as_secs_f64() * 1e3
    );
    assert!(
        through_proxy <= straight + Duration::from_secs(1),
        "through the proxy {through_proxy:?}, direct {straight:?}"
    );

    let rss_after = rss_kib(pid);
    eprintln!("proxy VmRSS: {rss_before} KiB before the attack, {rss_after} KiB after");
    assert!(
        rss_after < 128 * 1024,
        "the proxy's RSS grew to {rss_after} KiB"
    );

    if clients == Clients::Stay {
        // Still hung: none of them was answered.
        assert!(hung.iter().all(|pull| !pull.is_finished()));
        for pull in &hung {
            pull.abort();
        }
        assert!(
            eventually(Duration::from_secs(20), || silent.closed() >= reached).await,
            "containerd still holds {} pulls whose clients left",
            reached - silent.closed()
        );
    }
    drop((proxied, direct));

    let stopping = Instant::now();
    node.stop_proxy();
    let shutdown = stopping.elapsed();
    eprintln!("SIGTERM to exit: {:.0} ms", shutdown.as_secs_f64() * 1e3);
    assert!(
        shutdown < Duration::from_secs(10),
        "shutdown took {shutdown:?}: {}",
        node.proxy_log()
    );
}
