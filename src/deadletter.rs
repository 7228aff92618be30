//! The dead-letter path: a message that can never be delivered is published, unchanged, to
//! the bridge's `dead_letter` sink with headers saying why, where and when.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::connector::{DeliveryError, Sink};
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
    pub error: String,
    pub attempts: u32,
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
        let letter = letter(original, failure, bridge);
        let route = self
            .route
            .resolve(original)
            .map_err(|e| DeliveryError::Encode(format!("dead-letter destination: {e}")))?;
        // A dead letter carries the original as well as its sink can; what that loses is not
        // judged again (strict mode applies to the bridge's own sink).
        self.sink.emit(&letter, &route, &mut Ledger::lossy()).await?.await
    }
}

/// The original message, untouched, plus the failure headers.
pub fn letter(original: &Envelope, failure: &Failure, bridge: &str) -> Envelope {
    let mut letter = original.clone();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let text = |s: &str| Value::String(s.to_owned());
    letter.headers.extend([
        (header::REASON.to_owned(), text(failure.reason)),
        (header::STAGE.to_owned(), text(failure.stage.name())),
        (header::BRIDGE.to_owned(), text(bridge)),
        (header::SOURCE.to_owned(), text(&original.origin.coordinates())),
        (header::ERROR.to_owned(), text(&failure.error)),
        (header::ATTEMPTS.to_owned(), Value::I64(i64::from(failure.attempts))),
        (header::TIME.to_owned(), Value::Timestamp(i64::try_from(now).unwrap_or(i64::MAX))),
    ]);
    letter
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
        let failure = Failure {
            stage: Stage::Translate,
            reason: "template value missing",
            error: "e".into(),
            attempts: 1,
        };
        let letter = letter(&original, &failure, "b1");
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
