//! Publishing to AMQP 0-9-1 with publisher confirms.

use async_trait::async_trait;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::types::ShortString;
use lapin::{Channel, Connection};
use std::collections::HashSet;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::{Mutex, Semaphore};

use super::codec;
use super::confirm_book::{ConfirmBook, Published, Writing};
use crate::config::{Persistence, SecretUrl, secret::redact};
use crate::connector::{DeliveryError, Pending, Sink};
use crate::pipeline::{Envelope, Ledger, Route};
use crate::telemetry::Health;

pub struct Amqp091Sink {
    role: String,
    url: SecretUrl,
    user: String,
    persistence: Persistence,
    health: Arc<Health>,
    /// The open connection and its confirm-mode channel. Held while a publish is written
    /// (not while its confirm is awaited) and while reconnecting.
    /// The channel is shared with each publish's future: an `Arc` clone is one atomic add,
    /// where cloning lapin's `Channel` clones a dozen.
    session: Mutex<Option<(Connection, Arc<Channel>)>>,
    /// Exchanges seen to exist on the current channel's connection (see `check_exchange`).
    known_exchanges: std::sync::Mutex<HashSet<String>>,
    /// The publishes of the current channel awaiting their verdict (see `confirm_book`).
    book: std::sync::Mutex<Arc<ConfirmBook>>,
    /// One permit per publish that may await its confirm (`confirm_window`). A publish holds
    /// its permit until its verdict is taken, so memory stays bounded by the window however
    /// deep the bridge's own in-flight limit is. Closed when the sink shuts down.
    window: Arc<Semaphore>,
}

