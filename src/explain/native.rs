//! A sample turned into each protocol's own message, then read by that protocol's codec, so
//! that `explain` shows exactly what a running bridge would make of it.

use bytes::Bytes;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    AmqpSequence, AmqpValue, ApplicationProperties, Body, Data, Header, Message,
    MessageAnnotations, MessageId as AmqpId, Properties as AmqpProperties,
};
use fe2o3_amqp::types::primitives::{Binary, OrderedMap, Symbol, Timestamp, Uuid as AmqpUuid};
use lapin::BasicProperties;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders, Timestamp as KafkaTimestamp};
use serde_yaml_ng::Value as Yaml;

use super::sample::{SampleError, SampleFile, TimeUnit, raw_bytes, typed};
use crate::amqp10::codec::AmqpMessage;
use crate::amqp10::values::{to_amqp, to_simple};
use crate::amqp091::codec::DeliveryFacts;
use crate::kafka::codec::RecordFacts;
use crate::pipeline::{Envelope, Value};

/// Where the sample's source reads from: the queue, the first topic, the address.
pub struct SourceName<'a>(pub &'a str);

const AMQP091_PROPERTIES: &str = "content_type, content_encoding, delivery_mode, priority, \
                                  correlation_id, reply_to, expiration, message_id, timestamp, \
                                  type, user_id, app_id, cluster_id";

pub fn amqp091(file: &SampleFile, queue: SourceName<'_>) -> Result<Envelope, SampleError> {
    let mut props = BasicProperties::default();
    for (name, yaml) in &file.properties {
        let at = format!("properties.{name}");
        let short = || short_string(yaml, &at);
        let number = |max: u64| unsigned(yaml, &at, max);
        props = match name.as_str() {
            "content_type" => props.with_content_type(short()?),
            "content_encoding" => props.with_content_encoding(short()?),
            "correlation_id" => props.with_correlation_id(short()?),
            "reply_to" => props.with_reply_to(short()?),
            "expiration" => props.with_expiration(short()?),
            "message_id" => props.with_message_id(short()?),
            "type" => props.with_type(short()?),
            "user_id" => props.with_user_id(short()?),
            "app_id" => props.with_app_id(short()?),
            "cluster_id" => props.with_cluster_id(short()?),
            "delivery_mode" => props.with_delivery_mode(number(2)? as u8),
            "priority" => props.with_priority(number(255)? as u8),
            "timestamp" => props.with_timestamp(number(u64::MAX)?),
            other => {
                return Err(SampleError::new(
                    at,
                    format!("unknown AMQP 0-9-1 property {other:?}; use {AMQP091_PROPERTIES}"),
                ));
            }
        };
    }
    if !file.headers.is_empty() {
        let mut table = FieldTable::default();
        for (name, yaml) in &file.headers {
            let at = format!("headers.{name}");
            let value = typed(yaml, &at, TimeUnit::Seconds)?;
            let name = ShortString::try_new(name.as_str())
                .map_err(|_| SampleError::new(&at, "a header name has at most 255 bytes"))?;
            table.insert(name, exact_091(&value, &at)?);
        }
        props = props.with_headers(table);
    }
    let body = plain_body(file.body.as_ref())?.unwrap_or_default();
    let facts = DeliveryFacts {
        exchange: file.exchange.as_deref().unwrap_or(""),
        routing_key: file.routing_key.as_deref().unwrap_or(""),
        queue: queue.0,
        redelivered: file.redelivered.unwrap_or(false),
    };
    Ok(crate::amqp091::codec::decode(body.to_vec(), &props, facts))
}

pub fn kafka(file: &SampleFile, topic: SourceName<'_>) -> Result<Envelope, SampleError> {
    let mut headers = OwnedHeaders::new_with_capacity(file.headers.len());
    for (name, yaml) in &file.headers {
        let at = format!("headers.{name}");
        let value = match yaml {
            Yaml::Null => None,
            Yaml::String(s) => Some(Bytes::from(s.clone())),
            other => Some(raw_bytes(other, &at)?.ok_or_else(|| {
                SampleError::new(
                    &at,
                    "Kafka header values are bytes: write text, null, { hex: ... } or \
                     { base64: ... }",
                )
            })?),
        };
        headers = headers.insert(KafkaHeader { key: name, value: value.as_deref() });
    }
    let key = match &file.key {
        None | Some(Yaml::Null) => None,
        Some(Yaml::String(s)) => Some(Bytes::from(s.clone())),
        Some(other) => Some(raw_bytes(other, "key")?.ok_or_else(|| {
            SampleError::new("key", "write the key as text, { hex: ... } or { base64: ... }")
        })?),
    };
    let payload = match &file.body {
        Some(Yaml::Null) => None,
        body => Some(plain_body(body.as_ref())?.unwrap_or_default()),
    };
    let facts = RecordFacts {
        topic: file.topic.as_deref().unwrap_or(topic.0),
        partition: file.partition.unwrap_or(0),
        offset: file.offset.unwrap_or(0),
        key: key.as_deref(),
        timestamp: file.timestamp.map_or(KafkaTimestamp::NotAvailable, KafkaTimestamp::CreateTime),
    };
    Ok(crate::kafka::codec::decode(payload.as_deref(), Some(&headers), facts))
}

