//! Drives one connection's relay on a thread of its own, the way a byte
//! relay does: wait for either socket, read what came, hand it through the
//! relay's state, write it out, wait again. Nothing else runs between a
//! wake-up and the write it leads to, no task is scheduled for it, and the
//! thread sleeps in the kernel until one of its own sockets, or the async
//! side, needs it.
//!
//! Decisions run on the async runtime; their replies, and the request to
//! drain, come back through a [`Mailbox`] whose eventfd wakes the thread.

use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rustix::event::epoll::{self, Event, EventData, EventFlags};
use rustix::event::{EventfdFlags, Timespec, eventfd};
use rustix::net::{RecvFlags, recv};
use tokio::task::AbortHandle;

use super::frame;
use super::hooks::{Call, Hooks, RelayError, Reply};
use super::state::Relay;

/// Input we read ahead, per direction, before waiting for the other side
/// to take what we already have.
const BUFFER_LIMIT: usize = 1 << 20;
/// What may wait for a client that does not read: past it, neither side is
/// read (the server's headers and our window updates are not flow
/// controlled, so nothing else bounds them).
const CLIENT_BACKLOG_LIMIT: usize = 4 << 20;
const READ_CHUNK: usize = 64 << 10;
/// How long a closing connection may take to hand over its last bytes.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long what a peer is owed but need not hear at once may wait for
/// our next write to it to travel with: our answers to the server's PINGs
/// (see `Relay::release_acks`; grpc-go times its window estimate by them
/// and gives up on a keepalive answer only after seconds), and the room
/// its input leaves once taken off our queue (see `Side::read_some`).
pub const HOLD: Duration = Duration::from_millis(1);

/// What the async side hands the connection's thread: replies to inject
/// and the requests to drain or to make room, each followed by a ring of
/// the eventfd; and what the thread tells of the connection, for choosing
/// which one makes room when all slots are taken.
pub struct Mailbox {
    bell: OwnedFd,
    replies: Mutex<Vec<(u32, Reply)>>,
    drain: AtomicBool,
    evict: AtomicBool,
    /// The client sent the preface and its first SETTINGS.
    handshaken: AtomicBool,
    /// Since when nothing has been in flight, in ms since `born`; `BUSY`
    /// while a call is.
    idle_since: AtomicU64,
    /// Since when the oldest call taken out whose request has not all come
    /// has been arriving, in ms since `born`; `NONE` when there is none.
    arriving_since: AtomicU64,
    born: Instant,
}

const BUSY: u64 = u64::MAX;
const NONE: u64 = u64::MAX;

/// A request still arriving after this long is not kubelet's, which sends
/// each call whole, in one write: its connection may be closed at once to
/// make room at `max_connections`.
pub const STUCK_AFTER: Duration = Duration::from_secs(1);

/// How a connection stands, for choosing one to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The client sent the preface and its first SETTINGS.
    pub handshaken: bool,
    /// Since when nothing has been in flight; `None` while a call is.
    pub idle_since: Option<Instant>,
    /// Since when the oldest request still arriving has been.
    pub arriving_since: Option<Instant>,
}

impl Standing {
    /// A request has been arriving for longer than any of kubelet's does.
    pub fn stuck(&self, now: Instant) -> bool {
        self.arriving_since
            .is_some_and(|since| since + STUCK_AFTER <= now)
    }
}

impl Mailbox {
    pub fn new() -> io::Result<Mailbox> {
        Ok(Mailbox {
            bell: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
            replies: Mutex::new(Vec::new()),
            drain: AtomicBool::new(false),
            evict: AtomicBool::new(false),
            handshaken: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            arriving_since: AtomicU64::new(NONE),
            born: Instant::now(),
        })
    }

    /// Asks the connection to make room: closed at once if its client has
    /// not finished its handshake or a request of its has been arriving
    /// for longer than `STUCK_AFTER`, else drained (GOAWAY, the calls in
    /// flight answered), as grpc-go's server ends an idle connection.
    pub fn evict(&self) {
        self.evict.store(true, Ordering::Release);
        self.ring();
    }

    /// How the connection stands, for choosing one to make room.
    pub fn standing(&self) -> Standing {
        let at = |ms: u64| (ms != NONE).then(|| self.born + Duration::from_millis(ms));
        Standing {
            handshaken: self.handshaken.load(Ordering::Relaxed),
            idle_since: at(self.idle_since.load(Ordering::Relaxed)),
            arriving_since: at(self.arriving_since.load(Ordering::Relaxed)),
        }
    }

    /// How a connection stands, made up for tests of who makes room.
    #[cfg(test)]
    pub fn pretend(
        &self,
        handshaken: bool,
        idle_after: Option<Duration>,
        arriving_after: Option<Duration>,
    ) {
        let ms = |d: Option<Duration>| d.map_or(NONE, |d| d.as_millis() as u64);
        self.handshaken.store(handshaken, Ordering::Relaxed);
        self.idle_since.store(ms(idle_after), Ordering::Relaxed);
        self.arriving_since
            .store(ms(arriving_after), Ordering::Relaxed);
    }

