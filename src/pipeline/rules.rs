//! Per-bridge rules that set properties and headers from templates (`set:` in a bridge).
//!
//! They change what the sink receives, never what the dead letter receives: a dead letter
//! always carries the message as the source delivered it.

use super::envelope::{Envelope, MessageId};
use super::template::{MissingValue, Template};
use super::value::Value;

/// The property a rule sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    MessageId,
    CorrelationId,
    Subject,
    Type,
    ReplyTo,
    ContentType,
    GroupId,
}

impl Field {
    /// The names accepted under `set:`, other than `headers`.
    pub const NAMES: &[(&str, Field)] = &[
        ("message_id", Field::MessageId),
        ("correlation_id", Field::CorrelationId),
        ("subject", Field::Subject),
        ("type", Field::Type),
        ("reply_to", Field::ReplyTo),
        ("content_type", Field::ContentType),
        ("group_id", Field::GroupId),
    ];
}

#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub properties: Vec<(Field, Template)>,
    pub headers: Vec<(String, Template)>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty() && self.headers.is_empty()
    }

    /// The envelope as the sink should see it, or `None` when no rule applies.
    pub fn apply(&self, envelope: &Envelope) -> Result<Option<Envelope>, MissingValue> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut out = envelope.clone();
        for (field, template) in &self.properties {
            let value = template.render(envelope)?;
            let p = &mut out.properties;
            match field {
                Field::MessageId => p.message_id = Some(MessageId::parse(&value)),
                Field::CorrelationId => p.correlation_id = Some(MessageId::parse(&value)),
                Field::Subject => p.subject = Some(value),
                Field::Type => p.message_type = Some(value),
                Field::ReplyTo => p.reply_to = Some(value),
                Field::ContentType => p.content_type = Some(value),
                Field::GroupId => p.group_id = Some(value),
            }
        }
        for (name, template) in &self.headers {
            let value = Value::String(template.render(envelope)?);
            match out.headers.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value,
                None => out.headers.push((name.clone(), value)),
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_properties_and_headers_from_templates() {
        let mut env = Envelope::default();
        env.origin.key = Some(bytes::Bytes::from_static(b"order-42"));
        let rules = Rules {
            properties: vec![(Field::CorrelationId, Template::parse("{key}", None).expect("ok"))],
            headers: vec![("origin".into(), Template::parse("kafka:{key}", None).expect("ok"))],
        };
        let out = rules.apply(&env).expect("renders").expect("changed");
        assert_eq!(out.properties.correlation_id, Some(MessageId::String("order-42".into())));
        assert_eq!(out.header("origin"), Some(&Value::String("kafka:order-42".into())));
        assert_eq!(env.properties.correlation_id, None, "the original stays untouched");
    }
}
