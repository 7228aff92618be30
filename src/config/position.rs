//! Where each field of a YAML document starts, so that checks made after parsing can point
//! at a line and column. Paths are written as serde_path_to_error writes them:
//! `bridges[0].sink.topic`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Path → position of every node in the document, and the keys written twice in a mapping
/// (YAML parsers keep the last silently; a repeated connection name is a mistake).
#[derive(Debug, Default)]
pub struct Positions(HashMap<String, Position>, Vec<(String, Position)>);

impl Positions {
    /// Indexes `text`. A document the YAML parser refuses yields an empty index; the
    /// structural parse reports that error with its own position.
    pub fn index(text: &str) -> Positions {
        let mut indexer = Indexer::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut indexer, false).is_err() {
            return Positions::default();
        }
        Positions(indexer.found, indexer.duplicates)
    }

    /// Keys that appear twice in one mapping: their path and the second position.
    pub fn duplicates(&self) -> &[(String, Position)] {
        &self.1
    }

    /// The position of `path`, or of its nearest indexed parent.
    pub fn of(&self, path: &str) -> Position {
        let mut path = path;
        loop {
            if let Some(position) = self.0.get(path) {
                return *position;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return Position { line: 1, column: 1 },
            }
        }
    }
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, next: usize },
}

#[derive(Default)]
struct Indexer {
    stack: Vec<Frame>,
    found: HashMap<String, Position>,
    duplicates: Vec<(String, Position)>,
}

impl Indexer {
    /// The path of the node that starts now, or `None` when the scalar is a mapping key.
    fn node_path(&mut self, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Sequence { path, next }) => {
                let node = format!("{path}[{next}]");
                *next += 1;
                Some(node)
            }
            Some(Frame::Mapping { path, key }) => match key.take() {
                Some(key) if path.is_empty() => Some(key),
                Some(key) => Some(format!("{path}.{key}")),
                None => {
                    *key = Some(scalar.unwrap_or_default().to_owned());
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, event: Event, mark: Marker) {
        // yaml-rust2 counts columns from 0 whatever its docs say; lines from 1.
        let position = Position { line: mark.line(), column: mark.col() + 1 };
        match event {
            Event::Scalar(value, ..) => {
                let key_of = match self.stack.last() {
                    Some(Frame::Mapping { path, key: None }) if path.is_empty() => {
                        Some(value.clone())
                    }
                    Some(Frame::Mapping { path, key: None }) => Some(format!("{path}.{value}")),
                    _ => None,
                };
                match self.node_path(Some(&value)) {
                    Some(path) => {
                        self.found.insert(path, position);
                    }
                    None => {
                        if let Some(key) = key_of.filter(|k| self.found.contains_key(k)) {
                            self.duplicates.push((key, position));
                        }
                    }
                }
            }
            Event::MappingStart(..) => {
                let path = self.node_path(None).unwrap_or_default();
                self.found.insert(path.clone(), position);
                self.stack.push(Frame::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(None).unwrap_or_default();
                self.found.insert(path.clone(), position);
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                self.node_path(None);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_written_twice() {
        let positions = Positions::index("a:\n  x: 1\n  x: 2\nb: 3\n");
        assert_eq!(positions.duplicates(), [("a.x".to_owned(), Position { line: 3, column: 3 })]);
    }

    #[test]
    fn indexes_nested_mappings_and_sequences() {
        let text = "a: 1\nbridges:\n  - name: x\n    sink: { topic: t }\n";
        let positions = Positions::index(text);
        assert_eq!(positions.of("a"), Position { line: 1, column: 4 });
        assert_eq!(positions.of("bridges[0].name"), Position { line: 3, column: 11 });
        assert_eq!(positions.of("bridges[0].sink.topic"), Position { line: 4, column: 20 });
        assert_eq!(positions.of("bridges[0].sink.absent"), Position { line: 4, column: 11 });
    }
}
