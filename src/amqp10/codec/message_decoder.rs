//! The decode side: a received AMQP 1.0 message becomes an envelope.
//!
//! The header and properties sections fill the envelope's properties; message annotations
//! and application properties become headers, their recorded types (`x-opt-portico-types`)
//! and original names (`x-opt-portico-names`) restored; the body keeps its kind. Delivery
//! annotations are hop-by-hop and are not read.

use bytes::Bytes;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    AmqpSequence, AmqpValue, ApplicationProperties, Body, Data, Header, MessageAnnotations,
    Properties as AmqpProperties,
};
use fe2o3_amqp::types::primitives::{Symbol, Value as AmqpValueT};
use serde_json::{Map as JsonMap, Value as Json};

use super::value_conversion::from_id;
use super::{AmqpMessage, NAMES_ANNOTATION, SUBJECT_ANNOTATION, TYPES_ANNOTATION};
use crate::amqp10::values::{from_amqp, from_simple};
use crate::pipeline::value::occurrences;
use crate::pipeline::{BodyKind, Envelope, Origin, Properties, Value, carry};

/// Decodes one received message.
pub fn decode(message: AmqpMessage, address: &str) -> Envelope {
    let mut envelope = Envelope::default();
    let types = annotation_map(message.message_annotations.as_ref(), TYPES_ANNOTATION);
    let renamed = annotation_map(message.message_annotations.as_ref(), NAMES_ANNOTATION);
    decode_header(message.header.as_ref(), &mut envelope);
    if let Some(p) = message.properties {
        decode_properties(p, &mut envelope.properties);
    }

    let mut subject_is_type = false;
    if let Some(annotations) = message.message_annotations {
        subject_is_type = decode_annotations(annotations, &types, &mut envelope.headers);
    }
    if let Some(props) = message.application_properties {
        decode_application_properties(props, &types, &renamed, &mut envelope);
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

/// A JSON map the sender wrote into the annotation `name`; empty when absent or unreadable.
fn annotation_map(annotations: Option<&MessageAnnotations>, name: &str) -> JsonMap<String, Json> {
    match annotations.and_then(|a| a.0.get(&OwnedKey::Symbol(Symbol::from(name)))) {
        Some(AmqpValueT::String(t) | AmqpValueT::Symbol(Symbol(t))) => {
            serde_json::from_str(t).unwrap_or_default()
        }
        _ => JsonMap::new(),
    }
}

/// Message annotations as headers under their own names, their recorded types restored.
/// Returns whether the subject holds the 0-9-1 type.
fn decode_annotations(
    annotations: MessageAnnotations,
    types: &JsonMap<String, Json>,
    headers: &mut Vec<(String, Value)>,
) -> bool {
    let mut subject_is_type = false;
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
        let shape = types.get(&name);
        push_annotation(headers, name, value, shape);
    }
    subject_is_type
}

/// Adds an annotation's value with its recorded type; all values of a repeated name come
/// apart again.
fn push_annotation(
    headers: &mut Vec<(String, Value)>,
    name: String,
    value: Value,
    shape: Option<&Json>,
) {
    match (shape, value) {
        (Some(shape), value) if occurrences(shape).is_some() => {
            let each = occurrences(shape).and_then(|list| value.restore(&list));
            match each {
                Some(Value::List(each)) => {
                    headers.extend(each.into_iter().map(|v| (name.clone(), v)));
                }
                _ => headers.push((name, value)),
            }
        }
        (Some(shape), value) => {
            let value = value.restore(shape).unwrap_or(value);
            headers.push((name, value));
        }
        (None, value) => headers.push((name, value)),
    }
}

/// Application properties as headers under their original names, their recorded types
/// restored; an `amqp.*` one carrying a property 1.0 has no field for goes back there.
fn decode_application_properties(
    props: ApplicationProperties,
    types: &JsonMap<String, Json>,
    renamed: &JsonMap<String, Json>,
    envelope: &mut Envelope,
) {
    for (name, value) in props.0 {
        let value = from_simple(&value);
        let shape = types.get(&name);
        let name = match renamed.get(&name) {
            Some(Json::String(original)) => original.clone(),
            _ => name,
        };
        if let Some(each) = repeated_property(shape, &value) {
            envelope.headers.extend(each.into_iter().map(|v| (name.clone(), v)));
            continue;
        }
        let value = restore_property(shape, value);
        if !(name.starts_with("amqp.") && carry::absorb(envelope, &name, &value)) {
            envelope.headers.push((name, value));
        }
    }
}

/// All values of a repeated name, which travel as one property holding their text.
fn repeated_property(shape: Option<&Json>, value: &Value) -> Option<Vec<Value>> {
    let (Some(list), Value::String(text)) = (shape.and_then(occurrences), value) else {
        return None;
    };
    match Value::from_text(text.as_bytes(), Some(&list)) {
        Ok(Value::List(each)) => Some(each),
        _ => None,
    }
}

/// A property's value with its recorded type; as it arrived when it has none or the type
/// does not fit.
fn restore_property(shape: Option<&Json>, value: Value) -> Value {
    match (shape, &value) {
        (Some(shape), Value::String(text)) => {
            Value::from_text(text.as_bytes(), Some(shape)).unwrap_or(value)
        }
        // A JMS property widened from an unsigned type.
        (Some(shape), _) => value.restore(shape).unwrap_or(value),
        _ => value,
    }
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
