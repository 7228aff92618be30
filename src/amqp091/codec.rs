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

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use serde_json::{Map as JsonMap, Value as Json};

use crate::config::Persistence;
use crate::connector::DeliveryError;
use crate::pipeline::ledger::Field;
use crate::pipeline::{
    BodyKind, Envelope, Ledger, MessageId, Origin, Properties, Value, carry, value,
};

/// What a 0-9-1 delivery tells besides its properties.
pub struct DeliveryFacts<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub queue: &'a str,
    pub redelivered: bool,
}

/// Decodes one delivery. Never fails: every 0-9-1 value has a place in the envelope.
pub fn decode(body: Vec<u8>, props: &BasicProperties, facts: DeliveryFacts<'_>) -> Envelope {
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_owned());
    let properties = Properties {
        message_id: text(props.message_id()).map(MessageId::String),
        correlation_id: text(props.correlation_id()).map(MessageId::String),
        content_type: text(props.content_type()),
        content_encoding: text(props.content_encoding()),
        reply_to: text(props.reply_to()),
        priority: *props.priority(),
        durable: props.delivery_mode().map(|mode| mode == 2),
        ttl_ms: props.expiration().as_ref().and_then(|e| e.as_str().parse().ok()),
        creation_time_ms: props.timestamp().and_then(seconds_to_ms),
        message_type: text(props.kind()),
        user_id: props.user_id().as_ref().map(|u| Bytes::copy_from_slice(u.as_str().as_bytes())),
        app_id: text(props.app_id()),
        cluster_id: text(props.cluster_id()),
        ..Properties::default()
    };
    let mut headers = Vec::new();
    let mut envelope = Envelope::default();
    if let Some(table) = props.headers() {
        let types = recorded_types(table);
        for (name, value) in table.inner() {
            let name = name.as_str();
            if name == carry::TYPES {
                continue;
            }
            let value = from_amqp(value);
            let Some(shape) = types.get(name) else {
                // Properties that an earlier hop could not fit into 0-9-1 come back here.
                if !(name.starts_with("amqp.") && carry::absorb(&mut envelope, name, &value)) {
                    headers.push((name.to_owned(), value));
                }
                continue;
            };
            // A value whose recorded type does not fit is kept as it arrived.
            match value::occurrences(shape).map(|list| value.restore(&list)) {
                Some(Some(Value::List(items))) => {
                    headers.extend(items.into_iter().map(|item| (name.to_owned(), item)));
                }
                Some(_) => headers.push((name.to_owned(), value)),
                None => headers.push((name.to_owned(), value.restore(shape).unwrap_or(value))),
            }
        }
    }
    // An expiration RabbitMQ would refuse cannot come from it; keep any such text as a header.
    if let (Some(raw), None) = (props.expiration(), properties.ttl_ms) {
        headers.push(("amqp.expiration".to_owned(), Value::String(raw.as_str().to_owned())));
    }
    let carried = envelope.properties;
    Envelope {
        body: Bytes::from(body),
        body_is_null: false,
        body_kind: envelope.body_kind,
        properties: merge(properties, carried),
        headers,
        origin: Origin {
            exchange: Some(facts.exchange.to_owned()),
            routing_key: Some(facts.routing_key.to_owned()),
            queue: Some(facts.queue.to_owned()),
            redelivered: facts.redelivered,
            ..Origin::default()
        },
    }
}

/// The `portico.types` record of a field table: header name → shape.
fn recorded_types(table: &FieldTable) -> JsonMap<String, Json> {
    match table.inner().get(carry::TYPES) {
        Some(AMQPValue::LongString(text)) => {
            serde_json::from_slice(text.as_bytes()).unwrap_or_default()
        }
        _ => JsonMap::new(),
    }
}

