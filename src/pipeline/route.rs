//! Resolving a sink's templates into the concrete destination of one message.

use super::envelope::Envelope;
use super::template::{MissingValue, Template};
use super::value::Value;

/// AMQP 0-9-1 short strings (exchange, routing key) hold at most 255 bytes.
pub const SHORT_STRING_MAX: usize = 255;
/// Kafka refuses topic names longer than this.
const TOPIC_MAX: usize = 249;

/// Where one message goes, with every template already rendered.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    Amqp091 {
        exchange: String,
        routing_key: String,
    },
    Kafka {
        topic: String,
        key: Option<String>,
        /// `None` lets the producer's partitioner choose from the key.
        partition: Option<i32>,
        /// The record timestamp in ms; `None` lets the producer stamp the send time.
        timestamp: Option<i64>,
    },
    /// A node name; the sink spells it as its broker's address (see [`Node`]).
    Amqp10 {
        name: String,
        node: Node,
    },
}

/// What an AMQP 1.0 name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Queue,
    Topic,
    /// An address exactly as the broker spells it.
    Address,
}

/// The templates of one sink, parsed from the configuration.
#[derive(Clone, Debug)]
pub enum RouteTemplate {
    Amqp091 { exchange: Template, routing_key: Template },
    Kafka { topic: Template, key: Option<Template>, partition: Option<Template>, time: RecordTime },
    Amqp10 { name: Template, node: Node },
}

/// Where a Kafka record's timestamp comes from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RecordTime {
    /// The message's creation time (the 0-9-1 timestamp, the AMQP 1.0 creation-time).
    #[default]
    Creation,
    /// None: the producer stamps the time of sending.
    Now,
    /// A header holding milliseconds since the epoch (a timestamp, a number or its text).
    Header(String),
}

/// Why a message has no valid destination. Always permanent: the same message would fail
/// the same way on every attempt, so it goes to the dead letter.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TranslateError {
    #[error(transparent)]
    Missing(#[from] MissingValue),
    #[error("routing key too long: {0} bytes, AMQP 0-9-1 allows 255")]
    RoutingKeyTooLong(usize),
    #[error("exchange name too long: {0} bytes, AMQP 0-9-1 allows 255")]
    ExchangeTooLong(usize),
    #[error("invalid Kafka topic {0:?}: use 1-249 of [a-zA-Z0-9._-]")]
    InvalidTopic(String),
    #[error("the address template rendered an empty address")]
    EmptyAddress,
    #[error("invalid Kafka partition {0:?}: the partition template must render a number >= 0")]
    InvalidPartition(String),
    #[error("invalid record timestamp in header {0:?}: {1}")]
    InvalidTimestamp(String, String),
    #[error("{0}")]
    Untranslatable(String),
}

impl TranslateError {
    /// A short, stable reason for dead-letter headers and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TranslateError::Missing(_) => "template value missing",
            TranslateError::RoutingKeyTooLong(_) => "routing key too long",
            TranslateError::ExchangeTooLong(_) => "exchange name too long",
            TranslateError::InvalidTopic(_) => "invalid topic",
            TranslateError::EmptyAddress => "empty address",
            TranslateError::InvalidPartition(_) => "invalid partition",
            TranslateError::InvalidTimestamp(..) => "invalid timestamp",
            TranslateError::Untranslatable(_) => "untranslatable",
        }
    }
}

/// Drops the errors that only say a template value is missing.
pub trait FilterMissing {
    fn filter_missing(self) -> Result<(), TranslateError>;
}

