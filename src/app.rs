//! Assembling the gateway from a validated configuration and running it until a signal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::amqp10::{sink::Amqp10Sink, source::Amqp10Source};
use crate::amqp091::{self, sink::Amqp091Sink, source::Amqp091Source};
use crate::backoff::{Backoff, pause};
use crate::bridge::Bridge;
use crate::config::{Model, SinkModel, SourceModel};
use crate::connector::{Sink, Source};
use crate::deadletter::DeadLetter;
use crate::kafka::{self, sink::KafkaSink, source::KafkaSource};
use crate::telemetry::{Health, Metrics, http};

/// Runs every bridge of `model` until SIGINT or SIGTERM. Fails when nothing can run at all.
pub async fn run(model: Model) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new()?);
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    let listener = http::bind(&model.listen).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {} for /metrics: {e}; set telemetry.listen", model.listen)
    })?;
    tracing::info!(listen = %model.listen, "Serving /metrics, /healthz and /readyz");
    let telemetry =
        tokio::spawn(http::serve(listener, metrics.clone(), health.clone(), shutdown.clone()));

    let declared = declare_all(&model, &health, &shutdown);
    let mut producers: HashMap<String, KafkaSink> = HashMap::new();
    let mut tasks = Vec::new();
    for bridge in &model.bridges {
        let name = bridge.name.clone();
        for part in ["source", "sink"] {
            health.register(&format!("{name} {part}"));
        }
        let sink = build_sink(&format!("{name} sink"), &bridge.sink, &health, &mut producers)?;
        let dead_letter = match &bridge.dead_letter {
            Some(dl) => Some(DeadLetter {
                sink: build_sink(&format!("{name} dead_letter"), dl, &health, &mut producers)?,
                route: dl.route().clone(),
            }),
            None => None,
        };
        let runner = Bridge {
            name: name.clone(),
            source: build_source(&name, &bridge.source, &health),
            sink,
            route: bridge.sink.route().clone(),
            rules: bridge.rules.clone(),
            strict: bridge.strict,
            dead_letter,
            max_in_flight: bridge.max_in_flight,
            retry: bridge.retry,
            metrics: metrics.bridge(&name),
            health: health.clone(),
        };
        let waits: Vec<_> =
            connections_of(bridge).filter_map(|c| declared.get(c).cloned()).collect();
        let (shutdown, deadline) = (shutdown.clone(), model.shutdown_timeout);
        tasks.push((
            bridge.name.clone(),
            tokio::spawn(async move {
                for done in waits {
                    tokio::select! {
                        _ = done.cancelled() => {}
                        _ = shutdown.cancelled() => return false,
                    }
                }
                tracing::info!(bridge = %name, "Bridge started");
                let result = runner.run(shutdown, deadline).await;
                if let Err(error) = &result {
                    // The one log line for a bridge that had to stop; the others keep running.
                    tracing::error!(bridge = %name, %error, "Bridge stopped");
                }
                result.is_err()
            }),
        ));
    }
    health.ready("telemetry");

    wait_for_signal().await;
    tracing::info!("Shutting down: stopping intake and settling in-flight messages");
    shutdown.cancel();
    // Each bridge bounds its own settling and closing; this is the backstop for a step that
    // waits on a broker without a bound of its own (a publish blocked by the broker).
    let limit = model.shutdown_timeout + crate::bridge::CLOSE_DEADLINE + STOP_MARGIN;
    let failed = stop_all(tasks, limit).await;
    let _ = telemetry.await;
    tracing::info!(bridges_failed = failed, "Stopped");
    Ok(())
}

/// What a bridge gets beyond its shutdown timeout and close deadline before it is abandoned.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// Waits for every bridge task until `limit` from now; abandons the rest. Returns how many
/// bridges stopped on an error, panicked or had to be abandoned.
async fn stop_all(tasks: Vec<(String, JoinHandle<bool>)>, limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let mut failed = 0;
    for (bridge, task) in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(stopped)) => failed += usize::from(stopped),
            Ok(Err(error)) => {
                tracing::error!(%bridge, %error, "A bridge task panicked");
                failed += 1;
            }
            Err(_) => {
                abort.abort();
                tracing::error!(%bridge, waited = ?limit,
                    "Bridge did not stop in time; abandoned it (its unsettled messages stay \
                     with the source broker and will be delivered again)");
                failed += 1;
            }
        }
    }
    failed
}

