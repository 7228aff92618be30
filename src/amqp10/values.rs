//! AMQP 1.0 values to envelope values and back.
//!
//! Every AMQP 1.0 primitive has an envelope type except the IEEE 754-2008 decimals and
//! described values, which keep their encoded bytes rather than vanish. Application
//! properties take only simple values, and JMS narrows them further (see [`to_simple`]).

use bytes::Bytes;
use fe2o3_amqp::types::primitives::{
    SimpleValue, Symbol, Timestamp, Uuid as AmqpUuid, Value as AmqpValueT,
};

use crate::pipeline::Value;

/// Reads any AMQP 1.0 value.
pub fn from_amqp(value: &AmqpValueT) -> Value {
    match value {
        AmqpValueT::Null => Value::Null,
        AmqpValueT::Bool(b) => Value::Bool(*b),
        AmqpValueT::Ubyte(n) => Value::U8(*n),
        AmqpValueT::Ushort(n) => Value::U16(*n),
        AmqpValueT::Uint(n) => Value::U32(*n),
        AmqpValueT::Ulong(n) => Value::U64(*n),
        AmqpValueT::Byte(n) => Value::I8(*n),
        AmqpValueT::Short(n) => Value::I16(*n),
        AmqpValueT::Int(n) => Value::I32(*n),
        AmqpValueT::Long(n) => Value::I64(*n),
        AmqpValueT::Float(n) => Value::F32(n.into_inner()),
        AmqpValueT::Double(n) => Value::F64(n.into_inner()),
        AmqpValueT::Char(c) => Value::String(c.to_string()),
        AmqpValueT::Timestamp(t) => Value::Timestamp(t.milliseconds()),
        AmqpValueT::Uuid(u) => Value::Uuid(uuid::Uuid::from_bytes(*u.as_inner())),
        AmqpValueT::Binary(b) => Value::Bytes(Bytes::copy_from_slice(b.as_ref())),
        AmqpValueT::String(s) => Value::String(s.clone()),
        AmqpValueT::Symbol(Symbol(s)) => Value::String(s.clone()),
        AmqpValueT::List(items) => Value::List(items.iter().map(from_amqp).collect()),
        AmqpValueT::Array(items) => Value::List(items.0.iter().map(from_amqp).collect()),
        AmqpValueT::Map(entries) => {
            Value::Map(entries.iter().map(|(k, v)| (key_text(k), from_amqp(v))).collect())
        }
        // IEEE 754-2008 decimals and described values have no envelope type; keep their
        // encoding's bytes so nothing is silently dropped.
        other => Value::Bytes(Bytes::from(serde_amqp::to_vec(other).unwrap_or_default())),
    }
}

fn key_text(key: &AmqpValueT) -> String {
    match key {
        AmqpValueT::String(s) | AmqpValueT::Symbol(Symbol(s)) => s.clone(),
        other => from_amqp(other).to_template_text().unwrap_or_default(),
    }
}

pub fn from_simple(value: &SimpleValue) -> Value {
    match value {
        SimpleValue::Null => Value::Null,
        SimpleValue::Bool(b) => Value::Bool(*b),
        SimpleValue::Ubyte(n) => Value::U8(*n),
        SimpleValue::Ushort(n) => Value::U16(*n),
        SimpleValue::Uint(n) => Value::U32(*n),
        SimpleValue::Ulong(n) => Value::U64(*n),
        SimpleValue::Byte(n) => Value::I8(*n),
        SimpleValue::Short(n) => Value::I16(*n),
        SimpleValue::Int(n) => Value::I32(*n),
        SimpleValue::Long(n) => Value::I64(*n),
        SimpleValue::Float(n) => Value::F32(n.into_inner()),
        SimpleValue::Double(n) => Value::F64(n.into_inner()),
        SimpleValue::Char(c) => Value::String(c.to_string()),
        SimpleValue::Timestamp(t) => Value::Timestamp(t.milliseconds()),
        SimpleValue::Uuid(u) => Value::Uuid(uuid::Uuid::from_bytes(*u.as_inner())),
        SimpleValue::Binary(b) => Value::Bytes(Bytes::copy_from_slice(b.as_ref())),
        SimpleValue::String(s) => Value::String(s.clone()),
        SimpleValue::Symbol(Symbol(s)) => Value::String(s.clone()),
        other => Value::Bytes(Bytes::from(serde_amqp::to_vec(other).unwrap_or_default())),
    }
}

