//! Applying a bridge's rules to one message, step by step, noting each change for
//! `portico explain` when asked.

use super::body_conversion::{BodyRule, convert_body};
use super::field_access::{Field, shown};
use super::{Move, RuleNote, Rules};
use crate::pipeline::envelope::Envelope;
use crate::pipeline::route::TranslateError;
use crate::pipeline::value::Value;

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
            && self.renames.is_empty()
            && self.drop_headers.is_empty()
            && self.drop_properties.is_empty()
            && self.properties.is_empty()
            && self.headers.is_empty()
            && self.body.is_none()
    }

    /// The envelope as the sink should see it, or `None` when the bridge has no rules.
    pub fn apply(&self, envelope: &Envelope) -> Result<Option<Envelope>, TranslateError> {
        self.apply_noting(envelope, None)
    }

    /// [`Rules::apply`], recording each change in `notes` when given.
    pub fn apply_noting(
        &self,
        envelope: &Envelope,
        notes: Option<&mut Vec<RuleNote>>,
    ) -> Result<Option<Envelope>, TranslateError> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut step = Step { out: envelope.clone(), notes };
        self.move_values(&mut step)?;
        self.rename_headers(&mut step);
        self.drop_fields(&mut step);
        self.set_fields(envelope, &mut step)?;
        if let Some(rule) = self.body {
            step.convert_body(rule)?;
        }
        Ok(Some(step.out))
    }

    fn move_values(&self, step: &mut Step<'_>) -> Result<(), TranslateError> {
        for rule in &self.moves {
            match rule {
                Move::ToHeader(field, name) => {
                    if let Some(value) = field.take(&mut step.out.properties) {
                        put_header(&mut step.out, name, value);
                        step.note(|| RuleNote {
                            field: format!("headers.{name}"),
                            change: "moved",
                            from: format!("properties.{}", field.name()),
                            to: format!("headers.{name}"),
                            rule: format!("move: {{ {}: header.{name} }}", field.name()),
                        });
                    }
                }
                Move::ToProperty(name, field) => {
                    if let Some(value) = take_header(&mut step.out, name) {
                        field.put(&mut step.out, &value)?;
                        step.note(|| RuleNote {
                            field: format!("properties.{}", field.name()),
                            change: "moved",
                            from: format!("headers.{name}"),
                            to: format!("properties.{}", field.name()),
                            rule: format!("move: {{ header.{name}: {} }}", field.name()),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn rename_headers(&self, step: &mut Step<'_>) {
        for (from, to) in &self.renames {
            let headers = &mut step.out.headers;
            if !headers.iter().any(|(n, _)| n == from) {
                continue;
            }
            headers.retain(|(n, _)| n != to);
            for (name, _) in headers.iter_mut().filter(|(n, _)| n == from) {
                name.clone_from(to);
            }
            step.note(|| RuleNote {
                field: format!("headers.{to}"),
                change: "renamed",
                from: format!("headers.{from}"),
                to: format!("headers.{to}"),
                rule: format!("rename: {{ headers: {{ {from}: {to} }} }}"),
            });
        }
    }

    fn drop_fields(&self, step: &mut Step<'_>) {
        for pattern in &self.drop_headers {
            let noting = step.noting();
            let mut dropped = Vec::new();
            step.out.headers.retain(|(n, v)| {
                let hit = matches(pattern, n);
                if hit && noting {
                    dropped.push((n.clone(), shown(v)));
                }
                !hit
            });
            for (name, value) in dropped {
                step.note(|| RuleNote {
                    field: format!("headers.{name}"),
                    change: "dropped",
                    from: value,
                    to: "nothing".to_owned(),
                    rule: format!("drop: {{ headers: [{pattern}] }}"),
                });
            }
        }
        for field in &self.drop_properties {
            if let Some(value) = field.take(&mut step.out.properties) {
                step.note(|| RuleNote {
                    field: format!("properties.{}", field.name()),
                    change: "dropped",
                    from: shown(&value),
                    to: "nothing".to_owned(),
                    rule: format!("drop: {{ properties: [{}] }}", field.name()),
                });
            }
        }
    }

    /// `set:` templates read `source`, the message as the source delivered it.
    fn set_fields(&self, source: &Envelope, step: &mut Step<'_>) -> Result<(), TranslateError> {
        for (field, template) in &self.properties {
            let value = Value::String(template.render(source)?);
            let before = step.noting().then(|| field.shown(&step.out.properties));
            field.put(&mut step.out, &value)?;
            let after = step.noting().then(|| field.shown(&step.out.properties));
            step.note(|| RuleNote {
                field: format!("properties.{}", field.name()),
                change: "set",
                from: before.unwrap_or_default(),
                to: after.unwrap_or_default(),
                rule: format!("set: {{ {}: {:?} }}", field.name(), template.to_string()),
            });
        }
        for (name, template) in &self.headers {
            let value = Value::String(template.render(source)?);
            let before = step
                .noting()
                .then(|| step.out.header(name).map_or_else(|| "unset".to_owned(), shown));
            step.note(|| RuleNote {
                field: format!("headers.{name}"),
                change: "set",
                from: before.unwrap_or_default(),
                to: shown(&value),
                rule: format!("set: {{ headers: {{ {name}: {:?} }} }}", template.to_string()),
            });
            put_header(&mut step.out, name, value);
        }
        Ok(())
    }
}

/// The message while rules apply to it, and where their notes go. Notes are built only
/// for `explain`: a running bridge pays nothing for them.
struct Step<'a> {
    out: Envelope,
    notes: Option<&'a mut Vec<RuleNote>>,
}

impl Step<'_> {
    fn noting(&self) -> bool {
        self.notes.is_some()
    }

    fn note(&mut self, make: impl FnOnce() -> RuleNote) {
        if let Some(notes) = self.notes.as_deref_mut() {
            notes.push(make());
        }
    }

    fn convert_body(&mut self, rule: BodyRule) -> Result<(), TranslateError> {
        let content_type = self.noting().then(|| Field::ContentType.shown(&self.out.properties));
        let Some((from, to)) = convert_body(&mut self.out, rule)? else { return Ok(()) };
        self.note(|| RuleNote {
            field: "body".to_owned(),
            change: "converted",
            from,
            to,
            rule: rule.written(),
        });
        let Some(before) = content_type else { return Ok(()) };
        let now = Field::ContentType.shown(&self.out.properties);
        if before != now {
            self.note(|| RuleNote {
                field: "properties.content_type".to_owned(),
                change: "set",
                from: before,
                to: now,
                rule: rule.written(),
            });
        }
        Ok(())
    }
}

/// True when `name` matches `pattern` (exact, or a prefix ending in `*`).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Sets a header, replacing every header of that name (Kafka allows repeats).
fn put_header(envelope: &mut Envelope, name: &str, value: Value) {
    match envelope.headers.iter().position(|(n, _)| n == name) {
        Some(at) => {
            envelope.headers[at].1 = value;
            let mut seen = false;
            envelope.headers.retain(|(n, _)| n != name || !std::mem::replace(&mut seen, true));
        }
        None => envelope.headers.push((name.to_owned(), value)),
    }
}

/// Removes every header of that name and returns the first value.
fn take_header(envelope: &mut Envelope, name: &str) -> Option<Value> {
    let value = envelope.header(name).cloned()?;
    envelope.headers.retain(|(n, _)| n != name);
    Some(value)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::pipeline::envelope::MessageId;
    use crate::pipeline::template::Template;

    fn template(t: &str) -> Template {
        Template::parse(t, None).expect("parses")
    }

    fn envelope() -> Envelope {
        let mut env = Envelope::default();
        env.origin.key = Some(Bytes::from_static(b"order-42"));
        env.properties.correlation_id = Some(MessageId::String("c-1".into()));
        env.properties.priority = Some(5);
        env.headers = vec![
            ("customerId".into(), Value::String("cust-1".into())),
            ("x-trace".into(), Value::String("t".into())),
            ("x-trace-span".into(), Value::I32(7)),
            ("order".into(), Value::U64(12345)),
        ];
        env
    }

    #[test]
    fn sets_properties_and_headers_from_templates() {
        let env = envelope();
        let rules = Rules {
            properties: vec![
                (Field::CorrelationId, template("{key}")),
                (Field::Priority, template("{header.x-trace-span}")),
            ],
            headers: vec![("origin".into(), template("kafka:{key}"))],
            ..Rules::default()
        };
        let out = rules.apply(&env).expect("renders").expect("changed");
        assert_eq!(out.properties.correlation_id, Some(MessageId::String("order-42".into())));
        assert_eq!(out.properties.priority, Some(7));
        assert_eq!(out.header("origin"), Some(&Value::String("kafka:order-42".into())));
        assert_eq!(env.properties.correlation_id, Some(MessageId::String("c-1".into())));
    }

    #[test]
    fn a_set_value_the_property_cannot_hold_is_untranslatable() {
        let rules =
            Rules { properties: vec![(Field::Priority, template("high"))], ..Rules::default() };
        let error = rules.apply(&envelope()).expect_err("priority is a number");
        assert_eq!(error.reason(), "untranslatable");
        assert_eq!(error.to_string(), "priority cannot hold \"high\" (string)");
    }

    #[test]
    fn renames_and_drops_headers() {
        let rules = Rules {
            renames: vec![("customerId".into(), "customer-id".into())],
            drop_headers: vec!["x-trace*".into()],
            drop_properties: vec![Field::Priority],
            ..Rules::default()
        };
        let mut notes = Vec::new();
        let out = rules.apply_noting(&envelope(), Some(&mut notes)).expect("ok").expect("changed");
        let names: Vec<&str> = out.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["customer-id", "order"]);
        assert_eq!(out.properties.priority, None);
        let fields: Vec<&str> = notes.iter().map(|n| n.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "headers.customer-id",
                "headers.x-trace",
                "headers.x-trace-span",
                "properties.priority"
            ]
        );
    }

    #[test]
    fn moves_a_property_to_a_header_and_back() {
        let to_header = Rules {
            moves: vec![Move::ToHeader(Field::CorrelationId, "corr".into())],
            ..Rules::default()
        };
        let out = to_header.apply(&envelope()).expect("ok").expect("changed");
        assert_eq!(out.properties.correlation_id, None);
        assert_eq!(out.header("corr"), Some(&Value::String("c-1".into())));

        let back = Rules {
            moves: vec![Move::ToProperty("corr".into(), Field::CorrelationId)],
            ..Rules::default()
        };
        let restored = back.apply(&out).expect("ok").expect("changed");
        assert_eq!(restored.properties.correlation_id, Some(MessageId::String("c-1".into())));
        assert_eq!(restored.header("corr"), None);

        let typed = Rules {
            moves: vec![Move::ToProperty("order".into(), Field::MessageId)],
            ..Rules::default()
        };
        let out = typed.apply(&envelope()).expect("ok").expect("changed");
        assert_eq!(out.properties.message_id, Some(MessageId::Ulong(12345)));
    }
}
