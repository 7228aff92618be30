//! The sink's own encoding of a message, shown field by field in the sink protocol's terms.

use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{AmqpValue, Body, MessageId as AmqpId};
use fe2o3_amqp::types::primitives::{SimpleValue, Symbol, Value as AmqpValueT};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, ShortString};

use super::{Change, Row, show, show_body, show_bytes};
use crate::amqp10::codec::{AmqpMessage, Target};
use crate::amqp10::values::{from_amqp, from_simple};
use crate::config::SinkModel;
use crate::connector::DeliveryError;
use crate::pipeline::{Envelope, Ledger, Route};

/// What the sink would send.
pub struct Encoded {
    pub rows: Vec<Row>,
    /// What the sink codec changed.
    pub changes: Vec<Change>,
}

/// Encodes `envelope` as `sink` would for `route`; with `strict`, a lossy note is an error,
/// as it is for a running bridge.
pub fn encode(
    sink: &SinkModel,
    envelope: &Envelope,
    route: &Route,
    strict: bool,
) -> Result<Encoded, DeliveryError> {
    let mut ledger = Ledger::all().strict(strict);
    let rows = rows(sink, envelope, route, &mut ledger)?;
    if let Some(refused) = ledger.refusal() {
        return Err(refused);
    }
    let changes = ledger.notes().iter().map(Change::from).collect();
    Ok(Encoded { rows, changes })
}

fn rows(
    sink: &SinkModel,
    envelope: &Envelope,
    route: &Route,
    ledger: &mut Ledger,
) -> Result<Vec<Row>, DeliveryError> {
    let wrong = || DeliveryError::Encode(format!("the sink cannot publish to {route:?}"));
    match (sink, route) {
        (
            SinkModel::Amqp091 { connection, persistence, .. },
            Route::Amqp091 { exchange, routing_key },
        ) => {
            let user = crate::amqp091::user_of(&connection.url);
            let props = crate::amqp091::codec::encode(envelope, *persistence, &user, ledger)?;
            let mut rows = vec![
                Row::new("exchange", "shortstr", format!("{exchange:?}")),
                Row::new("routing_key", "shortstr", format!("{routing_key:?}")),
            ];
            amqp091_rows(&props, &mut rows);
            rows.push(Row::new("body", "bytes", show_body(&envelope.body)));
            Ok(rows)
        }
        (SinkModel::Kafka { .. }, Route::Kafka { topic, key, partition, timestamp }) => {
            let encoded = crate::kafka::codec::encode(envelope, ledger);
            let mut rows = vec![Row::new("topic", "string", format!("{topic:?}"))];
            rows.push(match partition {
                Some(p) => Row::new("partition", "int32", p.to_string()),
                None => Row::new("partition", "-", "chosen by the key's hash (murmur2)"),
            });
            rows.push(match key {
                Some(k) => Row::new("key", "bytes", show_bytes(k.as_bytes())),
                None => Row::new("key", "-", "null"),
            });
            rows.push(match timestamp {
                Some(ms) => Row::new("timestamp", "CreateTime (ms)", ms.to_string()),
                None => Row::new("timestamp", "CreateTime (ms)", "the time of sending"),
            });
            use rdkafka::message::Headers as _;
            for header in encoded.headers.iter() {
                let value = header.value.map_or_else(|| "null".to_owned(), show_bytes);
                rows.push(Row::new(format!("headers.{}", header.key), "bytes", value));
            }
            let value = if envelope.body_is_null {
                Row::new("value", "-", "null (a tombstone)")
            } else {
                Row::new("value", "bytes", show_body(&envelope.body))
            };
            rows.push(value);
            Ok(rows)
        }
        (SinkModel::Amqp10 { connection, .. }, Route::Amqp10 { name, node }) => {
            let (address, capability) = crate::amqp10::address(connection.flavor, *node, name);
            let target = Target::of(connection.flavor, *node);
            let message = crate::amqp10::codec::encode(envelope, target, &address, ledger);
            let mut rows = vec![Row::new("address", "string", format!("{address:?}"))];
            if let Some(capability) = capability {
                rows.push(Row::new("capability", "symbol", capability));
            }
            amqp10_rows(&message, &mut rows);
            Ok(rows)
        }
        _ => Err(wrong()),
    }
}

