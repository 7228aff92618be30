//! One bridge: a source, a sink, and the steps between them.
//!
//! For each message, in order: **receive** it from the source, **translate** it (resolve the
//! sink's templates into a route), **emit** it to the sink, then **settle** it at the source
//! once the sink confirmed (or the dead-letter sink did). Emitting is done in source order by
//! the bridge's loop; confirmations are awaited by the same task, many at once, bounded by
//! `max_in_flight` permits. Each failed attempt is classified: a transient failure is
//! retried with the bridge's backoff while the source message stays unsettled (up to
//! `retry.max_attempts`, then the dead letter); a permanent one goes to the dead letter; a
//! fatal one (a misconfiguration) stops the bridge and gives back what it holds.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, pause};
use crate::config::model::RetryModel;
use crate::connector::{DeliveryError, Disposition, Pending, Received, Sink, Source};
use crate::deadletter::{DeadLetter, Failure, Stage};
use crate::pipeline::{Envelope, Ledger, Route, RouteTemplate, Rules, Value};
use crate::telemetry::{BridgeMetrics, Health, RateLimit};

/// Everything a bridge needs, assembled by [`crate::app`].
pub struct Bridge {
    pub name: String,
    pub source: Box<dyn Source>,
    pub sink: Arc<dyn Sink>,
    pub route: RouteTemplate,
    pub rules: Rules,
    /// Dead-letter a message rather than send it with a value coerced or dropped.
    pub strict: bool,
    pub dead_letter: Option<DeadLetter>,
    pub max_in_flight: usize,
    pub retry: RetryModel,
    pub metrics: BridgeMetrics,
    pub health: Arc<Health>,
}

/// The header in which a bridge with `retry.max_attempts` counts the deliveries of a
/// message, and the header naming that bridge. The gateway's own count, never the broker's
/// `x-death` or `x-delivery-count`: it survives a message coming back to the source through
/// any route (a consumer's reject and a dead-letter exchange, say) and a `dlq replay`.
pub const ATTEMPTS_HEADER: &str = "portico.attempts";
pub const ATTEMPTS_BRIDGE_HEADER: &str = "portico.attempts.bridge";

