//! AMQP 1.0 (ActiveMQ, Artemis, RabbitMQ's AMQP 1.0, any 1.0 peer), through fe2o3-amqp.
//!
//! A connection carries sessions, a session carries links; a receiver link pulls messages
//! from a source address as the receiver grants credit, a sender link pushes them to a
//! target address. Each transfer is settled by a disposition: `accepted` (done),
//! `released` (give it back untouched), `modified` (failed, retry elsewhere), `rejected`
//! (failed for good). portico grants a bounded credit, settles a received message only
//! after the sink confirmed it, and sends unsettled so that every send waits for the
//! peer's outcome.
//!
//! Brokers spell addresses differently; the connection's `flavor` decides:
//! ActiveMQ uses `queue://NAME` / `topic://NAME`, Artemis plain names with a `queue` or
//! `topic` capability, RabbitMQ 3.x `/queue/NAME`, `/topic/KEY`, `/exchange/NAME/KEY`
//! (4.x `/queues/NAME`, `/exchanges/NAME/KEY`), and `generic` uses the address as written.

pub mod codec;
pub mod reader;
pub mod sink;
pub mod source;
pub mod values;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Connection, Session};

use crate::config::model::{Amqp10Connection, Flavor};
use crate::config::secret::redact;
use crate::pipeline::Node;

/// The address of `name` on a broker of `flavor`, and the capability to ask for (Artemis).
pub fn address(flavor: Flavor, node: Node, name: &str) -> (String, Option<&'static str>) {
    match (flavor, node) {
        (_, Node::Address) | (Flavor::Generic, _) => (name.to_owned(), None),
        (Flavor::ActiveMq, Node::Queue) => (format!("queue://{name}"), None),
        (Flavor::ActiveMq, Node::Topic) => (format!("topic://{name}"), None),
        (Flavor::Artemis, Node::Queue) => (name.to_owned(), Some("queue")),
        (Flavor::Artemis, Node::Topic) => (name.to_owned(), Some("topic")),
        (Flavor::RabbitMq, Node::Queue) => (format!("/queue/{name}"), None),
        (Flavor::RabbitMq, Node::Topic) => (format!("/topic/{name}"), None),
        (Flavor::RabbitMq4, Node::Queue) => (format!("/queues/{}", percent(name)), None),
        (Flavor::RabbitMq4, Node::Topic) => {
            (format!("/exchanges/amq.topic/{}", percent(name)), None)
        }
    }
}

/// RabbitMQ 3.x declares the queue behind `/queue/NAME` with the terminus' durability; a
/// durable terminus matches the durable queues everyone else declares.
pub fn durable_node(flavor: Flavor, node: Node) -> bool {
    flavor == Flavor::RabbitMq && node == Node::Queue
}

/// RabbitMQ 4 addresses percent-encode names.
fn percent(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>().replace('+', "%20")
}

/// Whether the peer refused the user: a SASL outcome, or `amqp:unauthorized-access` on an
/// attach or a transfer. Retrying changes nothing until someone fixes the user.
pub(crate) fn access_refused(error: &str) -> bool {
    let lower = error.to_ascii_lowercase();
    ["unauthorizedaccess", "unauthorized-access", "sasl", "authentication"]
        .iter()
        .any(|w| lower.contains(w))
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// An open connection and one session on it.
pub struct Link {
    pub connection: ConnectionHandle<()>,
    pub session: SessionHandle<()>,
}

impl Link {
    pub async fn close(mut self) {
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

/// Opens a connection and a session. The container id names the client to the broker; a
/// durable subscription is found again by container id and link name.
pub async fn open(connection: &Amqp10Connection, container_id: &str) -> Result<Link, String> {
    let url = url::Url::parse(connection.url.expose())
        .map_err(|e| format!("invalid AMQP 1.0 URL {}: {e}", connection.url.redacted()))?;
    let mut builder = Connection::builder()
        .container_id(container_id)
        .max_frame_size(connection.max_frame_size)
        .idle_time_out(u32::try_from(connection.idle_timeout.as_millis()).unwrap_or(u32::MAX));
    if url.username().is_empty() {
        builder = builder.sasl_profile(SaslProfile::Anonymous);
    }
    // A peer that accepts TCP but never answers must not hold a bridge forever.
    let mut handle = match tokio::time::timeout(CONNECT_TIMEOUT, builder.open(url)).await {
        Ok(opened) => opened.map_err(|e| redact(&format!("{}: {e}", connection.url)))?,
        Err(_) => return Err(format!("{}: no answer within {CONNECT_TIMEOUT:?}", connection.url)),
    };
    match Session::begin(&mut handle).await {
        Ok(session) => Ok(Link { connection: handle, session }),
        Err(e) => {
            let _ = handle.close().await;
            Err(format!("cannot begin a session: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_flavor() {
        assert_eq!(address(Flavor::ActiveMq, Node::Queue, "q.in").0, "queue://q.in");
        assert_eq!(address(Flavor::ActiveMq, Node::Topic, "t").0, "topic://t");
        assert_eq!(address(Flavor::Artemis, Node::Topic, "t"), ("t".to_owned(), Some("topic")));
        assert_eq!(address(Flavor::RabbitMq, Node::Queue, "q").0, "/queue/q");
        assert_eq!(address(Flavor::RabbitMq4, Node::Queue, "a b").0, "/queues/a%20b");
        assert_eq!(address(Flavor::Generic, Node::Queue, "x").0, "x");
    }
}
