//! The translation pipeline: the canonical [`Envelope`], typed header values, routing
//! templates, the [`Route`] a sink publishes to, and the [`Ledger`] of what a sink's
//! encoding changed.

pub mod carry;
pub mod charset;
pub mod envelope;
pub mod ledger;
#[cfg(test)]
mod mapping_doc;
#[cfg(test)]
mod round_trips;
pub mod route;
pub mod rules;
pub mod template;
pub mod value;

pub use envelope::{BodyKind, Envelope, MessageId, Origin, Properties};
pub use ledger::{Ledger, Note, NoteKind};
pub use route::{Node, RecordTime, Route, RouteTemplate};
pub use rules::Rules;
pub use template::Template;
pub use value::Value;
