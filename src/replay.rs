//! `portico dlq replay`: takes dead letters back out of a bridge's dead-letter destination,
//! strips the dead-letter headers and re-drives each message into the bridge's sink.
//!
//! A dead letter is removed only once its re-drive was confirmed (or, when it fails for
//! good again, once its new dead letter was): on AMQP 0-9-1 it is acknowledged after the
//! sink's confirm; on AMQP 1.0 it is accepted after it, and one not replayed is released
//! when the replay ends; on Kafka the replay group's offset is committed after it, and never
//! past a dead letter that was not replayed. The attempt count travels on (`portico.attempts`),
//! so a message that fails again is dead-lettered with its attempts counted on.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use lapin::options::BasicAckOptions;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::amqp10::reader::Reader;
use crate::bridge::stamp_attempts;
use crate::config::{BridgeModel, Model, SinkModel};
use crate::connector::{DeliveryError, Disposition, Sink};
use crate::deadletter::{DeadLetter, Failure, Stage, header};
use crate::pipeline::{Envelope, Ledger, Node, Route, RouteTemplate, Value};
use crate::telemetry::Health;

/// AMQP 1.0: how many dead letters are granted at a time.
const CREDIT: u32 = 32;

/// What to replay, from the command line.
#[derive(Debug)]
pub struct Options {
    pub bridge: String,
    pub reason: Option<String>,
    /// Milliseconds since the epoch; dead letters written before are skipped.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Re-drive into this bridge's sink instead.
    pub sink: Option<String>,
    pub dry_run: bool,
    /// The queue holding the dead letters. AMQP 0-9-1 default: the routing key, when the
    /// dead letters go to the default exchange; AMQP 1.0 default: the dead-letter address.
    pub queue: Option<String>,
    /// Kafka: the consumer group whose offsets mark what was replayed.
    pub group: String,
    /// Kafka and AMQP 1.0: stop after this long without a dead letter.
    pub idle: Duration,
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub read: u64,
    /// Matched the filters (listed by `--dry-run`).
    pub matched: u64,
    pub replayed: u64,
    pub dead_lettered_again: u64,
    /// Failed transiently; left in place for the next replay.
    pub failed: u64,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} read, {} matched, {} replayed, {} dead-lettered again, {} failed and left in place",
            self.read, self.matched, self.replayed, self.dead_lettered_again, self.failed
        )
    }
}

/// Where the re-drive goes and where a re-failure goes.
struct Target {
    bridge: String,
    sink: Arc<dyn Sink>,
    route: RouteTemplate,
    rules: crate::pipeline::Rules,
    strict: bool,
    counts: bool,
    dead_letter: DeadLetter,
}

/// What to do with one dead letter after looking at it.
enum Verdict {
    Remove,
    Keep,
}