/// Fills the fields 0-9-1 left unset with those carried in `amqp.*` headers.
fn merge(mut own: Properties, carried: Properties) -> Properties {
    macro_rules! fill {
        ($($field:ident),*) => { $( if own.$field.is_none() { own.$field = carried.$field; } )* };
    }
    fill!(message_id, correlation_id, content_type, content_encoding, reply_to, priority, durable);
    fill!(ttl_ms, absolute_expiry_ms, creation_time_ms, message_type, user_id, app_id, group_id);
    fill!(group_sequence, subject, to, cluster_id, reply_to_group_id);
    // The carried creation time is the exact one; the property only has its seconds.
    if let (Some(exact), Some(seconds)) = (carried.creation_time_ms, own.creation_time_ms) {
        if exact.div_euclid(1000) * 1000 == seconds {
            own.creation_time_ms = Some(exact);
        }
    }
    own
}

/// Encodes the properties and headers of a message about to be published, writing into
/// `ledger` every value that does not cross as it was.
///
/// `user` is the connection's user name: RabbitMQ refuses a `user_id` that differs from it,
/// so any other user id travels in the `amqp.user-id` header.
pub fn encode(
    envelope: &Envelope,
    persistence: Persistence,
    user: &str,
    ledger: &mut Ledger,
) -> Result<BasicProperties, DeliveryError> {
    let p = &envelope.properties;
    let mut headers = FieldTable::default();
    let mut props = BasicProperties::default();
    let mut overflow: Vec<(&str, AMQPValue)> = Vec::new();

    let mut short =
        |field: &'static str, name: &'static str, value: &str| match ShortString::try_new(value) {
            Ok(s) => Some(s),
            Err(_) => {
                ledger.converted(Field::Property(field), "text over 255 bytes", name, TOO_LONG);
                overflow.push((name, AMQPValue::LongString(LongString::from(value))));
                None
            }
        };
    if let Some(v) =
        p.content_type.as_deref().and_then(|v| short("content_type", "amqp.content-type", v))
    {
        props = props.with_content_type(v);
    }
    if let Some(v) = p
        .content_encoding
        .as_deref()
        .and_then(|v| short("content_encoding", "amqp.content-encoding", v))
    {
        props = props.with_content_encoding(v);
    }
    if let Some(v) = p.reply_to.as_deref().and_then(|v| short("reply_to", "amqp.reply-to", v)) {
        props = props.with_reply_to(v);
    }
    if let Some(v) = p.message_type.as_deref().and_then(|v| short("message_type", "amqp.type", v)) {
        props = props.with_type(v);
    }
    if let Some(v) = p.app_id.as_deref().and_then(|v| short("app_id", "amqp.app-id", v)) {
        props = props.with_app_id(v);
    }
    if let Some(v) = p.cluster_id.as_deref().and_then(|v| short("cluster_id", "amqp.cluster-id", v))
    {
        props = props.with_cluster_id(v);
    }
    for (field, header, id) in [
        ("message_id", "amqp.message-id", p.message_id.as_ref()),
        ("correlation_id", "amqp.correlation-id", p.correlation_id.as_ref()),
    ] {
        let Some(id) = id else { continue };
        if !matches!(id, MessageId::String(_)) {
            ledger.converted(Field::Property(field), id_type(id), "ID:AMQP_… text", TYPED_ID);
        }
        match encode_id(id) {
            IdOut::Short(id) if field == "message_id" => props = props.with_message_id(id),
            IdOut::Short(id) => props = props.with_correlation_id(id),
            IdOut::Header(v) => {
                ledger.converted(Field::Property(field), "id over 255 bytes", header, TOO_LONG);
                overflow.push((header, v));
            }
        }
    }
    if let Some(user_id) = &p.user_id {
        match std::str::from_utf8(user_id) {
            Ok(u) if u == user => props = props.with_user_id(ShortString::from(user.to_owned())),
            _ => {
                ledger.converted(
                    Field::Property("user_id"),
                    "user id",
                    "amqp.user-id",
                    FOREIGN_USER,
                );
                overflow.push(("amqp.user-id", bytes_value(user_id)));
            }
        }
    }
    let durable = match persistence {
        Persistence::Always => Some(true),
        Persistence::Never => Some(false),
        Persistence::Source => p.durable,
    };
    if durable != p.durable {
        // The bridge's `persistent:` setting, not the message, decides here.
        ledger.converted(
            Field::Property("durable"),
            durable_text(p.durable),
            durable_text(durable),
            "the sink's persistent setting decides",
        );
    }
    if let Some(durable) = durable {
        props = props.with_delivery_mode(if durable { 2 } else { 1 });
    }
    if let Some(priority) = p.priority {
        props = props.with_priority(priority);
    }
    if let Some(ttl) = ttl(p) {
        if p.ttl_ms.is_none() {
            ledger.converted(
                Field::Property("absolute_expiry"),
                "absolute expiry (ms)",
                "expiration (ms from now) + amqp.absolute-expiry-ms",
                "0-9-1 expirations are relative",
            );
        }
        props = props.with_expiration(ShortString::from(ttl.to_string()));
    }
    if let Some(ms) = p.creation_time_ms {
        // 0-9-1 timestamps are whole seconds since 1970: keep the milliseconds beside them,
        // and a time before 1970 (which no timestamp holds) only there.
        match u64::try_from(ms.div_euclid(1000)) {
            Ok(seconds) => props = props.with_timestamp(seconds),
            Err(_) => ledger.converted(
                Field::Property("creation_time"),
                "timestamp before 1970",
                "amqp.creation-time-ms",
                "0-9-1 timestamps are unsigned",
            ),
        }
        if !whole_seconds(ms) {
            ledger.converted(
                Field::Property("creation_time"),
                "timestamp (ms)",
                "T (s) + amqp.creation-time-ms",
                "0-9-1 timestamps are whole seconds",
            );
            overflow.push(("amqp.creation-time-ms", AMQPValue::LongLongInt(ms)));
        }
    }
    if envelope.body_kind != BodyKind::Bytes {
        ledger.converted(Field::Body, "text, map or list body", "bytes + amqp.body", BYTES_ONLY);
        let kind = envelope.body_kind.name();
        overflow.push((carry::BODY, AMQPValue::LongString(LongString::from(kind))));
        if let Some(shape) = envelope.body_kind.shape() {
            let shape = LongString::from(shape.to_string());
            overflow.push((carry::BODY_TYPES, AMQPValue::LongString(shape)));
        }
    }
    if let Some(ms) = p.absolute_expiry_ms {
        overflow.push(("amqp.absolute-expiry-ms", AMQPValue::LongLongInt(ms)));
    }
    for (field, name, value) in [
        ("subject", "amqp.subject", &p.subject),
        ("to", "amqp.to", &p.to),
        ("group_id", "amqp.group-id", &p.group_id),
        ("reply_to_group_id", "amqp.reply-to-group-id", &p.reply_to_group_id),
    ] {
        if let Some(value) = value {
            ledger.converted(Field::Property(field), "property", name, NO_SUCH_PROPERTY);
            overflow.push((name, AMQPValue::LongString(LongString::from(value.as_str()))));
        }
    }
    if let Some(seq) = p.group_sequence {
        ledger.converted(
            Field::Property("group_sequence"),
            "property",
            "amqp.group-sequence",
            NO_SUCH_PROPERTY,
        );
        overflow.push(("amqp.group-sequence", AMQPValue::LongLongInt(i64::from(seq))));
    }

    let types = encode_headers(&envelope.headers, &mut headers, ledger)?;
    for (name, value) in overflow {
        headers.insert(ShortString::from(name), value);
    }
    if !types.is_empty() {
        let types = LongString::from(Json::Object(types).to_string());
        headers.insert(ShortString::from(carry::TYPES), AMQPValue::LongString(types));
    }
    add_kafka_facts(&mut headers, envelope, ledger);
    Ok(props.with_headers(headers))
}

