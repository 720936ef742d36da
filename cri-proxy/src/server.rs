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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::intercept::Gate;
use crate::relay::Budget;
use crate::relay::driver::{Mailbox, Standing};
use crate::resolve::ImageRuntime;

/// How often a refused connection is logged at most; the rest are counted.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serves kubelet on `listener` until `shutdown` resolves, then lets calls in
/// flight finish (bounded by `grace`).
///
/// At most `max_connections` are served at once. When all are taken, a new
/// connection makes room: the oldest connection whose client has not yet
/// sent its preface and SETTINGS is closed, or else the one idle longest
/// (nothing in flight) is drained with a GOAWAY, as grpc-go's server ends
/// an idle connection, and its client reconnects when it next needs to;
/// or else one with a request that has been arriving for longer than
/// kubelet's ever do (`STUCK_AFTER`) is closed, nothing on it decided yet.
/// Connections that never say hello, only sit idle or never finish a
/// request therefore cannot lock kubelet out, which calls every second or
/// so. Only when every connection has calls in flight that arrived whole is
/// the new one closed at once rather than left in the listen backlog: its
/// client sees the connection end and retries, where a backlogged one
/// would hang until its own timeout with no sign of why. A client gets
/// `handshake` for its preface and SETTINGS.
pub async fn serve<R: ImageRuntime>(
    listener: UnixListener,
    runtime: Arc<Path>,
    gate: Arc<Gate<R>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: Limits,
) {
    let Limits {
        max_connections,
        handshake,
        budget,
    } = limits;
    gate.metrics.watch_budget(budget.clone());
    let slots = Arc::new(Semaphore::new(max_connections));
    let live = Arc::new(Live::default());
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
                let slot = match slots.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) if live.make_room() => None,
                    Err(_) => {
                        gate.metrics.connections_refused.inc();
                        gate.metrics.connection_closed("refused");
                        refusals.note(max_connections);
                        drop(stream);
                        continue;
                    }
                };
                let mailbox = match Mailbox::new() {
                    Ok(mailbox) => Arc::new(mailbox),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot make the connection's eventfd; closing it");
                        gate.metrics.connection_closed("setup_failed");
                        continue;
                    }
                };
                let connection = crate::connection::connection(
                    stream,
                    runtime.clone(),
                    gate.clone(),
                    mailbox.clone(),
                    handshake,
                    budget.clone(),
                    stop_rx.clone(),
                );
                let alive = alive_tx.clone();
                let (slots, live, gate) = (slots.clone(), live.clone(), gate.clone());
                tokio::spawn(async move {
                    // Room made: the slot frees as the connection chosen ends.
                    let slot = match slot {
                        Some(slot) => slot,
                        None => match tokio::time::timeout(ROOM_WAIT, slots.acquire_owned()).await {
                            Ok(Ok(slot)) => slot,
                            _ => {
                                gate.metrics.connections_refused.inc();
                                gate.metrics.connection_closed("refused");
                                return;
                            }
                        },
                    };
                    live.add(&mailbox);
                    gate.metrics.connections_open.inc();
                    let reason = connection.await;
                    gate.metrics.connections_open.dec();
                    gate.metrics.connection_closed(reason);
                    live.remove(&mailbox);
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

/// How long a connection that made room waits for the slot it freed.
const ROOM_WAIT: Duration = Duration::from_secs(5);

/// What bounds the connections served.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// How long a client has for its preface and first SETTINGS.
    pub handshake: Duration,
    /// What all connections' intercepted calls may hold together.
    pub budget: Arc<Budget>,
}

/// The connections being served, oldest first.
#[derive(Default)]
struct Live {
    connections: Mutex<Vec<Arc<Mailbox>>>,
}

impl Live {
    fn add(&self, mailbox: &Arc<Mailbox>) {
        self.lock().push(mailbox.clone());
    }

    fn remove(&self, mailbox: &Arc<Mailbox>) {
        self.lock().retain(|m| !Arc::ptr_eq(m, mailbox));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Mailbox>>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks one connection to go for a new one (see `serve`): one that has
    /// not said hello, else the one idle longest, else one whose request
    /// has been arriving longest (longer than any of kubelet's does); false
    /// when every connection has calls in flight that arrived whole.
    fn make_room(&self) -> bool {
        let mut connections = self.lock();
        let now = Instant::now();
        let standing: Vec<Standing> = connections.iter().map(|m| m.standing()).collect();
        let oldest = |since: fn(&Standing) -> Option<Instant>| {
            standing
                .iter()
                .enumerate()
                .filter_map(|(i, s)| since(s).map(|at| (at, i)))
                .min()
                .map(|(_, i)| i)
        };
        let victim = standing
            .iter()
            .position(|s| !s.handshaken)
            .or_else(|| oldest(|s| s.idle_since))
            .or_else(|| {
                standing
                    .iter()
                    .any(|s| s.stuck(now))
                    .then(|| oldest(|s| s.arriving_since))
                    .flatten()
            });
        match victim {
            Some(i) => {
                // Out of the list at once: the next new connection picks
                // another.
                let mailbox = connections.remove(i);
                mailbox.evict();
                true
            }
            None => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn live(standings: &[(bool, Option<u64>)]) -> (Live, Vec<Arc<Mailbox>>) {
        let with_nothing_arriving: Vec<_> = standings.iter().map(|&(h, i)| (h, i, None)).collect();
        live_arriving(&with_nothing_arriving)
    }

    /// Connections: handshaken, idle since (ms after birth), arriving since.
    fn live_arriving(standings: &[(bool, Option<u64>, Option<u64>)]) -> (Live, Vec<Arc<Mailbox>>) {
        let live = Live::default();
        let mailboxes: Vec<Arc<Mailbox>> = standings
            .iter()
            .map(|&(handshaken, idle_ms, arriving_ms)| {
                let m = Arc::new(Mailbox::new().unwrap());
                m.pretend(
                    handshaken,
                    idle_ms.map(Duration::from_millis),
                    arriving_ms.map(Duration::from_millis),
                );
                live.add(&m);
                m
            })
            .collect();
        (live, mailboxes)
    }

    fn evicted(mailboxes: &[Arc<Mailbox>]) -> Vec<bool> {
        mailboxes.iter().map(|m| m.evicted()).collect()
    }

    #[test]
    fn room_is_made_by_the_silent_first_then_the_idle_longest() {
        // Busy, idle since 50 ms, silent, silent, idle since 10 ms.
        let (live, m) = live(&[
            (true, None),
            (true, Some(50)),
            (false, Some(0)),
            (false, Some(0)),
            (true, Some(10)),
        ]);
        assert!(live.make_room());
        assert_eq!(
            evicted(&m),
            [false, false, true, false, false],
            "the oldest silent one"
        );
        assert!(live.make_room());
        assert_eq!(evicted(&m), [false, false, true, true, false]);
        assert!(live.make_room());
        assert_eq!(
            evicted(&m),
            [false, false, true, true, true],
            "then the idle longest"
        );
        assert!(live.make_room());
        assert_eq!(evicted(&m), [false, true, true, true, true]);
        // Only calls in flight are left: no room, the new one is refused.
        assert!(!live.make_room());
        assert_eq!(evicted(&m), [false, true, true, true, true]);
    }

    #[test]
    fn a_request_arriving_for_long_gives_up_its_slot_when_nothing_is_idle() {
        // Made 2 s ago: busy with whole calls; a request arriving for 2 s;
        // one arriving for 1.5 s; one that just began.
        let (live, m) = live_arriving(&[
            (true, None, None),
            (true, None, Some(0)),
            (true, None, Some(500)),
            (true, None, Some(1_990)),
        ]);
        std::thread::sleep(Duration::from_millis(2_000));
        assert!(live.make_room());
        assert_eq!(evicted(&m), [false, true, false, false], "the longest");
        assert!(live.make_room());
        assert_eq!(evicted(&m), [false, true, true, false]);
        // What is left arrives no longer than kubelet's might, or came whole.
        assert!(!live.make_room());
    }
}
