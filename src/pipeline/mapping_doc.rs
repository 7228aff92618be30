//! docs/mapping.md is the contract of the translation layer: every row id in it must be
//! named by a test (a Rust test, after `#[cfg(test)]` or in a test-only module, or a test
//! under `tests/`). A row that no test names is a promise nobody checks.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The ids in the first column of the tables (`| K2R-07 | …`).
fn row_ids(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|line| line.strip_prefix("| ")?.split(" |").next())
        .filter(|cell| is_row_id(cell))
        .map(str::to_owned)
        .collect()
}

fn is_row_id(cell: &str) -> bool {
    let b = cell.as_bytes();
    b.len() == 6
        && b[0].is_ascii_uppercase()
        && b[1] == b'2'
        && b[2].is_ascii_uppercase()
        && b[3] == b'-'
        && b[4..].iter().all(u8::is_ascii_digit)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("rs" | "py")) {
            out.push(path);
        }
    }
}

/// The text of every test: files under `tests/`, source files from `#[cfg(test)]` on, and
/// whole modules that a `#[cfg(test)] mod NAME;` line compiles only for tests.
fn test_text() -> String {
    let mut paths = Vec::new();
    files(&root().join("tests"), &mut paths);
    let mut text = String::new();
    for path in &paths {
        text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
    }
    let mut sources = Vec::new();
    files(&root().join("src"), &mut sources);
    for path in &sources {
        let source = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(at) = source.find("#[cfg(test)]") {
            text.push_str(&source[at..]);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        for module in source.split("#[cfg(test)]\nmod ").skip(1) {
            let name = module.split(';').next().unwrap_or_default();
            let file = dir.join(format!("{name}.rs"));
            text.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
    }
    text
}

#[test]
fn every_row_of_the_mapping_is_named_by_a_test() {
    let doc = std::fs::read_to_string(root().join("docs/mapping.md")).expect("docs/mapping.md");
    let ids = row_ids(&doc);
    assert!(ids.len() > 50, "the tables were not found: {ids:?}");
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<&String> = ids.iter().filter(|id| !seen.insert(*id)).collect();
    assert!(twice.is_empty(), "row ids used twice in docs/mapping.md: {twice:?}");

    let tests = test_text().replace(&doc, "");
    let missing: Vec<&String> = ids.iter().filter(|id| !tests.contains(id.as_str())).collect();
    assert!(missing.is_empty(), "rows of docs/mapping.md no test names: {missing:?}");
}

#[test]
fn row_ids_are_read_from_the_first_column_only() {
    let doc = "| id | a |\n|---|---|\n| K2R-07 | R2K-01 in text |\n| X | K2A-01 |\n";
    assert_eq!(row_ids(doc), ["K2R-07"]);
}