fn connections_of(bridge: &crate::config::BridgeModel) -> impl Iterator<Item = &str> {
    let source = match &bridge.source {
        SourceModel::Amqp091 { connection, .. } => connection.name.as_str(),
        SourceModel::Kafka { connection, .. } => connection.name.as_str(),
        SourceModel::Amqp10 { connection, .. } => connection.name.as_str(),
    };
    let sinks = std::iter::once(&bridge.sink).chain(bridge.dead_letter.as_ref()).map(|s| match s {
        SinkModel::Amqp091 { connection, .. } => connection.name.as_str(),
        SinkModel::Kafka { connection, .. } => connection.name.as_str(),
        SinkModel::Amqp10 { connection, .. } => connection.name.as_str(),
    });
    std::iter::once(source).chain(sinks)
}

/// Declares each connection's topology in the background, retrying until the broker is
/// there. Returns, per connection, a token that fires once its declarations succeeded.
fn declare_all(
    model: &Model,
    health: &Arc<Health>,
    shutdown: &CancellationToken,
) -> HashMap<String, CancellationToken> {
    let mut done = HashMap::new();
    for (name, connection) in &model.connections {
        let token = CancellationToken::new();
        done.insert(name.clone(), token.clone());
        let part = format!("connection {name} topology");
        health.register(&part);
        let (health, shutdown) = (health.clone(), shutdown.clone());
        let (amqp, kafka, declare) =
            (connection.amqp091.clone(), connection.kafka.clone(), connection.declare.clone());
        let name = name.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::reconnect();
            loop {
                let result = match (&amqp, &kafka) {
                    (Some(c), _) => amqp091::topology::declare(&c.url, &declare).await,
                    (_, Some(c)) => kafka::topology::declare(c, &declare).await,
                    _ => Ok(()),
                };
                match result {
                    Ok(()) => {
                        health.ready(&part);
                        token.cancel();
                        return;
                    }
                    Err(error) => {
                        health.waiting(&part, error.clone());
                        let delay = backoff.next_delay();
                        tracing::warn!(connection = %name, %error, retry_in = ?delay,
                            "Cannot declare topology yet");
                        if !pause(delay, &shutdown).await {
                            return;
                        }
                    }
                }
            }
        });
    }
    done
}

fn build_source(bridge: &str, model: &SourceModel, health: &Arc<Health>) -> Box<dyn Source> {
    match model {
        SourceModel::Amqp091 { connection, queue, prefetch } => Box::new(Amqp091Source {
            bridge: bridge.to_owned(),
            url: connection.url.clone(),
            queue: queue.clone(),
            prefetch: *prefetch,
            health: health.clone(),
        }),
        SourceModel::Amqp10 { connection, name, node, credit, subscription } => {
            Box::new(Amqp10Source {
                bridge: bridge.to_owned(),
                connection: connection.clone(),
                name: name.clone(),
                node: *node,
                credit: *credit,
                subscription: subscription.clone(),
                health: health.clone(),
            })
        }
        SourceModel::Kafka { connection, topics, group, start } => Box::new(KafkaSource {
            bridge: bridge.to_owned(),
            connection: connection.clone(),
            topics: topics.clone(),
            group: group.clone(),
            start: start.clone(),
            health: health.clone(),
        }),
    }
}

pub(crate) fn build_sink(
    role: &str,
    model: &SinkModel,
    health: &Arc<Health>,
    producers: &mut HashMap<String, KafkaSink>,
) -> anyhow::Result<Arc<dyn Sink>> {
    Ok(match model {
        SinkModel::Amqp091 { connection, persistence, confirm_window, .. } => {
            Arc::new(Amqp091Sink::new(
                role.to_owned(),
                connection.url.clone(),
                *persistence,
                *confirm_window,
                health.clone(),
            ))
        }
        SinkModel::Amqp10 { connection, .. } => {
            Arc::new(Amqp10Sink::new(role.to_owned(), connection.clone(), health.clone()))
        }
        SinkModel::Kafka { connection, .. } => {
            // One producer per connection (librdkafka runs threads per client), one readiness
            // entry per role.
            let shared = match producers.get(&connection.name) {
                Some(sink) => sink.clone(),
                None => {
                    let sink =
                        KafkaSink::new(connection, health.clone()).map_err(anyhow::Error::msg)?;
                    producers.insert(connection.name.clone(), sink.clone());
                    sink
                }
            };
            Arc::new(shared.for_role(role))
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops the gateway");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bridge_that_never_stops_is_abandoned_at_the_limit() {
        let stuck = tokio::spawn(std::future::pending::<bool>());
        let clean = tokio::spawn(async { false });
        let stopped_on_error = tokio::spawn(async { true });
        let tasks = vec![
            ("stuck".to_owned(), stuck),
            ("clean".to_owned(), clean),
            ("error".to_owned(), stopped_on_error),
        ];
        let started = tokio::time::Instant::now();
        let failed = stop_all(tasks, Duration::from_secs(20)).await;
        assert_eq!(failed, 2, "the abandoned bridge and the one that stopped on an error");
        assert_eq!(started.elapsed(), Duration::from_secs(20));
    }
}
