//! `explain --live`: a few real messages taken from a bridge's source without consuming them.
//!
//! - **AMQP 0-9-1**: `basic.get` each message, then `basic.nack` with `requeue`. The messages
//!   stay in the queue, but RabbitMQ marks each one *redelivered*, exactly as if a consumer
//!   had crashed holding it, and a quorum queue counts the handout in `x-acquired-count`.
//! - **Kafka**: read with the bridge's consumer group from the group's committed offsets
//!   (the next records the bridge would read), by assignment, without joining the group (a
//!   running bridge is not rebalanced) and without committing anything.
//! - **AMQP 1.0**: acquire and release: receive each message, then settle it `released`,
//!   which gives it back without counting a failed delivery. Browsing (distribution mode
//!   `copy`) is not used because not every broker offers it on queues. A topic has nothing
//!   to peek at (only messages published while attached would arrive), so topic sources are
//!   refused.

use std::time::Duration;

use crate::config::SourceModel;
use crate::pipeline::Envelope;

/// How long to wait for messages before explaining the ones that came.
pub const WAIT: Duration = Duration::from_secs(5);

/// Up to `count` messages from the source, each with a label naming where it came from.
pub async fn peek(
    bridge: &str,
    source: &SourceModel,
    count: usize,
) -> Result<Vec<(String, Envelope)>, String> {
    match source {
        SourceModel::Amqp091 { connection, queue, .. } => {
            amqp091(&connection.url, queue, count).await
        }
        SourceModel::Kafka { connection, topics, group, start } => {
            let (connection, topics, group, start) =
                (connection.clone(), topics.clone(), group.clone(), start.clone());
            tokio::task::spawn_blocking(move || kafka(&connection, &topics, &group, &start, count))
                .await
                .map_err(|e| format!("the Kafka reader failed: {e}"))?
        }
        SourceModel::Amqp10 { connection, name, node, subscription, .. } => {
            if *node == crate::pipeline::Node::Topic || subscription.is_some() {
                return Err("a topic has nothing to peek at: only messages published while \
                            attached would arrive; explain a sample with --message instead"
                    .to_owned());
            }
            amqp10(bridge, connection, name, *node, count).await
        }
    }
}

async fn amqp091(
    url: &crate::config::SecretUrl,
    queue: &str,
    count: usize,
) -> Result<Vec<(String, Envelope)>, String> {
    use lapin::options::BasicNackOptions;

    let connection = crate::amqp091::connect(url, "explain").await?;
    let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
    let mut taken = Vec::new();
    let mut ackers = Vec::new();
    let mut failure = None;
    for n in 1..=count {
        match crate::amqp091::get(&channel, queue).await {
            Ok(Some((envelope, acker, _))) => {
                taken.push((format!("amqp091:queue/{queue} message {n}"), envelope));
                ackers.push(acker);
            }
            Ok(None) => break,
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    // Give every message back before closing: closing would requeue them too, but an
    // explicit nack says so on the wire.
    for acker in ackers {
        let _ = acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
    }
    let _ = channel.close(200, "explained".into()).await;
    let _ = connection.close(200, "explained".into()).await;
    match failure {
        Some(error) if taken.is_empty() => Err(error),
        _ => Ok(taken),
    }
}

fn kafka(
    connection: &crate::config::KafkaConnection,
    topics: &[String],
    group: &str,
    start: &str,
    count: usize,
) -> Result<Vec<(String, Envelope)>, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let config = crate::kafka::reader_config(connection, group, start);
    let consumer: BaseConsumer = crate::kafka::create(
        connection,
        &config,
        rdkafka::consumer::DefaultConsumerContext,
        "consumer",
    )?;
    let timeout = Duration::from_secs(10);
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| format!("cannot read the partitions of {topic:?}: {e}"))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                partitions.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(partitions, timeout)
        .map_err(|e| format!("cannot read the offsets of group {group:?}: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(n) => Offset::Offset(n),
            _ if start == "latest" => Offset::End,
            _ => Offset::Beginning,
        };
        assignment
            .add_partition_offset(element.topic(), element.partition(), offset)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| format!("cannot read the topics: {e}"))?;
    let deadline = std::time::Instant::now() + WAIT;
    let mut taken = Vec::new();
    while taken.len() < count && std::time::Instant::now() < deadline {
        let Some(polled) = consumer.poll(Duration::from_millis(200)) else { continue };
        let record = polled.map_err(|e| format!("cannot read a record: {e}"))?;
        let envelope = crate::kafka::codec::decode_record(&record);
        taken.push((envelope.origin.coordinates(), envelope));
    }
    Ok(taken)
}

async fn amqp10(
    bridge: &str,
    connection: &crate::config::model::Amqp10Connection,
    name: &str,
    node: crate::pipeline::Node,
    count: usize,
) -> Result<Vec<(String, Envelope)>, String> {
    let container = format!("{}-explain", connection.container_id);
    let link_name = format!("portico-{bridge}-explain");
    let credit = u32::try_from(count).unwrap_or(u32::MAX);
    let mut reader = crate::amqp10::reader::Reader::open(
        connection,
        &container,
        link_name,
        (node, name),
        credit,
    )
    .await?;
    let mut taken = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while taken.len() < count {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some((info, message))) = reader.next(wait).await else { break };
        let envelope = crate::amqp10::codec::decode(message, &reader.address);
        taken.push((format!("amqp10:{} message {}", reader.address, taken.len() + 1), envelope));
        reader.keep(info);
    }
    reader.close().await;
    Ok(taken)
}