impl Amqp091Sink {
    pub fn new(
        role: String,
        url: SecretUrl,
        persistence: Persistence,
        confirm_window: usize,
        health: Arc<Health>,
    ) -> Amqp091Sink {
        let user = super::user_of(&url);
        Amqp091Sink {
            role,
            url,
            user,
            persistence,
            health,
            session: Mutex::new(None),
            known_exchanges: std::sync::Mutex::default(),
            book: std::sync::Mutex::default(),
            window: Arc::new(Semaphore::new(confirm_window.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// Fails when `exchange` does not exist. Publishing to a missing exchange closes the
    /// channel, failing every confirm pending on it; asking first (once per exchange, on a
    /// channel of its own) keeps one bad route from taking other messages down with it.
    async fn check_exchange(
        &self,
        session: &Option<(Connection, Arc<Channel>)>,
        exchange: &str,
    ) -> Result<(), DeliveryError> {
        let known = self.known_exchanges.lock().map(|k| k.contains(exchange)).unwrap_or(false);
        let Some((connection, _)) = session.as_ref().filter(|_| !exchange.is_empty() && !known)
        else {
            return Ok(());
        };
        let probe = connection.create_channel().await.map_err(|e| {
            DeliveryError::Disconnected(format!(
                "cannot open a channel: {}",
                redact(&e.to_string())
            ))
        })?;
        let options = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
        let name = ShortString::try_new(exchange)
            .map_err(|_| DeliveryError::Encode("exchange name over 255 bytes".into()))?;
        let kind = lapin::ExchangeKind::Direct;
        match probe.exchange_declare(name, kind, options, FieldTable::default()).await {
            Ok(()) => {
                let _ = probe.close(200, "checked".into()).await;
                if let Ok(mut known) = self.known_exchanges.lock() {
                    known.insert(exchange.to_owned());
                }
                Ok(())
            }
            Err(e) if e.to_string().contains("NOT_FOUND") => Err(missing_exchange(exchange)),
            Err(e) => Err(classify(&e.to_string())),
        }
    }

    /// The open confirm-mode channel, reconnecting when it is gone. The caller holds the
    /// session lock, which also serialises publishes (see `emit`).
    async fn channel(
        &self,
        session: &mut Option<(Connection, Arc<Channel>)>,
    ) -> Result<Arc<Channel>, DeliveryError> {
        if let Some((_, channel)) = session.as_ref().filter(|(_, ch)| ch.status().connected()) {
            return Ok(channel.clone());
        }
        if let Some((old, _)) = session.take() {
            let _ = old.close(200, "reopening".into()).await;
        }
        let opened = async {
            let connection = super::connect(&self.url, &self.role).await?;
            let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((connection, Arc::new(channel)))
        };
        match opened.await {
            Ok((connection, channel)) => {
                tracing::info!(sink = %self.role, url = %self.url, "Connected AMQP 0-9-1 sink");
                self.health.ready(&self.role);
                *session = Some((connection, channel.clone()));
                // The old channel's publishes fail with it; the new one starts a new book.
                if let Ok(mut book) = self.book.lock() {
                    *book = Arc::default();
                }
                // The channel may have closed because an exchange was deleted since it was
                // checked: ask again, or every retry would republish into a closing channel.
                if let Ok(mut known) = self.known_exchanges.lock() {
                    known.clear();
                }
                Ok(channel)
            }
            Err(error) => {
                let error = redact(&error);
                self.health.waiting(&self.role, format!("cannot connect: {error}"));
                Err(match classify(&error) {
                    denied @ DeliveryError::Denied(_) => denied,
                    _ => DeliveryError::Disconnected(error),
                })
            }
        }
    }
}

#[async_trait]
impl Sink for Amqp091Sink {
    async fn emit(
        &self,
        envelope: &Envelope,
        route: &Route,
        ledger: &mut Ledger,
    ) -> Result<Pending, DeliveryError> {
        let Route::Amqp091 { exchange, routing_key } = route else {
            return Err(DeliveryError::Encode(format!(
                "an AMQP 0-9-1 sink cannot publish to {route:?}"
            )));
        };
        let properties = codec::encode(envelope, self.persistence, &self.user, ledger)?;
        if let Some(refused) = ledger.refusal() {
            return Err(refused);
        }
        // Taken before the session lock: a full window holds back this publish, not the
        // channel, so confirms and returns keep flowing while it waits.
        let permit = self.window.clone().acquire_owned().await.map_err(|_| {
            DeliveryError::Disconnected(
                "the sink is shutting down; the message stays unacked".into(),
            )
        })?;
        // One publish at a time per channel: lapin numbers a publish for its confirm and
        // queues its frames in two steps, so two concurrent publishes (a retry beside the
        // bridge's next message) could swap numbers and confirm the wrong message.
        let mut session = self.session.lock().await;
        let channel = self.channel(&mut session).await?;
        self.check_exchange(&session, exchange).await?;
        // Both were checked to fit a short string when the route was resolved.
        let (exchange, routing_key) = match (
            ShortString::try_new(exchange.as_str()),
            ShortString::try_new(routing_key.as_str()),
        ) {
            (Ok(e), Ok(k)) => (e, k),
            _ => {
                return Err(DeliveryError::Encode("exchange or routing key over 255 bytes".into()));
            }
        };
        // mandatory: an unroutable message comes back as basic.return instead of vanishing.
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let body = envelope.body.clone();
        let published = Published {
            exchange: exchange.clone(),
            routing_key: routing_key.clone(),
            body: body.clone(),
        };
        let mut publish: Writing = Box::pin(async move {
            channel.basic_publish(exchange, routing_key, options, &body, properties).await
        });
        // Both steps happen in the first poll, which queues the frames for lapin's I/O thread.
        // Only that poll needs the lock: waiting for the frames to be written is left to the
        // returned future, so the next message is queued behind this one at once and the I/O
        // thread writes many publishes per wake-up instead of one.
        let first = std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await;
        let writing = match first {
            Poll::Ready(written) => Box::pin(std::future::ready(written)),
            Poll::Pending => publish,
        };
        // Entered under the lock, so the book holds every publish the broker may ack before
        // this one's confirm is looked at.
        let book = self.book.lock().map(|b| b.clone()).unwrap_or_default();
        let claim = book.enter(writing, published);
        drop(session);
        Ok(Box::pin(async move {
            let verdict = claim.await;
            drop(permit);
            match verdict {
                Ok(Confirmation::Ack(None)) => Ok(()),
                Ok(Confirmation::Ack(Some(returned))) | Ok(Confirmation::Nack(Some(returned))) => {
                    Err(DeliveryError::Unroutable {
                        code: returned.reply_code,
                        text: returned.reply_text.as_str().to_owned(),
                    })
                }
                Ok(Confirmation::Nack(None)) => Err(DeliveryError::Nacked(
                    "basic.nack (a queue refused it, e.g. x-overflow=reject-publish)".into(),
                )),
                Ok(Confirmation::NotRequested) => {
                    Err(DeliveryError::Transient("the channel was not in confirm mode".into()))
                }
                // The channel closed under this publish, perhaps for another message's fault
                // (every pending confirm fails with the same error): retry; a new channel
                // tells whose fault it was. Only a refused permission is the same for every
                // message of this bridge.
                Err(e) => Err(failed_confirm(&e.to_string())),
            }
        }))
    }

    async fn prepare(&self) -> Result<(), DeliveryError> {
        let mut session = self.session.lock().await;
        self.channel(&mut session).await.map(|_| ())
    }

    async fn flush(&self, _deadline: std::time::Duration) {
        // Every publish is awaited by its bridge task; nothing is buffered here. The bridge has
        // drained (or given up on) its messages by now; closing the window makes sure none
        // waits for room past this point. Then close cleanly.
        self.window.close();
        if let Some((connection, channel)) = self.session.lock().await.take() {
            let _ = channel.close(200, "portico shutting down".into()).await;
            let _ = connection.close(200, "portico shutting down".into()).await;
        }
    }
}

fn missing_exchange(exchange: &str) -> DeliveryError {
    DeliveryError::NoDestination(format!(
        "exchange {exchange:?} does not exist; create it or list it under the connection's \
         declare.exchanges, then restart portico"
    ))
}

/// A publish whose channel closed before the broker confirmed it.
fn failed_confirm(error: &str) -> DeliveryError {
    match classify(error) {
        denied @ DeliveryError::Denied(_) => denied,
        _ => DeliveryError::Disconnected(format!(
            "the channel closed before the broker confirmed: {}",
            redact(error)
        )),
    }
}

/// A connection or channel closed by the broker says why: refused credentials or permissions
/// and a missing exchange will not change by retrying; anything else may.
fn classify(error: &str) -> DeliveryError {
    let error = redact(error);
    if super::access_refused(&error) {
        DeliveryError::Denied(format!(
            "the broker refused access: {error}; check the user and its permissions \
             (configure, write) on this vhost and exchange"
        ))
    } else if error.contains("NOT_FOUND") || error.contains("no exchange") {
        DeliveryError::NoDestination(format!(
            "{error}; create the exchange or list it under the connection's declare.exchanges"
        ))
    } else if error.contains("PRECONDITION_FAILED") {
        DeliveryError::Refused(error)
    } else {
        DeliveryError::Disconnected(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::Disposition;

    #[test]
    fn broker_answers_are_classified() {
        let login = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN";
        assert_eq!(classify(login).disposition(), Disposition::Fatal);
        let write = "ACCESS_REFUSED - write access to exchange 'x' in vhost '/' refused";
        assert_eq!(classify(write).disposition(), Disposition::Fatal);
        let missing = "NOT_FOUND - no exchange 'x' in vhost '/'";
        assert_eq!(classify(missing).disposition(), Disposition::Fatal);
        assert_eq!(missing_exchange("x").disposition(), Disposition::Fatal);
        assert_eq!(classify("PRECONDITION_FAILED - x").disposition(), Disposition::DeadLetter);
        assert_eq!(classify("connection reset by peer").disposition(), Disposition::Retry);
    }

    #[test]
    fn a_confirm_lost_with_its_channel_says_so_once() {
        let reset = failed_confirm("connection reset by peer");
        assert_eq!(
            reset.to_string(),
            "not connected to the broker: the channel closed before the broker confirmed: \
             connection reset by peer"
        );
        let missing = failed_confirm("NOT_FOUND - no exchange 'x' in vhost '/'");
        assert_eq!(missing.disposition(), Disposition::Retry, "a new channel tells whose fault");
        assert_eq!(
            missing.to_string(),
            "not connected to the broker: the channel closed before the broker confirmed: \
             NOT_FOUND - no exchange 'x' in vhost '/'"
        );
        let login = "ACCESS_REFUSED - write access to exchange 'x' in vhost '/' refused";
        assert_eq!(failed_confirm(login).disposition(), Disposition::Fatal);
    }
}
