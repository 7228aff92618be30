//! The broker-side half of `scripts/bench`: loads, drains and times the brokers with the
//! client libraries portico itself uses (lapin, fe2o3-amqp, rdkafka), so that what it measures
//! alone is the ceiling portico is compared with.
//!
//! ```text
//! bench_client produce amqp QUEUE COUNT SIZE    # persistent, pipelined publisher confirms
//! bench_client produce kafka TOPIC COUNT SIZE   # idempotent, acks=all, linger 5 ms
//! bench_client consume amqp QUEUE COUNT         # prefetch 1000, acks with `multiple`
//! bench_client consume amqp10 QUEUE COUNT       # RabbitMQ 3.x /queue/QUEUE, credit 1000
//! bench_client consume kafka TOPIC COUNT        # from the beginning of partition 0
//! bench_client latency FROM_KIND FROM TO_KIND TO COUNT RATE SIZE
//! ```
//!
//! Each command prints one JSON line: `{"rate": msg/s}` or, for `latency`, `{"p50_ms": …,
//! "p99_ms": …}`. `latency` sends at a fixed RATE with the send time in the first eight
//! bytes of the body and reads the other side until COUNT arrived. Brokers: `RABBIT_URL`,
//! `AMQP10_URL`, `KAFKA_BROKERS` (defaults: the local test brokers).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::messaging::{Body, Data, Source, TerminusDurability};
use fe2o3_amqp::types::primitives::Value;
use futures::StreamExt as _;
use futures::channel::oneshot::Canceled;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult as OwnedDelivery;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| -> Result<u64, Error> {
        arg(i).parse().map_err(|_| format!("argument {} must be a number", i + 1).into())
    };
    match (arg(0), arg(1)) {
        ("produce", "amqp") => {
            let started = Instant::now();
            produce_amqp(arg(2), num(3)?, num(4)? as usize, None).await?;
            report_rate(num(3)?, started);
        }
        ("produce", "kafka") => {
            let started = Instant::now();
            produce_kafka(arg(2), num(3)?, num(4)? as usize, None).await?;
            report_rate(num(3)?, started);
        }
        ("consume", kind) => {
            let (count, started) = consume(kind, arg(2), num(3)?, &mut |_| {}).await?;
            report_rate(count, started);
        }
        ("latency", _) => latency(&args).await?,
        _ => return Err("usage: see the header of examples/bench_client.rs".into()),
    }
    Ok(())
}

fn report_rate(count: u64, started: Instant) {
    println!("{{\"rate\": {:.1}}}", count as f64 / started.elapsed().as_secs_f64());
}

