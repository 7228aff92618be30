//! Prometheus metrics, named `portico_<noun>_<unit>` and labelled by bridge only, so their
//! number stays bounded whatever the traffic.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The registry and every metric family.
pub struct Metrics {
    registry: Registry,
    received: IntCounterVec,
    delivered: IntCounterVec,
    dead_lettered: IntCounterVec,
    rejected: IntCounterVec,
    retries: IntCounterVec,
    in_flight: IntGaugeVec,
    latency: HistogramVec,
}

/// The metrics of one bridge, with the label already applied.
#[derive(Clone)]
pub struct BridgeMetrics {
    pub received: prometheus::IntCounter,
    pub delivered: prometheus::IntCounter,
    pub dead_lettered: prometheus::IntCounter,
    pub rejected: prometheus::IntCounter,
    pub retries: prometheus::IntCounter,
    pub in_flight: prometheus::IntGauge,
    pub latency: prometheus::Histogram,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let counter =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["bridge"]);
        let metrics = Metrics {
            registry: Registry::new(),
            received: counter("portico_messages_received_total", "Messages taken from the source")?,
            delivered: counter(
                "portico_messages_delivered_total",
                "Messages confirmed by the sink",
            )?,
            dead_lettered: counter(
                "portico_messages_dead_lettered_total",
                "Messages confirmed by the dead-letter sink",
            )?,
            rejected: counter(
                "portico_messages_rejected_total",
                "Failed messages handed back to the source broker's own dead-lettering",
            )?,
            retries: counter(
                "portico_delivery_retries_total",
                "Delivery attempts that will be retried",
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new("portico_messages_in_flight", "Messages received and not yet settled"),
                &["bridge"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "portico_delivery_latency_seconds",
                    "Time from receiving a message to settling it at the source",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ]),
                &["bridge"],
            )?,
        };
        metrics.registry.register(Box::new(metrics.received.clone()))?;
        metrics.registry.register(Box::new(metrics.delivered.clone()))?;
        metrics.registry.register(Box::new(metrics.dead_lettered.clone()))?;
        metrics.registry.register(Box::new(metrics.rejected.clone()))?;
        metrics.registry.register(Box::new(metrics.retries.clone()))?;
        metrics.registry.register(Box::new(metrics.in_flight.clone()))?;
        metrics.registry.register(Box::new(metrics.latency.clone()))?;
        Ok(metrics)
    }

    pub fn bridge(&self, bridge: &str) -> BridgeMetrics {
        BridgeMetrics {
            received: self.received.with_label_values(&[bridge]),
            delivered: self.delivered.with_label_values(&[bridge]),
            dead_lettered: self.dead_lettered.with_label_values(&[bridge]),
            rejected: self.rejected.with_label_values(&[bridge]),
            retries: self.retries.with_label_values(&[bridge]),
            in_flight: self.in_flight.with_label_values(&[bridge]),
            latency: self.latency.with_label_values(&[bridge]),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
