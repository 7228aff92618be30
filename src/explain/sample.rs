//! Sample messages for `portico explain`: a YAML description of one message as the bridge's
//! source protocol would deliver it, turned into that protocol's own message and read by the
//! source's real codec.
//!
//! Values are typed: a plain YAML string, boolean, integer (64-bit) or float (double), a list
//! or a map, or `{ type: NAME, value: ... }` for any other type (`int32`, `uint8`, `decimal`,
//! `timestamp`, `uuid`, ...), and bytes as `{ hex: "00ff" }` or `{ base64: "AP8=" }`.
//! Timestamps are written in the protocol's own unit: seconds for AMQP 0-9-1, milliseconds for
//! AMQP 1.0 and Kafka.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use super::native::SourceName;
use crate::config::SourceModel;
use crate::config::file::Protocol;
use crate::pipeline::{Envelope, Value};

/// A sample as written; which fields apply depends on the source protocol.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleFile {
    /// Optional: the protocol the sample describes, checked against the bridge's source.
    pub protocol: Option<Protocol>,
    /// AMQP 0-9-1: the exchange and routing key it was published with.
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    /// AMQP 0-9-1: the redelivered flag.
    pub redelivered: Option<bool>,
    /// Kafka: the record's coordinates, key and timestamp (ms).
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<Yaml>,
    pub timestamp: Option<i64>,
    /// AMQP 1.0: the header section (`durable`, `priority`, `ttl`, `delivery_count`).
    pub header: Option<BTreeMap<String, Yaml>>,
    /// AMQP 0-9-1 basic properties, or the AMQP 1.0 properties section.
    #[serde(default)]
    pub properties: BTreeMap<String, Yaml>,
    /// AMQP 0-9-1 headers or Kafka headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Yaml>,
    /// AMQP 1.0 message annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, Yaml>,
    /// AMQP 1.0 application properties.
    #[serde(default)]
    pub application_properties: BTreeMap<String, Yaml>,
    /// `{ text: ... }`, `{ hex: ... }`, `{ base64: ... }`; AMQP 1.0 also `{ value: ... }`
    /// (an amqp-value section) and `{ sequence: [...] }`; Kafka also `null` (a tombstone).
    pub body: Option<Yaml>,
}

/// A sample that does not describe a valid message: the field's path and what is wrong.
#[derive(Debug, PartialEq)]
pub struct SampleError {
    pub path: String,
    pub message: String,
}

impl SampleError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> SampleError {
        SampleError { path: path.into(), message: message.into() }
    }
}

/// Reads the sample at `path` into the envelope `source` would hand to the bridge. Errors
/// read `FILE:LINE:COL: path: what is wrong`, like `portico check`.
pub fn load(path: &std::path::Path, source: &SourceModel) -> Result<Envelope, String> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{name}: cannot read the sample: {e}"))?;
    let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
    let file: SampleFile = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let at = error.path().to_string();
        let inner = error.into_inner();
        let (line, column) = inner.location().map_or((1, 1), |l| (l.line(), l.column()));
        let message = inner.to_string();
        let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m);
        format!("{name}:{line}:{column}: {at}: {message}")
    })?;
    read(&file, source).map_err(|error| {
        let at = crate::config::position::Positions::index(&text).of(&error.path);
        format!("{name}:{}:{}: {}: {}", at.line, at.column, error.path, error.message)
    })
}