fn amqp091_rows(props: &BasicProperties, rows: &mut Vec<Row>) {
    let mut short = |name: &str, value: &Option<ShortString>| {
        if let Some(v) = value {
            rows.push(Row::new(
                format!("properties.{name}"),
                "shortstr",
                format!("{:?}", v.as_str()),
            ));
        }
    };
    short("content_type", props.content_type());
    short("content_encoding", props.content_encoding());
    short("correlation_id", props.correlation_id());
    short("reply_to", props.reply_to());
    short("expiration", props.expiration());
    short("message_id", props.message_id());
    short("type", props.kind());
    short("user_id", props.user_id());
    short("app_id", props.app_id());
    short("cluster_id", props.cluster_id());
    if let Some(mode) = props.delivery_mode() {
        rows.push(Row::new("properties.delivery_mode", "octet", mode.to_string()));
    }
    if let Some(priority) = props.priority() {
        rows.push(Row::new("properties.priority", "octet", priority.to_string()));
    }
    if let Some(seconds) = props.timestamp() {
        rows.push(Row::new("properties.timestamp", "timestamp (s)", seconds.to_string()));
    }
    if let Some(headers) = props.headers() {
        for (name, value) in headers.inner() {
            let shown = match value {
                AMQPValue::Timestamp(seconds) => seconds.to_string(),
                other => show(&crate::amqp091::codec::from_amqp(other)),
            };
            rows.push(Row::new(format!("headers.{}", name.as_str()), tag_091(value), shown));
        }
    }
}

/// The field-table tag and what it means, as RabbitMQ reads it.
fn tag_091(value: &AMQPValue) -> &'static str {
    match value {
        AMQPValue::Boolean(_) => "t bool",
        AMQPValue::ShortShortInt(_) => "b int8",
        AMQPValue::ShortShortUInt(_) => "B uint8",
        AMQPValue::ShortInt(_) => "s int16",
        AMQPValue::ShortUInt(_) => "u uint16",
        AMQPValue::LongInt(_) => "I int32",
        AMQPValue::LongUInt(_) => "i uint32",
        AMQPValue::LongLongInt(_) => "l int64",
        AMQPValue::Float(_) => "f float",
        AMQPValue::Double(_) => "d double",
        AMQPValue::DecimalValue(_) => "D decimal",
        AMQPValue::ShortString(_) => "shortstr",
        AMQPValue::LongString(_) => "S longstr",
        AMQPValue::FieldArray(_) => "A array",
        AMQPValue::Timestamp(_) => "T timestamp (s)",
        AMQPValue::FieldTable(_) => "F table",
        AMQPValue::ByteArray(_) => "x bytes",
        AMQPValue::Void => "V void",
    }
}

fn amqp10_rows(message: &AmqpMessage, rows: &mut Vec<Row>) {
    if let Some(h) = &message.header {
        rows.push(Row::new("header.durable", "boolean", h.durable.to_string()));
        rows.push(Row::new("header.priority", "ubyte", h.priority.0.to_string()));
        if let Some(ttl) = h.ttl {
            rows.push(Row::new("header.ttl", "uint (ms)", ttl.to_string()));
        }
    }
    if let Some(p) = &message.properties {
        let mut text = |name: &str, kind: &str, value: Option<String>| {
            if let Some(value) = value {
                rows.push(Row::new(format!("properties.{name}"), kind, value));
            }
        };
        let quoted = |v: &Option<String>| v.as_ref().map(|v| format!("{v:?}"));
        let symbol = |v: &Option<Symbol>| v.as_ref().map(|Symbol(s)| format!("{s:?}"));
        let (kind, id) = id_row(p.message_id.as_ref());
        text("message_id", kind, id);
        text("user_id", "binary", p.user_id.as_ref().map(|u| show_bytes(u.as_ref())));
        text("to", "string", quoted(&p.to));
        text("subject", "string", quoted(&p.subject));
        text("reply_to", "string", quoted(&p.reply_to));
        let (kind, id) = id_row(p.correlation_id.as_ref());
        text("correlation_id", kind, id);
        text("content_type", "symbol", symbol(&p.content_type));
        text("content_encoding", "symbol", symbol(&p.content_encoding));
        let ms = |t: &Option<fe2o3_amqp::types::primitives::Timestamp>| {
            t.as_ref().map(|t| t.milliseconds().to_string())
        };
        text("absolute_expiry_time", "timestamp (ms)", ms(&p.absolute_expiry_time));
        text("creation_time", "timestamp (ms)", ms(&p.creation_time));
        text("group_id", "string", quoted(&p.group_id));
        text("group_sequence", "uint", p.group_sequence.map(|n| n.to_string()));
        text("reply_to_group_id", "string", quoted(&p.reply_to_group_id));
    }
    if let Some(annotations) = &message.message_annotations {
        for (key, value) in annotations.0.iter() {
            let key = match key {
                OwnedKey::Symbol(Symbol(s)) => s.clone(),
                OwnedKey::Ulong(n) => n.to_string(),
            };
            rows.push(Row::new(
                format!("annotations.{key}"),
                amqp10_type(value),
                show(&from_amqp(value)),
            ));
        }
    }
    if let Some(app) = &message.application_properties {
        for (key, value) in app.0.iter() {
            let field = format!("application_properties.{key}");
            rows.push(Row::new(field, simple_type(value), show(&from_simple(value))));
        }
    }
    rows.push(match &message.body {
        Body::Data(sections) => {
            let bytes: Vec<u8> = sections.iter().flat_map(|d| d.0.as_ref().to_vec()).collect();
            Row::new("body", "data", show_body(&bytes))
        }
        Body::Value(AmqpValue(value)) => {
            Row::new("body", format!("amqp-value {}", amqp10_type(value)), show(&from_amqp(value)))
        }
        Body::Sequence(sections) => {
            let items = sections.iter().flat_map(|s| s.0.iter().map(from_amqp)).collect();
            Row::new("body", "amqp-sequence", show(&crate::pipeline::Value::List(items)))
        }
        Body::Empty => Row::new("body", "-", "none"),
    });
}

