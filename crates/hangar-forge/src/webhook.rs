//! GitHub's webhook deliveries: the `X-Hub-Signature-256` check (HMAC-SHA256 of the raw
//! body, compared in constant time, before anything of the body is read) and the events
//! hangar acts on, read into [`Hook`].

use crate::RepoName;

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("verify the webhook delivery: it has no X-Hub-Signature-256 header")]
    Unsigned,
    #[error("verify the webhook delivery: its signature does not match")]
    BadSignature,
    #[error("read the `{event}` webhook delivery: {message}")]
    BadPayload { event: String, message: String },
}

/// Checks `signature` (the header's value, `sha256=<hex>`) against `body` under `secret`.
pub fn verify(secret: &[u8], body: &[u8], signature: Option<&str>) -> Result<(), WebhookError> {
    let _ = (secret, body, signature);
    todo!()
}

/// Where a comment was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentPlace {
    /// An issue's conversation.
    Issue,
    /// A pull request's conversation (`issue_comment` on a pull request).
    PullConversation,
    /// A line of a pull request's diff (`pull_request_review_comment`).
    PullReview,
}

/// A comment that was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub repo: RepoName,
    /// The issue's or the pull request's number.
    pub number: u64,
    pub place: CommentPlace,
    pub body: String,
    /// `author_association`: `OWNER`, `MEMBER`, `COLLABORATOR`, `CONTRIBUTOR`, `NONE`, ...
    pub association: String,
    /// The commenter's login.
    pub sender: String,
    /// The issue's or pull request's title and body.
    pub title: String,
    pub issue_body: String,
    /// The pull request's head branch, when the payload says it (`PullReview`).
    pub head: Option<String>,
}

/// A workflow run that completed with conclusion `failure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowFailure {
    pub repo: RepoName,
    pub run_id: u64,
    /// The workflow's name.
    pub workflow: String,
    pub head_branch: String,
    pub head_sha: String,
}

/// What a delivery asks of hangar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    Comment(Comment),
    WorkflowFailed(WorkflowFailure),
    /// An event or action hangar does not act on (`ping`, an edited comment, a
    /// successful run, ...), with the event's name and action for the log.
    Ignored { event: String, action: Option<String> },
}

/// Reads a verified delivery of event `event` (the `X-GitHub-Event` header).
pub fn parse(event: &str, body: &[u8]) -> Result<Hook, WebhookError> {
    let _ = (event, body);
    todo!()
}
