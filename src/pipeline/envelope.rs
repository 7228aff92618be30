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
    /// The id as text, for templates and for targets that only hold strings.
    pub fn to_text(&self) -> String {
        match self {
            MessageId::String(s) => s.clone(),
            MessageId::Ulong(n) => n.to_string(),
            MessageId::Uuid(u) => format!("urn:uuid:{u}"),
            MessageId::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        }
    }
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

    /// Removes and returns the first header with this name.
    pub fn take_header(&mut self, name: &str) -> Option<Value> {
        let at = self.headers.iter().position(|(n, _)| n == name)?;
        Some(self.headers.remove(at).1)
    }
}
