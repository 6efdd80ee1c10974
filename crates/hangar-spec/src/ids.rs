//! Identifier newtypes: a value of these types has already been checked.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(String);

/// An environment's name: lowercase letters, digits, `.`, `_` and `-`, at most 63.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvName(String);

impl EnvName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EnvName {
    type Err = IdError;

    fn from_str(s: &str) -> Result<EnvName, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(EnvName(s.to_string()))
        } else {
            Err(IdError(format!(
                "`{s}` is not an environment name (lowercase letters, digits, `.`, `_`, `-`; \
                 at most 63, starting with a letter or digit)"
            )))
        }
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl Serialize for EnvName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A workspace's name: 1 to 40 of a-z, 0-9 and `-`, not starting with `-`. A workspace
/// holds its environments, secrets, tasks and snapshots; a token grants one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workspace(String);

impl Workspace {
    /// The local admin's workspace (the Unix socket without a token).
    pub const DEFAULT: &'static str = "default";

    pub fn default_workspace() -> Workspace {
        Workspace(Workspace::DEFAULT.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A workspace reads as its name wherever a query wants one.
impl std::ops::Deref for Workspace {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Workspace {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Workspace, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 40
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Workspace(s.to_string()))
        } else {
            Err(IdError(format!(
                "`{s}` is not a workspace name (1 to 40 of a-z, 0-9 and `-`, not starting \
                 with `-`)"
            )))
        }
    }
}

impl fmt::Display for Workspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// A task's id: 12 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(String);

const TASK_ID_LEN: usize = 12;

impl TaskId {
    pub fn random() -> TaskId {
        let n: u64 = rand::rng().random();
        TaskId(format!("{:012x}", n & 0xffff_ffff_ffff))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` could be the start of a task id (what a user may type).
    pub fn is_prefix(s: &str) -> bool {
        !s.is_empty() && s.len() <= TASK_ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

impl FromStr for TaskId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<TaskId, IdError> {
        if s.len() == TASK_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(TaskId(s.to_string()))
        } else {
            Err(IdError(format!(
                "`{s}` is not a task id (12 lowercase hex digits)"
            )))
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        for ok in ["payments", "a", "web-2", "x.y_z"] {
            assert!(ok.parse::<EnvName>().is_ok(), "{ok}");
        }
        for bad in ["", "Payments", "-x", "a b", "a/b", &"x".repeat(64)] {
            assert!(bad.parse::<EnvName>().is_err(), "{bad}");
        }
        let id = TaskId::random();
        assert_eq!(id.as_str().parse::<TaskId>().unwrap(), id);
        assert!("3F2A".parse::<TaskId>().is_err());
        assert!(TaskId::is_prefix("3f2a"));
        assert!(!TaskId::is_prefix("zz"));
        for ok in ["default", "team-a", "a", "0x", &"w".repeat(40)] {
            assert_eq!(ok.parse::<Workspace>().unwrap().as_str(), ok);
        }
        for bad in ["", "-a", "Team", "a_b", "a b", "a/b", &"w".repeat(41)] {
            assert!(bad.parse::<Workspace>().is_err(), "{bad}");
        }
        assert_eq!(Workspace::default_workspace().as_str(), Workspace::DEFAULT);
    }

    /// Regression: `hangar list`'s STATUS column was misaligned, since Display ignored
    /// the table's width.
    #[test]
    fn names_ids_and_words_fill_a_table_column() {
        let env: EnvName = "web".parse().unwrap();
        assert_eq!(format!("[{env:<5}]"), "[web  ]");
        assert_eq!(format!("[{:<7}]", crate::TaskStatus::Ready), "[ready  ]");
        let id = TaskId::random();
        assert_eq!(format!("{id:<14}|").len(), 15);
    }
}
