//! Sending to AMQP 1.0 addresses, unsettled, waiting for each outcome.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use fe2o3_amqp::Sender;
use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp::link::{SendError, SenderAttachError};
use fe2o3_amqp::types::messaging::{Outcome, Target as Terminus, TerminusDurability};
use fe2o3_amqp::types::primitives::Symbol;
use tokio::sync::Mutex;

use super::codec::{self, Target};
use crate::config::model::Amqp10Connection;
use crate::connector::{DeliveryError, Pending, Sink};
use crate::pipeline::{Envelope, Ledger, Route};
use crate::telemetry::Health;

pub struct Amqp10Sink {
    role: String,
    connection: Amqp10Connection,
    health: Arc<Health>,
    /// The connection and one sender link per address. Sends go one at a time through this
    /// lock (the bridge emits in order anyway); outcomes are awaited outside it.
    state: Mutex<Option<State>>,
}

struct State {
    link: super::Link,
    senders: HashMap<String, Sender>,
}

impl Amqp10Sink {
    pub fn new(role: String, connection: Amqp10Connection, health: Arc<Health>) -> Amqp10Sink {
        Amqp10Sink { role, connection, health, state: Mutex::new(None) }
    }

    async fn open(&self) -> Result<State, DeliveryError> {
        let container = format!("{}-{}", self.connection.container_id, self.role.replace(' ', "-"));
        match super::open(&self.connection, &container).await {
            Ok(link) => {
                tracing::info!(sink = %self.role, url = %self.connection.url,
                    "Connected AMQP 1.0 sink");
                self.health.ready(&self.role);
                Ok(State { link, senders: HashMap::new() })
            }
            Err(error) => {
                self.health.waiting(&self.role, format!("cannot connect: {error}"));
                Err(match classify(&error) {
                    denied @ DeliveryError::Denied(_) => denied,
                    _ => DeliveryError::Disconnected(error),
                })
            }
        }
    }
}

async fn attach(
    state: &mut State,
    role: &str,
    address: &str,
    capability: Option<&str>,
    durable: bool,
) -> Result<(), DeliveryError> {
    if state.senders.contains_key(address) {
        return Ok(());
    }
    let mut target = Terminus::builder().address(address.to_owned());
    if let Some(capability) = capability {
        target = target.capabilities(vec![Symbol::from(capability)]);
    }
    if durable {
        target = target.durable(TerminusDurability::Configuration);
    }
    let sender = Sender::builder()
        .name(format!("portico-{}-{address}", role.replace(' ', "-")))
        .target(target.build())
        .attach(&mut state.link.session)
        .await
        .map_err(|e| {
            let error = format!("cannot attach a sender to {address:?}: {e}");
            // Only the peer's verdict on the address is permanent; a connection or session
            // lost during the attach is retried on a new one.
            if matches!(e, SenderAttachError::IncomingTargetIsNone) {
                DeliveryError::NoDestination(format!("{error}; create the address first"))
            } else {
                classify(&error)
            }
        })?;
    state.senders.insert(address.to_owned(), sender);
    Ok(())
}