const TOO_LONG: &str = "a 0-9-1 short string holds 255 bytes";
const TYPED_ID: &str = "0-9-1 ids are strings; the prefix restores the type";
const FOREIGN_USER: &str = "RabbitMQ refuses a user id other than the connection's";
const BYTES_ONLY: &str = "a 0-9-1 body is bytes";
const NO_SUCH_PROPERTY: &str = "0-9-1 has no such property";

fn durable_text(durable: Option<bool>) -> &'static str {
    match durable {
        Some(true) => "durable",
        Some(false) => "transient",
        None => "unset",
    }
}

fn id_type(id: &MessageId) -> &'static str {
    match id {
        MessageId::String(_) => "string id",
        MessageId::Ulong(_) => "ulong id",
        MessageId::Uuid(_) => "uuid id",
        MessageId::Binary(_) => "binary id",
    }
}

/// Writes the application headers into `table` and returns the types to record beside
/// them: a field table holds a name once and lacks some types, so a name Kafka repeated
/// travels as one array, and a value 0-9-1 has no type for (unsigned, uuid, a timestamp in
/// milliseconds) as the nearest type that holds it; `portico.types` restores both.
fn encode_headers(
    headers: &[(String, Value)],
    table: &mut FieldTable,
    ledger: &mut Ledger,
) -> Result<JsonMap<String, Json>, DeliveryError> {
    let mut types = JsonMap::new();
    for (i, (name, value)) in headers.iter().enumerate() {
        if table.inner().contains_key(name.as_str()) {
            continue; // a later value of a repeated name, carried with the first
        }
        let mut later = headers[i + 1..].iter().filter(|(n, _)| n == name).peekable();
        let carrier = if later.peek().is_some() {
            ledger.converted(
                Field::Header(name),
                "a name repeated",
                "A (one array) + portico.types",
                "a field table holds a name once",
            );
            let values: Vec<Value> =
                std::iter::once(value).chain(later.map(|(_, v)| v)).cloned().collect();
            types.insert(name.clone(), value::repeated(values.iter()));
            to_amqp(&Value::List(values))?
        } else if let (true, Value::Timestamp(ms)) = (name.starts_with("portico."), value) {
            // The gateway's own headers (a dead letter's time) are for people and tools
            // reading this broker: a timestamp stays a timestamp, to the second.
            AMQPValue::Timestamp(u64::try_from(ms.div_euclid(1000)).unwrap_or(0))
        } else {
            if let Some((from, to, typed)) = carrier_change(value) {
                ledger.converted(Field::Header(name), from, to, "0-9-1 has no such type");
                if typed {
                    types.insert(name.clone(), value.shape().unwrap_or(Json::Null));
                }
            }
            to_amqp(value)?
        };
        table.insert(header_name(name)?, carrier);
    }
    Ok(types)
}

