//! Property-based round trips through the pure translation layer: every pair of directions
//! that can come back (0-9-1 → Kafka → 0-9-1, 1.0 → Kafka → 1.0, 0-9-1 → 1.0 → 0-9-1, and
//! the reverse of each) returns the message it started from.
//!
//! A generated envelope is first put through its origin protocol once, so that it says only
//! what that protocol can say; that is the message a source would hand over. It then goes
//! out to the middle protocol and back, on the wire forms the codecs produce (AMQP 1.0 is
//! serialized and parsed again). What each hop adds about itself (`kafka-*`, `x-opt-*`,
//! `amqp.exchange`, ...) is left out of the comparison: those are facts of the hop, not of
//! the message (docs/mapping.md, "What a hop adds").

use bytes::Bytes;
use fe2o3_amqp::types::messaging::message::__private::{Deserializable, Serializable};
use lapin::BasicProperties;
use proptest::prelude::*;
use rdkafka::message::{BorrowedHeaders, Timestamp};

use super::{Envelope, Ledger, MessageId, Origin, Properties, Value};
use crate::amqp10::codec::{self as amqp10, AmqpMessage, Target};
use crate::amqp091::codec::{self as amqp091, DeliveryFacts};
use crate::config::Persistence;
use crate::kafka::codec::{self as kafka, RecordFacts};

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Amqp091,
    Kafka,
    Amqp10 { jms: bool },
}

const AMQP10: Protocol = Protocol::Amqp10 { jms: false };
const JMS: Protocol = Protocol::Amqp10 { jms: true };

/// One hop: encode for `protocol`, carry the wire form, decode.
fn hop(envelope: &Envelope, protocol: Protocol) -> Envelope {
    let mut ledger = Ledger::all();
    match protocol {
        Protocol::Amqp091 => {
            let props = amqp091::encode(envelope, Persistence::Source, "guest", &mut ledger)
                .expect("every generated envelope encodes for 0-9-1");
            from_091(envelope.body.to_vec(), &props)
        }
        Protocol::Kafka => {
            let encoded = kafka::encode(envelope, &mut ledger);
            let headers: &BorrowedHeaders = encoded.headers.as_borrowed();
            let payload = (!envelope.body_is_null).then_some(&envelope.body[..]);
            let timestamp =
                encoded.timestamp.map_or(Timestamp::NotAvailable, Timestamp::CreateTime);
            let facts = RecordFacts { topic: "t", partition: 0, offset: 1, key: None, timestamp };
            kafka::decode(payload, Some(headers), facts)
        }
        Protocol::Amqp10 { jms } => {
            let target = Target { jms, topic: Some(false) };
            let message = amqp10::encode(envelope, target, "q", &mut ledger);
            let wire = serde_amqp::to_vec(&Serializable(message)).expect("serializes");
            let Deserializable(message): Deserializable<AmqpMessage> =
                serde_amqp::from_slice(&wire).expect("parses");
            amqp10::decode(message, "q")
        }
    }
}

fn from_091(body: Vec<u8>, props: &BasicProperties) -> Envelope {
    let facts = DeliveryFacts { exchange: "ex", routing_key: "rk", queue: "q", redelivered: false };
    amqp091::decode(body, props, facts)
}

/// What the message says, without what the hops said about themselves, and with the
/// defaults the protocols disagree on written out.
fn essence(mut envelope: Envelope) -> String {
    envelope.origin = Origin::default();
    envelope.headers.retain(|(name, _)| !hop_fact(name));
    // A field table orders its names (and a map's keys); one name's values keep their order.
    envelope.headers.sort_by(|a, b| a.0.cmp(&b.0));
    envelope.headers.iter_mut().for_each(|(_, v)| sort_maps(v));
    let p = &mut envelope.properties;
    // R2A-02: no delivery mode is transient, as AMQP 1.0's absent `durable` is.
    p.durable.get_or_insert(false);
    // R2A-03: no priority is AMQP 1.0's default priority, 4.
    p.priority.get_or_insert(4);
    // Debug text compares NaN with NaN and tells 0.0 from -0.0.
    format!("{envelope:#?}")
}

fn sort_maps(value: &mut Value) {
    match value {
        Value::List(items) => items.iter_mut().for_each(sort_maps),
        Value::Map(entries) => {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.iter_mut().for_each(|(_, v)| sort_maps(v));
        }
        _ => {}
    }
}

fn hop_fact(name: &str) -> bool {
    const FACTS: [&str; 5] =
        ["kafka-", "x-opt-", "amqp.exchange", "amqp.routing-key", "amqp.address"];
    FACTS.iter().any(|f| name.starts_with(f))
}

fn round_trip(
    original: &Envelope,
    origin: Protocol,
    middle: Protocol,
) -> Result<(), TestCaseError> {
    let at_origin = hop(original, origin);
    let mut back = hop(&hop(&at_origin, middle), origin);
    let (was, now) = (&at_origin.properties, &mut back.properties);
    // A2R-08: a 1.0 hop names its node in `to` when the message had none.
    if was.to.is_none() {
        now.to = None;
    }
    // A2R-07: 0-9-1 expires by a relative TTL, which an absolute expiry alone becomes.
    if was.ttl_ms.is_none() && was.absolute_expiry_ms.is_some() {
        now.ttl_ms = None;
    }
    let (want, got) = (essence(at_origin), essence(back));
    if want != got {
        let trip = format!("{origin:?} → {middle:?} → {origin:?}");
        return Err(TestCaseError::fail(format!("{trip} changed:\n{}", difference(&want, &got))));
    }
    Ok(())
}

