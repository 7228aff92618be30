//! Metrics, health and the rate limit on per-message logs.
//!
//! Everything observable about the gateway is here: the Prometheus registry
//! ([`metrics`]), the readiness of each bridge ([`Health`]) and the HTTP endpoint that serves
//! both ([`http`]), and the text log format's fields ([`text`]).

pub mod http;
pub mod metrics;
pub mod text;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use metrics::{BridgeMetrics, LossyCounter, Metrics};

/// The state of each part of each bridge, as `/readyz` reports it.
#[derive(Default)]
pub struct Health {
    parts: Mutex<BTreeMap<String, PartState>>,
}

#[derive(Clone, Debug, PartialEq)]
enum PartState {
    Ready,
    Waiting(String),
    Stopped(String),
}

impl Health {
    /// Registers a part (such as `orders-to-kafka source`) as not yet ready.
    pub fn register(&self, part: &str) {
        self.set(part, PartState::Waiting("starting".to_owned()));
    }

    pub fn ready(&self, part: &str) {
        self.set(part, PartState::Ready);
    }

    pub fn waiting(&self, part: &str, why: impl Into<String>) {
        self.set(part, PartState::Waiting(why.into()));
    }

    pub fn stopped(&self, part: &str, why: impl Into<String>) {
        self.set(part, PartState::Stopped(why.into()));
    }

    fn set(&self, part: &str, state: PartState) {
        if let Ok(mut parts) = self.parts.lock() {
            parts.insert(part.to_owned(), state);
        }
    }

    /// Whether every part is ready, and one line per part.
    pub fn report(&self) -> (bool, String) {
        let Ok(parts) = self.parts.lock() else {
            return (false, "health state unavailable\n".to_owned());
        };
        let mut all = !parts.is_empty();
        let mut text = String::new();
        for (part, state) in parts.iter() {
            let line = match state {
                PartState::Ready => format!("{part}: ready\n"),
                PartState::Waiting(why) => format!("{part}: waiting: {why}\n"),
                PartState::Stopped(why) => format!("{part}: stopped: {why}\n"),
            };
            all &= *state == PartState::Ready;
            text.push_str(&line);
        }
        (all, text)
    }
}

/// Lets through at most `burst` events per `window`; counts the rest so the next log line
/// can say how many were suppressed. Per-message failures go through one of these so a
/// poison stream cannot flood the log.
pub struct RateLimit {
    window: Duration,
    burst: u32,
    state: Mutex<(Instant, u32, u64)>,
}

impl RateLimit {
    pub fn new(window: Duration, burst: u32) -> RateLimit {
        RateLimit { window, burst, state: Mutex::new((Instant::now(), 0, 0)) }
    }

    /// `Some(suppressed since the last allowed event)` when this event may be logged.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().ok()?;
        let (start, count, suppressed) = &mut *state;
        if start.elapsed() >= self.window {
            *start = Instant::now();
            *count = 0;
        }
        if *count < self.burst {
            *count += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

/// What a test's subscriber wrote, for asserting on log lines.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct CapturedLog(std::sync::Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl CapturedLog {
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut held) = self.0.lock() {
            held.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_suppresses() {
        let limit = RateLimit::new(Duration::from_secs(3600), 2);
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
    }

    #[test]
    fn readiness_needs_every_part() {
        let health = Health::default();
        health.register("b source");
        health.ready("b sink");
        assert!(!health.report().0);
        health.ready("b source");
        assert!(health.report().0);
        health.stopped("b sink", "fatal");
        let (ready, text) = health.report();
        assert!(!ready);
        assert!(text.contains("b sink: stopped: fatal"));
    }
}
