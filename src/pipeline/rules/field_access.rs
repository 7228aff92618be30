//! The standard properties a rule can name, and how a rule reads, takes and sets them.
//!
//! A property is set through the header that carries it where a protocol has no field for
//! it, so that every property takes header values through one set of conversions.

use crate::pipeline::carry;
use crate::pipeline::envelope::{Envelope, MessageId, Properties};
use crate::pipeline::route::TranslateError;
use crate::pipeline::value::Value;

/// A standard property a rule can set, move or drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    MessageId,
    CorrelationId,
    Subject,
    Type,
    ReplyTo,
    ContentType,
    ContentEncoding,
    GroupId,
    AppId,
    UserId,
    Priority,
    CreationTime,
    Expiration,
}

impl Field {
    /// The names accepted in bridges.yaml.
    pub const NAMES: &[(&str, Field)] = &[
        ("message_id", Field::MessageId),
        ("correlation_id", Field::CorrelationId),
        ("subject", Field::Subject),
        ("type", Field::Type),
        ("reply_to", Field::ReplyTo),
        ("content_type", Field::ContentType),
        ("content_encoding", Field::ContentEncoding),
        ("group_id", Field::GroupId),
        ("app_id", Field::AppId),
        ("user_id", Field::UserId),
        ("priority", Field::Priority),
        ("creation_time", Field::CreationTime),
        ("expiration", Field::Expiration),
    ];

    pub fn parse(name: &str) -> Option<Field> {
        Field::NAMES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub fn name(self) -> &'static str {
        Field::NAMES.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }

    /// The header that carries this property where a protocol has no field for it; reading
    /// a value through it (see [`carry::absorb`]) gives every property one set of
    /// conversions from header values.
    pub(super) fn carrier(self) -> &'static str {
        match self {
            Field::MessageId => "amqp.message-id",
            Field::CorrelationId => "amqp.correlation-id",
            Field::Subject => "amqp.subject",
            Field::Type => "amqp.type",
            Field::ReplyTo => "amqp.reply-to",
            Field::ContentType => "content-type",
            Field::ContentEncoding => "content-encoding",
            Field::GroupId => "amqp.group-id",
            Field::AppId => "amqp.app-id",
            Field::UserId => "amqp.user-id",
            Field::Priority => "amqp.priority",
            Field::CreationTime => "amqp.creation-time-ms",
            Field::Expiration => "amqp.expiration-ms",
        }
    }

    /// Removes the property and returns it as a typed header value.
    pub(super) fn take(self, p: &mut Properties) -> Option<Value> {
        let text = |s: Option<String>| s.map(Value::String);
        match self {
            Field::MessageId => p.message_id.take().map(id_value),
            Field::CorrelationId => p.correlation_id.take().map(id_value),
            Field::Subject => text(p.subject.take()),
            Field::Type => text(p.message_type.take()),
            Field::ReplyTo => text(p.reply_to.take()),
            Field::ContentType => text(p.content_type.take()),
            Field::ContentEncoding => text(p.content_encoding.take()),
            Field::GroupId => text(p.group_id.take()),
            Field::AppId => text(p.app_id.take()),
            Field::UserId => p.user_id.take().map(|u| match String::from_utf8(u.to_vec()) {
                Ok(text) => Value::String(text),
                Err(_) => Value::Bytes(u),
            }),
            Field::Priority => p.priority.take().map(Value::U8),
            Field::CreationTime => p.creation_time_ms.take().map(Value::Timestamp),
            Field::Expiration => p.ttl_ms.take().map(Value::U64),
        }
    }

    /// The property's value as `explain` shows it, `unset` when absent.
    pub(super) fn shown(self, p: &Properties) -> String {
        let mut copy = p.clone();
        self.take(&mut copy).map_or_else(|| "unset".to_owned(), |v| shown(&v))
    }

    pub(super) fn is_set(self, p: &Properties) -> bool {
        match self {
            Field::MessageId => p.message_id.is_some(),
            Field::CorrelationId => p.correlation_id.is_some(),
            Field::Subject => p.subject.is_some(),
            Field::Type => p.message_type.is_some(),
            Field::ReplyTo => p.reply_to.is_some(),
            Field::ContentType => p.content_type.is_some(),
            Field::ContentEncoding => p.content_encoding.is_some(),
            Field::GroupId => p.group_id.is_some(),
            Field::AppId => p.app_id.is_some(),
            Field::UserId => p.user_id.is_some(),
            Field::Priority => p.priority.is_some(),
            Field::CreationTime => p.creation_time_ms.is_some(),
            Field::Expiration => p.ttl_ms.is_some(),
        }
    }

    /// Sets the property from a header value or rendered text.
    pub(super) fn put(self, envelope: &mut Envelope, value: &Value) -> Result<(), TranslateError> {
        carry::absorb(envelope, self.carrier(), value);
        if *value != Value::Null && !self.is_set(&envelope.properties) {
            let shown = value.to_template_text().unwrap_or_else(|| value.type_name().to_owned());
            return Err(TranslateError::Untranslatable(format!(
                "{} cannot hold {shown:?} ({})",
                self.name(),
                value.type_name()
            )));
        }
        Ok(())
    }
}

/// A value as `explain` shows it: text quoted, others as their text, with the type.
pub(super) fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_owned(),
        other => match other.to_template_text() {
            Some(text) => format!("{text} ({})", other.type_name()),
            None => other.type_name().to_owned(),
        },
    }
}

fn id_value(id: MessageId) -> Value {
    match id {
        MessageId::String(s) => Value::String(s),
        MessageId::Ulong(n) => Value::U64(n),
        MessageId::Uuid(u) => Value::Uuid(u),
        MessageId::Binary(b) => Value::Bytes(b),
    }
}
