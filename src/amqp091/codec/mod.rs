//! AMQP 0-9-1 deliveries to envelopes and back.
//!
//! Field-table types follow RabbitMQ's reading of the tags (`s` is a signed 16-bit integer,
//! `l` a signed 64-bit one, `x` a byte array). Unsigned integers are written one signed size
//! up, because common clients (pika among them) do not read RabbitMQ's unsigned tags; the
//! value is exact either way. Timestamps are seconds on the wire and milliseconds in the
//! envelope. A short string can hold 255 bytes: a longer value is carried in an `amqp.*`
//! header instead of being truncated.
//!
//! A field table holds a name once and has no unsigned 64-bit, uuid or millisecond types.
//! Such values travel as the nearest type that holds them (a name Kafka repeated as one
//! array, a uuid as text, a timestamp in milliseconds as `l`), and the header
//! `portico.types` records what they were, in the same form as on Kafka, so that reading the
//! message back restores them exactly. Consumers that do not know it still read plain values.
//!
//! `message_decoder` reads a delivery, `message_encoder` writes a publish's properties;
//! `value_conversion` converts single values to and from field-table values.

mod message_decoder;
mod message_encoder;
mod value_conversion;

pub use message_decoder::decode;
pub use message_encoder::encode;
pub use value_conversion::{from_amqp, to_amqp};

/// What a 0-9-1 delivery tells besides its properties.
pub struct DeliveryFacts<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub queue: &'a str,
    pub redelivered: bool,
}

/// Round trips through both sides: what [`encode`] writes, [`decode`] reads back.
#[cfg(test)]
mod tests {
    use lapin::BasicProperties;
    use lapin::types::{AMQPValue, FieldArray, FieldTable};

    use super::*;
    use crate::config::Persistence;
    use crate::pipeline::{Envelope, Ledger, Value};

    fn facts() -> DeliveryFacts<'static> {
        DeliveryFacts { exchange: "ex", routing_key: "rk", queue: "q", redelivered: true }
    }

    #[test]
    fn milliseconds_survive_a_hop_through_0_9_1() {
        let mut env = Envelope::default();
        env.properties.creation_time_ms = Some(1_700_000_000_123);
        let out = encode(&env, Persistence::Source, "guest", &mut Ledger::all()).expect("encodes");
        assert_eq!(*out.timestamp(), Some(1_700_000_000));
        let back = decode(Vec::new(), &out, facts());
        assert_eq!(back.properties.creation_time_ms, Some(1_700_000_000_123));
        assert!(back.headers.is_empty(), "{:?}", back.headers);
    }

    #[test]
    fn timestamps_are_seconds_on_the_wire_and_ms_inside() {
        let props = BasicProperties::default().with_timestamp(1_700_000_000);
        let env = decode(Vec::new(), &props, facts());
        assert_eq!(env.properties.creation_time_ms, Some(1_700_000_000_000));
        let out = encode(&env, Persistence::Source, "guest", &mut Ledger::all()).expect("encodes");
        assert_eq!(*out.timestamp(), Some(1_700_000_000));
    }

    #[test]
    fn every_basic_property_survives_pass_through() {
        let mut table = FieldTable::default();
        table.insert("h".into(), AMQPValue::LongInt(1));
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("gzip".into())
            .with_headers(table)
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c-1".into())
            .with_reply_to("replies".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_type("order.created".into())
            .with_user_id("guest".into())
            .with_app_id("shop".into())
            .with_cluster_id("c".into());
        let env = decode(b"{}".to_vec(), &props, facts());
        let out = encode(&env, Persistence::Source, "guest", &mut Ledger::all()).expect("encodes");
        assert_eq!(out, props);
        assert_eq!(&env.body[..], b"{}");
        assert_eq!(env.properties.ttl_ms, Some(60_000));
    }

    #[test]
    fn a_long_content_type_comes_back_as_the_property() {
        let mut env = Envelope::default();
        let long = format!("application/{}", "x".repeat(300));
        env.properties.content_type = Some(long.clone());
        let out = encode(&env, Persistence::Source, "guest", &mut Ledger::all()).expect("encodes");
        let back = decode(Vec::new(), &out, facts());
        assert_eq!(back.properties.content_type, Some(long));
        assert!(back.headers.is_empty(), "{:?}", back.headers);
    }

    fn through_091(env: &Envelope) -> Envelope {
        let out = encode(env, Persistence::Source, "guest", &mut Ledger::all()).expect("encodes");
        decode(env.body.to_vec(), &out, facts())
    }

    fn sorted(mut headers: Vec<(String, Value)>) -> Vec<(String, Value)> {
        // A field table orders names; values of one name keep their order.
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        headers
    }

    #[test]
    fn repeated_names_travel_as_one_array_and_come_back_apart() {
        // K2R-09
        let env = Envelope {
            headers: vec![
                ("tag".into(), Value::String("a".into())),
                ("n".into(), Value::I32(1)),
                ("tag".into(), Value::U32(7)),
                ("tag".into(), Value::Null),
            ],
            ..Envelope::default()
        };
        let out = encode(&env, Persistence::Source, "guest", &mut Ledger::all()).expect("encodes");
        let table = out.headers().clone().unwrap_or_default();
        assert_eq!(
            table.inner().get("tag"),
            Some(&AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongString("a".into()),
                AMQPValue::LongLongInt(7),
                AMQPValue::Void,
            ])))
        );
        let back = decode(Vec::new(), &out, facts());
        assert_eq!(sorted(back.headers), sorted(env.headers));
    }

    #[test]
    fn types_0_9_1_lacks_come_back_exactly() {
        // K2R-08, A2R-09
        let uuid = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let env = Envelope {
            headers: vec![
                ("a".into(), Value::U8(255)),
                ("b".into(), Value::U16(65535)),
                ("c".into(), Value::U32(u32::MAX)),
                ("d".into(), Value::U64(5)),
                ("e".into(), Value::U64(u64::MAX)),
                ("f".into(), Value::Uuid(uuid)),
                ("g".into(), Value::Timestamp(1_700_000_000_123)),
                ("h".into(), Value::Timestamp(-5000)),
                (
                    "i".into(),
                    Value::List(vec![
                        Value::U32(1),
                        Value::Map(vec![("u".into(), Value::Uuid(uuid))]),
                    ]),
                ),
                ("j".into(), Value::Timestamp(1_700_000_000_000)),
                ("k".into(), Value::String("plain".into())),
            ],
            ..Envelope::default()
        };
        let back = through_091(&env);
        assert_eq!(sorted(back.headers), sorted(env.headers));
    }

    #[test]
    fn a_creation_time_before_1970_is_kept() {
        // R2R-01, K2R-03
        for ms in [-5000, -1, -1_700_000_000_123] {
            let mut env = Envelope::default();
            env.properties.creation_time_ms = Some(ms);
            let back = through_091(&env);
            assert_eq!(back.properties.creation_time_ms, Some(ms));
            assert!(back.headers.is_empty(), "{:?}", back.headers);
        }
    }
}
