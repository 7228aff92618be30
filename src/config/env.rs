//! `${VAR}` and `${VAR:-default}` expansion, done on the text before parsing so that any
//! field can take a value from the environment.

/// An expansion that could not be done.
#[derive(Debug, PartialEq)]
pub struct EnvError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Expands every `${NAME}` / `${NAME:-default}` in `text` using `lookup`. `$${` is a literal
/// `${`. Expanded values may not contain a newline, so line numbers stay those of the file.
pub fn expand(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<EnvError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        let mut column = 1;
        while let Some(at) = rest.find("${") {
            if rest[..at].ends_with('$') {
                out.push_str(&rest[..at - 1]);
                out.push_str("${");
                column += at + 2;
                rest = &rest[at + 2..];
                continue;
            }
            out.push_str(&rest[..at]);
            let error =
                |message: String| EnvError { line: index + 1, column: column + at, message };
            let Some(end) = rest[at..].find('}') else {
                errors.push(error("unclosed '${': add the closing '}'".to_owned()));
                rest = "";
                break;
            };
            let inner = &rest[at + 2..at + end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            match (valid, lookup(name).filter(|v| !v.is_empty()).or(default.map(str::to_owned))) {
                (false, _) => errors.push(error(format!("invalid variable name {name:?}"))),
                (true, Some(value)) if value.contains('\n') => {
                    errors.push(error(format!("${{{name}}} holds a newline; use a one-line value")))
                }
                (true, Some(value)) => out.push_str(&value),
                (true, None) => errors.push(error(format!(
                    "environment variable {name} is not set; set it or write ${{{name}:-default}}"
                ))),
            }
            column += at + end + 1;
            rest = &rest[at + end + 1..];
        }
        out.push_str(rest);
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOST").then(|| "rabbit".to_owned())
    }

    #[test]
    fn expands_values_and_defaults() {
        let text = "a: ${HOST}\nb: ${PORT:-5672}\nc: $${LITERAL}\n";
        assert_eq!(expand(text, env).as_deref(), Ok("a: rabbit\nb: 5672\nc: ${LITERAL}\n"));
    }

    #[test]
    fn reports_unset_variables_with_their_position() {
        let errors = expand("x: 1\nurl: ${MISSING}\n", env).expect_err("unset");
        assert_eq!((errors[0].line, errors[0].column), (2, 6));
        assert!(errors[0].message.contains("MISSING is not set"));
    }
}