/// Runs a replay; `Err` when it could not start or had to stop.
pub async fn run(model: Model, options: Options) -> anyhow::Result<Tally> {
    let origin = find(&model, &options.bridge)?;
    let Some(dead_letter) = &origin.dead_letter else {
        anyhow::bail!("bridge {:?} has no dead_letter to replay from", options.bridge);
    };
    let target = find(&model, options.sink.as_deref().unwrap_or(&options.bridge))?;
    let health = Arc::new(Health::default());
    let mut producers = std::collections::HashMap::new();
    let mut build = |role: &str, sink: &SinkModel| {
        crate::app::build_sink(&format!("replay {role}"), sink, &health, &mut producers)
    };
    let target = Target {
        bridge: origin.name.clone(),
        sink: build("sink", &target.sink)?,
        route: target.sink.route().clone(),
        rules: target.rules.clone(),
        strict: target.strict,
        counts: origin.retry.max_attempts.is_some(),
        dead_letter: DeadLetter {
            sink: build("dead_letter", dead_letter)?,
            route: dead_letter.route().clone(),
        },
    };
    // Dead-letter times have whole seconds: starting on a second boundary tells every dead
    // letter written before the replay from the replay's own re-failures.
    let now = now_ms();
    let started = (now / 1000 + 1) * 1000;
    tokio::time::sleep(Duration::from_millis(u64::try_from(started - now).unwrap_or(0))).await;
    let mut replay = Replay { options, target, tally: Tally::default(), started };
    let result = match dead_letter {
        SinkModel::Amqp091 { connection, route, .. } => {
            let queue = match (&replay.options.queue, route) {
                (Some(queue), _) => queue.clone(),
                (None, RouteTemplate::Amqp091 { exchange, routing_key })
                    if exchange.is_static()
                        && routing_key.is_static()
                        && exchange.render(&Envelope::default()).is_ok_and(|e| e.is_empty()) =>
                {
                    routing_key.render(&Envelope::default()).unwrap_or_default()
                }
                _ => anyhow::bail!(
                    "the dead letters of {:?} go to an exchange; name the queue that holds \
                     them with --queue",
                    replay.options.bridge
                ),
            };
            replay.read_amqp091(&connection.url, &queue).await
        }
        SinkModel::Kafka { connection, route } => {
            let RouteTemplate::Kafka { topic, .. } = route else {
                anyhow::bail!("the dead-letter route does not match its connection's protocol")
            };
            let topic = topic.render(&Envelope::default()).map_err(|_| {
                anyhow::anyhow!("the dead-letter topic is a template; replay needs a fixed topic")
            })?;
            replay.read_kafka(connection, &topic).await
        }
        SinkModel::Amqp10 { connection, route } => {
            let RouteTemplate::Amqp10 { name, node } = route else {
                anyhow::bail!("the dead-letter route does not match its connection's protocol")
            };
            let place = match (&replay.options.queue, node) {
                (Some(queue), _) => (Node::Queue, queue.clone()),
                (None, Node::Topic) => anyhow::bail!(
                    "the dead letters of {:?} go to a topic; name the queue that holds them \
                     with --queue",
                    replay.options.bridge
                ),
                (None, node) => (
                    *node,
                    name.render(&Envelope::default()).map_err(|_| {
                        anyhow::anyhow!(
                            "the dead-letter address is a template; name the queue with --queue"
                        )
                    })?,
                ),
            };
            replay.read_amqp10(connection, place).await
        }
    };
    replay.target.sink.flush(Duration::from_secs(10)).await;
    replay.target.dead_letter.sink.flush(Duration::from_secs(10)).await;
    result.map(|()| replay.tally)
}

fn find<'m>(model: &'m Model, name: &str) -> anyhow::Result<&'m BridgeModel> {
    model.bridges.iter().find(|b| b.name == name).ok_or_else(|| {
        let names: Vec<_> = model.bridges.iter().map(|b| b.name.as_str()).collect();
        anyhow::anyhow!("no bridge {name:?} in the configuration (bridges: {})", names.join(", "))
    })
}

struct Replay {
    options: Options,
    target: Target,
    tally: Tally,
    /// When this replay started, on a whole second: dead letters written since are its own
    /// re-failures.
    started: i64,
}

impl Replay {
    async fn read_amqp091(
        &mut self,
        url: &crate::config::SecretUrl,
        queue: &str,
    ) -> anyhow::Result<()> {
        let connection = crate::amqp091::connect(url, "dlq replay")
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect: {e}"))?;
        let channel = connection.create_channel().await?;
        // One message at a time with basic.get: those not replayed stay unacknowledged on
        // this channel and go back to the queue, in order, when it closes. Only what the
        // queue held at the start is read: what comes after is this replay's own re-failures.
        let mut left: Option<u64> = None;
        while left != Some(0) {
            let Some((envelope, acker, count)) =
                crate::amqp091::get(&channel, queue).await.map_err(anyhow::Error::msg)?
            else {
                break;
            };
            let remaining = left.unwrap_or(u64::from(count));
            left = Some(remaining.saturating_sub(u64::from(left.is_some())));
            if let Verdict::Remove = self.one(envelope).await? {
                acker.ack(BasicAckOptions::default()).await?;
            }
        }
        let _ = channel.close(200, "replay done".into()).await;
        let _ = connection.close(200, "replay done".into()).await;
        Ok(())
    }