/// How a value changes in a field table, if it does: (from, to, whether its type must be
/// recorded to come back). Walks nested values without allocating.
fn carrier_change(value: &Value) -> Option<(&'static str, &'static str, bool)> {
    Some(match value {
        Value::U8(_) => ("u8", "s (i16) + portico.types", true),
        Value::U16(_) => ("u16", "I (i32) + portico.types", true),
        Value::U32(_) => ("u32", "l (i64) + portico.types", true),
        Value::U64(n) if i64::try_from(*n).is_ok() => ("u64", "l (i64) + portico.types", true),
        Value::U64(_) => ("u64", "S (decimal text) + portico.types", true),
        Value::Uuid(_) => ("uuid", "S (text) + portico.types", true),
        Value::Timestamp(ms) if whole_seconds(*ms) => ("timestamp (ms)", "T (s)", false),
        Value::Timestamp(_) => ("timestamp (ms)", "l (ms) + portico.types", true),
        Value::List(items) => return nested_change(items.iter()),
        Value::Map(entries) => return nested_change(entries.iter().map(|(_, v)| v)),
        _ => return None,
    })
}

/// The change of a list or map: the first typed one inside, else the first at all. Each
/// value is looked at once, so deep nesting costs no more than wide.
fn nested_change<'a>(
    values: impl Iterator<Item = &'a Value>,
) -> Option<(&'static str, &'static str, bool)> {
    let mut first = None;
    for change in values.filter_map(carrier_change) {
        if change.2 {
            return Some(change);
        }
        first.get_or_insert(change);
    }
    first
}

