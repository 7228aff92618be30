//! One bridge: a source, a sink, and the steps between them.
//!
//! For each message, in order: **receive** it from the source, **translate** it (resolve the
//! sink's templates into a route), **emit** it to the sink, then **settle** it at the source
//! once the sink confirmed (or the dead-letter sink did). Emitting is done in source order by
//! the bridge's loop; confirmations are awaited by the same task, many at once, bounded by
//! `max_in_flight` permits. Each failed attempt is classified: a transient failure is
//! retried with the bridge's backoff while the source message stays unsettled (up to
//! `retry.max_attempts`, then the dead letter); a permanent one goes to the dead letter; a
//! fatal one (a misconfiguration) stops the bridge and gives back what it holds.
//!
//! The bridge's types live here; `intake` is the loop that receives, translates and emits in
//! source order, `confirmation` awaits each emitted message, retries it and settles it, and
//! `dead_lettering` hands on what cannot be delivered.

mod confirmation;
mod dead_lettering;
mod intake;
#[cfg(test)]
mod test_support;

pub use intake::CLOSE_DEADLINE;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::config::model::RetryModel;
use crate::connector::{DeliveryError, Disposition, Received, Sink, Source};
use crate::deadletter::{DeadLetter, Failure, Stage};
use crate::pipeline::{Envelope, RouteTemplate, Rules, Value};
use crate::telemetry::{BridgeMetrics, Health, RateLimit};

/// Everything a bridge needs, assembled by [`crate::app`].
pub struct Bridge {
    pub name: String,
    pub source: Box<dyn Source>,
    pub sink: Arc<dyn Sink>,
    pub route: RouteTemplate,
    pub rules: Rules,
    /// Dead-letter a message rather than send it with a value coerced or dropped.
    pub strict: bool,
    pub dead_letter: Option<DeadLetter>,
    pub max_in_flight: usize,
    pub retry: RetryModel,
    pub metrics: BridgeMetrics,
    pub health: Arc<Health>,
}

/// The header in which a bridge with `retry.max_attempts` counts the deliveries of a
/// message, and the header naming that bridge. The gateway's own count, never the broker's
/// `x-death` or `x-delivery-count`: it survives a message coming back to the source through
/// any route (a consumer's reject and a dead-letter exchange, say) and a `dlq replay`.
pub const ATTEMPTS_HEADER: &str = "portico.attempts";
pub const ATTEMPTS_BRIDGE_HEADER: &str = "portico.attempts.bridge";

/// The deliveries of `envelope` counted so far by `bridge`.
pub fn attempts_so_far(envelope: &Envelope, bridge: &str) -> u32 {
    let ours =
        matches!(envelope.header(ATTEMPTS_BRIDGE_HEADER), Some(Value::String(b)) if b == bridge);
    let count = envelope.header(ATTEMPTS_HEADER).and_then(|v| v.to_template_text());
    match count {
        Some(n) if ours => n.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Writes the count headers of `bridge` into `envelope`.
pub fn stamp_attempts(envelope: &mut Envelope, bridge: &str, attempts: u32) {
    envelope.headers.retain(|(n, _)| n != ATTEMPTS_HEADER && n != ATTEMPTS_BRIDGE_HEADER);
    envelope.headers.push((ATTEMPTS_HEADER.to_owned(), Value::I64(i64::from(attempts))));
    envelope.headers.push((ATTEMPTS_BRIDGE_HEADER.to_owned(), Value::String(bridge.to_owned())));
}

/// The part of a bridge its delivery tasks share.
struct Shared {
    name: String,
    sink: Arc<dyn Sink>,
    rules: Rules,
    strict: bool,
    dead_letter: Option<DeadLetter>,
    retry: RetryModel,
    /// Whether the sink's destination is the same for every message (see `fatal_for`).
    static_destination: bool,
    metrics: BridgeMetrics,
    health: Arc<Health>,
    /// Fires on shutdown or when the bridge must stop; retries give their message back then.
    stop: CancellationToken,
    /// Why the bridge stopped on its own: the part at fault and the error.
    fatal: std::sync::Mutex<Option<(String, String)>>,
    failures: RateLimit,
    /// Values coerced or dropped on the way to the sink: logged apart from failures, so
    /// that a stream of lossy messages does not hide delivery errors.
    lossy: RateLimit,
}

/// One message on its way, holding its in-flight permit until settled.
struct Work {
    received: Received,
    /// The envelope after the bridge's `set:` rules and attempt count, when any apply; the
    /// dead letter still gets `received.envelope`. Boxed: most bridges have no such rules,
    /// and an envelope inline would double what every message in flight holds.
    outgoing: Option<Box<Envelope>>,
    /// Deliveries made, including those of earlier trips through this bridge when counted.
    attempts: u32,
    first_failure: Option<SystemTime>,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Work {
    /// What the sink receives.
    fn envelope(&self) -> &Envelope {
        self.outgoing.as_deref().unwrap_or(&self.received.envelope)
    }

    /// The failure record for dead-lettering after `error`, an attempt of outcome `class`.
    fn failure(
        &mut self,
        reason: &'static str,
        class: Disposition,
        error: &DeliveryError,
    ) -> Failure {
        let now = SystemTime::now();
        Failure {
            stage: Stage::Deliver,
            reason,
            class,
            error: error.to_string(),
            broker_error: error.broker_text(),
            attempts: self.attempts,
            first_failure: *self.first_failure.get_or_insert(now),
            last_failure: now,
        }
    }
}

/// The dead-letter reason of a message whose attempts ran out.
pub const MAX_RETRIES: &str = "max-retries";
