//! The text log format's fields: `name=value`, the value quoted when it would otherwise run
//! into the next field (spaces, quotes, `=`, or nothing at all), as logfmt readers expect.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Formats an event's or a span's fields for the text format.
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor { writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    fn field(&mut self, field: &Field, value: &str, quoted: bool) {
        let name = field.name();
        // tracing-log's metadata of a `log` record: the format prints it already.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let space = if std::mem::take(&mut self.first) { "" } else { " " };
        let name = name.strip_prefix("r#").unwrap_or(name);
        let w = &mut self.writer;
        self.result = if name == "message" {
            write!(w, "{space}{value}")
        } else if quoted || !splits(value) {
            write!(w, "{space}{name}={value}")
        } else {
            write!(w, "{space}{name}={value:?}")
        };
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, value, false);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        if write!(text, "{value:?}").is_err() {
            self.result = Err(fmt::Error);
            return;
        }
        // A string logged with `?` arrives quoted and escaped already.
        let quoted = text.len() >= 2 && text.starts_with('"') && text.ends_with('"');
        self.field(field, &text, quoted);
    }
}

/// Whether `value`, written bare, would not read back as one value.
fn splits(value: &str) -> bool {
    value.is_empty() || value.chars().any(|c| c.is_whitespace() || c == '"' || c == '=')
}
