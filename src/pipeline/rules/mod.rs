//! Per-bridge mapping rules: what a bridge changes between its source and its sink.
//!
//! They apply in this order: `move` (a property into a header, or a header into a property),
//! `rename` (headers), `drop` (headers and properties), `set` (properties and headers from
//! templates, which read the message as the source delivered it), then `body` (text ⇄ bytes
//! by charset, JMS Map/Stream ⇄ JSON). The sink's own templates (topic, key, routing key,
//! address) read the message after the rules. Rules change what the sink receives, never what
//! the dead letter receives: a dead letter carries the message as the source delivered it.
//!
//! The rule types live here; [`Field`] reaches the standard properties, `rule_steps`
//! applies the rules in the order above, and `body_conversion` holds the body rules.

mod body_conversion;
mod field_access;
mod rule_steps;

use super::template::Template;

pub use body_conversion::BodyRule;
pub use field_access::Field;

/// Moves a value between a property and a header.
#[derive(Clone, Debug, PartialEq)]
pub enum Move {
    ToHeader(Field, String),
    ToProperty(String, Field),
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