/// The deliveries of `envelope` counted so far by `bridge`.
pub fn attempts_so_far(envelope: &Envelope, bridge: &str) -> u32 {
    let ours =
        matches!(envelope.header(ATTEMPTS_BRIDGE_HEADER), Some(Value::String(b)) if b == bridge);
    let count = envelope.header(ATTEMPTS_HEADER).and_then(|v| v.to_template_text());
    match count {
        Some(n) if ours => n.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Writes the count headers of `bridge` into `envelope`.
pub fn stamp_attempts(envelope: &mut Envelope, bridge: &str, attempts: u32) {
    envelope.headers.retain(|(n, _)| n != ATTEMPTS_HEADER && n != ATTEMPTS_BRIDGE_HEADER);
    envelope.headers.push((ATTEMPTS_HEADER.to_owned(), Value::I64(i64::from(attempts))));
    envelope.headers.push((ATTEMPTS_BRIDGE_HEADER.to_owned(), Value::String(bridge.to_owned())));
}

/// The part of a bridge its delivery tasks share.
struct Shared {
    name: String,
    sink: Arc<dyn Sink>,
    rules: Rules,
    strict: bool,
    dead_letter: Option<DeadLetter>,
    retry: RetryModel,
    /// Whether the sink's destination is the same for every message (see `fatal_for`).
    static_destination: bool,
    metrics: BridgeMetrics,
    health: Arc<Health>,
    /// Fires on shutdown or when the bridge must stop; retries give their message back then.
    stop: CancellationToken,
    /// Why the bridge stopped on its own: the part at fault and the error.
    fatal: std::sync::Mutex<Option<(String, String)>>,
    failures: RateLimit,
    /// Values coerced or dropped on the way to the sink: logged apart from failures, so
    /// that a stream of lossy messages does not hide delivery errors.
    lossy: RateLimit,
}

/// One message on its way, holding its in-flight permit until settled.
struct Work {
    received: Received,
    /// The envelope after the bridge's `set:` rules and attempt count, when any apply; the
    /// dead letter still gets `received.envelope`. Boxed: most bridges have no such rules,
    /// and an envelope inline would double what every message in flight holds.
    outgoing: Option<Box<Envelope>>,
    /// Deliveries made, including those of earlier trips through this bridge when counted.
    attempts: u32,
    first_failure: Option<SystemTime>,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Work {
    /// What the sink receives.
    fn envelope(&self) -> &Envelope {
        self.outgoing.as_deref().unwrap_or(&self.received.envelope)
    }

    /// The failure record for dead-lettering after `error`, an attempt of outcome `class`.
    fn failure(
        &mut self,
        reason: &'static str,
        class: Disposition,
        error: &DeliveryError,
    ) -> Failure {
        let now = SystemTime::now();
        Failure {
            stage: Stage::Deliver,
            reason,
            class,
            error: error.to_string(),
            broker_error: error.broker_text(),
            attempts: self.attempts,
            first_failure: *self.first_failure.get_or_insert(now),
            last_failure: now,
        }
    }
}

impl Bridge {
    /// Runs until `shutdown`, then drains in-flight messages for at most `deadline`.
    /// Returns an error when the bridge had to stop on its own.
    pub async fn run(self, shutdown: CancellationToken, deadline: Duration) -> Result<(), String> {
        let stop = shutdown.child_token();
        let drained = CancellationToken::new();
        // A short queue between the source and the loop: the in-flight permits, not this
        // channel, bound the work; the channel only decouples the two tasks.
        let (tx, mut rx) = mpsc::channel(64);
        for sink in std::iter::once(&self.sink).chain(self.dead_letter.as_ref().map(|dl| &dl.sink))
        {
            if let Err(error) = sink.prepare().await {
                tracing::warn!(bridge = %self.name, %error,
                    "Sink not reachable yet; retrying with the first message");
            }
        }
        let source = tokio::spawn(self.source.run(tx, stop.clone(), drained.clone()));
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            sink: self.sink,
            rules: self.rules,
            strict: self.strict,
            dead_letter: self.dead_letter,
            retry: self.retry,
            static_destination: self.route.destination_is_static(),
            metrics: self.metrics,
            health: self.health.clone(),
            stop: stop.clone(),
            fatal: std::sync::Mutex::new(None),
            failures: RateLimit::new(Duration::from_secs(10), 5),
            lossy: RateLimit::new(Duration::from_secs(10), 5),
        });

        // The messages emitted and not yet settled, awaited here rather than in a task each:
        // the broker's confirms then wake one task, which settles every message they cover.
        let mut confirming = FuturesUnordered::new();
        loop {
            let next = async {
                let permit = permits.clone().acquire_owned().await.ok()?;
                Some((permit, rx.recv().await?))
            };
            // `biased`: a stop must win over a ready message, or a bridge that just stopped on
            // a record it cannot skip would go on to emit the records after it.
            let (permit, received) = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                next = beside(&mut confirming, next) => match next {
                    Some(next) => next,
                    None => break,
                },
            };
            // A confirmation settled beside the wait may have stopped the bridge.
            if stop.is_cancelled() {
                received.settle.release().await;
                break;
            }
            shared.metrics.received.inc();
            shared.metrics.in_flight.inc();
            // Boxed once here: each in-flight message's confirmation then holds a pointer, not
            // the message, in every state of its future.
            let work = Box::new(Work {
                received,
                outgoing: None,
                attempts: 0,
                first_failure: None,
                started: Instant::now(),
                _permit: permit,
            });
            let dispatched = beside(&mut confirming, shared.clone().dispatch(&self.route, work));
            if let Some(confirmation) = dispatched.await {
                confirming.push(confirmation);
            }
        }

        // Unsettled messages still queued here go back to the source broker.
        rx.close();
        while let Some(received) = rx.recv().await {
            received.settle.release().await;
        }
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        let settled = async {
            while confirming.next().await.is_some() {}
            permits.acquire_many(all).await
        };
        if tokio::time::timeout(deadline, settled).await.is_err() {
            tracing::warn!(bridge = %self.name,
                "In-flight messages did not settle before the shutdown \
                 deadline; they will be delivered again");
        }
        drained.cancel();
        // A source that cannot go on (refused credentials) has ended intake already.
        if let Ok(Err(error)) = source.await {
            if let Ok(mut fatal) = shared.fatal.lock() {
                fatal.get_or_insert((format!("{} source", self.name), error));
            }
        }
        shared.sink.flush(deadline).await;
        if let Some(dl) = &shared.dead_letter {
            dl.sink.flush(deadline).await;
        }
        let fatal = shared.fatal.lock().ok().and_then(|mut f| f.take());
        match fatal {
            Some((part, error)) => {
                self.health.stopped(&part, error.clone());
                Err(error)
            }
            None => Ok(()),
        }
    }
}

