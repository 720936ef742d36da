//! The CRI endpoint kubelet talks to. Every client connection gets its own
//! connection to containerd and is relayed frame by frame (`relay`): calls
//! pass through without being decoded — unary and streaming, headers,
//! trailers and status as they are — except PullImage and CreateContainer,
//! which are read in full, decided, and then forwarded as the same bytes,
//! and StartContainer, forwarded as the same bytes once no create by name
//! is being checked for the image its container was made from. Calls
//! outside the CRI (containerd's own API shares its socket) are refused.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::intercept::Gate;
use crate::resolve::ImageRuntime;

/// How often a refused connection is logged at most; the rest are counted.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serves kubelet on `listener` until `shutdown` resolves, then lets calls in
/// flight finish (bounded by `grace`).
///
/// At most `max_connections` are served at once. One more is accepted and
/// closed at once rather than left in the listen backlog: its client sees
/// the connection end and retries, where a backlogged one would hang until
/// its own timeout with no sign of why. Connections already served are
/// never closed for it, but a kubelet reconnecting while the cap is full is
/// refused like any other client.
pub async fn serve<R: ImageRuntime>(
    listener: UnixListener,
    runtime: Arc<Path>,
    gate: Arc<Gate<R>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut refusals = Refusals::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a sender; when all are gone, all calls are done.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    gate.metrics.connections_refused.inc();
                    refusals.note(max_connections);
                    drop(stream);
                    continue;
                };
                let connection = crate::connection::connection(stream, runtime.clone(), gate.clone(), stop_rx.clone());
                let alive = alive_tx.clone();
                let open = gate.metrics.connections_open.clone();
                open.inc();
                tokio::spawn(async move {
                    connection.await;
                    open.dec();
                    drop(slot);
                    drop(alive);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for calls in flight");
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let finished = async {
        let _ = alive_rx.recv().await;
        crate::intercept::decided_calls_finished().await;
    };
    tokio::select! {
        () = finished => tracing::info!("all calls finished"),
        () = tokio::time::sleep(grace) => tracing::warn!("calls still in flight after {grace:?}; exiting"),
    }
}

/// Refused connections, logged once per interval with how many there were.
#[derive(Default)]
struct Refusals {
    since_logged: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, max_connections: usize) {
        self.since_logged += 1;
        let now = Instant::now();
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            max_connections,
            refused = self.since_logged,
            "client connections closed on accept: max_connections are open"
        );
        self.since_logged = 0;
        self.logged_at = Some(now);
    }
}