    /// The time since `born` of `at`, as kept.
    fn since_born(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.born).as_millis()).unwrap_or(0)
    }

    /// Asked to make room.
    #[cfg(test)]
    pub fn evicted(&self) -> bool {
        self.evict.load(Ordering::Acquire)
    }

    /// The connection went idle (`now`) or busy; called on changes only.
    fn note_idle(&self, idle: bool, now: Instant) {
        let value = if idle { self.since_born(now) } else { BUSY };
        self.idle_since.store(value, Ordering::Relaxed);
    }

    /// Since when its oldest request still arriving has been; called on
    /// changes only.
    fn note_arriving(&self, since: Option<Instant>) {
        let value = since.map_or(NONE, |at| self.since_born(at));
        self.arriving_since.store(value, Ordering::Relaxed);
    }

    pub fn reply(&self, stream: u32, reply: Reply) {
        self.replies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((stream, reply));
        self.ring();
    }

    /// Asks the connection to refuse new calls (GOAWAY) and to end once
    /// the ones in flight are answered.
    pub fn drain(&self) {
        self.drain.store(true, Ordering::Release);
        self.ring();
    }

    fn ring(&self) {
        // Fails only when the counter is full, i.e. rung already.
        let _ = rustix::io::write(&self.bell, &1u64.to_ne_bytes());
    }

    fn silence(&self) {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&self.bell, &mut count);
    }

    fn take_replies(&self) -> Vec<(u32, Reply)> {
        std::mem::take(
            &mut *self
                .replies
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// One side of the relay: a non-blocking socket and what epoll last said.
struct Side {
    socket: UnixStream,
    /// Worth a read: epoll said so, or the last read filled the buffer.
    readable: bool,
    /// A write would block: wait for epoll to report room.
    stuck: bool,
    /// Bytes at the head of the socket's queue that we have read with
    /// MSG_PEEK and relayed, but not yet taken off the queue.
    peeked: usize,
    /// Since when `peeked` has been non-zero: held longer than the hold,
    /// the bytes are taken off even without a write to the peer, whose
    /// sending may be waiting for the room they take up (the kernel counts
    /// each small write as far more than its bytes).
    peeked_since: Option<Instant>,
    /// The peer has closed its side (epoll said so, once): a peek cannot
    /// see the end of input behind queued bytes, so from now on we take
    /// what we read and read on until we meet it.
    closing: bool,
}

/// Relayed input left on a socket's queue at most; past it, it is taken
/// off at once, so a peer that sends much never waits for room.
const PEEKED_LIMIT: usize = 16 << 10;

impl Side {
    fn new(socket: UnixStream) -> io::Result<Side> {
        socket.set_nonblocking(true)?;
        Ok(Side {
            socket,
            readable: true,
            stuck: false,
            peeked: 0,
            peeked_since: None,
            closing: false,
        })
    }

    /// Reads what is new; false once the peer closed its side.
    ///
    /// Input is peeked and left queued. Taking bytes off a Unix socket's
    /// queue is what tells their sender it has room to write again, and a
    /// sender that watches for room (grpc-go and tokio both do, edge
    /// triggered) is woken for it, to find nothing to write. Between a
    /// request and its reply that wakes a process waiting for us, for
    /// nothing, while its CPU is wanted on the call's path. So the bytes are
    /// taken off after our next write to the same peer (`write_some`),
    /// which wakes it anyway.
    ///
    /// A peek that did not fill `scratch` saw everything queued, so the
    /// next read waits for epoll, which reports each arrival once (edge
    /// triggered: what we peeked stays queued), and the peer's closing
    /// once, which `closing` remembers.
    fn read_some(&mut self, scratch: &mut [u8], buf: &mut BytesMut) -> io::Result<bool> {
        loop {
            match recv(
                &self.socket,
                &mut *scratch,
                RecvFlags::PEEK | RecvFlags::DONTWAIT,
            ) {
                Ok((n, _)) if n > self.peeked => {
                    buf.extend_from_slice(&scratch[self.peeked..n]);
                    if self.peeked == 0 {
                        self.peeked_since = Some(Instant::now());
                    }
                    self.peeked = n;
                    self.readable = n == scratch.len() || self.closing;
                    if self.readable || self.peeked >= PEEKED_LIMIT {
                        self.take_peeked(scratch)?;
                    }
                    return Ok(true);
                }
                // Nothing new behind what we peeked: the end of input may
                // be, which a peek cannot see past queued bytes.
                Ok(_) if self.peeked > 0 => self.take_peeked(scratch)?,
                Ok(_) => return Ok(false),
                Err(rustix::io::Errno::AGAIN) => {
                    self.readable = false;
                    return Ok(true);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Takes what we peeked off the socket's queue.
    fn take_peeked(&mut self, scratch: &mut [u8]) -> io::Result<()> {
        while self.peeked > 0 {
            let want = self.peeked.min(scratch.len());
            match recv(&self.socket, &mut scratch[..want], RecvFlags::DONTWAIT) {
                Ok((n, _)) if n > 0 => self.peeked -= n.min(self.peeked),
                Err(rustix::io::Errno::INTR) => {}
                // Peeked bytes never leave the queue but through us: the
                // stream is no longer what we relayed, and ends here.
                Ok(_) | Err(rustix::io::Errno::AGAIN) => {
                    return Err(io::Error::other("peeked input vanished from the socket"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.peeked_since = None;
        Ok(())
    }

    /// Writes what the socket takes, then takes what we peeked from this
    /// peer off the queue: our write has woken it anyway.
    fn write_some(&mut self, buf: &mut BytesMut, scratch: &mut [u8]) -> io::Result<()> {
        let mut wrote = false;
        while !buf.is_empty() && !self.stuck {
            match self.socket.write(buf) {
                Ok(n) => {
                    buf.advance(n);
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.stuck = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if wrote {
            self.take_peeked(scratch)?;
        }
        Ok(())
    }

    /// Writes all of `buf` before `deadline`, waiting for room as needed.
    fn write_all_until(&mut self, buf: &mut BytesMut, deadline: Instant) -> io::Result<()> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(&epoll, &self.socket, EventData::new_u64(0), EventFlags::OUT)?;
        let mut scratch = [0u8; 4096];
        loop {
            self.write_some(buf, &mut scratch)?;
            if buf.is_empty() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let mut events = [no_event(); 1];
            wait_for(&epoll, &mut events, Some(left))?;
            self.stuck = false;
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    ClientClosed,
    RuntimeClosed,
    Drained,
    /// No preface and first SETTINGS within the handshake deadline.
    HandshakeTimeout,
    /// Closed or drained to make room for a new connection.
    Evicted,
    /// The client broke HTTP/2.
    ProtocolError,
    /// A socket failed.
    IoError,
    /// The sockets could not be set up.
    SetupFailed,
}

impl End {
    /// As metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::RuntimeClosed => "runtime_closed",
            End::Drained => "drained",
            End::HandshakeTimeout => "handshake_timeout",
            End::Evicted => "evicted",
            End::ProtocolError => "protocol_error",
            End::IoError => "io_error",
            End::SetupFailed => "setup_failed",
        }
    }
}

enum Failure {
    Io(io::Error),
    Protocol(RelayError),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

impl From<RelayError> for Failure {
    fn from(e: RelayError) -> Self {
        Failure::Protocol(e)
    }
}

/// Relays between `client` and `upstream` until either side closes or a
/// drain has finished, then hands over what the other side is still owed.
/// `start_decision` starts deciding a taken-out call, whose reply comes
/// back through `mailbox`; `hold` is [`HOLD`] but in tests; a client that
/// has not sent its preface and first SETTINGS within `handshake` is
/// closed.
pub fn relay<H: Hooks>(
    client: UnixStream,
    upstream: UnixStream,
    mut relay: Relay<H>,
    mailbox: &Mailbox,
    timing: Timing,
    mut start_decision: impl FnMut(Call<H::Kind>) -> AbortHandle,
) -> End {
    let (mut client, mut upstream) = match (Side::new(client), Side::new(upstream)) {
        (Ok(client), Ok(upstream)) => (client, upstream),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot set up the connection's sockets; closing it");
            return End::SetupFailed;
        }
    };
    let end = run(
        &mut client,
        &mut upstream,
        &mut relay,
        mailbox,
        timing,
        &mut start_decision,
    );
    let deadline = Instant::now() + FLUSH_TIMEOUT;
    let reason = match &end {
        Ok(end) => *end,
        Err(Failure::Io(_)) => End::IoError,
        Err(Failure::Protocol(_)) => End::ProtocolError,
    };
    match end {
        Ok(End::ClientClosed) => {
            let _ = upstream.write_all_until(&mut relay.to_upstream, deadline);
        }
        Ok(End::RuntimeClosed) => {
            // Whatever the server said last (GOAWAY) reaches the client.
            let _ = client.write_all_until(&mut relay.to_client, deadline);
            tracing::debug!("runtime closed the connection");
        }
        Ok(End::HandshakeTimeout) => {
            tracing::info!(
                "closing a client connection that did not send the HTTP/2 preface and SETTINGS in time"
            );
        }
        Ok(_) => {}
        Err(Failure::Io(e)) => tracing::debug!(error = %e, "connection ended"),
        Err(Failure::Protocol(e)) => {
            tracing::info!(error = %e, "ending a client connection that broke HTTP/2");
            // After what is already queued, which may end in the rest of a
            // frame written only in part.
            frame::put_goaway(&mut relay.to_client, 0, e.code());
            let _ = client.write_all_until(&mut relay.to_client, deadline);
        }
    }
    // A socket closed with input still queued resets the peer's side;
    // what we read was read, and the peer gets a plain end of input.
    let mut scratch = [0u8; 4096];
    let _ = client.take_peeked(&mut scratch);
    let _ = upstream.take_peeked(&mut scratch);
    reason
}

/// The connection's clocks.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long what may wait for company waits ([`HOLD`] but in tests).
    pub hold: Duration,
    /// How long the client has for its preface and first SETTINGS.
    pub handshake: Duration,
}

/// Which sides we read now: neither while the client does not take what
/// waits for it, and each only while what it sends has room to go.
fn wanted<H: Hooks>(relay: &Relay<H>) -> [bool; 2] {
    let backlog_ok = relay.to_client.len() < CLIENT_BACKLOG_LIMIT;
    [
        relay.to_upstream.len() < BUFFER_LIMIT && backlog_ok,
        relay.from_upstream.len() < BUFFER_LIMIT && backlog_ok,
    ]
}

fn run<H: Hooks>(
    client: &mut Side,
    upstream: &mut Side,
    relay: &mut Relay<H>,
    mailbox: &Mailbox,
    timing: Timing,
    start_decision: &mut impl FnMut(Call<H::Kind>) -> AbortHandle,
) -> Result<End, Failure> {
    let hold = timing.hold;
    let handshake_deadline = Instant::now() + timing.handshake;
    let mut handshaken = false;
    let mut evicted = false;
    // As the mailbox was made: idle since its birth, nothing arriving.
    let mut was_idle = true;
    let mut was_arriving = None;
    let mut scratch = vec![0; READ_CHUNK];
    let mut waiter = Waiter::new(mailbox)?;
    let mut draining = false;
    let mut acks_held_since: Option<Instant> = None;
    // Whether the mailbox rang since we last looked (and at the start,
    // when a drain may already have been asked for).
    let mut mail = true;
    loop {
        let [want_client, want_upstream] = wanted(relay);
        let client_open = !(want_client && client.readable)
            || client.read_some(&mut scratch, &mut relay.from_client)?;
        let upstream_open = !(want_upstream && upstream.readable)
            || upstream.read_some(&mut scratch, &mut relay.from_upstream)?;
        relay.client_frames()?;
        relay.upstream_frames()?;
        if !handshaken && relay.client_handshaken() {
            handshaken = true;
            mailbox.handshaken.store(true, Ordering::Relaxed);
        }
        for call in std::mem::take(&mut relay.calls) {
            let stream = call.stream;
            let task = start_decision(call);
            relay.set_task(stream, task);
        }
        if std::mem::take(&mut mail) {
            for (stream, reply) in mailbox.take_replies() {
                relay.reply(stream, reply);
            }
            if mailbox.evict.load(Ordering::Acquire) && !evicted {
                evicted = true;
                let stuck = relay
                    .arriving_since()
                    .is_some_and(|since| since + STUCK_AFTER <= Instant::now());
                if !handshaken || stuck {
                    return Ok(End::Evicted);
                }
            }
            if !draining && (evicted || mailbox.drain.load(Ordering::Acquire)) {
                draining = true;
                relay.drain();
            }
        }
        let now = Instant::now();
        relay.settle_stalled(now);
        if !handshaken && now >= handshake_deadline {
            return Ok(End::HandshakeTimeout);
        }
        let idle = relay.idle();
        if idle != was_idle {
            was_idle = idle;
            mailbox.note_idle(idle, now);
        }
        let arriving = if idle { None } else { relay.arriving_since() };
        if arriving != was_arriving {
            was_arriving = arriving;
            mailbox.note_arriving(arriving);
        }
        if relay.acks_held() && *acks_held_since.get_or_insert(now) + hold <= now {
            relay.release_acks();
        }
        if !relay.acks_held() {
            acks_held_since = None;
        }
        // The client first: what we just read from the server is what
        // someone is waiting for.
        client.write_some(&mut relay.to_client, &mut scratch)?;
        upstream.write_some(&mut relay.to_upstream, &mut scratch)?;
        if !client_open {
            return Ok(End::ClientClosed);
        }
        if !upstream_open {
            return Ok(End::RuntimeClosed);
        }
        if draining && relay.idle() && relay.to_client.is_empty() {
            return Ok(if evicted { End::Evicted } else { End::Drained });
        }
        for side in [&mut *client, &mut *upstream] {
            if side.peeked_since.is_some_and(|since| since + hold <= now) {
                // Its peer had its chance to hear of its room with our
                // next write; it is told now, and whatever the peek could
                // not see past is read.
                side.take_peeked(&mut scratch)?;
                side.readable = true;
            }
        }
        // The writes may have made room: what we read is judged again.
        let [want_client, want_upstream] = wanted(relay);
        if (want_client && client.readable) || (want_upstream && upstream.readable) {
            continue;
        }
        let timeout = [acks_held_since, client.peeked_since, upstream.peeked_since]
            .into_iter()
            .flatten()
            .map(|since| since + hold)
            .chain((!handshaken).then_some(handshake_deadline))
            .chain(relay.stall_deadline())
            .min()
            .map(|at| at.saturating_duration_since(now));
        mail = waiter.wait(
            client,
            upstream,
            mailbox,
            [want_client, want_upstream],
            timeout,
        )?;
    }
}

/// The connection's epoll set: the mailbox's eventfd always, each socket
/// for what we want of it now. Registrations persist across waits (the
/// kernel need not set up and tear down a wait per socket per wake-up, as
/// poll has it do) and change only when the interest does, which is when
/// a side backs up or a write gets stuck: rarely.
///
/// Output readiness is asked for only while a write is stuck: every time
/// a peer takes what we wrote, the kernel reports room to write, and a
/// standing interest in that would wake us twice per call for nothing.
struct Waiter {
    epoll: OwnedFd,
    /// What each side (client, upstream) is registered for; empty means
    /// not registered at all, since a registered socket reports a hang-up
    /// whatever it was registered for, and would report it again and again
    /// while we do not read it.
    registered: [EventFlags; 2],
}

const BELL: u64 = 0;
const CLIENT: u64 = 1;
const UPSTREAM: u64 = 2;

fn no_event() -> Event {
    Event {
        flags: EventFlags::empty(),
        data: EventData::new_u64(BELL),
    }
}

fn wait_for(epoll: &OwnedFd, events: &mut [Event], timeout: Option<Duration>) -> io::Result<usize> {
    let timeout = timeout.map(|d| Timespec {
        tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: d.subsec_nanos().into(),
    });
    loop {
        match epoll::wait(epoll, &mut *events, timeout.as_ref()) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

impl Waiter {
    fn new(mailbox: &Mailbox) -> io::Result<Waiter> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            &mailbox.bell,
            EventData::new_u64(BELL),
            EventFlags::IN,
        )?;
        Ok(Waiter {
            epoll,
            registered: [EventFlags::empty(); 2],
        })
    }

    fn register(&mut self, side: &Side, which: u64, wanted: EventFlags) -> io::Result<()> {
        let slot = &mut self.registered[which as usize - 1];
        if *slot == wanted {
            return Ok(());
        }
        let data = EventData::new_u64(which);
        match (slot.is_empty(), wanted.is_empty()) {
            (true, false) => epoll::add(&self.epoll, &side.socket, data, wanted)?,
            (false, true) => epoll::delete(&self.epoll, &side.socket)?,
            _ => epoll::modify(&self.epoll, &side.socket, data, wanted)?,
        }
        *slot = wanted;
        Ok(())
    }

    /// Sleeps until a socket we want to read has input, a stuck write may
    /// go on, the mailbox rings, or `timeout` passes; true if it rang.
    fn wait(
        &mut self,
        client: &mut Side,
        upstream: &mut Side,
        mailbox: &Mailbox,
        want_input: [bool; 2],
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let interest = |want_input: bool, side: &Side| {
            let mut flags = EventFlags::empty();
            if want_input {
                flags |= EventFlags::IN | EventFlags::RDHUP;
            }
            if side.stuck {
                flags |= EventFlags::OUT;
            }
            if !flags.is_empty() {
                // Peeked input stays queued, and level triggered it would
                // be reported again and again.
                flags |= EventFlags::ET;
            }
            flags
        };
        self.register(client, CLIENT, interest(want_input[0], client))?;
        self.register(upstream, UPSTREAM, interest(want_input[1], upstream))?;
        let mut events = [no_event(); 3];
        let n = wait_for(&self.epoll, &mut events, timeout)?;
        let gone = EventFlags::HUP | EventFlags::ERR;
        let mut rang = false;
        for event in events.iter().take(n) {
            // Copied out: the kernel's struct is packed.
            let (flags, data) = (event.flags, event.data);
            let side = match data.u64() {
                CLIENT => &mut *client,
                UPSTREAM => &mut *upstream,
                _ => {
                    mailbox.silence();
                    rang = true;
                    continue;
                }
            };
            side.closing |= flags.intersects(EventFlags::RDHUP | gone);
            side.readable |= flags.intersects(EventFlags::IN | EventFlags::RDHUP | gone);
            side.stuck &= !flags.intersects(EventFlags::OUT | gone);
        }
        Ok(rang)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::frame::*;
    use crate::relay::hpack;
    use std::io::Read as _;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread::JoinHandle;

    use crate::relay::testing::TestHooks;

    /// A connection driven on its thread, with the test holding the far
    /// ends of both sockets: `client` plays kubelet, `runtime` containerd.
    struct Harness {
        client: UnixStream,
        runtime: UnixStream,
        mailbox: Arc<Mailbox>,
        calls: mpsc::Receiver<Call<()>>,
        /// Disconnects when the connection's thread is done.
        ended: mpsc::Receiver<()>,
        thread: Option<JoinHandle<End>>,
        _async_side: tokio::runtime::Runtime,
    }

    impl Harness {
        fn start(ack_delay: Duration) -> Harness {
            let mut h = Harness::spawn(ack_delay, Duration::from_secs(60));
            // Past the preface: the client's SETTINGS reach containerd as sent.
            let mut hello = BytesMut::from(&PREFACE[..]);
            put_header(&mut hello, 0, SETTINGS, 0, 0);
            h.client.write_all(&hello).unwrap();
            assert_eq!(read_exactly(&mut h.runtime, hello.len()), hello);
            // containerd sends its own and acknowledges them, and the
            // client hears both.
            let mut ack = BytesMut::new();
            put_header(&mut ack, 0, SETTINGS, 0, 0);
            put_header(&mut ack, 0, SETTINGS, ACK, 0);
            h.runtime.write_all(&ack).unwrap();
            assert_eq!(read_exactly(&mut h.client, ack.len()), ack);
            h
        }

        /// The connection's thread started, before the client's hello.
        fn spawn(ack_delay: Duration, handshake: Duration) -> Harness {
            let async_side = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let handle = async_side.handle().clone();
            let (client, client_far) = UnixStream::pair().unwrap();
            let (runtime, runtime_far) = UnixStream::pair().unwrap();
            for s in [&client, &runtime] {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            }
            let mailbox = Arc::new(Mailbox::new().unwrap());
            let (calls_tx, calls) = mpsc::channel();
            let (ended_tx, ended) = mpsc::channel();
            let thread_mailbox = mailbox.clone();
            let thread = std::thread::spawn(move || {
                let _ended = ended_tx;
                relay(
                    client_far,
                    runtime_far,
                    Relay::new(TestHooks::default()),
                    &thread_mailbox,
                    Timing {
                        hold: ack_delay,
                        handshake,
                    },
                    |call| {
                        calls_tx.send(call).unwrap();
                        handle.spawn(std::future::pending::<()>()).abort_handle()
                    },
                )
            });
            Harness {
                client,
                runtime,
                mailbox,
                calls,
                ended,
                thread: Some(thread),
                _async_side: async_side,
            }
        }

        /// Waits (a bounded time) for the connection's thread to end, and
        /// says why it did.
        fn join(&mut self) -> End {
            assert_eq!(
                self.ended.recv_timeout(Duration::from_secs(5)),
                Err(mpsc::RecvTimeoutError::Disconnected),
                "the connection's thread did not end"
            );
            self.thread.take().unwrap().join().unwrap()
        }

        /// The client calls Version on `stream`; containerd gets its two frames.
        fn version_call(&mut self, stream: u32) {
            self.client
                .write_all(&request(stream, "/runtime.v1.RuntimeService/Version"))
                .unwrap();
            let got = read_shapes(&mut self.runtime, 2);
            assert_eq!(
                got,
                vec![(HEADERS, stream, END_HEADERS), (DATA, stream, END_STREAM)]
            );
        }
    }

    fn read_exactly(socket: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        socket.read_exact(&mut buf).unwrap();
        buf
    }

    /// The next `count` frames on `socket`: (kind, stream, flags, payload).
    fn read_frames(socket: &mut UnixStream, count: usize) -> Vec<(u8, u32, u8, Vec<u8>)> {
        (0..count)
            .map(|_| {
                let head = read_exactly(socket, HEADER_LEN);
                let h = Header::parse(&head).unwrap();
                let payload = read_exactly(socket, h.len);
                (h.kind, h.stream, h.flags, payload)
            })
            .collect()
    }

    /// The next `count` frames on `socket`: (kind, stream, flags).
    fn read_shapes(socket: &mut UnixStream, count: usize) -> Vec<(u8, u32, u8)> {
        read_frames(socket, count)
            .into_iter()
            .map(|(kind, stream, flags, _)| (kind, stream, flags))
            .collect()
    }

    fn nothing_arrives(socket: &mut UnixStream, within: Duration) -> bool {
        socket.set_read_timeout(Some(within)).unwrap();
        let mut byte = [0u8; 1];
        let quiet =
            matches!(socket.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        quiet
    }

    fn ping(payload: &[u8; 8]) -> BytesMut {
        let mut out = BytesMut::new();
        put_header(&mut out, 8, PING, 0, 0);
        out.extend_from_slice(payload);
        out
    }

    fn request(stream: u32, path: &str) -> BytesMut {
        let mut block = BytesMut::new();
        hpack::encode_field(&mut block, b":method", b"POST");
        hpack::encode_field(&mut block, b":scheme", b"http");
        hpack::encode_field(&mut block, b":path", path.as_bytes());
        let mut out = BytesMut::new();
        put_header_block(&mut out, stream, &block, false, DEFAULT_MAX_FRAME);
        put_data(&mut out, stream, b"\0\0\0\0\0", true);
        out
    }

    #[test]
    fn containerds_ping_is_answered_alone_once_the_delay_passes() {
        let mut h = Harness::start(Duration::from_millis(20));
        h.runtime.write_all(&ping(b"pingpong")).unwrap();
        let answer = read_frames(&mut h.runtime, 1);
        assert_eq!(answer, vec![(PING, 0, ACK, b"pingpong".to_vec())]);
        // It was ours to answer: the client never saw it.
        assert!(nothing_arrives(&mut h.client, Duration::from_millis(50)));
    }

    #[test]
    fn containerds_ping_answer_rides_with_the_next_call() {
        let mut h = Harness::start(Duration::from_secs(60));
        h.runtime.write_all(&ping(b"pingpong")).unwrap();
        assert!(nothing_arrives(&mut h.runtime, Duration::from_millis(100)));
        h.client
            .write_all(&request(1, "/runtime.v1.RuntimeService/Version"))
            .unwrap();
        let got = read_shapes(&mut h.runtime, 3);
        assert_eq!(
            got,
            vec![
                (HEADERS, 1, END_HEADERS),
                (DATA, 1, END_STREAM),
                (PING, 0, ACK)
            ]
        );
    }

    #[test]
    fn replies_come_through_the_mailbox_after_containerd_acknowledges_the_marker() {
        let mut h = Harness::start(HOLD);
        h.client
            .write_all(&request(1, "/runtime.v1.ImageService/Intercepted"))
            .unwrap();
        let call = h.calls.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            (call.stream, call.path()),
            (1, "/runtime.v1.ImageService/Intercepted")
        );
        // containerd sees the call muted: its head without END_STREAM, a
        // reset, and our SETTINGS marker; never its body.
        let muted = read_shapes(&mut h.runtime, 3);
        assert_eq!(
            muted,
            vec![
                (HEADERS, 1, END_HEADERS),
                (RST_STREAM, 1, 0),
                (SETTINGS, 0, 0)
            ]
        );
        let mut head = BytesMut::new();
        hpack::encode_field(&mut head, b":status", b"200");
        h.mailbox.reply(
            1,
            Reply {
                head: head.freeze(),
                data: bytes::Bytes::from_static(b"\0\0\0\0\x02ok"),
                trailers: None,
            },
        );
        // Not before containerd has acknowledged the marker: the client
        // gets back the window its swallowed body used, and nothing else.
        let window = read_frames(&mut h.client, 1);
        assert_eq!(
            (window[0].0, window[0].1, &window[0].3[..]),
            (WINDOW_UPDATE, 0, &5u32.to_be_bytes()[..])
        );
        assert!(nothing_arrives(&mut h.client, Duration::from_millis(100)));
        let mut ack = BytesMut::new();
        put_header(&mut ack, 0, SETTINGS, ACK, 0);
        h.runtime.write_all(&ack).unwrap();
        let reply = read_frames(&mut h.client, 2);
        assert_eq!((reply[0].0, reply[0].1), (HEADERS, 1));
        assert_eq!(
            (reply[1].0, reply[1].1, reply[1].2, &reply[1].3[..]),
            (DATA, 1, END_STREAM, &b"\0\0\0\0\x02ok"[..])
        );
    }

    #[test]
    fn a_drain_says_goaway_and_ends_the_idle_connection() {
        let mut h = Harness::start(HOLD);
        h.mailbox.drain();
        let goaway = read_frames(&mut h.client, 1);
        assert_eq!((goaway[0].0, goaway[0].1), (GOAWAY, 0));
        h.join();
        // Both of our sockets are closed: each far end reads end of input.
        assert_eq!(h.client.read(&mut [0u8; 16]).unwrap(), 0);
        assert_eq!(h.runtime.read(&mut [0u8; 16]).unwrap(), 0);
    }

    #[test]
    fn the_client_closing_hands_containerd_the_rest_and_ends_the_connection() {
        // A hold longer than the test: only a remembered close can find the
        // end of input behind the peeked request, when both came at once.
        let mut h = Harness::start(Duration::from_secs(60));
        h.client
            .write_all(&request(1, "/runtime.v1.RuntimeService/Version"))
            .unwrap();
        h.client.shutdown(std::net::Shutdown::Write).unwrap();
        let got = read_frames(&mut h.runtime, 2);
        assert_eq!((got[0].0, got[1].0), (HEADERS, DATA));
        h.join();
        assert_eq!(h.runtime.read(&mut [0u8; 16]).unwrap(), 0);
    }

    #[test]
    fn a_client_breaking_http2_is_told_why() {
        let mut h = Harness::start(HOLD);
        // CONTINUATION with no header block before it.
        let mut bad = BytesMut::new();
        put_header(&mut bad, 0, CONTINUATION, END_HEADERS, 1);
        h.client.write_all(&bad).unwrap();
        let goaway = read_frames(&mut h.client, 1);
        assert_eq!(goaway[0].0, GOAWAY);
        assert_eq!(&goaway[0].3[4..8], &PROTOCOL_ERROR.to_be_bytes());
        h.join();
    }

    /// Whether the kernel told `socket`'s writer it has room again since
    /// the last look: an edge-triggered watch, as grpc-go and tokio keep.
    struct RoomWatch(OwnedFd);

    impl RoomWatch {
        fn new(socket: &UnixStream) -> RoomWatch {
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
            epoll::add(
                &epoll,
                socket,
                EventData::new_u64(0),
                EventFlags::OUT | EventFlags::ET,
            )
            .unwrap();
            let watch = RoomWatch(epoll);
            // The first report is the socket's room as it was registered;
            // one more may follow from what the relay took off during the
            // set-up, just after its last write there.
            assert!(watch.told());
            while watch.told_within(Duration::from_millis(20)) {}
            watch
        }

        fn told_within(&self, within: Duration) -> bool {
            let mut events = [no_event(); 1];
            wait_for(&self.0, &mut events, Some(within)).unwrap() > 0
        }

        fn told(&self) -> bool {
            self.told_within(Duration::from_secs(2))
        }

        fn not_told(&self) -> bool {
            !self.told_within(Duration::from_millis(50))
        }
    }

    #[test]
    fn a_request_is_taken_off_the_clients_socket_only_with_the_reply() {
        let mut h = Harness::start(Duration::from_secs(60));
        let client_room = RoomWatch::new(&h.client);
        h.version_call(1);
        // Relayed, yet the client was not woken to be told it has room.
        assert!(client_room.not_told());
        let runtime_room = RoomWatch::new(&h.runtime);
        let mut reply = BytesMut::new();
        put_header(&mut reply, 0, HEADERS, END_HEADERS | END_STREAM, 1);
        h.runtime.write_all(&reply).unwrap();
        read_frames(&mut h.client, 1);
        // The reply's write woke the client, and its room came along.
        assert!(client_room.told());
        assert!(runtime_room.not_told());
        // containerd hears of its room with the next call.
        h.version_call(3);
        assert!(runtime_room.told());
    }

    #[test]
    fn the_end_of_input_behind_peeked_bytes_is_seen() {
        let mut h = Harness::start(Duration::from_secs(60));
        h.version_call(1);
        // Still queued on the client's socket when the client goes.
        drop(std::mem::replace(
            &mut h.client,
            UnixStream::pair().unwrap().0,
        ));
        h.join();
        assert_eq!(h.runtime.read(&mut [0u8; 16]).unwrap(), 0);
    }

    #[test]
    fn a_request_without_a_reply_is_taken_off_once_the_hold_passes() {
        let mut h = Harness::start(Duration::from_millis(20));
        let client_room = RoomWatch::new(&h.client);
        h.version_call(1);
        assert!(client_room.told());
    }

    #[test]
    fn a_client_that_stops_reading_is_served_to_the_end_once_it_reads() {
        let mut h = Harness::start(HOLD);
        // More header blocks than the client backlog may hold (they are
        // not flow controlled), while the client does not read.
        const FRAMES: usize = 400;
        const PAYLOAD: usize = 16_000;
        let mut frames = BytesMut::new();
        for _ in 0..FRAMES {
            put_header(&mut frames, PAYLOAD, HEADERS, END_HEADERS, 1);
            frames.extend_from_slice(&[0x88; PAYLOAD]);
        }
        // Written until the relay stops taking more (every buffer on the
        // way full), rather than for a while: then the rest, blocking.
        let mut runtime = h.runtime.try_clone().unwrap();
        runtime.set_nonblocking(true).unwrap();
        let mut sent = 0;
        let mut stalls = 0;
        while sent < frames.len() && stalls < 3 {
            match runtime.write(&frames[sent..]) {
                Ok(n) => {
                    sent += n;
                    stalls = 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The relay may still be draining the socket: it is full
                    // once it stays full across a few of its wake-ups.
                    stalls += 1;
                    std::thread::yield_now();
                    let mut poll = [rustix::event::PollFd::new(
                        &runtime,
                        rustix::event::PollFlags::OUT,
                    )];
                    let _ = rustix::event::poll(
                        &mut poll,
                        Some(&Timespec {
                            tv_sec: 0,
                            tv_nsec: 50_000_000,
                        }),
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(sent < frames.len(), "the client's backlog held everything");
        runtime.set_nonblocking(false).unwrap();
        let writer = std::thread::spawn(move || runtime.write_all(&frames[sent..]).unwrap());
        let mut got = 0;
        let mut buf = vec![0; 1 << 20];
        while got < FRAMES * (HEADER_LEN + PAYLOAD) {
            let n = h.client.read(&mut buf).expect("the rest arrives");
            assert!(n > 0, "connection closed after {got} bytes");
            got += n;
        }
        writer.join().unwrap();
    }

    #[test]
    fn a_client_silent_past_the_handshake_deadline_is_closed() {
        let mut h = Harness::spawn(HOLD, Duration::from_millis(200));
        // The preface alone is no hello: SETTINGS must follow it.
        h.client.write_all(PREFACE).unwrap();
        assert_eq!(h.join(), End::HandshakeTimeout);
        assert_eq!(read_exactly(&mut h.runtime, PREFACE.len()), PREFACE);
        assert_eq!(h.client.read(&mut [0u8; 16]).unwrap(), 0, "closed");
    }

    #[test]
    fn a_client_that_said_hello_has_no_deadline() {
        let mut h = Harness::spawn(HOLD, Duration::from_millis(100));
        let mut hello = BytesMut::from(&PREFACE[..]);
        put_header(&mut hello, 0, SETTINGS, 0, 0);
        h.client.write_all(&hello).unwrap();
        assert_eq!(read_exactly(&mut h.runtime, hello.len()), hello);
        assert!(h.mailbox.standing().handshaken);
        assert!(nothing_arrives(&mut h.client, Duration::from_millis(300)));
        h.version_call(1);
    }

    #[test]
    fn making_room_closes_a_silent_connection_and_drains_one_that_said_hello() {
        let mut silent = Harness::spawn(HOLD, Duration::from_secs(60));
        silent.mailbox.evict();
        assert_eq!(silent.join(), End::Evicted);

        let mut idle = Harness::start(HOLD);
        idle.mailbox.evict();
        let goaway = read_frames(&mut idle.client, 1);
        assert_eq!((goaway[0].0, goaway[0].1), (GOAWAY, 0));
        assert_eq!(idle.join(), End::Evicted);
    }
}