#[async_trait]
impl Sink for Amqp10Sink {
    async fn emit(
        &self,
        envelope: &Envelope,
        route: &Route,
        ledger: &mut Ledger,
    ) -> Result<Pending, DeliveryError> {
        let Route::Amqp10 { name, node } = route else {
            return Err(DeliveryError::Encode(format!(
                "an AMQP 1.0 sink cannot publish to {route:?}"
            )));
        };
        let flavor = self.connection.flavor;
        let (address, capability) = super::address(flavor, *node, name);
        let target = Target::of(flavor, *node);
        let message = codec::encode(envelope, target, &address, ledger);
        if let Some(refused) = ledger.refusal() {
            return Err(refused);
        }
        let sendable = Sendable::builder().message(message).settled(false).build();

        let mut guard = self.state.lock().await;
        if guard.as_ref().is_none_or(|s| s.link.session.is_ended()) {
            *guard = Some(self.open().await?);
        }
        let Some(state) = guard.as_mut() else {
            return Err(DeliveryError::Disconnected("no connection".into()));
        };
        let durable = super::durable_node(flavor, *node);
        if let Err(error) = attach(state, &self.role, &address, capability, durable).await {
            if let (DeliveryError::Disconnected(_), Some(old)) = (&error, guard.take()) {
                old.link.close().await;
            }
            return Err(error);
        }
        let Some(sender) = state.senders.get_mut(&address) else {
            return Err(DeliveryError::Disconnected("sender link vanished".into()));
        };
        let outcome = match sender.send_batchable(sendable).await {
            Ok(outcome) => outcome,
            Err(SendError::MessageSizeExceeded(e)) => {
                return Err(DeliveryError::TooLarge(e.to_string()));
            }
            Err(error) => {
                // The link or session is gone: drop it so the next attempt reconnects.
                state.senders.remove(&address);
                if let Some(old) = guard.take() {
                    old.link.close().await;
                }
                return Err(DeliveryError::Disconnected(error.to_string()));
            }
        };
        drop(guard);
        Ok(Box::pin(async move {
            match outcome.await {
                Ok(Outcome::Accepted(_)) => Ok(()),
                Ok(Outcome::Rejected(rejected)) => Err(match rejected.error {
                    Some(e) => {
                        let text = format!(
                            "rejected: {:?} {}",
                            e.condition,
                            e.description.unwrap_or_default()
                        );
                        // A rejection for a missing node or a refused permission is the
                        // same for every message; for anything else, this one's fault.
                        match classify(&text) {
                            DeliveryError::Disconnected(_) => DeliveryError::Refused(text),
                            other => other,
                        }
                    }
                    None => DeliveryError::Refused("rejected".to_owned()),
                }),
                Ok(Outcome::Released(_)) => {
                    Err(DeliveryError::Transient("released by the peer".into()))
                }
                Ok(Outcome::Modified(m)) if m.undeliverable_here == Some(true) => {
                    Err(DeliveryError::Refused("modified: undeliverable here".into()))
                }
                Ok(Outcome::Modified(_)) => {
                    Err(DeliveryError::Transient("modified by the peer".into()))
                }
                Err(error) => Err(DeliveryError::Disconnected(error.to_string())),
            }
        }))
    }

    async fn prepare(&self) -> Result<(), DeliveryError> {
        let mut guard = self.state.lock().await;
        if guard.is_none() {
            *guard = Some(self.open().await?);
        }
        Ok(())
    }

    async fn flush(&self, _deadline: std::time::Duration) {
        if let Some(mut state) = self.state.lock().await.take() {
            for (_, sender) in state.senders.drain() {
                let _ = sender.close().await;
            }
            state.link.close().await;
        }
    }
}

/// Sorts the peer's error conditions (`amqp:not-found`, `amqp:unauthorized-access`, a SASL
/// outcome) from everything else, which may go away by reconnecting.
fn classify(error: &str) -> DeliveryError {
    let lower = error.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if super::access_refused(error) {
        DeliveryError::Denied(format!(
            "the broker refused access: {error}; check the user, password and its permissions \
             on the address"
        ))
    } else if has(&["notfound", "not-found"]) {
        DeliveryError::NoDestination(format!(
            "{error}; create the address first, or let the broker create it"
        ))
    } else if has(&["notallowed", "not-allowed"]) {
        DeliveryError::Refused(error.to_owned())
    } else {
        DeliveryError::Disconnected(error.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::Disposition;

    #[test]
    fn peer_conditions_are_classified() {
        let attach = "cannot attach a sender to \"q\": Remote error: AmqpError(NotFound)";
        assert_eq!(classify(attach).disposition(), Disposition::Fatal);
        let access = "rejected: AmqpError(UnauthorizedAccess) no write on q";
        assert_eq!(classify(access).disposition(), Disposition::Fatal);
        let sasl = "amqp://h: SASL error code Auth";
        assert_eq!(classify(sasl).disposition(), Disposition::Fatal);
        assert_eq!(classify("AmqpError(NotAllowed)").disposition(), Disposition::DeadLetter);
        assert_eq!(classify("connection reset").disposition(), Disposition::Retry);
    }
}