const AMQP10_PROPERTIES: &str = "message_id, user_id, to, subject, reply_to, correlation_id, \
                                 content_type, content_encoding, absolute_expiry_time, \
                                 creation_time, group_id, group_sequence, reply_to_group_id";

pub fn amqp10(file: &SampleFile, address: SourceName<'_>) -> Result<Envelope, SampleError> {
    let header = file.header.as_ref().map(header_section).transpose()?;
    let mut properties = AmqpProperties::default();
    for (name, yaml) in &file.properties {
        let at = format!("properties.{name}");
        let text = || plain_text(yaml, &at);
        let ms =
            || unsigned(yaml, &at, i64::MAX as u64).map(|n| Timestamp::from_milliseconds(n as i64));
        match name.as_str() {
            "message_id" => properties.message_id = Some(message_id(yaml, &at)?),
            "correlation_id" => properties.correlation_id = Some(message_id(yaml, &at)?),
            "user_id" => {
                let bytes = raw_bytes(yaml, &at)?.map_or_else(|| text().map(Bytes::from), Ok)?;
                properties.user_id = Some(Binary::from(bytes.to_vec()));
            }
            "to" => properties.to = Some(text()?),
            "subject" => properties.subject = Some(text()?),
            "reply_to" => properties.reply_to = Some(text()?),
            "content_type" => properties.content_type = Some(Symbol::from(text()?)),
            "content_encoding" => properties.content_encoding = Some(Symbol::from(text()?)),
            "absolute_expiry_time" => properties.absolute_expiry_time = Some(ms()?),
            "creation_time" => properties.creation_time = Some(ms()?),
            "group_id" => properties.group_id = Some(text()?),
            "group_sequence" => {
                properties.group_sequence = Some(unsigned(yaml, &at, u64::from(u32::MAX))? as u32)
            }
            "reply_to_group_id" => properties.reply_to_group_id = Some(text()?),
            other => {
                return Err(SampleError::new(
                    at,
                    format!("unknown AMQP 1.0 property {other:?}; use {AMQP10_PROPERTIES}"),
                ));
            }
        }
    }
    let mut annotations = OrderedMap::new();
    for (name, yaml) in &file.annotations {
        let value = typed(yaml, &format!("annotations.{name}"), TimeUnit::Millis)?;
        annotations.insert(OwnedKey::Symbol(Symbol::from(name.as_str())), to_amqp(&value));
    }
    let mut application = OrderedMap::new();
    for (name, yaml) in &file.application_properties {
        let at = format!("application_properties.{name}");
        let value = typed(yaml, &at, TimeUnit::Millis)?;
        let simple = to_simple(&value, false).ok_or_else(|| {
            SampleError::new(
                &at,
                format!(
                    "an application property holds simple values only, not a {}",
                    value.type_name()
                ),
            )
        })?;
        application.insert(name.clone(), simple);
    }
    let message: AmqpMessage = Message {
        header,
        delivery_annotations: None,
        message_annotations: (!annotations.is_empty()).then_some(MessageAnnotations(annotations)),
        properties: Some(properties),
        application_properties: (!application.is_empty())
            .then_some(ApplicationProperties(application)),
        body: amqp10_body(file.body.as_ref())?,
        footer: None,
    };
    Ok(crate::amqp10::codec::decode(message, address.0))
}

fn header_section(
    fields: &std::collections::BTreeMap<String, Yaml>,
) -> Result<Header, SampleError> {
    let mut header = Header::default();
    for (name, yaml) in fields {
        let at = format!("header.{name}");
        match name.as_str() {
            "durable" => match yaml {
                Yaml::Bool(b) => header.durable = *b,
                _ => return Err(SampleError::new(at, "write true or false")),
            },
            "priority" => header.priority = (unsigned(yaml, &at, 255)? as u8).into(),
            "ttl" => header.ttl = Some(unsigned(yaml, &at, u64::from(u32::MAX))? as u32),
            "delivery_count" => {
                header.delivery_count = unsigned(yaml, &at, u64::from(u32::MAX))? as u32
            }
            "first_acquirer" => match yaml {
                Yaml::Bool(b) => header.first_acquirer = *b,
                _ => return Err(SampleError::new(at, "write true or false")),
            },
            other => {
                return Err(SampleError::new(
                    at,
                    format!(
                        "unknown header field {other:?}; use durable, priority, ttl, \
                         delivery_count, first_acquirer"
                    ),
                ));
            }
        }
    }
    Ok(header)
}

