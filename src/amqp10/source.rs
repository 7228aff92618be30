//! Receiving from an AMQP 1.0 address with bounded credit.

use std::sync::Arc;

use async_trait::async_trait;
use fe2o3_amqp::Receiver;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErrorBody};
use fe2o3_amqp::types::messaging::{
    Body, Source as Terminus, TerminusDurability, TerminusExpiryPolicy,
};
use fe2o3_amqp::types::primitives::Symbol;
use fe2o3_amqp::types::primitives::Value as AmqpValueT;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::codec::{self, AmqpMessage};
use crate::backoff::Backoff;
use crate::config::model::Amqp10Connection;
use crate::connector::{Received, Settle, Source, pause_after_loss};
use crate::pipeline::Node;
use crate::telemetry::Health;

pub struct Amqp10Source {
    pub bridge: String,
    pub connection: Amqp10Connection,
    pub name: String,
    pub node: Node,
    pub credit: u32,
    pub subscription: Option<String>,
    pub health: Arc<Health>,
}

/// A settlement asked for by a delivery's handle, carried out by the task owning the link
/// (fe2o3 settles through the receiver, which the receive loop holds).
enum Verdict {
    Accept,
    Reject(String),
    Release,
}

type Disposition = (DeliveryInfo, Verdict);

enum End {
    Shutdown,
    Lost(String),
}

