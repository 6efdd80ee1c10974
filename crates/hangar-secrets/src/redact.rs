//! Replacing secret values in text that hangar stores or shows (log lines, errors, final
//! messages, diffs) with `[secret:NAME]`.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::NamedSecret;

/// Finds every value of a set of secrets; the longest wins where values overlap.
#[derive(Clone)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
    names: Vec<String>,
    /// `[secret:NAME]` for each name.
    labels: Vec<String>,
    longest: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({:?})", self.names)
    }
}

impl Redactor {
    pub fn new(secrets: &[NamedSecret]) -> Redactor {
        let names: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
        let matcher = (!secrets.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(secrets.iter().map(|s| s.value.expose()))
                .expect("a handful of literal patterns always build")
        });
        Redactor {
            matcher,
            labels: names.iter().map(|n| format!("[secret:{n}]")).collect(),
            names,
            longest: secrets
                .iter()
                .map(|s| s.value.expose().len())
                .max()
                .unwrap_or(0),
        }
    }

    /// A redactor that finds nothing.
    pub fn none() -> Redactor {
        Redactor::new(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// The length of the longest value (how far a streaming search must overlap).
    pub(crate) fn longest(&self) -> usize {
        self.longest
    }

    /// The names whose values occur in `bytes`, each once, in order of first occurrence.
    pub fn found(&self, bytes: &[u8]) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        if let Some(m) = &self.matcher {
            for hit in m.find_iter(bytes) {
                let name = self.names[hit.pattern().as_usize()].as_str();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.matcher {
            Some(m) if m.is_match(text) => {
                let with: Vec<String> =
                    self.names.iter().map(|n| format!("[secret:{n}]")).collect();
                Cow::Owned(m.replace_all(text, &with))
            }
            _ => Cow::Borrowed(text),
        }
    }

    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        self.replace_bytes(bytes, &self.labels)
    }

    /// Replaces each value with the matching entry of `with` (in the order of the
    /// secrets given to [`Redactor::new`]).
    pub fn replace_bytes<'a>(&self, bytes: &'a [u8], with: &[String]) -> Cow<'a, [u8]> {
        match &self.matcher {
            Some(m) if m.is_match(bytes) => Cow::Owned(m.replace_all_bytes(bytes, with)),
            _ => Cow::Borrowed(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    fn named(name: &str, value: &str) -> NamedSecret {
        NamedSecret {
            name: name.into(),
            value: Secret::new(value.as_bytes().to_vec()).unwrap(),
        }
    }

    fn check(secrets: &[NamedSecret], input: &str, expected: &str) {
        assert_eq!(Redactor::new(secrets).redact(input), expected, "{input}");
        assert_eq!(
            &*Redactor::new(secrets).redact_bytes(input.as_bytes()),
            expected.as_bytes()
        );
    }

    #[test]
    fn values_become_their_names() {
        let s = [named("TOKEN", "tok-123"), named("LONG", "tok-123456")];
        check(&s, "plain text", "plain text");
        check(&s, "auth tok-123 ok", "auth [secret:TOKEN] ok");
        check(&s, "tok-123456", "[secret:LONG]");
        check(&s, "tok-123tok-123", "[secret:TOKEN][secret:TOKEN]");
        check(&[], "tok-123", "tok-123");
        assert_eq!(
            Redactor::new(&s).found(b"a tok-123456 b tok-123"),
            ["LONG", "TOKEN"]
        );
    }
}
