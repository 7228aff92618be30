//! Kafka, through librdkafka.
//!
//! A topic is split into partitions; order holds within a partition only. A consumer group
//! shares the partitions among its members and remembers, per partition, the offset of the
//! next record to read. portico stores that offset only once every earlier record of the
//! partition was confirmed by the sink, so a crash replays from the first unconfirmed record
//! and never skips one. The producer runs idempotent with `acks=all`: a record is confirmed
//! once every in-sync replica has it, and librdkafka's own retries neither duplicate nor
//! reorder it.

pub mod codec;
pub mod sink;
pub mod source;
pub mod topology;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

use crate::config::KafkaConnection;
use crate::telemetry::RateLimit;

/// Routes librdkafka's own logs and error reports into `tracing`, rate-limited: with a broker
/// down, librdkafka reports the same failure several times a second.
pub struct Logging {
    client: String,
    limit: RateLimit,
}

impl Logging {
    pub fn new(client: impl Into<String>) -> Logging {
        Logging { client: client.into(), limit: RateLimit::new(Duration::from_secs(10), 3) }
    }
}

impl ClientContext for Logging {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if let Some(suppressed) = self.limit.allow() {
                    tracing::warn!(client = %self.client, facility, message, suppressed,
                        "Kafka client reported a problem");
                }
            }
            _ => tracing::debug!(client = %self.client, facility, message, "Kafka client log"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(suppressed) = self.limit.allow() {
            tracing::warn!(client = %self.client, %error, reason, suppressed,
                "Kafka client reported an error; it keeps retrying");
        }
    }
}

/// A consumer for `group` that commits nothing by itself: what is done is committed by hand.
/// `start` (earliest, latest) applies where the group has no committed offset.
pub(crate) fn reader_config(
    connection: &KafkaConnection,
    group: &str,
    start: &str,
) -> ClientConfig {
    client_config(
        connection,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", start),
        ],
    )
}

/// The settings of one Kafka client: `defaults` first, then the connection's own `options`,
/// which therefore win.
pub(crate) fn client_config(
    connection: &KafkaConnection,
    defaults: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &connection.brokers);
    config.set("client.id", format!("portico-{}", connection.name));
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in &connection.options {
        config.set(key, value);
    }
    config
}
