//! Kafka records to envelopes and back.
//!
//! Kafka headers are a list of names with byte values (or null). To stay readable by any
//! consumer, values are written as text (see [`crate::pipeline::value`]), and the types of
//! the non-string ones are recorded once per record in the `portico.types` header, a JSON
//! object of header name → shape. Standard AMQP properties travel as `amqp.*` headers and
//! the payload metadata as `content-type` / `content-encoding`, as CloudEvents does. A
//! gateway reading the record back restores every type; a plain consumer still reads text.

use bytes::Bytes;
use rdkafka::message::{Header, Headers, OwnedHeaders, Timestamp};
use serde_json::{Map as JsonMap, Value as Json};

use crate::pipeline::ledger::Field;
use crate::pipeline::{BodyKind, Envelope, Ledger, MessageId, Origin, Value, carry, value};

/// The header holding the types of the other headers.
pub const TYPES_HEADER: &str = carry::TYPES;

/// One record as the encoder hands it to the producer.
pub struct Encoded {
    pub headers: OwnedHeaders,
    pub timestamp: Option<i64>,
}

/// Builds headers and timestamp for `envelope`, writing into `ledger` every value that does
/// not cross as it was.
pub fn encode(envelope: &Envelope, ledger: &mut Ledger) -> Encoded {
    let mut out = Writer::default();
    let p = &envelope.properties;
    note_properties(envelope, ledger);
    out.text("content-type", p.content_type.as_deref());
    out.text("content-encoding", p.content_encoding.as_deref());
    out.id("amqp.message-id", p.message_id.as_ref());
    out.id("amqp.correlation-id", p.correlation_id.as_ref());
    out.text("amqp.reply-to", p.reply_to.as_deref());
    out.text("amqp.type", p.message_type.as_deref());
    if let Some(user) = &p.user_id {
        match std::str::from_utf8(user) {
            Ok(text) => out.text("amqp.user-id", Some(text)),
            Err(_) => out.value("amqp.user-id", &Value::Bytes(user.clone())),
        }
    }
    out.text("amqp.app-id", p.app_id.as_deref());
    out.text("amqp.cluster-id", p.cluster_id.as_deref());
    out.text("amqp.subject", p.subject.as_deref());
    out.text("amqp.to", p.to.as_deref());
    out.text("amqp.group-id", p.group_id.as_deref());
    out.text("amqp.reply-to-group-id", p.reply_to_group_id.as_deref());
    out.number("amqp.group-sequence", p.group_sequence.map(i64::from));
    out.number("amqp.priority", p.priority.map(i64::from));
    // An AMQP message without durability is transient; a Kafka reader must not take it
    // for a (durable) Kafka record.
    out.text("amqp.durable", Some(if p.durable == Some(true) { "true" } else { "false" }));
    if let Some(ttl) = p.ttl_ms {
        out.text("amqp.expiration-ms", Some(&ttl.to_string()));
    }
    out.number("amqp.absolute-expiry-ms", p.absolute_expiry_ms);
    out.number("amqp.creation-time-ms", p.creation_time_ms);
    let origin = &envelope.origin;
    out.text("amqp.exchange", origin.exchange.as_deref());
    out.text("amqp.routing-key", origin.routing_key.as_deref());
    out.text("amqp.address", origin.address.as_deref());
    if origin.redelivered {
        out.text("amqp.redelivered", Some("true"));
    }
    if envelope.body_kind != BodyKind::Bytes {
        out.text(carry::BODY, Some(envelope.body_kind.name()));
        out.text(carry::BODY_TYPES, envelope.body_kind.shape().map(|s| s.to_string()).as_deref());
    }
    for (i, (name, value)) in envelope.headers.iter().enumerate() {
        if typed(value) {
            ledger.converted(Field::Header(name), value.type_name(), "text + portico.types", TEXT);
        }
        if name.contains('\0') {
            ledger.coerced(
                Field::Header(name),
                "a name with a NUL character",
                "the name up to the NUL",
                "librdkafka takes header names as C strings",
            );
        }
        out.headers.push((name.to_owned(), value.to_text()));
        out.record_type(name, value, &envelope.headers[..i], &envelope.headers[i + 1..]);
    }
    Encoded { headers: out.finish(), timestamp: p.creation_time_ms.filter(|ms| *ms >= 0) }
}

