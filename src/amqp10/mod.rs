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
    let host = url.host_str().unwrap_or_default();
    let mut builder = Connection::builder()
        .container_id(container_id)
        .max_frame_size(connection.max_frame_size)
        .idle_time_out(u32::try_from(connection.idle_timeout.as_millis()).unwrap_or(u32::MAX))
        .scheme(url.scheme())
        .hostname(host)
        .sasl_hostname(host)
        .domain(url.domain())
        // `amqps://` is TLS from the first byte (RabbitMQ, ActiveMQ, Artemis, Azure on 5671),
        // not the AMQP TLS protocol header before the handshake, which those peers reset.
        .alt_tls_establishment(true);
    builder = match credentials(&url)? {
        Some((username, password)) => {
            builder.sasl_profile(SaslProfile::Plain { username, password })
        }
        None => builder.sasl_profile(SaslProfile::Anonymous),
    };
    // A peer that accepts TCP but never answers must not hold a bridge forever.
    let opening = async {
        let stream = connect_tcp(&url).await?;
        builder.open_with_stream(stream).await.map_err(|e| describe(&e))
    };
    let mut handle = match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
        Ok(opened) => opened.map_err(|e| redact(&format!("{}: {e}", connection.url)))?,
        Err(_) => return Err(format!("{}: no answer within {CONNECT_TIMEOUT:?}", connection.url)),
    };
    let error = match tokio::time::timeout(CONNECT_TIMEOUT, Session::begin(&mut handle)).await {
        Ok(Ok(session)) => return Ok(Link { connection: handle, session }),
        Ok(Err(e)) => format!("{}: cannot begin a session: {e}", connection.url),
        Err(_) => format!("{}: no answer to begin within {CONNECT_TIMEOUT:?}", connection.url),
    };
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, handle.close()).await;
    Err(error)
}

/// The TCP connection under an AMQP 1.0 connection, with Nagle's algorithm off: a flow
/// frame granting credit must not wait behind the dispositions just written for the peer's
/// delayed ACK (about 40 ms on Linux, once per credit window).
async fn connect_tcp(url: &url::Url) -> Result<tokio::net::TcpStream, String> {
    let port = url.port_or_known_default().unwrap_or(match url.scheme() {
        "amqps" => 5671,
        _ => 5672,
    });
    // `host_str` writes an IPv6 address in brackets, which no resolver takes.
    let connected = match url.host().ok_or("the URL names no host")? {
        url::Host::Ipv6(ip) => tokio::net::TcpStream::connect((ip, port)).await,
        url::Host::Ipv4(ip) => tokio::net::TcpStream::connect((ip, port)).await,
        url::Host::Domain(host) => tokio::net::TcpStream::connect((host, port)).await,
    };
    let stream = connected.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
    Ok(stream)
}

/// fe2o3-amqp shows an I/O error (a refused TLS certificate among them) as its debug dump;
/// the error inside says it the way OpenSSL or the OS does.
fn describe(error: &fe2o3_amqp::connection::OpenError) -> String {
    match error {
        fe2o3_amqp::connection::OpenError::Io(io) => match io.get_ref() {
            Some(inner) => format!("I/O error: {inner}"),
            None => format!("I/O error: {io}"),
        },
        other => other.to_string(),
    }
}

/// The user and password in `url`, percent-decoded; `None` for a URL without a user.
fn credentials(url: &url::Url) -> Result<Option<(String, String)>, String> {
    if url.username().is_empty() {
        return Ok(None);
    }
    let decode = |s: &str| match percent_encoding::percent_decode_str(s).decode_utf8() {
        Ok(text) => Ok(text.into_owned()),
        Err(_) => Err("the URL's user or password is not UTF-8 once percent-decoded; \
                       percent-encode the UTF-8 bytes of each character"
            .to_owned()),
    };
    Ok(Some((decode(url.username())?, decode(url.password().unwrap_or_default())?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_percent_decoded() {
        let url = url::Url::parse("amqp://us%40er:p%3Ass%2Fw@h:5672").expect("url");
        let expected = Some(("us@er".to_owned(), "p:ss/w".to_owned()));
        assert_eq!(credentials(&url), Ok(expected));
        let anonymous = url::Url::parse("amqp://h:5672").expect("url");
        assert_eq!(credentials(&anonymous), Ok(None));
        let not_utf8 = url::Url::parse("amqp://u:%FF%FE@h:5672").expect("url");
        assert!(credentials(&not_utf8).is_err_and(|e| e.contains("not UTF-8")));
    }

    #[tokio::test]
    async fn an_ipv6_host_is_connected_to() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            return; // No IPv6 loopback on this machine.
        };
        let port = listener.local_addr().expect("local address").port();
        let url = url::Url::parse(&format!("amqp://u:p@[::1]:{port}")).expect("url");
        let stream = connect_tcp(&url).await.expect("connects to [::1]");
        assert_eq!(stream.peer_addr().expect("peer").port(), port);
        assert!(stream.nodelay().expect("nodelay"));
    }

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
