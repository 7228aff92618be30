//! The decode side: a 0-9-1 delivery becomes an envelope.
//!
//! The basic properties fill the envelope's properties; the header table becomes headers,
//! their recorded types (`portico.types`) restored, and `amqp.*` headers that carry a
//! property an earlier hop could not fit into 0-9-1 go back into the properties.

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::{Map as JsonMap, Value as Json};

use super::DeliveryFacts;
use super::value_conversion::{from_amqp, seconds_to_ms};
use crate::pipeline::{Envelope, MessageId, Origin, Properties, Value, carry, value};

/// Decodes one delivery. Never fails: every 0-9-1 value has a place in the envelope.
pub fn decode(body: Vec<u8>, props: &BasicProperties, facts: DeliveryFacts<'_>) -> Envelope {
    let properties = decode_properties(props);
    // Receives the properties that `amqp.*` headers carry, and the body's kind.
    let mut carried = Envelope::default();
    let mut headers = match props.headers() {
        Some(table) => decode_headers(table, &mut carried),
        None => Vec::new(),
    };
    // An expiration RabbitMQ would refuse cannot come from it; keep any such text as a header.
    if let (Some(raw), None) = (props.expiration(), properties.ttl_ms) {
        headers.push(("amqp.expiration".to_owned(), Value::String(raw.as_str().to_owned())));
    }
    Envelope {
        body: Bytes::from(body),
        body_is_null: false,
        body_kind: carried.body_kind,
        properties: merge(properties, carried.properties),
        headers,
        origin: Origin {
            exchange: Some(facts.exchange.to_owned()),
            routing_key: Some(facts.routing_key.to_owned()),
            queue: Some(facts.queue.to_owned()),
            redelivered: facts.redelivered,
            ..Origin::default()
        },
    }
}

fn decode_properties(props: &BasicProperties) -> Properties {
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_owned());
    Properties {
        message_id: text(props.message_id()).map(MessageId::String),
        correlation_id: text(props.correlation_id()).map(MessageId::String),
        content_type: text(props.content_type()),
        content_encoding: text(props.content_encoding()),
        reply_to: text(props.reply_to()),
        priority: *props.priority(),
        durable: props.delivery_mode().map(|mode| mode == 2),
        ttl_ms: props.expiration().as_ref().and_then(|e| e.as_str().parse().ok()),
        creation_time_ms: props.timestamp().and_then(seconds_to_ms),
        message_type: text(props.kind()),
        user_id: props.user_id().as_ref().map(|u| Bytes::copy_from_slice(u.as_str().as_bytes())),
        app_id: text(props.app_id()),
        cluster_id: text(props.cluster_id()),
        ..Properties::default()
    }
}

/// The header table as headers, their recorded types restored; `amqp.*` headers that
/// carry a property go into `carried` instead.
fn decode_headers(table: &FieldTable, carried: &mut Envelope) -> Vec<(String, Value)> {
    let mut headers = Vec::new();
    let types = recorded_types(table);
    for (name, value) in table.inner() {
        let name = name.as_str();
        if name == carry::TYPES {
            continue;
        }
        let value = from_amqp(value);
        let Some(shape) = types.get(name) else {
            // Properties that an earlier hop could not fit into 0-9-1 come back here.
            if !(name.starts_with("amqp.") && carry::absorb(carried, name, &value)) {
                headers.push((name.to_owned(), value));
            }
            continue;
        };
        push_restored(&mut headers, name, value, shape);
    }
    headers
}

/// Adds a header's value with its recorded type; the values of a name that travelled as
/// one array come apart again.
fn push_restored(headers: &mut Vec<(String, Value)>, name: &str, value: Value, shape: &Json) {
    // A value whose recorded type does not fit is kept as it arrived.
    match value::occurrences(shape).map(|list| value.restore(&list)) {
        Some(Some(Value::List(items))) => {
            headers.extend(items.into_iter().map(|item| (name.to_owned(), item)));
        }
        Some(_) => headers.push((name.to_owned(), value)),
        None => headers.push((name.to_owned(), value.restore(shape).unwrap_or(value))),
    }
}

/// The `portico.types` record of a field table: header name → shape.
fn recorded_types(table: &FieldTable) -> JsonMap<String, Json> {
    match table.inner().get(carry::TYPES) {
        Some(AMQPValue::LongString(text)) => {
            serde_json::from_slice(text.as_bytes()).unwrap_or_default()
        }
        _ => JsonMap::new(),
    }
}

/// Fills the fields 0-9-1 left unset with those carried in `amqp.*` headers.
fn merge(mut own: Properties, carried: Properties) -> Properties {
    macro_rules! fill {
        ($($field:ident),*) => { $( if own.$field.is_none() { own.$field = carried.$field; } )* };
    }
    fill!(message_id, correlation_id, content_type, content_encoding, reply_to, priority, durable);
    fill!(ttl_ms, absolute_expiry_ms, creation_time_ms, message_type, user_id, app_id, group_id);
    fill!(group_sequence, subject, to, cluster_id, reply_to_group_id);
    // The carried creation time is the exact one; the property only has its seconds.
    if let (Some(exact), Some(seconds)) = (carried.creation_time_ms, own.creation_time_ms) {
        if exact.div_euclid(1000) * 1000 == seconds {
            own.creation_time_ms = Some(exact);
        }
    }
    own
}
