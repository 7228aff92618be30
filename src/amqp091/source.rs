//! Consuming an AMQP 0-9-1 queue.

use async_trait::async_trait;
use futures::StreamExt as _;
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::codec::{self, DeliveryFacts};
use crate::backoff::Backoff;
use crate::config::SecretUrl;
use crate::connector::{Received, Settle, Source, pause_after_loss};
use crate::telemetry::Health;

pub struct Amqp091Source {
    pub bridge: String,
    pub url: SecretUrl,
    pub queue: String,
    pub prefetch: u16,
    pub health: Arc<Health>,
}

/// Why one consuming session ended.
enum End {
    /// The consumer is kept: dropping it closes its channel, and with it every ack still due.
    Shutdown(Box<(Connection, Consumer)>),
    Lost(String),
}

#[async_trait]
impl Source for Amqp091Source {
    async fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Received>,
        shutdown: CancellationToken,
        drained: CancellationToken,
    ) {
        let part = format!("{} source", self.bridge);
        let mut backoff = Backoff::reconnect();
        loop {
            match self.consume(&tx, &shutdown, &part, &mut backoff).await {
                End::Shutdown(session) => {
                    drop(tx);
                    // Acks for in-flight messages need this connection: keep it until the
                    // bridge has settled everything it could.
                    drained.cancelled().await;
                    let (connection, consumer) = *session;
                    drop(consumer);
                    let _ = connection.close(200, "portico shutting down".into()).await;
                    return;
                }
                End::Lost(error) => {
                    let node = &self.queue;
                    if !pause_after_loss(&self.health, &part, node, &error, &mut backoff, &shutdown)
                        .await
                    {
                        return;
                    }
                }
            }
        }
    }
}

impl Amqp091Source {
    async fn consume(
        &self,
        tx: &mpsc::Sender<Received>,
        shutdown: &CancellationToken,
        part: &str,
        backoff: &mut Backoff,
    ) -> End {
        let connection = match super::connect(&self.url, &format!("{} source", self.bridge)).await {
            Ok(c) => c,
            Err(e) => return End::Lost(format!("cannot connect to {}: {e}", self.url.redacted())),
        };
        let consumer = async {
            let channel = connection.create_channel().await?;
            // lapin buffers deliveries without limit; the prefetch is what bounds memory.
            channel.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
            let tag = format!("portico-{}", self.bridge);
            channel
                .basic_consume(
                    self.queue.as_str().into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        };
        let mut consumer = match consumer.await {
            Ok(c) => c,
            Err(e) => return End::Lost(format!("cannot consume queue {:?}: {e}", self.queue)),
        };
        self.health.ready(part);
        backoff.reset();
        tracing::info!(bridge = %self.bridge, queue = %self.queue, prefetch = self.prefetch,
            "Consuming AMQP 0-9-1 queue");
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return End::Shutdown(Box::new((connection, consumer))),
                next = consumer.next() => next,
            };
            let mut delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return End::Lost(e.to_string()),
                None => return End::Lost("the broker cancelled the consumer".to_owned()),
            };
            let body = std::mem::take(&mut delivery.data);
            let facts = DeliveryFacts {
                exchange: delivery.exchange.as_str(),
                routing_key: delivery.routing_key.as_str(),
                queue: &self.queue,
                redelivered: delivery.redelivered,
            };
            let envelope = codec::decode(body, &delivery.properties, facts);
            let received = Received { envelope, settle: Box::new(Amqp091Settle(delivery.acker)) };
            let handed_over = tokio::select! {
                _ = shutdown.cancelled() => false,
                sent = tx.send(received) => sent.is_ok(),
            };
            if !handed_over {
                return End::Shutdown(Box::new((connection, consumer)));
            }
        }
    }
}

/// Settles through the acker of the delivery's own channel. If that channel is gone, the
/// broker has already put the message back; acking it elsewhere would be wrong (and would
/// close the other channel), so a failed settle is only logged.
struct Amqp091Settle(Acker);

#[async_trait]
impl Settle for Amqp091Settle {
    // TODO(#6): one basic.ack per message; acking contiguous runs with `multiple` would
    // spare the broker most of this work.
    async fn accept(self: Box<Self>) {
        // Per message, so debug: the reconnect that explains it is logged once as a warning.
        match self.0.ack(BasicAckOptions::default()).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("Could not ack a delivery whose channel closed"),
            Err(error) => tracing::debug!(%error, "Could not ack a delivery whose channel closed"),
        }
    }

    async fn reject(self: Box<Self>, _reason: &str) -> Result<(), String> {
        // requeue=false hands the message to the queue's dead-letter exchange, if it has one.
        match self.0.reject(BasicRejectOptions { requeue: false }).await {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::debug!(%error,
                    "Could not reject a delivery whose channel closed; the broker redelivers it");
                Ok(())
            }
        }
    }

    async fn release(self: Box<Self>) {
        let options = BasicNackOptions { requeue: true, multiple: false };
        if let Err(error) = self.0.nack(options).await {
            tracing::debug!(%error,
                "Could not release a delivery whose channel closed; the broker redelivers it");
        }
    }
}
