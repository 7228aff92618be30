//! The encode side: an envelope becomes the properties and header table of a 0-9-1
//! publish.
//!
//! A value that does not fit a short string, a property 0-9-1 lacks and a header type a
//! field table has no tag for travel in `amqp.*` headers or as the nearest type, with
//! `portico.types` recording what they were. Every value that does not cross as it was is
//! written into the ledger.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::{Map as JsonMap, Value as Json};

use super::value_conversion::{bytes_value, header_name, to_amqp, whole_seconds};
use crate::config::Persistence;
use crate::connector::DeliveryError;
use crate::pipeline::ledger::Field;
use crate::pipeline::{BodyKind, Envelope, Ledger, MessageId, Properties, Value, carry, value};

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
    let Publish { props, overflow, ledger } = Publish::new(ledger)
        .texts(p)
        .ids(p)
        .user_id(p, user)
        .delivery_mode(p, persistence)
        .priority(p)
        .expiration(p)
        .timestamp(p)
        .body_kind(envelope)
        .missing_properties(p);

    let mut headers = FieldTable::default();
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

/// A publish's basic properties being written, each step one property or a few, with the
/// values 0-9-1 has no place for, which travel in `amqp.*` headers instead.
struct Publish<'l> {
    props: BasicProperties,
    overflow: Vec<(&'static str, AMQPValue)>,
    ledger: &'l mut Ledger,
}

impl<'l> Publish<'l> {
    fn new(ledger: &'l mut Ledger) -> Self {
        Publish { props: BasicProperties::default(), overflow: Vec::new(), ledger }
    }

    /// `value` as a short string; a longer one travels in the header `name` instead.
    fn short(
        &mut self,
        field: &'static str,
        name: &'static str,
        value: &str,
    ) -> Option<ShortString> {
        match ShortString::try_new(value) {
            Ok(s) => Some(s),
            Err(_) => {
                self.ledger.converted(
                    Field::Property(field),
                    "text over 255 bytes",
                    name,
                    TOO_LONG,
                );
                self.overflow.push((name, AMQPValue::LongString(LongString::from(value))));
                None
            }
        }
    }

    fn texts(mut self, p: &Properties) -> Self {
        if let Some(v) = p
            .content_type
            .as_deref()
            .and_then(|v| self.short("content_type", "amqp.content-type", v))
        {
            self.props = self.props.with_content_type(v);
        }
        if let Some(v) = p
            .content_encoding
            .as_deref()
            .and_then(|v| self.short("content_encoding", "amqp.content-encoding", v))
        {
            self.props = self.props.with_content_encoding(v);
        }
        if let Some(v) =
            p.reply_to.as_deref().and_then(|v| self.short("reply_to", "amqp.reply-to", v))
        {
            self.props = self.props.with_reply_to(v);
        }
        if let Some(v) =
            p.message_type.as_deref().and_then(|v| self.short("message_type", "amqp.type", v))
        {
            self.props = self.props.with_type(v);
        }
        if let Some(v) = p.app_id.as_deref().and_then(|v| self.short("app_id", "amqp.app-id", v)) {
            self.props = self.props.with_app_id(v);
        }
        if let Some(v) =
            p.cluster_id.as_deref().and_then(|v| self.short("cluster_id", "amqp.cluster-id", v))
        {
            self.props = self.props.with_cluster_id(v);
        }
        self
    }

    /// Message and correlation ids; a typed id goes as text that restores its type.
    fn ids(mut self, p: &Properties) -> Self {
        for (field, header, id) in [
            ("message_id", "amqp.message-id", p.message_id.as_ref()),
            ("correlation_id", "amqp.correlation-id", p.correlation_id.as_ref()),
        ] {
            let Some(id) = id else { continue };
            if !matches!(id, MessageId::String(_)) {
                self.ledger.converted(
                    Field::Property(field),
                    id_type(id),
                    "ID:AMQP_… text",
                    TYPED_ID,
                );
            }
            match encode_id(id) {
                IdOut::Short(id) if field == "message_id" => {
                    self.props = self.props.with_message_id(id)
                }
                IdOut::Short(id) => self.props = self.props.with_correlation_id(id),
                IdOut::Header(v) => {
                    self.ledger.converted(
                        Field::Property(field),
                        "id over 255 bytes",
                        header,
                        TOO_LONG,
                    );
                    self.overflow.push((header, v));
                }
            }
        }
        self
    }

    fn user_id(mut self, p: &Properties, user: &str) -> Self {
        if let Some(user_id) = &p.user_id {
            match std::str::from_utf8(user_id) {
                Ok(u) if u == user => {
                    self.props = self.props.with_user_id(ShortString::from(user.to_owned()))
                }
                _ => {
                    self.ledger.converted(
                        Field::Property("user_id"),
                        "user id",
                        "amqp.user-id",
                        FOREIGN_USER,
                    );
                    self.overflow.push(("amqp.user-id", bytes_value(user_id)));
                }
            }
        }
        self
    }

