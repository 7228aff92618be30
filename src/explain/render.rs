//! Printing explanations: aligned text for people, JSON for tools.

use serde_json::{Value as Json, json};

use super::{Change, Explanation, Outcome, Row};

/// Aligned text, one section per step.
pub fn text(explanation: &Explanation) -> String {
    let e = explanation;
    let mut out = String::new();
    out.push_str(&format!("Bridge   {}: {} → {}\n", e.bridge, e.source, e.sink));
    out.push_str(&format!("Message  {}\n", e.message));
    match &e.outcome {
        Outcome::Delivered { destination } => {
            out.push_str(&format!("Outcome  delivered to {destination}\n"));
        }
        Outcome::DeadLettered { stage, reason, error, destination } => {
            out.push_str(&format!("Outcome  DEAD-LETTERED at {stage}: {reason}\n"));
            out.push_str(&format!("         error: {error}\n"));
            out.push_str(&format!("         goes to {destination}\n"));
        }
    }
    out.push_str("\nAs read from the source\n");
    table(&mut out, ["FIELD", "TYPE", "VALUE"], e.read.iter().map(row_cells));
    if !e.sent.is_empty() {
        out.push_str(&format!("\nAs the sink sends it ({})\n", e.sink));
        table(&mut out, ["FIELD", "TYPE", "VALUE"], e.sent.iter().map(row_cells));
    }
    out.push_str("\nChanges\n");
    if e.changes.is_empty() {
        out.push_str("  none: every field crossed as it was\n");
    } else {
        table(
            &mut out,
            ["FIELD", "CHANGE", "FROM → TO", "WHY"],
            e.changes.iter().map(change_cells),
        );
    }
    out
}

fn row_cells(row: &Row) -> [String; 3] {
    [row.field.clone(), row.kind.clone(), row.value.clone()]
}

fn change_cells(change: &Change) -> [String; 4] {
    [
        change.field.clone(),
        change.change.clone(),
        format!("{} → {}", change.from, change.to),
        change.why.clone(),
    ]
}

/// Columns padded to their widest cell (up to a cap, so one long value does not push the
/// others off the screen); the last column is never padded.
fn table<const N: usize>(
    out: &mut String,
    head: [&str; N],
    rows: impl Iterator<Item = [String; N]>,
) {
    const CAP: usize = 40;
    let rows: Vec<[String; N]> = rows.collect();
    let mut widths = head.map(|h| h.chars().count());
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count().min(CAP));
        }
    }
    let head = head.map(str::to_owned);
    for row in std::iter::once(&head).chain(&rows) {
        let mut line = String::from(" ");
        for (i, cell) in row.iter().enumerate() {
            line.push(' ');
            line.push_str(cell);
            if i + 1 < N {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(&" ".repeat(pad + 1));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// One JSON object per explanation.
pub fn json(explanation: &Explanation) -> Json {
    let e = explanation;
    let rows = |rows: &[Row]| -> Json {
        rows.iter().map(|r| json!({"field": r.field, "type": r.kind, "value": r.value})).collect()
    };
    let outcome = match &e.outcome {
        Outcome::Delivered { destination } => {
            json!({"result": "delivered", "destination": destination})
        }
        Outcome::DeadLettered { stage, reason, error, destination } => json!({
            "result": "dead-lettered",
            "stage": stage,
            "reason": reason,
            "error": error,
            "destination": destination,
        }),
    };
    let changes: Json = e
        .changes
        .iter()
        .map(|c| {
            json!({"field": c.field, "change": c.change, "from": c.from, "to": c.to, "why": c.why})
        })
        .collect();
    json!({
        "bridge": e.bridge,
        "message": e.message,
        "source": e.source,
        "sink": e.sink,
        "outcome": outcome,
        "read": rows(&e.read),
        "sent": rows(&e.sent),
        "changes": changes,
    })
}