fn rabbit_url() -> String {
    std::env::var("RABBIT_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn amqp10_url() -> String {
    std::env::var("AMQP10_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A body of `size` bytes whose first eight carry the send time (for `latency`).
fn body(size: usize, stamp: bool) -> Vec<u8> {
    let mut body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    if stamp && size >= 8 {
        body[..8].copy_from_slice(&now_ns().to_be_bytes());
    }
    body
}

async fn amqp_channel() -> Result<(Connection, Channel), Error> {
    let connection = Connection::connect(&rabbit_url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// Publishes `count` persistent messages with confirms, up to 1000 unconfirmed at a time.
/// With `rate`, paces the sends and stamps each body.
async fn produce_amqp(
    queue: &str,
    count: u64,
    size: usize,
    rate: Option<f64>,
) -> Result<(), Error> {
    let (connection, channel) = amqp_channel().await?;
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), durable, FieldTable::default()).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut confirms = futures::stream::FuturesOrdered::new();
    let pace = Pace::new(rate);
    let fixed = body(size, false);
    for n in 0..count {
        pace.wait(n).await;
        let payload = if rate.is_some() { body(size, true) } else { fixed.clone() };
        let mut headers = FieldTable::default();
        headers.insert("n".into(), AMQPValue::LongLongInt(n as i64));
        headers.insert("kind".into(), AMQPValue::LongString("bench".into()));
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(format!("m-{n}")))
            .with_headers(headers);
        let options = BasicPublishOptions::default();
        let confirm =
            channel.basic_publish("".into(), queue.into(), options, &payload, properties).await?;
        confirms.push_back(confirm);
        while confirms.len() >= 1000 {
            if let Some(confirmed) = confirms.next().await {
                confirmed?;
            }
        }
    }
    while let Some(confirmed) = confirms.next().await {
        confirmed?;
    }
    connection.close(200, "done".into()).await?;
    Ok(())
}

async fn produce_kafka(
    topic: &str,
    count: u64,
    size: usize,
    rate: Option<f64>,
) -> Result<(), Error> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    let mut deliveries = futures::stream::FuturesUnordered::new();
    let pace = Pace::new(rate);
    let fixed = body(size, false);
    for n in 0..count {
        pace.wait(n).await;
        let payload = if rate.is_some() { body(size, true) } else { fixed.clone() };
        let key = format!("k-{}", n % 64);
        let number = n.to_string();
        let headers = OwnedHeaders::new().insert(Header { key: "n", value: Some(&number) });
        let mut record = FutureRecord::to(topic).payload(&payload).key(&key).headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    delivered(deliveries.next().await)?;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        while deliveries.len() >= 10_000 {
            delivered(deliveries.next().await)?;
        }
    }
    while let Some(delivery) = deliveries.next().await {
        delivered(Some(delivery))?;
    }
    Ok(())
}

fn delivered(delivery: Option<Result<OwnedDelivery, Canceled>>) -> Result<(), Error> {
    match delivery {
        Some(Ok(Ok(_))) | None => Ok(()),
        Some(Ok(Err((e, _)))) => Err(e.into()),
        Some(Err(_)) => Err("the producer went away".into()),
    }
}

/// Reads `count` messages, calling `each` with every body. Returns the count and the time
/// the first one arrived (so connecting is not part of the rate).
async fn consume(
    kind: &str,
    name: &str,
    count: u64,
    each: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(u64, Instant), Error> {
    match kind {
        "amqp" => consume_amqp(name, count, each).await,
        "amqp10" => consume_amqp10(name, count, each).await,
        // librdkafka's poll blocks: tell the runtime to move other tasks off this worker.
        "kafka" => tokio::task::block_in_place(|| consume_kafka(name, count, each)),
        other => Err(format!("unknown broker kind {other:?} (amqp, amqp10 or kafka)").into()),
    }
}

async fn consume_amqp(
    queue: &str,
    count: u64,
    each: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(u64, Instant), Error> {
    let (connection, channel) = amqp_channel().await?;
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), durable, FieldTable::default()).await?;
    channel.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut started = None;
    let mut seen = 0;
    while seen < count {
        let Some(delivery) = consumer.next().await else { break };
        let delivery = delivery?;
        started.get_or_insert_with(Instant::now);
        seen += 1;
        let mut at = delivery.data.get(..8).unwrap_or_default().to_vec();
        at.extend_from_slice(&now_ns().to_be_bytes());
        each(&at);
        if seen % 100 == 0 || seen == count {
            delivery.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    connection.close(200, "done".into()).await?;
    Ok((seen, started.unwrap_or_else(Instant::now)))
}

/// Reads RabbitMQ 3.x's `/queue/QUEUE` over AMQP 1.0 the way portico's source does: credit
/// granted by hand, a full window once the last one is used up (fe2o3's automatic credit
/// tops up while transfers are in flight, which RabbitMQ 3.x overruns), accepts in batches of
/// 100 (one disposition frame per batch).
async fn consume_amqp10(
    queue: &str,
    count: u64,
    each: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(u64, Instant), Error> {
    const CREDIT: u32 = 1000;
    let url = amqp10_url();
    let parsed = url::Url::parse(&url)?;
    let host = parsed.host_str().unwrap_or("127.0.0.1");
    // Nagle off, as portico's own connections: a flow frame must not wait for a delayed ACK.
    let stream = tokio::net::TcpStream::connect((host, parsed.port().unwrap_or(5672))).await?;
    stream.set_nodelay(true)?;
    let profile = fe2o3_amqp::sasl_profile::SaslProfile::Plain {
        username: parsed.username().to_owned(),
        password: parsed.password().unwrap_or_default().to_owned(),
    };
    let mut connection = fe2o3_amqp::Connection::builder()
        .container_id(format!("portico-bench-{}", std::process::id()))
        .max_frame_size(65_536)
        .scheme("amqp")
        .hostname(host)
        .sasl_profile(profile)
        .open_with_stream(stream)
        .await
        .map_err(|e| format!("cannot connect to {url} over AMQP 1.0: {e}"))?;
    let mut session = fe2o3_amqp::Session::begin(&mut connection).await?;
    // RabbitMQ 3.x declares the queue with the terminus' durability: match the durable queue.
    let source = Source::builder()
        .address(format!("/queue/{queue}"))
        .durable(TerminusDurability::Configuration)
        .build();
    let mut receiver = fe2o3_amqp::Receiver::builder()
        .name("portico-bench")
        .source(source)
        .credit_mode(CreditMode::Manual)
        .auto_accept(false)
        .attach(&mut session)
        .await
        .map_err(|e| format!("cannot attach a receiver to /queue/{queue}: {e}"))?;
    receiver.set_credit(CREDIT).await?;
    let mut started = None;
    let mut seen = 0;
    let mut unsettled = Vec::with_capacity(100);
    while seen < count {
        let delivery = receiver.recv::<Body<Value>>().await?;
        started.get_or_insert_with(Instant::now);
        seen += 1;
        let (info, message) = delivery.into_parts();
        let mut at = match message.body {
            Body::Data(sections) => match sections.into_iter().next() {
                Some(Data(bytes)) => bytes.into_vec().get(..8).unwrap_or_default().to_vec(),
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        at.extend_from_slice(&now_ns().to_be_bytes());
        each(&at);
        // Credit first, as portico's source grants it the moment the window is used up.
        if receiver.credit() == 0 && seen < count {
            receiver.set_credit(CREDIT).await?;
        }
        unsettled.push(info);
        if unsettled.len() >= 100 || seen == count {
            receiver.accept_all(std::mem::take(&mut unsettled)).await?;
        }
    }
    // Closing sometimes gets no answer from RabbitMQ 3.x; everything read is accepted by now.
    let closing = async {
        let _ = receiver.close().await;
        let _ = session.end().await;
        let _ = connection.close().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
    Ok((seen, started.unwrap_or_else(Instant::now)))
}

/// Reads partition 0 of `topic` from the beginning, without a consumer group.
fn consume_kafka(
    topic: &str,
    count: u64,
    each: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(u64, Instant), Error> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", "portico-bench")
        .set("enable.auto.commit", "false")
        // Some brokers (Tansu) hold a fetch for its whole wait even when records arrive.
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&partitions)?;
    let mut started = None;
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(record)) => {
                started.get_or_insert_with(Instant::now);
                seen += 1;
                let mut at = record.payload().and_then(|b| b.get(..8)).unwrap_or_default().to_vec();
                at.extend_from_slice(&now_ns().to_be_bytes());
                each(&at);
            }
            Some(Err(e)) => eprintln!("consume: {e}"),
            None => {}
        }
    }
    Ok((seen, started.unwrap_or_else(Instant::now)))
}

/// Sends COUNT stamped messages at RATE into one side and reads them from the other.
async fn latency(args: &[String]) -> Result<(), Error> {
    let [_, from_kind, from, to_kind, to, count, rate, size] = args else {
        return Err("latency FROM_KIND FROM TO_KIND TO COUNT RATE SIZE".into());
    };
    let (count, rate, size): (u64, f64, usize) = (count.parse()?, rate.parse()?, size.parse()?);
    let (to_kind, to) = (to_kind.clone(), to.clone());
    let reader = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(count as usize);
        let mut record = |at: &[u8]| {
            if let (Some(sent), Some(arrived)) = (at.get(..8), at.get(8..16)) {
                let sent = u64::from_be_bytes(sent.try_into().unwrap_or_default());
                let arrived = u64::from_be_bytes(arrived.try_into().unwrap_or_default());
                samples.push(arrived.saturating_sub(sent));
            }
        };
        consume(&to_kind, &to, count, &mut record).await.map(|_| samples)
    });
    match from_kind.as_str() {
        "amqp" => produce_amqp(from, count, size, Some(rate)).await?,
        "kafka" => produce_kafka(from, count, size, Some(rate)).await?,
        other => return Err(format!("unknown broker kind {other:?}").into()),
    }
    let mut samples = reader.await??;
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
        samples.get(i).map(|ns| *ns as f64 / 1e6).unwrap_or(f64::NAN)
    };
    println!(
        "{{\"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"n\": {}}}",
        at(0.5),
        at(0.99),
        samples.len()
    );
    Ok(())
}

/// Spaces sends evenly at a fixed rate (none: as fast as the broker takes them).
struct Pace {
    rate: Option<f64>,
    started: Instant,
}

impl Pace {
    fn new(rate: Option<f64>) -> Pace {
        Pace { rate, started: Instant::now() }
    }

    async fn wait(&self, n: u64) {
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}
