//! The translation layer per direction: a 1 KiB message with ten typed headers, decoded
//! from the source's wire model, routed, and encoded into the sink's.
//!
//! `cargo bench --bench translate` prints criterion's time per message, then the heap
//! allocations per message (counted by the global allocator below) and whether the body
//! kept its buffer from the source's delivery to the envelope the sink reads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, criterion_group};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString, ShortString};
use rdkafka::Timestamp;
use rdkafka::message::OwnedHeaders;

use portico::amqp10::codec::{self as amqp10, AmqpMessage, Target};
use portico::amqp091::codec as amqp091;
use portico::config::Persistence;
use portico::kafka::codec::{self as kafka, RecordFacts};
use portico::pipeline::{Envelope, Ledger, RecordTime, RouteTemplate, Template};

/// Counts every allocation (and reallocation) the process makes.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BODY: usize = 1024;

fn body() -> Vec<u8> {
    (0..BODY).map(|i| (i % 251) as u8).collect()
}

/// A persistent 0-9-1 message with ten headers of ten different types.
fn amqp091_properties() -> BasicProperties {
    let mut headers = FieldTable::default();
    let entries: [(&str, AMQPValue); 10] = [
        ("customer", AMQPValue::LongString(LongString::from("c-1042"))),
        ("region", AMQPValue::ShortString(ShortString::from("eu-west"))),
        ("attempt", AMQPValue::ShortShortInt(3)),
        ("count", AMQPValue::ShortInt(-12)),
        ("size", AMQPValue::LongInt(1024)),
        ("sequence", AMQPValue::LongLongInt(9_000_000_001)),
        ("ratio", AMQPValue::Double(0.75)),
        ("urgent", AMQPValue::Boolean(true)),
        ("sent", AMQPValue::Timestamp(1_700_000_000)),
        ("raw", AMQPValue::ByteArray(ByteArray::from(vec![1u8, 2, 3, 4]))),
    ];
    for (name, value) in entries {
        headers.insert(name.into(), value);
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/octet-stream".into())
        .with_message_id("order-42".into())
        .with_correlation_id("req-7".into())
        .with_timestamp(1_700_000_000)
        .with_headers(headers)
}

fn facts() -> amqp091::DeliveryFacts<'static> {
    amqp091::DeliveryFacts {
        exchange: "orders",
        routing_key: "orders.created",
        queue: "orders",
        redelivered: false,
    }
}

fn record_facts() -> RecordFacts<'static> {
    RecordFacts {
        topic: "orders",
        partition: 0,
        offset: 42,
        key: Some(b"c-1042"),
        timestamp: Timestamp::CreateTime(1_700_000_000_000),
    }
}

fn template(text: &str) -> Template {
    match Template::parse(text, None) {
        Ok(t) => t,
        Err(e) => panic!("bench template {text:?}: {e}"),
    }
}

fn to_amqp091() -> RouteTemplate {
    RouteTemplate::Amqp091 { exchange: template("events"), routing_key: template("{routing_key}") }
}

fn to_kafka() -> RouteTemplate {
    RouteTemplate::Kafka {
        topic: template("orders.created"),
        key: Some(template("{header.customer}")),
        partition: None,
        time: RecordTime::default(),
    }
}

/// The sink side of a direction: route, then encode.
fn emit_amqp091(envelope: &Envelope, route: &RouteTemplate) -> BasicProperties {
    let route = route.resolve(envelope);
    black_box(&route);
    match amqp091::encode(envelope, Persistence::Source, "guest", &mut Ledger::lossy()) {
        Ok(properties) => properties,
        Err(e) => panic!("0-9-1 encode: {e}"),
    }
}

fn emit_kafka(envelope: &Envelope, route: &RouteTemplate) -> kafka::Encoded {
    black_box(route.resolve(envelope).ok());
    kafka::encode(envelope, &mut Ledger::lossy())
}

/// The fixtures each direction starts from, built once from the same message.
struct Fixtures {
    props: BasicProperties,
    kafka_headers: OwnedHeaders,
    kafka_payload: Vec<u8>,
    amqp10: AmqpMessage,
}

fn fixtures() -> Fixtures {
    let props = amqp091_properties();
    let envelope = amqp091::decode(body(), &props, facts());
    let target = Target { jms: false, topic: None };
    Fixtures {
        kafka_headers: kafka::encode(&envelope, &mut Ledger::lossy()).headers,
        kafka_payload: body(),
        amqp10: amqp10::encode(&envelope, target, "/queue/orders", &mut Ledger::lossy()),
        props,
    }
}