#[async_trait]
impl Source for Amqp10Source {
    async fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Received>,
        shutdown: CancellationToken,
        drained: CancellationToken,
    ) -> Result<(), String> {
        let part = format!("{} source", self.bridge);
        let mut backoff = Backoff::reconnect();
        let mut tx = Some(tx);
        loop {
            match self.consume(&mut tx, &shutdown, &drained, &part, &mut backoff).await {
                End::Shutdown => return Ok(()),
                End::Lost(error) if super::access_refused(&error) => {
                    return Err(format!(
                        "the broker refused access: {error}; check the user, its password and \
                         its permissions on the address {:?}",
                        self.name
                    ));
                }
                End::Lost(error) => {
                    let node = &self.name;
                    if !pause_after_loss(&self.health, &part, node, &error, &mut backoff, &shutdown)
                        .await
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Attaches a receiver to `name` with manual credit and no automatic settlement. With
/// `durable`, the link is a durable subscription that survives a detach.
pub(crate) async fn attach(
    link: &mut super::Link,
    flavor: crate::config::model::Flavor,
    node: Node,
    name: &str,
    link_name: String,
    durable: bool,
) -> Result<Receiver, String> {
    let (address, capability) = super::address(flavor, node, name);
    let mut terminus = Terminus::builder().address(address.clone());
    if let Some(capability) = capability {
        terminus = terminus.capabilities(vec![Symbol::from(capability)]);
    }
    // RabbitMQ 3.x declares the queue with the terminus' durability.
    if super::durable_node(flavor, node) {
        terminus = terminus.durable(TerminusDurability::Configuration);
    }
    // A durable subscription survives the link: the broker keeps what arrives meanwhile.
    if durable {
        terminus = terminus
            .durable(TerminusDurability::UnsettledState)
            .expiry_policy(TerminusExpiryPolicy::Never);
    }
    Receiver::builder()
        .name(link_name)
        .source(terminus.build())
        // Credit is granted by hand, a full window only once the last one is used up.
        // fe2o3's automatic mode tops credit up while transfers are still in flight, and
        // RabbitMQ 3.x then sends more than the receiver counts as allowed.
        .credit_mode(CreditMode::Manual)
        .auto_accept(false)
        .attach(&mut link.session)
        .await
        .map_err(|e| format!("cannot attach a receiver to {address:?}: {e}"))
}

impl Amqp10Source {
    async fn attach(&self, link: &mut super::Link) -> Result<Receiver, String> {
        let link_name = match &self.subscription {
            Some(name) => name.clone(),
            None => format!("portico-{}-source", self.bridge),
        };
        let (flavor, durable) = (self.connection.flavor, self.subscription.is_some());
        attach(link, flavor, self.node, &self.name, link_name, durable).await
    }

    async fn consume(
        &self,
        tx: &mut Option<mpsc::Sender<Received>>,
        shutdown: &CancellationToken,
        drained: &CancellationToken,
        part: &str,
        backoff: &mut Backoff,
    ) -> End {
        let container = self.connection.container_id.clone();
        let mut link = match super::open(&self.connection, &container).await {
            Ok(link) => link,
            Err(e) => return End::Lost(format!("cannot connect: {e}")),
        };
        let attached = match self.attach(&mut link).await {
            Ok(mut r) => r.set_credit(self.credit).await.map(|()| r).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let mut receiver = match attached {
            Ok(r) => r,
            Err(e) => {
                link.close().await;
                return End::Lost(e);
            }
        };
        self.health.ready(part);
        backoff.reset();
        tracing::info!(bridge = %self.bridge, address = %self.name, credit = self.credit,
            durable = self.subscription.is_some(), "Receiving from AMQP 1.0 address");
        // Unbounded on purpose: each in-flight message sends one disposition, so the queue is
        // bounded by max_in_flight, and a bounded one could deadlock against the bridge.
        let (settle_tx, mut settle_rx) = mpsc::unbounded_channel::<Disposition>();
        let mut pending: Option<Received> = None;
        let end = loop {
            let Some(sender) = tx.as_ref().filter(|_| !shutdown.is_cancelled()) else {
                break End::Shutdown;
            };
            let mut closed = false;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                Some(disposition) = settle_rx.recv() => {
                    settle(&receiver, disposition, &mut settle_rx).await;
                }
                permit = sender.reserve(), if pending.is_some() => match (permit, pending.take()) {
                    (Ok(permit), Some(received)) => permit.send(received),
                    _ => closed = true,
                },
                delivery = receiver.recv::<Body<AmqpValueT>>(), if pending.is_none() => {
                    let (info, message): (DeliveryInfo, AmqpMessage) = match delivery {
                        Ok(delivery) => delivery.into_parts(),
                        Err(e) => break End::Lost(e.to_string()),
                    };
                    if receiver.credit() == 0 {
                        if let Err(e) = receiver.set_credit(self.credit).await {
                            break End::Lost(format!("cannot grant credit: {e}"));
                        }
                    }
                    let envelope = codec::decode(message, &self.name);
                    let handle = Amqp10Settle { info: Some(info), tx: settle_tx.clone() };
                    pending = Some(Received { envelope, settle: Box::new(handle) });
                }
            }
            if closed {
                tx.take();
            }
        };
        if let Some(unsent) = pending.take() {
            unsent.settle.release().await;
        }
        if matches!(end, End::Shutdown) {
            // Stop intake but keep the link: the bridge is still settling what it took.
            tx.take();
            loop {
                tokio::select! {
                    _ = drained.cancelled() => break,
                    Some(disposition) = settle_rx.recv() => {
                        settle(&receiver, disposition, &mut settle_rx).await;
                    }
                }
            }
            while let Ok(disposition) = settle_rx.try_recv() {
                settle(&receiver, disposition, &mut settle_rx).await;
            }
            // A durable subscription must outlive us: detach without closing, or the broker
            // deletes it (and what arrives while portico is away is lost).
            if self.subscription.is_some() {
                let _ = receiver.detach().await;
            } else {
                let _ = receiver.close().await;
            }
        }
        link.close().await;
        end
    }
}

/// Settles `first` and every disposition already queued behind it. Accepts go out together:
/// one disposition frame per run of consecutive delivery ids instead of one per delivery,
/// and the broker settles a run in one step.
async fn settle(
    receiver: &Receiver,
    first: Disposition,
    queued: &mut mpsc::UnboundedReceiver<Disposition>,
) {
    let mut accepted = Vec::new();
    let mut next = Some(first);
    while let Some((info, verdict)) = next {
        let result = match verdict {
            Verdict::Accept => {
                accepted.push(info);
                Ok(())
            }
            Verdict::Release => receiver.release(info).await,
            Verdict::Reject(reason) => {
                let error = AmqpErrorBody::new(AmqpError::InternalError, Some(reason), None);
                receiver.reject(info, error).await
            }
        };
        log_unsettled(result);
        // Bounded by the credit: at most that many deliveries are unsettled.
        next = queued.try_recv().ok();
    }
    if !accepted.is_empty() {
        log_unsettled(receiver.accept_all(accepted).await);
    }
}

fn log_unsettled(result: Result<(), fe2o3_amqp::link::DispositionError>) {
    if let Err(error) = result {
        tracing::debug!(%error, "Could not settle an AMQP 1.0 delivery; the broker redelivers it");
    }
}

struct Amqp10Settle {
    info: Option<DeliveryInfo>,
    tx: mpsc::UnboundedSender<Disposition>,
}

impl Amqp10Settle {
    /// Hands the verdict to the link's task. If that task is gone, so is the link, and the
    /// broker has put the message back already.
    async fn send(mut self: Box<Self>, verdict: Verdict) {
        if let Some(info) = self.info.take() {
            let _ = self.tx.send((info, verdict));
        }
    }
}

#[async_trait]
impl Settle for Amqp10Settle {
    async fn accept(self: Box<Self>) {
        self.send(Verdict::Accept).await;
    }

    async fn reject(self: Box<Self>, reason: &str) -> Result<(), String> {
        // `rejected` is terminal: the broker dead-letters or drops it by its own policy.
        self.send(Verdict::Reject(reason.to_owned())).await;
        Ok(())
    }

    async fn release(self: Box<Self>) {
        self.send(Verdict::Release).await;
    }
}
