//! AMQP 1.0 messages to envelopes and back, with the JMS conventions of Qpid JMS.
//!
//! Sections map as follows. `header` and `properties` fill the envelope's properties (the
//! JMS headers live there: JMSDeliveryMode is `durable`, JMSPriority `priority`, JMSType
//! `subject`, JMSTimestamp `creation-time`). `application-properties` become headers under
//! their own names; `message-annotations` become headers under their `x-` names, so that a
//! header named `x-…` goes back into the annotations. Application properties may only hold
//! simple values: a list, a map or a decimal is written as its text and its type recorded in
//! the `x-opt-portico-types` annotation, which restores it on the way back.
//!
//! The body keeps its kind: `data` sections are bytes, an `amqp-value` string is text, an
//! `amqp-value` map or list (JMS Map and Stream messages) travels as JSON with its shape.
//! Delivery annotations are hop-by-hop and stop here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    AmqpSequence, AmqpValue, ApplicationProperties, Body, Data, Header, Message,
    MessageAnnotations, MessageId as AmqpId, Properties as AmqpProperties,
};
use fe2o3_amqp::types::primitives::{
    Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Uuid as AmqpUuid, Value as AmqpValueT,
};
use serde_json::Value as Json;

use super::values::{from_amqp, from_simple, to_amqp, to_simple};
use crate::pipeline::ledger::Field;
use crate::pipeline::value::{occurrences, repeated};
use crate::pipeline::{BodyKind, Envelope, Ledger, MessageId, Origin, Properties, Value, carry};

/// The annotation holding the types of application properties written as text.
pub const TYPES_ANNOTATION: &str = "x-opt-portico-types";
/// The annotation mapping JMS-legal property names back to the names they stand for.
pub const NAMES_ANNOTATION: &str = "x-opt-portico-names";
/// Says that the subject holds the 0-9-1 `type` (JMSType), so that it returns there.
pub const SUBJECT_ANNOTATION: &str = "x-opt-portico-subject";
/// Qpid JMS message type annotation (AMQP byte).
pub const JMS_MSG_TYPE: &str = "x-opt-jms-msg-type";
/// Qpid JMS destination type annotation (AMQP byte: 0 queue, 1 topic).
pub const JMS_DEST: &str = "x-opt-jms-dest";

/// Qpid JMS reply-to type annotation (AMQP byte: 0 queue, 1 topic).
pub const JMS_REPLY_TO: &str = "x-opt-jms-reply-to";

/// JMS message types, as `x-opt-jms-msg-type` numbers them.
const JMS_MAP: i8 = 2;
const JMS_BYTES: i8 = 3;
const JMS_STREAM: i8 = 4;
const JMS_TEXT: i8 = 5;

/// The message type fe2o3 decodes into: any body.
pub type AmqpMessage = Message<Body<AmqpValueT>>;

/// How the peer reads messages: plain AMQP 1.0, or a JMS broker that needs the Qpid JMS
/// annotations and JMS-legal property values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub jms: bool,
    /// `Some(true)` for a topic, `Some(false)` for a queue, when the route says.
    pub topic: Option<bool>,
}

impl Target {
    /// How a broker of `flavor` reads messages sent to a `node`.
    pub fn of(flavor: crate::config::model::Flavor, node: crate::pipeline::Node) -> Target {
        Target {
            jms: flavor.jms(),
            topic: match node {
                crate::pipeline::Node::Queue => Some(false),
                crate::pipeline::Node::Topic => Some(true),
                crate::pipeline::Node::Address => None,
            },
        }
    }
}

