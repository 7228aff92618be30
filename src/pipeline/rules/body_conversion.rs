//! Body rules: text ⇄ bytes by charset, and JMS Map/Stream bodies ⇄ JSON.
//!
//! A conversion that changes the charset rewrites the content type's `charset=` to match;
//! a null body (a Kafka tombstone) is left alone.

use bytes::Bytes;

use crate::pipeline::charset::Charset;
use crate::pipeline::envelope::{BodyKind, Envelope, Properties};
use crate::pipeline::route::TranslateError;
use crate::pipeline::value::Value;

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

/// Applies a body rule; returns the body's form before and after, `None` when the body
/// already was in that form.
pub(super) fn convert_body(
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
    use super::super::Rules;
    use super::*;

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