/// Writes any value as an AMQP 1.0 value.
pub fn to_amqp(value: &Value) -> AmqpValueT {
    match value {
        Value::Null => AmqpValueT::Null,
        Value::Bool(b) => AmqpValueT::Bool(*b),
        Value::I8(n) => AmqpValueT::Byte(*n),
        Value::U8(n) => AmqpValueT::Ubyte(*n),
        Value::I16(n) => AmqpValueT::Short(*n),
        Value::U16(n) => AmqpValueT::Ushort(*n),
        Value::I32(n) => AmqpValueT::Int(*n),
        Value::U32(n) => AmqpValueT::Uint(*n),
        Value::I64(n) => AmqpValueT::Long(*n),
        Value::U64(n) => AmqpValueT::Ulong(*n),
        Value::F32(n) => AmqpValueT::Float((*n).into()),
        Value::F64(n) => AmqpValueT::Double((*n).into()),
        Value::Timestamp(ms) => AmqpValueT::Timestamp(Timestamp::from_milliseconds(*ms)),
        Value::Uuid(u) => AmqpValueT::Uuid(AmqpUuid::from(*u.as_bytes())),
        Value::Bytes(b) => AmqpValueT::Binary(b.to_vec().into()),
        Value::String(s) => AmqpValueT::String(s.clone()),
        // AMQP 1.0 decimals are IEEE 754-2008, a different encoding: carry the exact text.
        Value::Decimal { .. } => AmqpValueT::String(value.to_template_text().unwrap_or_default()),
        Value::List(items) => AmqpValueT::List(items.iter().map(to_amqp).collect()),
        Value::Map(entries) => AmqpValueT::Map(
            entries.iter().map(|(k, v)| (AmqpValueT::String(k.clone()), to_amqp(v))).collect(),
        ),
    }
}

/// The value as an application property, or `None` when it must travel as text (lists,
/// maps and decimals always; bytes and unsigned integers for JMS, which has neither).
pub fn to_simple(value: &Value, jms: bool) -> Option<SimpleValue> {
    Some(match value {
        Value::Null => SimpleValue::Null,
        Value::Bool(b) => SimpleValue::Bool(*b),
        Value::I8(n) => SimpleValue::Byte(*n),
        Value::I16(n) => SimpleValue::Short(*n),
        Value::I32(n) => SimpleValue::Int(*n),
        Value::I64(n) => SimpleValue::Long(*n),
        // JMS has no unsigned types: widen to the next signed one, value exact.
        Value::U8(n) if jms => SimpleValue::Short(i16::from(*n)),
        Value::U16(n) if jms => SimpleValue::Int(i32::from(*n)),
        Value::U32(n) if jms => SimpleValue::Long(i64::from(*n)),
        Value::U8(n) => SimpleValue::Ubyte(*n),
        Value::U16(n) => SimpleValue::Ushort(*n),
        Value::U32(n) => SimpleValue::Uint(*n),
        Value::U64(n) if !jms => SimpleValue::Ulong(*n),
        Value::F32(n) => SimpleValue::Float((*n).into()),
        Value::F64(n) => SimpleValue::Double((*n).into()),
        Value::Timestamp(ms) if !jms => SimpleValue::Timestamp(Timestamp::from_milliseconds(*ms)),
        Value::Uuid(u) if !jms => SimpleValue::Uuid(AmqpUuid::from(*u.as_bytes())),
        Value::Bytes(b) if !jms => SimpleValue::Binary(b.to_vec().into()),
        Value::String(s) => SimpleValue::String(s.clone()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars_and_symbols_arrive_as_strings() {
        // A2R-12: the envelope has no char or symbol type.
        let props = [SimpleValue::Char('é'), SimpleValue::Symbol(Symbol::from("sym"))];
        let got: Vec<Value> = props.iter().map(from_simple).collect();
        assert_eq!(got, [Value::String("é".into()), Value::String("sym".into())]);
    }
}
