//! The validated configuration the gateway runs: every reference resolved, every template
//! parsed, every default applied.

use std::collections::BTreeMap;
use std::time::Duration;

use super::file::{DeclareFile, Protocol};
use super::secret::SecretUrl;
use crate::pipeline::RouteTemplate;

#[derive(Debug)]
pub struct Model {
    pub listen: String,
    pub shutdown_timeout: Duration,
    pub connections: BTreeMap<String, ConnectionModel>,
    pub bridges: Vec<BridgeModel>,
}

#[derive(Debug)]
pub struct ConnectionModel {
    pub protocol: Protocol,
    pub amqp091: Option<Amqp091Connection>,
    pub kafka: Option<KafkaConnection>,
    pub declare: DeclareFile,
}

#[derive(Clone, Debug)]
pub struct Amqp091Connection {
    pub name: String,
    pub url: SecretUrl,
}

#[derive(Clone, Debug)]
pub struct KafkaConnection {
    pub name: String,
    pub brokers: String,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct BridgeModel {
    pub name: String,
    pub source: SourceModel,
    pub sink: SinkModel,
    pub dead_letter: Option<SinkModel>,
    pub max_in_flight: usize,
    pub retry: RetryModel,
}

#[derive(Debug)]
pub enum SourceModel {
    Amqp091 { connection: Amqp091Connection, queue: String, prefetch: u16 },
    Kafka { connection: KafkaConnection, topics: Vec<String>, group: String, start: String },
}

/// How an AMQP 0-9-1 sink sets `delivery_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Persistent when the source said durable (or is Kafka, which is durable storage).
    Source,
    Always,
    Never,
}

#[derive(Debug)]
pub enum SinkModel {
    Amqp091 { connection: Amqp091Connection, route: RouteTemplate, persistence: Persistence },
    Kafka { connection: KafkaConnection, route: RouteTemplate },
}

impl SinkModel {
    pub fn route(&self) -> &RouteTemplate {
        match self {
            SinkModel::Amqp091 { route, .. } | SinkModel::Kafka { route, .. } => route,
        }
    }

    pub fn protocol(&self) -> &'static str {
        match self {
            SinkModel::Amqp091 { .. } => "amqp091",
            SinkModel::Kafka { .. } => "kafka",
        }
    }
}

impl SourceModel {
    pub fn protocol(&self) -> &'static str {
        match self {
            SourceModel::Amqp091 { .. } => "amqp091",
            SourceModel::Kafka { .. } => "kafka",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RetryModel {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
}