/// Reads a sample into the envelope `source` would hand to the bridge.
pub fn read(file: &SampleFile, model: &SourceModel) -> Result<Envelope, SampleError> {
    let source = protocol_of(model);
    if let Some(protocol) = file.protocol.filter(|p| *p != source) {
        return Err(SampleError::new(
            "protocol",
            format!(
                "the sample is {}, but the bridge's source is {}",
                protocol.name(),
                source.name()
            ),
        ));
    }
    let mut misplaced: Vec<&str> = Vec::new();
    let mut only = |field: &'static str, present: bool, allowed: &[Protocol]| {
        if present && !allowed.contains(&source) {
            misplaced.push(field);
        }
    };
    use Protocol::{Amqp10, Amqp091, Kafka};
    only("exchange", file.exchange.is_some(), &[Amqp091]);
    only("routing_key", file.routing_key.is_some(), &[Amqp091]);
    only("redelivered", file.redelivered.is_some(), &[Amqp091]);
    only("topic", file.topic.is_some(), &[Kafka]);
    only("partition", file.partition.is_some(), &[Kafka]);
    only("offset", file.offset.is_some(), &[Kafka]);
    only("key", file.key.is_some(), &[Kafka]);
    only("timestamp", file.timestamp.is_some(), &[Kafka]);
    only("header", file.header.is_some(), &[Amqp10]);
    only("properties", !file.properties.is_empty(), &[Amqp091, Amqp10]);
    only("headers", !file.headers.is_empty(), &[Amqp091, Kafka]);
    only("annotations", !file.annotations.is_empty(), &[Amqp10]);
    only("application_properties", !file.application_properties.is_empty(), &[Amqp10]);
    if let Some(field) = misplaced.first() {
        return Err(SampleError::new(
            *field,
            format!("`{field}` does not apply to messages from a {} source", source.name()),
        ));
    }
    match model {
        SourceModel::Amqp091 { queue, .. } => super::native::amqp091(file, SourceName(queue)),
        SourceModel::Kafka { topics, .. } => {
            let topic = topics.first().map_or("", String::as_str);
            super::native::kafka(file, SourceName(topic))
        }
        SourceModel::Amqp10 { connection, name, node, .. } => {
            let (address, _) = crate::amqp10::address(connection.flavor, *node, name);
            super::native::amqp10(file, SourceName(&address))
        }
    }
}

/// The protocol a source speaks.
pub fn protocol_of(model: &SourceModel) -> Protocol {
    match model {
        SourceModel::Amqp091 { .. } => Protocol::Amqp091,
        SourceModel::Kafka { .. } => Protocol::Kafka,
        SourceModel::Amqp10 { .. } => Protocol::Amqp10,
    }
}

/// The unit a protocol writes timestamps in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Millis,
}

/// Reads a typed value.
pub fn typed(yaml: &Yaml, path: &str, unit: TimeUnit) -> Result<Value, SampleError> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::I64(i),
            (None, Some(u), _) => Value::U64(u),
            (None, None, Some(f)) => Value::F64(f),
            _ => return Err(SampleError::new(path, "not a number")),
        },
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => Value::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| typed(item, &format!("{path}[{i}]"), unit))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(map) => {
            if let Some(bytes) = raw_bytes(yaml, path)? {
                return Ok(Value::Bytes(bytes));
            }
            match map.get("type") {
                Some(Yaml::String(kind)) => explicit(kind, map, path, unit)?,
                _ => {
                    let mut entries = Vec::new();
                    for (key, value) in map {
                        let key = key_text(key, path)?;
                        let at = format!("{path}.{key}");
                        entries.push((key, typed(value, &at, unit)?));
                    }
                    Value::Map(entries)
                }
            }
        }
        Yaml::Tagged(_) => return Err(SampleError::new(path, "YAML tags are not values here")),
    })
}

/// `{ hex: ... }` or `{ base64: ... }`, as the only key: raw bytes.
pub fn raw_bytes(yaml: &Yaml, path: &str) -> Result<Option<Bytes>, SampleError> {
    let Yaml::Mapping(map) = yaml else { return Ok(None) };
    if map.len() != 1 {
        return Ok(None);
    }
    let Some((Yaml::String(form), Yaml::String(text))) = map.iter().next() else {
        return Ok(None);
    };
    let decoded = match form.as_str() {
        "hex" => decode_hex(text),
        "base64" => BASE64.decode(text.trim()).ok(),
        "text" => Some(text.as_bytes().to_vec()),
        _ => return Ok(None),
    };
    decoded
        .map(|b| Some(Bytes::from(b)))
        .ok_or_else(|| SampleError::new(format!("{path}.{form}"), format!("not valid {form}")))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() % 2 != 0 || !digits.is_ascii() {
        return None;
    }
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok()).collect()
}

