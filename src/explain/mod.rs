//! `portico explain`: what one bridge makes of a message, field by field, with no broker.
//!
//! The message is a sample written in YAML ([`sample`]) or a few real ones peeked at the
//! source ([`live`]). Either way it goes through the bridge's real steps: the source codec
//! reads it, the mapping rules apply, the sink's templates resolve the route, and the sink
//! codec encodes it. [`Explanation`] holds what each step saw and did; [`render`] prints it
//! for people (aligned text) or tools (JSON).

pub mod live;
mod native;
pub mod render;
pub mod sample;
mod sink;

use crate::config::{BridgeModel, SinkModel, SourceModel};
use crate::pipeline::rules::RuleNote;
use crate::pipeline::{Envelope, Note, Route, Value};

/// One field of a message: its path, its type as the protocol names it, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub field: String,
    pub kind: String,
    pub value: String,
}

impl Row {
    fn new(field: impl Into<String>, kind: impl Into<String>, value: impl Into<String>) -> Row {
        Row { field: field.into(), kind: kind.into(), value: value.into() }
    }
}

/// One value that did not cross as it was, and what changed it (a rule or the sink codec).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The envelope field: `properties.NAME`, `headers.NAME`, `body`, `origin.NAME`.
    pub field: String,
    /// `converted`, `coerced`, `dropped`, or what a rule did: `moved`, `renamed`, `set`.
    pub change: String,
    pub from: String,
    pub to: String,
    pub why: String,
}

impl From<&Note> for Change {
    fn from(note: &Note) -> Change {
        Change {
            field: note.field.clone(),
            change: note.kind.name().to_owned(),
            from: note.from.to_string(),
            to: note.to.to_string(),
            why: note.why.to_string(),
        }
    }
}

impl From<RuleNote> for Change {
    fn from(note: RuleNote) -> Change {
        Change {
            field: note.field,
            change: note.change.to_owned(),
            from: note.from,
            to: note.to,
            why: format!("rule {}", note.rule),
        }
    }
}

/// Where the message ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Delivered {
        destination: String,
    },
    DeadLettered {
        /// `translate` (rules or route) or `deliver` (the sink could not encode it).
        stage: &'static str,
        reason: &'static str,
        error: String,
        /// Where the dead letter goes, or what the source does without one.
        destination: String,
    },
}

/// What a bridge makes of one message.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    pub bridge: String,
    /// Which message: the sample's file name, or the source coordinates of a live one.
    pub message: String,
    pub source: String,
    pub sink: String,
    /// The message as the source codec read it.
    pub read: Vec<Row>,
    /// What the sink would send; empty when the message is dead-lettered before encoding.
    pub sent: Vec<Row>,
    pub changes: Vec<Change>,
    pub outcome: Outcome,
}

/// Runs `envelope` through `bridge`'s rules, route and sink codec.
pub fn explain(bridge: &BridgeModel, envelope: &Envelope, message: String) -> Explanation {
    let mut notes = Vec::new();
    let translated = bridge.rules.apply_noting(envelope, Some(&mut notes)).and_then(|outgoing| {
        let outgoing = outgoing.unwrap_or_else(|| envelope.clone());
        let route = bridge.sink.route().resolve(&outgoing)?;
        Ok((outgoing, route))
    });
    let mut explanation = Explanation {
        bridge: bridge.name.clone(),
        message,
        source: describe_source(&bridge.source),
        sink: protocol_of_sink(&bridge.sink).to_owned(),
        read: envelope_rows(envelope),
        sent: Vec::new(),
        changes: notes.into_iter().map(Change::from).collect(),
        outcome: Outcome::Delivered { destination: String::new() },
    };
    let (outgoing, route) = match translated {
        Ok(done) => done,
        Err(error) => {
            explanation.outcome = Outcome::DeadLettered {
                stage: "translate",
                reason: error.reason(),
                error: error.to_string(),
                destination: dead_letter_destination(bridge, envelope),
            };
            return explanation;
        }
    };
    match sink::encode(&bridge.sink, &outgoing, &route, bridge.strict) {
        Ok(encoded) => {
            explanation.sent = encoded.rows;
            explanation.changes.extend(encoded.changes);
            explanation.outcome = Outcome::Delivered { destination: describe_route(&route) };
        }
        Err(error) => {
            explanation.outcome = Outcome::DeadLettered {
                stage: "deliver",
                reason: error.reason(),
                error: error.to_string(),
                destination: dead_letter_destination(bridge, envelope),
            };
        }
    }
    explanation
}

