//! Producing to Kafka: idempotent, `acks=all`, one producer per connection.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::codec;
use crate::config::KafkaConnection;
use crate::connector::{DeliveryError, Disposition, Pending, Sink};
use crate::pipeline::{Envelope, Ledger, Route};
use crate::telemetry::Health;

#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer<super::Logging>,
    /// Set once the broker refused the producer's credentials.
    refusal: super::Refusal,
    /// The part this sink plays (`bridge sink`, `bridge dead_letter`), for readiness.
    role: String,
    health: Arc<Health>,
    /// Whether the last delivery (or check) reached the broker (0 unknown, 1 yes, 2 no);
    /// readiness is updated on changes only, to keep the hot path free of locks.
    healthy: Arc<AtomicU8>,
    /// Topics seen to exist. librdkafka waits out `message.timeout.ms` on a missing topic
    /// and then reports a timeout, indistinguishable from an outage; asking the broker once
    /// per topic tells a missing topic (permanent) from a broker that is away (transient).
    known_topics: Arc<Mutex<HashSet<String>>>,
}

impl KafkaSink {
    /// Creates the producer of `connection`. Sinks of one connection share it: see
    /// [`KafkaSink::for_role`].
    pub fn new(connection: &KafkaConnection, health: Arc<Health>) -> Result<KafkaSink, String> {
        let config = super::client_config(
            connection,
            &[
                // Idempotence implies acks=all and keeps order across librdkafka's retries.
                ("enable.idempotence", "true"),
                ("acks", "all"),
                // Java clients hash keys with murmur2; match them so keys land on the same
                // partitions whichever client produced them.
                ("partitioner", "murmur2_random"),
                ("linger.ms", "5"),
                // Bounds how long librdkafka retries one record before handing the error
                // back; portico then retries with its own backoff.
                ("message.timeout.ms", "30000"),
            ],
        );
        let logging = super::Logging::new(format!("{} producer", connection.name));
        let refusal = logging.refusal.clone();
        let producer = super::create(connection, &config, logging, "producer")?;
        Ok(KafkaSink {
            producer,
            refusal,
            role: String::new(),
            health,
            healthy: Arc::default(),
            known_topics: Arc::default(),
        })
    }

    /// The same producer, reporting readiness as `role`.
    pub fn for_role(&self, role: &str) -> KafkaSink {
        KafkaSink { role: role.to_owned(), healthy: Arc::default(), ..self.clone() }
    }

    /// Reports a change of reachability to `/readyz`; cheap when nothing changed.
    fn reachable(&self, yes: bool, why: &str) {
        let state = if yes { 1 } else { 2 };
        if self.healthy.swap(state, Ordering::Relaxed) != state {
            if yes {
                self.health.ready(&self.role);
            } else {
                self.health.waiting(&self.role, why.to_owned());
            }
        }
    }