/// Whether a value needs its type recorded: everything but text and null.
fn typed(value: &Value) -> bool {
    !matches!(value, Value::String(_) | Value::Null)
}

const TEXT: &str = "Kafka header values are bytes; the type is recorded beside them";
const NO_PROPERTIES: &str = "Kafka records have no properties";

/// Kafka has no properties: each one set travels as a header.
fn note_properties(envelope: &Envelope, ledger: &mut Ledger) {
    let p = &envelope.properties;
    let set = [
        ("message_id", p.message_id.is_some()),
        ("correlation_id", p.correlation_id.is_some()),
        ("content_type", p.content_type.is_some()),
        ("content_encoding", p.content_encoding.is_some()),
        ("reply_to", p.reply_to.is_some()),
        ("priority", p.priority.is_some()),
        ("durable", p.durable.is_some()),
        ("ttl", p.ttl_ms.is_some()),
        ("absolute_expiry", p.absolute_expiry_ms.is_some()),
        ("message_type", p.message_type.is_some()),
        ("user_id", p.user_id.is_some()),
        ("app_id", p.app_id.is_some()),
        ("group_id", p.group_id.is_some()),
        ("group_sequence", p.group_sequence.is_some()),
        ("subject", p.subject.is_some()),
        ("to", p.to.is_some()),
        ("cluster_id", p.cluster_id.is_some()),
        ("reply_to_group_id", p.reply_to_group_id.is_some()),
    ];
    for (field, _) in set.iter().filter(|(_, present)| *present) {
        ledger.converted(Field::Property(field), "property", "amqp.* header", NO_PROPERTIES);
    }
    if let Some(ms) = p.creation_time_ms {
        let to = if ms >= 0 {
            "record timestamp + amqp.creation-time-ms"
        } else {
            "amqp.creation-time-ms (a record timestamp is never negative)"
        };
        ledger.converted(Field::Property("creation_time"), "timestamp (ms)", to, NO_PROPERTIES);
    }
    if envelope.body_kind != BodyKind::Bytes {
        ledger.converted(
            Field::Body,
            "text, map or list body",
            "bytes + amqp.body",
            "a Kafka value is bytes",
        );
    }
}

#[derive(Default)]
struct Writer {
    headers: Vec<(String, Option<Bytes>)>,
    types: JsonMap<String, Json>,
}

impl Writer {
    fn text(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.headers.push((name.to_owned(), Some(Bytes::copy_from_slice(value.as_bytes()))));
        }
    }

    fn number(&mut self, name: &str, value: Option<i64>) {
        if let Some(value) = value {
            self.headers.push((name.to_owned(), Some(Bytes::from(value.to_string()))));
        }
    }

    /// Ids travel as text; non-string ids keep their type in the text's prefix.
    fn id(&mut self, name: &str, id: Option<&MessageId>) {
        self.text(name, id.map(MessageId::to_text).as_deref());
    }

    fn value(&mut self, name: &str, value: &Value) {
        if let Some(shape) = value.shape() {
            self.types.entry(name.to_owned()).or_insert(shape);
        }
        self.headers.push((name.to_owned(), value.to_text()));
    }

    /// Records the type of an application header, once per name: for a name that repeats,
    /// one shape per value in order (`["*", …]`), so that each comes back with its own type.
    fn record_type(
        &mut self,
        name: &str,
        value: &Value,
        before: &[(String, Value)],
        after: &[(String, Value)],
    ) {
        if before.iter().any(|(n, _)| n == name) {
            return;
        }
        let mut same = after.iter().filter(|(n, _)| n == name).map(|(_, v)| v).peekable();
        if same.peek().is_none() {
            if let Some(shape) = value.shape() {
                self.types.insert(name.to_owned(), shape);
            }
        } else if typed(value) || same.clone().any(typed) {
            let shape = value::repeated(std::iter::once(value).chain(same));
            self.types.insert(name.to_owned(), shape);
        }
    }

    fn finish(self) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len() + 1);
        for (key, value) in &self.headers {
            headers = headers.insert(Header { key, value: value.as_deref() });
        }
        if !self.types.is_empty() {
            let types = Json::Object(self.types).to_string();
            headers = headers.insert(Header { key: TYPES_HEADER, value: Some(types.as_bytes()) });
        }
        headers
    }
}

