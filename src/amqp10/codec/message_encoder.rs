//! The encode side: an envelope becomes an AMQP 1.0 message for a plain or a JMS peer.
//!
//! Headers named `x-…` go into the message annotations, the others into the application
//! properties, which hold only simple values: anything else travels as text with its type
//! in `x-opt-portico-types`. For a JMS peer, names that are not Java identifiers are escaped
//! (originals in `x-opt-portico-names`), unsigned values widened, and the Qpid JMS
//! annotations added. Every value that does not cross as it was is written into the ledger.

use std::collections::HashSet;

use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Header, Message, MessageAnnotations,
    Properties as AmqpProperties,
};
use fe2o3_amqp::types::primitives::{
    Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Value as AmqpValueT,
};
use serde_json::Value as Json;

use super::jms_names::{is_java_identifier, jms_name};
use super::value_conversion::{as_text, bytes_or_text, has_decimal, repeated_values, to_id};
use super::{
    AmqpMessage, JMS_BYTES, JMS_DEST, JMS_MAP, JMS_MSG_TYPE, JMS_REPLY_TO, JMS_STREAM, JMS_TEXT,
    NAMES_ANNOTATION, SUBJECT_ANNOTATION, TYPES_ANNOTATION, Target,
};
use crate::amqp10::values::{to_amqp, to_simple};
use crate::pipeline::ledger::Field;
use crate::pipeline::value::repeated;
use crate::pipeline::{BodyKind, Envelope, Ledger, Properties, Value};

/// Encodes an envelope for sending to `target`, writing into `ledger` every value that does
/// not cross as it was.
pub fn encode(envelope: &Envelope, target: Target, to: &str, ledger: &mut Ledger) -> AmqpMessage {
    let p = &envelope.properties;
    let max_priority = if target.jms { 9 } else { u8::MAX };
    note_header_coercions(envelope, max_priority, ledger);
    let header = encode_header(p, max_priority);

    let mut sections = Sections::default();
    sections.add_headers(&envelope.headers, target, ledger);
    sections.carry_properties(p, target);
    add_origin(&mut sections.annotations, envelope);
    let (mut annotations, app) = sections.finish();

    let body = encode_body(envelope, ledger);
    if target.jms {
        add_jms_annotations(&mut annotations, &body, envelope, target);
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

/// Notes the header and body values a 1.0 message cannot hold as they are.
fn note_header_coercions(envelope: &Envelope, max_priority: u8, ledger: &mut Ledger) {
    let p = &envelope.properties;
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
}

fn encode_header(p: &Properties, max_priority: u8) -> Header {
    Header {
        durable: p.durable.unwrap_or(false),
        priority: p.priority.unwrap_or(4).min(max_priority).into(),
        // A uint holds about 49 days of milliseconds; a longer TTL is capped there rather
        // than dropped (which would mean "never expires").
        ttl: p.ttl_ms.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
        first_acquirer: false,
        delivery_count: 0,
    }
}

/// The message annotations and application properties being written, with the types and
/// original names to record beside them.
#[derive(Default)]
struct Sections {
    annotations: OrderedMap<OwnedKey, AmqpValueT>,
    app: OrderedMap<String, SimpleValue>,
    /// Recorded in `x-opt-portico-types`: the types 1.0 cannot say, by name written.
    types: serde_json::Map<String, Json>,
    /// Recorded in `x-opt-portico-names`: each JMS-legal stand-in and the name it stands for.
    renamed: serde_json::Map<String, Json>,
}

impl Sections {
    /// Writes the envelope's headers: `x-…` ones as annotations, the others as application
    /// properties. A repeated name goes once, all its values in one list.
    fn add_headers(&mut self, headers: &[(String, Value)], target: Target, ledger: &mut Ledger) {
        // Only JMS targets rename properties; other targets skip building this set.
        let names = headers.iter().map(|(n, _)| n.as_str());
        let legal: HashSet<&str> = names.filter(|n| target.jms && is_java_identifier(n)).collect();
        for (i, (name, value)) in headers.iter().enumerate() {
            if headers[..i].iter().any(|(n, _)| n == name) {
                continue; // a later value of a repeated name, carried with the first
            }
            let grouped = repeated_values(name, value, &headers[i + 1..]);
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
                self.add_annotation(name, value, grouped.as_ref());
                continue;
            }
            let key = self.property_name(name, target, &legal, ledger);
            self.add_property(key, name, value, grouped.as_ref(), target, ledger);
        }
    }

    /// An `x-…` header as a message annotation, its type recorded when 1.0 cannot say it.
    fn add_annotation(&mut self, name: &str, value: &Value, grouped: Option<&Value>) {
        self.annotations.insert(OwnedKey::Symbol(Symbol::from(name)), to_amqp(value));
        if let Some(Value::List(each)) = grouped {
            self.types.insert(name.to_owned(), repeated(each.iter()));
        } else if has_decimal(value) {
            // AMQP 1.0 decimals are another encoding: the value goes as its text.
            self.types.insert(name.to_owned(), value.shape().unwrap_or(Json::Null));
        }
    }

    /// The name an application property goes under: for a JMS peer a Java identifier, a
    /// stand-in recorded beside the name it replaces.
    fn property_name(
        &mut self,
        name: &str,
        target: Target,
        legal: &HashSet<&str>,
        ledger: &mut Ledger,
    ) -> String {
        if target.jms && !is_java_identifier(name) {
            ledger.converted(
                Field::Header(name),
                "name",
                "JMS identifier + x-opt-portico-names",
                "JMS property names are Java identifiers",
            );
            let escaped = jms_name(name, |n| legal.contains(n) || self.renamed.contains_key(n));
            self.renamed.insert(escaped.clone(), Json::String(name.to_owned()));
            escaped
        } else {
            name.to_owned()
        }
    }

    /// A header as an application property under `key`: a simple value as it is, anything
    /// else (a list, a map, all values of a repeated name) as text with its type recorded.
    fn add_property(
        &mut self,
        key: String,
        name: &str,
        value: &Value,
        grouped: Option<&Value>,
        target: Target,
        ledger: &mut Ledger,
    ) {
        match (to_simple(value, target.jms), grouped) {
            (Some(simple), None) => {
                if target.jms && matches!(value, Value::U8(_) | Value::U16(_) | Value::U32(_)) {
                    // JMS has no unsigned types: widened, with the type kept beside it.
                    self.types.insert(key.clone(), value.shape().unwrap_or(Json::Null));
                }
                self.app.insert(key, simple)
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
                self.types.insert(key.clone(), shape);
                self.app.insert(key, SimpleValue::String(text))
            }
        };
    }

    /// Writes the properties 1.0 has no field for as application properties, restored on
    /// the way back; for a JMS peer the 0-9-1 type goes into the subject instead.
    fn carry_properties(&mut self, p: &Properties, target: Target) {
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
                let key = if target.jms {
                    jms_name(name, |n| self.app.contains_key(n))
                } else {
                    name.into()
                };
                if key != name {
                    self.renamed.insert(key.clone(), Json::String(name.to_owned()));
                }
                self.app.insert(key, SimpleValue::String(value.clone()));
            }
        }
        if subject_from_type && p.message_type.is_some() {
            let key = OwnedKey::Symbol(Symbol::from(SUBJECT_ANNOTATION));
            self.annotations.insert(key, AmqpValueT::String("type".to_owned()));
        }
    }

    /// The annotations, with the recorded types and names added, and the application
    /// properties.
    fn finish(self) -> (OrderedMap<OwnedKey, AmqpValueT>, OrderedMap<String, SimpleValue>) {
        let mut annotations = self.annotations;
        for (annotation, map) in [(TYPES_ANNOTATION, self.types), (NAMES_ANNOTATION, self.renamed)]
        {
            if !map.is_empty() {
                let key = OwnedKey::Symbol(Symbol::from(annotation));
                annotations.insert(key, AmqpValueT::String(Json::Object(map).to_string()));
            }
        }
        (annotations, self.app)
    }
}

