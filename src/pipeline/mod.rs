//! The translation pipeline: the canonical [`Envelope`], typed header values, routing
//! templates and the [`Route`] a sink publishes to.

pub mod carry;
pub mod envelope;
pub mod route;
pub mod rules;
pub mod template;
pub mod value;

pub use envelope::{BodyKind, Envelope, MessageId, Origin, Properties};
pub use route::{Node, Route, RouteTemplate};
pub use rules::Rules;
pub use template::Template;
pub use value::Value;
