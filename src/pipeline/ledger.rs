//! The translation ledger: what encoding a message for a sink's protocol changed about it.
//!
//! The three protocols hold different things: 0-9-1 timestamps are seconds, a 0-9-1 short
//! string stops at 255 bytes, AMQP 1.0 application properties take no lists or maps, JMS
//! has no unsigned numbers, Kafka headers are only bytes. When a sink codec encodes an
//! [`crate::pipeline::Envelope`], it writes a [`Note`] into a [`Ledger`] for every value it
//! did not carry as it was:
//!
//! - **converted**: the same information in another type, unit, form or place, restored
//!   exactly by the way back (`timestamp (ms)` → `T (s)` plus a header for the milliseconds);
//! - **coerced**: carried, but with something lost (a priority clamped to JMS's 0–9);
//! - **dropped**: not carried at all.
//!
//! A running bridge keeps only the lossy notes ([`Ledger::lossy`]): it counts them in
//! `portico_translation_lossy_total{bridge,field}`, logs them (rate-limited), and with
//! `strict: true` dead-letters the message instead of sending it (see [`Ledger::refusal`]).
//! `portico explain` keeps every note ([`Ledger::all`]) and prints them field by field with
//! [`Note`]'s `Display`, e.g.
//! `headers.attempt: converted u32 → l (i64): 0-9-1 clients cannot read unsigned tags`.
//!
//! Recording is cheap: a ledger allocates only when it keeps a note, so a message that
//! crosses unchanged (or a running bridge's message with nothing lossy) costs nothing.

use std::borrow::Cow;
use std::fmt;

/// How much a note says about what happened to a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteKind {
    /// Same information, another type, unit, form or place; restored exactly on the way back.
    Converted,
    /// Carried with a loss (clamped, capped, narrowed, a type no longer known).
    Coerced,
    /// Not carried.
    Dropped,
}

impl NoteKind {
    pub fn name(self) -> &'static str {
        match self {
            NoteKind::Converted => "converted",
            NoteKind::Coerced => "coerced",
            NoteKind::Dropped => "dropped",
        }
    }

    /// Whether the sink's message says less than the envelope did.
    pub fn is_lossy(self) -> bool {
        self != NoteKind::Converted
    }
}

/// Where a value sits in the envelope; rendered as the note's field path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field<'a> {
    /// A standard property, by its envelope name (`creation_time`, `message_id`).
    Property(&'static str),
    /// An application header (0-9-1 header, 1.0 application property or annotation, Kafka
    /// header), by name.
    Header(&'a str),
    /// The body, or its kind.
    Body,
    /// Where the message came from (`routing_key`, `topic`, `tombstone`).
    Origin(&'static str),
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Property(name) => write!(f, "properties.{name}"),
            Field::Header(name) => write!(f, "headers.{name}"),
            Field::Body => f.write_str("body"),
            Field::Origin(name) => write!(f, "origin.{name}"),
        }
    }
}

/// One value that did not cross as it was.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// `properties.NAME`, `headers.NAME`, `body` or `origin.NAME`.
    pub field: String,
    pub kind: NoteKind,
    /// What the value was in the envelope, e.g. `timestamp (ms)`, `u32`, `list`.
    pub from: Cow<'static, str>,
    /// What the sink carries instead, e.g. `T (s) + header amqp.creation-time-ms`; for a
    /// drop, `nothing`.
    pub to: Cow<'static, str>,
    /// Why, in a few words.
    pub why: Cow<'static, str>,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Note { field, kind, from, to, why } = self;
        write!(f, "{field}: {} {from} → {to}: {why}", kind.name())
    }
}

/// The notes of one encoding. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    keep_conversions: bool,
    strict: bool,
    notes: Vec<Note>,
}

impl Ledger {
    /// Keeps coercions and drops only: what a running bridge needs.
    pub fn lossy() -> Ledger {
        Ledger::default()
    }

