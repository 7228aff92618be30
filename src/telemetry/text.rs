//! The text log format's fields: `name=value`, the value quoted as a JSON string when it would
//! otherwise run into the next field (a space, a quote, `=`, a control character, or nothing
//! at all), as logfmt readers expect. Control characters never reach the terminal raw: in the
//! message they are escaped as in Rust (`\n`, `\u{1b}`).

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
    fn field(&mut self, field: &Field, value: &str) {
        let name = field.name();
        // tracing-log's metadata of a `log` record: the format prints it already.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let space = if std::mem::take(&mut self.first) { "" } else { " " };
        let name = name.strip_prefix("r#").unwrap_or(name);
        let w = &mut self.writer;
        self.result = if name == "message" {
            w.write_str(space).and_then(|()| write_escaped(w, value))
        } else if splits(value) {
            let quoted = serde_json::to_string(value).map_err(|_| fmt::Error);
            quoted.and_then(|quoted| write!(w, "{space}{name}={quoted}"))
        } else {
            write!(w, "{space}{name}={value}")
        };
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        match write!(text, "{value:?}") {
            Ok(()) => self.field(field, &text),
            Err(error) => self.result = Err(error),
        }
    }
}

/// Whether `value`, written bare, would not read back as one value.
fn splits(value: &str) -> bool {
    value.is_empty()
        || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
}

fn write_escaped(w: &mut Writer<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(w, "{}", c.escape_debug())?;
        } else {
            w.write_char(c)?;
        }
    }
    Ok(())
}