/// The Qpid JMS annotations: the message type, and the destination and reply-to types.
/// Annotations the envelope already carries are kept.
fn add_jms_annotations(
    annotations: &mut OrderedMap<OwnedKey, AmqpValueT>,
    body: &Body<AmqpValueT>,
    envelope: &Envelope,
    target: Target,
) {
    let key = OwnedKey::Symbol(Symbol::from(JMS_MSG_TYPE));
    let kind = jms_message_type(body, envelope);
    annotations.as_inner_mut().entry(key).or_insert(AmqpValueT::Byte(kind));
    if let Some(topic) = target.topic {
        let key = OwnedKey::Symbol(Symbol::from(JMS_DEST));
        annotations.as_inner_mut().entry(key).or_insert(AmqpValueT::Byte(i8::from(topic)));
    }
    // JMSReplyTo needs its destination type; only a `topic://` address says topic.
    if let Some(reply_to) = &envelope.properties.reply_to {
        let topic = reply_to.starts_with("topic://");
        let key = OwnedKey::Symbol(Symbol::from(JMS_REPLY_TO));
        annotations.as_inner_mut().entry(key).or_insert(AmqpValueT::Byte(i8::from(topic)));
    }
}

/// The JMS message type a body reads as.
fn jms_message_type(body: &Body<AmqpValueT>, envelope: &Envelope) -> i8 {
    match body {
        Body::Value(AmqpValue(AmqpValueT::String(_))) => JMS_TEXT,
        Body::Value(AmqpValue(AmqpValueT::Map(_))) => JMS_MAP,
        Body::Value(AmqpValue(AmqpValueT::List(_))) => JMS_STREAM,
        // Qpid JMS reads a data section with a textual content type as text.
        _ if utf8_text(envelope) => JMS_TEXT,
        _ => JMS_BYTES,
    }
}

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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn jms() -> Target {
        Target { jms: true, topic: Some(false) }
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
