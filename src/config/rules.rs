//! Checks of a bridge's mapping rules: `set`, `move`, `rename`, `drop` and `body`.

use std::collections::BTreeMap;

use super::check::Checker;
use super::file::{BodyFile, DropFile, RenameFile, SetFile};
use crate::pipeline::charset::Charset;
use crate::pipeline::rules::{BodyRule, Field, Move};
use crate::pipeline::{Node, RecordTime, RouteTemplate, Rules, Template};

/// The rule blocks of one bridge, as written.
pub(super) struct RuleFiles<'a> {
    pub set: &'a BTreeMap<String, SetFile>,
    pub moves: &'a BTreeMap<String, String>,
    pub rename: &'a RenameFile,
    pub drop: &'a DropFile,
    pub body: Option<&'a BodyFile>,
}

/// A side of a `move:` entry.
enum Side {
    Header(String),
    Property(Field),
}

fn known_properties() -> String {
    Field::NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

impl Checker {
    /// Parses the rules of the bridge at `path`, reporting every problem.
    pub(super) fn rules(&mut self, path: &str, files: RuleFiles<'_>) -> Rules {
        let mut rules = Rules::default();
        self.set_rules(&format!("{path}.set"), files.set, &mut rules);
        for (from, to) in files.moves {
            let at = format!("{path}.move.{from}");
            match (self.side(&at, from), self.side(&at, to)) {
                (Some(Side::Property(field)), Some(Side::Header(name))) => {
                    rules.moves.push(Move::ToHeader(field, name))
                }
                (Some(Side::Header(name)), Some(Side::Property(field))) => {
                    rules.moves.push(Move::ToProperty(name, field))
                }
                (Some(_), Some(_)) => self.problem(
                    at,
                    "move a property to a header (`correlation_id: header.corr`) or a header \
                     to a property (`header.corr: correlation_id`); use rename for headers",
                ),
                _ => {}
            }
        }
        for (from, to) in &files.rename.headers {
            if to.is_empty() || to.len() > 255 {
                let at = format!("{path}.rename.headers.{from}");
                self.problem(at, "a header name has 1 to 255 bytes");
            } else {
                rules.renames.push((from.clone(), to.clone()));
            }
        }
        for (i, pattern) in files.drop.headers.iter().enumerate() {
            let star = pattern.find('*');
            if pattern.is_empty() || pattern == "*" || star.is_some_and(|s| s + 1 != pattern.len())
            {
                let message = format!(
                    "{pattern:?}: write a header name, or a prefix ending in `*` (`x-trace-*`)"
                );
                self.problem(format!("{path}.drop.headers[{i}]"), message);
            } else {
                rules.drop_headers.push(pattern.clone());
            }
        }
        for (i, name) in files.drop.properties.iter().enumerate() {
            match Field::parse(name) {
                Some(field) => rules.drop_properties.push(field),
                None => self.problem(
                    format!("{path}.drop.properties[{i}]"),
                    format!("unknown property {name:?}; use one of {}", known_properties()),
                ),
            }
        }
        if let Some(body) = files.body {
            rules.body = self.body_rule(&format!("{path}.body"), body);
        }
        rules
    }

    /// The sink's templates read the message after the rules: a template that reads a
    /// header or property the rules take away would fail on every message.
    pub(super) fn route_reads(&mut self, path: &str, route: &RouteTemplate, rules: &Rules) {
        let mut fields: Vec<(&str, &Template)> = match route {
            RouteTemplate::Amqp091 { exchange, routing_key } => {
                vec![("exchange", exchange), ("routing_key", routing_key)]
            }
            RouteTemplate::Kafka { topic, key, partition, .. } => {
                let mut fields = vec![("topic", topic)];
                fields.extend(key.iter().map(|k| ("key", k)));
                fields.extend(partition.iter().map(|p| ("partition", p)));
                fields
            }
            RouteTemplate::Amqp10 { name, node } => vec![(node_field(*node), name)],
        };
        fields.retain(|(_, t)| !t.is_static());
        for (field, template) in fields {
            for variable in template.variables() {
                if let Some(why) = taken_away(&variable, rules) {
                    let message = format!(
                        "reads {{{variable}}}, which {why} before the sink's templates run"
                    );
                    self.problem(format!("{path}.{field}"), message);
                }
            }
        }
        if let RouteTemplate::Kafka { time: RecordTime::Header(name), .. } = route {
            if let Some(why) = taken_away(&format!("header.{name}"), rules) {
                let message = format!("reads header.{name}, which {why} before the sink reads it");
                self.problem(format!("{path}.timestamp"), message);
            }
        }
    }

    fn set_rules(&mut self, path: &str, set: &BTreeMap<String, SetFile>, rules: &mut Rules) {
        for (name, entry) in set {
            let at = format!("{path}.{name}");
            match (name.as_str(), entry) {
                ("headers", SetFile::Headers(headers)) => {
                    for (header, template) in headers {
                        if let Some(t) = self.template(&format!("{at}.{header}"), template) {
                            rules.headers.push((header.clone(), t));
                        }
                    }
                }
                (_, SetFile::Template(template)) => match Field::parse(name) {
                    Some(field) => {
                        if let Some(t) = self.template(&at, template) {
                            rules.properties.push((field, t));
                        }
                    }
                    None => {
                        let message = format!(
                            "unknown property; use one of {} or headers",
                            known_properties()
                        );
                        self.problem(at, message);
                    }
                },
                _ => self.problem(
                    at,
                    "expected a template, or a map of header templates under `headers`",
                ),
            }
        }
    }

    fn side(&mut self, at: &str, written: &str) -> Option<Side> {
        if let Some(header) = written.strip_prefix("header.") {
            if header.is_empty() || header.len() > 255 {
                self.problem(at.to_owned(), "a header name has 1 to 255 bytes");
                return None;
            }
            return Some(Side::Header(header.to_owned()));
        }
        match Field::parse(written) {
            Some(field) => Some(Side::Property(field)),
            None => {
                let message = format!(
                    "{written:?}: write header.NAME or one of the properties {}",
                    known_properties()
                );
                self.problem(at.to_owned(), message);
                None
            }
        }
    }

    fn body_rule(&mut self, path: &str, body: &BodyFile) -> Option<BodyRule> {
        let charset = match body.charset.as_deref() {
            None => Charset::parse("utf-8"),
            Some(label) => {
                let charset = Charset::parse(label);
                if charset.is_none() {
                    let message = format!(
                        "unknown charset {label:?}: use utf-8, iso-8859-1, us-ascii or another \
                         label of the WHATWG Encoding Standard (windows-1252, shift_jis, …)"
                    );
                    self.problem(format!("{path}.charset"), message);
                }
                charset
            }
        };
        let takes_charset = matches!(body.to.as_str(), "text" | "bytes");
        if body.charset.is_some() && !takes_charset {
            let message =
                format!("a charset applies to `to: text` or `to: bytes`, not {:?}", body.to);
            self.problem(format!("{path}.charset"), message);
        }
        let rule = match body.to.as_str() {
            "text" => BodyRule::Text(charset?),
            "bytes" => BodyRule::Bytes(charset?),
            "json" => BodyRule::Json,
            "map" => BodyRule::Map,
            "list" => BodyRule::List,
            other => {
                let message = format!("{other:?}: use text, bytes, json, map or list");
                self.problem(format!("{path}.to"), message);
                return None;
            }
        };
        Some(rule)
    }
}

fn node_field(node: Node) -> &'static str {
    match node {
        Node::Queue => "queue",
        Node::Topic => "topic",
        Node::Address => "address",
    }
}

