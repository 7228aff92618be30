//! The two seams every protocol adapter implements: a [`Source`] that hands over received
//! messages with a way to settle them, and a [`Sink`] that publishes and reports the broker's
//! confirmation.
//!
//! The split between [`Sink::emit`] and the [`Pending`] future it returns is what lets a
//! bridge pipeline its sends: `emit` queues the message on the wire in source order, and the
//! confirmation is awaited elsewhere, many at a time.

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Envelope, Ledger, Route};

/// A message from a source, with the handle that settles it at the broker.
pub struct Received {
    pub envelope: Envelope,
    pub settle: Box<dyn Settle>,
}

/// Settles one received message. Each method consumes the handle: a message is settled once.
#[async_trait]
pub trait Settle: Send {
    /// The sink (or the dead-letter sink) confirmed the message: remove it from the source.
    async fn accept(self: Box<Self>);

    /// The message failed for good and no dead letter took it. A source that can hand it to
    /// its broker's own dead-lettering does so; one that cannot (Kafka) returns an error and
    /// the bridge stops rather than skip it.
    async fn reject(self: Box<Self>, reason: &str) -> Result<(), String>;

    /// Give the message back unprocessed (shutdown): it will be delivered again.
    async fn release(self: Box<Self>);
}

/// Runs a source until `shutdown`, sending messages into `tx`. Reconnects by itself.
#[async_trait]
pub trait Source: Send {
    /// `drained` fires once the bridge settled (or gave up on) every message it took, so a
    /// source can keep what settling needs (a channel, a consumer) open until then.
    ///
    /// `Err` when the source cannot go on until someone changes the configuration (the
    /// broker refuses its credentials): the text says what failed and what to fix, and the
    /// bridge stops.
    async fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Received>,
        shutdown: CancellationToken,
        drained: CancellationToken,
    ) -> Result<(), String>;
}

/// A confirmation still on its way from the broker.
pub type Pending = BoxFuture<'static, Result<(), DeliveryError>>;

/// The broker's verdict on an emit: its confirmation, or the error that kept it from going.
pub async fn confirmed(emitted: Result<Pending, DeliveryError>) -> Result<(), DeliveryError> {
    emitted?.await
}

/// Publishes messages and reports the broker's verdict.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Queues one message for publishing to `route`. Returns once it is on its way; the
    /// returned future resolves when the broker confirmed or refused it.
    ///
    /// Encoding for the protocol writes into `ledger` what it changed about the message; a
    /// strict ledger with a lossy note makes `emit` fail with [`DeliveryError::Lossy`]
    /// before anything is sent.
    async fn emit(
        &self,
        envelope: &Envelope,
        route: &Route,
        ledger: &mut Ledger,
    ) -> Result<Pending, DeliveryError>;

    /// Connects ahead of the first message, so readiness reflects the sink. A failure is
    /// only reported: the first emit connects again.
    async fn prepare(&self) -> Result<(), DeliveryError> {
        Ok(())
    }

    /// Waits until everything queued was confirmed or failed, up to `deadline`.
    async fn flush(&self, deadline: std::time::Duration);
}

/// What a failed attempt means for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Try again later; the broker or the network may recover.
    Retry,
    /// The message can never be delivered as it is: dead-letter it.
    DeadLetter,
    /// The bridge is misconfigured (a missing destination, credentials or permissions the
    /// broker refuses): no message can get through until someone fixes it, so the bridge
    /// stops and gives back what it holds.
    Fatal,
}

impl Disposition {
    /// The outcome class as dead-letter headers and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Disposition::Retry => "retry",
            Disposition::DeadLetter => "dead-letter",
            Disposition::Fatal => "fatal",
        }
    }
}

/// Why a sink could not deliver one message.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    #[error("not connected to the broker: {0}")]
    Disconnected(String),
    #[error("the broker did not confirm the message: {0}")]
    Nacked(String),
    #[error("unroutable: {code} {text}")]
    Unroutable { code: u16, text: String },
    #[error("message too large: {0}")]
    TooLarge(String),
    #[error("the broker refused the message: {0}")]
    Refused(String),
    #[error("the broker failed transiently: {0}")]
    Transient(String),
    #[error("the message cannot be encoded for this sink: {0}")]
    Encode(String),
    /// A strict bridge refuses to send a message that would lose a value on the way.
    #[error("lossy conversion refused by strict mode: {0}")]
    Lossy(String),
    /// The destination (exchange, topic, address) does not exist.
    #[error("{0}")]
    NoDestination(String),
    /// The broker refused the credentials, or the user may not write to the destination.
    #[error("{0}")]
    Denied(String),
}

impl DeliveryError {
    /// Sorts the error into retry, dead-letter or fatal.
    pub fn disposition(&self) -> Disposition {
        match self {
            DeliveryError::Disconnected(_)
            | DeliveryError::Nacked(_)
            | DeliveryError::Transient(_) => Disposition::Retry,
            DeliveryError::Unroutable { .. }
            | DeliveryError::TooLarge(_)
            | DeliveryError::Refused(_)
            | DeliveryError::Encode(_)
            | DeliveryError::Lossy(_) => Disposition::DeadLetter,
            DeliveryError::NoDestination(_) | DeliveryError::Denied(_) => Disposition::Fatal,
        }
    }

    /// What the broker itself said, when the error carries its answer.
    pub fn broker_text(&self) -> Option<String> {
        match self {
            DeliveryError::Unroutable { code, text } => Some(format!("{code} {text}")),
            DeliveryError::Nacked(text)
            | DeliveryError::TooLarge(text)
            | DeliveryError::Refused(text)
            | DeliveryError::Transient(text)
            | DeliveryError::NoDestination(text)
            | DeliveryError::Denied(text) => Some(text.clone()),
            DeliveryError::Disconnected(_) | DeliveryError::Encode(_) | DeliveryError::Lossy(_) => {
                None
            }
        }
    }

    /// A short, stable reason for dead-letter headers and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DeliveryError::Disconnected(_) => "disconnected",
            DeliveryError::Nacked(_) => "nacked",
            DeliveryError::Unroutable { .. } => "unroutable",
            DeliveryError::TooLarge(_) => "too large",
            DeliveryError::Refused(_) => "refused",
            DeliveryError::Transient(_) => "transient",
            DeliveryError::Encode(_) => "untranslatable",
            DeliveryError::Lossy(_) => "lossy conversion",
            DeliveryError::NoDestination(_) => "no such destination",
            DeliveryError::Denied(_) => "access refused",
        }
    }
}

/// What a source does after losing its broker: report it on `/readyz`, log it once, and
/// wait a backoff step before reconnecting. False when shutdown came first.
pub async fn pause_after_loss(
    health: &crate::telemetry::Health,
    part: &str,
    node: &str,
    error: &str,
    backoff: &mut crate::backoff::Backoff,
    shutdown: &CancellationToken,
) -> bool {
    health.waiting(part, format!("reconnecting: {error}"));
    let delay = backoff.next_delay();
    tracing::warn!(source = part, node, error, retry_in = ?delay,
        "Lost the source's broker; unsettled messages go back to it; reconnecting");
    crate::backoff::pause(delay, shutdown).await
}