    /// Keeps every note, conversions included: what `portico explain` shows.
    pub fn all() -> Ledger {
        Ledger { keep_conversions: true, ..Ledger::default() }
    }

    /// Makes [`Ledger::refusal`] refuse a message with any lossy note (`strict: true`).
    pub fn strict(mut self, strict: bool) -> Ledger {
        self.strict = strict;
        self
    }

    /// Records a lossless change of type, unit, form or place.
    pub fn converted(
        &mut self,
        field: Field<'_>,
        from: &'static str,
        to: &'static str,
        why: &'static str,
    ) {
        if self.keep_conversions {
            self.push(field, NoteKind::Converted, from.into(), to.into(), why.into());
        }
    }

    /// Records a value carried with a loss.
    pub fn coerced(
        &mut self,
        field: Field<'_>,
        from: impl Into<Cow<'static, str>>,
        to: impl Into<Cow<'static, str>>,
        why: impl Into<Cow<'static, str>>,
    ) {
        self.push(field, NoteKind::Coerced, from.into(), to.into(), why.into());
    }

    /// Records a value not carried at all.
    pub fn dropped(
        &mut self,
        field: Field<'_>,
        from: impl Into<Cow<'static, str>>,
        why: impl Into<Cow<'static, str>>,
    ) {
        self.push(field, NoteKind::Dropped, from.into(), "nothing".into(), why.into());
    }

    fn push(
        &mut self,
        field: Field<'_>,
        kind: NoteKind,
        from: Cow<'static, str>,
        to: Cow<'static, str>,
        why: Cow<'static, str>,
    ) {
        self.notes.push(Note { field: field.to_string(), kind, from, to, why });
    }

    /// Every note kept, in the order the codec wrote them.
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// The coercions and drops.
    pub fn lossy_notes(&self) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(|n| n.kind.is_lossy())
    }

    /// For a strict ledger with a lossy note, the error that dead-letters the message
    /// (reason `lossy conversion`, naming the field); otherwise `None`.
    pub fn refusal(&self) -> Option<crate::connector::DeliveryError> {
        if !self.strict {
            return None;
        }
        let note = self.lossy_notes().next()?;
        Some(crate::connector::DeliveryError::Lossy(note.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lossy_ledger_keeps_no_conversions_and_allocates_nothing_for_them() {
        let mut ledger = Ledger::lossy();
        ledger.converted(Field::Property("creation_time"), "timestamp (ms)", "T (s)", "unit");
        assert!(ledger.notes().is_empty());
        assert_eq!(ledger.notes.capacity(), 0);
        ledger.coerced(Field::Property("priority"), "200", "9", "JMS priorities are 0-9");
        assert_eq!(ledger.notes().len(), 1);
    }

    #[test]
    fn notes_render_field_kind_from_to_and_why() {
        let mut ledger = Ledger::all();
        ledger.converted(Field::Header("attempt"), "u32", "l (i64)", "no unsigned tags");
        ledger.dropped(Field::Origin("tombstone"), "null value", "no null body");
        let text: Vec<String> = ledger.notes().iter().map(Note::to_string).collect();
        assert_eq!(
            text,
            [
                "headers.attempt: converted u32 → l (i64): no unsigned tags",
                "origin.tombstone: dropped null value → nothing: no null body",
            ]
        );
    }

    #[test]
    fn only_a_strict_ledger_with_a_lossy_note_refuses() {
        let mut lenient = Ledger::lossy();
        lenient.coerced(Field::Property("priority"), "200", "9", "clamped");
        assert!(lenient.refusal().is_none());

        let mut strict = Ledger::all().strict(true);
        strict.converted(Field::Header("n"), "u8", "s (i16)", "widened");
        assert!(strict.refusal().is_none(), "a conversion loses nothing");
        strict.coerced(Field::Property("priority"), "200", "9", "clamped");
        let error = strict.refusal().expect("refuses");
        assert_eq!(error.reason(), "lossy conversion");
        assert!(error.to_string().contains("properties.priority"), "{error}");
    }
}
