//! Loading and checking `bridges.yaml`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use super::env;
use super::file::{BridgeFile, File, Protocol, SetFile, SinkFile, SourceFile, TemplateFile};
use super::model::{
    Amqp10Connection, Amqp091Connection, BridgeModel, ConnectionModel, Flavor, KafkaConnection,
    Model, Persistence, RetryModel, SinkModel, SourceModel,
};
use super::position::Positions;
use crate::pipeline::rules::Field;
use crate::pipeline::{Node, RouteTemplate, Rules, Template};
use std::time::Duration;

/// Default prefetch: deep enough to keep a confirm pipeline busy, small enough that a
/// restart redelivers little.
const DEFAULT_PREFETCH: u16 = 256;

/// One thing wrong with the file, pointing at its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub path: String,
    pub message: String,
}

/// Why a configuration could not be loaded: every problem found, in file order.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let path = if p.path.is_empty() { String::new() } else { format!(" {}:", p.path) };
            write!(f, "{}:{}:{}:{} {}", self.file, p.line, p.column, path, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, expands and checks the file at `path`.
pub fn load(path: &Path) -> Result<Model, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    load_str(&name, &text, |var| std::env::var(var).ok())
}

/// Expands, parses and checks `text`; `file` names it in errors.
pub fn load_str(
    file: &str,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Model, ConfigError> {
    let fail = |problems| ConfigError { file: file.to_owned(), problems };
    let text = env::expand(text, lookup).map_err(|errors| {
        fail(
            errors
                .into_iter()
                .map(|e| Problem {
                    line: e.line,
                    column: e.column,
                    path: String::new(),
                    message: e.message,
                })
                .collect(),
        )
    })?;
    let parsed = parse(&text).map_err(|p| fail(vec![p]))?;
    let mut checker = Checker { positions: Positions::index(&text), problems: Vec::new() };
    let model = checker.model(parsed);
    if checker.problems.is_empty() {
        Ok(model)
    } else {
        checker.problems.sort_by_key(|p| (p.line, p.column));
        Err(fail(checker.problems))
    }
}

fn parse(text: &str) -> Result<File, Problem> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let (line, column) = inner.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        // serde_yaml_ng prefixes its message with the path of the enclosing node and ends it
        // with the position; both are printed separately.
        let message = strip_location(&inner.to_string());
        let message = match message.split_once(": ") {
            Some((head, tail)) if path.starts_with(head) => tail.to_owned(),
            _ => message,
        };
        Problem { line, column, path: if path == "." { String::new() } else { path }, message }
    })
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