/// The rest of one message's way once it is emitted: its confirmation, retries, settling.
type Confirmation = BoxFuture<'static, ()>;

/// Awaits `future` while the confirmations in `confirming` make progress. They go first: a
/// source that always has a message ready must not keep its confirmed messages unsettled.
async fn beside<F: Future>(
    confirming: &mut FuturesUnordered<Confirmation>,
    future: F,
) -> F::Output {
    let mut future = std::pin::pin!(future);
    loop {
        tokio::select! {
            biased;
            Some(()) = confirming.next(), if !confirming.is_empty() => {}
            output = &mut future => return output,
        }
    }
}

impl Shared {
    /// Translates and emits one message in source order. Returns what awaits its
    /// confirmation, unless the message was settled already.
    async fn dispatch(
        self: Arc<Self>,
        route: &RouteTemplate,
        mut work: Box<Work>,
    ) -> Option<Confirmation> {
        let translated = self.rules.apply(&work.received.envelope).and_then(|outgoing| {
            let route = route.resolve(outgoing.as_ref().unwrap_or(&work.received.envelope))?;
            Ok((outgoing, route))
        });
        let route = match translated {
            Ok((outgoing, route)) => {
                work.outgoing = outgoing.map(Box::new);
                route
            }
            Err(error) => {
                let failure = Failure::now(Stage::Translate, error.reason(), error.to_string(), 1);
                // Handled before the next message is emitted: a source that cannot skip a
                // record (Kafka without dead_letter) must stop before anything after it goes out.
                self.dead_letter(work, failure).await;
                return None;
            }
        };
        if let Some(max) = self.retry.max_attempts {
            work.attempts = attempts_so_far(&work.received.envelope, &self.name);
            if work.attempts >= max {
                let error = format!(
                    "delivered {} times by this bridge and came back each time; \
                     retry.max_attempts is {max}",
                    work.attempts
                );
                let mut failure = Failure::now(Stage::Deliver, MAX_RETRIES, error, work.attempts);
                failure.class = Disposition::Retry;
                self.dead_letter(work, failure).await;
                return None;
            }
            if work.attempts > 0 {
                // Back from an earlier delivery that failed downstream: wait as a retry
                // would, off the in-order path, so a message that keeps coming back cannot
                // spin through the brokers.
                return Some(Box::pin(self.redeliver(work, route)));
            }
        }
        self.stamp(&mut work);
        // A sink can wait long for a broker (credit, a reconnect): never past a shutdown.
        let mut ledger = Ledger::lossy().strict(self.strict);
        let emitted = tokio::select! {
            biased;
            _ = self.stop.cancelled() => {
                self.release(work).await;
                return None;
            }
            emitted = self.sink.emit(work.envelope(), &route, &mut ledger) => emitted,
        };
        self.account(&ledger);
        Some(Box::pin(self.complete(work, route, emitted)))
    }

    /// Emits a message that came back to the source after `work.attempts` deliveries, after
    /// the backoff those failures earned.
    async fn redeliver(self: Arc<Self>, mut work: Box<Work>, route: Route) {
        let mut backoff = Backoff::of(&self.retry);
        backoff.skip(work.attempts.saturating_sub(1));
        if !self.wait(backoff.next_delay()).await {
            return self.release(work).await;
        }
        self.metrics.retries.inc();
        self.stamp(&mut work);
        let mut ledger = Ledger::lossy().strict(self.strict);
        let emitted = self.sink.emit(work.envelope(), &route, &mut ledger).await;
        self.account(&ledger);
        self.complete(work, route, emitted).await;
    }

    /// Writes the attempt about to be made into the outgoing message, when counted.
    fn stamp(&self, work: &mut Work) {
        if self.retry.max_attempts.is_some() {
            let outgoing =
                work.outgoing.get_or_insert_with(|| Box::new(work.received.envelope.clone()));
            stamp_attempts(outgoing, &self.name, work.attempts + 1);
        }
    }

