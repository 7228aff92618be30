//! Routing templates such as `"orders.{routing_key}"` or `"{header.customer_id}"`.
//!
//! A template is parsed once when the configuration loads, so an unknown variable is a
//! configuration error with a line and column, never a surprise on the first message.

use std::fmt;

use super::envelope::Envelope;

/// The variables a template may name, besides `header.NAME`.
pub const VARIABLES: &[&str] = &[
    "routing_key",
    "exchange",
    "queue",
    "topic",
    "partition",
    "key",
    "message_id",
    "correlation_id",
    "subject",
    "address",
    "type",
    "reply_to",
    "content_type",
    "group_id",
    "app_id",
];

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Literal(String),
    Variable(Variable),
}

#[derive(Clone, Debug, PartialEq)]
enum Variable {
    Named(&'static str),
    Header(String),
}

/// A parsed template with an optional fallback for values missing at run time.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    default: Option<String>,
}

/// Why a template could not be parsed.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown variable {{{0}}}; use one of {vars} or {{header.NAME}}", vars = known())]
    UnknownVariable(String),
    #[error("unclosed '{{' at byte {0}; write '{{{{' for a literal brace")]
    Unclosed(usize),
    #[error("stray '}}' at byte {0}; write '}}}}' for a literal brace")]
    Stray(usize),
}

/// Why a template could not be rendered for one message.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("template {template:?}: {{{variable}}} is missing from the message")]
pub struct MissingValue {
    pub template: String,
    pub variable: String,
}

fn known() -> String {
    VARIABLES.iter().map(|v| format!("{{{v}}}")).collect::<Vec<_>>().join(", ")
}

impl Template {
    /// Parses `source`; `{{` and `}}` stand for literal braces.
    pub fn parse(source: &str, default: Option<String>) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::Stray(at)),
                '{' => {
                    let rest = &source[at + 1..];
                    let end = rest.find('}').ok_or(TemplateError::Unclosed(at))?;
                    let name = &rest[..end];
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Variable(Variable::parse(name)?));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { source: source.to_owned(), parts, default })
    }

    /// True when the template names no variable.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The variables the template reads, as written: `routing_key`, `header.NAME`, ...
    pub fn variables(&self) -> impl Iterator<Item = String> + '_ {
        self.parts.iter().filter_map(|part| match part {
            Part::Variable(variable) => Some(variable.to_string()),
            Part::Literal(_) => None,
        })
    }

    /// Renders the template for one message; a missing value falls back to the default.
    pub fn render(&self, envelope: &Envelope) -> Result<String, MissingValue> {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(variable) => match variable.lookup(envelope) {
                    Some(value) => out.push_str(&value),
                    None => {
                        return self.default.clone().ok_or_else(|| MissingValue {
                            template: self.source.clone(),
                            variable: variable.to_string(),
                        });
                    }
                },
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Variable {
    fn parse(name: &str) -> Result<Variable, TemplateError> {
        if let Some(header) = name.strip_prefix("header.").filter(|h| !h.is_empty()) {
            return Ok(Variable::Header(header.to_owned()));
        }
        VARIABLES
            .iter()
            .find(|v| **v == name)
            .map(|v| Variable::Named(v))
            .ok_or_else(|| TemplateError::UnknownVariable(name.to_owned()))
    }

    fn lookup(&self, envelope: &Envelope) -> Option<String> {
        let origin = &envelope.origin;
        let props = &envelope.properties;
        match self {
            Variable::Header(name) => envelope.header(name)?.to_template_text(),
            Variable::Named(name) => match *name {
                "routing_key" => origin.routing_key.clone(),
                "exchange" => origin.exchange.clone(),
                "queue" => origin.queue.clone(),
                "topic" => origin.topic.clone(),
                "partition" => origin.partition.map(|p| p.to_string()),
                "key" => {
                    origin.key.as_ref().and_then(|k| std::str::from_utf8(k).ok()).map(Into::into)
                }
                "message_id" => props.message_id.as_ref().map(|id| id.to_text()),
                "correlation_id" => props.correlation_id.as_ref().map(|id| id.to_text()),
                "subject" => props.subject.clone(),
                "address" => origin.address.clone(),
                "type" => props.message_type.clone(),
                "reply_to" => props.reply_to.clone(),
                "content_type" => props.content_type.clone(),
                "group_id" => props.group_id.clone(),
                "app_id" => props.app_id.clone(),
                _ => None,
            },
        }
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variable::Named(name) => f.write_str(name),
            Variable::Header(name) => write!(f, "header.{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::value::Value;

    fn envelope() -> Envelope {
        let mut env = Envelope::default();
        env.origin.routing_key = Some("created".into());
        env.headers.push(("customer_id".into(), Value::String("c-42".into())));
        env.headers.push(("n".into(), Value::I32(7)));
        env
    }

    #[test]
    fn renders_variables_and_headers() {
        let t = Template::parse("orders.{routing_key}.{header.customer_id}.{header.n}", None);
        let rendered = t.expect("parses").render(&envelope());
        assert_eq!(rendered.as_deref(), Ok("orders.created.c-42.7"));
    }

    #[test]
    fn literal_braces_are_escaped() {
        let t = Template::parse("a{{b}}c", None).expect("parses");
        assert!(t.is_static());
        assert_eq!(t.render(&envelope()).as_deref(), Ok("a{b}c"));
    }

    #[test]
    fn unknown_variables_are_rejected_at_parse_time() {
        assert_eq!(
            Template::parse("{routingkey}", None),
            Err(TemplateError::UnknownVariable("routingkey".into()))
        );
        assert_eq!(Template::parse("x{key", None), Err(TemplateError::Unclosed(1)));
    }

    #[test]
    fn missing_values_use_the_default_or_fail() {
        let t = Template::parse("{header.absent}", None).expect("parses");
        let err = t.render(&envelope()).expect_err("missing");
        assert_eq!(err.variable, "header.absent");
        let t = Template::parse("{header.absent}", Some("fallback".into())).expect("parses");
        assert_eq!(t.render(&envelope()).as_deref(), Ok("fallback"));
    }
}
