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
                Err(DeliveryError::Disconnected(error))
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
            let permanent = ["NotFound", "not-found", "UnauthorizedAccess", "NotAllowed"]
                .iter()
                .any(|p| error.contains(p))
                || matches!(e, SenderAttachError::IncomingTargetIsNone);
            if permanent {
                DeliveryError::Refused(error)
            } else {
                DeliveryError::Disconnected(error)
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
                Ok(Outcome::Rejected(rejected)) => {
                    Err(DeliveryError::Refused(match rejected.error {
                        Some(e) => format!(
                            "rejected: {:?} {}",
                            e.condition,
                            e.description.unwrap_or_default()
                        ),
                        None => "rejected".to_owned(),
                    }))
                }
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
