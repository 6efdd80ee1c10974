//! The forges hangar opens pull requests on and hears from. [`Forge`] is the one trait a
//! forge implements (GitHub and GitHub Enterprise Server: [`github::GitHub`]); `webhook`
//! checks a delivery's signature and reads it into a typed [`webhook::Hook`]; `mention`
//! reads "@hangar ..." out of a comment; `text` writes what hangar posts. No I/O but the
//! forge's HTTP API; nothing here knows of tasks, the store or sandboxes.

pub mod github;
pub mod mention;
pub mod text;
pub mod webhook;

use std::fmt;
use std::future::Future;

/// A repository on a forge, `owner/name`, parsed then trusted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    owner: String,
    name: String,
}

impl RepoName {
    /// Parses `owner/name`: two non-empty parts of ASCII letters, digits, `-`, `_`, `.`
    /// (not `.` or `..`).
    pub fn parse(s: &str) -> Result<RepoName, ForgeError> {
        let bad = |why: &str| ForgeError::BadRepoName {
            name: s.to_string(),
            why: why.to_string(),
        };
        let (owner, name) = s
            .split_once('/')
            .ok_or_else(|| bad("is not `owner/name`"))?;
        for part in [owner, name] {
            if part.is_empty() || part == "." || part == ".." {
                return Err(bad("has an empty or dot-only part"));
            }
            if !part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(bad("may hold only letters, digits, `-`, `_` and `.`"));
            }
        }
        Ok(RepoName {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether two names are the same repository (GitHub compares them ignoring case).
    pub fn same(&self, other: &RepoName) -> bool {
        self.owner.eq_ignore_ascii_case(&other.owner) && self.name.eq_ignore_ascii_case(&other.name)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A pull request as the forge reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    /// Its page (`html_url`).
    pub url: String,
    /// The head branch's name.
    pub head: String,
    pub base: String,
}

/// A pull request to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPull {
    pub title: String,
    pub body: String,
    /// The branch holding the change, in the same repository.
    pub head: String,
    pub base: String,
    pub draft: bool,
}

/// What a webhook's handler needs to know of a pull request it only has the number of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullInfo {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    /// The head branch's repository; `None` when it was deleted. A fork's branch is not
    /// in the base repository, so hangar cannot check it out from there.
    pub head_repo: Option<RepoName>,
    pub base: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    pub default_branch: String,
}

/// A failed job of a workflow run, with the end of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedJob {
    pub name: String,
    /// The log's last lines (at most the number asked for), or empty when the forge
    /// kept none.
    pub log_tail: String,
}

/// One forge's API, as hangar uses it. Every implementation passes the conformance
/// suite in `tests/conformance.rs`.
pub trait Forge: Send + Sync {
    /// The repository's default branch.
    fn repository(
        &self,
        repo: &RepoName,
    ) -> impl Future<Output = Result<RepoInfo, ForgeError>> + Send;

    /// The open pull request from `head` into `base`, if there is one.
    fn find_pull(
        &self,
        repo: &RepoName,
        head: &str,
        base: &str,
    ) -> impl Future<Output = Result<Option<PullRequest>, ForgeError>> + Send;

    /// Opens a pull request. One that already exists for the same head and base is
    /// [`ForgeError::PullExists`]: the caller then finds it.
    fn open_pull(
        &self,
        repo: &RepoName,
        pull: &NewPull,
    ) -> impl Future<Output = Result<PullRequest, ForgeError>> + Send;

    /// A pull request by number.
    fn pull(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> impl Future<Output = Result<PullInfo, ForgeError>> + Send;

    /// Comments on an issue or a pull request's conversation.
    fn comment(
        &self,
        repo: &RepoName,
        number: u64,
        body: &str,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send;

    /// Posts a review on a pull request (a comment review: never an approval).
    fn review(
        &self,
        repo: &RepoName,
        number: u64,
        body: &str,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send;

    /// The failed jobs of a workflow run, each with its log's last `tail_lines` lines.
    fn failed_jobs(
        &self,
        repo: &RepoName,
        run_id: u64,
        tail_lines: usize,
    ) -> impl Future<Output = Result<Vec<FailedJob>, ForgeError>> + Send;
}

/// Each message reads after "failed to ...".
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("read the repository name `{name}`: it {why}")]
    BadRepoName { name: String, why: String },
    #[error("use the forge API URL `{url}`: {why}")]
    BadUrl { url: String, why: String },
    #[error("{what}: the forge cannot be reached: {message}")]
    Unreachable { what: String, message: String },
    /// The forge refused the request (a 4xx other than a rate limit), with its message.
    #[error("{what}: the forge answered {status}: {message}")]
    Rejected {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: the forge's rate limit held after {tries} tries (it asked to wait {retry_after_s} s)")]
    RateLimited {
        what: String,
        tries: u32,
        retry_after_s: u64,
    },
    #[error("{what}: the forge failed ({status}) after {tries} tries")]
    Failing {
        what: String,
        status: u16,
        tries: u32,
    },
    #[error("{what}: the forge's answer could not be read: {message}")]
    BadAnswer { what: String, message: String },
    #[error("open the pull request from `{head}` into `{base}`: one is already open")]
    PullExists { head: String, base: String },
}
