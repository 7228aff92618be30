//! Consuming Kafka topics in a consumer group, committing only what the sink confirmed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::codec;
use crate::backoff::{Backoff, pause};
use crate::config::KafkaConnection;
use crate::connector::{Received, Settle, Source};
use crate::telemetry::{Health, RateLimit};

pub struct KafkaSource {
    pub bridge: String,
    pub connection: KafkaConnection,
    pub topics: Vec<String>,
    pub group: String,
    pub start: String,
    pub health: Arc<Health>,
}

/// Per partition, the offsets handed to the bridge and whether each is settled. The offset
/// committed for a partition is one past the last of the leading run of settled offsets, so
/// a confirmed record behind an unconfirmed one is never skipped on restart.
#[derive(Default)]
struct Watermarks {
    partitions: Mutex<HashMap<(String, i32), BTreeMap<i64, bool>>>,
}

impl Watermarks {
    fn begin(&self, topic: &str, partition: i32, offset: i64) {
        if let Ok(mut parts) = self.partitions.lock() {
            parts.entry((topic.to_owned(), partition)).or_default().insert(offset, false);
        }
    }

    /// Marks `offset` settled; returns the offset to store when the watermark moved.
    fn settle(&self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let mut parts = self.partitions.lock().ok()?;
        let pending = parts.get_mut(&(topic.to_owned(), partition))?;
        *pending.get_mut(&offset)? = true;
        let mut last = None;
        while let Some(entry) = pending.first_entry() {
            if !*entry.get() {
                break;
            }
            last = Some(*entry.key());
            entry.remove();
        }
        last.map(|o| o + 1)
    }

    /// Forgets revoked partitions: their records will be read again by whoever owns them next.
    fn forget(&self, revoked: &TopicPartitionList) {
        if let Ok(mut parts) = self.partitions.lock() {
            for tp in revoked.elements() {
                parts.remove(&(tp.topic().to_owned(), tp.partition()));
            }
        }
    }
}

struct Context {
    watermarks: Arc<Watermarks>,
    logging: super::Logging,
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.logging.log(level, facility, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.logging.error(error, reason);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        if let Rebalance::Revoke(revoked) = rebalance {
            self.watermarks.forget(revoked);
        }
    }
}

type Client = StreamConsumer<Context>;

#[async_trait]
impl Source for KafkaSource {
    async fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Received>,
        shutdown: CancellationToken,
        drained: CancellationToken,
    ) -> Result<(), String> {
        let part = format!("{} source", self.bridge);
        let watermarks = Arc::new(Watermarks::default());
        let consumer = match self.subscribe(watermarks.clone()) {
            Ok(c) => Arc::new(c),
            Err(error) => return Err(format!("cannot create the Kafka consumer: {error}")),
        };
        self.health.ready(&part);
        tracing::info!(bridge = %self.bridge, topics = %self.topics.join(","), group = %self.group,
            "Consuming Kafka topics");
        let errors = RateLimit::new(std::time::Duration::from_secs(10), 3);
        let mut backoff = Backoff::reconnect();
        // Readiness changes only on a transition, not per record (it takes a lock).
        let mut failing = false;
        let mut refused = None;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                text = consumer.context().logging.refusal.wait() => {
                    refused = Some(text);
                    break;
                }
                next = consumer.recv() => next,
            };
            let record = match next {
                Ok(record) => record,
                Err(error) if super::access_refused(&error) => {
                    // The error callback's report, when it came first, says more.
                    let logging = &consumer.context().logging;
                    refused = Some(
                        logging.refusal.get().unwrap_or_else(|| super::refusal(&error.to_string())),
                    );
                    break;
                }
                Err(error) => {
                    // librdkafka reconnects by itself; these errors are reports, not failures.
                    if let Some(suppressed) = errors.allow() {
                        tracing::warn!(bridge = %self.bridge, %error, suppressed,
                            "Kafka consumer reported an error");
                    }
                    self.health.waiting(&part, error.to_string());
                    failing = true;
                    if !pause(backoff.next_delay(), &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            if failing {
                failing = false;
                backoff.reset();
                self.health.ready(&part);
            }
            let envelope = codec::decode_record(&record);
            watermarks.begin(record.topic(), record.partition(), record.offset());
            let settle = KafkaSettle {
                consumer: consumer.clone(),
                watermarks: watermarks.clone(),
                topic: record.topic().to_owned(),
                partition: record.partition(),
                offset: record.offset(),
            };
            drop(record);
            let received = Received { envelope, settle: Box::new(settle) };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                sent = tx.send(received) => if sent.is_err() { break },
            }
        }
        drop(tx);
        drained.cancelled().await;
        if let Some(refused) = refused {
            // Nothing was read, so nothing to commit; dropping the consumer blocks.
            let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
            return Err(refused);
        }
        // Commit what was stored since the last automatic commit before leaving the group.
        // The commit blocks, and so does dropping the consumer (it leaves the group): both
        // off the async workers.
        let final_commit = tokio::task::spawn_blocking(move || {
            let committed = consumer.commit_consumer_state(CommitMode::Sync);
            drop(consumer);
            committed
        });
        match final_commit.await {
            Ok(Ok(()))
            | Ok(Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            ))) => {}
            Ok(Err(error)) => tracing::warn!(bridge = %self.bridge, %error,
                "Final Kafka offset commit failed; uncommitted records will be read again"),
            Err(error) => tracing::warn!(bridge = %self.bridge, %error,
                "Final Kafka offset commit did not run"),
        }
        Ok(())
    }
}

