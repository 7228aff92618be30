//! Per-bridge mapping rules: what a bridge changes between its source and its sink.
//!
//! They apply in this order: `move` (a property into a header, or a header into a property),
//! `rename` (headers), `drop` (headers and properties), `set` (properties and headers from
//! templates, which read the message as the source delivered it), then `body` (text ⇄ bytes
//! by charset, JMS Map/Stream ⇄ JSON). The sink's own templates (topic, key, routing key,
//! address) read the message after the rules. Rules change what the sink receives, never what
//! the dead letter receives: a dead letter carries the message as the source delivered it.

use bytes::Bytes;

use super::carry;
use super::charset::Charset;
use super::envelope::{BodyKind, Envelope, MessageId, Properties};
use super::route::TranslateError;
use super::template::Template;
use super::value::Value;

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
    fn carrier(self) -> &'static str {
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
    fn take(self, p: &mut Properties) -> Option<Value> {
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
    fn shown(self, p: &Properties) -> String {
        let mut copy = p.clone();
        self.take(&mut copy).map_or_else(|| "unset".to_owned(), |v| shown(&v))
    }

    fn is_set(self, p: &Properties) -> bool {
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
    fn put(self, envelope: &mut Envelope, value: &Value) -> Result<(), TranslateError> {
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
fn shown(value: &Value) -> String {
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

/// Moves a value between a property and a header.
#[derive(Clone, Debug, PartialEq)]
pub enum Move {
    ToHeader(Field, String),
    ToProperty(String, Field),
}

/// What the body becomes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BodyRule {
    /// Bytes in this charset become text (UTF-8 inside).
    Text(Charset),
    /// Text becomes bytes in this charset.
    Bytes(Charset),
    /// A typed map or list (JMS Map/StreamMessage) becomes plain JSON bytes.
    Json,
    /// A JSON object becomes a typed map (JMS MapMessage).
    Map,
    /// A JSON array becomes a typed list (JMS StreamMessage).
    List,
}

impl BodyRule {
    /// The rule as written in bridges.yaml.
    pub fn written(self) -> String {
        match self {
            BodyRule::Text(c) => format!("body: {{ to: text, charset: {} }}", c.name()),
            BodyRule::Bytes(c) => format!("body: {{ to: bytes, charset: {} }}", c.name()),
            BodyRule::Json => "body: { to: json }".to_owned(),
            BodyRule::Map => "body: { to: map }".to_owned(),
            BodyRule::List => "body: { to: list }".to_owned(),
        }
    }
}

/// One change a rule made, for `portico explain`.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleNote {
    /// The field after the rule: `headers.NAME`, `properties.NAME` or `body`.
    pub field: String,
    /// `moved`, `renamed`, `dropped`, `set` or `converted`.
    pub change: &'static str,
    pub from: String,
    pub to: String,
    /// The rule, as written in bridges.yaml.
    pub rule: String,
}

#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub moves: Vec<Move>,
    /// Header renames, old name → new name.
    pub renames: Vec<(String, String)>,
    /// Header names to drop; a trailing `*` matches a prefix.
    pub drop_headers: Vec<String>,
    pub drop_properties: Vec<Field>,
    /// `set:` properties.
    pub properties: Vec<(Field, Template)>,
    /// `set:` headers.
    pub headers: Vec<(String, Template)>,
    pub body: Option<BodyRule>,
}

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

/// Applies a body rule; returns the body's form before and after, `None` when the body
/// already was in that form.
fn convert_body(
    out: &mut Envelope,
    rule: BodyRule,
) -> Result<Option<(String, String)>, TranslateError> {
    if out.body_is_null {
        return Ok(None);
    }
    let failed = |e: &dyn std::fmt::Display| TranslateError::Untranslatable(format!("body: {e}"));
    let from = out.body_kind.name();
    let change = match (rule, &out.body_kind) {
        (BodyRule::Text(charset), BodyKind::Bytes) => {
            let text = charset.decode(&out.body).map_err(|e| failed(&e))?;
            out.body = Bytes::from(text);
            out.body_kind = BodyKind::Text;
            set_charset(&mut out.properties, "utf-8");
            (format!("bytes ({})", charset.name()), "text".to_owned())
        }
        (BodyRule::Text(_), BodyKind::Map { .. } | BodyKind::List { .. }) => {
            out.body_kind = BodyKind::Text;
            (from.to_owned(), "text (JSON, without the types)".to_owned())
        }
        (
            BodyRule::Bytes(charset),
            BodyKind::Text | BodyKind::Map { .. } | BodyKind::List { .. },
        ) => {
            let text = std::str::from_utf8(&out.body).map_err(|e| failed(&e))?;
            out.body = Bytes::from(charset.encode(text).map_err(|e| failed(&e))?);
            out.body_kind = BodyKind::Bytes;
            set_charset(&mut out.properties, &charset.name());
            (from.to_owned(), format!("bytes ({})", charset.name()))
        }
        (BodyRule::Json, BodyKind::Map { .. } | BodyKind::List { .. }) => {
            out.body_kind = BodyKind::Bytes;
            out.properties.content_type.get_or_insert_with(|| "application/json".to_owned());
            (from.to_owned(), "bytes (JSON, without the types)".to_owned())
        }
        (BodyRule::Map, BodyKind::Bytes | BodyKind::Text)
        | (BodyRule::List, BodyKind::Bytes | BodyKind::Text) => {
            let json: serde_json::Value =
                serde_json::from_slice(&out.body).map_err(|e| failed(&format!("not JSON: {e}")))?;
            let value = Value::from_plain_json(&json);
            let shape = value.shape().unwrap_or(serde_json::Value::Null);
            out.body_kind = match (rule, &value) {
                (BodyRule::Map, Value::Map(_)) => BodyKind::Map { shape },
                (BodyRule::List, Value::List(_)) => BodyKind::List { shape },
                (BodyRule::Map, _) => return Err(failed(&"not a JSON object")),
                _ => return Err(failed(&"not a JSON array")),
            };
            out.body = value.to_text().unwrap_or_default();
            (format!("{from} (JSON)"), out.body_kind.name().to_owned())
        }
        (BodyRule::Map, BodyKind::List { .. }) => return Err(failed(&"a list is not a map")),
        (BodyRule::List, BodyKind::Map { .. }) => return Err(failed(&"a map is not a list")),
        _ => return Ok(None),
    };
    Ok(Some(change))
}

/// Rewrites the `charset=` parameter of the content type, when it has one.
fn set_charset(p: &mut Properties, charset: &str) {
    let Some(content_type) = &p.content_type else { return };
    let mut parts: Vec<String> = content_type.split(';').map(|s| s.trim().to_owned()).collect();
    let mut found = false;
    for part in parts.iter_mut().skip(1) {
        if part.to_ascii_lowercase().starts_with("charset=") {
            *part = format!("charset={charset}");
            found = true;
        }
    }
    if found {
        p.content_type = Some(parts.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn latin_1_bytes_become_utf_8_text_and_back() {
        let mut env = Envelope { body: Bytes::from_static(b"caf\xe9"), ..Envelope::default() };
        env.properties.content_type = Some("text/plain; charset=ISO-8859-1".into());
        let latin1 = Charset::Latin1;
        let text = Rules { body: Some(BodyRule::Text(latin1)), ..Rules::default() };
        let out = text.apply(&env).expect("ok").expect("changed");
        assert_eq!(&out.body[..], "café".as_bytes());
        assert_eq!(out.body_kind, BodyKind::Text);
        assert_eq!(out.properties.content_type.as_deref(), Some("text/plain; charset=utf-8"));

        let bytes = Rules { body: Some(BodyRule::Bytes(latin1)), ..Rules::default() };
        let back = bytes.apply(&out).expect("ok").expect("changed");
        assert_eq!(&back.body[..], b"caf\xe9");
        assert_eq!(back.body_kind, BodyKind::Bytes);

        let mut euro = out.clone();
        euro.body = Bytes::from("5 €");
        let error = bytes.apply(&euro).expect_err("no euro sign in latin-1");
        assert_eq!(error.to_string(), "body: the body holds '€', which iso-8859-1 cannot encode");
    }

    #[test]
    fn json_becomes_a_typed_map_and_back() {
        let env = Envelope {
            body: Bytes::from_static(br#"{"sku":"A-1","qty":3,"price":9.5,"gift":false}"#),
            ..Envelope::default()
        };
        let map = Rules { body: Some(BodyRule::Map), ..Rules::default() };
        let out = map.apply(&env).expect("ok").expect("changed");
        let shape = serde_json::json!({"sku":"string","qty":"i64","price":"f64","gift":"bool"});
        assert_eq!(out.body_kind, BodyKind::Map { shape });
        assert_eq!(&out.body[..], br#"{"sku":"A-1","qty":3,"price":9.5,"gift":false}"#);

        let json = Rules { body: Some(BodyRule::Json), ..Rules::default() };
        let back = json.apply(&out).expect("ok").expect("changed");
        assert_eq!(back.body_kind, BodyKind::Bytes);
        assert_eq!(back.properties.content_type.as_deref(), Some("application/json"));

        let list = Rules { body: Some(BodyRule::List), ..Rules::default() };
        assert_eq!(list.apply(&env).expect_err("an object").reason(), "untranslatable");
    }

    #[test]
    fn a_json_array_becomes_a_stream_message_and_back() {
        let env = Envelope { body: Bytes::from_static(b"[1, \"a\", true]"), ..Envelope::default() };
        let list = Rules { body: Some(BodyRule::List), ..Rules::default() };
        let mut notes = Vec::new();
        let out = list.apply_noting(&env, Some(&mut notes)).expect("ok").expect("changed");
        let shape = serde_json::json!(["i64", "string", "bool"]);
        assert_eq!(out.body_kind, BodyKind::List { shape });
        assert_eq!(&out.body[..], br#"[1,"a",true]"#);
        assert_eq!((notes[0].from.as_str(), notes[0].to.as_str()), ("bytes (JSON)", "list"));

        let json = Rules { body: Some(BodyRule::Json), ..Rules::default() };
        let back = json.apply(&out).expect("ok").expect("changed");
        assert_eq!((back.body_kind, &back.body[..]), (BodyKind::Bytes, &br#"[1,"a",true]"#[..]));
        let map = Rules { body: Some(BodyRule::Map), ..Rules::default() };
        assert_eq!(map.apply(&out).expect_err("a list").to_string(), "body: a list is not a map");
    }
}
