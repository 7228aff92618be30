//! Property names a JMS consumer can read.
//!
//! JMS exposes application properties through Java getters, so their names must be Java
//! identifiers and not words of the JMS selector grammar. Other names travel under a legal
//! stand-in, with the original recorded beside it so that it comes back on the way in.

/// JMS property names are Java identifiers, and not JMS's own reserved words.
pub(super) fn is_java_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let start = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$');
    let reserved = ["NULL", "TRUE", "FALSE", "NOT", "AND", "OR", "BETWEEN", "LIKE", "IN", "IS"]
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name));
    start && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$') && !reserved
}

/// A JMS-legal stand-in for `name`: illegal characters become `_`, and a suffix keeps it
/// apart from names already `taken`. The original is recorded beside it and restored.
pub(super) fn jms_name(name: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut base: String =
        name.chars().map(|c| if c.is_alphanumeric() || c == '$' { c } else { '_' }).collect();
    if !base.starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '$') {
        base.insert(0, '_');
    }
    let mut candidate = base.clone();
    let mut n = 1;
    while taken(&candidate) || !is_java_identifier(&candidate) {
        candidate = format!("{base}_{n}");
        n += 1;
    }
    candidate
}
