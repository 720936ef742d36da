//! When a syncer polls next: shared by the daemon and the fleet benchmark,
//! so the load the benchmark puts on a registry is the load a fleet would.

use std::time::Duration;

use rand::Rng as _;

/// A thousand nodes started together must not poll the registry together:
/// each waits a tenth of the interval more or less, at random.
pub fn jittered(interval: Duration) -> Duration {
    let tenth = interval.as_secs_f64() / 10.0;
    let offset = rand::thread_rng().gen_range(-tenth..=tenth);
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(0.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_a_tenth_of_the_interval() {
        let interval = Duration::from_secs(30);
        for _ in 0..1000 {
            let wait = jittered(interval);
            assert!(wait >= Duration::from_secs(27) && wait <= Duration::from_secs(33));
        }
        // A zero interval still waits, so a misconfiguration cannot spin.
        assert!(jittered(Duration::ZERO) >= Duration::from_millis(100));
    }
}
