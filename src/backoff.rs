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
    /// The random share of each step, 0.0 (none) to 1.0 (anywhere from zero to the step).
    jitter: f64,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, multiplier: f64) -> Backoff {
        Backoff { initial, max, multiplier, jitter: 0.5, next: initial }
    }

    /// A bridge's delivery retry policy.
    pub fn of(retry: &crate::config::model::RetryModel) -> Backoff {
        let mut backoff = Backoff::new(retry.initial_backoff, retry.max_backoff, retry.multiplier);
        backoff.jitter = retry.jitter.clamp(0.0, 1.0);
        backoff
    }

    /// Skips the first `steps` steps, for a message that already failed that many times.
    pub fn skip(&mut self, steps: u32) {
        for _ in 0..steps.min(64) {
            self.next = self.next.mul_f64(self.multiplier).min(self.max);
        }
    }

    /// The backoff for reconnecting to a broker: quick at first, at most every 10 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(10), 2.0)
    }

    /// The next wait: the current step less a random share of it (by default "equal
    /// jitter": between half and all of it), so that many bridges or messages failing
    /// together do not retry in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = self.next.mul_f64(self.multiplier).min(self.max);
        let random = step.mul_f64(self.jitter);
        step - random + random.mul_f64(rand::rng().random::<f64>())
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

    #[test]
    fn jitter_and_skip_follow_the_policy() {
        let retry = crate::config::model::RetryModel {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 3.0,
            jitter: 0.0,
            max_attempts: None,
        };
        let mut b = Backoff::of(&retry);
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert_eq!(b.next_delay(), Duration::from_millis(300));
        b.reset();
        b.skip(2);
        assert_eq!(b.next_delay(), Duration::from_millis(900));
        let mut full = Backoff::of(&crate::config::model::RetryModel { jitter: 1.0, ..retry });
        assert!((0..50).map(|_| full.next_delay()).all(|d| d <= Duration::from_secs(10)));
    }
}
