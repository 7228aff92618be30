//! The canonical message that travels between a source and a sink.
//!
//! Every source decodes its broker's delivery into an [`Envelope`] and every sink encodes one
//! back out. Nothing protocol-specific lives here: the envelope is the union of what AMQP 0-9-1,
//! AMQP 1.0 and Kafka can say about a message, so that a field is either carried or visibly
//! dropped, never silently reinterpreted.

use bytes::Bytes;

use super::value::Value;

/// A message identifier with the type it had at the source (AMQP 1.0 allows four).
#[derive(Clone, Debug, PartialEq)]
pub enum MessageId {
    String(String),
    Ulong(u64),
    Uuid(uuid::Uuid),
    Binary(Bytes),
}

impl MessageId {
    /// The id as text, in the form Qpid JMS shows ids: strings as they are, other types with
    /// their type prefix (`ID:AMQP_ULONG:12345`, `ID:AMQP_UUID:…`, `ID:AMQP_BINARY:CAFEBABE`).
    /// [`MessageId::parse`] restores the type, so an id survives a trip through a protocol
    /// whose ids are only strings.
    pub fn to_text(&self) -> String {
        match self {
            MessageId::String(s) => s.clone(),
            MessageId::Ulong(n) => format!("{ULONG}{n}"),
            MessageId::Uuid(u) => format!("{UUID}{u}"),
            MessageId::Binary(b) => {
                let hex: String = b.iter().map(|byte| format!("{byte:02X}")).collect();
                format!("{BINARY}{hex}")
            }
        }
    }

    /// Reads an id written by [`MessageId::to_text`]; any other text is a string id.
    pub fn parse(text: &str) -> MessageId {
        let typed = if let Some(n) = text.strip_prefix(ULONG) {
            n.parse().ok().map(MessageId::Ulong)
        } else if let Some(u) = text.strip_prefix(UUID) {
            u.parse().ok().map(MessageId::Uuid)
        } else if let Some(hex) = text.strip_prefix(BINARY) {
            decode_hex(hex).map(|b| MessageId::Binary(Bytes::from(b)))
        } else {
            text.strip_prefix(STRING).map(|s| MessageId::String(s.to_owned()))
        };
        typed.unwrap_or_else(|| MessageId::String(text.to_owned()))
    }
}

const ULONG: &str = "ID:AMQP_ULONG:";
const UUID: &str = "ID:AMQP_UUID:";
const BINARY: &str = "ID:AMQP_BINARY:";
const STRING: &str = "ID:AMQP_STRING:";

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

/// The standard properties shared (under various names) by the three protocols.
///
/// Times are milliseconds since the Unix epoch whatever the source's unit was; `None` means
/// the source did not set the field, which is different from an empty value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties {
    pub message_id: Option<MessageId>,
    pub correlation_id: Option<MessageId>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub reply_to: Option<String>,
    pub priority: Option<u8>,
    pub durable: Option<bool>,
    /// Relative time to live in milliseconds.
    pub ttl_ms: Option<u64>,
    pub absolute_expiry_ms: Option<i64>,
    pub creation_time_ms: Option<i64>,
    /// The 0-9-1 `type` property (JMSType and the 1.0 subject are kept apart in `subject`).
    pub message_type: Option<String>,
    pub user_id: Option<Bytes>,
    pub app_id: Option<String>,
    pub group_id: Option<String>,
    pub group_sequence: Option<u32>,
    pub subject: Option<String>,
    pub to: Option<String>,
    /// The deprecated 0-9-1 `cluster-id`, carried so that pass-through is complete.
    pub cluster_id: Option<String>,
    pub reply_to_group_id: Option<String>,
}

/// What the body is, beyond its bytes. AMQP 1.0 (and JMS) tell text, maps and lists apart
/// from opaque bytes; the other protocols carry only bytes, so the kind travels beside them.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum BodyKind {
    #[default]
    Bytes,
    /// UTF-8 text (an AMQP 1.0 amqp-value string, a JMS TextMessage).
    Text,
    /// A typed map or list, held in `body` as JSON; the shape restores its types.
    Map {
        shape: serde_json::Value,
    },
    List {
        shape: serde_json::Value,
    },
}

impl BodyKind {
    /// The name written beside the body by protocols that only carry bytes.
    pub fn name(&self) -> &'static str {
        match self {
            BodyKind::Bytes => "bytes",
            BodyKind::Text => "text",
            BodyKind::Map { .. } => "map",
            BodyKind::List { .. } => "list",
        }
    }

    /// The shape of a map or list body.
    pub fn shape(&self) -> Option<&serde_json::Value> {
        match self {
            BodyKind::Map { shape } | BodyKind::List { shape } => Some(shape),
            _ => None,
        }
    }

    /// Rebuilds the kind from its name and shape; unknown names mean bytes.
    pub fn from_parts(name: &str, shape: Option<serde_json::Value>) -> BodyKind {
        match (name, shape) {
            ("text", _) => BodyKind::Text,
            ("map", Some(shape)) => BodyKind::Map { shape },
            ("list", Some(shape)) => BodyKind::List { shape },
            _ => BodyKind::Bytes,
        }
    }
}

/// Where the message came from, as the source broker reported it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Origin {
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    pub queue: Option<String>,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<Bytes>,
    pub address: Option<String>,
    pub redelivered: bool,
    pub delivery_count: Option<u32>,
}

impl Origin {
    /// The source coordinates as one line of text, for dead letters and logs.
    pub fn coordinates(&self) -> String {
        match (&self.topic, self.partition, self.offset) {
            (Some(topic), Some(partition), Some(offset)) => {
                format!("kafka:{topic}/{partition}@{offset}")
            }
            _ => match (&self.queue, &self.address) {
                (Some(queue), _) => format!("amqp091:queue/{queue}"),
                (None, Some(address)) => format!("amqp10:{address}"),
                (None, None) => "unknown".to_owned(),
            },
        }
    }
}

/// One message between source and sink.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Envelope {
    /// The payload, reference-counted so that it moves from receive to send without a copy.
    pub body: Bytes,
    /// Kafka distinguishes a null value (a tombstone) from an empty one.
    pub body_is_null: bool,
    pub body_kind: BodyKind,
    pub properties: Properties,
    /// Application headers in source order; Kafka allows a name more than once.
    pub headers: Vec<(String, Value)>,
    pub origin: Origin,
}

impl Envelope {
    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&Value> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_type_through_text() {
        let ids = [
            (MessageId::Ulong(12345), "ID:AMQP_ULONG:12345"),
            (
                MessageId::Binary(Bytes::from_static(&[0xCA, 0xFE, 0xBA, 0xBE])),
                "ID:AMQP_BINARY:CAFEBABE",
            ),
            (
                MessageId::Uuid(uuid::Uuid::nil()),
                "ID:AMQP_UUID:00000000-0000-0000-0000-000000000000",
            ),
            (MessageId::String("order-42".into()), "order-42"),
        ];
        for (id, text) in ids {
            assert_eq!(id.to_text(), text);
            assert_eq!(MessageId::parse(text), id);
        }
        assert_eq!(
            MessageId::parse("ID:AMQP_ULONG:x"),
            MessageId::String("ID:AMQP_ULONG:x".into())
        );
    }
}
