//! Typed header values and their text form.
//!
//! [`Value`] holds every type a header can have in AMQP 0-9-1 field tables and AMQP 1.0
//! application properties. Kafka headers are only bytes, so values crossing into Kafka are
//! written as readable text (strings as UTF-8, numbers and booleans as text, bytes raw, lists
//! and maps as JSON) and their types are recorded beside them as a *shape*: a tag such as
//! `"i32"` for a scalar, a JSON array of shapes for a list, a JSON object for a map. Text plus
//! shape restores the exact value; see [`Value::to_text`] and [`Value::from_text`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Map as JsonMap, Value as Json};

/// One header value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
    /// 0-9-1 decimal: `value × 10^-scale`.
    Decimal {
        scale: u8,
        value: i32,
    },
    String(String),
    Bytes(Bytes),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid(uuid::Uuid),
    List(Vec<Value>),
    Map(Vec<(String, Value)>),
}

/// Why a text/shape pair could not be turned back into a value.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {text:?} as {shape}")]
pub struct ShapeError {
    text: String,
    shape: String,
}

impl Value {
    /// The type tag used in shapes and in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::I8(_) => "i8",
            Value::U8(_) => "u8",
            Value::I16(_) => "i16",
            Value::U16(_) => "u16",
            Value::I32(_) => "i32",
            Value::U32(_) => "u32",
            Value::I64(_) => "i64",
            Value::U64(_) => "u64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Decimal { .. } => "decimal",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Timestamp(_) => "timestamp",
            Value::Uuid(_) => "uuid",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// The readable text form, or `None` for null (which Kafka carries as a null header).
    pub fn to_text(&self) -> Option<Bytes> {
        let text = match self {
            Value::Null => return None,
            Value::String(s) => return Some(Bytes::copy_from_slice(s.as_bytes())),
            Value::Bytes(b) => return Some(b.clone()),
            Value::List(_) | Value::Map(_) => self.to_json().to_string(),
            other => other.scalar_text(),
        };
        Some(Bytes::from(text))
    }

