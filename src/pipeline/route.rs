//! Resolving a sink's templates into the concrete destination of one message.

use super::envelope::Envelope;
use super::template::{MissingValue, Template};

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
    Kafka { topic: Template, key: Option<Template> },
    Amqp10 { name: Template, node: Node },
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
            RouteTemplate::Kafka { topic, key } => {
                let topic = topic.render(envelope)?;
                if !valid_topic(&topic) {
                    return Err(TranslateError::InvalidTopic(topic));
                }
                let key = key.as_ref().map(|k| k.render(envelope)).transpose()?;
                Ok(Route::Kafka { topic, key })
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
        };
        let mut env = Envelope::default();
        env.origin.routing_key = Some("a/b".into());
        assert!(matches!(route.resolve(&env), Err(TranslateError::InvalidTopic(_))));
        env.origin.routing_key = Some("created".into());
        assert_eq!(
            route.resolve(&env),
            Ok(Route::Kafka { topic: "orders.created".into(), key: None })
        );
    }
}
