//! The dead-letter path: a message the sink cannot take goes to the dead-letter sink, or
//! back to the source's own mechanism.

use super::{Shared, Work};
use crate::backoff::Backoff;
use crate::connector::{Disposition, confirmed};
use crate::deadletter::Failure;

impl Shared {
    /// Hands a failed message to the dead-letter sink, or to the source's own mechanism.
    pub(super) async fn dead_letter(&self, work: Box<Work>, failure: Failure) {
        if let Some(suppressed) = self.failures.allow() {
            let source = work.received.envelope.origin.coordinates();
            tracing::warn!(bridge = %self.name, reason = failure.reason,
                stage = failure.stage.name(), error = %failure.error, %source, suppressed,
                "Message cannot be delivered; dead-lettering it");
        }
        if let Some(dl) = &self.dead_letter {
            let mut backoff = Backoff::of(&self.retry);
            loop {
                // As a retry: a dead-letter sink that cannot take the message yet must not
                // hold it past a shutdown.
                let emitting = dl.emit(&work.received.envelope, &failure, &self.name);
                let Some(emitted) = self.unless_stopped(emitting).await else {
                    return self.release(work).await;
                };
                let error = match confirmed(emitted).await {
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

#[cfg(test)]
mod tests {
    use crate::bridge::test_support::*;
    use crate::connector::DeliveryError;

    #[tokio::test(start_paused = true)]
    async fn a_dead_letter_waiting_on_its_sink_gives_the_message_back_at_shutdown() {
        let refused = Err(DeliveryError::Refused("no".into()));
        let (mut bridge, log) = bridge(vec![message("1", Some("a"))], vec![refused], true);
        if let Some(dl) = bridge.dead_letter.as_mut() {
            dl.sink = Slow::new(vec![Answer::Never], &log);
        }
        let started = tokio::time::Instant::now();
        // The sink refuses; the dead-letter sink never takes the message. Shut down then.
        run_until(bridge, &log, &["emit 1"], 2).await.expect("the bridge stops cleanly");
        assert_eq!(lines(&log, "release"), ["release 1"], "the message goes back to the source");
        assert!(lines(&log, "accept").is_empty() && lines(&log, "reject").is_empty());
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(5), "not held until the deadline: {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_refused_during_the_drain_still_reaches_the_dead_letter_sink() {
        let (mut bridge, log) = bridge(vec![message("1", Some("a"))], vec![], true);
        let error = DeliveryError::Refused("no".into());
        let after = std::time::Duration::from_secs(1);
        bridge.sink = Slow::new(vec![Answer::Fails { after, error }], &log);
        // Shut down as soon as the message is out; its refusal comes a second later, while
        // the bridge drains (for up to 5 s).
        run_until(bridge, &log, &["emit 1"], 1).await.expect("the bridge stops cleanly");
        let emits = lines(&log, "emit 1");
        assert_eq!(emits.len(), 2, "{emits:?}");
        assert!(emits[1].contains("dlq"), "the second emit is the dead letter: {emits:?}");
        assert_eq!(lines(&log, "accept"), ["accept 1"]);
        assert!(lines(&log, "release").is_empty());
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
}
