//! The client's connection-level receive window, shared by two senders:
//! the server, which knows nothing of us, and the relay, which injects the
//! replies to taken-out calls.
//!
//! The server's idea of the window is always `window + debt`, where `debt`
//! is what we injected and the client has not yet paid back in
//! WINDOW_UPDATEs. Client updates repay the debt first and only the rest is
//! passed on. The server may therefore send up to `debt` bytes more than
//! the client allows; such data is held back (`Held`) until the window
//! opens, so the client's window is never overrun.

use bytes::Bytes;

use super::frame;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientWindow {
    window: i64,
    debt: i64,
}

impl Default for ClientWindow {
    fn default() -> Self {
        ClientWindow {
            window: frame::DEFAULT_WINDOW,
            debt: 0,
        }
    }
}

impl ClientWindow {
    /// Bytes of DATA the client will accept now.
    pub fn available(&self) -> usize {
        usize::try_from(self.window.max(0)).unwrap_or(0)
    }

    /// The server's DATA went to the client.
    pub fn forwarded(&mut self, n: usize) {
        self.window -= n as i64;
    }

    /// Our own DATA went to the client.
    pub fn injected(&mut self, n: usize) {
        self.window -= n as i64;
        self.debt += n as i64;
    }

    /// The client raised its window by `increment`; returns the part of
    /// it the server is to be told about.
    pub fn client_update(&mut self, increment: u32) -> u32 {
        let increment = i64::from(increment);
        self.window += increment;
        let repaid = increment.min(self.debt);
        self.debt -= repaid;
        // 0 ≤ increment - repaid ≤ increment ≤ u32::MAX.
        u32::try_from(increment - repaid).unwrap_or(0)
    }

    #[cfg(test)]
    pub fn debt(&self) -> i64 {
        self.debt
    }
}

/// The server's DATA held back for want of client window.
pub(super) struct Held {
    pub(super) stream: u32,
    pub(super) end_stream: bool,
    pub(super) rest: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// containerd's view, as it would compute it from what it sent and
    /// what it was told.
    struct Containerd {
        window: i64,
    }

    #[test]
    fn containerd_never_sees_more_window_than_the_client_gives_plus_debt() {
        let mut w = ClientWindow::default();
        let mut c = Containerd { window: 65_535 };
        w.forwarded(10_000);
        c.window -= 10_000;
        w.injected(300);
        assert_eq!(w.available(), 65_535 - 10_300);
        assert_eq!(c.window, w.available() as i64 + w.debt());

        // The client pays back our 300 bytes first.
        let passed = w.client_update(200);
        assert_eq!(passed, 0);
        c.window += i64::from(passed);
        assert_eq!(w.debt(), 100);
        let passed = w.client_update(10_100);
        assert_eq!(passed, 10_000);
        c.window += i64::from(passed);
        assert_eq!(w.debt(), 0);
        assert_eq!(w.available(), 65_535);
        assert_eq!(c.window, 65_535);
    }

    #[test]
    fn an_exhausted_window_offers_nothing() {
        let mut w = ClientWindow::default();
        w.forwarded(65_535);
        assert_eq!(w.available(), 0);
        w.injected(0);
        assert_eq!(w.client_update(1), 1);
        assert_eq!(w.available(), 1);
    }
}