/// Decodes one received message.
pub fn decode(message: AmqpMessage, address: &str) -> Envelope {
    let mut envelope = Envelope::default();
    let annotation_map = |name: &str| -> serde_json::Map<String, Json> {
        let annotations = message.message_annotations.as_ref();
        match annotations.and_then(|a| a.0.get(&OwnedKey::Symbol(Symbol::from(name)))) {
            Some(AmqpValueT::String(t) | AmqpValueT::Symbol(Symbol(t))) => {
                serde_json::from_str(t).unwrap_or_default()
            }
            _ => serde_json::Map::new(),
        }
    };
    let types = annotation_map(TYPES_ANNOTATION);
    let renamed = annotation_map(NAMES_ANNOTATION);
    decode_header(message.header.as_ref(), &mut envelope);
    if let Some(p) = message.properties {
        decode_properties(p, &mut envelope.properties);
    }
    let mut subject_is_type = false;
    if let Some(annotations) = message.message_annotations {
        for (key, value) in annotations.0 {
            let name = match key {
                OwnedKey::Symbol(Symbol(s)) => s,
                OwnedKey::Ulong(n) => n.to_string(),
            };
            if name == TYPES_ANNOTATION || name == NAMES_ANNOTATION {
                continue;
            }
            if name == SUBJECT_ANNOTATION {
                subject_is_type = matches!(&value, AmqpValueT::String(s) if s == "type");
                continue;
            }
            let value = from_amqp(&value);
            match (types.get(&name), value) {
                (Some(shape), value) if occurrences(shape).is_some() => {
                    let each = occurrences(shape).and_then(|list| value.restore(&list));
                    match each {
                        Some(Value::List(each)) => {
                            envelope.headers.extend(each.into_iter().map(|v| (name.clone(), v)));
                        }
                        _ => envelope.headers.push((name, value)),
                    }
                }
                (Some(shape), value) => {
                    let value = value.restore(shape).unwrap_or(value);
                    envelope.headers.push((name, value));
                }
                (None, value) => envelope.headers.push((name, value)),
            }
        }
    }
    if let Some(props) = message.application_properties {
        for (name, value) in props.0 {
            let value = from_simple(&value);
            let shape = types.get(&name);
            let name = match renamed.get(&name) {
                Some(Json::String(original)) => original.clone(),
                _ => name,
            };
            if let (Some(list), Value::String(text)) = (shape.and_then(occurrences), &value) {
                if let Ok(Value::List(each)) = Value::from_text(text.as_bytes(), Some(&list)) {
                    envelope.headers.extend(each.into_iter().map(|v| (name.clone(), v)));
                    continue;
                }
            }
            let value = match (shape, &value) {
                (Some(shape), Value::String(text)) => {
                    Value::from_text(text.as_bytes(), Some(shape)).unwrap_or(value)
                }
                // A JMS property widened from an unsigned type.
                (Some(shape), _) => value.restore(shape).unwrap_or(value),
                _ => value,
            };
            if !(name.starts_with("amqp.") && carry::absorb(&mut envelope, &name, &value)) {
                envelope.headers.push((name, value));
            }
        }
    }
    if subject_is_type {
        let p = &mut envelope.properties;
        p.message_type = p.subject.take();
    }
    let (body, kind) = decode_body(message.body);
    envelope.body = body;
    envelope.body_kind = kind;
    envelope.origin = Origin { address: Some(address.to_owned()), ..envelope.origin };
    envelope
}

fn decode_header(header: Option<&Header>, envelope: &mut Envelope) {
    let p = &mut envelope.properties;
    match header {
        // No header section means the spec defaults: not durable, priority 4.
        None => p.durable = Some(false),
        Some(h) => {
            p.durable = Some(h.durable);
            p.priority = Some(h.priority.0);
            p.ttl_ms = h.ttl.map(u64::from);
            envelope.origin.delivery_count = Some(h.delivery_count);
            envelope.origin.redelivered = h.delivery_count > 0;
        }
    }
}

fn decode_properties(p: AmqpProperties, out: &mut Properties) {
    out.message_id = p.message_id.map(from_id);
    out.correlation_id = p.correlation_id.map(from_id);
    out.user_id = p.user_id.map(|b| Bytes::from(b.into_vec()));
    out.to = p.to;
    out.subject = p.subject;
    out.reply_to = p.reply_to;
    out.content_type = p.content_type.map(|s| s.0);
    out.content_encoding = p.content_encoding.map(|s| s.0);
    // Zero means "not set" for JMS (JMSExpiration 0 = never, JMSTimestamp 0 = unset).
    out.absolute_expiry_ms = p.absolute_expiry_time.map(|t| t.milliseconds()).filter(|ms| *ms > 0);
    out.creation_time_ms = p.creation_time.map(|t| t.milliseconds()).filter(|ms| *ms != 0);
    out.group_id = p.group_id;
    out.group_sequence = p.group_sequence;
    out.reply_to_group_id = p.reply_to_group_id;
}

fn decode_body(body: Body<AmqpValueT>) -> (Bytes, BodyKind) {
    match body {
        Body::Data(sections) => {
            // The usual single section keeps its buffer; further sections are appended to it.
            let mut sections = sections.into_iter();
            let first = sections.next().map(|Data(first)| first.into_vec()).unwrap_or_default();
            let bytes = sections.fold(first, |mut all, Data(more)| {
                all.extend_from_slice(more.as_slice());
                all
            });
            (Bytes::from(bytes), BodyKind::Bytes)
        }
        Body::Value(AmqpValue(value)) => match value {
            AmqpValueT::String(s) => (Bytes::from(s), BodyKind::Text),
            AmqpValueT::Binary(b) => (Bytes::from(b.into_vec()), BodyKind::Bytes),
            AmqpValueT::Null => (Bytes::new(), BodyKind::Bytes),
            other => structured(from_amqp(&other)),
        },
        Body::Sequence(sections) => {
            let items = sections.into_iter().flat_map(|AmqpSequence(items)| items);
            structured(Value::List(items.map(|v| from_amqp(&v)).collect()))
        }
        Body::Empty => (Bytes::new(), BodyKind::Bytes),
    }
}