/// What a consumed record tells besides its headers.
pub struct RecordFacts<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub timestamp: Timestamp,
}

/// Decodes one consumed record, with its topic, partition, offset, key and timestamp.
pub fn decode_record<M: rdkafka::Message>(record: &M) -> Envelope {
    let facts = RecordFacts {
        topic: record.topic(),
        partition: record.partition(),
        offset: record.offset(),
        key: record.key(),
        timestamp: record.timestamp(),
    };
    decode(record.payload(), record.headers(), facts)
}

/// Decodes one record. Never fails: a header whose recorded type does not match its text is
/// kept as it arrived (string or bytes) rather than dropped.
pub fn decode<H: Headers>(
    payload: Option<&[u8]>,
    headers: Option<&H>,
    facts: RecordFacts<'_>,
) -> Envelope {
    let mut envelope = Envelope {
        body: payload.map(Bytes::copy_from_slice).unwrap_or_default(),
        body_is_null: payload.is_none(),
        origin: Origin {
            topic: Some(facts.topic.to_owned()),
            partition: Some(facts.partition),
            offset: Some(facts.offset),
            key: facts.key.map(Bytes::copy_from_slice),
            ..Origin::default()
        },
        ..Envelope::default()
    };
    let raw: Vec<(&str, Option<&[u8]>)> =
        headers.map(|h| h.iter().map(|h| (h.key, h.value)).collect()).unwrap_or_default();
    let types: JsonMap<String, Json> = raw
        .iter()
        .rev()
        .find(|(k, _)| *k == TYPES_HEADER)
        .and_then(|(_, v)| serde_json::from_slice(v.unwrap_or_default()).ok())
        .unwrap_or_default();

    for (i, &(name, value)) in raw.iter().enumerate() {
        if name == TYPES_HEADER {
            continue;
        }
        // A name that repeats has one shape per value, in order.
        let each;
        let shape = match types.get(name) {
            Some(shape) => match value::occurrences(shape) {
                Some(Json::Array(list)) => {
                    each = list;
                    each.get(raw[..i].iter().filter(|(n, _)| *n == name).count())
                }
                _ => Some(shape),
            },
            None => None,
        };
        let value = match value {
            None => Value::Null,
            Some(bytes) => Value::from_text(bytes, shape)
                .unwrap_or_else(|_| Value::from_text(bytes, None).unwrap_or(Value::Null)),
        };
        if !carry::absorb(&mut envelope, name, &value) {
            envelope.headers.push((name.to_owned(), value));
        }
    }
    let p = &mut envelope.properties;
    if p.creation_time_ms.is_none() {
        p.creation_time_ms = match facts.timestamp {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) if ms >= 0 => Some(ms),
            _ => None,
        };
    }
    // A record in Kafka is already on replicated storage: treat it as durable unless the
    // headers carry the durability of an earlier hop.
    p.durable.get_or_insert(true);
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::BorrowedHeaders;

    fn round_trip(envelope: &Envelope) -> Envelope {
        let encoded = encode(envelope, &mut Ledger::all());
        let headers: &BorrowedHeaders = encoded.headers.as_borrowed();
        decode(
            Some(&envelope.body),
            Some(headers),
            RecordFacts {
                topic: "t",
                partition: 0,
                offset: 7,
                key: None,
                timestamp: Timestamp::NotAvailable,
            },
        )
    }

    #[test]
    fn typed_headers_and_properties_survive_a_kafka_hop() {
        let mut env = Envelope { body: Bytes::from_static(b"\x00body\xff"), ..Envelope::default() };
        env.properties.message_id = Some(MessageId::Ulong(12345));
        env.properties.correlation_id = Some(MessageId::Binary(Bytes::from_static(&[0xCA, 0xFE])));
        env.properties.content_type = Some("application/json".into());
        env.properties.priority = Some(7);
        env.properties.durable = Some(false);
        env.properties.ttl_ms = Some(5000);
        env.properties.creation_time_ms = Some(1_700_000_000_123);
        env.properties.user_id = Some(Bytes::from_static(b"svc"));
        env.headers = vec![
            ("tenant".into(), Value::String("t1".into())),
            ("attempt".into(), Value::I32(3)),
            ("vip".into(), Value::Bool(true)),
            ("maybe".into(), Value::Null),
            ("ids".into(), Value::List(vec![Value::I32(1), Value::I32(2)])),
            ("at".into(), Value::Timestamp(1_700_000_000_000)),
            ("raw".into(), Value::Bytes(Bytes::from_static(&[0x00, 0xC1, 0xA1]))),
        ];
        let back = round_trip(&env);
        assert_eq!(back.properties, env.properties);
        assert_eq!(back.headers, env.headers);
        assert_eq!(back.body, env.body);
    }

    #[test]
    fn a_repeated_name_keeps_the_type_of_each_value() {
        // K2K-01
        let env = Envelope {
            headers: vec![
                ("h".into(), Value::String("5".into())),
                ("h".into(), Value::I32(5)),
                ("g".into(), Value::Bool(true)),
                ("h".into(), Value::Bytes(Bytes::from_static(b"5"))),
            ],
            ..Envelope::default()
        };
        assert_eq!(round_trip(&env).headers, env.headers);
    }

    #[test]
    fn an_amqp_message_without_durability_stays_transient() {
        // R2K-06
        let back = round_trip(&Envelope::default());
        assert_eq!(back.properties.durable, Some(false));
    }

    #[test]
    fn a_nul_in_a_header_name_is_noted() {
        // R2K-13
        let env = Envelope {
            headers: vec![("a\0b".into(), Value::String("v".into()))],
            ..Envelope::default()
        };
        let mut ledger = Ledger::lossy();
        encode(&env, &mut ledger);
        let notes: Vec<String> = ledger.notes().iter().map(|n| n.to_string()).collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("headers.a\0b: coerced"), "{notes:?}");
    }

    #[test]
    fn a_header_whose_type_does_not_fit_is_kept_as_it_arrived() {
        // K2R-10
        let headers = OwnedHeaders::new()
            .insert(Header { key: "n", value: Some(&b"abc"[..]) })
            .insert(Header { key: "raw", value: Some(&b"\xff"[..]) })
            .insert(Header { key: TYPES_HEADER, value: Some(&br#"{"n":"i32","raw":"uuid"}"#[..]) });
        let facts = RecordFacts {
            topic: "t",
            partition: 0,
            offset: 0,
            key: None,
            timestamp: Timestamp::NotAvailable,
        };
        let env = decode(None, Some(headers.as_borrowed()), facts);
        assert_eq!(
            env.headers,
            [
                ("n".to_owned(), Value::String("abc".into())),
                ("raw".to_owned(), Value::Bytes(Bytes::from_static(b"\xff"))),
            ]
        );
    }

    #[test]
    fn a_ttl_beyond_i64_is_carried_not_dropped() {
        let mut env = Envelope::default();
        env.properties.ttl_ms = Some(u64::MAX);
        assert_eq!(round_trip(&env).properties.ttl_ms, Some(u64::MAX));
    }

    #[test]
    fn header_text_is_readable_by_any_consumer() {
        let env = Envelope {
            headers: vec![
                ("temp".into(), Value::I32(21)),
                ("ok".into(), Value::Bool(true)),
                ("deviceId".into(), Value::String("dev-1".into())),
                ("maybe".into(), Value::Null),
            ],
            ..Envelope::default()
        };
        let encoded = encode(&env, &mut Ledger::all());
        let got: Vec<(String, Option<Vec<u8>>)> = encoded
            .headers
            .iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .filter(|(k, _)| k != "amqp.durable")
            .collect();
        assert_eq!(got[0], ("temp".into(), Some(b"21".to_vec())));
        assert_eq!(got[1], ("ok".into(), Some(b"true".to_vec())));
        assert_eq!(got[2], ("deviceId".into(), Some(b"dev-1".to_vec())));
        assert_eq!(got[3], ("maybe".into(), None));
        assert_eq!(got[4].0, TYPES_HEADER);
    }

    #[test]
    fn a_null_value_is_not_an_empty_one() {
        let env = decode::<BorrowedHeaders>(
            None,
            None,
            RecordFacts {
                topic: "t",
                partition: 0,
                offset: 0,
                key: None,
                timestamp: Timestamp::CreateTime(5),
            },
        );
        assert!(env.body_is_null);
        assert_eq!(env.properties.creation_time_ms, Some(5));
        assert_eq!(env.properties.durable, Some(true));
    }
}