    fn delivery_mode(mut self, p: &Properties, persistence: Persistence) -> Self {
        let durable = match persistence {
            Persistence::Always => Some(true),
            Persistence::Never => Some(false),
            Persistence::Source => p.durable,
        };
        if durable != p.durable {
            // The bridge's `persistent:` setting, not the message, decides here.
            self.ledger.converted(
                Field::Property("durable"),
                durable_text(p.durable),
                durable_text(durable),
                "the sink's persistent setting decides",
            );
        }
        if let Some(durable) = durable {
            self.props = self.props.with_delivery_mode(if durable { 2 } else { 1 });
        }
        self
    }

    fn priority(mut self, p: &Properties) -> Self {
        if let Some(priority) = p.priority {
            self.props = self.props.with_priority(priority);
        }
        self
    }

    fn expiration(mut self, p: &Properties) -> Self {
        if let Some(ttl) = ttl(p) {
            if p.ttl_ms.is_none() {
                self.ledger.converted(
                    Field::Property("absolute_expiry"),
                    "absolute expiry (ms)",
                    "expiration (ms from now) + amqp.absolute-expiry-ms",
                    "0-9-1 expirations are relative",
                );
            }
            self.props = self.props.with_expiration(ShortString::from(ttl.to_string()));
        }
        self
    }

    fn timestamp(mut self, p: &Properties) -> Self {
        let Some(ms) = p.creation_time_ms else { return self };
        // 0-9-1 timestamps are whole seconds since 1970: keep the milliseconds beside them,
        // and a time before 1970 (which no timestamp holds) only there.
        match u64::try_from(ms.div_euclid(1000)) {
            Ok(seconds) => self.props = self.props.with_timestamp(seconds),
            Err(_) => self.ledger.converted(
                Field::Property("creation_time"),
                "timestamp before 1970",
                "amqp.creation-time-ms",
                "0-9-1 timestamps are unsigned",
            ),
        }
        if !whole_seconds(ms) {
            self.ledger.converted(
                Field::Property("creation_time"),
                "timestamp (ms)",
                "T (s) + amqp.creation-time-ms",
                "0-9-1 timestamps are whole seconds",
            );
            self.overflow.push(("amqp.creation-time-ms", AMQPValue::LongLongInt(ms)));
        }
        self
    }

    /// A body that is not bytes goes as bytes, its kind (and shape) in `amqp.body*` headers.
    fn body_kind(mut self, envelope: &Envelope) -> Self {
        if envelope.body_kind != BodyKind::Bytes {
            self.ledger.converted(
                Field::Body,
                "text, map or list body",
                "bytes + amqp.body",
                BYTES_ONLY,
            );
            let kind = envelope.body_kind.name();
            self.overflow.push((carry::BODY, AMQPValue::LongString(LongString::from(kind))));
            if let Some(shape) = envelope.body_kind.shape() {
                let shape = LongString::from(shape.to_string());
                self.overflow.push((carry::BODY_TYPES, AMQPValue::LongString(shape)));
            }
        }
        self
    }

    /// The AMQP 1.0 properties 0-9-1 lacks, each in its `amqp.*` header.
    fn missing_properties(mut self, p: &Properties) -> Self {
        if let Some(ms) = p.absolute_expiry_ms {
            self.overflow.push(("amqp.absolute-expiry-ms", AMQPValue::LongLongInt(ms)));
        }
        for (field, name, value) in [
            ("subject", "amqp.subject", &p.subject),
            ("to", "amqp.to", &p.to),
            ("group_id", "amqp.group-id", &p.group_id),
            ("reply_to_group_id", "amqp.reply-to-group-id", &p.reply_to_group_id),
        ] {
            if let Some(value) = value {
                self.ledger.converted(Field::Property(field), "property", name, NO_SUCH_PROPERTY);
                self.overflow.push((name, AMQPValue::LongString(LongString::from(value.as_str()))));
            }
        }
        if let Some(seq) = p.group_sequence {
            self.ledger.converted(
                Field::Property("group_sequence"),
                "property",
                "amqp.group-sequence",
                NO_SUCH_PROPERTY,
            );
            self.overflow.push(("amqp.group-sequence", AMQPValue::LongLongInt(i64::from(seq))));
        }
        self
    }
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

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
    fn long_ids_move_to_headers_instead_of_being_truncated() {
        let mut env = Envelope::default();
        env.properties.message_id = Some(MessageId::String("m".repeat(300)));
        let out = encode(&env, Persistence::Source, "guest", &mut Ledger::all()).expect("encodes");
        assert_eq!(*out.message_id(), None);
        let headers = out.headers().clone().unwrap_or_default();
        assert!(headers.inner().contains_key("amqp.message-id"));
    }
}