/// A map or list body as JSON text plus its shape; a scalar as its text.
fn structured(value: Value) -> (Bytes, BodyKind) {
    let shape = value.shape().unwrap_or(Json::Null);
    let text = value.to_text().unwrap_or_default();
    let kind = match value {
        Value::Map(_) => BodyKind::Map { shape },
        Value::List(_) => BodyKind::List { shape },
        _ => BodyKind::Text,
    };
    (text, kind)
}

/// Encodes an envelope for sending to `target`, writing into `ledger` every value that does
/// not cross as it was.
pub fn encode(envelope: &Envelope, target: Target, to: &str, ledger: &mut Ledger) -> AmqpMessage {
    let p = &envelope.properties;
    let max_priority = if target.jms { 9 } else { u8::MAX };
    if p.priority.is_some_and(|n| n > max_priority) {
        ledger.coerced(
            Field::Property("priority"),
            "priority above 9",
            "9",
            "JMS priorities are 0-9",
        );
    }
    if p.ttl_ms.is_some_and(|t| u32::try_from(t).is_err()) {
        ledger.coerced(
            Field::Property("ttl"),
            "ttl over 2^32-1 ms",
            "ttl 2^32-1 ms (about 49 days)",
            "an AMQP 1.0 ttl is a uint",
        );
    }
    if envelope.body_is_null {
        ledger.coerced(
            Field::Origin("tombstone"),
            "null value",
            "empty data section",
            "an AMQP 1.0 body is never null",
        );
    }
    let header = Header {
        durable: p.durable.unwrap_or(false),
        priority: p.priority.unwrap_or(4).min(max_priority).into(),
        // A uint holds about 49 days of milliseconds; a longer TTL is capped there rather
        // than dropped (which would mean "never expires").
        ttl: p.ttl_ms.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
        first_acquirer: false,
        delivery_count: 0,
    };
    let mut annotations = OrderedMap::new();
    let mut app = OrderedMap::new();
    let mut types = serde_json::Map::new();
    let mut renamed = serde_json::Map::new();
    // Only JMS targets rename properties; other targets skip building this set.
    let names = envelope.headers.iter().map(|(n, _)| n.as_str());
    let legal: std::collections::HashSet<&str> =
        names.filter(|n| target.jms && is_java_identifier(n)).collect();
    for (i, (name, value)) in envelope.headers.iter().enumerate() {
        if envelope.headers[..i].iter().any(|(n, _)| n == name) {
            continue; // a later value of a repeated name, carried with the first
        }
        let grouped = repeated_values(name, value, &envelope.headers[i + 1..]);
        if grouped.is_some() {
            ledger.converted(
                Field::Header(name),
                "a name repeated",
                "one list + x-opt-portico-types",
                UNIQUE,
            );
        }
        let value = grouped.as_ref().unwrap_or(value);
        if name.starts_with("x-") {
            annotations.insert(OwnedKey::Symbol(Symbol::from(name.as_str())), to_amqp(value));
            if let Some(Value::List(each)) = &grouped {
                types.insert(name.clone(), repeated(each.iter()));
            } else if has_decimal(value) {
                // AMQP 1.0 decimals are another encoding: the value goes as its text.
                types.insert(name.clone(), value.shape().unwrap_or(Json::Null));
            }
            continue;
        }
        let key = if target.jms && !is_java_identifier(name) {
            ledger.converted(
                Field::Header(name),
                "name",
                "JMS identifier + x-opt-portico-names",
                "JMS property names are Java identifiers",
            );
            let escaped = jms_name(name, |n| legal.contains(n) || renamed.contains_key(n));
            renamed.insert(escaped.clone(), Json::String(name.clone()));
            escaped
        } else {
            name.clone()
        };
        match (to_simple(value, target.jms), &grouped) {
            (Some(simple), None) => {
                if target.jms && matches!(value, Value::U8(_) | Value::U16(_) | Value::U32(_)) {
                    // JMS has no unsigned types: widened, with the type kept beside it.
                    types.insert(key.clone(), value.shape().unwrap_or(Json::Null));
                }
                app.insert(key, simple)
            }
            (_, grouped) => {
                if grouped.is_none() {
                    ledger.converted(
                        Field::Header(name),
                        value.type_name(),
                        "string + x-opt-portico-types",
                        "application properties hold simple values only",
                    );
                }
                let (text, shape) = as_text(value);
                let shape = match grouped {
                    Some(Value::List(each)) => repeated(each.iter()),
                    _ => shape,
                };
                types.insert(key.clone(), shape);
                app.insert(key, SimpleValue::String(text))
            }
        };
    }
    // 0-9-1 properties with no 1.0 field travel as application properties, restored later.
    let subject_from_type = target.jms && p.subject.is_none();
    // A content type or encoding a symbol cannot hold (not ASCII) travels the same way.
    let not_ascii = |v: &&String| !v.is_ascii();
    let carried = [
        ("amqp.app-id", p.app_id.as_ref()),
        ("amqp.type", p.message_type.as_ref().filter(|_| !subject_from_type)),
        ("amqp.cluster-id", p.cluster_id.as_ref()),
        ("amqp.content-type", p.content_type.as_ref().filter(not_ascii)),
        ("amqp.content-encoding", p.content_encoding.as_ref().filter(not_ascii)),
    ];
    for (name, value) in carried {
        if let Some(value) = value {
            let key =
                if target.jms { jms_name(name, |n| app.contains_key(n)) } else { name.into() };
            if key != name {
                renamed.insert(key.clone(), Json::String(name.to_owned()));
            }
            app.insert(key, SimpleValue::String(value.clone()));
        }
    }
    if subject_from_type && p.message_type.is_some() {
        let key = OwnedKey::Symbol(Symbol::from(SUBJECT_ANNOTATION));
        annotations.insert(key, AmqpValueT::String("type".to_owned()));
    }
    add_origin(&mut annotations, envelope);
    for (annotation, map) in [(TYPES_ANNOTATION, types), (NAMES_ANNOTATION, renamed)] {
        if !map.is_empty() {
            let key = OwnedKey::Symbol(Symbol::from(annotation));
            annotations.insert(key, AmqpValueT::String(Json::Object(map).to_string()));
        }
    }
    let body = encode_body(envelope, ledger);
    if target.jms {
        let kind = match &body {
            Body::Value(AmqpValue(AmqpValueT::String(_))) => JMS_TEXT,
            Body::Value(AmqpValue(AmqpValueT::Map(_))) => JMS_MAP,
            Body::Value(AmqpValue(AmqpValueT::List(_))) => JMS_STREAM,
            // Qpid JMS reads a data section with a textual content type as text.
            _ if utf8_text(envelope) => JMS_TEXT,
            _ => JMS_BYTES,
        };
        let key = OwnedKey::Symbol(Symbol::from(JMS_MSG_TYPE));
        annotations.as_inner_mut().entry(key).or_insert(AmqpValueT::Byte(kind));
        if let Some(topic) = target.topic {
            let key = OwnedKey::Symbol(Symbol::from(JMS_DEST));
            annotations.as_inner_mut().entry(key).or_insert(AmqpValueT::Byte(i8::from(topic)));
        }
        // JMSReplyTo needs its destination type; only a `topic://` address says topic.
        if let Some(reply_to) = &p.reply_to {
            let topic = reply_to.starts_with("topic://");
            let key = OwnedKey::Symbol(Symbol::from(JMS_REPLY_TO));
            annotations.as_inner_mut().entry(key).or_insert(AmqpValueT::Byte(i8::from(topic)));
        }
    }
    Message {
        header: Some(header),
        delivery_annotations: None,
        message_annotations: (!annotations.is_empty()).then_some(MessageAnnotations(annotations)),
        properties: Some(encode_properties(p, target, to, ledger)),
        application_properties: (!app.is_empty()).then_some(ApplicationProperties(app)),
        body,
        footer: None,
    }
}

