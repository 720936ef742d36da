//! One client connection: relayed frame by frame to a connection of its
//! own to containerd (`relay`), a thread per connection, with the relay's
//! hooks saying what the CRI is: PullImage and CreateContainer (decided)
//! and StartContainer (held while a create by name is being checked) are
//! taken out of the stream, handled on the async runtime, and their
//! replies injected; calls outside the CRI never reach containerd and are
//! answered at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

use crate::cri::{Route, is_image_service, route, served};
use crate::grpc::ProxyError;

use crate::intercept::Gate;
use crate::metrics::Metrics;
use crate::relay::driver::{self, Mailbox};
use crate::relay::{Budget, Call, Handling, Hooks, Refusal, Relay, Reply, hpack};
use crate::resolve::ImageRuntime;
use crate::upstream::{FullResponse, Reply as GateReply};

/// Distinct methods whose counters a connection keeps at hand.
const COUNTERS_KEPT: usize = 64;

/// The CRI, as the relay asks after it: routes, what is served, counting.
pub struct CriHooks {
    metrics: Arc<Metrics>,
    /// `image_endpoint` is not the runtime's: ImageService calls are taken
    /// out and forwarded there.
    images_elsewhere: bool,
    /// Counters by method, kept so a call costs no lookup in the registry.
    counters: Vec<(Box<[u8]>, Counter)>,
}

impl CriHooks {
    pub fn new(metrics: Arc<Metrics>, images_elsewhere: bool) -> CriHooks {
        CriHooks {
            metrics,
            images_elsewhere,
            counters: Vec::new(),
        }
    }
}

impl Hooks for CriHooks {
    type Kind = Route;

    fn handling(&self, path: &str) -> Handling<Route> {
        if !served(path) {
            return Handling::Refuse;
        }
        match route(path) {
            Route::Forward if self.images_elsewhere && is_image_service(path) => {
                Handling::TakeOut(Route::Image)
            }
            Route::Forward => Handling::Relay,
            decided => Handling::TakeOut(decided),
        }
    }

    fn opened(&mut self, path: &[u8]) {
        if let Some((_, counter)) = self.counters.iter().find(|(p, _)| &p[..] == path) {
            counter.inc();
            return;
        }
        let counter = self
            .metrics
            .forwarded_counter(&String::from_utf8_lossy(path));
        counter.inc();
        if self.counters.len() < COUNTERS_KEPT {
            self.counters.push((path.into(), counter));
        }
    }

    fn refusal(&self, refusal: Refusal) -> Reply {
        error_reply(match refusal {
            Refusal::NotServed(path) => ProxyError::NotServed(path),
            Refusal::BadHead(e) => ProxyError::BadRequest(e),
            Refusal::TooLarge(n) => ProxyError::TooLarge(n),
            Refusal::OverBudget(n) => {
                self.metrics.over_budget.inc();
                ProxyError::OverBudget(n)
            }
        })
    }
}

/// A trailers-only gRPC error, to inject.
pub fn error_reply(error: ProxyError) -> Reply {
    let (parts, ()) = error.into_head().into_parts();
    Reply {
        head: hpack::encode_response(Some(parts.status.as_u16()), &parts.headers).freeze(),
        data: bytes::Bytes::new(),
        trailers: None,
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A decision's future is built on the connection's thread before it is
/// moved to the runtime, and unoptimised builds keep copies of it on the
/// stack; address space, not memory, until touched.
const THREAD_STACK: usize = 2 << 20;

/// Serves one client connection until either side closes it, or until
/// shutdown asks it to finish (GOAWAY) the calls it has.
///
/// The bytes move on a thread of the connection's own: a hop whose whole
/// cost is wake-ups pays for no scheduler between a socket's wake-up and
/// the write it leads to. Measured CPU per relayed call: socat 25–27 µs,
/// an async task per connection 25–27 µs, this thread 21–23 µs
/// (BENCHMARKS.md).
pub async fn connection<R: ImageRuntime>(
    client: UnixStream,
    runtime: Arc<Path>,
    gate: Arc<Gate<R>>,
    mailbox: Arc<Mailbox>,
    handshake: Duration,
    budget: Arc<Budget>,
    mut shutdown: watch::Receiver<bool>,
) -> &'static str {
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&*runtime)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(runtime = %runtime.display(), error = %e, "cannot connect to the runtime; closing the client connection");
            return "runtime_unreachable";
        }
        Err(_) => {
            tracing::warn!(runtime = %runtime.display(), "connecting to the runtime timed out; closing the client connection");
            return "runtime_unreachable";
        }
    };
    let (client, upstream) = match (client.into_std(), upstream.into_std()) {
        (Ok(client), Ok(upstream)) => (client, upstream),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot take over the connection's sockets; closing it");
            return driver::End::SetupFailed.label();
        }
    };
    let async_side = tokio::runtime::Handle::current();
    let (finished, mut done) = oneshot::channel::<driver::End>();
    let thread_mailbox = mailbox.clone();
    let timing = driver::Timing {
        hold: driver::HOLD,
        handshake,
    };
    let spawned = std::thread::Builder::new()
        .name("attestgate-conn".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let images_elsewhere = gate.images.socket() != gate.upstream.socket();
            let relay = Relay::with_budget(
                CriHooks::new(gate.metrics.clone(), images_elsewhere),
                budget,
            );
            let mailbox = thread_mailbox;
            let end = driver::relay(client, upstream, relay, &mailbox, timing, |call| {
                async_side
                    .spawn(decide(gate.clone(), call, mailbox.clone()))
                    .abort_handle()
            });
            let _ = finished.send(end);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the connection's thread; closing it");
        return driver::End::SetupFailed.label();
    }
    if *shutdown.borrow_and_update() {
        mailbox.drain();
    }
    // Sent, or dropped by a thread that panicked: the connection is over.
    let ended = |end: Result<driver::End, _>| end.map_or("io_error", driver::End::label);
    loop {
        tokio::select! {
            end = &mut done => return ended(end),
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow_and_update() {
                    mailbox.drain();
                    return ended((&mut done).await);
                }
            }
        }
    }
}

