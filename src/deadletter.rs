//! The dead-letter path: a message that can never be delivered is published, unchanged, to
//! the bridge's `dead_letter` sink with headers saying why, where and when.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::connector::{DeliveryError, Disposition, Pending, Sink};
use crate::pipeline::{Envelope, Ledger, RouteTemplate, Value};

/// Header names added to a dead letter. No `x-` prefix: RabbitMQ treats those as its own.
pub mod header {
    pub const REASON: &str = "portico.dlq.reason";
    pub const STAGE: &str = "portico.dlq.stage";
    pub const BRIDGE: &str = "portico.dlq.bridge";
    pub const SOURCE: &str = "portico.dlq.source";
    pub const ERROR: &str = "portico.dlq.error";
    pub const ATTEMPTS: &str = "portico.dlq.attempts";
    pub const TIME: &str = "portico.dlq.time";
    pub const CLASS: &str = "portico.dlq.class";
    pub const FIRST_FAILURE: &str = "portico.dlq.first-failure";
    pub const LAST_FAILURE: &str = "portico.dlq.last-failure";
    pub const BROKER_ERROR: &str = "portico.dlq.broker-error";

    /// Every header of the envelope, which a replay strips.
    pub const ALL: [&str; 11] = [
        REASON,
        STAGE,
        BRIDGE,
        SOURCE,
        ERROR,
        ATTEMPTS,
        TIME,
        CLASS,
        FIRST_FAILURE,
        LAST_FAILURE,
        BROKER_ERROR,
    ];
}

/// The step at which a message failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Translate,
    Deliver,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Translate => "translate",
            Stage::Deliver => "deliver",
        }
    }
}

/// Why a message is being dead-lettered.
#[derive(Clone, Debug)]
pub struct Failure {
    pub stage: Stage,
    pub reason: &'static str,
    /// The outcome class of the last failed attempt: `dead-letter`, or `retry` when the
    /// attempts ran out.
    pub class: Disposition,
    pub error: String,
    /// The broker's own answer, when it gave one.
    pub broker_error: Option<String>,
    pub attempts: u32,
    pub first_failure: SystemTime,
    pub last_failure: SystemTime,
}

impl Failure {
    /// A failure seen once, now.
    pub fn now(stage: Stage, reason: &'static str, error: String, attempts: u32) -> Failure {
        let now = SystemTime::now();
        Failure {
            stage,
            reason,
            class: Disposition::DeadLetter,
            error,
            broker_error: None,
            attempts,
            first_failure: now,
            last_failure: now,
        }
    }
}

/// A bridge's dead-letter sink and its destination.
pub struct DeadLetter {
    pub sink: Arc<dyn Sink>,
    pub route: RouteTemplate,
}

impl DeadLetter {
    /// Publishes the dead letter and waits for the broker's confirmation.
    pub async fn send(
        &self,
        original: &Envelope,
        failure: &Failure,
        bridge: &str,
    ) -> Result<(), DeliveryError> {
        self.emit(original, failure, bridge).await?.await
    }

    /// Hands the dead letter to its sink; the returned future is the broker's confirmation.
    pub async fn emit(
        &self,
        original: &Envelope,
        failure: &Failure,
        bridge: &str,
    ) -> Result<Pending, DeliveryError> {
        let letter = letter(original, failure, bridge);
        let route = self
            .route
            .resolve(original)
            .map_err(|e| DeliveryError::Encode(format!("dead-letter destination: {e}")))?;
        // A dead letter carries the original as well as its sink can; what that loses is not
        // judged again (strict mode applies to the bridge's own sink).
        self.sink.emit(&letter, &route, &mut Ledger::lossy()).await
    }
}

/// The original message, untouched, plus the failure headers.
pub fn letter(original: &Envelope, failure: &Failure, bridge: &str) -> Envelope {
    let mut letter = original.clone();
    // A message dead-lettered before (and replayed) gets a fresh envelope, not two.
    letter.headers.retain(|(name, _)| !header::ALL.contains(&name.as_str()));
    let text = |s: &str| Value::String(s.to_owned());
    letter.headers.extend([
        (header::REASON.to_owned(), text(failure.reason)),
        (header::CLASS.to_owned(), text(failure.class.name())),
        (header::STAGE.to_owned(), text(failure.stage.name())),
        (header::BRIDGE.to_owned(), text(bridge)),
        (header::SOURCE.to_owned(), text(&original.origin.coordinates())),
        (header::ERROR.to_owned(), text(&failure.error)),
        (header::ATTEMPTS.to_owned(), Value::I64(i64::from(failure.attempts))),
        (header::FIRST_FAILURE.to_owned(), Value::Timestamp(millis(failure.first_failure))),
        (header::LAST_FAILURE.to_owned(), Value::Timestamp(millis(failure.last_failure))),
        (header::TIME.to_owned(), Value::Timestamp(millis(SystemTime::now()))),
    ]);
    if let Some(broker) = &failure.broker_error {
        letter.headers.push((header::BROKER_ERROR.to_owned(), text(broker)));
    }
    letter
}

/// Milliseconds since the Unix epoch (the unit of [`Value::Timestamp`]), in whole seconds:
/// an AMQP 0-9-1 timestamp holds seconds, and the envelope reads the same on every protocol
/// (a finer time would travel on 0-9-1 as a number plus a `portico.types` header).
fn millis(time: SystemTime) -> i64 {
    let seconds = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    i64::try_from(seconds).map_or(i64::MAX, |s| s.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_keeps_the_original_and_says_why() {
        let mut original =
            Envelope { body: bytes::Bytes::from_static(b"payload"), ..Envelope::default() };
        original.origin.queue = Some("orders".into());
        original.headers.push(("h".into(), Value::I32(1)));
        let mut failure = Failure::now(Stage::Translate, "template value missing", "e".into(), 1);
        failure.first_failure = UNIX_EPOCH + std::time::Duration::from_millis(1_000);
        failure.last_failure = UNIX_EPOCH + std::time::Duration::from_millis(2_000);
        let letter = letter(&original, &failure, "b1");
        assert_eq!(letter.header(header::CLASS), Some(&Value::String("dead-letter".into())));
        assert_eq!(letter.header(header::FIRST_FAILURE), Some(&Value::Timestamp(1_000)));
        assert_eq!(letter.header(header::LAST_FAILURE), Some(&Value::Timestamp(2_000)));
        let Some(Value::Timestamp(time)) = letter.header(header::TIME) else {
            panic!("no time: {letter:?}")
        };
        assert_eq!(time % 1000, 0, "whole seconds, as 0-9-1 holds them");
        assert_eq!(letter.header(header::BROKER_ERROR), None, "none given");
        let again = super::letter(&letter, &Failure { attempts: 4, ..failure }, "b1");
        let reasons = again.headers.iter().filter(|(n, _)| n == header::REASON).count();
        assert_eq!(reasons, 1, "a second dead-lettering replaces the envelope");
        assert_eq!(again.header(header::ATTEMPTS), Some(&Value::I64(4)));
        assert_eq!(letter.body, original.body);
        assert_eq!(letter.headers[0], original.headers[0]);
        assert_eq!(
            letter.header(header::REASON),
            Some(&Value::String("template value missing".into()))
        );
        assert_eq!(
            letter.header(header::SOURCE),
            Some(&Value::String("amqp091:queue/orders".into()))
        );
        assert_eq!(letter.header(header::STAGE), Some(&Value::String("translate".into())));
    }
}