/// Which rule removes what a template `variable` reads, if one does and none puts it back.
fn taken_away(variable: &str, rules: &Rules) -> Option<String> {
    if let Some(header) = variable.strip_prefix("header.") {
        let restored = rules.headers.iter().any(|(n, _)| n == header)
            || rules.renames.iter().any(|(_, to)| to == header)
            || rules.moves.iter().any(|m| matches!(m, Move::ToHeader(_, n) if n == header));
        if restored {
            return None;
        }
        if let Some((_, to)) = rules.renames.iter().find(|(from, _)| from == header) {
            return Some(format!("`rename` turns into header {to:?}"));
        }
        if rules.moves.iter().any(|m| matches!(m, Move::ToProperty(n, _) if n == header)) {
            return Some("`move` takes into a property".to_owned());
        }
        let dropped = rules.drop_headers.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => header.starts_with(prefix),
            None => p == header,
        });
        return dropped.then(|| "`drop` removes".to_owned());
    }
    let field = Field::parse(variable)?;
    let restored = rules.properties.iter().any(|(f, _)| *f == field)
        || rules.moves.iter().any(|m| matches!(m, Move::ToProperty(_, f) if *f == field));
    if restored {
        return None;
    }
    if rules.moves.iter().any(|m| matches!(m, Move::ToHeader(f, _) if *f == field)) {
        return Some("`move` takes into a header".to_owned());
    }
    rules.drop_properties.contains(&field).then(|| "`drop` removes".to_owned())
}