    /// Waits for the confirmation, retrying transient failures, then settles.
    async fn complete(
        self: Arc<Self>,
        mut work: Box<Work>,
        route: Route,
        emitted: Result<Pending, DeliveryError>,
    ) {
        let mut backoff = Backoff::of(&self.retry);
        let mut outcome = match emitted {
            Ok(pending) => pending.await,
            Err(error) => Err(error),
        };
        loop {
            work.attempts += 1;
            let error = match outcome {
                Ok(()) => return self.delivered(work).await,
                Err(error) => error,
            };
            match self.disposition(&error) {
                Disposition::DeadLetter => {
                    let failure = work.failure(error.reason(), Disposition::DeadLetter, &error);
                    // Boxed: every in-flight message has a future running this function, and the
                    // rare dead-letter path's state would otherwise make each of them kilobytes.
                    return Box::pin(self.dead_letter(work, failure)).await;
                }
                Disposition::Fatal => return Box::pin(self.fail("sink", &error, work)).await,
                Disposition::Retry => {}
            }
            if self.retry.max_attempts.is_some_and(|max| work.attempts >= max) {
                let failure = work.failure(MAX_RETRIES, Disposition::Retry, &error);
                return Box::pin(self.dead_letter(work, failure)).await;
            }
            work.first_failure.get_or_insert_with(SystemTime::now);
            self.metrics.retries.inc();
            let delay = backoff.next_delay();
            if let Some(suppressed) = self.failures.allow() {
                tracing::warn!(bridge = %self.name, %error, attempt = work.attempts,
                    retry_in = ?delay, suppressed,
                    "Delivery failed; retrying without settling the source");
            }
            // Boxed, as the dead letter above: a retry's timer is rare and would otherwise
            // take room in every message's confirmation.
            if !Box::pin(self.wait(delay)).await {
                return Box::pin(self.release(work)).await;
            }
            self.stamp(&mut work);
            // The first attempt already accounted for (and judged) what encoding loses.
            outcome = match self.sink.emit(work.envelope(), &route, &mut Ledger::lossy()).await {
                Ok(pending) => pending.await,
                Err(error) => Err(error),
            };
        }
    }

    /// Counts and logs what encoding for the sink coerced or dropped.
    fn account(&self, ledger: &Ledger) {
        for note in ledger.lossy_notes() {
            self.metrics.lossy.inc(&note.field);
            if let Some(suppressed) = self.lossy.allow() {
                tracing::warn!(bridge = %self.name, field = %note.field, note = %note,
                    strict = self.strict, suppressed,
                    "A value does not reach the sink as it was");
            }
        }
    }

    /// The class of a failed attempt. A missing destination that the message chose (by a
    /// template) is that message's fault, not the bridge's.
    fn disposition(&self, error: &DeliveryError) -> Disposition {
        match error {
            DeliveryError::NoDestination(_) if !self.static_destination => Disposition::DeadLetter,
            _ => error.disposition(),
        }
    }

    /// Stops the bridge on a misconfiguration: `work` and everything not yet confirmed go
    /// back to the source; `/readyz` and the bridge's one log line say what to fix.
    async fn fail(&self, part: &str, error: &DeliveryError, work: Box<Work>) {
        let part = format!("{} {part}", self.name);
        let text = format!("{error} ({})", error.reason());
        self.health.stopped(&part, text.clone());
        if let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert((part, text));
        }
        self.stop.cancel();
        self.release(work).await;
    }

    /// Sleeps `delay`; false when the bridge is stopping instead.
    async fn wait(&self, delay: Duration) -> bool {
        pause(delay, &self.stop).await
    }

    async fn delivered(&self, work: Box<Work>) {
        work.received.settle.accept().await;
        self.metrics.delivered.inc();
        self.finish(&work.started);
    }

    async fn release(&self, work: Box<Work>) {
        work.received.settle.release().await;
        self.finish(&work.started);
    }

    fn finish(&self, started: &Instant) {
        self.metrics.in_flight.dec();
        self.metrics.latency.observe(started.elapsed().as_secs_f64());
    }

    /// Hands a failed message to the dead-letter sink, or to the source's own mechanism.
    async fn dead_letter(&self, work: Box<Work>, failure: Failure) {
        if let Some(suppressed) = self.failures.allow() {
            let source = work.received.envelope.origin.coordinates();
            tracing::warn!(bridge = %self.name, reason = failure.reason,
                stage = failure.stage.name(), error = %failure.error, %source, suppressed,
                "Message cannot be delivered; dead-lettering it");
        }
        if let Some(dl) = &self.dead_letter {
            let mut backoff = Backoff::of(&self.retry);
            loop {
                let error = match dl.send(&work.received.envelope, &failure, &self.name).await {
                    Ok(()) => {
                        work.received.settle.accept().await;
                        self.metrics.dead_lettered.inc();
                        return self.finish(&work.started);
                    }
                    Err(error) => error,
                };
                match error.disposition() {
                    Disposition::Retry => {
                        self.metrics.retries.inc();
                        if let Some(suppressed) = self.failures.allow() {
                            tracing::warn!(bridge = %self.name, %error, suppressed,
                                "Dead-letter sink failed; retrying");
                        }
                        if !self.wait(backoff.next_delay()).await {
                            return self.release(work).await;
                        }
                    }
                    Disposition::Fatal => return self.fail("dead_letter", &error, work).await,
                    Disposition::DeadLetter => {
                        if let Some(suppressed) = self.failures.allow() {
                            tracing::error!(bridge = %self.name, %error, suppressed,
                                "Dead-letter sink refused the message; handing it back to the \
                                 source broker");
                        }
                        break;
                    }
                }
            }
        }
        match work.received.settle.reject(failure.reason).await {
            Ok(()) => {
                self.metrics.rejected.inc();
                self.finish(&work.started);
            }
            Err(error) => {
                // Logged once, by the application, when the bridge's task ends.
                if let Ok(mut fatal) = self.fatal.lock() {
                    fatal.get_or_insert((format!("{} source", self.name), error));
                }
                self.metrics.in_flight.dec();
                self.stop.cancel();
            }
        }
    }
}