const UNIQUE: &str = "AMQP 1.0 properties and annotations hold a name once";

/// A bytes body that says it is UTF-8 text: a textual content type, a charset (in the
/// content type or, as 0-9-1 publishers often put it, the content encoding) that is UTF-8
/// or absent, and bytes that decode. A compressed body (`gzip`) stays bytes.
fn utf8_text(envelope: &Envelope) -> bool {
    let p = &envelope.properties;
    let Some(content_type) = p.content_type.as_deref().map(str::to_ascii_lowercase) else {
        return false;
    };
    let (mime, params) = content_type.split_once(';').unwrap_or((&content_type, ""));
    let mime = mime.trim();
    let textual = mime.starts_with("text/")
        || ["application/json", "application/xml", "application/javascript"].contains(&mime)
        || mime.ends_with("+json")
        || mime.ends_with("+xml");
    let utf8 = |c: &str| matches!(c.trim().trim_matches('"'), "utf-8" | "utf8");
    let charset = params.split(';').find_map(|p| p.trim().strip_prefix("charset="));
    let encoding_ok = match p.content_encoding.as_deref().map(str::to_ascii_lowercase) {
        None => true,
        Some(e) => utf8(&e),
    };
    textual
        && charset.is_none_or(utf8)
        && encoding_ok
        && std::str::from_utf8(&envelope.body).is_ok()
}