    /// Fails when the broker says `topic` does not exist; passes when it exists or when the
    /// broker cannot be asked (the send then waits for it like any other record).
    async fn check_topic(&self, topic: &str) -> Result<(), DeliveryError> {
        if self.known_topics.lock().map(|t| t.contains(topic)).unwrap_or(false) {
            return Ok(());
        }
        let producer = self.producer.clone();
        let name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&name), Duration::from_secs(5))
        })
        .await;
        let Ok(Ok(metadata)) = metadata else { return Ok(()) };
        match metadata.topics().iter().find(|t| t.name() == topic).map(|t| t.error()) {
            Some(None) => {
                if let Ok(mut known) = self.known_topics.lock() {
                    known.insert(topic.to_owned());
                }
                Ok(())
            }
            Some(Some(code))
                if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition =>
            {
                Err(DeliveryError::NoDestination(format!(
                    "topic {topic:?} does not exist and the broker does not create it; create \
                     it or list it under the connection's declare.topics, then restart portico"
                )))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn emit(
        &self,
        envelope: &Envelope,
        route: &Route,
        ledger: &mut Ledger,
    ) -> Result<Pending, DeliveryError> {
        let Route::Kafka { topic, key, partition, timestamp } = route else {
            return Err(DeliveryError::Encode(format!("a Kafka sink cannot publish to {route:?}")));
        };
        let encoded = codec::encode(envelope, ledger);
        if let Some(refused) = ledger.refusal() {
            return Err(refused);
        }
        if let Some(refused) = self.refusal.get() {
            return Err(DeliveryError::Denied(refused));
        }
        self.check_topic(topic).await?;
        let mut record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(topic).headers(encoded.headers);
        if !envelope.body_is_null {
            record = record.payload(&envelope.body[..]);
        }
        if let Some(key) = key {
            record = record.key(key.as_str());
        }
        if let Some(partition) = partition {
            record = record.partition(*partition);
        }
        if let Some(ms) = timestamp {
            record = record.timestamp(*ms);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    let sink = self.clone();
                    return Ok(Box::pin(async move {
                        // A refused login never fails the record itself: librdkafka
                        // keeps it until `message.timeout.ms` and then reports a timeout.
                        let result = tokio::select! {
                            delivered = delivery => match delivered {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err((error, _))) => Err(classify(error)),
                                Err(_) => Err(DeliveryError::Disconnected(
                                    "the producer was closed".into(),
                                )),
                            },
                            refused = sink.refusal.wait() => {
                                Err(DeliveryError::Denied(refused))
                            }
                        };
                        match &result {
                            Ok(()) => sink.reachable(true, ""),
                            Err(e) if e.disposition() == Disposition::Retry => {
                                sink.reachable(false, &e.to_string())
                            }
                            Err(_) => {}
                        }
                        result
                    }));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's local queue is full: wait for deliveries to drain it.
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(classify(error)),
            }
        }
    }

    async fn prepare(&self) -> Result<(), DeliveryError> {
        let producer = self.producer.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, Duration::from_secs(5)).map(|_| ())
        })
        .await;
        match metadata {
            Ok(Ok(())) => {
                self.reachable(true, "");
                Ok(())
            }
            Ok(Err(error)) => {
                let error = format!("cannot reach the Kafka brokers: {error}");
                self.reachable(false, &error);
                Err(DeliveryError::Disconnected(error))
            }
            Err(error) => Err(DeliveryError::Disconnected(error.to_string())),
        }
    }

    async fn flush(&self, deadline: Duration) {
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(deadline)).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error,
                "Kafka producer flush did not finish; unconfirmed \
                 records stay unsettled at the source");
        }
    }
}

fn classify(error: KafkaError) -> DeliveryError {
    use RDKafkaErrorCode as C;
    let text = error.to_string();
    match error.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize) => DeliveryError::TooLarge(text),
        Some(
            C::InvalidMessage
            | C::InvalidRecord
            | C::InvalidTimestamp
            | C::InvalidTopic
            | C::PolicyViolation
            | C::UnknownPartition
            | C::InvalidRequiredAcks,
        ) => DeliveryError::Refused(text),
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication,
        ) => DeliveryError::Denied(format!(
            "the broker refused access: {text}; check the credentials (sasl.* options) and the \
             ACLs for writing to the topic"
        )),
        // Local "unknown topic": librdkafka learnt from the broker's metadata that the topic
        // does not exist. The broker's UnknownTopicOrPartition, in contrast, is also what a
        // partition without a leader answers during an outage, so it stays transient and
        // `check_topic` asks the broker before the next attempt.
        Some(C::UnknownTopic) => DeliveryError::NoDestination(format!(
            "{text}; create the topic or list it under the connection's declare.topics"
        )),
        _ => DeliveryError::Transient(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::Disposition;

    fn production(code: RDKafkaErrorCode) -> Disposition {
        classify(KafkaError::MessageProduction(code)).disposition()
    }

    #[test]
    fn broker_errors_are_classified() {
        use RDKafkaErrorCode as C;
        assert_eq!(production(C::MessageSizeTooLarge), Disposition::DeadLetter);
        assert_eq!(production(C::InvalidTopic), Disposition::DeadLetter);
        assert_eq!(production(C::TopicAuthorizationFailed), Disposition::Fatal);
        assert_eq!(production(C::SaslAuthenticationFailed), Disposition::Fatal);
        assert_eq!(production(C::UnknownTopic), Disposition::Fatal);
        // Also the answer of a partition without a leader: an outage, not a missing topic.
        assert_eq!(production(C::UnknownTopicOrPartition), Disposition::Retry);
        assert_eq!(production(C::MessageTimedOut), Disposition::Retry);
        assert_eq!(production(C::NotEnoughReplicas), Disposition::Retry);
    }
}