struct Checker {
    positions: Positions,
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, path: String, message: impl Into<String>) {
        let at = self.positions.of(&path);
        self.problems.push(Problem {
            line: at.line,
            column: at.column,
            path,
            message: message.into(),
        });
    }

    fn model(&mut self, file: File) -> Model {
        let connections: BTreeMap<String, ConnectionModel> = file
            .connections
            .into_iter()
            .map(|(name, conn)| {
                let path = format!("connections.{name}");
                let model = self.connection(&path, &name, conn);
                (name, model)
            })
            .collect();

        let mut names = BTreeSet::new();
        let mut used = BTreeSet::new();
        let mut bridges = Vec::new();
        for (i, bridge) in file.bridges.into_iter().enumerate() {
            let path = format!("bridges[{i}]");
            if !names.insert(bridge.name.clone()) {
                self.problem(
                    format!("{path}.name"),
                    format!("duplicate bridge name {:?}", bridge.name),
                );
            }
            used.insert(bridge.source.connection.clone());
            used.insert(bridge.sink.connection.clone());
            if let Some(dl) = &bridge.dead_letter {
                used.insert(dl.connection.clone());
            }
            if let Some(model) = self.bridge(&path, bridge, &connections) {
                bridges.push(model);
            }
        }
        if bridges.is_empty() && self.problems.is_empty() {
            self.problem("bridges".into(), "no bridges: add at least one under `bridges:`");
        }
        Model {
            listen: file.telemetry.listen,
            shutdown_timeout: file.shutdown_timeout.0,
            connections,
            bridges,
        }
    }

    fn connection(
        &mut self,
        path: &str,
        name: &str,
        mut conn: super::file::ConnectionFile,
    ) -> ConnectionModel {
        let mut model = ConnectionModel {
            protocol: conn.protocol,
            amqp091: None,
            amqp10: None,
            kafka: None,
            declare: conn.declare.take().unwrap_or_default(),
        };
        if conn.protocol != Protocol::Amqp10 {
            let only_amqp10 = [
                ("flavor", conn.flavor.is_some()),
                ("container_id", conn.container_id.is_some()),
                ("idle_timeout", conn.idle_timeout.is_some()),
                ("max_frame_size", conn.max_frame_size.is_some()),
            ];
            for (field, present) in only_amqp10 {
                self.forbid(path, field, present, conn.protocol.name(), "an amqp10 connection");
            }
        }
        match conn.protocol {
            Protocol::Amqp10 => model.amqp10 = self.amqp10_connection(path, name, conn, &model),
            Protocol::Amqp091 => {
                self.forbid(path, "brokers", conn.brokers.is_some(), "amqp091", "url");
                self.forbid(path, "options", !conn.options.is_empty(), "amqp091", "url");
                self.forbid(
                    path,
                    "declare.topics",
                    !model.declare.topics.is_empty(),
                    "amqp091",
                    "declare.queues",
                );
                match conn.url {
                    Some(url)
                        if url.expose().starts_with("amqp://")
                            || url.expose().starts_with("amqps://") =>
                    {
                        model.amqp091 = Some(Amqp091Connection { name: name.to_owned(), url })
                    }
                    Some(url) => self.problem(
                        format!("{path}.url"),
                        format!(
                            "{} is not an AMQP URL: write amqp://user:pass@host:5672/vhost",
                            url.redacted()
                        ),
                    ),
                    None => self.problem(
                        path.to_owned(),
                        "missing field `url` (amqp://user:pass@host:5672/vhost)",
                    ),
                }
            }
            Protocol::Kafka => {
                self.forbid(path, "url", conn.url.is_some(), "kafka", "brokers");
                let queues =
                    !model.declare.queues.is_empty() || !model.declare.exchanges.is_empty();
                self.forbid(path, "declare.queues", queues, "kafka", "declare.topics");
                match conn.brokers.filter(|b| !b.trim().is_empty()) {
                    Some(brokers) => {
                        model.kafka = Some(KafkaConnection {
                            name: name.to_owned(),
                            brokers,
                            options: conn.options,
                        })
                    }
                    None => self.problem(
                        path.to_owned(),
                        "missing field `brokers` (host:9092[,host:9092])",
                    ),
                }
            }
        }
        model
    }

    fn forbid(&mut self, path: &str, field: &str, present: bool, protocol: &str, instead: &str) {
        if present {
            self.problem(
                format!("{path}.{field}"),
                format!("`{field}` does not apply to {protocol} connections (use `{instead}`)"),
            );
        }
    }

    fn bridge(
        &mut self,
        path: &str,
        bridge: BridgeFile,
        connections: &BTreeMap<String, ConnectionModel>,
    ) -> Option<BridgeModel> {
        let source = self.source(&format!("{path}.source"), bridge.source, connections);
        let sink = self.sink(&format!("{path}.sink"), bridge.sink, connections);
        let dead_letter =
            bridge.dead_letter.map(|dl| self.sink(&format!("{path}.dead_letter"), dl, connections));
        let retry = RetryModel {
            initial_backoff: bridge.retry.initial_backoff.0,
            max_backoff: bridge.retry.max_backoff.0,
            multiplier: bridge.retry.multiplier,
        };
        if !(1.0..=10.0).contains(&retry.multiplier) {
            self.problem(format!("{path}.retry.multiplier"), "must be between 1.0 and 10.0");
        }
        let rules = self.rules(&format!("{path}.set"), &bridge.set);
        let source = source?;
        let default_in_flight = match &source {
            SourceModel::Amqp091 { prefetch, .. } => usize::from(*prefetch).max(1),
            SourceModel::Kafka { .. } => 1024,
            SourceModel::Amqp10 { credit, .. } => usize::try_from(*credit).unwrap_or(1024).max(1),
        };
        let max_in_flight = bridge.max_in_flight.unwrap_or(default_in_flight);
        if max_in_flight == 0 {
            self.problem(format!("{path}.max_in_flight"), "must be at least 1");
        }
        Some(BridgeModel {
            name: bridge.name,
            source,
            sink: sink?,
            dead_letter: match dead_letter {
                Some(dl) => Some(dl?),
                None => None,
            },
            max_in_flight,
            retry,
            rules,
        })
    }

    fn connection_of<'a>(
        &mut self,
        path: &str,
        name: &str,
        connections: &'a BTreeMap<String, ConnectionModel>,
    ) -> Option<&'a ConnectionModel> {
        let found = connections.get(name);
        if found.is_none() {
            let known = connections.keys().cloned().collect::<Vec<_>>().join(", ");
            self.problem(
                format!("{path}.connection"),
                format!("unknown connection {name:?}; defined connections: {known}"),
            );
        }
        found
    }

    fn source(
        &mut self,
        path: &str,
        source: SourceFile,
        connections: &BTreeMap<String, ConnectionModel>,
    ) -> Option<SourceModel> {
        let conn = self.connection_of(path, &source.connection, connections)?;
        match conn.protocol {
            Protocol::Amqp091 => {
                for (field, present) in [
                    ("topics", source.topics.is_some()),
                    ("group", source.group.is_some()),
                    ("start", source.start.is_some()),
                    ("topic", source.topic.is_some()),
                    ("address", source.address.is_some()),
                    ("credit", source.credit.is_some()),
                    ("subscription", source.subscription.is_some()),
                ] {
                    self.forbid(path, field, present, "amqp091", "queue");
                }
                let Some(queue) = source.queue else {
                    self.problem(
                        path.to_owned(),
                        "missing field `queue`: the AMQP 0-9-1 queue to consume",
                    );
                    return None;
                };
                let prefetch = source.prefetch.unwrap_or(DEFAULT_PREFETCH);
                if prefetch == 0 {
                    self.problem(
                        format!("{path}.prefetch"),
                        "must be at least 1: 0 means unlimited in AMQP 0-9-1",
                    );
                }
                Some(SourceModel::Amqp091 { connection: conn.amqp091.clone()?, queue, prefetch })
            }
            Protocol::Amqp10 => self.amqp10_source(path, source, conn),
            Protocol::Kafka => {
                self.forbid(path, "queue", source.queue.is_some(), "kafka", "topics");
                for (field, present) in [
                    ("topic", source.topic.is_some()),
                    ("address", source.address.is_some()),
                    ("credit", source.credit.is_some()),
                    ("subscription", source.subscription.is_some()),
                ] {
                    self.forbid(path, field, present, "kafka", "topics");
                }
                self.forbid(
                    path,
                    "prefetch",
                    source.prefetch.is_some(),
                    "kafka",
                    "max_in_flight on the bridge",
                );
                let topics = source.topics.unwrap_or_default();
                if topics.is_empty() {
                    self.problem(
                        path.to_owned(),
                        "missing field `topics`: a list of Kafka topics to consume",
                    );
                }
                let Some(group) = source.group else {
                    self.problem(
                        path.to_owned(),
                        "missing field `group`: the Kafka consumer group",
                    );
                    return None;
                };
                let start = source.start.unwrap_or_else(|| "earliest".to_owned());
                if start != "earliest" && start != "latest" {
                    self.problem(
                        format!("{path}.start"),
                        format!("{start:?}: use `earliest` or `latest`"),
                    );
                }
                Some(SourceModel::Kafka { connection: conn.kafka.clone()?, topics, group, start })
            }
        }
    }

    fn sink(
        &mut self,
        path: &str,
        sink: SinkFile,
        connections: &BTreeMap<String, ConnectionModel>,
    ) -> Option<SinkModel> {
        let Some(conn) = self.connection_of(path, &sink.connection, connections) else {
            // Still check the templates, so that one run reports every problem.
            for (field, template) in [
                ("exchange", &sink.exchange),
                ("routing_key", &sink.routing_key),
                ("topic", &sink.topic),
                ("key", &sink.key),
            ] {
                if let Some(template) = template {
                    self.template(&format!("{path}.{field}"), template);
                }
            }
            return None;
        };
        match conn.protocol {
            Protocol::Amqp091 => {
                self.forbid(
                    path,
                    "topic",
                    sink.topic.is_some(),
                    "amqp091",
                    "exchange and routing_key",
                );
                self.forbid(path, "key", sink.key.is_some(), "amqp091", "routing_key");
                self.forbid(path, "queue", sink.queue.is_some(), "amqp091", "routing_key");
                self.forbid(path, "address", sink.address.is_some(), "amqp091", "exchange");
                let Some(exchange) = sink.exchange else {
                    self.problem(
                        path.to_owned(),
                        "missing field `exchange` (\"\" is the default exchange)",
                    );
                    return None;
                };
                let exchange = self.template(&format!("{path}.exchange"), &exchange);
                let routing_key = match &sink.routing_key {
                    Some(rk) => self.template(&format!("{path}.routing_key"), rk),
                    None => Template::parse("", None).ok(),
                };
                let persistence = match sink.persistent.as_deref() {
                    None | Some("source") => Persistence::Source,
                    Some("always") => Persistence::Always,
                    Some("never") => Persistence::Never,
                    Some(other) => {
                        self.problem(
                            format!("{path}.persistent"),
                            format!("{other:?}: use `source`, `always` or `never`"),
                        );
                        Persistence::Source
                    }
                };
                Some(SinkModel::Amqp091 {
                    connection: conn.amqp091.clone()?,
                    route: RouteTemplate::Amqp091 {
                        exchange: exchange?,
                        routing_key: routing_key?,
                    },
                    persistence,
                })
            }
            Protocol::Amqp10 => self.amqp10_sink(path, sink, conn),
            Protocol::Kafka => {
                for (field, present) in [
                    ("exchange", sink.exchange.is_some()),
                    ("routing_key", sink.routing_key.is_some()),
                    ("queue", sink.queue.is_some()),
                    ("address", sink.address.is_some()),
                    ("persistent", sink.persistent.is_some()),
                ] {
                    self.forbid(path, field, present, "kafka", "topic and key");
                }
                let Some(topic) = sink.topic else {
                    self.problem(path.to_owned(), "missing field `topic`");
                    return None;
                };
                let topic = self.template(&format!("{path}.topic"), &topic);
                let key = match &sink.key {
                    Some(key) => Some(self.template(&format!("{path}.key"), key)?),
                    None => None,
                };
                Some(SinkModel::Kafka {
                    connection: conn.kafka.clone()?,
                    route: RouteTemplate::Kafka { topic: topic?, key },
                })
            }
        }
    }

    fn amqp10_connection(
        &mut self,
        path: &str,
        name: &str,
        conn: super::file::ConnectionFile,
        model: &ConnectionModel,
    ) -> Option<Amqp10Connection> {
        self.forbid(path, "brokers", conn.brokers.is_some(), "amqp10", "url");
        self.forbid(path, "options", !conn.options.is_empty(), "amqp10", "url");
        let d = &model.declare;
        let declared = !d.topics.is_empty() || !d.queues.is_empty() || !d.exchanges.is_empty();
        self.forbid(path, "declare", declared, "amqp10", "the broker's own configuration");
        let flavor = match conn.flavor.as_deref() {
            None => Some(Flavor::Generic),
            Some(flavor) => Flavor::parse(flavor).or_else(|| {
                let message =
                    format!("{flavor:?}: use activemq, artemis, rabbitmq, rabbitmq4 or generic");
                self.problem(format!("{path}.flavor"), message);
                None
            }),
        };
        let url = match conn.url {
            Some(url)
                if url.expose().starts_with("amqp://") || url.expose().starts_with("amqps://") =>
            {
                Some(url)
            }
            Some(url) => {
                let message = format!(
                    "{} is not an AMQP URL: write amqp://user:pass@host:5672",
                    url.redacted()
                );
                self.problem(format!("{path}.url"), message);
                None
            }
            None => {
                self.problem(path.to_owned(), "missing field `url` (amqp://user:pass@host:5672)");
                None
            }
        };
        Some(Amqp10Connection {
            name: name.to_owned(),
            url: url?,
            flavor: flavor?,
            container_id: conn.container_id.unwrap_or_else(|| format!("portico-{name}")),
            idle_timeout: conn.idle_timeout.map_or(Duration::from_secs(60), |s| s.0),
            // Below 512 bytes AMQP 1.0 cannot open a connection at all.
            max_frame_size: conn.max_frame_size.unwrap_or(65_536).max(512),
        })
    }

    fn amqp10_source(
        &mut self,
        path: &str,
        source: SourceFile,
        conn: &ConnectionModel,
    ) -> Option<SourceModel> {
        for (field, present) in [
            ("topics", source.topics.is_some()),
            ("group", source.group.is_some()),
            ("start", source.start.is_some()),
            ("prefetch", source.prefetch.is_some()),
        ] {
            self.forbid(path, field, present, "amqp10", "credit");
        }
        let named = [
            (Node::Queue, source.queue),
            (Node::Topic, source.topic),
            (Node::Address, source.address),
        ];
        let mut named = named.into_iter().filter_map(|(node, name)| Some((node, name?)));
        let (node, name) = match (named.next(), named.next()) {
            (Some(one), None) => one,
            _ => {
                self.problem(path.to_owned(), "give exactly one of `queue`, `topic` or `address`");
                return None;
            }
        };
        if source.subscription.is_some() && node == Node::Queue {
            self.problem(format!("{path}.subscription"), "durable subscriptions apply to topics");
        }
        let flavor = conn.amqp10.as_ref().map(|c| c.flavor);
        if source.subscription.is_some() && flavor == Some(Flavor::RabbitMq) {
            // RabbitMQ 3.x makes a new queue for every durable attach and never resumes one
            // by link name, so a subscription would silently lose what arrives while away.
            let message = "RabbitMQ 3.x cannot resume a durable AMQP 1.0 subscription; declare a \
                           queue bound to the topic and consume it with `queue:` instead";
            self.problem(format!("{path}.subscription"), message);
        }
        let credit = source.credit.unwrap_or(256);
        if credit == 0 {
            self.problem(format!("{path}.credit"), "must be at least 1");
        }
        Some(SourceModel::Amqp10 {
            connection: conn.amqp10.clone()?,
            name,
            node,
            credit,
            subscription: source.subscription,
        })
    }

    fn amqp10_sink(
        &mut self,
        path: &str,
        sink: SinkFile,
        conn: &ConnectionModel,
    ) -> Option<SinkModel> {
        for (field, present) in [
            ("exchange", sink.exchange.is_some()),
            ("routing_key", sink.routing_key.is_some()),
            ("key", sink.key.is_some()),
            ("persistent", sink.persistent.is_some()),
        ] {
            self.forbid(path, field, present, "amqp10", "queue, topic or address");
        }
        let named = [(Node::Queue, "queue", &sink.queue), (Node::Topic, "topic", &sink.topic)];
        let named = named.into_iter().chain([(Node::Address, "address", &sink.address)]);
        let mut named = named.filter_map(|(node, field, t)| Some((node, field, t.as_ref()?)));
        let (node, field, template) = match (named.next(), named.next()) {
            (Some(one), None) => one,
            _ => {
                self.problem(path.to_owned(), "give exactly one of `queue`, `topic` or `address`");
                return None;
            }
        };
        let name = self.template(&format!("{path}.{field}"), template)?;
        Some(SinkModel::Amqp10 {
            connection: conn.amqp10.clone()?,
            route: RouteTemplate::Amqp10 { name, node },
        })
    }

    fn rules(&mut self, path: &str, set: &BTreeMap<String, SetFile>) -> Rules {
        let mut rules = Rules::default();
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
                (_, SetFile::Template(template)) => {
                    match Field::NAMES.iter().find(|(n, _)| n == name) {
                        Some((_, field)) => {
                            if let Some(t) = self.template(&at, template) {
                                rules.properties.push((*field, t));
                            }
                        }
                        None => {
                            let known: Vec<_> = Field::NAMES.iter().map(|(n, _)| *n).collect();
                            let message = format!(
                                "unknown property; use one of {} or headers",
                                known.join(", ")
                            );
                            self.problem(at, message);
                        }
                    }
                }
                _ => self.problem(
                    at,
                    "expected a template, or a map of header templates under `headers`",
                ),
            }
        }
        rules
    }

    fn template(&mut self, path: &str, field: &TemplateFile) -> Option<Template> {
        let (source, default) = field.parts();
        let at = if matches!(field, TemplateFile::WithDefault { .. }) {
            format!("{path}.template")
        } else {
            path.to_owned()
        };
        match Template::parse(source, default.map(str::to_owned)) {
            Ok(template) => Some(template),
            Err(e) => {
                self.problem(at, format!("template {source:?}: {e}"));
                None
            }
        }
    }
}