/// Whether a 0-9-1 timestamp (unsigned seconds) holds `ms` exactly.
fn whole_seconds(ms: i64) -> bool {
    ms >= 0 && ms % 1000 == 0
}

/// A Kafka record's coordinates, so a 0-9-1 consumer can see where it came from.
fn add_kafka_facts(headers: &mut FieldTable, envelope: &Envelope, ledger: &mut Ledger) {
    let origin = &envelope.origin;
    let Some(topic) = &origin.topic else { return };
    headers.insert("kafka-topic".into(), AMQPValue::LongString(LongString::from(topic.as_str())));
    if let Some(partition) = origin.partition {
        headers.insert("kafka-partition".into(), AMQPValue::LongInt(partition));
    }
    if let Some(offset) = origin.offset {
        headers.insert("kafka-offset".into(), AMQPValue::LongLongInt(offset));
    }
    if let Some(key) = &origin.key {
        headers.insert("kafka-key".into(), bytes_value(key));
    }
    if envelope.body_is_null {
        ledger.converted(
            Field::Origin("tombstone"),
            "null value",
            "empty body + kafka-tombstone",
            "a 0-9-1 body is never null",
        );
        headers.insert("kafka-tombstone".into(), AMQPValue::Boolean(true));
    }
}

enum IdOut {
    Short(ShortString),
    Header(AMQPValue),
}

fn encode_id(id: &MessageId) -> IdOut {
    // Non-string ids go as Qpid JMS writes them (`ID:AMQP_ULONG:5`), restorable later.
    let text = id.to_text();
    match ShortString::try_new(text.clone()) {
        Ok(s) => IdOut::Short(s),
        Err(_) => IdOut::Header(AMQPValue::LongString(LongString::from(text))),
    }
}

fn ttl(p: &Properties) -> Option<u64> {
    if let Some(ttl) = p.ttl_ms {
        return Some(ttl);
    }
    let expiry = p.absolute_expiry_ms.filter(|ms| *ms > 0)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    let now = i64::try_from(now.as_millis()).ok()?;
    Some(u64::try_from(expiry - now).unwrap_or(0))
}

fn header_name(name: &str) -> Result<ShortString, DeliveryError> {
    ShortString::try_new(name).map_err(|_| {
        DeliveryError::Encode(format!("header name of {} bytes; AMQP 0-9-1 allows 255", name.len()))
    })
}

fn bytes_value(bytes: &[u8]) -> AMQPValue {
    match std::str::from_utf8(bytes) {
        Ok(s) => AMQPValue::LongString(LongString::from(s)),
        Err(_) => AMQPValue::ByteArray(ByteArray::from(bytes.to_vec())),
    }
}

fn seconds_to_ms(seconds: u64) -> Option<i64> {
    i64::try_from(seconds).ok()?.checked_mul(1000)
}

/// Reads one field-table value; unknown tags never reach here (the client refuses them).
pub fn from_amqp(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::I8(*n),
        AMQPValue::ShortShortUInt(n) => Value::U8(*n),
        AMQPValue::ShortInt(n) => Value::I16(*n),
        AMQPValue::ShortUInt(n) => Value::U16(*n),
        AMQPValue::LongInt(n) => Value::I32(*n),
        AMQPValue::LongUInt(n) => Value::U32(*n),
        AMQPValue::LongLongInt(n) => Value::I64(*n),
        AMQPValue::Float(n) => Value::F32(*n),
        AMQPValue::Double(n) => Value::F64(*n),
        // The errata defines the decimal value as signed; the client reads it unsigned.
        AMQPValue::DecimalValue(d) => Value::Decimal { scale: d.scale, value: d.value as i32 },
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => Value::Bytes(Bytes::copy_from_slice(s.as_bytes())),
        },
        AMQPValue::FieldArray(items) => {
            Value::List(items.as_slice().iter().map(from_amqp).collect())
        }
        AMQPValue::Timestamp(s) => Value::Timestamp(seconds_to_ms(*s).unwrap_or(i64::MAX)),
        AMQPValue::FieldTable(t) => Value::Map(
            t.inner().iter().map(|(k, v)| (k.as_str().to_owned(), from_amqp(v))).collect(),
        ),
        AMQPValue::ByteArray(b) => Value::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// Writes one value as a field-table value.
