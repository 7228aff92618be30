//! Capped exponential backoff with jitter, for reconnects and delivery retries.

use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

/// Sleeps for `delay` unless `stop` fires first; false when it did.
pub async fn pause(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, multiplier: f64) -> Backoff {
        Backoff { initial, max, multiplier, next: initial }
    }

    /// The backoff for reconnecting to a broker: quick at first, at most every 10 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(10), 2.0)
    }

    /// The next wait: the current step with "equal jitter" (between half and all of it), so
    /// that many bridges failing together do not retry in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = self.next.mul_f64(self.multiplier).min(self.max);
        let half = step / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400), 2.0);
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[4] >= Duration::from_millis(200) && delays[4] <= Duration::from_millis(400));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