/// Decides one intercepted call and hands the reply to inject to the
/// connection's thread.
async fn decide<R: ImageRuntime>(gate: Arc<Gate<R>>, call: Call<Route>, mailbox: Arc<Mailbox>) {
    let stream = call.stream;
    let method = call.path().to_string();
    let reply = match answer(&gate, call).await {
        Ok(reply) => reply,
        Err(e) => {
            if !matches!(e, ProxyError::Denied(_)) {
                tracing::warn!(%method, error = %e, "call failed in the proxy");
            }
            error_reply(e)
        }
    };
    mailbox.reply(stream, reply);
}

async fn answer<R: ImageRuntime>(
    gate: &Arc<Gate<R>>,
    call: Call<Route>,
) -> Result<Reply, ProxyError> {
    // The relay hands out the head it decoded, holding exactly the one
    // `:path` the call was routed by; the upstream call goes to exactly that.
    let Call {
        kind,
        head: parts,
        body,
        ..
    } = call;
    let reply = match kind {
        Route::Pull(api) => gate.clone().pull_to_the_end(api, parts, body).await?,
        Route::Create(api) => gate.clone().create(api, parts, body).await?,
        Route::Start => gate.start(parts, body).await?,
        Route::Image => gate.forward(parts, body).await?,
        Route::Forward => return Err(ProxyError::Internal("not an intercepted call".into())),
    };
    let full = match reply {
        GateReply::Stream(response) => FullResponse::read(response).await?,
        GateReply::Full(full) => full,
    };
    Ok(Reply {
        head: hpack::encode_response(Some(full.head.status.as_u16()), &full.head.headers).freeze(),
        data: full.data,
        trailers: full
            .trailers
            .map(|t| hpack::encode_response(None, &t).freeze()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_routed_once_by_the_hooks() {
        let hooks = CriHooks::new(Arc::new(Metrics::new()), false);
        assert_eq!(
            hooks.handling("/runtime.v1.ImageService/PullImage"),
            Handling::TakeOut(Route::Pull(crate::cri::Api::V1))
        );
        assert_eq!(
            hooks.handling("/runtime.v1.RuntimeService/StartContainer"),
            Handling::TakeOut(Route::Start)
        );
        assert_eq!(
            hooks.handling("/runtime.v1.RuntimeService/Version"),
            Handling::Relay
        );
        assert_eq!(
            hooks.handling("/containerd.services.images.v1.Images/List"),
            Handling::Refuse
        );
    }

    #[test]
    fn refusals_are_grpc_statuses() {
        let hooks = CriHooks::new(Arc::new(Metrics::new()), false);
        for (refusal, code) in [
            (Refusal::NotServed("/x.Y/Z".into()), "12"),
            (Refusal::BadHead("request head: no :path".into()), "3"),
            (Refusal::TooLarge(16 << 20), "8"),
            (Refusal::OverBudget(64 << 20), "8"),
        ] {
            let reply = hooks.refusal(refusal);
            let fields = hpack::fields_of_own(&reply.head).unwrap();
            assert!(
                fields
                    .iter()
                    .any(|(n, v)| n == b"grpc-status" && v == code.as_bytes()),
                "{fields:?}"
            );
            assert!(reply.data.is_empty() && reply.trailers.is_none());
        }
    }
}
