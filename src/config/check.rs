//! Cross-checks of a parsed file: references resolve, fields fit the connection's protocol,
//! templates parse. Every problem is collected with its position, not just the first.

use std::collections::{BTreeMap, BTreeSet};

use super::file::{BridgeFile, File, TemplateFile};
use super::load::Problem;
use super::model::{BridgeModel, ConnectionModel, Model, RetryModel, SourceModel};
use super::position::Positions;
use super::rules::RuleFiles;
use crate::pipeline::route::FilterMissing;
use crate::pipeline::{RouteTemplate, Template};

/// The most messages a bridge may hold unsettled (`max_in_flight`).
pub(super) const MAX_IN_FLIGHT: usize = 65_535;

pub(super) struct Checker {
    pub(super) positions: Positions,
    pub(super) problems: Vec<Problem>,
}

impl Checker {
    pub(super) fn problem(&mut self, path: String, message: impl Into<String>) {
        let at = self.positions.of(&path);
        self.problems.push(Problem {
            line: at.line,
            column: at.column,
            path,
            message: message.into(),
        });
    }

    pub(super) fn model(&mut self, file: File) -> Model {
        let connections: BTreeMap<String, ConnectionModel> = file
            .connections
            .into_iter()
            .map(|(name, conn)| {
                let path = format!("connections.{name}");
                let model = self.connection(&path, &name, conn);
                (name, model)
            })
            .collect();

        let mut names = BTreeSet::new();
        let mut used = BTreeSet::new();
        let mut bridges = Vec::new();
        for (i, bridge) in file.bridges.into_iter().enumerate() {
            let path = format!("bridges[{i}]");
            if !names.insert(bridge.name.clone()) {
                self.problem(
                    format!("{path}.name"),
                    format!("duplicate bridge name {:?}", bridge.name),
                );
            }
            used.insert(bridge.source.connection.clone());
            used.insert(bridge.sink.connection.clone());
            if let Some(dl) = &bridge.dead_letter {
                used.insert(dl.connection.clone());
            }
            if let Some(model) = self.bridge(&path, bridge, &connections) {
                bridges.push(model);
            }
        }
        if bridges.is_empty() && self.problems.is_empty() {
            self.problem("bridges".into(), "no bridges: add at least one under `bridges:`");
        }
        Model {
            listen: file.telemetry.listen,
            shutdown_timeout: file.shutdown_timeout.0,
            connections,
            bridges,
        }
    }

    fn bridge(
        &mut self,
        path: &str,
        bridge: BridgeFile,
        connections: &BTreeMap<String, ConnectionModel>,
    ) -> Option<BridgeModel> {
        let source = self.source(&format!("{path}.source"), bridge.source, connections);
        let sink = self.sink(&format!("{path}.sink"), bridge.sink, connections);
        if let Some(sink) = &sink {
            self.static_route(&format!("{path}.sink"), sink.route());
        }
        let dead_letter =
            bridge.dead_letter.map(|dl| self.sink(&format!("{path}.dead_letter"), dl, connections));
        let retry = RetryModel {
            initial_backoff: bridge.retry.initial_backoff.0,
            max_backoff: bridge.retry.max_backoff.0,
            multiplier: bridge.retry.multiplier,
            jitter: bridge.retry.jitter,
            max_attempts: bridge.retry.max_attempts,
        };
        if retry.initial_backoff < std::time::Duration::from_millis(1) {
            self.problem(format!("{path}.retry.initial_backoff"), "must be at least 1ms");
        }
        if retry.max_backoff < retry.initial_backoff {
            self.problem(format!("{path}.retry.max_backoff"), "must not be below initial_backoff");
        }
        if !(1.0..=10.0).contains(&retry.multiplier) {
            self.problem(format!("{path}.retry.multiplier"), "must be between 1.0 and 10.0");
        }
        if !(0.0..=1.0).contains(&retry.jitter) {
            self.problem(format!("{path}.retry.jitter"), "must be between 0.0 and 1.0");
        }
        if retry.max_attempts == Some(0) {
            self.problem(
                format!("{path}.retry.max_attempts"),
                "must be at least 1; omit it to retry transient failures without limit",
            );
        }
        let rules = self.rules(
            path,
            RuleFiles {
                set: &bridge.set,
                moves: &bridge.moves,
                rename: &bridge.rename,
                drop: &bridge.drop,
                body: bridge.body.as_ref(),
            },
        );
        if let Some(sink) = &sink {
            self.route_reads(&format!("{path}.sink"), sink.route(), &rules);
        }
        let source = source?;
        if bridge.strict && dead_letter.is_none() && matches!(source, SourceModel::Kafka { .. }) {
            self.problem(
                format!("{path}.strict"),
                "a Kafka source cannot skip a record, so strict mode would stop the bridge at \
                 the first lossy one: add a dead_letter",
            );
        }
        let default_in_flight = match &source {
            SourceModel::Amqp091 { prefetch, .. } => usize::from(*prefetch).max(1),
            SourceModel::Kafka { .. } => 1024,
            SourceModel::Amqp10 { credit, .. } => usize::try_from(*credit).unwrap_or(1024).max(1),
        };
        let max_in_flight = bridge.max_in_flight.unwrap_or(default_in_flight);
        if !(1..=MAX_IN_FLIGHT).contains(&max_in_flight) {
            if bridge.max_in_flight.is_some() {
                let message = format!("must be between 1 and {MAX_IN_FLIGHT}");
                self.problem(format!("{path}.max_in_flight"), message);
            } else {
                // Only an AMQP 1.0 credit can go past it; the bridge takes it as its default.
                let message = format!(
                    "is also the bridge's max_in_flight, which is at most {MAX_IN_FLIGHT}: lower \
                     it, or set max_in_flight on the bridge"
                );
                self.problem(format!("{path}.source.credit"), message);
            }
        }
        Some(BridgeModel {
            name: bridge.name,
            source,
            sink: sink?,
            dead_letter: match dead_letter {
                Some(dl) => Some(dl?),
                None => None,
            },
            max_in_flight,
            retry,
            rules,
            strict: bridge.strict,
        })
    }

    /// A route without variables is the same for every message: check it now rather than
    /// dead-letter every message later.
    fn static_route(&mut self, path: &str, route: &RouteTemplate) {
        let fields: Vec<(&str, &Template)> = match route {
            RouteTemplate::Amqp091 { exchange, routing_key } => {
                vec![("exchange", exchange), ("routing_key", routing_key)]
            }
            RouteTemplate::Kafka { topic, .. } => vec![("topic", topic)],
            RouteTemplate::Amqp10 { .. } => return,
        };
        if fields.iter().all(|(_, t)| t.is_static()) {
            // A variable elsewhere in the route (the Kafka key) is missing here; that is
            // for run time to judge.
            let resolved = route.resolve(&crate::pipeline::Envelope::default());
            if let Err(error) = resolved.filter_missing() {
                let field = fields.iter().find(|(_, t)| t.is_static()).map_or("", |(f, _)| f);
                self.problem(format!("{path}.{field}"), error.to_string());
            }
        }
    }

    pub(super) fn template(&mut self, path: &str, field: &TemplateFile) -> Option<Template> {
        let (source, default) = field.parts();
        let at = if matches!(field, TemplateFile::WithDefault(_)) {
            format!("{path}.template")
        } else {
            path.to_owned()
        };
        match Template::parse(source, default.map(str::to_owned)) {
            Ok(template) => Some(template),
            Err(e) => {
                self.problem(at, format!("template {source:?}: {e}"));
                None
            }
        }
    }
}
