//! Replacing secret values in text that hangar stores or shows (log lines, errors, final
//! messages, diffs) with `[secret:NAME]`: the values and their encodings (see
//! [`crate::forms`]).

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::forms::forms;
use crate::NamedSecret;

/// Finds every value of a set of secrets, in each of its forms; the longest wins where
/// they overlap.
#[derive(Clone)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
    /// For each pattern of the matcher, the index of its secret.
    owner: Vec<usize>,
    names: Vec<String>,
    /// `[secret:NAME]` for each name.
    labels: Vec<String>,
    /// The longest pattern.
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
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut owner = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            for form in forms(s.value.expose()) {
                patterns.push(form);
                owner.push(i);
            }
        }
        let matcher = (!secrets.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .expect("a few dozen literal patterns per secret always build")
        });
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        Redactor {
            matcher,
            owner,
            labels: names.iter().map(|n| format!("[secret:{n}]")).collect(),
            names,
            longest,
        }
    }

    /// A redactor that finds nothing.
    pub fn none() -> Redactor {
        Redactor::new(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// The length of the longest form of a value (how far a streaming search must overlap).
    pub(crate) fn longest(&self) -> usize {
        self.longest
    }

    /// The names whose values occur in `bytes`, each once, in order of first occurrence.
    pub fn found(&self, bytes: &[u8]) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        if let Some(m) = &self.matcher {
            for hit in m.find_iter(bytes) {
                let name = self.names[self.owner[hit.pattern().as_usize()]].as_str();
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
                let with: Vec<&str> = self.owner.iter().map(|&i| &*self.labels[i]).collect();
                Cow::Owned(m.replace_all(text, &with))
            }
            _ => Cow::Borrowed(text),
        }
    }

    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        self.replace_bytes(bytes, &self.labels)
    }

    /// Replaces each value, in any of its forms, with the matching entry of `with` (in the
    /// order of the secrets given to [`Redactor::new`]).
    pub fn replace_bytes<'a>(&self, bytes: &'a [u8], with: &[String]) -> Cow<'a, [u8]> {
        match &self.matcher {
            Some(m) if m.is_match(bytes) => {
                let with: Vec<&[u8]> = self.owner.iter().map(|&i| with[i].as_bytes()).collect();
                Cow::Owned(m.replace_all_bytes(bytes, &with))
            }
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

    #[test]
    fn encoded_values_become_their_names_too() {
        let s = [named("KEY", "k3y/v4lue?9"), named("PIN", "1234")];
        // base64 of `k3y/v4lue?9` and of `u:k3y/v4lue?9`, whose edges depend on the
        // neighbouring bytes: they stay, the value's own characters go.
        check(&s, "a=azN5L3Y0bHVlPzk=", "a=[secret:KEY]k=");
        check(&s, "Basic dTprM3kvdjRsdWU/OQ==", "Basic dTp[secret:KEY]Q==");
        check(&s, "Basic dTprM3kvdjRsdWU_OQ", "Basic dTp[secret:KEY]Q");
        check(&s, "6b33792f76346c75653f39", "[secret:KEY]");
        check(&s, "6B33792F76346C75653F39", "[secret:KEY]");
        check(&s, "?key=k3y%2Fv4lue%3F9&x", "?key=[secret:KEY]&x");
        check(&s, "%6b%33%79%2f%76%34%6c%75%65%3f%39", "[secret:KEY]");
        check(&s, "9?eul4v/y3k", "[secret:KEY]");
        check(
            &s,
            "k\x003\x00y\x00/\x00v\x004\x00l\x00u\x00e\x00?\x009\x00.",
            "[secret:KEY].",
        );
        check(
            &s,
            "\x00k\x003\x00y\x00/\x00v\x004\x00l\x00u\x00e\x00?\x009",
            "[secret:KEY]",
        );
        // A short value is matched literally only: its hex is ordinary text.
        check(
            &s,
            "pin 1234, 31323334, 4321",
            "pin [secret:PIN], 31323334, 4321",
        );
    }
}