fn key_text(key: &Yaml, path: &str) -> Result<String, SampleError> {
    match key {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Number(n) => Ok(n.to_string()),
        Yaml::Bool(b) => Ok(b.to_string()),
        _ => Err(SampleError::new(path, "map keys are strings")),
    }
}

/// The type names a sample accepts, generic first, then the protocols' own.
pub const TYPES: &str = "null, bool, int8 (byte), uint8 (ubyte), int16 (short), uint16 (ushort), \
                         int32 (int), uint32 (uint), int64 (long), uint64 (ulong), float, double, \
                         decimal, string, symbol, bytes (binary), timestamp, uuid, list (array), \
                         map (table)";

fn explicit(
    kind: &str,
    map: &serde_yaml_ng::Mapping,
    path: &str,
    unit: TimeUnit,
) -> Result<Value, SampleError> {
    for key in map.keys() {
        let known = ["type", "value", "hex", "base64"];
        if !matches!(key, Yaml::String(k) if known.contains(&k.as_str())) {
            let key = key_text(key, path)?;
            return Err(SampleError::new(
                format!("{path}.{key}"),
                "a typed value has `type` and `value` (or `hex` / `base64` for bytes)",
            ));
        }
    }
    let at = format!("{path}.value");
    let missing = || SampleError::new(path, format!("missing `value` for type {kind}"));
    let value = map.get("value");
    let bad = |why: &str| SampleError::new(at.clone(), format!("not a valid {kind}: {why}"));
    let int = |v: Option<&Yaml>| -> Result<i128, SampleError> {
        match v.ok_or_else(missing)? {
            Yaml::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or(n.as_u64().map(i128::from))
                .ok_or_else(|| bad("not an integer")),
            Yaml::String(s) => s.trim().parse().map_err(|_| bad("not an integer")),
            _ => Err(bad("not an integer")),
        }
    };
    let fit = |n: i128| bad(&format!("{n} is out of range"));
    let text = |v: Option<&Yaml>| -> Result<String, SampleError> {
        match v.ok_or_else(missing)? {
            Yaml::String(s) => Ok(s.clone()),
            Yaml::Number(n) => Ok(n.to_string()),
            Yaml::Bool(b) => Ok(b.to_string()),
            _ => Err(bad("write it as text")),
        }
    };
    Ok(match kind {
        "null" | "void" => Value::Null,
        "bool" | "boolean" => match value.ok_or_else(missing)? {
            Yaml::Bool(b) => Value::Bool(*b),
            _ => return Err(bad("write true or false")),
        },
        "int8" | "byte" => {
            int(value).and_then(|n| i8::try_from(n).map_err(|_| fit(n))).map(Value::I8)?
        }
        "uint8" | "ubyte" => {
            int(value).and_then(|n| u8::try_from(n).map_err(|_| fit(n))).map(Value::U8)?
        }
        "int16" | "short" => {
            int(value).and_then(|n| i16::try_from(n).map_err(|_| fit(n))).map(Value::I16)?
        }
        "uint16" | "ushort" => {
            int(value).and_then(|n| u16::try_from(n).map_err(|_| fit(n))).map(Value::U16)?
        }
        "int32" | "int" => {
            int(value).and_then(|n| i32::try_from(n).map_err(|_| fit(n))).map(Value::I32)?
        }
        "uint32" | "uint" => {
            int(value).and_then(|n| u32::try_from(n).map_err(|_| fit(n))).map(Value::U32)?
        }
        "int64" | "long" => {
            int(value).and_then(|n| i64::try_from(n).map_err(|_| fit(n))).map(Value::I64)?
        }
        "uint64" | "ulong" => {
            int(value).and_then(|n| u64::try_from(n).map_err(|_| fit(n))).map(Value::U64)?
        }
        "float" | "float32" => {
            let t = text(value)?;
            Value::F32(t.parse().map_err(|_| bad("not a number"))?)
        }
        "double" | "float64" => {
            let t = text(value)?;
            Value::F64(t.parse().map_err(|_| bad("not a number"))?)
        }
        "decimal" => {
            let t = text(value)?;
            Value::from_text(t.as_bytes(), Some(&serde_json::Value::String("decimal".into())))
                .map_err(|_| bad("write digits with an optional point, like 19.90"))?
        }
        "string" | "symbol" => Value::String(text(value)?),
        "bytes" | "binary" => match raw_bytes_of(map, path)? {
            Some(bytes) => Value::Bytes(bytes),
            None => Value::Bytes(Bytes::from(text(value)?)),
        },
        "timestamp" => {
            let n = int(value)?;
            let n = i64::try_from(n).map_err(|_| fit(n))?;
            let ms = match unit {
                TimeUnit::Seconds => n.checked_mul(1000).ok_or_else(|| fit(i128::from(n)))?,
                TimeUnit::Millis => n,
            };
            Value::Timestamp(ms)
        }
        "uuid" => {
            let t = text(value)?;
            Value::Uuid(t.parse().map_err(|_| bad("not a UUID"))?)
        }
        "list" | "array" => match value.ok_or_else(missing)? {
            list @ Yaml::Sequence(_) => typed(list, &at, unit)?,
            _ => return Err(bad("write a YAML list")),
        },
        "map" | "table" => match value.ok_or_else(missing)? {
            Yaml::Mapping(entries) => {
                let mut out = Vec::new();
                for (key, item) in entries {
                    let key = key_text(key, &at)?;
                    let item_path = format!("{at}.{key}");
                    out.push((key, typed(item, &item_path, unit)?));
                }
                Value::Map(out)
            }
            _ => return Err(bad("write a YAML map")),
        },
        other => {
            return Err(SampleError::new(
                format!("{path}.type"),
                format!("unknown type {other:?}; use one of {TYPES}"),
            ));
        }
    })
}

