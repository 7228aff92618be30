//! The shape of `bridges.yaml` exactly as written. Nothing here is validated beyond types;
//! [`super::load`] turns it into the checked [`super::model`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::secret::{SecretOptions, SecretUrl};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub telemetry: TelemetryFile,
    pub connections: BTreeMap<String, ConnectionFile>,
    pub bridges: Vec<BridgeFile>,
    /// How long a shutdown waits for in-flight messages before giving them back.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Span,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryFile {
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoints; loopback by default.
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for TelemetryFile {
    fn default() -> Self {
        TelemetryFile { listen: default_listen() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Amqp091,
    Amqp10,
    Kafka,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Amqp091 => "amqp091",
            Protocol::Amqp10 => "amqp10",
            Protocol::Kafka => "kafka",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionFile {
    pub protocol: Protocol,
    /// AMQP 0-9-1: `amqp://user:pass@host:port/vhost`; AMQP 1.0: `amqp://user:pass@host:port`.
    pub url: Option<SecretUrl>,
    /// AMQP 1.0: `activemq`, `artemis`, `rabbitmq` (3.x addresses), `rabbitmq4` or `generic`.
    pub flavor: Option<String>,
    /// AMQP 1.0: the container id announced to the broker (default `portico-<connection>`).
    pub container_id: Option<String>,
    /// AMQP 1.0: idle timeout announced to the peer.
    pub idle_timeout: Option<Span>,
    /// AMQP 1.0: the largest frame to accept.
    pub max_frame_size: Option<u32>,
    /// Kafka: `host:port[,host:port...]`.
    pub brokers: Option<String>,
    /// Kafka: extra librdkafka properties, passed through unchanged.
    #[serde(default)]
    pub options: SecretOptions,
    /// Topology declared when the connection opens.
    pub declare: Option<DeclareFile>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclareFile {
    #[serde(default)]
    pub exchanges: Vec<ExchangeFile>,
    #[serde(default)]
    pub queues: Vec<QueueFile>,
    #[serde(default)]
    pub topics: Vec<TopicFile>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeFile {
    pub name: String,
    #[serde(rename = "type", default = "default_exchange_type")]
    pub kind: String,
    #[serde(default = "yes")]
    pub durable: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    pub name: String,
    #[serde(default = "yes")]
    pub durable: bool,
    /// Queue arguments such as `x-max-length` or `x-queue-type`.
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default)]
    pub bindings: Vec<BindingFile>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingFile {
    pub exchange: String,
    #[serde(default)]
    pub routing_key: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicFile {
    pub name: String,
    #[serde(default = "one")]
    pub partitions: i32,
    #[serde(default = "one")]
    pub replication: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeFile {
    pub name: String,
    pub source: SourceFile,
    pub sink: SinkFile,
    pub dead_letter: Option<SinkFile>,
    /// Messages handed to the sink but not yet settled at the source.
    pub max_in_flight: Option<usize>,
    #[serde(default)]
    pub retry: RetryFile,
    /// Properties and headers to set on what the sink receives, from templates.
    #[serde(default)]
    pub set: BTreeMap<String, SetFile>,
    /// Dead-letter (reason `lossy conversion`) every message the sink could not receive
    /// without coercing or dropping a value, instead of sending it.
    #[serde(default)]
    pub strict: bool,
    /// Moves between properties and headers: `correlation_id: header.corr` or back.
    #[serde(default, rename = "move")]
    pub moves: BTreeMap<String, String>,
    /// Header renames.
    #[serde(default)]
    pub rename: RenameFile,
    /// Headers and properties the sink does not receive.
    #[serde(default)]
    pub drop: DropFile,
    /// What the body becomes.
    pub body: Option<BodyFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameFile {
    /// Old name → new name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropFile {
    /// Header names; a trailing `*` matches every name with that prefix.
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub properties: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyFile {
    /// `text`, `bytes`, `json`, `map` or `list`.
    pub to: String,
    /// For `text`: the charset the bytes are in; for `bytes`: the charset to write.
    pub charset: Option<String>,
}

/// A `set:` entry: a template for a property, or a map of header templates under `headers`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SetFile {
    Template(TemplateFile),
    Headers(BTreeMap<String, TemplateFile>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    pub connection: String,
    /// AMQP 0-9-1: the queue to consume.
    pub queue: Option<String>,
    /// AMQP 0-9-1: unacknowledged deliveries the broker may push ahead.
    pub prefetch: Option<u16>,
    /// Kafka: the topics to consume.
    pub topics: Option<Vec<String>>,
    /// Kafka: the consumer group.
    pub group: Option<String>,
    /// Kafka: where a new group starts, `earliest` or `latest`.
    pub start: Option<String>,
    /// AMQP 1.0: a topic to consume (queue sources use `queue`).
    pub topic: Option<String>,
    /// AMQP 1.0: an address exactly as the broker spells it.
    pub address: Option<String>,
    /// AMQP 1.0: link credit, the deliveries the broker may send ahead.
    pub credit: Option<u32>,
    /// AMQP 1.0: name of a durable topic subscription (kept while portico is away).
    pub subscription: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkFile {
    pub connection: String,
    /// AMQP 0-9-1: the exchange (`""` is the default exchange).
    pub exchange: Option<TemplateFile>,
    pub routing_key: Option<TemplateFile>,
    /// AMQP 0-9-1: `source` (carry the source's durability), `always` or `never`.
    pub persistent: Option<String>,
    /// AMQP 0-9-1: how many publishes may await their confirm at once.
    pub confirm_window: Option<u32>,
    /// Kafka: the topic. AMQP 1.0: a topic address.
    pub topic: Option<TemplateFile>,
    /// AMQP 1.0: a queue address.
    pub queue: Option<TemplateFile>,
    /// AMQP 1.0: an address exactly as the broker spells it.
    pub address: Option<TemplateFile>,
    /// Kafka: the record key.
    pub key: Option<TemplateFile>,
    /// Kafka: the partition, a number or a template rendering one (default: from the key).
    pub partition: Option<PartitionFile>,
    /// Kafka: the record timestamp: `creation_time` (default), `now` or `header.NAME`.
    pub timestamp: Option<String>,
}

/// A partition written as a number or as a template.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a partition number, or a template such as \"{header.partition}\"")]
pub enum PartitionFile {
    Number(i64),
    Template(TemplateFile),
}

/// A template, either as a plain string or with a default for values missing at run time.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a template string, or { template: \"...\", default: \"...\" }")]
pub enum TemplateFile {
    Plain(String),
    WithDefault(TemplateWithDefault),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateWithDefault {
    pub template: String,
    pub default: Option<String>,
}

impl TemplateFile {
    pub fn parts(&self) -> (&str, Option<&str>) {
        match self {
            TemplateFile::Plain(t) => (t, None),
            TemplateFile::WithDefault(w) => (&w.template, w.default.as_deref()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: Span,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Span,
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// The random share of each backoff step, 0.0 to 1.0.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Deliveries of one message before it is dead-lettered (`max-retries`); unlimited when
    /// omitted.
    pub max_attempts: Option<u32>,
}

impl Default for RetryFile {
    fn default() -> Self {
        RetryFile {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            multiplier: default_multiplier(),
            jitter: default_jitter(),
            max_attempts: None,
        }
    }
}

/// A duration written with its unit: `250ms`, `5s`, `2m`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span(pub Duration);

impl Span {
    pub fn parse(text: &str) -> Option<Span> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().ok()?;
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            _ => return None,
        };
        Duration::try_from_secs_f64(seconds).ok().map(Span)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Span::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: write a number with a unit, like 250ms, 5s, 2m or 1h"
            ))
        })
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".to_owned()
}

fn default_shutdown_timeout() -> Span {
    Span(Duration::from_secs(10))
}

fn default_exchange_type() -> String {
    "direct".to_owned()
}

fn default_initial_backoff() -> Span {
    Span(Duration::from_millis(100))
}

fn default_max_backoff() -> Span {
    Span(Duration::from_secs(30))
}

fn default_multiplier() -> f64 {
    2.0
}

fn default_jitter() -> f64 {
    0.5
}

fn yes() -> bool {
    true
}

fn one() -> i32 {
    1
}
