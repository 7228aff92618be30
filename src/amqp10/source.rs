//! Receiving from an AMQP 1.0 address with bounded credit.

use std::sync::Arc;

use async_trait::async_trait;
use fe2o3_amqp::Receiver;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErrorBody};
use fe2o3_amqp::types::messaging::{Source as Terminus, TerminusDurability, TerminusExpiryPolicy};
use fe2o3_amqp::types::primitives::Symbol;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::codec::{self, AmqpMessage};
use crate::backoff::Backoff;
use crate::config::model::Amqp10Connection;
use crate::connector::{Received, Settle, Source};
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

type Disposition = (DeliveryInfo, Verdict, oneshot::Sender<()>);

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
    ) {
        let part = format!("{} source", self.bridge);
        let mut backoff = Backoff::reconnect();
        let mut tx = Some(tx);
        loop {
            match self.consume(&mut tx, &shutdown, &drained, &part, &mut backoff).await {
                End::Shutdown => return,
                End::Lost(error) => {
                    self.health.waiting(&part, format!("reconnecting: {error}"));
                    let delay = backoff.next_delay();
                    tracing::warn!(bridge = %self.bridge, address = %self.name, %error, retry_in = ?delay,
                        "Lost the AMQP 1.0 source; unsettled messages return to the broker");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

impl Amqp10Source {
    async fn attach(&self, link: &mut super::Link) -> Result<Receiver, String> {
        let (address, capability) = super::address(self.connection.flavor, self.node, &self.name);
        let mut terminus = Terminus::builder().address(address.clone());
        if let Some(capability) = capability {
            terminus = terminus.capabilities(vec![Symbol::from(capability)]);
        }
        // A durable subscription survives the link: the broker keeps what arrives meanwhile.
        if super::durable_node(self.connection.flavor, self.node) {
            terminus = terminus.durable(TerminusDurability::Configuration);
        }
        if self.subscription.is_some() {
            terminus = terminus
                .durable(TerminusDurability::UnsettledState)
                .expiry_policy(TerminusExpiryPolicy::Never);
        }
        let link_name = match &self.subscription {
            Some(name) => name.clone(),
            None => format!("portico-{}-source", self.bridge),
        };
        Receiver::builder()
            .name(link_name)
            .source(terminus.build())
            .credit_mode(CreditMode::Auto(self.credit))
            .auto_accept(false)
            .attach(&mut link.session)
            .await
            .map_err(|e| format!("cannot attach a receiver to {address:?}: {e}"))
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
            Err(e) => return End::Lost(format!("cannot connect to {}: {e}", self.connection.url)),
        };
        let mut receiver = match self.attach(&mut link).await {
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
        let (settle_tx, mut settle_rx) = mpsc::channel::<Disposition>(1024);
        let end = loop {
            let Some(sender) = tx.as_ref() else { break End::Shutdown };
            tokio::select! {
                _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
                Some(disposition) = settle_rx.recv() => settle(&receiver, disposition).await,
                delivery = receiver.recv::<fe2o3_amqp::types::messaging::Body<_>>(), if !shutdown.is_cancelled() => {
                    let delivery: fe2o3_amqp::link::delivery::Delivery<_> = match delivery {
                        Ok(d) => d,
                        Err(e) => break End::Lost(e.to_string()),
                    };
                    let (info, message): (DeliveryInfo, AmqpMessage) = delivery.into_parts();
                    let envelope = codec::decode(message, &self.name);
                    let handle = Amqp10Settle { info: Some(info), tx: settle_tx.clone() };
                    let received = Received { envelope, settle: Box::new(handle) };
                    if sender.send(received).await.is_err() {
                        tx.take();
                    }
                }
            }
            if shutdown.is_cancelled() && tx.is_some() {
                // Stop intake; keep the link open so the bridge can still settle.
                tx.take();
            }
        };
        if tx.is_none() || matches!(end, End::Shutdown) {
            // Serve settlements until the bridge has drained, then close.
            loop {
                tokio::select! {
                    _ = drained.cancelled() => break,
                    Some(disposition) = settle_rx.recv() => settle(&receiver, disposition).await,
                }
            }
            let _ = receiver.close().await;
            link.close().await;
            return End::Shutdown;
        }
        link.close().await;
        end
    }
}

async fn settle(receiver: &Receiver, (info, verdict, done): Disposition) {
    let result = match verdict {
        Verdict::Accept => receiver.accept(info).await,
        Verdict::Release => receiver.release(info).await,
        Verdict::Reject(reason) => {
            let error = AmqpErrorBody::new(AmqpError::InternalError, Some(reason), None);
            receiver.reject(info, error).await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "Could not settle an AMQP 1.0 delivery; the broker redelivers it");
    }
    let _ = done.send(());
}

struct Amqp10Settle {
    info: Option<DeliveryInfo>,
    tx: mpsc::Sender<Disposition>,
}

impl Amqp10Settle {
    async fn send(mut self: Box<Self>, verdict: Verdict) {
        let Some(info) = self.info.take() else { return };
        let (done, wait) = oneshot::channel();
        if self.tx.send((info, verdict, done)).await.is_ok() {
            let _ = wait.await;
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