fn raw_bytes_of(map: &serde_yaml_ng::Mapping, path: &str) -> Result<Option<Bytes>, SampleError> {
    for form in ["hex", "base64"] {
        if let Some(Yaml::String(text)) = map.get(form) {
            let mut single = serde_yaml_ng::Mapping::new();
            single.insert(Yaml::String(form.into()), Yaml::String(text.clone()));
            return raw_bytes(&Yaml::Mapping(single), path);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Yaml {
        serde_yaml_ng::from_str(text).expect("yaml")
    }

    #[test]
    fn values_take_their_written_types() {
        let read = |t: &str| typed(&yaml(t), "v", TimeUnit::Seconds);
        assert_eq!(read("3"), Ok(Value::I64(3)));
        assert_eq!(read("{ type: int32, value: 3 }"), Ok(Value::I32(3)));
        assert_eq!(read("{ type: uint8, value: 255 }"), Ok(Value::U8(255)));
        assert_eq!(
            read("{ type: decimal, value: \"19.90\" }"),
            Ok(Value::Decimal { scale: 2, value: 1990 })
        );
        assert_eq!(
            read("{ type: timestamp, value: 1700000000 }"),
            Ok(Value::Timestamp(1_700_000_000_000))
        );
        assert_eq!(read("{ hex: \"00 ff\" }"), Ok(Value::Bytes(Bytes::from_static(&[0, 0xff]))));
        assert_eq!(
            read("{ type: bytes, base64: \"AP8=\" }"),
            Ok(Value::Bytes(Bytes::from_static(&[0, 0xff])))
        );
        assert_eq!(
            read("[1, { type: int16, value: -2 }]"),
            Ok(Value::List(vec![Value::I64(1), Value::I16(-2)]))
        );
        assert_eq!(
            read("{ uri: amqp://x, n: { type: int, value: 1 } }"),
            Ok(Value::Map(vec![
                ("uri".into(), Value::String("amqp://x".into())),
                ("n".into(), Value::I32(1)),
            ]))
        );
    }

    #[test]
    fn a_wrong_value_names_its_path() {
        let read = |t: &str| typed(&yaml(t), "headers.n", TimeUnit::Millis);
        assert_eq!(
            read("{ type: uint8, value: 300 }"),
            Err(SampleError::new("headers.n.value", "not a valid uint8: 300 is out of range"))
        );
        assert_eq!(
            read("{ type: int33, value: 1 }").map_err(|e| e.path),
            Err("headers.n.type".to_owned())
        );
    }
}