/// The dead-letter reason of a message whose attempts ran out.
pub const MAX_RETRIES: &str = "max-retries";

#[cfg(test)]
mod tests {
    //! The settle rules, with a scripted source and sink: no broker, and no real time (the
    //! clock is paused, so backoffs pass instantly).

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::connector::Settle;
    use crate::deadletter::header;
    use crate::pipeline::ledger::Field;
    use crate::pipeline::{Template, Value};
    use crate::telemetry::Metrics;

    type Log = Arc<Mutex<Vec<String>>>;

    struct FakeSource {
        messages: Vec<Envelope>,
        log: Log,
        /// Ends with this error after handing over the messages, as a refused source does.
        refused: Option<String>,
    }

    struct FakeSettle {
        id: String,
        log: Log,
        can_reject: bool,
    }

    #[async_trait]
    impl Settle for FakeSettle {
        async fn accept(self: Box<Self>) {
            self.log.lock().expect("log lock").push(format!("accept {}", self.id));
        }

        async fn reject(self: Box<Self>, reason: &str) -> Result<(), String> {
            self.log.lock().expect("log lock").push(format!("reject {} ({reason})", self.id));
            if self.can_reject { Ok(()) } else { Err("cannot skip".into()) }
        }

        async fn release(self: Box<Self>) {
            self.log.lock().expect("log lock").push(format!("release {}", self.id));
        }
    }

    #[async_trait]
    impl Source for FakeSource {
        async fn run(
            self: Box<Self>,
            tx: mpsc::Sender<Received>,
            shutdown: CancellationToken,
            drained: CancellationToken,
        ) -> Result<(), String> {
            for envelope in self.messages {
                let id =
                    envelope.header("id").and_then(|v| v.to_template_text()).unwrap_or_default();
                let can_reject = envelope.header("kafka").is_none();
                let settle = Box::new(FakeSettle { id, log: self.log.clone(), can_reject });
                if tx.send(Received { envelope, settle }).await.is_err() {
                    break;
                }
            }
            drop(tx);
            if let Some(error) = self.refused {
                return Err(error);
            }
            shutdown.cancelled().await;
            drained.cancelled().await;
            Ok(())
        }
    }

    /// Answers each emit with the next scripted result (success once the script is empty).
    struct FakeSink {
        script: Mutex<VecDeque<Result<(), DeliveryError>>>,
        log: Log,
    }

