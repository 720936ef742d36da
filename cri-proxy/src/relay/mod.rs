//! An HTTP/2 frame relay between one client connection and a connection of
//! its own to a server, that takes chosen calls out of the stream to be
//! answered by someone else. It knows nothing of the CRI, of gRPC's
//! messages or of policy: the [`Hooks`] say, by `:path`, which calls are
//! relayed, taken out ([`Call`]) or refused, and what a refusal answers;
//! whoever takes the calls hands back a [`Reply`].
//!
//! Frames pass through as they are, header blocks included: each is
//! decoded on the way, to read `:path` and to follow the client's
//! compression context, but what the server gets is the client's own
//! bytes, so its decoder stays in step with the client's encoder and does
//! no more work than without us.
//!
//! A call taken out is *muted* toward the server: its header block goes on
//! (it is part of the compression context), without END_STREAM and
//! followed at once by RST_STREAM, and none of its DATA ever follows. A
//! gRPC server reads the whole request message before it runs a handler,
//! so it never acts on them. The request is collected here and handed out,
//! and the reply injected toward the client, but only once the server has
//! acknowledged an empty SETTINGS frame sent after the reset: everything
//! the server will ever say on that stream (an early refusal of a
//! malformed request, say) comes before that acknowledgement, so nothing
//! of the server's can follow our reply.
//!
//! The parts, as h2 splits its `proto/streams/`:
//! - `client.rs`: the client's frames, toward the server;
//! - `upstream.rs`: the server's frames, toward the client;
//! - `state.rs`: the connection's state, and what it is asked;
//! - `hooks.rs`: what the relay asks, hands out and takes back;
//! - `streams.rs`: the stream table, and what is muted;
//! - `head.rs`: a taken-out call's request head, decoded once;
//! - `inject.rs`: handing calls out and injecting their replies;
//! - `flow.rs`, `pacing.rs`: the client's window shared by two senders,
//!   and what is held back to travel with the next write;
//! - `budget.rs`: the memory all connections' muted calls may hold;
//! - `frame.rs`, `hpack.rs`: the wire;
//! - `driver.rs`: the sockets, on a thread of the connection's own.

pub mod driver;
pub mod frame;
pub mod hpack;

mod budget;
mod client;
mod flow;
mod head;
mod hooks;
mod inject;
mod pacing;
mod state;
mod streams;
#[cfg(test)]
mod testing;
mod upstream;

pub use budget::Budget;
pub use flow::ClientWindow;
pub use hooks::{Call, Handling, Hooks, MAX_REQUEST, Refusal, RelayError, Reply};
pub use state::Relay;
