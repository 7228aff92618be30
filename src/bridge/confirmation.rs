//! The confirmation of an emitted message: its retries, then settling it at the source.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{MAX_RETRIES, Shared, Work, stamp_attempts};
use crate::backoff::{Backoff, pause};
use crate::connector::{DeliveryError, Disposition, Pending, confirmed};
use crate::pipeline::{Ledger, Route};

impl Shared {
    /// Emits a message that came back to the source after `work.attempts` deliveries, after
    /// the backoff those failures earned.
    pub(super) async fn redeliver(self: Arc<Self>, mut work: Box<Work>, route: Route) {
        let mut backoff = Backoff::of(&self.retry);
        backoff.skip(work.attempts.saturating_sub(1));
        if !self.wait(backoff.next_delay()).await {
            return self.release(work).await;
        }
        self.metrics.retries.inc();
        self.stamp(&mut work);
        let mut ledger = Ledger::lossy().strict(self.strict);
        let emitting = self.sink.emit(work.envelope(), &route, &mut ledger);
        let Some(emitted) = self.unless_stopped(emitting).await else {
            return self.release(work).await;
        };
        self.account(&ledger);
        self.complete(work, route, emitted).await;
    }

    /// Runs `step` unless the bridge stops before it is done: `None` then, and the caller
    /// gives the message back. For handing a message to a sink, which can wait long before
    /// it takes one (a reconnect, AMQP 1.0 credit, a full confirm window): at shutdown the
    /// message must go back to the source, not hold the drain until its deadline. A sink that
    /// takes the message at once still gets it while stopping (`step` is polled first): a
    /// message failing during the drain still reaches a healthy dead-letter sink.
    pub(super) async fn unless_stopped<T>(&self, step: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            done = step => Some(done),
            _ = self.stop.cancelled() => None,
        }
    }

    /// Writes the attempt about to be made into the outgoing message, when counted.
    pub(super) fn stamp(&self, work: &mut Work) {
        if self.retry.max_attempts.is_some() {
            let outgoing =
                work.outgoing.get_or_insert_with(|| Box::new(work.received.envelope.clone()));
            stamp_attempts(outgoing, &self.name, work.attempts + 1);
        }
    }

    /// Waits for the confirmation, retrying transient failures, then settles.
    pub(super) async fn complete(
        self: Arc<Self>,
        mut work: Box<Work>,
        route: Route,
        emitted: Result<Pending, DeliveryError>,
    ) {
        let mut backoff = Backoff::of(&self.retry);
        let mut outcome = confirmed(emitted).await;
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
            // The first attempt already accounted for (and judged) what encoding loses. Boxed,
            // as the timer above.
            let mut lossy = Ledger::lossy();
            let retry = self.unless_stopped(self.sink.emit(work.envelope(), &route, &mut lossy));
            outcome = match Box::pin(retry).await {
                Some(emitted) => confirmed(emitted).await,
                None => return Box::pin(self.release(work)).await,
            };
        }
    }

    /// Counts and logs what encoding for the sink coerced or dropped.
    pub(super) fn account(&self, ledger: &Ledger) {
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
    pub(super) async fn fail(&self, part: &str, error: &DeliveryError, work: Box<Work>) {
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
    pub(super) async fn wait(&self, delay: Duration) -> bool {
        pause(delay, &self.stop).await
    }

    async fn delivered(&self, work: Box<Work>) {
        work.received.settle.accept().await;
        self.metrics.delivered.inc();
        self.finish(&work.started);
    }

    pub(super) async fn release(&self, work: Box<Work>) {
        work.received.settle.release().await;
        self.finish(&work.started);
    }

    pub(super) fn finish(&self, started: &Instant) {
        self.metrics.in_flight.dec();
        self.metrics.latency.observe(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::test_support::*;
    use crate::pipeline::{RouteTemplate, Template};

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
    async fn a_retry_waiting_on_its_sink_gives_the_message_back_at_shutdown() {
        let (mut bridge, log) = bridge(vec![message("1", Some("a"))], vec![], false);
        let busy =
            Answer::Fails { after: Duration::ZERO, error: DeliveryError::Transient("busy".into()) };
        bridge.sink = Slow::new(vec![busy], &log);
        let started = tokio::time::Instant::now();
        // The first attempt fails; the retry's emit never returns. Shut down then.
        run_until(bridge, &log, &["emit 1"], 2).await.expect("the bridge stops cleanly");
        assert_eq!(lines(&log, "release"), ["release 1"], "the message goes back to the source");
        assert!(lines(&log, "accept").is_empty());
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "not held until the drain deadline: {took:?}");
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