/// The steps of each direction, from the source's message to the sink's.
fn directions(c: &mut Criterion) {
    let f = fixtures();
    let (amqp091_route, kafka_route) = (to_amqp091(), to_kafka());
    let mut group = c.benchmark_group("translate");
    group.bench_function("amqp091-amqp091", |b| {
        b.iter_batched(
            body,
            |body| emit_amqp091(&amqp091::decode(body, &f.props, facts()), &amqp091_route),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("amqp091-kafka", |b| {
        b.iter_batched(
            body,
            |body| emit_kafka(&amqp091::decode(body, &f.props, facts()), &kafka_route),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("kafka-amqp091", |b| {
        b.iter(|| {
            let envelope =
                kafka::decode(Some(&f.kafka_payload[..]), Some(&f.kafka_headers), record_facts());
            emit_amqp091(&envelope, &amqp091_route)
        })
    });
    group.bench_function("amqp10-amqp091", |b| {
        b.iter_batched(
            || f.amqp10.clone(),
            |message| emit_amqp091(&amqp10::decode(message, "/queue/orders"), &amqp091_route),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("amqp10-kafka", |b| {
        b.iter_batched(
            || f.amqp10.clone(),
            |message| emit_kafka(&amqp10::decode(message, "/queue/orders"), &kafka_route),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Allocations per message of each direction, and whether the body kept its buffer.
fn allocations() {
    let f = fixtures();
    let (amqp091_route, kafka_route) = (to_amqp091(), to_kafka());
    const N: u64 = 1000;
    let count = |name: &str, step: &mut dyn FnMut() -> bool| {
        let mut shared = true;
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..N {
            shared &= step();
        }
        let per = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64;
        let body = if shared { "body not copied" } else { "body copied" };
        println!("translate/{name:16} {per:6.1} allocations per message ({body})");
    };
    // Each step takes the source's buffer as the client library hands it over (made outside
    // the count) and reports whether the envelope still points into it.
    let mut inputs: Vec<Vec<u8>> = (0..N).map(|_| body()).collect();
    count("amqp091-amqp091", &mut || {
        let body = inputs.pop().unwrap_or_default();
        let at = body.as_ptr();
        let envelope = amqp091::decode(body, &f.props, facts());
        black_box(emit_amqp091(&envelope, &amqp091_route));
        envelope.body.as_ptr() == at
    });
    let mut inputs: Vec<Vec<u8>> = (0..N).map(|_| body()).collect();
    count("amqp091-kafka", &mut || {
        let body = inputs.pop().unwrap_or_default();
        let at = body.as_ptr();
        let envelope = amqp091::decode(body, &f.props, facts());
        black_box(emit_kafka(&envelope, &kafka_route));
        envelope.body.as_ptr() == at
    });
    count("kafka-amqp091", &mut || {
        // librdkafka owns the payload: the envelope must take a copy.
        let envelope =
            kafka::decode(Some(&f.kafka_payload[..]), Some(&f.kafka_headers), record_facts());
        black_box(emit_amqp091(&envelope, &amqp091_route));
        envelope.body.as_ptr() == f.kafka_payload.as_ptr()
    });
    for (name, to_kafka_sink) in [("amqp10-amqp091", false), ("amqp10-kafka", true)] {
        let mut inputs: Vec<AmqpMessage> = (0..N).map(|_| f.amqp10.clone()).collect();
        count(name, &mut || {
            let message = inputs.pop().unwrap_or_else(|| f.amqp10.clone());
            let at = body_of(&message);
            let envelope = amqp10::decode(message, "/queue/orders");
            if to_kafka_sink {
                black_box(emit_kafka(&envelope, &kafka_route));
            } else {
                black_box(emit_amqp091(&envelope, &amqp091_route));
            }
            Some(envelope.body.as_ptr()) == at
        });
    }
}

/// Where the bytes of a one-section data body live.
fn body_of(message: &AmqpMessage) -> Option<*const u8> {
    match &message.body {
        fe2o3_amqp::types::messaging::Body::Data(sections) => {
            sections.iter().next().map(|d| d.0.as_slice().as_ptr())
        }
        _ => None,
    }
}

criterion_group!(benches, directions);

fn main() {
    allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