    async fn read_kafka(
        &mut self,
        connection: &crate::config::KafkaConnection,
        topic: &str,
    ) -> anyhow::Result<()> {
        let config = crate::kafka::reader_config(connection, &self.options.group, "earliest");
        let consumer: StreamConsumer = crate::kafka::create(
            connection,
            &config,
            rdkafka::consumer::DefaultConsumerContext,
            "consumer",
        )
        .map_err(anyhow::Error::msg)?;
        consumer.subscribe(&[topic])?;
        // Per partition: false once a dead letter was kept, so the group's offset never
        // passes a dead letter that was not replayed.
        let mut open: std::collections::HashMap<i32, bool> = std::collections::HashMap::new();
        let mut stream = consumer.stream();
        loop {
            let record = match tokio::time::timeout(self.options.idle, stream.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(error))) => anyhow::bail!("cannot read topic {topic:?}: {error}"),
                Ok(Some(Ok(record))) => record,
            };
            let envelope = crate::kafka::codec::decode_record(&record);
            let (partition, offset) = (record.partition(), record.offset());
            let verdict = self.one(envelope).await?;
            let open = open.entry(partition).or_insert(true);
            match verdict {
                Verdict::Remove if *open => {
                    let mut list = TopicPartitionList::new();
                    list.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
                    consumer.commit(&list, CommitMode::Sync)?;
                }
                Verdict::Remove => {}
                Verdict::Keep => *open = false,
            }
        }
        drop(stream);
        Ok(())
    }

    async fn read_amqp10(
        &mut self,
        connection: &crate::config::model::Amqp10Connection,
        (node, name): (Node, String),
    ) -> anyhow::Result<()> {
        let container = format!("{}-dlq-replay", connection.container_id);
        let link_name = format!("portico-{}-dlq-replay", self.options.bridge);
        let mut reader = Reader::open(connection, &container, link_name, (node, &name), CREDIT)
            .await
            .map_err(anyhow::Error::msg)?;
        // Kept dead letters stay acquired (unsettled) until the reader closes, so none comes
        // round twice. The queue is read until it has nothing more, or up to the first dead
        // letter this replay wrote itself (a re-failure): everything after it is newer still.
        let result = async {
            while let Some((info, message)) =
                reader.next(self.options.idle).await.map_err(anyhow::Error::msg)?
            {
                let letter = crate::amqp10::codec::decode(message, &name);
                if time(&letter).is_some_and(|t| t >= self.started) {
                    reader.keep(info);
                    break;
                }
                match self.one(letter).await? {
                    Verdict::Remove => reader.accept(info).await.map_err(anyhow::Error::msg)?,
                    Verdict::Keep => reader.keep(info),
                }
            }
            Ok(())
        }
        .await;
        reader.close().await;
        result
    }

    /// Looks at one dead letter: skips it, lists it, or re-drives it.
    async fn one(&mut self, letter: Envelope) -> anyhow::Result<Verdict> {
        self.tally.read += 1;
        if !self.matches(&letter) {
            return Ok(Verdict::Keep);
        }
        self.tally.matched += 1;
        let attempts = text(&letter, header::ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(1);
        if self.options.dry_run {
            println!(
                "{}\t{}\treason={}\tattempts={attempts}\tat={}\tmessage_id={}",
                text(&letter, header::BRIDGE).unwrap_or_default(),
                text(&letter, header::SOURCE).unwrap_or_default(),
                text(&letter, header::REASON).unwrap_or_default(),
                time(&letter).map(|t| t.to_string()).unwrap_or_default(),
                letter.properties.message_id.as_ref().map(|m| m.to_text()).unwrap_or_default(),
            );
            return Ok(Verdict::Keep);
        }
        let mut message = letter;
        message.headers.retain(|(name, _)| !header::ALL.contains(&name.as_str()));
        if self.target.counts {
            stamp_attempts(&mut message, &self.target.bridge, attempts);
        }
        match self.redrive(&message).await {
            Ok(()) => {
                self.tally.replayed += 1;
                Ok(Verdict::Remove)
            }
            Err((stage, reason, error)) => match error.disposition() {
                Disposition::Fatal => anyhow::bail!("the sink refuses every message: {error}"),
                Disposition::Retry => {
                    tracing::warn!(%error, "Re-drive failed; the dead letter stays");
                    self.tally.failed += 1;
                    Ok(Verdict::Keep)
                }
                Disposition::DeadLetter => {
                    let mut failure = Failure::now(stage, reason, error.to_string(), attempts + 1);
                    failure.broker_error = error.broker_text();
                    self.target
                        .dead_letter
                        .send(&message, &failure, &self.target.bridge)
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot dead-letter again: {e}"))?;
                    self.tally.dead_lettered_again += 1;
                    Ok(Verdict::Remove)
                }
            },
        }
    }

    fn matches(&self, letter: &Envelope) -> bool {
        let o = &self.options;
        let at = time(letter);
        // A dead letter written since this replay began is one of its own re-failures: leave
        // it for the next replay. (The 0-9-1 reader also stops at what the queue held.)
        let fresh = at.is_some_and(|t| t >= self.started);
        text(letter, header::BRIDGE).as_deref() == Some(o.bridge.as_str())
            && o.reason.as_ref().is_none_or(|r| text(letter, header::REASON).as_ref() == Some(r))
            && o.since.is_none_or(|s| at.is_some_and(|t| t >= s))
            && o.until.is_none_or(|u| at.is_some_and(|t| t < u))
            && !fresh
    }

    async fn redrive(
        &self,
        message: &Envelope,
    ) -> Result<(), (Stage, &'static str, DeliveryError)> {
        let translated =
            self.target.rules.apply(message).map_err(|e| e.to_string()).and_then(|outgoing| {
                let route = self
                    .target
                    .route
                    .resolve(outgoing.as_ref().unwrap_or(message))
                    .map_err(|e| e.to_string())?;
                Ok((outgoing, route))
            });
        let (outgoing, route): (Option<Envelope>, Route) = translated
            .map_err(|e| (Stage::Translate, "untranslatable", DeliveryError::Encode(e)))?;
        let deliver = async {
            let mut ledger = Ledger::lossy().strict(self.target.strict);
            let outgoing = outgoing.as_ref().unwrap_or(message);
            self.target.sink.emit(outgoing, &route, &mut ledger).await?.await
        };
        deliver.await.map_err(|e| (Stage::Deliver, e.reason(), e))
    }
}