fn message_id(yaml: &Yaml, at: &str) -> Result<AmqpId, SampleError> {
    Ok(match typed(yaml, at, TimeUnit::Millis)? {
        Value::String(s) => AmqpId::String(s),
        Value::U64(n) => AmqpId::Ulong(n),
        Value::I64(n) if n >= 0 => AmqpId::Ulong(n as u64),
        Value::Uuid(u) => AmqpId::Uuid(AmqpUuid::from(*u.as_bytes())),
        Value::Bytes(b) => AmqpId::Binary(Binary::from(b.to_vec())),
        other => {
            return Err(SampleError::new(
                at,
                format!(
                    "a message id is a string, ulong, uuid or binary, not {}",
                    other.type_name()
                ),
            ));
        }
    })
}

fn amqp10_body(
    body: Option<&Yaml>,
) -> Result<Body<fe2o3_amqp::types::primitives::Value>, SampleError> {
    let data = |bytes: Bytes| Body::Data(vec![Data(Binary::from(bytes.to_vec()))].into());
    let Some(yaml) = body else { return Ok(data(Bytes::new())) };
    if let Yaml::Mapping(map) = yaml {
        if map.len() == 1 {
            if let Some(value) = map.get("value") {
                let value = typed(value, "body.value", TimeUnit::Millis)?;
                return Ok(Body::Value(AmqpValue(to_amqp(&value))));
            }
            if let Some(items) = map.get("sequence") {
                let Value::List(items) = typed(items, "body.sequence", TimeUnit::Millis)? else {
                    return Err(SampleError::new("body.sequence", "write a YAML list"));
                };
                let items = items.iter().map(to_amqp).collect();
                return Ok(Body::Sequence(vec![AmqpSequence(items)].into()));
            }
        }
    }
    match plain_body(Some(yaml)) {
        Ok(bytes) => Ok(data(bytes.unwrap_or_default())),
        Err(_) => Err(SampleError::new(
            "body",
            "write { text: ... }, { hex: ... }, { base64: ... } (a data section), { value: ... } \
             (an amqp-value section) or { sequence: [...] }",
        )),
    }
}

/// `{ text | hex | base64: ... }`; `None` when there is no body.
fn plain_body(body: Option<&Yaml>) -> Result<Option<Bytes>, SampleError> {
    match body {
        None => Ok(None),
        Some(yaml) => raw_bytes(yaml, "body")?.map(Some).ok_or_else(|| {
            SampleError::new("body", "write { text: ... }, { hex: ... } or { base64: ... }")
        }),
    }
}

fn plain_text(yaml: &Yaml, at: &str) -> Result<String, SampleError> {
    match yaml {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Number(n) => Ok(n.to_string()),
        _ => Err(SampleError::new(at, "write text")),
    }
}

fn short_string(yaml: &Yaml, at: &str) -> Result<ShortString, SampleError> {
    ShortString::try_new(plain_text(yaml, at)?)
        .map_err(|_| SampleError::new(at, "a short string has at most 255 bytes"))
}

fn unsigned(yaml: &Yaml, at: &str, max: u64) -> Result<u64, SampleError> {
    match yaml {
        Yaml::Number(n) => n.as_u64().filter(|n| *n <= max),
        _ => None,
    }
    .ok_or_else(|| SampleError::new(at, format!("write a whole number from 0 to {max}")))
}

/// A value as AMQP 0-9-1 writes it, each type with its own tag (no widening: the sample is
/// what a 0-9-1 publisher sent).
fn exact_091(value: &Value, at: &str) -> Result<AMQPValue, SampleError> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::I8(n) => AMQPValue::ShortShortInt(*n),
        Value::U8(n) => AMQPValue::ShortShortUInt(*n),
        Value::I16(n) => AMQPValue::ShortInt(*n),
        Value::U16(n) => AMQPValue::ShortUInt(*n),
        Value::I32(n) => AMQPValue::LongInt(*n),
        Value::U32(n) => AMQPValue::LongUInt(*n),
        Value::I64(n) => AMQPValue::LongLongInt(*n),
        Value::F32(n) => AMQPValue::Float(*n),
        Value::F64(n) => AMQPValue::Double(*n),
        Value::Decimal { scale, value } => {
            AMQPValue::DecimalValue(DecimalValue { scale: *scale, value: *value as u32 })
        }
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
        Value::Timestamp(ms) => AMQPValue::Timestamp(u64::try_from(ms / 1000).unwrap_or(0)),
        Value::List(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| exact_091(v, &format!("{at}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Map(entries) => {
            let mut table = FieldTable::default();
            for (k, v) in entries {
                let name = ShortString::try_new(k.as_str())
                    .map_err(|_| SampleError::new(at, "a table key has at most 255 bytes"))?;
                table.insert(name, exact_091(v, &format!("{at}.{k}"))?);
            }
            AMQPValue::FieldTable(table)
        }
        Value::U64(_) | Value::Uuid(_) => {
            return Err(SampleError::new(
                at,
                format!("AMQP 0-9-1 field tables have no {} type", value.type_name()),
            ));
        }
    })
}
