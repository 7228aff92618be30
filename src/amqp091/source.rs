//! Consuming an AMQP 0-9-1 queue.

use async_trait::async_trait;
use futures::StreamExt as _;
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::DeliveryTag;
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use std::collections::BTreeMap;
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
    Shutdown(Box<Session>),
    Lost(String),
}

/// What settling needs after intake stopped: the channel and the task that acks on it.
struct Session {
    connection: Connection,
    consumer: Consumer,
    settler: Settler,
}

/// The [`settle_channel`] task of one channel.
struct Settler {
    verdicts: mpsc::UnboundedSender<(DeliveryTag, Verdict, Acker)>,
    finish: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Settler {
    fn start(prefetch: u16) -> Settler {
        let (verdicts, received) = mpsc::unbounded_channel();
        let finish = CancellationToken::new();
        // Past half the prefetch, acks stop waiting for a slow message ahead of them.
        let limit = usize::from(prefetch / 2);
        let task = tokio::spawn(settle_channel(received, finish.clone(), limit));
        Settler { verdicts, finish, task }
    }

    /// Sends the acks for every verdict given so far, then stops.
    async fn finish(self, bridge: &str) {
        drop(self.verdicts);
        self.finish.cancel();
        if tokio::time::timeout(SETTLE_DEADLINE, self.task).await.is_err() {
            tracing::warn!(
                bridge,
                "Acks were still being sent at shutdown; those messages will be delivered again"
            );
        }
    }
}

/// How long shutdown waits for the last acks to be written.
const SETTLE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

#[async_trait]
impl Source for Amqp091Source {
    async fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Received>,
        shutdown: CancellationToken,
        drained: CancellationToken,
    ) -> Result<(), String> {
        let part = format!("{} source", self.bridge);
        let mut backoff = Backoff::reconnect();
        loop {
            match self.consume(&tx, &shutdown, &part, &mut backoff).await {
                End::Shutdown(session) => {
                    drop(tx);
                    // Acks for in-flight messages need this connection: keep it until the
                    // bridge has settled everything it could and the acks are written.
                    drained.cancelled().await;
                    let Session { connection, consumer, settler } = *session;
                    settler.finish(&self.bridge).await;
                    drop(consumer);
                    let _ = connection.close(200, "portico shutting down".into()).await;
                    return Ok(());
                }
                End::Lost(error) if super::access_refused(&error) => {
                    return Err(format!(
                        "the broker refused access: {error}; check the user, its password and \
                         its permissions (read) on this vhost and queue {:?}",
                        self.queue
                    ));
                }
                End::Lost(error) => {
                    let node = &self.queue;
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
            Err(e) => return End::Lost(format!("cannot connect: {e}")),
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
        let settler = Settler::start(self.prefetch);
        let verdicts = settler.verdicts.clone();
        let session = |connection, consumer, settler| {
            End::Shutdown(Box::new(Session { connection, consumer, settler }))
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return session(connection, consumer, settler),
                next = consumer.next() => next,
            };
            let lost = |error: String| {
                // The channel is gone and its ackers with it; the settler only drains.
                settler.finish.cancel();
                End::Lost(error)
            };
            let mut delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return lost(e.to_string()),
                None => return lost("the broker cancelled the consumer".to_owned()),
            };
            let body = std::mem::take(&mut delivery.data);
            let facts = DeliveryFacts {
                exchange: delivery.exchange.as_str(),
                routing_key: delivery.routing_key.as_str(),
                queue: &self.queue,
                redelivered: delivery.redelivered,
            };
            let envelope = codec::decode(body, &delivery.properties, facts);
            let settle = Amqp091Settle {
                tag: delivery.delivery_tag,
                acker: delivery.acker,
                verdicts: verdicts.clone(),
            };
            let received = Received { envelope, settle: Box::new(settle) };
            let handed_over = tokio::select! {
                _ = shutdown.cancelled() => false,
                sent = tx.send(received) => sent.is_ok(),
            };
            if !handed_over {
                return session(connection, consumer, settler);
            }
        }
    }
}

/// What the bridge decided about one delivery.
enum Verdict {
    Accept,
    Reject,
    Release,
}

/// Hands the bridge's verdict on one delivery to its channel's [`settle_channel`] task.
/// The acker travels with it: it is bound to the delivery's own channel, so a verdict that
/// arrives after a reconnect can never ack a tag on the new channel.
struct Amqp091Settle {
    tag: DeliveryTag,
    acker: Acker,
    verdicts: mpsc::UnboundedSender<(DeliveryTag, Verdict, Acker)>,
}

impl Amqp091Settle {
    fn send(self, verdict: Verdict) {
        // A closed settler means the session ended and its channel closed with it: the
        // broker has already put the message back.
        let _ = self.verdicts.send((self.tag, verdict, self.acker));
    }
}

#[async_trait]
impl Settle for Amqp091Settle {
    async fn accept(self: Box<Self>) {
        self.send(Verdict::Accept);
    }