fn describe_source(source: &SourceModel) -> String {
    match source {
        SourceModel::Amqp091 { queue, .. } => format!("amqp091 queue {queue:?}"),
        SourceModel::Kafka { topics, group, .. } => {
            format!("kafka topics {} (group {group:?})", topics.join(", "))
        }
        SourceModel::Amqp10 { connection, name, node, .. } => {
            let (address, _) = crate::amqp10::address(connection.flavor, *node, name);
            format!("amqp10 address {address:?}")
        }
    }
}

fn protocol_of_sink(sink: &SinkModel) -> &'static str {
    match sink {
        SinkModel::Amqp091 { .. } => "amqp091",
        SinkModel::Kafka { .. } => "kafka",
        SinkModel::Amqp10 { .. } => "amqp10",
    }
}

/// A resolved destination in words.
pub fn describe_route(route: &Route) -> String {
    match route {
        Route::Amqp091 { exchange, routing_key } => {
            format!("amqp091 exchange {exchange:?}, routing key {routing_key:?}")
        }
        Route::Kafka { topic, key, partition, .. } => {
            let key = key.as_ref().map_or_else(|| "no key".to_owned(), |k| format!("key {k:?}"));
            let partition = partition.map_or_else(
                || "partition chosen by the key's hash".to_owned(),
                |p| format!("partition {p}"),
            );
            format!("kafka topic {topic:?}, {key}, {partition}")
        }
        Route::Amqp10 { name, node } => format!("amqp10 {} {name:?}", node_name(*node)),
    }
}

fn node_name(node: crate::pipeline::Node) -> &'static str {
    match node {
        crate::pipeline::Node::Queue => "queue",
        crate::pipeline::Node::Topic => "topic",
        crate::pipeline::Node::Address => "address",
    }
}

/// Where a failed message goes: the dead-letter sink, or what the source does without one.
fn dead_letter_destination(bridge: &BridgeModel, original: &Envelope) -> String {
    let fallback = match &bridge.source {
        SourceModel::Amqp091 { .. } => {
            "rejected at the source queue without requeue (the queue's own dead-letter \
             exchange takes it, if it has one)"
        }
        SourceModel::Kafka { .. } => {
            "nowhere: a Kafka source cannot skip a record, so the bridge stops at it"
        }
        SourceModel::Amqp10 { .. } => {
            "settled `rejected` at the source (the broker's dead-letter address takes it, if \
             it has one)"
        }
    };
    match &bridge.dead_letter {
        None => format!("no dead_letter: {fallback}"),
        Some(dl) => match dl.route().resolve(original) {
            Ok(route) => format!("dead_letter {}", describe_route(&route)),
            Err(error) => format!("the dead_letter route fails too ({error}): {fallback}"),
        },
    }
}

/// The envelope's fields, in the names the changes use.
fn envelope_rows(envelope: &Envelope) -> Vec<Row> {
    let mut rows = Vec::new();
    let o = &envelope.origin;
    let mut text = |field: &str, value: &Option<String>| {
        if let Some(v) = value {
            rows.push(Row::new(field, "string", format!("{v:?}")));
        }
    };
    text("origin.exchange", &o.exchange);
    text("origin.routing_key", &o.routing_key);
    text("origin.queue", &o.queue);
    text("origin.topic", &o.topic);
    text("origin.address", &o.address);
    if let Some(p) = o.partition {
        rows.push(Row::new("origin.partition", "i32", p.to_string()));
    }
    if let Some(offset) = o.offset {
        rows.push(Row::new("origin.offset", "i64", offset.to_string()));
    }
    if let Some(key) = &o.key {
        rows.push(Row::new("origin.key", "bytes", show_bytes(key)));
    }
    if o.redelivered {
        rows.push(Row::new("origin.redelivered", "bool", "true"));
    }
    property_rows(envelope, &mut rows);
    for (name, value) in &envelope.headers {
        rows.push(Row::new(format!("headers.{name}"), value.type_name(), show(value)));
    }
    let kind = match &envelope.body_kind {
        crate::pipeline::BodyKind::Map { shape } | crate::pipeline::BodyKind::List { shape } => {
            format!("{} {shape}", envelope.body_kind.name())
        }
        other => other.name().to_owned(),
    };
    let body = if envelope.body_is_null { "null".to_owned() } else { show_body(&envelope.body) };
    rows.push(Row::new("body", kind, body));
    rows
}

