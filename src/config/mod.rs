//! `bridges.yaml`: the file as written ([`file`]), how it is loaded and checked ([`load`]),
//! and the validated model the gateway runs ([`model`]).
//!
//! Loading happens in three steps, each with errors that quote the file, line and column:
//! `${VAR}` expansion, structural parsing (unknown fields, wrong types), and cross-checks
//! (connections that exist, fields that fit the connection's protocol, templates that parse).

mod check;
mod endpoints;
mod env;
pub mod file;
mod load;
pub mod model;
pub(crate) mod position;
mod rules;
pub mod secret;

pub use load::{ConfigError, Problem, load, load_str};
pub use model::{
    Amqp091Connection, BridgeModel, KafkaConnection, Model, Persistence, SinkModel, SourceModel,
};
pub use secret::{SecretOptions, SecretUrl};