    #[async_trait]
    impl Sink for FakeSink {
        async fn emit(
            &self,
            envelope: &Envelope,
            route: &Route,
            ledger: &mut Ledger,
        ) -> Result<Pending, DeliveryError> {
            let id = envelope.header("id").and_then(|v| v.to_template_text()).unwrap_or_default();
            // A header named `lossy` stands for a value this sink's protocol cannot hold.
            if envelope.header("lossy").is_some() {
                ledger.coerced(Field::Header("lossy"), "a value", "less", "test");
                if let Some(refused) = ledger.refusal() {
                    return Err(refused);
                }
            }
            let mut line = format!("emit {id} to {route:?}");
            if let Some(n) = envelope.header(ATTEMPTS_HEADER) {
                line.push_str(&format!(" attempt {}", n.to_template_text().unwrap_or_default()));
            }
            if let Some(class) = envelope.header(header::CLASS) {
                line.push_str(&format!(" class {}", class.to_template_text().unwrap_or_default()));
            }
            if let Some(reason) = envelope.header(header::REASON) {
                line.push_str(&format!(" ({})", reason.to_template_text().unwrap_or_default()));
            }
            self.log.lock().expect("log lock").push(line);
            let result = self.script.lock().expect("log lock").pop_front().unwrap_or(Ok(()));
            Ok(Box::pin(async move { result }))
        }

        async fn flush(&self, _deadline: Duration) {}
    }

    fn message(id: &str, key: Option<&str>) -> Envelope {
        let mut env = Envelope::default();
        env.headers.push(("id".into(), Value::String(id.into())));
        if let Some(key) = key {
            env.headers.push(("rk".into(), Value::String(key.into())));
        }
        env
    }

    fn bridge(
        messages: Vec<Envelope>,
        script: Vec<Result<(), DeliveryError>>,
        dlq: bool,
    ) -> (Bridge, Log) {
        let log: Log = Arc::default();
        let sink = |script| Arc::new(FakeSink { script: Mutex::new(script), log: log.clone() });
        let template = |t: &str| Template::parse(t, None).expect("template");
        let route = RouteTemplate::Amqp091 {
            exchange: template("ex"),
            routing_key: template("{header.rk}"),
        };
        let dead_letter = dlq.then(|| DeadLetter {
            sink: sink(VecDeque::new()) as Arc<dyn Sink>,
            route: RouteTemplate::Amqp091 { exchange: template(""), routing_key: template("dlq") },
        });
        let metrics = Metrics::new().expect("metrics").bridge("b");
        let bridge = Bridge {
            name: "b".into(),
            source: Box::new(FakeSource { messages, log: log.clone(), refused: None }),
            sink: sink(script.into()),
            route,
            rules: Rules::default(),
            strict: false,
            dead_letter,
            max_in_flight: 8,
            retry: RetryModel {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                multiplier: 2.0,
                jitter: 0.5,
                max_attempts: None,
            },
            metrics,
            health: Arc::default(),
        };
        (bridge, log)
    }

