//! One memory budget for what every connection's relay holds for calls
//! taken out of the stream: request heads and bodies until they are
//! answered, and replies until the client has taken them. Past it the
//! relay stops giving the client window back, so flow control holds the
//! sender, and a call that still cannot fit is refused
//! (RESOURCE_EXHAUSTED) before it is decided.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a muted stream costs before any of its bytes: its entry in the
/// stream table, so that streams that hold nothing are bounded too.
pub(super) const STREAM_OVERHEAD: usize = 512;

/// The part of the budget a charge may draw on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Share {
    /// Heads and bodies still arriving: three quarters, so that senders
    /// that never finish cannot take the room whole calls need. kubelet's
    /// calls arrive whole, in a frame or two.
    Arriving,
    /// Calls that are whole, and replies: all of it.
    Whole,
}

#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// No bound: for a relay on its own (tests, fuzzing).
    pub fn unbounded() -> Arc<Budget> {
        Budget::new(usize::MAX / 2)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now, over every connection.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn cap(&self, share: Share) -> usize {
        match share {
            Share::Arriving => self.limit - self.limit / 4,
            Share::Whole => self.limit,
        }
    }

    /// Takes `n` bytes if they fit in `share`.
    fn take(&self, n: usize, share: Share) -> bool {
        let cap = self.cap(share);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&after| after <= cap)
            })
            .is_ok()
    }

    /// Counts `n` bytes that are held already, fitting or not.
    fn force(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Whether what is held, counted in already, is within `share`.
    fn within(&self, share: Share) -> bool {
        self.used() <= self.cap(share)
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// What one stream holds of the budget; given back when it goes, whichever
/// way it goes (answered, reset, the connection lost).
#[derive(Debug)]
pub(super) struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    pub(super) fn new(budget: &Arc<Budget>) -> Charge {
        Charge {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    pub(super) fn try_add(&mut self, n: usize, share: Share) -> bool {
        let taken = self.budget.take(n, share);
        if taken {
            self.bytes += n;
        }
        taken
    }

    /// Counts bytes that arrived whether or not they fit (within the window
    /// the client had already been given).
    pub(super) fn force(&mut self, n: usize) {
        self.budget.force(n);
        self.bytes += n;
    }

    /// Whether the budget, this stream's bytes counted in, is within `share`.
    pub(super) fn fits(&self, share: Share) -> bool {
        self.budget.within(share)
    }

    pub(super) fn release(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.budget.give_back(n);
        self.bytes -= n;
    }

    pub(super) fn release_all(&mut self) {
        self.release(self.bytes);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arriving_bytes_leave_a_quarter_for_whole_calls() {
        let budget = Budget::new(1000);
        let mut slow = Charge::new(&budget);
        assert!(slow.try_add(750, Share::Arriving));
        assert!(!slow.try_add(1, Share::Arriving));
        let mut whole = Charge::new(&budget);
        assert!(whole.try_add(250, Share::Whole));
        assert!(!whole.try_add(1, Share::Whole));
        drop(slow);
        assert_eq!(budget.used(), 250);
        whole.force(900);
        assert!(!whole.fits(Share::Whole));
        whole.release(900);
        assert!(whole.fits(Share::Arriving));
        drop(whole);
        assert_eq!(budget.used(), 0);
    }
}

#[cfg(test)]
mod relay_tests {
    use std::time::Instant;

    use super::super::client::STALL_WAIT;
    use super::super::frame::*;
    use super::super::testing::*;
    use super::*;

    /// The window updates the client got: (stream, increment).
    fn updates(buf: &mut BytesMut) -> Vec<(u32, u32)> {
        frames(buf)
            .iter()
            .filter(|(h, _)| h.kind == WINDOW_UPDATE)
            .map(|(h, p)| (h.stream, window_increment(p).unwrap()))
            .collect()
    }

    fn grpc_status(buf: &mut BytesMut, stream: u32) -> Option<String> {
        let sent = frames(buf);
        let (_, block) = sent
            .iter()
            .find(|(h, _)| h.kind == HEADERS && h.stream == stream)?;
        hpack::fields_of_own(block)
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == b"grpc-status")
            .map(|(_, v)| String::from_utf8(v).unwrap())
    }

    /// A call opened and sent `n` bytes of body that does not end.
    fn arriving(r: &mut TestRelay, stream: u32, n: usize) {
        client_headers(r, stream, "/svc/Intercepted", false);
        let mut left = n;
        while left > 0 {
            let chunk = left.min(16_384);
            put_data(&mut r.from_client, stream, &vec![0; chunk], false);
            left -= chunk;
        }
        r.client_frames().unwrap();
    }

    #[test]
    fn past_the_budget_the_window_is_held_back_then_the_call_refused() {
        let budget = Budget::new(64 << 10);
        let mut r = relay_within(budget.clone());
        // Three quarters of 64 KiB is 48 KiB for calls still arriving.
        arriving(&mut r, 1, 40 << 10);
        ack_fence(&mut r);
        let given: u32 = updates(&mut r.to_client).iter().map(|u| u.1).sum();
        assert_eq!(given, 2 * (40 << 10), "both windows for what fitted");
        r.to_upstream.clear();
        arriving(&mut r, 3, 16 << 10);
        ack_fence(&mut r);
        assert!(
            updates(&mut r.to_client).is_empty(),
            "no window for what did not fit"
        );
        assert!(r.stall_deadline().is_some());
        // Still no room a moment later: held.
        r.settle_stalled(Instant::now());
        assert!(r.to_client.is_empty());
        // No room once the wait is over: refused, its bytes let go and its
        // connection window given back.
        r.settle_stalled(Instant::now() + STALL_WAIT);
        let mut sent = r.to_client.split();
        let got = updates(&mut sent.clone());
        assert_eq!(got, vec![(0, 16 << 10)]);
        assert_eq!(grpc_status(&mut sent, 3).as_deref(), Some("8"));
        assert!(r.calls.is_empty(), "never handed out");
        assert!(r.stall_deadline().is_none());
        assert!(budget.used() < (41 << 10), "{}", budget.used());
        // The call that fitted finishes and is handed out.
        put_data(&mut r.from_client, 1, b"", true);
        r.client_frames().unwrap();
        assert_eq!(r.calls.len(), 1);
    }

    #[test]
    fn a_call_held_back_goes_on_once_there_is_room() {
        let budget = Budget::new(64 << 10);
        let mut r = relay_within(budget.clone());
        arriving(&mut r, 1, 46 << 10);
        arriving(&mut r, 3, 4 << 10);
        ack_fence(&mut r);
        r.to_client.clear();
        // The first one goes: the second's window comes back, stream and
        // connection both.
        put_rst_stream(&mut r.from_client, 1, CANCEL);
        r.client_frames().unwrap();
        r.settle_stalled(Instant::now());
        let mut got = updates(&mut r.to_client);
        got.sort();
        assert_eq!(got, vec![(0, 4 << 10), (3, 4 << 10)]);
        assert!(r.stall_deadline().is_none());
        put_data(&mut r.from_client, 3, b"end", true);
        r.client_frames().unwrap();
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].body.len(), (4 << 10) + 3);
    }

    #[test]
    fn whole_calls_find_room_that_arriving_ones_cannot_take() {
        let budget = Budget::new(64 << 10);
        let mut r = relay_within(budget.clone());
        arriving(&mut r, 1, 47 << 10);
        // A call that arrives whole, as kubelet's do, fits in the quarter
        // kept for them.
        client_headers(&mut r, 3, "/svc/Intercepted", false);
        put_data(&mut r.from_client, 3, &[1; 8 << 10], true);
        r.client_frames().unwrap();
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].stream, 3);
        // One held back that ends but still cannot fit is refused at once.
        arriving(&mut r, 5, 8 << 10);
        put_data(&mut r.from_client, 5, &[1; 16 << 10], true);
        r.client_frames().unwrap();
        ack_fence(&mut r);
        ack_fence(&mut r);
        ack_fence(&mut r);
        assert_eq!(grpc_status(&mut r.to_client, 5).as_deref(), Some("8"));
        assert_eq!(r.calls.len(), 1);
    }

    #[test]
    fn everything_held_is_given_back_however_the_calls_end() {
        let budget = Budget::new(64 << 10);
        {
            let mut r = relay_within(budget.clone());
            arriving(&mut r, 1, 10 << 10);
            arriving(&mut r, 3, 50 << 10);
            client_headers(&mut r, 5, "/svc/Intercepted", true);
            r.client_frames().unwrap();
            ack_fence(&mut r);
            // Answered, reset, and one left open as the connection goes.
            r.reply(5, reply(&[0; 100]));
            put_rst_stream(&mut r.from_client, 3, CANCEL);
            r.client_frames().unwrap();
            assert!(budget.used() > 10 << 10);
        }
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn one_connection_holds_little_beyond_the_budget() {
        let budget = Budget::new(64 << 10);
        let mut r = relay_within(budget.clone());
        // containerd gave the connection a large window.
        put_window_update(&mut r.from_upstream, 0, 8 << 20);
        r.upstream_frames().unwrap();
        arriving(&mut r, 1, 48 << 10);
        for stream in (3..40).step_by(2) {
            arriving(&mut r, stream, 16 << 10);
        }
        // What is held past the budget stays near 32 KiB, however many
        // calls try.
        let past = budget.used().saturating_sub(64 << 10);
        assert!(past <= (32 + 16 + 8) << 10, "{past} bytes past the budget");
        for _ in 0..20 {
            ack_fence(&mut r);
        }
        let sent = frames(&mut r.to_client);
        let refused = sent
            .iter()
            .filter(|(h, p)| {
                h.kind == HEADERS
                    && hpack::fields_of_own(p)
                        .unwrap()
                        .iter()
                        .any(|(n, v)| n == b"grpc-status" && v == b"8")
            })
            .count();
        assert!(refused >= 10, "{refused} refused");
    }

    #[test]
    fn data_on_a_muted_call_beyond_the_connection_window_ends_the_connection() {
        let mut r = relay_within(Budget::new(64 << 10));
        arriving(&mut r, 1, 48 << 10);
        // Past the budget nothing more is given back: the client has what
        // is left of 64 KiB and no more.
        client_headers(&mut r, 3, "/svc/Intercepted", false);
        put_data(&mut r.from_client, 3, &[0; 16_000], false);
        assert!(r.client_frames().is_ok());
        put_data(&mut r.from_client, 3, &[0; 16_384], false);
        put_data(&mut r.from_client, 3, &[0; 16_384], false);
        put_data(&mut r.from_client, 3, &[0; 16_384], false);
        put_data(&mut r.from_client, 3, &[0; 16_384], false);
        assert!(matches!(
            r.client_frames(),
            Err(super::super::RelayError::Protocol(_))
        ));
    }

    #[test]
    fn a_request_too_large_to_take_lets_go_of_what_it_held() {
        let budget = Budget::new(64 << 20);
        let mut r = relay_within(budget.clone());
        client_headers(&mut r, 1, "/svc/Intercepted", false);
        // Within the window each time, as a client must be.
        let mut sent = 0;
        while sent <= super::super::MAX_REQUEST {
            for _ in 0..3 {
                put_data(&mut r.from_client, 1, &[0; 16_384], false);
            }
            sent += 3 * 16_384;
            r.client_frames().unwrap();
        }
        // Let go at once, before the refusal can even be sent.
        assert!(budget.used() < 4 << 10, "{} still held", budget.used());
        ack_fence(&mut r);
        assert_eq!(grpc_status(&mut r.to_client, 1).as_deref(), Some("8"));
        assert!(r.calls.is_empty());
    }

    #[test]
    fn a_large_reply_that_cannot_fit_becomes_resource_exhausted() {
        let budget = Budget::new(64 << 10);
        let mut r = relay_within(budget.clone());
        client_headers(&mut r, 1, "/svc/Intercepted", true);
        r.client_frames().unwrap();
        ack_fence(&mut r);
        r.to_client.clear();
        let big = vec![7; 100 << 10];
        r.reply(1, reply(&big));
        assert_eq!(grpc_status(&mut r.to_client, 1).as_deref(), Some("8"));
        // A small one is kept whatever the budget says.
        client_headers(&mut r, 3, "/svc/Intercepted", true);
        r.client_frames().unwrap();
        ack_fence(&mut r);
        r.to_client.clear();
        r.reply(3, reply(&[7; 1000]));
        let sent = frames(&mut r.to_client);
        assert!(sent.iter().any(|(h, p)| h.kind == DATA && p.len() == 1000));
        assert_eq!(budget.used(), 0, "all sent and closed");
    }
}