fn text(envelope: &Envelope, name: &str) -> Option<String> {
    envelope.header(name).and_then(Value::to_template_text)
}

/// When the dead letter was written, in milliseconds since the epoch.
fn time(envelope: &Envelope) -> Option<i64> {
    match envelope.header(header::TIME)? {
        Value::Timestamp(ms) => Some(*ms),
        other => other.to_template_text()?.parse().ok(),
    }
}

fn now_ms() -> i64 {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Reads `--since`/`--until`: a time like `2026-12-04T18:00:00Z`, or a duration (`30m`,
/// `2h`) meaning that long ago. Returns milliseconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Some(span) = crate::config::file::Span::parse(text) {
        let ago = i64::try_from(span.0.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms().saturating_sub(ago));
    }
    let bad =
        || format!("invalid time {text:?}: write 2026-12-04T18:00:00Z, or a duration ago like 30m");
    let t = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, clock) = t.split_once('T').ok_or_else(bad)?;
    let numbers = |s: &str, sep| -> Result<Vec<i64>, String> {
        s.split(sep).map(|n| n.parse::<i64>().map_err(|_| bad())).collect()
    };
    let (d, c) = (numbers(date, '-')?, numbers(clock, ':')?);
    let (&[y, m, day], &[h, min, s]) = (&d[..], &c[..]) else { return Err(bad()) };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return Err(bad());
    }
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + h) * 60 + min) * 60_000 + s * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_utc_or_as_a_duration_ago() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-12-04T18:00:00Z"), Ok(1_796_407_200_000));
        assert_eq!(parse_time("2000-03-01T00:00:01Z"), Ok(951_868_801_000));
        let hour_ago = parse_time("1h").expect("a duration");
        assert!((now_ms() - hour_ago - 3_600_000).abs() < 5_000);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
    }
}