    /// The value as text for templates: strings as they are, bytes only when UTF-8.
    pub fn to_template_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_owned),
            other => other.to_text().map(|t| String::from_utf8_lossy(&t).into_owned()),
        }
    }

    /// The shape recorded beside the text; `None` when the text alone restores the value
    /// (strings) or when no text is written (null).
    pub fn shape(&self) -> Option<Json> {
        match self {
            Value::Null | Value::String(_) => None,
            Value::List(items) => Some(Json::Array(items.iter().map(Value::inner_shape).collect())),
            Value::Map(entries) => Some(Json::Object(
                entries.iter().map(|(k, v)| (k.clone(), v.inner_shape())).collect(),
            )),
            other => Some(Json::String(other.type_name().to_owned())),
        }
    }

    /// Rebuilds a value from its text and shape (`None` shape means a string or bytes).
    pub fn from_text(text: &[u8], shape: Option<&Json>) -> Result<Value, ShapeError> {
        let Some(shape) = shape else {
            return Ok(match std::str::from_utf8(text) {
                Ok(s) => Value::String(s.to_owned()),
                Err(_) => Value::Bytes(Bytes::copy_from_slice(text)),
            });
        };
        let fail = || ShapeError {
            text: String::from_utf8_lossy(text).into_owned(),
            shape: shape.to_string(),
        };
        match shape {
            Json::String(tag) if tag == "bytes" => Ok(Value::Bytes(Bytes::copy_from_slice(text))),
            Json::String(tag) if tag == "string" => {
                let s = std::str::from_utf8(text).map_err(|_| fail())?;
                Ok(Value::String(s.to_owned()))
            }
            Json::String(tag) => {
                let s = std::str::from_utf8(text).map_err(|_| fail())?;
                Value::parse_scalar(tag, s).ok_or_else(fail)
            }
            Json::Array(_) | Json::Object(_) => {
                let json: Json = serde_json::from_slice(text).map_err(|_| fail())?;
                Value::from_json(&json, shape).ok_or_else(fail)
            }
            _ => Err(fail()),
        }
    }

    /// Reads plain JSON (no recorded shape) with the types JMS would give it: integers as
    /// `i64` (or `u64` above its range), other numbers as `f64`, objects as maps.
    pub fn from_plain_json(json: &Json) -> Value {
        match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Value::I64(i),
                (None, Some(u), _) => Value::U64(u),
                (None, None, f) => Value::F64(f.unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::List(items.iter().map(Value::from_plain_json).collect()),
            Json::Object(entries) => Value::Map(
                entries.iter().map(|(k, v)| (k.clone(), Value::from_plain_json(v))).collect(),
            ),
        }
    }

    /// Rebuilds the value that `self` carried, from the shape recorded beside it. `self` is
    /// the value as a narrower protocol read it back: a `u32` widened to `i64`, a uuid or a
    /// `u64` as text, a timestamp as milliseconds, a list of such values.
    pub fn restore(&self, shape: &Json) -> Option<Value> {
        match (self, shape) {
            (Value::Bytes(_), Json::String(tag)) if tag == "bytes" => Some(self.clone()),
            (_, Json::String(tag)) => Value::parse_scalar(tag, &self.to_template_text()?),
            _ => Value::from_json(&self.to_json(), shape),
        }
    }

    /// The shape of a value inside a list or map, which always names its type.
    pub fn inner_shape(&self) -> Json {
        match self {
            Value::String(_) => Json::String("string".to_owned()),
            Value::Null => Json::String("null".to_owned()),
            other => other.shape().unwrap_or(Json::Null),
        }
    }

    fn scalar_text(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::I8(n) => n.to_string(),
            Value::U8(n) => n.to_string(),
            Value::I16(n) => n.to_string(),
            Value::U16(n) => n.to_string(),
            Value::I32(n) => n.to_string(),
            Value::U32(n) => n.to_string(),
            Value::I64(n) => n.to_string(),
            Value::U64(n) => n.to_string(),
            Value::F32(n) => float_text(f64::from(*n), n.to_string()),
            Value::F64(n) => float_text(*n, n.to_string()),
            Value::Decimal { scale, value } => decimal_text(*scale, *value),
            Value::Timestamp(ms) => ms.to_string(),
            Value::Uuid(u) => u.to_string(),
            Value::String(s) => s.clone(),
            Value::Bytes(b) => BASE64.encode(b),
            Value::Null | Value::List(_) | Value::Map(_) => String::new(),
        }
    }

    fn parse_scalar(tag: &str, s: &str) -> Option<Value> {
        Some(match tag {
            "bool" => Value::Bool(s.parse().ok()?),
            "i8" => Value::I8(s.parse().ok()?),
            "u8" => Value::U8(s.parse().ok()?),
            "i16" => Value::I16(s.parse().ok()?),
            "u16" => Value::U16(s.parse().ok()?),
            "i32" => Value::I32(s.parse().ok()?),
            "u32" => Value::U32(s.parse().ok()?),
            "i64" => Value::I64(s.parse().ok()?),
            "u64" => Value::U64(s.parse().ok()?),
            "f32" => Value::F32(s.parse().ok()?),
            "f64" => Value::F64(s.parse().ok()?),
            "decimal" => parse_decimal(s)?,
            "timestamp" => Value::Timestamp(s.parse().ok()?),
            "uuid" => Value::Uuid(s.parse().ok()?),
            "string" => Value::String(s.to_owned()),
            "bytes" | "base64" => Value::Bytes(Bytes::from(BASE64.decode(s).ok()?)),
            "null" => Value::Null,
            _ => return None,
        })
    }

    /// The JSON form used inside lists and maps: numbers as numbers where JSON holds them
    /// exactly, everything else as its text.
    fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::I8(n) => Json::from(*n),
            Value::U8(n) => Json::from(*n),
            Value::I16(n) => Json::from(*n),
            Value::U16(n) => Json::from(*n),
            Value::I32(n) => Json::from(*n),
            Value::U32(n) => Json::from(*n),
            Value::I64(n) => Json::from(*n),
            Value::U64(n) => Json::from(*n),
            Value::Timestamp(n) => Json::from(*n),
            Value::F32(n) if n.is_finite() => Json::from(f64::from(*n)),
            Value::F64(n) if n.is_finite() => Json::from(*n),
            Value::String(s) => Json::String(s.clone()),
            Value::List(items) => Json::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(entries) => Json::Object(
                entries.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<JsonMap<_, _>>(),
            ),
            other => Json::String(other.scalar_text()),
        }
    }

    fn from_json(json: &Json, shape: &Json) -> Option<Value> {
        match (json, shape) {
            (Json::Array(items), Json::Array(shapes)) if items.len() == shapes.len() => items
                .iter()
                .zip(shapes)
                .map(|(item, shape)| Value::from_json(item, shape))
                .collect::<Option<Vec<_>>>()
                .map(Value::List),
            (Json::Object(entries), Json::Object(shapes)) => entries
                .iter()
                .map(|(k, v)| Some((k.clone(), Value::from_json(v, shapes.get(k)?)?)))
                .collect::<Option<Vec<_>>>()
                .map(Value::Map),
            (Json::Null, _) => Some(Value::Null),
            (Json::String(s), Json::String(tag)) => Value::parse_scalar(tag, s),
            (Json::Bool(b), Json::String(tag)) if tag == "bool" => Some(Value::Bool(*b)),
            (Json::Number(n), Json::String(tag)) => Value::parse_scalar(tag, &n.to_string()),
            _ => None,
        }
    }
}

