//! Secrets for hangar: the [`Secret`] value type (never printed, logged or serialized), the
//! installation's [`Keyring`] (an age identity in a 0600 file) that encrypts values at rest
//! and derives keyed hashes and placeholders, [`Redactor`] for stored text, and the leak
//! [`scan`] of a directory. Both find a value in its encodings too (base64, hex,
//! percent-encoding, UTF-16, reversed), and the scan reads names, extended attributes and
//! git objects as well as contents.

mod forms;
mod git;
mod keyring;
mod redact;
mod scan;

use std::fmt;
use std::path::PathBuf;

pub use forms::MIN_DERIVED_LEN;
pub use git::{PackError, PackedId};
pub use keyring::Keyring;
pub use redact::Redactor;
pub use scan::{scan, Leak, Place, ScanMode};

/// The shortest value hangar accepts: shorter ones cannot be redacted without mangling
/// ordinary text.
pub const MIN_SECRET_LEN: usize = 4;

/// A secret value. It has no `Display`, no `Serialize` and a `Debug` that shows nothing,
/// so it cannot reach a log or a response by accident; [`Secret::expose`] is the one way
/// to its bytes. The memory is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) zeroize::Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes a value; one trailing newline (as `echo` and editors leave) is dropped.
    pub fn new(mut value: Vec<u8>) -> Result<Secret, SecretError> {
        if value.ends_with(b"\n") {
            value.pop();
            if value.ends_with(b"\r") {
                value.pop();
            }
        }
        let secret = Secret(zeroize::Zeroizing::new(value));
        if secret.0.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                min: MIN_SECRET_LEN,
            });
        }
        if std::str::from_utf8(&secret.0).is_err() || secret.0.contains(&0) {
            return Err(SecretError::NotText);
        }
        Ok(secret)
    }

    /// The value's bytes, for the one place that must use them (an exec's environment,
    /// the proxy's header).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text (it was checked to be UTF-8 without NUL when taken).
    pub fn expose_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A secret with its name, as an environment declares it.
#[derive(Debug, Clone)]
pub struct NamedSecret {
    pub name: String,
    pub value: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to use the secret key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("failed to scrub a secret from a name: {} exists", path.display())]
    ScrubExists { path: PathBuf },
    #[error("failed to read the git pack {}: {source}", path.display())]
    Pack {
        path: PathBuf,
        #[source]
        source: git::PackError,
    },
    #[error("failed to decrypt secret `{name}`: {reason}")]
    Decrypt { name: String, reason: String },
    #[error("failed to encrypt secret `{name}`: {reason}")]
    Encrypt { name: String, reason: String },
    #[error(
        "failed to take the secret: it is shorter than {min} bytes, too short to redact from logs"
    )]
    TooShort { min: usize },
    #[error("failed to take the secret: it is not UTF-8 text without NUL bytes, which an environment variable needs")]
    NotText,
}

pub type Result<T, E = SecretError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> SecretError {
    let path = path.into();
    move |source| SecretError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shows_nothing_and_loses_one_trailing_newline() {
        let s = Secret::new(b"hunter22\n".to_vec()).unwrap();
        assert_eq!(s.expose(), b"hunter22");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        let named = NamedSecret {
            name: "T".into(),
            value: s,
        };
        assert!(!format!("{named:?}").contains("hunter"));
        assert_eq!(
            Secret::new(b"ab\r\n".to_vec()).unwrap_err().to_string(),
            "failed to take the secret: it is shorter than 4 bytes, too short to redact from logs"
        );
        assert!(matches!(
            Secret::new(b"ab\0cd".to_vec()),
            Err(SecretError::NotText)
        ));
        assert!(matches!(
            Secret::new(b"ab\xffcd".to_vec()),
            Err(SecretError::NotText)
        ));
        assert_eq!(Secret::new(b"two\n\n".to_vec()).unwrap().expose(), b"two\n");
    }
}
