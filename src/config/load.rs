//! Loading and checking `bridges.yaml`.

use std::fmt;
use std::path::Path;

use super::check::Checker;
use super::env;
use super::file::File;
use super::model::Model;
use super::position::Positions;

/// One thing wrong with the file, pointing at its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub path: String,
    pub message: String,
}

/// Why a configuration could not be loaded: every problem found, in file order.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let path = if p.path.is_empty() { String::new() } else { format!(" {}:", p.path) };
            write!(f, "{}:{}:{}:{} {}", self.file, p.line, p.column, path, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, expands and checks the file at `path`.
pub fn load(path: &Path) -> Result<Model, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    load_str(&name, &text, |var| std::env::var(var).ok())
}

/// Expands, parses and checks `text`; `file` names it in errors.
pub fn load_str(
    file: &str,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Model, ConfigError> {
    let fail = |problems| ConfigError { file: file.to_owned(), problems };
    let text = env::expand(text, lookup).map_err(|errors| {
        fail(
            errors
                .into_iter()
                .map(|e| Problem {
                    line: e.line,
                    column: e.column,
                    path: String::new(),
                    message: e.message,
                })
                .collect(),
        )
    })?;
    let parsed = parse(&text).map_err(|p| fail(vec![p]))?;
    let positions = Positions::index(&text);
    let mut problems = Vec::new();
    for (path, at) in positions.duplicates() {
        let message = "written twice; the second would silently replace the first".to_owned();
        problems.push(Problem { line: at.line, column: at.column, path: path.clone(), message });
    }
    let mut checker = Checker { positions, problems };
    let model = checker.model(parsed);
    if checker.problems.is_empty() {
        Ok(model)
    } else {
        checker.problems.sort_by_key(|p| (p.line, p.column));
        Err(fail(checker.problems))
    }
}

fn parse(text: &str) -> Result<File, Problem> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let (line, column) = inner.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        // serde_yaml_ng prefixes its message with the path of the enclosing node and ends it
        // with the position; both are printed separately.
        let message = name_ranges(&strip_location(&inner.to_string()), &path);
        let message = match message.split_once(": ") {
            Some((head, tail)) if path.starts_with(head) => tail.to_owned(),
            _ => message,
        };
        Problem { line, column, path: if path == "." { String::new() } else { path }, message }
    })
}

/// serde names the Rust type a number did not fit ("expected u32"). Users need what the
/// field takes: the range the checks after parsing enforce, else the type's own range.
fn name_ranges(message: &str, path: &str) -> String {
    let types = [
        ("u16", format!("a whole number from 0 to {}", u16::MAX)),
        ("u32", format!("a whole number from 0 to {}", u32::MAX)),
        ("usize", format!("a whole number from 0 to {}", usize::MAX)),
        ("i32", format!("a whole number from {} to {}", i32::MIN, i32::MAX)),
        ("f64", "a number".to_owned()),
    ];
    let found = types.into_iter().find_map(|(rust, range)| {
        message.strip_suffix(&format!("expected {rust}")).map(|head| (head, range))
    });
    let Some((head, range)) = found else {
        return message.to_owned();
    };
    let rule = match path.rsplit('.').next().unwrap_or(path) {
        "prefetch" => format!("a whole number from 1 to {}", u16::MAX),
        "max_in_flight" => format!("a whole number from 1 to {}", super::check::MAX_IN_FLIGHT),
        "credit" | "confirm_window" | "max_attempts" => {
            format!("a whole number from 1 to {}", u32::MAX)
        }
        "partitions" => {
            format!("-1 (the broker's default) or a whole number from 1 to {}", i32::MAX)
        }
        _ => range,
    };
    format!("{head}expected {rule}")
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}