fn has_decimal(value: &Value) -> bool {
    match value {
        Value::Decimal { .. } => true,
        Value::List(items) => items.iter().any(has_decimal),
        Value::Map(entries) => entries.iter().any(|(_, v)| has_decimal(v)),
        _ => false,
    }
}

/// All values of a name that repeats (Kafka allows it), as one list; `None` when `name`
/// does not occur again in `rest`.
fn repeated_values(name: &str, first: &Value, rest: &[(String, Value)]) -> Option<Value> {
    let mut more = rest.iter().filter(|(n, _)| n == name).map(|(_, v)| v).peekable();
    more.peek()?;
    Some(Value::List(std::iter::once(first).chain(more).cloned().collect()))
}

fn encode_properties(
    p: &Properties,
    target: Target,
    to: &str,
    ledger: &mut Ledger,
) -> AmqpProperties {
    for (field, value) in
        [("content_type", &p.content_type), ("content_encoding", &p.content_encoding)]
    {
        if value.as_ref().is_some_and(|v| !v.is_ascii()) {
            ledger.converted(
                Field::Property(field),
                "text that is not ASCII",
                "application property amqp.content-…",
                "an AMQP 1.0 symbol is ASCII",
            );
        }
    }
    // JMS reads JMSType from the subject; 0-9-1's `type` is the same idea.
    let subject = match (&p.subject, target.jms) {
        (Some(s), _) => Some(s.clone()),
        (None, true) => {
            if p.message_type.is_some() {
                ledger.converted(
                    Field::Property("message_type"),
                    "0-9-1 type",
                    "subject (JMSType)",
                    "JMS reads its type from the subject",
                );
            }
            p.message_type.clone()
        }
        (None, false) => None,
    };
    AmqpProperties {
        message_id: p.message_id.as_ref().map(to_id),
        user_id: p.user_id.as_ref().map(|u| Binary::from(u.to_vec())),
        to: Some(p.to.clone().unwrap_or_else(|| to.to_owned())),
        subject,
        reply_to: p.reply_to.clone(),
        correlation_id: p.correlation_id.as_ref().map(to_id),
        content_type: p
            .content_type
            .as_ref()
            .filter(|c| c.is_ascii())
            .map(|c| Symbol::from(c.as_str())),
        content_encoding: p
            .content_encoding
            .as_ref()
            .filter(|c| c.is_ascii())
            .map(|c| Symbol::from(c.as_str())),
        absolute_expiry_time: p.absolute_expiry_ms.map(Timestamp::from_milliseconds),
        creation_time: p.creation_time_ms.map(Timestamp::from_milliseconds),
        group_id: p.group_id.clone(),
        group_sequence: p.group_sequence,
        reply_to_group_id: p.reply_to_group_id.clone(),
    }
}

/// Where the message came from, as annotations a 1.0 consumer can read.
fn add_origin(annotations: &mut OrderedMap<OwnedKey, AmqpValueT>, envelope: &Envelope) {
    let o = &envelope.origin;
    let mut put = |key: &str, value: AmqpValueT| {
        annotations.as_inner_mut().entry(OwnedKey::Symbol(Symbol::from(key))).or_insert(value);
    };
    if let Some(topic) = &o.topic {
        put("x-opt-kafka-topic", AmqpValueT::String(topic.clone()));
        if let Some(partition) = o.partition {
            put("x-opt-kafka-partition", AmqpValueT::Int(partition));
        }
        if let Some(offset) = o.offset {
            put("x-opt-kafka-offset", AmqpValueT::Long(offset));
        }
        if let Some(key) = &o.key {
            put("x-opt-kafka-key", bytes_or_text(key));
        }
    }
    if o.queue.is_some() {
        if let Some(exchange) = &o.exchange {
            put("x-opt-amqp-exchange", AmqpValueT::String(exchange.clone()));
        }
        if let Some(key) = &o.routing_key {
            put("x-opt-amqp-routing-key", AmqpValueT::String(key.clone()));
        }
    }
}

