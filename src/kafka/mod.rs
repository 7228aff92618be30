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

use rdkafka::ClientConfig;

use crate::config::KafkaConnection;

/// The settings of one Kafka client: `defaults` first, then the connection's own `options`,
/// which therefore win.
fn client_config(connection: &KafkaConnection, defaults: &[(&str, &str)]) -> ClientConfig {
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
