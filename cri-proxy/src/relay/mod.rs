//! One client connection, relayed frame by frame to a connection of its own
//! to containerd, the way a byte relay would: a thread per connection
//! (`driver.rs`), big reads, every frame that is ready leaves in one write.
//! Only PullImage and CreateContainer (decided) and StartContainer (held
//! while a create by name is being checked) are taken out of the stream,
//! handled on the async runtime, and answered here (see `state.rs`); calls
//! outside the CRI never reach containerd and are answered here at once.

pub mod driver;
pub mod flow;
pub mod frame;
pub mod hpack;
pub mod state;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

use crate::cri::{Route, route, served};
use crate::grpc::ProxyError;
use crate::intercept::Gate;
use crate::resolve::ImageRuntime;
use crate::upstream::{FullResponse, Reply as GateReply};
use driver::Mailbox;
use state::{Call, Handling, Relay, Reply};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A decision's future is built on the connection's thread before it is
/// moved to the runtime, and unoptimised builds keep copies of it on the
/// stack; address space, not memory, until touched.
const THREAD_STACK: usize = 2 << 20;

fn handling(path: &str) -> Handling {
    if !served(path) {
        Handling::Refuse
    } else if route(path) == Route::Forward {
        Handling::Relay
    } else {
        Handling::Intercept
    }
}

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
    mut shutdown: watch::Receiver<bool>,
) {
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&*runtime)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(runtime = %runtime.display(), error = %e, "cannot connect to the runtime; closing the client connection");
            return;
        }
        Err(_) => {
            tracing::warn!(runtime = %runtime.display(), "connecting to the runtime timed out; closing the client connection");
            return;
        }
    };
    let (client, upstream) = match (client.into_std(), upstream.into_std()) {
        (Ok(client), Ok(upstream)) => (client, upstream),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot take over the connection's sockets; closing it");
            return;
        }
    };
    let mailbox = match Mailbox::new() {
        Ok(mailbox) => Arc::new(mailbox),
        Err(e) => {
            tracing::warn!(error = %e, "cannot make the connection's eventfd; closing it");
            return;
        }
    };
    let async_side = tokio::runtime::Handle::current();
    let (finished, mut done) = oneshot::channel::<()>();
    let thread_mailbox = mailbox.clone();
    let spawned = std::thread::Builder::new()
        .name("attestgate-conn".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let relay = Relay::new(handling, Some(gate.metrics.clone()));
            let mailbox = thread_mailbox;
            driver::relay(client, upstream, relay, &mailbox, driver::HOLD, |call| {
                async_side
                    .spawn(decide(gate.clone(), call, mailbox.clone()))
                    .abort_handle()
            });
            let _ = finished.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the connection's thread; closing it");
        return;
    }
    if *shutdown.borrow_and_update() {
        mailbox.drain();
    }
    loop {
        tokio::select! {
            // Sent, or dropped by a thread that panicked: the connection is over.
            _ = &mut done => return,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow_and_update() {
                    mailbox.drain();
                    let _ = (&mut done).await;
                    return;
                }
            }
        }
    }
}

/// Decides one intercepted call and hands the reply to inject to the
/// connection's thread.
async fn decide<R: ImageRuntime>(gate: Arc<Gate<R>>, call: Call, mailbox: Arc<Mailbox>) {
    let reply = match answer(&gate, &call).await {
        Ok(reply) => reply,
        Err(e) => {
            if !matches!(e, ProxyError::Denied(_)) {
                tracing::warn!(method = %call.path, error = %e, "call failed in the proxy");
            }
            Reply::error(e)
        }
    };
    mailbox.reply(call.stream, reply);
}