    async fn reject(self: Box<Self>, _reason: &str) -> Result<(), String> {
        self.send(Verdict::Reject);
        Ok(())
    }

    async fn release(self: Box<Self>) {
        self.send(Verdict::Release);
    }
}

/// Settles the deliveries of one channel, in the order the verdicts arrive.
///
/// Accepted deliveries are acknowledged with one `basic.ack multiple` for the longest
/// prefix of delivery tags that is entirely settled: the broker then does one operation for
/// a whole run instead of one per message. Rejects and releases go out one by one as they
/// arrive, always before an ack whose range covers them (a `multiple` ack would otherwise
/// take a message meant for the dead-letter exchange). Ends when `finish` fires and every
/// verdict already sent was handled, or when every sender is gone.
async fn settle_channel(
    mut verdicts: mpsc::UnboundedReceiver<(DeliveryTag, Verdict, Acker)>,
    finish: CancellationToken,
    window_limit: usize,
) {
    let mut window = AckWindow::new(window_limit);
    loop {
        let first = tokio::select! {
            biased;
            next = verdicts.recv() => next,
            _ = finish.cancelled() => verdicts.try_recv().ok(),
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        while let Some((tag, verdict, acker)) = next {
            match verdict {
                Verdict::Accept => window.settle(tag, Some(acker)),
                Verdict::Reject => {
                    // requeue=false hands the message to the queue's dead-letter exchange.
                    let rejected = acker.reject(BasicRejectOptions { requeue: false }).await;
                    log_failed("reject", rejected);
                    window.settle(tag, None);
                }
                Verdict::Release => {
                    let options = BasicNackOptions { requeue: true, multiple: false };
                    log_failed("release", acker.nack(options).await);
                    window.settle(tag, None);
                }
            }
            next = verdicts.try_recv().ok();
        }
        for (acker, multiple) in window.ready() {
            log_failed("ack", acker.ack(BasicAckOptions { multiple }).await);
        }
    }
}

/// Per message, so debug: the reconnect that explains a failure is logged once, as a warning.
fn log_failed(what: &str, result: lapin::Result<bool>) {
    match result {
        Ok(true) => {}
        Ok(false) => tracing::debug!(what, "Could not settle a delivery whose channel closed"),
        Err(error) => {
            tracing::debug!(what, %error, "Could not settle a delivery whose channel closed");
        }
    }
}

/// The delivery tags of one channel that are settled, and the acks that are due.
///
/// Tags on a channel with one consumer count up from 1 without gaps. Everything below `next`
/// is settled at the broker. An accepted tag above a gap waits for the gap to close, so that
/// one `multiple` ack covers the run; but when more than `limit` accepted tags wait behind
/// one slow message (a retry), they are acked one by one instead, so the prefetch window
/// does not stall on it.
struct AckWindow<A> {
    next: DeliveryTag,
    /// Settled tags above `next`: `Some` when accepted and not yet acked.
    waiting: BTreeMap<DeliveryTag, Option<A>>,
    accepted_waiting: usize,
    limit: usize,
    /// The highest accepted tag of the settled prefix, not yet acked.
    due: Option<A>,
}

impl<A> AckWindow<A> {
    fn new(limit: usize) -> AckWindow<A> {
        AckWindow {
            next: 1,
            waiting: BTreeMap::new(),
            accepted_waiting: 0,
            limit: limit.max(1),
            due: None,
        }
    }

    /// Records a settled tag: `Some(acker)` if it is to be acked, `None` if it was settled
    /// otherwise (rejected or released, already sent).
    fn settle(&mut self, tag: DeliveryTag, accepted: Option<A>) {
        if tag < self.next {
            return;
        }
        if tag > self.next {
            self.accepted_waiting += usize::from(accepted.is_some());
            self.waiting.insert(tag, accepted);
            return;
        }
        if accepted.is_some() {
            self.due = accepted;
        }
        self.next += 1;
        while let Some(settled) = self.waiting.remove(&self.next) {
            if settled.is_some() {
                self.accepted_waiting -= 1;
                self.due = settled;
            }
            self.next += 1;
        }
    }

    /// The acks to send now, in order: `(acker, multiple)`.
    fn ready(&mut self) -> Vec<(A, bool)> {
        let mut acks: Vec<(A, bool)> = self.due.take().map(|a| (a, true)).into_iter().collect();
        if self.accepted_waiting > self.limit {
            for settled in self.waiting.values_mut() {
                if let Some(acker) = settled.take() {
                    acks.push((acker, false));
                }
            }
            self.accepted_waiting = 0;
        }
        acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(window: &mut AckWindow<u64>) -> Vec<(u64, bool)> {
        window.ready()
    }

    #[test]
    fn a_contiguous_run_is_acked_once_with_multiple() {
        let mut window = AckWindow::new(100);
        for tag in [2, 3, 1, 4] {
            window.settle(tag, Some(tag));
        }
        assert_eq!(acks(&mut window), [(4, true)]);
        assert_eq!(acks(&mut window), []);
    }

    #[test]
    fn nothing_above_a_gap_is_acked_until_it_closes() {
        let mut window = AckWindow::new(100);
        window.settle(1, Some(1));
        window.settle(3, Some(3));
        assert_eq!(acks(&mut window), [(1, true)]);
        window.settle(4, Some(4));
        assert_eq!(acks(&mut window), []);
        window.settle(2, Some(2));
        assert_eq!(acks(&mut window), [(4, true)]);
    }

    #[test]
    fn a_rejected_tag_is_passed_over_and_never_acked() {
        let mut window = AckWindow::new(100);
        window.settle(1, Some(1));
        window.settle(2, None);
        assert_eq!(acks(&mut window), [(1, true)], "the run ends at the last accepted tag");
        window.settle(4, None);
        window.settle(3, None);
        assert_eq!(acks(&mut window), [], "a run of rejects needs no ack");
        window.settle(5, Some(5));
        assert_eq!(acks(&mut window), [(5, true)]);
    }

    #[test]
    fn accepted_tags_behind_a_slow_one_are_acked_singly_past_the_limit() {
        let mut window = AckWindow::new(2);
        for tag in 2..=4 {
            window.settle(tag, Some(tag));
        }
        assert_eq!(acks(&mut window), [(2, false), (3, false), (4, false)]);
        window.settle(5, Some(5));
        assert_eq!(acks(&mut window), []);
        window.settle(1, Some(1));
        // 2..4 are already acked; the multiple ack on 5 covers 1 and 5.
        assert_eq!(acks(&mut window), [(5, true)]);
        window.settle(1, Some(1));
        assert_eq!(acks(&mut window), [], "a tag below the settled prefix is ignored");
    }
}