fn id_row(id: Option<&AmqpId>) -> (&'static str, Option<String>) {
    match id {
        None => ("string", None),
        Some(AmqpId::String(s)) => ("string", Some(format!("{s:?}"))),
        Some(AmqpId::Ulong(n)) => ("ulong", Some(n.to_string())),
        Some(AmqpId::Uuid(u)) => ("uuid", Some(uuid::Uuid::from_bytes(*u.as_inner()).to_string())),
        Some(AmqpId::Binary(b)) => ("binary", Some(show_bytes(b.as_ref()))),
    }
}

/// An AMQP 1.0 value's type, as the specification names it.
fn amqp10_type(value: &AmqpValueT) -> &'static str {
    match value {
        AmqpValueT::Null => "null",
        AmqpValueT::Bool(_) => "boolean",
        AmqpValueT::Ubyte(_) => "ubyte",
        AmqpValueT::Ushort(_) => "ushort",
        AmqpValueT::Uint(_) => "uint",
        AmqpValueT::Ulong(_) => "ulong",
        AmqpValueT::Byte(_) => "byte",
        AmqpValueT::Short(_) => "short",
        AmqpValueT::Int(_) => "int",
        AmqpValueT::Long(_) => "long",
        AmqpValueT::Float(_) => "float",
        AmqpValueT::Double(_) => "double",
        AmqpValueT::Char(_) => "char",
        AmqpValueT::Timestamp(_) => "timestamp",
        AmqpValueT::Uuid(_) => "uuid",
        AmqpValueT::Binary(_) => "binary",
        AmqpValueT::String(_) => "string",
        AmqpValueT::Symbol(_) => "symbol",
        AmqpValueT::List(_) => "list",
        AmqpValueT::Map(_) => "map",
        AmqpValueT::Array(_) => "array",
        _ => "described",
    }
}

fn simple_type(value: &SimpleValue) -> &'static str {
    match value {
        SimpleValue::Null => "null",
        SimpleValue::Bool(_) => "boolean",
        SimpleValue::Ubyte(_) => "ubyte",
        SimpleValue::Ushort(_) => "ushort",
        SimpleValue::Uint(_) => "uint",
        SimpleValue::Ulong(_) => "ulong",
        SimpleValue::Byte(_) => "byte",
        SimpleValue::Short(_) => "short",
        SimpleValue::Int(_) => "int",
        SimpleValue::Long(_) => "long",
        SimpleValue::Float(_) => "float",
        SimpleValue::Double(_) => "double",
        SimpleValue::Char(_) => "char",
        SimpleValue::Timestamp(_) => "timestamp",
        SimpleValue::Uuid(_) => "uuid",
        SimpleValue::Binary(_) => "binary",
        SimpleValue::String(_) => "string",
        SimpleValue::Symbol(_) => "symbol",
        _ => "decimal",
    }
}