fn encode_body(envelope: &Envelope, ledger: &mut Ledger) -> Body<AmqpValueT> {
    let data = || Body::Data(vec![Data(Binary::from(envelope.body.to_vec()))].into());
    let kind = envelope.body_kind.name();
    match &envelope.body_kind {
        BodyKind::Text => match std::str::from_utf8(&envelope.body) {
            Ok(text) => Body::Value(AmqpValue(AmqpValueT::String(text.to_owned()))),
            Err(_) => {
                ledger.coerced(
                    Field::Body,
                    "text that is not UTF-8",
                    "data section",
                    "an AMQP 1.0 string is UTF-8",
                );
                data()
            }
        },
        BodyKind::Map { shape } | BodyKind::List { shape } => {
            match Value::from_text(&envelope.body, Some(shape)) {
                Ok(value) => Body::Value(AmqpValue(to_amqp(&value))),
                Err(_) => {
                    ledger.coerced(
                        Field::Body,
                        kind,
                        "data section",
                        "the body does not match its recorded types",
                    );
                    data()
                }
            }
        }
        // An empty payload is an empty data section, never amqp-value(null): that would read
        // as a TextMessage(null) to a JMS consumer.
        BodyKind::Bytes => data(),
    }
}

/// JMS property names are Java identifiers, and not JMS's own reserved words.
fn is_java_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let start = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$');
    let reserved = ["NULL", "TRUE", "FALSE", "NOT", "AND", "OR", "BETWEEN", "LIKE", "IN", "IS"]
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name));
    start && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$') && !reserved
}

/// A JMS-legal stand-in for `name`: illegal characters become `_`, and a suffix keeps it
/// apart from names already `taken`. The original is recorded beside it and restored.
fn jms_name(name: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut base: String =
        name.chars().map(|c| if c.is_alphanumeric() || c == '$' { c } else { '_' }).collect();
    if !base.starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '$') {
        base.insert(0, '_');
    }
    let mut candidate = base.clone();
    let mut n = 1;
    while taken(&candidate) || !is_java_identifier(&candidate) {
        candidate = format!("{base}_{n}");
        n += 1;
    }
    candidate
}

/// A value an application property cannot hold, as a string and the shape that restores it.
/// Bytes go as base64: raw bytes need not be valid UTF-8.
fn as_text(value: &Value) -> (String, Json) {
    match value {
        Value::Bytes(b) => (BASE64.encode(b), Json::String("base64".to_owned())),
        other => {
            let text = other.to_text().unwrap_or_default();
            let shape = other.shape().unwrap_or(Json::Null);
            (String::from_utf8_lossy(&text).into_owned(), shape)
        }
    }
}

fn bytes_or_text(bytes: &[u8]) -> AmqpValueT {
    match std::str::from_utf8(bytes) {
        Ok(s) => AmqpValueT::String(s.to_owned()),
        Err(_) => AmqpValueT::Binary(bytes.to_vec().into()),
    }
}

fn from_id(id: AmqpId) -> MessageId {
    match id {
        AmqpId::String(s) => MessageId::String(s),
        AmqpId::Ulong(n) => MessageId::Ulong(n),
        AmqpId::Uuid(u) => MessageId::Uuid(uuid::Uuid::from_bytes(u.into_inner())),
        AmqpId::Binary(b) => MessageId::Binary(Bytes::from(b.into_vec())),
    }
}

