//! A scripted source and sink for the tests of the settle rules: no broker, and no real time
//! (the clock is paused, so backoffs pass instantly).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ATTEMPTS_HEADER, Bridge};
use crate::config::model::RetryModel;
use crate::connector::{DeliveryError, Pending, Received, Settle, Sink, Source};
use crate::deadletter::{DeadLetter, header};
use crate::pipeline::ledger::Field;
use crate::pipeline::{Envelope, Ledger, Route, RouteTemplate, Rules, Template, Value};
use crate::telemetry::Metrics;

pub(super) type Log = Arc<Mutex<Vec<String>>>;

pub(super) struct FakeSource {
    pub(super) messages: Vec<Envelope>,
    pub(super) log: Log,
    /// Ends with this error after handing over the messages, as a refused source does.
    pub(super) refused: Option<String>,
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
            let id = envelope.header("id").and_then(|v| v.to_template_text()).unwrap_or_default();
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

/// Sends through the sink it wraps and never finishes closing: a broker that stopped
/// answering.
pub(super) struct Unclosable(pub(super) Arc<dyn Sink>);

#[async_trait]
impl Sink for Unclosable {
    async fn emit(
        &self,
        envelope: &Envelope,
        route: &Route,
        ledger: &mut Ledger,
    ) -> Result<Pending, DeliveryError> {
        self.0.emit(envelope, route, ledger).await
    }

    async fn flush(&self, _deadline: Duration) {
        std::future::pending::<()>().await
    }
}

/// How a [`Slow`] sink answers one emit.
pub(super) enum Answer {
    /// Takes the message; its confirm says `error` after `after`.
    Fails { after: Duration, error: DeliveryError },
    /// Never takes the message: a sink waiting on a broker that does not come back.
    Never,
}

/// Answers each emit with the next scripted [`Answer`], then `Never` once the script is empty.
pub(super) struct Slow {
    pub(super) script: Mutex<VecDeque<Answer>>,
    pub(super) log: Log,
}

impl Slow {
    pub(super) fn new(script: Vec<Answer>, log: &Log) -> Arc<Slow> {
        Arc::new(Slow { script: Mutex::new(script.into()), log: log.clone() })
    }
}

#[async_trait]
impl Sink for Slow {
    async fn emit(
        &self,
        envelope: &Envelope,
        _route: &Route,
        _ledger: &mut Ledger,
    ) -> Result<Pending, DeliveryError> {
        let id = envelope.header("id").and_then(|v| v.to_template_text()).unwrap_or_default();
        self.log.lock().expect("log lock").push(format!("emit {id}"));
        let answer = self.script.lock().expect("script lock").pop_front();
        match answer.unwrap_or(Answer::Never) {
            Answer::Fails { after, error } => Ok(Box::pin(async move {
                tokio::time::sleep(after).await;
                Err(error)
            })),
            Answer::Never => std::future::pending().await,
        }
    }

    async fn flush(&self, _deadline: Duration) {}
}

pub(super) fn message(id: &str, key: Option<&str>) -> Envelope {
    let mut env = Envelope::default();
    env.headers.push(("id".into(), Value::String(id.into())));
    if let Some(key) = key {
        env.headers.push(("rk".into(), Value::String(key.into())));
    }
    env
}

pub(super) fn bridge(
    messages: Vec<Envelope>,
    script: Vec<Result<(), DeliveryError>>,
    dlq: bool,
) -> (Bridge, Log) {
    let log: Log = Arc::default();
    let sink = |script| Arc::new(FakeSink { script: Mutex::new(script), log: log.clone() });
    let template = |t: &str| Template::parse(t, None).expect("template");
    let route =
        RouteTemplate::Amqp091 { exchange: template("ex"), routing_key: template("{header.rk}") };
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
pub(super) async fn run_until(
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

pub(super) fn lines(log: &Log, prefix: &str) -> Vec<String> {
    log.lock().expect("log lock").iter().filter(|l| l.starts_with(prefix)).cloned().collect()
}

pub(super) fn lossy_message(id: &str, key: &str) -> Envelope {
    let mut env = message(id, Some(key));
    env.headers.push(("lossy".into(), Value::Bool(true)));
    env
}

pub(super) fn lossy_count(metrics: &Metrics) -> Option<String> {
    let series = "portico_translation_lossy_total{bridge=\"b\",field=\"headers.lossy\"} ";
    metrics.render().lines().find_map(|l| l.strip_prefix(series)).map(str::to_owned)
}

pub(super) fn counted(mut bridge: Bridge, max: u32) -> Bridge {
    bridge.retry.max_attempts = Some(max);
    bridge
}
