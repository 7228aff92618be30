//! A URL, and client options, whose passwords never reach a log, an error or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

/// A broker URL that may carry credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The full URL, credentials included: only for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, safe to log. The whole string is one
    /// URL, so its password is all between the user's `:` and the last `@`, whatever it holds.
    pub fn redacted(&self) -> String {
        match password_span(&self.0) {
            Some((from, to)) => format!("{}***{}", &self.0[..from], &self.0[to..]),
            None => redact(&self.0),
        }
    }
}

/// Where the password of the URL at the start of `text` lies: after the first `:` that
/// follows `scheme://`, up to the last `@`. A password may hold any character (`/`, `?`,
/// `#` and `@` included) when it was not percent-encoded; taking too much is safe.
fn password_span(text: &str) -> Option<(usize, usize)> {
    let start = text.find("://")? + 3;
    let at = start + text[start..].rfind('@')?;
    let colon = start + text[start..at].find(':')?;
    Some((colon + 1, at))
}

/// Replaces the password of every `scheme://user:password@host` in `text` with `***`, and
/// of anything shaped like `user:password@host` even when the URL around it is malformed.
pub fn redact(text: &str) -> String {
    mask_userinfo(&redact_urls(text))
}

/// Masks `:secret@` inside any whitespace-separated word that still holds one.
fn mask_userinfo(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| match (word.rfind('@'), word.find(':')) {
            (Some(at), Some(_)) => {
                let head = &word[..at];
                match head.rfind(':') {
                    Some(colon)
                        if &head[colon + 1..] != "***" && !head[colon + 1..].contains('/') =>
                    {
                        format!("{}:***{}", &head[..colon], &word[at..])
                    }
                    _ => word.to_owned(),
                }
            }
            _ => word.to_owned(),
        })
        .collect()
}

/// Masks the password of each `scheme://` URL in `text`, a URL ending at whitespace or a
/// quote: a raw `/`, `?` or `#` in a password must not end it early.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let url_end = rest[scheme..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .map_or(rest.len(), |end| scheme + end);
        let url = &rest[..url_end];
        match password_span(url) {
            Some((from, to)) => {
                out.push_str(&url[..from]);
                out.push_str("***");
                out.push_str(&url[to..]);
            }
            None => out.push_str(url),
        }
        rest = &rest[url_end..];
    }
    out.push_str(rest);
    out
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretUrl)
    }
}

/// Client properties (librdkafka's), some of which are secrets: `sasl.password`, key
/// passwords, private keys, OAuth client secrets. `Debug` shows those as `***`, and
/// [`SecretOptions::redact`] takes their values out of any text.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretOptions(BTreeMap<String, String>);

impl SecretOptions {
    /// Whether the property `key` holds a secret.
    pub fn is_secret(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        ["password", "secret", "key.pem", "oauthbearer.config"].iter().any(|s| key.contains(s))
    }

    /// `text` with the value of every secret property replaced by `***`: librdkafka repeats
    /// a property's value in its errors about it.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (_, value) in self.0.iter().filter(|(k, v)| Self::is_secret(k) && !v.is_empty()) {
            text = text.replace(value.as_str(), "***");
        }
        text
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const N: usize> From<[(&str, &str); N]> for SecretOptions {
    fn from(pairs: [(&str, &str); N]) -> SecretOptions {
        SecretOptions(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }
}

impl fmt::Debug for SecretOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.iter().map(|(k, v)| (k, if Self::is_secret(k) { "***" } else { v }));
        f.debug_map().entries(shown).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_kafka_options_are_redacted_everywhere() {
        let options = SecretOptions::from([
            ("sasl.password", "s3cret"),
            ("ssl.key.password", "k3y"),
            ("sasl.username", "bob"),
            ("security.protocol", "SASL_SSL"),
        ]);
        let debug = format!("{options:?}");
        assert!(!debug.contains("s3cret") && !debug.contains("k3y"), "{debug}");
        assert!(debug.contains(r#""sasl.username": "bob""#), "{debug}");
        assert!(debug.contains(r#""sasl.password": "***""#), "{debug}");
        let error = "Client config error: Invalid value sasl.password s3cret (k3y)";
        assert_eq!(
            options.redact(error),
            "Client config error: Invalid value sasl.password *** (***)"
        );
        assert_eq!(options.redact("bob uses SASL_SSL"), "bob uses SASL_SSL");
    }

    #[test]
    fn passwords_in_malformed_urls_are_redacted_too() {
        assert_eq!(
            redact("amqp:/bob:s3cret@127.0.0.1:5673 is bad"),
            "amqp:/bob:***@127.0.0.1:5673 is bad"
        );
        assert_eq!(redact("bob:pw@host"), "bob:***@host");
        assert_eq!(redact("amqp//bob:pw@h/v"), "amqp//bob:***@h/v");
        assert_eq!(redact("no secrets: here"), "no secrets: here");
    }

    #[test]
    fn passwords_the_url_cannot_hold_are_redacted_too() {
        // A raw `/` ends the URL's authority early: the password must go all the same.
        let url = SecretUrl::new("amqp://guest:sec/ret9@127.0.0.1:5672/%2f");
        assert_eq!(url.redacted(), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(
            redact("cannot connect: amqp://guest:sec/ret9@h:5672/%2f: invalid port number"),
            "cannot connect: amqp://guest:***@h:5672/%2f: invalid port number"
        );
        assert_eq!(redact("amqp://u:a?b#c@h/v"), "amqp://u:***@h/v");
        // A whole URL is known to be one: spaces and quotes in its password go too.
        let url = SecretUrl::new("amqp://gu est:s e\"cr=et9@h:5672");
        assert_eq!(url.redacted(), "amqp://gu est:***@h:5672");
        // Nothing that only looks like a port or a path is taken for a password.
        assert_eq!(redact("amqp://h:5672/v and bob@example"), "amqp://h:5672/v and bob@example");
    }

    #[test]
    fn passwords_are_redacted_everywhere() {
        let url = SecretUrl::new("amqp://guest:s3cret@127.0.0.1:5672/%2f");
        assert_eq!(url.redacted(), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(!format!("{url}").contains("s3cret"));
        assert_eq!(redact("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(
            redact("failed at amqps://u:p@h/v and more"),
            "failed at amqps://u:***@h/v and more"
        );
    }
}
