//! Small conversions between envelope values and the forms an AMQP 1.0 message holds them
//! in: message ids, a value written as text with its shape, the values of a repeated name.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use fe2o3_amqp::types::messaging::MessageId as AmqpId;
use fe2o3_amqp::types::primitives::{Binary, Uuid as AmqpUuid, Value as AmqpValueT};
use serde_json::Value as Json;

use crate::pipeline::{MessageId, Value};

pub(super) fn has_decimal(value: &Value) -> bool {
    match value {
        Value::Decimal { .. } => true,
        Value::List(items) => items.iter().any(has_decimal),
        Value::Map(entries) => entries.iter().any(|(_, v)| has_decimal(v)),
        _ => false,
    }
}

/// All values of a name that repeats (Kafka allows it), as one list; `None` when `name`
/// does not occur again in `rest`.
pub(super) fn repeated_values(
    name: &str,
    first: &Value,
    rest: &[(String, Value)],
) -> Option<Value> {
    let mut more = rest.iter().filter(|(n, _)| n == name).map(|(_, v)| v).peekable();
    more.peek()?;
    Some(Value::List(std::iter::once(first).chain(more).cloned().collect()))
}

/// A value an application property cannot hold, as a string and the shape that restores it.
/// Bytes go as base64: raw bytes need not be valid UTF-8.
pub(super) fn as_text(value: &Value) -> (String, Json) {
    match value {
        Value::Bytes(b) => (BASE64.encode(b), Json::String("base64".to_owned())),
        other => {
            let text = other.to_text().unwrap_or_default();
            let shape = other.shape().unwrap_or(Json::Null);
            (String::from_utf8_lossy(&text).into_owned(), shape)
        }
    }
}

pub(super) fn bytes_or_text(bytes: &[u8]) -> AmqpValueT {
    match std::str::from_utf8(bytes) {
        Ok(s) => AmqpValueT::String(s.to_owned()),
        Err(_) => AmqpValueT::Binary(bytes.to_vec().into()),
    }
}

pub(super) fn from_id(id: AmqpId) -> MessageId {
    match id {
        AmqpId::String(s) => MessageId::String(s),
        AmqpId::Ulong(n) => MessageId::Ulong(n),
        AmqpId::Uuid(u) => MessageId::Uuid(uuid::Uuid::from_bytes(u.into_inner())),
        AmqpId::Binary(b) => MessageId::Binary(Bytes::from(b.into_vec())),
    }
}

pub(super) fn to_id(id: &MessageId) -> AmqpId {
    // A string id may be a typed id that crossed a string-only protocol.
    let id = match id {
        MessageId::String(s) => MessageId::parse(s),
        other => other.clone(),
    };
    match id {
        MessageId::String(s) => AmqpId::String(s),
        MessageId::Ulong(n) => AmqpId::Ulong(n),
        MessageId::Uuid(u) => AmqpId::Uuid(AmqpUuid::from(*u.as_bytes())),
        MessageId::Binary(b) => AmqpId::Binary(Binary::from(b.to_vec())),
    }
}