/// The first element of a [`repeated`] shape.
const REPEATED: &str = "*";

/// The shape recorded for a header name that occurs more than once (Kafka allows it): the
/// values travel as one list where the target holds a name once, and `["*", s1, s2, …]`
/// says so, with the shape of each occurrence in order.
pub fn repeated<'a>(values: impl Iterator<Item = &'a Value>) -> Json {
    let shapes = values.map(Value::inner_shape);
    Json::Array(std::iter::once(Json::String(REPEATED.to_owned())).chain(shapes).collect())
}

/// For a [`repeated`] shape, the shape of the list of its occurrences.
pub fn occurrences(shape: &Json) -> Option<Json> {
    match shape {
        Json::Array(items) if items.first().and_then(Json::as_str) == Some(REPEATED) => {
            Some(Json::Array(items[1..].to_vec()))
        }
        _ => None,
    }
}

fn float_text(n: f64, shortest: String) -> String {
    if n.is_nan() {
        "NaN".to_owned()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        shortest
    }
}

fn decimal_text(scale: u8, value: i32) -> String {
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    let scale = usize::from(scale);
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{frac}")
}

fn parse_decimal(s: &str) -> Option<Value> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let scale = u8::try_from(frac.len()).ok()?;
    let value: i32 = format!("{whole}{frac}").parse().ok()?;
    Some(Value::Decimal { scale, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(value: Value) {
        let text = value.to_text().unwrap_or_default();
        let shape = value.shape();
        let back = Value::from_text(&text, shape.as_ref()).expect("restores");
        if value == Value::Null {
            return;
        }
        assert_eq!(back, value, "text {:?} shape {:?}", text, shape);
    }

    #[test]
    fn scalars_survive_text_and_shape() {
        for v in [
            Value::Bool(true),
            Value::I8(-128),
            Value::U8(255),
            Value::I16(-7),
            Value::U16(65535),
            Value::I32(i32::MIN),
            Value::U32(4_000_000_000),
            Value::I64(i64::MIN),
            Value::U64(u64::MAX),
            Value::F32(1.5),
            Value::F64(0.25),
            Value::Decimal { scale: 2, value: -1234 },
            Value::Decimal { scale: 3, value: 5 },
            Value::Timestamp(1_700_000_000_123),
            Value::Uuid(uuid::Uuid::from_u128(0x1234)),
            Value::Bytes(Bytes::from_static(&[0, 0x53, 0xC1, 0xFF])),
            Value::String("héllo".into()),
            Value::String(String::new()),
        ] {
            round_trip(v);
        }
    }

    #[test]
    fn nested_values_survive_as_json() {
        let table = Value::Map(vec![
            ("uri".into(), Value::String("amqp://upstream-1".into())),
            ("redelivered".into(), Value::Bool(false)),
            ("count".into(), Value::I64(3)),
            ("raw".into(), Value::Bytes(Bytes::from_static(b"\x01\xff"))),
        ]);
        let list = Value::List(vec![table.clone(), Value::Null]);
        round_trip(list);
        round_trip(Value::List(vec![Value::I32(1), Value::I32(2)]));
        assert_eq!(
            Value::List(vec![Value::I32(1), Value::I32(2)]).to_text().as_deref(),
            Some(&b"[1,2]"[..])
        );
    }

    #[test]
    fn text_is_readable_without_the_shape() {
        assert_eq!(Value::I32(21).to_text().as_deref(), Some(&b"21"[..]));
        assert_eq!(Value::Bool(true).to_text().as_deref(), Some(&b"true"[..]));
        assert_eq!(Value::F64(f64::NAN).to_text().as_deref(), Some(&b"NaN"[..]));
        assert_eq!(Value::Decimal { scale: 2, value: 1990 }.scalar_text(), "19.90");
        assert_eq!(Value::Null.to_text(), None);
    }

    #[test]
    fn doubles_inside_lists_come_back_bit_for_bit() {
        // R2K-12: JSON numbers are read back exactly, not to the nearest fast guess.
        round_trip(Value::Map(vec![("a".into(), Value::F64(1.785_151_033_370_298_6e-162))]));
        round_trip(Value::List(vec![Value::F64(f64::MIN_POSITIVE), Value::F64(-0.0)]));
    }

    #[test]
    fn nan_survives_the_round_trip() {
        let text = Value::F64(f64::NAN).to_text().unwrap_or_default();
        let back = Value::from_text(&text, Some(&Json::String("f64".into()))).expect("parses");
        assert!(matches!(back, Value::F64(n) if n.is_nan()));
    }

    #[test]
    fn a_wrong_shape_is_an_error_not_a_guess() {
        assert!(Value::from_text(b"abc", Some(&Json::String("i32".into()))).is_err());
    }
}
