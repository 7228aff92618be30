//! Declaring exchanges, queues and bindings listed under a connection's `declare:`.

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::config::SecretUrl;
use crate::config::file::DeclareFile;

/// Declares everything in `declare`. Declarations are idempotent, so this runs at every start;
/// a declaration that conflicts with what exists fails with the broker's reason.
pub async fn declare(url: &SecretUrl, declare: &DeclareFile) -> Result<(), String> {
    if declare.exchanges.is_empty() && declare.queues.is_empty() {
        return Ok(());
    }
    let connection = super::connect(url, "topology").await?;
    let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
    let result = async {
        for exchange in &declare.exchanges {
            let kind = match exchange.kind.as_str() {
                "direct" => ExchangeKind::Direct,
                "fanout" => ExchangeKind::Fanout,
                "topic" => ExchangeKind::Topic,
                "headers" => ExchangeKind::Headers,
                other => ExchangeKind::Custom(other.to_owned()),
            };
            let options =
                ExchangeDeclareOptions { durable: exchange.durable, ..Default::default() };
            channel
                .exchange_declare(short(&exchange.name)?, kind, options, FieldTable::default())
                .await
                .map_err(|e| format!("exchange {:?}: {e}", exchange.name))?;
        }
        for queue in &declare.queues {
            let mut arguments = FieldTable::default();
            for (key, value) in &queue.arguments {
                arguments.insert(short(key)?, argument(value)?);
            }
            let options = QueueDeclareOptions { durable: queue.durable, ..Default::default() };
            channel
                .queue_declare(short(&queue.name)?, options, arguments)
                .await
                .map_err(|e| format!("queue {:?}: {e}", queue.name))?;
            for binding in &queue.bindings {
                channel
                    .queue_bind(
                        short(&queue.name)?,
                        short(&binding.exchange)?,
                        short(&binding.routing_key)?,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| {
                        format!("binding {:?} → {:?}: {e}", binding.exchange, queue.name)
                    })?;
            }
        }
        Ok(())
    }
    .await;
    let _ = channel.close(200, "declared".into()).await;
    let _ = connection.close(200, "declared".into()).await;
    result
}

fn short(name: &str) -> Result<ShortString, String> {
    ShortString::try_new(name).map_err(|_| format!("{name:?} is longer than 255 bytes"))
}

fn argument(value: &serde_yaml_ng::Value) -> Result<AMQPValue, String> {
    use serde_yaml_ng::Value as Y;
    Ok(match value {
        Y::Bool(b) => AMQPValue::Boolean(*b),
        Y::Number(n) if n.is_i64() => AMQPValue::LongLongInt(n.as_i64().unwrap_or_default()),
        Y::Number(n) => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        Y::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        other => {
            return Err(format!("queue argument {other:?}: use a number, a string or a boolean"));
        }
    })
}