fn to_id(id: &MessageId) -> AmqpId {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn jms() -> Target {
        Target { jms: true, topic: Some(false) }
    }

    #[test]
    fn binary_properties_survive_a_jms_hop_as_text() {
        // R2A-10, K2A-04
        let mut env = Envelope::default();
        env.headers.push(("sig".into(), Value::Bytes(Bytes::from_static(&[0x01, 0xFF, 0x00]))));
        env.headers.push(("k".into(), Value::String("v".into())));
        let message = encode(&env, jms(), "queue://q", &mut Ledger::all());
        let props = message.application_properties.as_ref().expect("app props");
        assert_eq!(props.0.get("sig"), Some(&SimpleValue::String("Af8A".into())));
        let back = decode(message, "queue://q");
        assert_eq!(
            back.header("sig"),
            Some(&Value::Bytes(Bytes::from_static(&[0x01, 0xFF, 0x00])))
        );
        assert_eq!(back.header("k"), Some(&Value::String("v".into())));
    }

    #[test]
    fn jms_priority_is_clamped_and_the_type_annotations_are_bytes() {
        // R2A-03, R2A-13
        let mut env = Envelope { body: Bytes::from_static(b"hi"), ..Envelope::default() };
        env.body_kind = BodyKind::Text;
        env.properties.priority = Some(200);
        let message = encode(&env, jms(), "queue://q.in", &mut Ledger::all());
        assert_eq!(message.header.as_ref().map(|h| h.priority.0), Some(9));
        let annotations = message.message_annotations.as_ref().expect("annotations");
        let get = |k: &str| annotations.0.get(&OwnedKey::Symbol(Symbol::from(k))).cloned();
        assert_eq!(get(JMS_MSG_TYPE), Some(AmqpValueT::Byte(5)));
        assert_eq!(get(JMS_DEST), Some(AmqpValueT::Byte(0)));
        assert_eq!(get(JMS_REPLY_TO), None, "no reply-to, no reply-to type");
        assert!(
            matches!(message.body, Body::Value(AmqpValue(AmqpValueT::String(ref s))) if s == "hi")
        );
    }

    #[test]
    fn names_that_are_not_jms_identifiers_are_escaped_and_restored() {
        // R2A-12
        let mut env = Envelope::default();
        env.headers.push(("customer-id".into(), Value::String("c-1".into())));
        env.headers.push(("customer_id".into(), Value::String("other".into())));
        env.headers.push(("9lives".into(), Value::I32(9)));
        let message = encode(&env, jms(), "queue://q", &mut Ledger::all());
        let props = message.application_properties.as_ref().expect("app props");
        let names: Vec<&String> = props.0.keys().collect();
        assert_eq!(names, ["customer_id_1", "customer_id", "_9lives"]);
        assert!(names.iter().all(|n| is_java_identifier(n)));
        let back = decode(message, "queue://q");
        let app: Vec<_> = back.headers.into_iter().filter(|(n, _)| !n.starts_with("x-")).collect();
        assert_eq!(app, env.headers);
    }

    #[test]
    fn a_topic_reply_to_is_marked_for_jms() {
        // R2A-08
        let mut env = Envelope::default();
        env.properties.reply_to = Some("topic://t.replies".into());
        let message = encode(&env, jms(), "queue://q.in", &mut Ledger::all());
        let annotations = message.message_annotations.expect("annotations");
        let key = OwnedKey::Symbol(Symbol::from(JMS_REPLY_TO));
        assert_eq!(annotations.0.get(&key), Some(&AmqpValueT::Byte(1)));
    }

    #[test]
    fn a_data_body_keeps_its_buffer_and_sections_are_joined() {
        let one = Envelope { body: Bytes::from(vec![7u8; 1024]), ..Envelope::default() };
        let message = encode(&one, Target { jms: false, topic: None }, "a", &mut Ledger::all());
        let Body::Data(sections) = &message.body else { panic!("expected a data body") };
        let at = sections.iter().next().map(|d| d.0.as_slice().as_ptr());
        let decoded = decode(message, "a");
        assert_eq!(Some(decoded.body.as_ptr()), at, "one section moves without a copy");
        assert_eq!(decoded.body.len(), 1024);

        let mut two = encode(
            &Envelope::default(),
            Target { jms: false, topic: None },
            "a",
            &mut Ledger::all(),
        );
        let parts = [Data(Binary::from(b"ab".to_vec())), Data(Binary::from(b"cd".to_vec()))];
        two.body = Body::Data(parts.into_iter().collect::<Vec<_>>().into());
        assert_eq!(&decode(two, "a").body[..], b"abcd");
    }

    #[test]
    fn an_empty_body_is_an_empty_data_section() {
        // R2A-01
        let message = encode(
            &Envelope::default(),
            Target { jms: false, topic: None },
            "a",
            &mut Ledger::all(),
        );
        match message.body {
            Body::Data(sections) => assert_eq!(sections.len(), 1),
            other => panic!("expected one data section, got {other:?}"),
        }
    }

    #[test]
    fn a_repeated_name_travels_as_one_value_and_comes_back_apart() {
        // K2A-06
        let env = Envelope {
            headers: vec![
                ("tag".into(), Value::String("a".into())),
                ("x-seen".into(), Value::I64(1)),
                ("tag".into(), Value::I32(1)),
                ("tag-id".into(), Value::Bytes(Bytes::from_static(&[0xFF]))),
                ("x-seen".into(), Value::String("b".into())),
                ("tag-id".into(), Value::U64(u64::MAX)),
            ],
            ..Envelope::default()
        };
        for target in [jms(), Target { jms: false, topic: None }] {
            let mut ledger = Ledger::all();
            let message = encode(&env, target, "q", &mut ledger);
            assert_eq!(ledger.lossy_notes().count(), 0, "{:?}", ledger.notes());
            let back = decode(message, "q");
            // The JMS annotations describe this hop, not the message.
            let mut got: Vec<_> =
                back.headers.into_iter().filter(|(n, _)| !n.starts_with("x-opt-jms-")).collect();
            let mut want = env.headers.clone();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            want.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, want, "jms: {}", target.jms);
        }
    }

    #[test]
    fn a_content_type_a_symbol_cannot_hold_travels_as_a_property() {
        // R2A-07
        let mut env = Envelope::default();
        env.properties.content_type = Some("text/plain; name=ключ".into());
        env.properties.content_encoding = Some("¡".into());
        for target in [jms(), Target { jms: false, topic: None }] {
            let mut ledger = Ledger::lossy();
            let back = decode(encode(&env, target, "q", &mut ledger), "q");
            assert_eq!(ledger.notes(), &[]);
            assert_eq!(back.properties.content_type, env.properties.content_type);
            assert_eq!(back.properties.content_encoding, env.properties.content_encoding);
            assert!(
                back.headers.iter().all(|(n, _)| n.starts_with("x-opt-")),
                "{:?}",
                back.headers
            );
        }
    }

    #[test]
    fn a_091_type_sent_as_jms_subject_comes_back_as_the_type() {
        // R2A-09
        let mut env = Envelope::default();
        env.properties.message_type = Some("order.created".into());
        let message = encode(&env, jms(), "q", &mut Ledger::lossy());
        let subject = message.properties.as_ref().and_then(|p| p.subject.clone());
        assert_eq!(subject.as_deref(), Some("order.created"));
        let back = decode(message, "q");
        assert_eq!(back.properties.message_type.as_deref(), Some("order.created"));
        assert_eq!(back.properties.subject, None);
    }

    #[test]
    fn unsigned_jms_properties_and_annotation_decimals_keep_their_type() {
        // R2A-10, R2A-11
        let env = Envelope {
            // Annotations come first on the way back.
            headers: vec![
                ("x-price".into(), Value::Decimal { scale: 2, value: 1990 }),
                ("small".into(), Value::U8(200)),
                ("port".into(), Value::U16(65535)),
                ("count".into(), Value::U32(u32::MAX)),
            ],
            ..Envelope::default()
        };
        let back = decode(encode(&env, jms(), "q", &mut Ledger::lossy()), "q");
        let got: Vec<_> =
            back.headers.into_iter().filter(|(n, _)| !n.starts_with("x-opt-")).collect();
        assert_eq!(got, env.headers);
    }

    #[test]
    fn chars_and_symbols_arrive_as_strings() {
        // A2R-12: the envelope has no char or symbol type.
        let props = [SimpleValue::Char('é'), SimpleValue::Symbol(Symbol::from("sym"))];
        let got: Vec<Value> = props.iter().map(from_simple).collect();
        assert_eq!(got, [Value::String("é".into()), Value::String("sym".into())]);
    }

    #[test]
    fn a_utf8_text_body_from_091_is_a_jms_text_message_and_gzip_stays_bytes() {
        // R2A-15 (case 13)
        let kind = |content_type: &str, encoding: Option<&str>, body: &'static [u8]| {
            let mut env = Envelope { body: Bytes::from_static(body), ..Envelope::default() };
            env.properties.content_type = Some(content_type.into());
            env.properties.content_encoding = encoding.map(str::to_owned);
            let message = encode(&env, jms(), "q", &mut Ledger::lossy());
            assert!(matches!(message.body, Body::Data(_)), "the body stays one data section");
            let annotations = message.message_annotations.expect("annotations");
            annotations.0.get(&OwnedKey::Symbol(Symbol::from(JMS_MSG_TYPE))).cloned()
        };
        let text = Some(AmqpValueT::Byte(JMS_TEXT));
        let bytes = Some(AmqpValueT::Byte(JMS_BYTES));
        assert_eq!(kind("text/plain", Some("UTF-8"), "héllo".as_bytes()), text);
        assert_eq!(kind("application/json; charset=utf-8", None, b"{}"), text);
        assert_eq!(kind("text/plain", Some("gzip"), b"\x1f\x8b\x08"), bytes);
        assert_eq!(kind("text/plain; charset=iso-8859-1", None, b"caf\xe9"), bytes);
        assert_eq!(kind("application/octet-stream", None, b"abc"), bytes);
    }
}
