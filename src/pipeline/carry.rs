//! Standard properties carried as headers by protocols that have no field for them.
//!
//! Kafka has no properties at all and AMQP 0-9-1 lacks several of AMQP 1.0's, so both carry
//! them as `amqp.*` headers. Whichever protocol reads such a message back puts them into the
//! envelope's properties again, through [`absorb`].

use super::envelope::{BodyKind, Envelope, MessageId};
use super::value::Value;

/// The header recording the types of headers whose carrier does not say them (Kafka,
/// where every value is bytes; 0-9-1, for the types a field table lacks): a JSON object of
/// header name → shape (see [`crate::pipeline::value`]).
pub const TYPES: &str = "portico.types";
/// The kind of body (`text`, `map`, `list`) when it is not plain bytes.
pub const BODY: &str = "amqp.body";
/// The shape of a map or list body.
pub const BODY_TYPES: &str = "amqp.body-types";

/// Moves a carried property into the envelope; false when `name` is an application header.
pub fn absorb(envelope: &mut Envelope, name: &str, value: &Value) -> bool {
    let p = &mut envelope.properties;
    let text = || value.to_template_text();
    let number = || text().and_then(|t| t.parse::<i64>().ok());
    match name {
        "content-type" | "amqp.content-type" => p.content_type = text(),
        "content-encoding" | "amqp.content-encoding" => p.content_encoding = text(),
        "amqp.message-id" => p.message_id = id(value),
        "amqp.correlation-id" => p.correlation_id = id(value),
        "amqp.reply-to" => p.reply_to = text(),
        "amqp.type" => p.message_type = text(),
        "amqp.user-id" => {
            p.user_id = match value {
                Value::Bytes(b) => Some(b.clone()),
                other => other.to_text(),
            }
        }
        "amqp.app-id" => p.app_id = text(),
        "amqp.cluster-id" => p.cluster_id = text(),
        "amqp.subject" => p.subject = text(),
        "amqp.to" => p.to = text(),
        "amqp.group-id" => p.group_id = text(),
        "amqp.reply-to-group-id" => p.reply_to_group_id = text(),
        "amqp.group-sequence" => p.group_sequence = number().and_then(|n| u32::try_from(n).ok()),
        "amqp.priority" => p.priority = number().and_then(|n| u8::try_from(n).ok()),
        "amqp.durable" => p.durable = text().map(|t| t == "true"),
        "amqp.expiration-ms" => p.ttl_ms = text().and_then(|t| t.parse().ok()),
        "amqp.absolute-expiry-ms" => p.absolute_expiry_ms = number(),
        "amqp.creation-time-ms" => p.creation_time_ms = number(),
        BODY => {
            let kind = text().unwrap_or_default();
            envelope.body_kind = BodyKind::from_parts(&kind, Some(serde_json::Value::Null));
        }
        BODY_TYPES => {
            let shape = text().and_then(|t| serde_json::from_str(&t).ok());
            if let (Some(shape), BodyKind::Map { shape: s } | BodyKind::List { shape: s }) =
                (shape, &mut envelope.body_kind)
            {
                *s = shape;
            }
        }
        _ => return false,
    }
    true
}

fn id(value: &Value) -> Option<MessageId> {
    Some(match value {
        Value::U64(n) => MessageId::Ulong(*n),
        Value::Uuid(u) => MessageId::Uuid(*u),
        Value::Bytes(b) => MessageId::Binary(b.clone()),
        Value::Null => return None,
        other => MessageId::parse(&other.to_template_text()?),
    })
}
