//! Checks of connections, sources and sinks: which fields each protocol takes, and what they
//! must hold.

use std::collections::BTreeMap;
use std::time::Duration;

use super::check::Checker;
use super::file::{ConnectionFile, PartitionFile, Protocol, SinkFile, SourceFile};
use super::model::{
    Amqp10Connection, Amqp091Connection, ConnectionModel, Flavor, KafkaConnection, Persistence,
    SinkModel, SourceModel,
};
use super::secret::SecretUrl;
use crate::pipeline::{Node, RecordTime, RouteTemplate, Template};

/// librdkafka settings that at-least-once delivery depends on, which `options` may not change.
const GUARANTEED: &[&str] = &[
    "enable.auto.offset.store",
    "enable.auto.commit",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "group.id",
];

/// Default prefetch: deep enough to keep a confirm pipeline busy, small enough that a
/// restart redelivers little.
const DEFAULT_PREFETCH: u16 = 256;

/// Default number of publishes an AMQP 0-9-1 sink lets await their confirm. RabbitMQ confirms
/// in batches, so a few hundred keep the pipe full; past that each waiting publish only holds
/// memory (its message and its place in the confirm book).
const DEFAULT_CONFIRM_WINDOW: u32 = 256;

impl Checker {
    pub(super) fn connection(
        &mut self,
        path: &str,
        name: &str,
        mut conn: ConnectionFile,
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
                if let Some(url) = self.amqp_url(path, conn.url, "amqp://user:pass@host:5672/vhost")
                {
                    model.amqp091 = Some(Amqp091Connection { name: name.to_owned(), url });
                }
            }
            Protocol::Kafka => {
                self.forbid(path, "url", conn.url.is_some(), "kafka", "brokers");
                let queues =
                    !model.declare.queues.is_empty() || !model.declare.exchanges.is_empty();
                self.forbid(path, "declare.queues", queues, "kafka", "declare.topics");
                for key in conn.options.keys().filter(|k| GUARANTEED.contains(&k.as_str())) {
                    let message = format!(
                        "portico sets `{key}` itself (for at-least-once delivery); remove it"
                    );
                    self.problem(format!("{path}.options.{key}"), message);
                }
                for topic in &model.declare.topics {
                    if topic.partitions < 1 && topic.partitions != -1 {
                        let message =
                            "partitions must be at least 1 (or -1 for the broker default)";
                        self.problem(format!("{path}.declare.topics"), message);
                    }
                }
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

    /// An AMQP connection's `url`, if it is one the client libraries can read. Problems name
    /// the URL with its password hidden.
    fn amqp_url(&mut self, path: &str, url: Option<SecretUrl>, example: &str) -> Option<SecretUrl> {
        let Some(url) = url else {
            self.problem(path.to_owned(), format!("missing field `url` ({example})"));
            return None;
        };
        let text = url.expose();
        if !text.starts_with("amqp://") && !text.starts_with("amqps://") {
            let message = format!("{} is not an AMQP URL: write {example}", url.redacted());
            self.problem(format!("{path}.url"), message);
            return None;
        }
        let why = if text.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            "it holds a space or a quote".to_owned()
        } else {
            match url::Url::parse(text) {
                Ok(_) => return Some(url),
                Err(error) => error.to_string(),
            }
        };
        let message = format!(
            "{} is not a valid URL ({why}); percent-encode `/`, `?`, `#`, `@`, `:`, spaces and \
             quotes in a user name or password (`/` is %2F)",
            url.redacted()
        );
        self.problem(format!("{path}.url"), message);
        None
    }

    pub(super) fn forbid(
        &mut self,
        path: &str,
        field: &str,
        present: bool,
        protocol: &str,
        instead: &str,
    ) {
        if present {
            self.problem(
                format!("{path}.{field}"),
                format!("`{field}` does not apply to {protocol} connections (use `{instead}`)"),
            );
        }
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

    pub(super) fn source(
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

    pub(super) fn sink(
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
                self.forbid(path, "partition", sink.partition.is_some(), "amqp091", "routing_key");
                self.forbid(path, "timestamp", sink.timestamp.is_some(), "amqp091", "set");
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
                let confirm_window = sink.confirm_window.unwrap_or(DEFAULT_CONFIRM_WINDOW);
                if confirm_window == 0 {
                    self.problem(
                        format!("{path}.confirm_window"),
                        "must be at least 1: it counts the publishes that may await a confirm",
                    );
                }
                Some(SinkModel::Amqp091 {
                    connection: conn.amqp091.clone()?,
                    route: RouteTemplate::Amqp091 {
                        exchange: exchange?,
                        routing_key: routing_key?,
                    },
                    persistence,
                    confirm_window: usize::try_from(confirm_window).unwrap_or(usize::MAX),
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
                let window = sink.confirm_window.is_some();
                self.forbid(path, "confirm_window", window, "kafka", "max_in_flight on the bridge");
                let Some(topic) = sink.topic else {
                    self.problem(path.to_owned(), "missing field `topic`");
                    return None;
                };
                let topic = self.template(&format!("{path}.topic"), &topic);
                let key = match &sink.key {
                    Some(key) => Some(self.template(&format!("{path}.key"), key)?),
                    None => None,
                };
                let partition = self.partition(&format!("{path}.partition"), &sink.partition);
                let time = self.record_time(&format!("{path}.timestamp"), sink.timestamp);
                Some(SinkModel::Kafka {
                    connection: conn.kafka.clone()?,
                    route: RouteTemplate::Kafka { topic: topic?, key, partition: partition?, time },
                })
            }
        }
    }

    /// A Kafka partition: a number, or a template rendering one per message.
    fn partition(
        &mut self,
        path: &str,
        partition: &Option<PartitionFile>,
    ) -> Option<Option<Template>> {
        match partition {
            None => Some(None),
            Some(PartitionFile::Number(n)) if (0..=i64::from(i32::MAX)).contains(n) => {
                Template::parse(&n.to_string(), None).ok().map(Some)
            }
            Some(PartitionFile::Number(n)) => {
                self.problem(path.to_owned(), format!("{n}: a partition is a number >= 0"));
                None
            }
            Some(PartitionFile::Template(t)) => self.template(path, t).map(Some),
        }
    }

    /// Where a Kafka record's timestamp comes from.
    fn record_time(&mut self, path: &str, written: Option<String>) -> RecordTime {
        match written.as_deref() {
            None | Some("creation_time") => RecordTime::Creation,
            Some("now") => RecordTime::Now,
            Some(other) => match other.strip_prefix("header.").filter(|h| !h.is_empty()) {
                Some(header) => RecordTime::Header(header.to_owned()),
                None => {
                    let message = format!("{other:?}: use `creation_time`, `now` or `header.NAME`");
                    self.problem(path.to_owned(), message);
                    RecordTime::Creation
                }
            },
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
        let url = self.amqp_url(path, conn.url, "amqp://user:pass@host:5672");
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
            ("partition", sink.partition.is_some()),
            ("timestamp", sink.timestamp.is_some()),
        ] {
            self.forbid(path, field, present, "amqp10", "queue, topic or address");
        }
        let window = sink.confirm_window.is_some();
        self.forbid(path, "confirm_window", window, "amqp10", "max_in_flight on the bridge");
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
}