impl FilterMissing for Result<Route, TranslateError> {
    fn filter_missing(self) -> Result<(), TranslateError> {
        match self {
            Ok(_) | Err(TranslateError::Missing(_)) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

impl RouteTemplate {
    /// Whether the destination (exchange, topic, address; not the routing key or Kafka key)
    /// is the same for every message. A missing static destination is a configuration
    /// fault; a missing destination taken from the message is that message's fault.
    pub fn destination_is_static(&self) -> bool {
        match self {
            RouteTemplate::Amqp091 { exchange, .. } => exchange.is_static(),
            RouteTemplate::Kafka { topic, .. } => topic.is_static(),
            RouteTemplate::Amqp10 { name, .. } => name.is_static(),
        }
    }

    /// Renders the destination of `envelope`.
    pub fn resolve(&self, envelope: &Envelope) -> Result<Route, TranslateError> {
        match self {
            RouteTemplate::Amqp091 { exchange, routing_key } => {
                let exchange = exchange.render(envelope)?;
                let routing_key = routing_key.render(envelope)?;
                if exchange.len() > SHORT_STRING_MAX {
                    return Err(TranslateError::ExchangeTooLong(exchange.len()));
                }
                if routing_key.len() > SHORT_STRING_MAX {
                    return Err(TranslateError::RoutingKeyTooLong(routing_key.len()));
                }
                Ok(Route::Amqp091 { exchange, routing_key })
            }
            RouteTemplate::Kafka { topic, key, partition, time } => {
                let topic = topic.render(envelope)?;
                if !valid_topic(&topic) {
                    return Err(TranslateError::InvalidTopic(topic));
                }
                let key = key.as_ref().map(|k| k.render(envelope)).transpose()?;
                let partition = match partition {
                    Some(template) => {
                        let text = template.render(envelope)?;
                        match text.trim().parse::<i32>() {
                            Ok(n) if n >= 0 => Some(n),
                            _ => return Err(TranslateError::InvalidPartition(text)),
                        }
                    }
                    None => None,
                };
                let timestamp = time.resolve(envelope)?;
                Ok(Route::Kafka { topic, key, partition, timestamp })
            }
            RouteTemplate::Amqp10 { name, node } => {
                let name = name.render(envelope)?;
                if name.is_empty() {
                    return Err(TranslateError::EmptyAddress);
                }
                Ok(Route::Amqp10 { name, node: *node })
            }
        }
    }
}

impl RecordTime {
    /// The record timestamp for `envelope`; `None` lets the producer stamp it.
    fn resolve(&self, envelope: &Envelope) -> Result<Option<i64>, TranslateError> {
        match self {
            // Kafka has no timestamps before the epoch: -1 means "none".
            RecordTime::Creation => Ok(envelope.properties.creation_time_ms.filter(|ms| *ms >= 0)),
            RecordTime::Now => Ok(None),
            RecordTime::Header(name) => {
                let missing = || MissingValue {
                    template: format!("timestamp: header.{name}"),
                    variable: format!("header.{name}"),
                };
                let value = envelope.header(name).ok_or_else(missing)?;
                let invalid =
                    |why: &str| TranslateError::InvalidTimestamp(name.clone(), why.into());
                let ms = match value {
                    Value::Timestamp(ms) => *ms,
                    Value::Null => return Err(missing().into()),
                    other => other
                        .to_template_text()
                        .and_then(|t| t.trim().parse::<i64>().ok())
                        .ok_or_else(|| invalid("not milliseconds since the epoch"))?,
                };
                if ms < 0 {
                    return Err(invalid("before 1970"));
                }
                Ok(Some(ms))
            }
        }
    }
}

fn valid_topic(topic: &str) -> bool {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !topic.is_empty()
        && topic.len() <= TOPIC_MAX
        && topic != "."
        && topic != ".."
        && topic.chars().all(legal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amqp(rk: &str) -> RouteTemplate {
        RouteTemplate::Amqp091 {
            exchange: Template::parse("ex", None).expect("parses"),
            routing_key: Template::parse(rk, None).expect("parses"),
        }
    }

    #[test]
    fn a_routing_key_over_255_bytes_is_refused_not_truncated() {
        let mut env = Envelope::default();
        env.origin.routing_key = Some("k".repeat(300));
        assert_eq!(
            amqp("{routing_key}").resolve(&env),
            Err(TranslateError::RoutingKeyTooLong(300))
        );
        env.origin.routing_key = Some("k".repeat(255));
        assert!(amqp("{routing_key}").resolve(&env).is_ok());
    }

    #[test]
    fn topics_are_validated_after_rendering() {
        let route = RouteTemplate::Kafka {
            topic: Template::parse("orders.{routing_key}", None).expect("parses"),
            key: None,
            partition: None,
            time: RecordTime::Creation,
        };
        let mut env = Envelope::default();
        env.origin.routing_key = Some("a/b".into());
        assert!(matches!(route.resolve(&env), Err(TranslateError::InvalidTopic(_))));
        env.origin.routing_key = Some("created".into());
        assert_eq!(
            route.resolve(&env),
            Ok(Route::Kafka {
                topic: "orders.created".into(),
                key: None,
                partition: None,
                timestamp: None
            })
        );
    }

    fn kafka(partition: Option<&str>, time: RecordTime) -> RouteTemplate {
        RouteTemplate::Kafka {
            topic: Template::parse("t", None).expect("parses"),
            key: Some(Template::parse("{correlation_id}", None).expect("parses")),
            partition: partition.map(|p| Template::parse(p, None).expect("parses")),
            time,
        }
    }

    #[test]
    fn the_kafka_partition_and_timestamp_come_from_the_rules() {
        let mut env = Envelope::default();
        env.properties.correlation_id = Some(crate::pipeline::MessageId::String("c-9".into()));
        env.properties.creation_time_ms = Some(1_700_000_000_000);
        env.headers.push(("p".into(), Value::I32(2)));
        env.headers.push(("at".into(), Value::Timestamp(1_600_000_000_123)));
        env.headers.push(("when".into(), Value::String("1500000000000".into())));
        let resolved = |p, t| kafka(p, t).resolve(&env);
        let Ok(Route::Kafka { key, partition, timestamp, .. }) =
            resolved(Some("{header.p}"), RecordTime::Header("at".into()))
        else {
            panic!("resolves");
        };
        assert_eq!(
            (key.as_deref(), partition, timestamp),
            (Some("c-9"), Some(2), Some(1_600_000_000_123))
        );
        assert!(matches!(
            resolved(None, RecordTime::Header("when".into())),
            Ok(Route::Kafka { timestamp: Some(1_500_000_000_000), partition: None, .. })
        ));
        assert!(matches!(
            resolved(None, RecordTime::Creation),
            Ok(Route::Kafka { timestamp: Some(1_700_000_000_000), .. })
        ));
        assert!(matches!(
            resolved(None, RecordTime::Now),
            Ok(Route::Kafka { timestamp: None, .. })
        ));
        assert_eq!(
            resolved(Some("{correlation_id}"), RecordTime::Now),
            Err(TranslateError::InvalidPartition("c-9".into()))
        );
        assert_eq!(
            resolved(None, RecordTime::Header("absent".into())).map_err(|e| e.reason()),
            Err("template value missing")
        );
    }
}