    /// Runs the bridge until `count` log lines start with one of `ends`, then shuts it down.
    async fn run_until(
        bridge: Bridge,
        log: &Log,
        ends: &[&str],
        count: usize,
    ) -> Result<(), String> {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(bridge.run(shutdown.clone(), Duration::from_secs(5)));
        for _ in 0..10_000 {
            let done = log
                .lock()
                .expect("log lock")
                .iter()
                .filter(|l| ends.iter().any(|e| l.starts_with(e)))
                .count();
            if done >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        task.await.expect("bridge task")
    }

    fn lines(log: &Log, prefix: &str) -> Vec<String> {
        log.lock().expect("log lock").iter().filter(|l| l.starts_with(prefix)).cloned().collect()
    }

    #[tokio::test(start_paused = true)]
    async fn messages_are_emitted_in_order_and_accepted_after_confirmation() {
        let messages =
            vec![message("1", Some("a")), message("2", Some("b")), message("3", Some("c"))];
        let (bridge, log) = bridge(messages, vec![], false);
        run_until(bridge, &log, &["accept"], 3).await.expect("runs");
        let emits = lines(&log, "emit");
        assert_eq!(emits.len(), 3);
        assert!(emits[0].starts_with("emit 1") && emits[2].starts_with("emit 3"), "{emits:?}");
        let mut accepts = lines(&log, "accept");
        accepts.sort();
        assert_eq!(accepts, ["accept 1", "accept 2", "accept 3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_and_the_source_settled_once() {
        let transient = Err(DeliveryError::Transient("broker busy".into()));
        let (bridge, log) =
            bridge(vec![message("1", Some("a"))], vec![transient.clone(), transient], false);
        run_until(bridge, &log, &["accept"], 1).await.expect("runs");
        assert_eq!(lines(&log, "emit").len(), 3, "two retries");
        assert_eq!(lines(&log, "accept"), ["accept 1"]);
        assert!(lines(&log, "reject").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_goes_to_the_dead_letter_then_the_source_is_accepted() {
        let refused = Err(DeliveryError::Refused("no".into()));
        let (bridge, log) = bridge(vec![message("1", Some("a"))], vec![refused], true);
        run_until(bridge, &log, &["accept"], 1).await.expect("runs");
        let emits = lines(&log, "emit");
        assert_eq!(emits.len(), 2, "{emits:?}");
        assert!(emits[1].contains("dlq"), "the second emit is the dead letter: {emits:?}");
        assert_eq!(lines(&log, "accept"), ["accept 1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_dead_letter_an_untranslatable_message_is_rejected() {
        let (bridge, log) =
            bridge(vec![message("1", None), message("2", Some("b"))], vec![], false);
        run_until(bridge, &log, &["accept", "reject"], 2).await.expect("runs");
        assert_eq!(lines(&log, "reject"), ["reject 1 (template value missing)"]);
        assert_eq!(lines(&log, "accept"), ["accept 2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_cannot_skip_stops_the_bridge_before_the_next_message() {
        let mut poison = message("1", None);
        poison.headers.push(("kafka".into(), Value::Bool(true)));
        let (bridge, log) = bridge(vec![poison, message("2", Some("b"))], vec![], false);
        let result = run_until(bridge, &log, &["reject"], 1).await;
        assert_eq!(result, Err("cannot skip".to_owned()));
        assert!(lines(&log, "emit").is_empty(), "nothing after the failed record went out");
        assert_eq!(lines(&log, "release"), ["release 2"]);
    }

    fn lossy_message(id: &str, key: &str) -> Envelope {
        let mut env = message(id, Some(key));
        env.headers.push(("lossy".into(), Value::Bool(true)));
        env
    }

    fn lossy_count(metrics: &Metrics) -> Option<String> {
        let series = "portico_translation_lossy_total{bridge=\"b\",field=\"headers.lossy\"} ";
        metrics.render().lines().find_map(|l| l.strip_prefix(series)).map(str::to_owned)
    }

    #[tokio::test(start_paused = true)]
    async fn a_strict_bridge_dead_letters_a_lossy_message_and_counts_it() {
        let messages = vec![lossy_message("1", "a"), message("2", Some("b"))];
        let (mut bridge, log) = bridge(messages, vec![], true);
        let metrics = Metrics::new().expect("metrics");
        bridge.metrics = metrics.bridge("b");
        bridge.strict = true;
        run_until(bridge, &log, &["accept"], 2).await.expect("runs");
        let emits = lines(&log, "emit");
        assert_eq!(emits.len(), 2, "{emits:?}");
        assert!(
            emits.iter().any(|e| e.starts_with("emit 1") && e.ends_with("(lossy conversion)")),
            "message 1 went to the dead letter only: {emits:?}"
        );
        assert!(emits.iter().any(|e| e.starts_with("emit 2") && !e.contains("dlq")));
        let mut accepts = lines(&log, "accept");
        accepts.sort();
        assert_eq!(accepts, ["accept 1", "accept 2"]);
        assert_eq!(lossy_count(&metrics).as_deref(), Some("1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lenient_bridge_sends_a_lossy_message_and_counts_it() {
        let (mut bridge, log) = bridge(vec![lossy_message("1", "a")], vec![], true);
        let metrics = Metrics::new().expect("metrics");
        bridge.metrics = metrics.bridge("b");
        run_until(bridge, &log, &["accept"], 1).await.expect("runs");
        let emits = lines(&log, "emit");
        assert_eq!(emits.len(), 1, "{emits:?}");
        assert!(!emits[0].contains("dlq"), "{emits:?}");
        assert_eq!(lossy_count(&metrics).as_deref(), Some("1"));
    }

    fn counted(mut bridge: Bridge, max: u32) -> Bridge {
        bridge.retry.max_attempts = Some(max);
        bridge
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_destination_stops_the_bridge_and_gives_the_message_back() {
        let missing = Err(DeliveryError::NoDestination("exchange \"ex\" does not exist".into()));
        let (bridge, log) =
            bridge(vec![message("1", Some("a")), message("2", Some("b"))], vec![missing], true);
        let health = bridge.health.clone();
        let result = run_until(bridge, &log, &["release 1"], 1).await;
        let error = result.expect_err("the bridge stops");
        assert!(error.contains("does not exist"), "{error}");
        assert!(lines(&log, "accept 1").is_empty(), "nothing acked for the failed message");
        assert!(lines(&log, "emit 1").iter().all(|l| !l.contains("dlq")), "not dead-lettered");
        let (ready, report) = health.report();
        assert!(!ready);
        assert!(report.contains("b sink: stopped: exchange \"ex\" does not exist"), "{report}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_source_stops_the_bridge_by_itself() {
        let (mut bridge, log) = bridge(vec![message("1", Some("a"))], vec![], true);
        let refused = "the broker refused access: ACCESS_REFUSED; check the user".to_owned();
        bridge.source =
            Box::new(FakeSource { messages: vec![], log: log.clone(), refused: Some(refused) });
        let health = bridge.health.clone();
        // No shutdown: the bridge ends on its own.
        let run = bridge.run(CancellationToken::new(), Duration::from_secs(5));
        let result = tokio::time::timeout(Duration::from_secs(60), run).await.expect("it ends");
        let error = result.expect_err("the bridge stops");
        assert!(error.contains("ACCESS_REFUSED"), "{error}");
        let (ready, report) = health.report();
        assert!(!ready);
        assert!(report.contains("b source: stopped: the broker refused access"), "{report}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_destination_chosen_by_the_message_is_dead_lettered() {
        let missing = Err(DeliveryError::NoDestination("no exchange".into()));
        let (mut bridge, log) = bridge(vec![message("1", Some("a"))], vec![missing], true);
        let template = |t: &str| Template::parse(t, None).expect("template");
        bridge.route = RouteTemplate::Amqp091 {
            exchange: template("{header.rk}"),
            routing_key: template("k"),
        };
        run_until(bridge, &log, &["accept"], 1).await.expect("keeps running");
        let emits = lines(&log, "emit");
        assert!(emits[1].contains("class dead-letter (no such destination)"), "{emits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_stop_at_max_attempts_and_dead_letter() {
        let busy = || Err(DeliveryError::Transient("busy".into()));
        let (bridge, log) =
            bridge(vec![message("1", Some("a"))], vec![busy(), busy(), busy(), busy()], true);
        run_until(counted(bridge, 3), &log, &["accept"], 1).await.expect("runs");
        let emits = lines(&log, "emit");
        assert_eq!(emits.len(), 4, "three attempts, then the dead letter: {emits:?}");
        assert!(emits[0].ends_with("attempt 1") && emits[2].ends_with("attempt 3"), "{emits:?}");
        assert!(emits[3].contains("class retry (max-retries)"), "{emits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_comes_back_is_counted_across_trips() {
        let mut back_once = message("1", Some("a"));
        stamp_attempts(&mut back_once, "b", 1);
        let mut back_at_max = message("2", Some("b"));
        stamp_attempts(&mut back_at_max, "b", 3);
        let mut other_bridge = message("3", Some("c"));
        stamp_attempts(&mut other_bridge, "elsewhere", 7);
        let (bridge, log) = bridge(vec![back_once, back_at_max, other_bridge], vec![], true);
        run_until(counted(bridge, 3), &log, &["accept"], 3).await.expect("runs");
        let emits = lines(&log, "emit");
        assert!(emits.iter().any(|l| l.starts_with("emit 1") && l.ends_with("attempt 2")));
        assert!(emits.iter().any(|l| l.starts_with("emit 3") && l.ends_with("attempt 1")));
        let twos: Vec<_> = emits.iter().filter(|l| l.starts_with("emit 2")).collect();
        assert_eq!(twos.len(), 1, "{emits:?}");
        assert!(twos[0].contains("dlq") && twos[0].contains("(max-retries)"), "{twos:?}");
    }

    /// The size of what `f` returns, without calling it: an async fn's future.
    fn output_size<F, A, B, C, D, Fut>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D) -> Fut,
    {
        size_of::<Fut>()
    }

    #[test]
    fn what_each_message_in_flight_holds_stays_small() {
        // Each message in flight holds a boxed Work and a boxed confirmation running
        // `complete` (or `redeliver`): 10 000 of each at `max_in_flight: 10000`. The bounds sit
        // just above today's sizes, so that growth is a decision, not an accident.
        let work = size_of::<Work>();
        let complete = output_size(Shared::complete);
        eprintln!("Work {work} B, confirmation {complete} B");
        assert!(work <= 900, "Work is {work} B");
        assert!(complete <= 560, "the confirmation future is {complete} B");
    }
}