impl KafkaSource {
    fn subscribe(&self, watermarks: Arc<Watermarks>) -> Result<Client, String> {
        let config = super::client_config(
            &self.connection,
            &[
                ("group.id", self.group.as_str()),
                ("auto.offset.reset", self.start.as_str()),
                // Offsets are stored by hand, only for confirmed records; the automatic
                // commit then only ever commits those.
                ("enable.auto.offset.store", "false"),
                ("enable.auto.commit", "true"),
                // Every 100 ms: a crash replays what was confirmed since the last commit.
                ("auto.commit.interval.ms", "100"),
                ("enable.partition.eof", "false"),
                // librdkafka fetches ahead up to 64 MiB per partition by default; 4 MiB still
                // keeps thousands of records of a few KiB ready while bounding memory.
                ("queued.max.messages.kbytes", "4096"),
                // Once that bound is reached librdkafka waits this long before fetching again
                // (1 s by default), and a fast sink then starves: half the throughput was
                // lost to it. 10 ms keeps the bound without the pause.
                ("fetch.queue.backoff.ms", "10"),
                // A broker may hold an empty fetch this long; some (Tansu) hold it even
                // after records arrive, which makes it the latency floor. 100 ms instead of
                // librdkafka's 500: ten fetches a second per idle partition.
                ("fetch.wait.max.ms", "100"),
            ],
        );
        let context =
            Context { watermarks, logging: super::Logging::new(format!("{} source", self.bridge)) };
        let consumer: Client = super::create(&self.connection, &config, context, "consumer")?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| format!("cannot subscribe to {topics:?}: {e}"))?;
        Ok(consumer)
    }
}

struct KafkaSettle {
    consumer: Arc<Client>,
    watermarks: Arc<Watermarks>,
    topic: String,
    partition: i32,
    offset: i64,
}

#[async_trait]
impl Settle for KafkaSettle {
    async fn accept(self: Box<Self>) {
        if let Some(next) = self.watermarks.settle(&self.topic, self.partition, self.offset) {
            // `store_offsets` stores exactly the offset given (the next record to read);
            // `store_offset` would add one more and skip a record on restart.
            let mut next_read = TopicPartitionList::new();
            let stored = next_read
                .add_partition_offset(&self.topic, self.partition, Offset::Offset(next))
                .and_then(|()| self.consumer.store_offsets(&next_read));
            if let Err(error) = stored {
                // The partition moved to another member; it will re-read from its last commit.
                tracing::debug!(topic = %self.topic, partition = self.partition, %error,
                    "Could not store a Kafka offset");
            }
        }
    }

    async fn reject(self: Box<Self>, reason: &str) -> Result<(), String> {
        Err(format!(
            "record {}/{}@{} failed ({reason}) and the bridge has no dead_letter; a Kafka source \
             cannot skip a record without losing it, so the bridge stops. Add a dead_letter sink \
             or fix the cause, then restart: consumption resumes at this record",
            self.topic, self.partition, self.offset
        ))
    }

    async fn release(self: Box<Self>) {
        // Not settling leaves the watermark below this record: it is read again next time.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_only_moves_over_a_settled_prefix() {
        let w = Watermarks::default();
        for offset in 10..14 {
            w.begin("t", 0, offset);
        }
        assert_eq!(w.settle("t", 0, 11), None);
        assert_eq!(w.settle("t", 0, 12), None);
        assert_eq!(w.settle("t", 0, 10), Some(13));
        assert_eq!(w.settle("t", 0, 13), Some(14));
        assert_eq!(w.settle("t", 1, 13), None);
    }
}