pub fn to_amqp(value: &Value) -> Result<AMQPValue, DeliveryError> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::I8(n) => AMQPValue::ShortShortInt(*n),
        Value::U8(n) => AMQPValue::ShortInt(i16::from(*n)),
        Value::I16(n) => AMQPValue::ShortInt(*n),
        Value::U16(n) => AMQPValue::LongInt(i32::from(*n)),
        Value::I32(n) => AMQPValue::LongInt(*n),
        Value::U32(n) => AMQPValue::LongLongInt(i64::from(*n)),
        Value::I64(n) => AMQPValue::LongLongInt(*n),
        // 0-9-1 has no unsigned 64-bit type: a value above i64::MAX goes as its decimal text.
        Value::U64(n) => match i64::try_from(*n) {
            Ok(n) => AMQPValue::LongLongInt(n),
            Err(_) => AMQPValue::LongString(LongString::from(n.to_string())),
        },
        Value::F32(n) => AMQPValue::Float(*n),
        Value::F64(n) => AMQPValue::Double(*n),
        Value::Decimal { scale, value } => {
            AMQPValue::DecimalValue(DecimalValue { scale: *scale, value: *value as u32 })
        }
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
        // A time a 0-9-1 timestamp cannot hold exactly goes as milliseconds; the encoder
        // records its type.
        Value::Timestamp(ms) => match u64::try_from(*ms / 1000) {
            Ok(seconds) if whole_seconds(*ms) => AMQPValue::Timestamp(seconds),
            _ => AMQPValue::LongLongInt(*ms),
        },
        Value::Uuid(u) => AMQPValue::LongString(LongString::from(u.to_string())),
        Value::List(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(to_amqp).collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Map(entries) => {
            let mut table = FieldTable::default();
            for (k, v) in entries {
                table.insert(header_name(k)?, to_amqp(v)?);
            }
            AMQPValue::FieldTable(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_foreign_user_id_moves_to_a_header_instead_of_closing_the_channel() {
        let mut env = Envelope::default();
        env.properties.user_id = Some(Bytes::from_static(b"svc"));
        let out = encode(&env, Persistence::Source, "guest", &mut Ledger::all()).expect("encodes");
        assert_eq!(*out.user_id(), None);
        let headers = out.headers().clone().unwrap_or_default();
        assert_eq!(headers.inner().get("amqp.user-id"), Some(&AMQPValue::LongString("svc".into())));
    }

    #[test]
    fn unsigned_integers_widen_to_the_next_signed_type() {
        assert_eq!(
            to_amqp(&Value::U32(4_000_000_000)).ok(),
            Some(AMQPValue::LongLongInt(4_000_000_000))
        );
        assert_eq!(to_amqp(&Value::I16(7)).ok(), Some(AMQPValue::ShortInt(7)));
        assert_eq!(to_amqp(&Value::F32(1.5)).ok(), Some(AMQPValue::Float(1.5)));
        assert_eq!(
            to_amqp(&Value::U64(u64::MAX)).ok(),
            Some(AMQPValue::LongString(u64::MAX.to_string().into()))
        );
    }

    #[test]
    fn non_utf8_long_strings_become_bytes() {
        let raw = vec![0x00, 0x53, 0x74, 0xC1, 0x07];
        assert_eq!(
            from_amqp(&AMQPValue::LongString(raw.clone().into())),
            Value::Bytes(Bytes::from(raw))
        );
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

    #[test]
    fn long_ids_move_to_headers_instead_of_being_truncated() {
        let mut env = Envelope::default();
        env.properties.message_id = Some(MessageId::String("m".repeat(300)));
        let out = encode(&env, Persistence::Source, "guest", &mut Ledger::all()).expect("encodes");
        assert_eq!(*out.message_id(), None);
        let headers = out.headers().clone().unwrap_or_default();
        assert!(headers.inner().contains_key("amqp.message-id"));
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
