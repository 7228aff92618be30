//! Kafka, through librdkafka.
//!
//! A topic is split into partitions; order holds within a partition only. A consumer group
//! shares the partitions among its members and remembers, per partition, the offset of the
//! next record to read. portico stores that offset only once every earlier record of the
//! partition was confirmed by the sink, so a crash replays from the first unconfirmed record
//! and never skips one. The producer runs idempotent with `acks=all`: a record is confirmed
//! once every in-sync replica has it, and librdkafka's own retries neither duplicate nor
//! reorder it.

pub mod codec;
pub mod sink;
pub mod source;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use crate::config::KafkaConnection;
use crate::telemetry::RateLimit;

/// Routes librdkafka's own logs and error reports into `tracing`, rate-limited: with a broker
/// down, librdkafka reports the same failure several times a second.
pub struct Logging {
    client: String,
    limit: RateLimit,
    pub refusal: Refusal,
}

impl Logging {
    pub fn new(client: impl Into<String>) -> Logging {
        Logging {
            client: client.into(),
            limit: RateLimit::new(Duration::from_secs(10), 3),
            refusal: Refusal::default(),
        }
    }
}

/// The first refused login of a client. librdkafka reports it only to the client's error
/// callback and retries forever: no receive and no send fails for it.
#[derive(Clone, Default)]
pub struct Refusal(Arc<watch::Sender<Option<String>>>);

impl Refusal {
    /// What to tell the user, once the broker refused the credentials.
    pub fn get(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    /// Resolves with what to tell the user once the broker refused the credentials.
    /// Cancel safe.
    pub async fn wait(&self) -> String {
        let text = self.0.subscribe().wait_for(Option::is_some).await.ok().and_then(|t| t.clone());
        match text {
            Some(text) => text,
            // Unreachable: the sender lives as long as `self`.
            None => std::future::pending().await,
        }
    }

    fn set(&self, text: String) {
        self.0.send_if_modified(|held| held.is_none() && held.replace(text).is_none());
    }
}

impl ClientContext for Logging {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if let Some(suppressed) = self.limit.allow() {
                    // `detail`, not `message`: that name is the log line's own sentence.
                    tracing::warn!(client = %self.client, facility, detail = message, suppressed,
                        "Kafka client reported a problem");
                }
            }
            _ => tracing::debug!(client = %self.client, facility, detail = message,
                "Kafka client log"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if access_refused(&error) {
            if self.refusal.get().is_none() {
                tracing::error!(client = %self.client, %error, reason,
                    "Kafka broker refused the credentials");
                self.refusal.set(refusal(&format!("{error}: {reason}")));
            }
            return;
        }
        if let Some(suppressed) = self.limit.allow() {
            tracing::warn!(client = %self.client, %error, reason, suppressed,
                "Kafka client reported an error; it keeps retrying");
        }
    }
}

/// Whether the broker refused the client's credentials or its permissions for the cluster.
pub(crate) fn access_refused(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(C::Authentication | C::SaslAuthenticationFailed | C::ClusterAuthorizationFailed)
    )
}

/// What to tell the user about a refused login: what the broker said and what to check.
pub(crate) fn refusal(error: &str) -> String {
    format!(
        "the broker refused access: {error}; check the connection's sasl.username, \
         sasl.password, sasl.mechanism and security.protocol options"
    )
}

/// Creates a Kafka client of `connection`; the error names `what` failed, with the values
/// of secret options (which librdkafka repeats) masked.
pub(crate) fn create<C, T>(
    connection: &KafkaConnection,
    config: &ClientConfig,
    context: C,
    what: &str,
) -> Result<T, String>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    T::from_config_and_context(config, context)
        .map_err(|e| connection.options.redact(&format!("invalid Kafka {what} settings: {e}")))
}

/// A consumer for `group` that commits nothing by itself: what is done is committed by hand.
/// `start` (earliest, latest) applies where the group has no committed offset.
pub(crate) fn reader_config(
    connection: &KafkaConnection,
    group: &str,
    start: &str,
) -> ClientConfig {
    client_config(
        connection,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", start),
        ],
    )
}

/// The settings of one Kafka client: `defaults` first, then the connection's own `options`,
/// which therefore win.
pub(crate) fn client_config(
    connection: &KafkaConnection,
    defaults: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &connection.brokers);
    config.set("client.id", format!("portico-{}", connection.name));
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in connection.options.iter() {
        config.set(key, value);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_librdkafka_log_line_keeps_its_sentence_in_json() {
        let captured = crate::telemetry::CapturedLog::default();
        let writer = captured.clone();
        let subscriber = crate::cli::log_builder(move || writer.clone()).json().finish();
        tracing::subscriber::with_default(subscriber, || {
            let logging = Logging::new("k2r source");
            logging.log(RDKafkaLogLevel::Warning, "FAIL", "127.0.0.1:9092/1: Connect refused");
        });
        let text = captured.text();
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        let fields = &line["fields"];
        assert_eq!(fields["message"], "Kafka client reported a problem", "{text}");
        assert_eq!(fields["detail"], "127.0.0.1:9092/1: Connect refused", "{text}");
        assert_eq!(fields["facility"], "FAIL", "{text}");
        assert_eq!(text.matches("\"message\"").count(), 1, "one message key: {text}");
    }
}
