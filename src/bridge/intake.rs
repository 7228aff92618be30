//! The in-order intake loop: receiving, translating and emitting each message.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Bridge, MAX_RETRIES, Shared, Work, attempts_so_far};
use crate::connector::Disposition;
use crate::deadletter::{Failure, Stage};
use crate::pipeline::{Ledger, RouteTemplate};
use crate::telemetry::RateLimit;

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
        let mut source = tokio::spawn(self.source.run(tx, stop.clone(), drained.clone()));
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
        // Closing waits on the brokers (close-ok, detach, the last acks and offset commits).
        // One that stopped answering must not hold the process: the source and the sinks
        // close together, for at most CLOSE_DEADLINE, and what is left is dropped.
        // The source's end is kept apart: the close deadline must not drop a fatal error.
        let mut ended = None;
        let closes = async {
            let dead_letter = async {
                if let Some(dl) = &shared.dead_letter {
                    dl.sink.flush(deadline).await;
                }
            };
            let source = async { ended = Some((&mut source).await) };
            tokio::join!(source, shared.sink.flush(deadline), dead_letter);
        };
        let closed = tokio::time::timeout(CLOSE_DEADLINE, closes).await;
        // A source that cannot go on (refused credentials) has ended intake already.
        if let Some(Ok(Err(error))) = ended {
            if let Ok(mut fatal) = shared.fatal.lock() {
                fatal.get_or_insert((format!("{} source", self.name), error));
            }
        }
        if closed.is_err() {
            source.abort();
            tracing::warn!(bridge = %self.name, waited = ?CLOSE_DEADLINE,
                "Connections did not close in time; dropped them (a broker stopped \
                 answering; unacknowledged messages will be delivered again)");
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

/// How long a bridge waits for its source and sinks to close once its messages are settled.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

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
        let mut ledger = Ledger::lossy().strict(self.strict);
        let emitting = self.sink.emit(work.envelope(), &route, &mut ledger);
        let Some(emitted) = self.unless_stopped(emitting).await else {
            self.release(work).await;
            return None;
        };
        self.account(&ledger);
        Some(Box::pin(self.complete(work, route, emitted)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::stamp_attempts;
    use crate::bridge::test_support::*;
    use crate::pipeline::Value;
    use crate::telemetry::Metrics;

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
    async fn a_source_that_cannot_skip_stops_the_bridge_before_the_next_message() {
        let mut poison = message("1", None);
        poison.headers.push(("kafka".into(), Value::Bool(true)));
        let (bridge, log) = bridge(vec![poison, message("2", Some("b"))], vec![], false);
        let result = run_until(bridge, &log, &["reject"], 1).await;
        assert_eq!(result, Err("cannot skip".to_owned()));
        assert!(lines(&log, "emit").is_empty(), "nothing after the failed record went out");
        assert_eq!(lines(&log, "release"), ["release 2"]);
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
    async fn a_refused_source_is_reported_even_when_a_sink_never_closes() {
        let (mut bridge, log) = bridge(vec![message("1", Some("a"))], vec![], true);
        let refused = "the broker refused access: ACCESS_REFUSED; check the user".to_owned();
        bridge.source =
            Box::new(FakeSource { messages: vec![], log: log.clone(), refused: Some(refused) });
        bridge.sink = Arc::new(Unclosable(bridge.sink.clone()));
        let health = bridge.health.clone();
        let run = bridge.run(CancellationToken::new(), Duration::from_secs(5));
        let result = tokio::time::timeout(Duration::from_secs(60), run).await.expect("it ends");
        let error = result.expect_err("the bridge stops on the refused source");
        assert!(error.contains("ACCESS_REFUSED"), "{error}");
        let (ready, _) = health.report();
        assert!(!ready);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_that_never_closes_does_not_hold_shutdown() {
        let (mut bridge, log) = bridge(vec![message("1", Some("a"))], vec![], false);
        bridge.sink = Arc::new(Unclosable(bridge.sink.clone()));
        let started = tokio::time::Instant::now();
        run_until(bridge, &log, &["accept"], 1).await.expect("the bridge stops cleanly");
        let took = started.elapsed();
        assert!(took >= CLOSE_DEADLINE && took < CLOSE_DEADLINE * 2, "{took:?}");
        assert_eq!(lines(&log, "accept"), ["accept 1"]);
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
}