/// The first lines where two texts part, with a little context.
fn difference(want: &str, got: &str) -> String {
    let (want, got): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let at = want.iter().zip(&got).position(|(a, b)| a != b).unwrap_or(want.len().min(got.len()));
    let from = at.saturating_sub(6);
    let show =
        |lines: &[&str]| lines.iter().skip(from).take(14).copied().collect::<Vec<_>>().join("\n");
    format!("--- before\n{}\n+++ after\n{}", show(&want), show(&got))
}

// ----------------------------------------------------------------------------- generators

/// Text with the edges that break codecs: empty, 255 and 256 bytes, unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
        1 => Just(String::new()),
        1 => Just("é".repeat(127) + "a"),
        1 => Just("x".repeat(256)),
        1 => Just("ключ-🔑".to_owned()),
    ]
}

/// Bytes that are never UTF-8, and some that happen to be.
fn bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(|mut b| {
            b.push(0xFF);
            Bytes::from(b)
        }),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(Bytes::from),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i8>().prop_map(Value::I8),
        any::<u8>().prop_map(Value::U8),
        any::<i16>().prop_map(Value::I16),
        any::<u16>().prop_map(Value::U16),
        any::<i32>().prop_map(Value::I32),
        any::<u32>().prop_map(Value::U32),
        prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX)].prop_map(Value::I64),
        prop_oneof![any::<u64>(), Just(u64::MAX)].prop_map(Value::U64),
        any::<f32>().prop_map(Value::F32),
        prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::NEG_INFINITY), Just(-0.0)]
            .prop_map(Value::F64),
        (0u8..10, any::<i32>()).prop_map(|(scale, value)| Value::Decimal { scale, value }),
        text().prop_map(Value::String),
        bytes().prop_map(Value::Bytes),
        (-4_000_000_000_000i64..4_000_000_000_000).prop_map(Value::Timestamp),
        any::<u128>().prop_map(|n| Value::Uuid(uuid::Uuid::from_u128(n))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
            proptest::collection::vec((key(), inner), 0..4).prop_map(|entries| {
                let mut seen = std::collections::HashSet::new();
                Value::Map(entries.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect())
            }),
        ]
    })
}

/// A header or map key: unicode, never one of the names the gateway reserves.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        // R2K-21: librdkafka cuts a header name at a NUL character.
        proptest::collection::vec(any::<char>().prop_filter("NUL", |c| *c != '\0'), 1..10)
            .prop_map(String::from_iter),
        Just("customer-id".to_owned()),
        Just("x-trace".to_owned()),
        Just("ключ".to_owned()),
    ]
    .prop_filter("reserved or too long", |k| {
        let reserved = ["amqp.", "portico.", "content-", "kafka-", "x-opt-"];
        k.len() <= 255 && !reserved.iter().any(|r| k.starts_with(r))
    })
}

fn headers() -> impl Strategy<Value = Vec<(String, Value)>> {
    // A small pool of names makes repeats (as Kafka allows) common.
    let name = prop_oneof![key(), Just("dup".to_owned()), Just("x-dup".to_owned())];
    proptest::collection::vec((name, value()), 0..6)
}

fn id() -> impl Strategy<Value = MessageId> {
    prop_oneof![
        text().prop_map(MessageId::String),
        any::<u64>().prop_map(MessageId::Ulong),
        any::<u128>().prop_map(|n| MessageId::Uuid(uuid::Uuid::from_u128(n))),
        bytes().prop_map(MessageId::Binary),
    ]
}

fn short() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

prop_compose! {
    fn properties()(
        (message_id, correlation_id, content_type, content_encoding, reply_to) in
            (proptest::option::of(id()), proptest::option::of(id()), short(), short(), short()),
        (priority, durable, ttl_ms) in
            (proptest::option::of(0u8..=9), proptest::option::of(any::<bool>()),
             proptest::option::of(0u64..=u64::from(u32::MAX))),
        (absolute_expiry_ms, creation_time_ms) in
            // In the past: 0-9-1 turns an expiry into the time left, which must fit
            // AMQP 1.0's ttl (A2R-07).
            (proptest::option::of(1i64..1_700_000_000_000),
             proptest::option::of(-4_000_000_000_000i64..4_000_000_000_000)),
        (message_type, user_id, app_id, group_id, group_sequence) in
            (short(), proptest::option::of(bytes()), short(), short(),
             proptest::option::of(any::<u32>())),
        (subject, to, cluster_id, reply_to_group_id) in (short(), short(), short(), short()),
    ) -> Properties {
        Properties {
            message_id, correlation_id, content_type, content_encoding, reply_to, priority,
            durable, ttl_ms, absolute_expiry_ms, creation_time_ms, message_type, user_id,
            app_id, group_id, group_sequence, subject, to, cluster_id, reply_to_group_id,
        }
    }
}

