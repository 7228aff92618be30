//! portico: a message gateway between AMQP 0-9-1, AMQP 1.0 and Kafka.
//!
//! # Layout
//!
//! - [`config`]: `bridges.yaml`, from text to a validated model, with positioned errors.
//! - [`pipeline`]: the protocol-neutral [`pipeline::Envelope`], typed header values,
//!   routing templates and routes.
//! - [`connector`]: the `Source` and `Sink` seams every protocol implements.
//! - [`amqp091`], [`amqp10`], [`kafka`]: one folder per protocol, each with `codec`
//!   (broker message ⇄ envelope), `source`, `sink` and `topology`.
//! - [`bridge`]: receive → translate → emit → settle for one bridge, with retries.
//! - [`deadletter`]: what a message that cannot be delivered becomes; [`replay`] takes
//!   dead letters back to their bridge (`portico dlq replay`).
//! - [`telemetry`]: metrics, health, the HTTP endpoint and log rate limits.
//! - [`explain`]: what a bridge makes of one message, field by field, without a broker.
//! - [`app`], [`cli`]: assembling and running the whole.

pub mod amqp091;
pub mod amqp10;
pub mod app;
pub mod backoff;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod connector;
pub mod deadletter;
pub mod explain;
pub mod kafka;
pub mod pipeline;
pub mod replay;
pub mod telemetry;