fn property_rows(envelope: &Envelope, rows: &mut Vec<Row>) {
    let p = &envelope.properties;
    let mut push = |name: &str, kind: &str, value: Option<String>| {
        if let Some(value) = value {
            rows.push(Row::new(format!("properties.{name}"), kind, value));
        }
    };
    let quoted = |v: &Option<String>| v.as_ref().map(|v| format!("{v:?}"));
    let id = |v: &Option<crate::pipeline::MessageId>| v.as_ref().map(show_id);
    let id_kind = |v: &Option<crate::pipeline::MessageId>| match v {
        Some(crate::pipeline::MessageId::Ulong(_)) => "ulong",
        Some(crate::pipeline::MessageId::Uuid(_)) => "uuid",
        Some(crate::pipeline::MessageId::Binary(_)) => "binary",
        _ => "string",
    };
    push("message_id", id_kind(&p.message_id), id(&p.message_id));
    push("correlation_id", id_kind(&p.correlation_id), id(&p.correlation_id));
    push("content_type", "string", quoted(&p.content_type));
    push("content_encoding", "string", quoted(&p.content_encoding));
    push("reply_to", "string", quoted(&p.reply_to));
    push("priority", "u8", p.priority.map(|n| n.to_string()));
    push("durable", "bool", p.durable.map(|d| d.to_string()));
    push("ttl", "ms", p.ttl_ms.map(|n| n.to_string()));
    push("absolute_expiry_time", "timestamp (ms)", p.absolute_expiry_ms.map(|n| n.to_string()));
    push("creation_time", "timestamp (ms)", p.creation_time_ms.map(|n| n.to_string()));
    push("type", "string", quoted(&p.message_type));
    push("user_id", "bytes", p.user_id.as_ref().map(|u| show_bytes(u)));
    push("app_id", "string", quoted(&p.app_id));
    push("group_id", "string", quoted(&p.group_id));
    push("group_sequence", "u32", p.group_sequence.map(|n| n.to_string()));
    push("subject", "string", quoted(&p.subject));
    push("to", "string", quoted(&p.to));
    push("cluster_id", "string", quoted(&p.cluster_id));
    push("reply_to_group_id", "string", quoted(&p.reply_to_group_id));
}

fn show_id(id: &crate::pipeline::MessageId) -> String {
    match id {
        crate::pipeline::MessageId::String(s) => format!("{s:?}"),
        crate::pipeline::MessageId::Ulong(n) => n.to_string(),
        crate::pipeline::MessageId::Uuid(u) => u.to_string(),
        crate::pipeline::MessageId::Binary(b) => hex(b),
    }
}

/// A value as the tables show it: text quoted, bytes as text when UTF-8 else hex, lists and
/// maps as JSON.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Bytes(b) => show_bytes(b),
        Value::Null => "null".to_owned(),
        other => other.to_template_text().unwrap_or_default(),
    }
}

/// Bytes as quoted text when they are printable UTF-8, else as hex.
pub fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
            format!("{text:?}")
        }
        _ => hex(bytes),
    }
}

fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("hex {digits}")
}

/// A body: its size, then its start as text or hex.
pub fn show_body(body: &[u8]) -> String {
    const SHOWN: usize = 64;
    let head = &body[..body.len().min(SHOWN)];
    let more = if body.len() > SHOWN { " …" } else { "" };
    let bytes = if body.len() == 1 { "byte" } else { "bytes" };
    if body.is_empty() {
        return "0 bytes".to_owned();
    }
    // A cut inside a UTF-8 sequence is not an encoding error of the body.
    let text = match std::str::from_utf8(head) {
        Ok(text) => Some(text),
        Err(e) if e.error_len().is_none() && !more.is_empty() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    match text.filter(|t| !t.chars().any(|c| c.is_control() && c != '\n' && c != '\t')) {
        Some(text) => format!("{} {bytes}: {text:?}{more}", body.len()),
        None => format!("{} {bytes}: {}{more}", body.len(), hex(head)),
    }
}