prop_compose! {
    fn envelope()(
        body in proptest::collection::vec(any::<u8>(), 0..32),
        properties in properties(),
        headers in headers(),
    ) -> Envelope {
        Envelope { body: Bytes::from(body), properties, headers, ..Envelope::default() }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Each bug found gets its own regression test beside the codec it concerns.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// R2K-01, R2K-02, R2K-03, R2K-04, R2K-05, R2K-06,
    /// R2K-08, R2K-09, R2K-10, R2K-11, K2R-03, K2R-04, K2R-06, K2R-07, K2R-08, K2R-09
    #[test]
    fn amqp091_through_kafka(e in envelope()) {
        round_trip(&e, Protocol::Amqp091, Protocol::Kafka)?;
    }

    /// R2A-01, R2A-02, R2A-03, R2A-04, R2A-05, R2A-06, R2A-07, R2A-09, R2A-10, R2A-11,
    /// R2A-12, A2R-03, A2R-04, A2R-05, A2R-06, A2R-07, A2R-08, A2R-09, A2R-10
    #[test]
    fn amqp091_through_amqp10(e in envelope()) {
        round_trip(&e, Protocol::Amqp091, AMQP10)?;
        round_trip(&e, Protocol::Amqp091, JMS)?;
    }

    /// A2K-01, A2K-02, A2K-03, A2K-04, K2A-03, K2A-04, K2A-05, K2A-06, K2A-07
    #[test]
    fn amqp10_through_kafka(e in envelope()) {
        round_trip(&e, AMQP10, Protocol::Kafka)?;
        round_trip(&e, JMS, Protocol::Kafka)?;
    }

    /// A2R-01, A2R-02, A2R-03, A2R-04, A2R-06, A2R-08, A2R-09, A2R-10, R2A-05, R2A-10
    #[test]
    fn amqp10_through_amqp091(e in envelope()) {
        round_trip(&e, AMQP10, Protocol::Amqp091)?;
        round_trip(&e, JMS, Protocol::Amqp091)?;
    }

    /// K2R-04, K2R-06, K2R-07, K2R-08, K2R-09, R2K-04, R2K-10, R2K-12
    #[test]
    fn kafka_through_amqp091(e in envelope()) {
        round_trip(&e, Protocol::Kafka, Protocol::Amqp091)?;
    }

    /// K2A-03, K2A-04, K2A-05, K2A-06, K2A-07, A2K-02, A2K-03, A2K-04
    #[test]
    fn kafka_through_amqp10(e in envelope()) {
        round_trip(&e, Protocol::Kafka, AMQP10)?;
        round_trip(&e, Protocol::Kafka, JMS)?;
    }

    /// R2R-01, K2K-01, A2A-01: a bridge within one protocol passes everything through.
    #[test]
    fn same_protocol_pass_through(e in envelope()) {
        for protocol in [Protocol::Amqp091, Protocol::Kafka, AMQP10, JMS] {
            round_trip(&e, protocol, protocol)?;
        }
    }
}

/// A list nested `depth` deep around a map with a unicode key.
fn nested(depth: usize) -> Value {
    let mut value = Value::Map(vec![("ключ-🔑".into(), Value::U64(u64::MAX))]);
    for _ in 0..depth {
        value = Value::List(vec![value, Value::Null]);
    }
    value
}

#[test]
fn deep_nesting_comes_back_through_every_protocol() {
    // R2K-12, K2R-07, R2A-10, A2R-09, K2A-03
    let envelope = Envelope { headers: vec![("deep".into(), nested(60))], ..Envelope::default() };
    for origin in [Protocol::Amqp091, Protocol::Kafka, AMQP10, JMS] {
        for middle in [Protocol::Amqp091, Protocol::Kafka, AMQP10, JMS] {
            if let Err(error) = round_trip(&envelope, origin, middle) {
                panic!("{error}");
            }
        }
    }
}

#[test]
fn a_091_long_string_that_is_not_utf8_reaches_amqp10_as_binary() {
    // R2A-14 (case 11)
    use fe2o3_amqp::types::primitives::SimpleValue;
    use lapin::types::{AMQPValue, FieldTable, LongString};

    let raw = vec![0x00, 0x53, 0x74, 0xC1, 0x07, 0x02, 0xA1, 0x01, 0x6B, 0xA1, 0x01, 0x76];
    let mut table = FieldTable::default();
    table.insert("raw".into(), AMQPValue::LongString(LongString::from(raw.clone())));
    table.insert("ok".into(), AMQPValue::LongString("ok".into()));
    let envelope = from_091(Vec::new(), &BasicProperties::default().with_headers(table));
    let message =
        amqp10::encode(&envelope, Target { jms: false, topic: None }, "q", &mut Ledger::all());
    let props = message.application_properties.expect("application properties").0;
    assert_eq!(props.get("raw"), Some(&SimpleValue::Binary(raw.into())));
    assert_eq!(props.get("ok"), Some(&SimpleValue::String("ok".into())));
}
