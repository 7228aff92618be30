//! The validated configuration the gateway runs: every reference resolved, every template
//! parsed, every default applied.

use std::collections::BTreeMap;
use std::time::Duration;

use super::file::{DeclareFile, Protocol};
use super::secret::{SecretOptions, SecretUrl};
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
    pub amqp10: Option<Amqp10Connection>,
    pub kafka: Option<KafkaConnection>,
    pub declare: DeclareFile,
}

#[derive(Clone, Debug)]
pub struct Amqp091Connection {
    pub name: String,
    pub url: SecretUrl,
}

/// `options` may hold `sasl.password` or key material: `Debug` masks them.
#[derive(Clone, Debug)]
pub struct KafkaConnection {
    pub name: String,
    pub brokers: String,
    pub options: SecretOptions,
}

/// How an AMQP 1.0 broker spells addresses and whether it speaks JMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    ActiveMq,
    Artemis,
    RabbitMq,
    RabbitMq4,
    Generic,
}

impl Flavor {
    pub fn parse(name: &str) -> Option<Flavor> {
        Some(match name {
            "activemq" => Flavor::ActiveMq,
            "artemis" => Flavor::Artemis,
            "rabbitmq" => Flavor::RabbitMq,
            "rabbitmq4" => Flavor::RabbitMq4,
            "generic" => Flavor::Generic,
            _ => return None,
        })
    }

    /// ActiveMQ and Artemis deliver to JMS clients, which need the Qpid JMS conventions.
    pub fn jms(self) -> bool {
        matches!(self, Flavor::ActiveMq | Flavor::Artemis)
    }
}

#[derive(Clone, Debug)]
pub struct Amqp10Connection {
    pub name: String,
    pub url: SecretUrl,
    pub flavor: Flavor,
    pub container_id: String,
    pub idle_timeout: Duration,
    pub max_frame_size: u32,
}

#[derive(Debug)]
pub struct BridgeModel {
    pub name: String,
    pub source: SourceModel,
    pub sink: SinkModel,
    pub dead_letter: Option<SinkModel>,
    pub max_in_flight: usize,
    pub retry: RetryModel,
    pub rules: crate::pipeline::Rules,
    /// Dead-letter every message that would lose a value on the way (`strict: true`).
    pub strict: bool,
}

#[derive(Debug)]
pub enum SourceModel {
    Amqp091 {
        connection: Amqp091Connection,
        queue: String,
        prefetch: u16,
    },
    Kafka {
        connection: KafkaConnection,
        topics: Vec<String>,
        group: String,
        start: String,
    },
    Amqp10 {
        connection: Amqp10Connection,
        name: String,
        node: crate::pipeline::Node,
        credit: u32,
        subscription: Option<String>,
    },
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
    Amqp091 {
        connection: Amqp091Connection,
        route: RouteTemplate,
        persistence: Persistence,
        /// Publishes that may await their confirm at once.
        confirm_window: usize,
    },
    Kafka {
        connection: KafkaConnection,
        route: RouteTemplate,
    },
    Amqp10 {
        connection: Amqp10Connection,
        route: RouteTemplate,
    },
}

impl SinkModel {
    pub fn route(&self) -> &RouteTemplate {
        match self {
            SinkModel::Amqp091 { route, .. }
            | SinkModel::Kafka { route, .. }
            | SinkModel::Amqp10 { route, .. } => route,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RetryModel {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// The random share of each backoff step (0.0 to 1.0).
    pub jitter: f64,
    /// Deliveries of one message, counted across its returns to the source, before it is
    /// dead-lettered with reason `max-retries`; `None` retries transient failures forever.
    pub max_attempts: Option<u32>,
}
