//! Prometheus metrics, named `portico_<noun>_<unit>` and labelled by bridge, so their number
//! stays bounded whatever the traffic. The one exception, the `field` label of
//! `portico_translation_lossy_total`, is capped per bridge (see [`LossyCounter`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

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
    lossy: IntCounterVec,
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
    pub lossy: LossyCounter,
}

/// Distinct `field` labels one bridge may create; later fields count as `other`.
const LOSSY_FIELDS_MAX: usize = 64;

/// `portico_translation_lossy_total{bridge,field}` for one bridge. Header names come from
/// the messages, so the set of field labels is capped at [`LOSSY_FIELDS_MAX`] per bridge:
/// past it, new fields count under `field="other"` and the number of series stays bounded.
#[derive(Clone)]
pub struct LossyCounter {
    family: IntCounterVec,
    bridge: String,
    fields: Arc<Mutex<HashSet<String>>>,
}

impl LossyCounter {
    /// Counts one coercion or drop of `field` (a ledger note's field path).
    pub fn inc(&self, field: &str) {
        let known = self.fields.lock().is_ok_and(|mut fields| {
            fields.contains(field)
                || (fields.len() < LOSSY_FIELDS_MAX && fields.insert(field.to_owned()))
        });
        let label = if known { field } else { "other" };
        self.family.with_label_values(&[self.bridge.as_str(), label]).inc();
    }
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
            lossy: IntCounterVec::new(
                Opts::new(
                    "portico_translation_lossy_total",
                    "Values coerced or dropped when encoding for the sink, by field",
                ),
                &["bridge", "field"],
            )?,
        };
        metrics.registry.register(Box::new(metrics.received.clone()))?;
        metrics.registry.register(Box::new(metrics.delivered.clone()))?;
        metrics.registry.register(Box::new(metrics.dead_lettered.clone()))?;
        metrics.registry.register(Box::new(metrics.rejected.clone()))?;
        metrics.registry.register(Box::new(metrics.retries.clone()))?;
        metrics.registry.register(Box::new(metrics.in_flight.clone()))?;
        metrics.registry.register(Box::new(metrics.latency.clone()))?;
        metrics.registry.register(Box::new(metrics.lossy.clone()))?;
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
            lossy: LossyCounter {
                family: self.lossy.clone(),
                bridge: bridge.to_owned(),
                fields: Arc::default(),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_fields_are_counted_by_name_up_to_a_cap() {
        let metrics = Metrics::new().expect("metrics");
        let bridge = metrics.bridge("b");
        bridge.lossy.inc("properties.priority");
        bridge.lossy.inc("properties.priority");
        for i in 0..LOSSY_FIELDS_MAX + 5 {
            bridge.lossy.inc(&format!("headers.h{i}"));
        }
        let text = metrics.render();
        let line = |field: &str| {
            let prefix =
                format!("portico_translation_lossy_total{{bridge=\"b\",field=\"{field}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_owned)
        };
        assert_eq!(line("properties.priority").as_deref(), Some("2"));
        assert_eq!(line("headers.h0").as_deref(), Some("1"));
        assert_eq!(line("other").as_deref(), Some("6"), "{text}");
        let series =
            text.lines().filter(|l| l.starts_with("portico_translation_lossy_total{")).count();
        assert_eq!(series, LOSSY_FIELDS_MAX + 1);
    }
}
