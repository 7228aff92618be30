//! Conversions between envelope values and field-table values, and the small helpers both
//! sides share: header names, byte strings, seconds and milliseconds.

use bytes::Bytes;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};

use crate::connector::DeliveryError;
use crate::pipeline::Value;

/// Reads one field-table value; unknown tags never reach here (the client refuses them).
pub fn from_amqp(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::I8(*n),
        AMQPValue::ShortShortUInt(n) => Value::U8(*n),
        AMQPValue::ShortInt(n) => Value::I16(*n),
        AMQPValue::ShortUInt(n) => Value::U16(*n),
        AMQPValue::LongInt(n) => Value::I32(*n),
        AMQPValue::LongUInt(n) => Value::U32(*n),
        AMQPValue::LongLongInt(n) => Value::I64(*n),
        AMQPValue::Float(n) => Value::F32(*n),
        AMQPValue::Double(n) => Value::F64(*n),
        // The errata defines the decimal value as signed; the client reads it unsigned.
        AMQPValue::DecimalValue(d) => Value::Decimal { scale: d.scale, value: d.value as i32 },
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => Value::Bytes(Bytes::copy_from_slice(s.as_bytes())),
        },
        AMQPValue::FieldArray(items) => {
            Value::List(items.as_slice().iter().map(from_amqp).collect())
        }
        AMQPValue::Timestamp(s) => Value::Timestamp(seconds_to_ms(*s).unwrap_or(i64::MAX)),
        AMQPValue::FieldTable(t) => Value::Map(
            t.inner().iter().map(|(k, v)| (k.as_str().to_owned(), from_amqp(v))).collect(),
        ),
        AMQPValue::ByteArray(b) => Value::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// Writes one value as a field-table value.
pub fn to_amqp(value: &Value) -> Result<AMQPValue, DeliveryError> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::I8(n) => AMQPValue::ShortShortInt(*n),
        Value::U8(n) => AMQPValue::ShortInt(i16::from(*n)),
        Value::I16(n) => AMQPValue::ShortInt(*n),
        Value::U16(n) => AMQPValue::LongInt(i32::from(*n)),
        Value::I32(n) => AMQPValue::LongInt(*n),
        Value::U32(n) => AMQPValue::LongLongInt(i64::from(*n)),
        Value::I64(n) => AMQPValue::LongLongInt(*n),
        // 0-9-1 has no unsigned 64-bit type: a value above i64::MAX goes as its decimal text.
        Value::U64(n) => match i64::try_from(*n) {
            Ok(n) => AMQPValue::LongLongInt(n),
            Err(_) => AMQPValue::LongString(LongString::from(n.to_string())),
        },
        Value::F32(n) => AMQPValue::Float(*n),
        Value::F64(n) => AMQPValue::Double(*n),
        Value::Decimal { scale, value } => {
            AMQPValue::DecimalValue(DecimalValue { scale: *scale, value: *value as u32 })
        }
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
        // A time a 0-9-1 timestamp cannot hold exactly goes as milliseconds; the encoder
        // records its type.
        Value::Timestamp(ms) => match u64::try_from(*ms / 1000) {
            Ok(seconds) if whole_seconds(*ms) => AMQPValue::Timestamp(seconds),
            _ => AMQPValue::LongLongInt(*ms),
        },
        Value::Uuid(u) => AMQPValue::LongString(LongString::from(u.to_string())),
        Value::List(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(to_amqp).collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Map(entries) => {
            let mut table = FieldTable::default();
            for (k, v) in entries {
                table.insert(header_name(k)?, to_amqp(v)?);
            }
            AMQPValue::FieldTable(table)
        }
    })
}

/// Whether a 0-9-1 timestamp (unsigned seconds) holds `ms` exactly.
pub(super) fn whole_seconds(ms: i64) -> bool {
    ms >= 0 && ms % 1000 == 0
}

pub(super) fn header_name(name: &str) -> Result<ShortString, DeliveryError> {
    ShortString::try_new(name).map_err(|_| {
        DeliveryError::Encode(format!("header name of {} bytes; AMQP 0-9-1 allows 255", name.len()))
    })
}

pub(super) fn bytes_value(bytes: &[u8]) -> AMQPValue {
    match std::str::from_utf8(bytes) {
        Ok(s) => AMQPValue::LongString(LongString::from(s)),
        Err(_) => AMQPValue::ByteArray(ByteArray::from(bytes.to_vec())),
    }
}

pub(super) fn seconds_to_ms(seconds: u64) -> Option<i64> {
    i64::try_from(seconds).ok()?.checked_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_integers_widen_to_the_next_signed_type() {
        assert_eq!(
            to_amqp(&Value::U32(4_000_000_000)).ok(),
            Some(AMQPValue::LongLongInt(4_000_000_000))
        );
        assert_eq!(to_amqp(&Value::I16(7)).ok(), Some(AMQPValue::ShortInt(7)));
        assert_eq!(to_amqp(&Value::F32(1.5)).ok(), Some(AMQPValue::Float(1.5)));
        assert_eq!(
            to_amqp(&Value::U64(u64::MAX)).ok(),
            Some(AMQPValue::LongString(u64::MAX.to_string().into()))
        );
    }

    #[test]
    fn non_utf8_long_strings_become_bytes() {
        let raw = vec![0x00, 0x53, 0x74, 0xC1, 0x07];
        assert_eq!(
            from_amqp(&AMQPValue::LongString(raw.clone().into())),
            Value::Bytes(Bytes::from(raw))
        );
    }
}
