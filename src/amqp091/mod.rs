//! AMQP 0-9-1 (RabbitMQ, LavinMQ), through lapin.
//!
//! A publisher sends to an exchange with a routing key; bindings copy the message into
//! queues; a consumer takes from a queue. With publisher confirms the broker acknowledges
//! each publish once every queue it routed to has taken it; with `mandatory` set an
//! unroutable message is first returned, then acknowledged, so the return, not the ack, is
//! the verdict. Deliveries are acknowledged per channel by delivery tag: a tag means nothing
//! on any other channel, and everything unacknowledged goes back to the queue when the
//! channel closes. portico acknowledges a delivery only after the sink confirmed it.

pub mod codec;
mod confirm_book;
pub mod sink;
pub mod source;
pub mod topology;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use crate::config::{SecretUrl, secret::redact};

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The largest frame asked for when the URL does not say (`?frame_max=`). lapin keeps a
/// receive and a send buffer of 32 frames per connection; at RabbitMQ's default of 128 KiB
/// that is 8 MiB per connection, at 16 KiB it is 1 MiB. A larger body is only split into
/// more frames.
const FRAME_MAX: u32 = 16 * 1024;

/// Opens a connection named after its role, so the broker's management UI tells them apart.
pub(crate) async fn connect(url: &SecretUrl, role: &str) -> Result<Connection, String> {
    let properties =
        ConnectionProperties::default().with_connection_name(format!("portico {role}").into());
    let mut uri: AMQPUri = url.expose().parse().map_err(|e| redact(&format!("{url}: {e}")))?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    // A broker that accepts TCP but never answers must not hold a bridge forever.
    let connecting = Connection::connect_uri(uri, properties);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(connected) => connected.map_err(|e| redact(&format!("{url}: {e}"))),
        Err(_) => Err(format!("{url}: no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// Whether the broker refused the user: its credentials, or a permission it asked for.
/// Retrying changes nothing until someone fixes the user or the configuration.
pub(crate) fn access_refused(error: &str) -> bool {
    error.contains("ACCESS_REFUSED") || error.contains("authentication mechanism")
}

/// Takes the next message from `queue` with `basic.get`, unacknowledged: the message, its
/// acker and how many messages the queue held besides it. `None` when the queue is empty.
/// What is not acknowledged goes back to the queue, in order, when the channel closes.
pub(crate) async fn get(
    channel: &lapin::Channel,
    queue: &str,
) -> Result<Option<(crate::pipeline::Envelope, lapin::Acker, u32)>, String> {
    let options = lapin::options::BasicGetOptions { no_ack: false };
    let got = channel
        .basic_get(queue.into(), options)
        .await
        .map_err(|e| format!("cannot get from queue {queue:?}: {e}"))?;
    let Some(got) = got else { return Ok(None) };
    let mut delivery = got.delivery;
    let facts = codec::DeliveryFacts {
        exchange: delivery.exchange.as_str(),
        routing_key: delivery.routing_key.as_str(),
        queue,
        redelivered: delivery.redelivered,
    };
    let body = std::mem::take(&mut delivery.data);
    let envelope = codec::decode(body, &delivery.properties, facts);
    Ok(Some((envelope, delivery.acker, got.message_count)))
}

/// The user name in an AMQP URL (`guest` when none is given, as the client assumes).
pub(crate) fn user_of(url: &SecretUrl) -> String {
    url::Url::parse(url.expose())
        .ok()
        .map(|u| u.username().to_owned())
        .filter(|u| !u.is_empty())
        .map(|u| url::form_urlencoded::parse(u.as_bytes()).map(|(k, _)| k.into_owned()).collect())
        .unwrap_or_else(|| "guest".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_name_comes_from_the_url() {
        assert_eq!(user_of(&SecretUrl::new("amqp://svc:pw@h:5672/%2f")), "svc");
        assert_eq!(user_of(&SecretUrl::new("amqp://h:5672")), "guest");
    }
}