async fn answer<R: ImageRuntime>(gate: &Arc<Gate<R>>, call: &Call) -> Result<Reply, ProxyError> {
    let parts = request_parts(&call.head)?;
    // The one `:path` the head has is the one the call was routed by; the
    // upstream call goes to exactly that.
    if parts.uri.path_and_query().map(|p| p.as_str()) != Some(call.path.as_str()) {
        return Err(ProxyError::BadRequest(
            "request head: :path is not the method decided".into(),
        ));
    }
    let body = call.body.clone();
    let reply = match route(&call.path) {
        Route::Pull(api) => gate.clone().pull_to_the_end(api, parts, body).await?,
        Route::Create(api) => gate.clone().create(api, parts, body).await?,
        Route::Start => gate.start(parts, body).await?,
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

/// The request head the decision code works with, from the header block.
///
/// The head is held to RFC 9113 §8.3 as grpc-go holds it: each request
/// pseudo-header at most once, none unknown, all before the regular fields.
/// What we decide must be the call we make: a head with two `:path`s could
/// otherwise be routed by one and sent on with the other.
fn request_parts(head: &[u8]) -> Result<http::request::Parts, ProxyError> {
    let bad = |what: String| ProxyError::BadRequest(format!("request head: {what}"));
    let fields = hpack::fields_of_own(head).map_err(|e| bad(e.to_string()))?;
    let mut request = http::Request::builder();
    let (mut method, mut scheme, mut authority, mut path) = (None, None, None, None);
    let mut regular_seen = false;
    for (name, value) in &fields {
        let slot = match name.as_slice() {
            b":method" => &mut method,
            b":scheme" => &mut scheme,
            b":authority" => &mut authority,
            b":path" => &mut path,
            n if n.starts_with(b":") => {
                return Err(bad(format!(
                    "unknown pseudo-header {}",
                    String::from_utf8_lossy(n)
                )));
            }
            _ => {
                regular_seen = true;
                request = request.header(name.as_slice(), value.as_slice());
                continue;
            }
        };
        if regular_seen {
            return Err(bad(format!(
                "pseudo-header {} after regular header fields",
                String::from_utf8_lossy(name)
            )));
        }
        if slot.replace(value.as_slice()).is_some() {
            return Err(bad(format!(
                "pseudo-header {} given twice",
                String::from_utf8_lossy(name)
            )));
        }
    }
    let path = path.ok_or_else(|| bad("no :path".into()))?;
    if let Some(method) = method {
        request = request.method(method);
    }
    // grpc-go, kubelet's and crictl's client, dialling a Unix socket by its
    // path sends that path as :authority ("/run/containerd/containerd.sock"),
    // which is no URI authority. Nothing here routes by authority, and the
    // call made upstream names its own, so one that is not a URI authority
    // is left out rather than refused.
    let authority = authority.and_then(|a| http::uri::Authority::try_from(a).ok());
    let uri = match (scheme, authority) {
        (Some(scheme), Some(authority)) => http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build(),
        _ => http::Uri::builder().path_and_query(path).build(),
    }
    .map_err(|e| bad(e.to_string()))?;
    let (parts, ()) = request
        .uri(uri)
        .body(())
        .map_err(|e| bad(e.to_string()))?
        .into_parts();
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn request_parts_come_from_our_own_block() {
        let mut block = BytesMut::new();
        hpack::encode_field(&mut block, b":method", b"POST");
        hpack::encode_field(&mut block, b":scheme", b"http");
        hpack::encode_field(&mut block, b":authority", b"localhost");
        hpack::encode_field(&mut block, b":path", b"/runtime.v1.ImageService/PullImage");
        hpack::encode_field(&mut block, b"grpc-timeout", b"120S");
        let parts = request_parts(&block).unwrap();
        assert_eq!(parts.method, http::Method::POST);
        assert_eq!(
            parts.uri.to_string(),
            "http://localhost/runtime.v1.ImageService/PullImage"
        );
        assert_eq!(parts.headers["grpc-timeout"], "120S");

        // As grpc-go sends it when dialling a socket by its path.
        let mut socket_authority = BytesMut::new();
        hpack::encode_field(&mut socket_authority, b":method", b"POST");
        hpack::encode_field(&mut socket_authority, b":scheme", b"http");
        hpack::encode_field(
            &mut socket_authority,
            b":path",
            b"/runtime.v1.ImageService/PullImage",
        );
        hpack::encode_field(
            &mut socket_authority,
            b":authority",
            b"/run/attestgate/attestgate.sock",
        );
        hpack::encode_field(&mut socket_authority, b"user-agent", b"grpc-go/1.51.0");
        let parts = request_parts(&socket_authority).unwrap();
        assert_eq!(parts.uri.path(), "/runtime.v1.ImageService/PullImage");
        assert_eq!(parts.uri.authority(), None);

        let mut no_path = BytesMut::new();
        hpack::encode_field(&mut no_path, b":method", b"POST");
        assert!(request_parts(&no_path).is_err());
    }

    #[test]
    fn heads_that_could_name_two_calls_are_refused() {
        let head = |fields: &[(&[u8], &[u8])]| {
            let mut block = BytesMut::new();
            for (name, value) in fields {
                hpack::encode_field(&mut block, name, value);
            }
            block
        };
        let create: &[u8] = b"/runtime.v1.RuntimeService/CreateContainer";
        let pull: &[u8] = b"/runtime.v1.ImageService/PullImage";
        for fields in [
            &[
                (&b":method"[..], &b"POST"[..]),
                (b":path", create),
                (b":path", pull),
            ][..],
            &[(b":path", pull), (b":path", create)],
            &[
                (b":path", create),
                (b":method", b"POST"),
                (b":method", b"GET"),
            ],
            &[(b":path", create), (b":protocol", b"x")],
            &[(b"content-type", b"application/grpc"), (b":path", create)],
        ] {
            let error = request_parts(&head(fields)).expect_err("refused");
            assert!(matches!(error, ProxyError::BadRequest(_)), "{error:?}");
        }
        assert!(request_parts(&head(&[(b":path", create), (b"te", b"trailers")])).is_ok());
    }
}
