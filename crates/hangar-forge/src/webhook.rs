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
/// An empty secret verifies nothing: anyone could sign with it.
pub fn verify(secret: &[u8], body: &[u8], signature: Option<&str>) -> Result<(), WebhookError> {
    use hmac::{Hmac, Mac};
    let signature = signature.ok_or(WebhookError::Unsigned)?;
    let hex = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(WebhookError::BadSignature)?;
    let expected = hex::decode(hex).map_err(|_| WebhookError::BadSignature)?;
    if secret.is_empty() {
        return Err(WebhookError::BadSignature);
    }
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::BadSignature)
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
    Ignored {
        event: String,
        action: Option<String>,
    },
}

/// Reads a verified delivery of event `event` (the `X-GitHub-Event` header).
pub fn parse(event: &str, body: &[u8]) -> Result<Hook, WebhookError> {
    let bad = |e: serde_json::Error| WebhookError::BadPayload {
        event: event.to_string(),
        message: e.to_string(),
    };
    let envelope: wire::Envelope = serde_json::from_slice(body).map_err(bad)?;
    let ignored = |action: Option<String>| Hook::Ignored {
        event: event.to_string(),
        action,
    };
    let repo = |full_name: &str| {
        RepoName::parse(full_name).map_err(|e| WebhookError::BadPayload {
            event: event.to_string(),
            message: format!("its `repository.full_name`: {e}"),
        })
    };
    match (event, envelope.action.as_deref()) {
        ("issue_comment", Some("created")) => {
            let d: wire::IssueComment = serde_json::from_slice(body).map_err(bad)?;
            let place = if d.issue.pull_request.is_some() {
                CommentPlace::PullConversation
            } else {
                CommentPlace::Issue
            };
            Ok(Hook::Comment(Comment {
                repo: repo(&d.repository.full_name)?,
                number: d.issue.number,
                place,
                body: d.comment.body.unwrap_or_default(),
                association: d.comment.author_association,
                sender: d.comment.user.login,
                title: d.issue.title,
                issue_body: d.issue.body.unwrap_or_default(),
                head: None,
            }))
        }
        ("pull_request_review_comment", Some("created")) => {
            let d: wire::ReviewComment = serde_json::from_slice(body).map_err(bad)?;
            Ok(Hook::Comment(Comment {
                repo: repo(&d.repository.full_name)?,
                number: d.pull_request.number,
                place: CommentPlace::PullReview,
                body: d.comment.body.unwrap_or_default(),
                association: d.comment.author_association,
                sender: d.comment.user.login,
                title: d.pull_request.title,
                issue_body: d.pull_request.body.unwrap_or_default(),
                head: Some(d.pull_request.head.ref_),
            }))
        }
        ("workflow_run", Some("completed")) => {
            let c: wire::Conclusion = serde_json::from_slice(body).map_err(bad)?;
            if c.workflow_run.conclusion.as_deref() != Some("failure") {
                return Ok(ignored(envelope.action));
            }
            let d: wire::WorkflowRun = serde_json::from_slice(body).map_err(bad)?;
            let run = d.workflow_run;
            Ok(Hook::WorkflowFailed(WorkflowFailure {
                repo: repo(&d.repository.full_name)?,
                run_id: run.id,
                workflow: run.name.unwrap_or_default(),
                head_branch: run.head_branch.unwrap_or_default(),
                head_sha: run.head_sha,
            }))
        }
        _ => Ok(ignored(envelope.action)),
    }
}

/// The deliveries' fields hangar reads, and no others: GitHub adds fields freely.
mod wire {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Envelope {
        #[serde(default)]
        pub action: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Repository {
        pub full_name: String,
    }

    #[derive(Deserialize)]
    pub struct User {
        pub login: String,
    }

    #[derive(Deserialize)]
    pub struct CommentBody {
        /// Absent or null only in deliveries older than hangar; read as empty.
        #[serde(default)]
        pub body: Option<String>,
        pub author_association: String,
        pub user: User,
    }

    #[derive(Deserialize)]
    pub struct Issue {
        pub number: u64,
        pub title: String,
        #[serde(default)]
        pub body: Option<String>,
        /// Present (an object) when the issue is a pull request.
        #[serde(default)]
        pub pull_request: Option<serde::de::IgnoredAny>,
    }

    #[derive(Deserialize)]
    pub struct IssueComment {
        pub issue: Issue,
        pub comment: CommentBody,
        pub repository: Repository,
    }

    #[derive(Deserialize)]
    pub struct Head {
        #[serde(rename = "ref")]
        pub ref_: String,
    }

    #[derive(Deserialize)]
    pub struct Pull {
        pub number: u64,
        pub title: String,
        #[serde(default)]
        pub body: Option<String>,
        pub head: Head,
    }

    #[derive(Deserialize)]
    pub struct ReviewComment {
        pub comment: CommentBody,
        pub pull_request: Pull,
        pub repository: Repository,
    }

    #[derive(Deserialize)]
    pub struct RunConclusion {
        #[serde(default)]
        pub conclusion: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Conclusion {
        pub workflow_run: RunConclusion,
    }

    #[derive(Deserialize)]
    pub struct Run {
        pub id: u64,
        #[serde(default)]
        pub name: Option<String>,
        #[serde(default)]
        pub head_branch: Option<String>,
        pub head_sha: String,
    }

    #[derive(Deserialize)]
    pub struct WorkflowRun {
        pub workflow_run: Run,
        pub repository: Repository,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn check(secret: &[u8], body: &[u8], header: Option<&str>, expected: Result<(), &str>) {
        let got = verify(secret, body, header).map_err(|e| e.to_string());
        let expected = expected.map_err(str::to_string);
        assert_eq!(got, expected, "{header:?}");
    }

    /// GitHub's documented example: secret "It's a Secret to Everybody", payload
    /// "Hello, World!".
    #[test]
    fn githubs_documented_signature_verifies() {
        check(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
            Ok(()),
        );
    }

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"action":"created"}"#;
        let good = sign(b"s3cret", body);
        let bad = Err("verify the webhook delivery: its signature does not match");
        check(b"s3cret", body, Some(&good), Ok(()));
        check(
            b"s3cret",
            body,
            Some(&good.to_uppercase().replace("SHA256=", "sha256=")),
            Ok(()),
        );
        check(b"other", body, Some(&good), bad);
        check(b"s3cret", br#"{"action":"createD"}"#, Some(&good), bad);
        check(b"s3cret", body, Some(&good[..good.len() - 2]), bad);
        check(
            b"s3cret",
            body,
            Some(&good.replace("sha256=", "sha1=")),
            bad,
        );
        check(b"s3cret", body, Some(&good.replace("sha256=", "")), bad);
        check(b"s3cret", body, Some("sha256=zz"), bad);
        check(b"s3cret", body, Some(""), bad);
        check(b"", body, Some(&sign(b"", body)), bad);
        check(
            b"s3cret",
            body,
            None,
            Err("verify the webhook delivery: it has no X-Hub-Signature-256 header"),
        );
    }

    fn parsed(event: &str, body: &str) -> Result<Hook, String> {
        parse(event, body.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn events_hangar_does_not_act_on_are_ignored() {
        let ignored = |event: &str, action: Option<&str>| {
            Ok(Hook::Ignored {
                event: event.to_string(),
                action: action.map(str::to_string),
            })
        };
        assert_eq!(parsed("ping", r#"{"zen":"x"}"#), ignored("ping", None));
        assert_eq!(
            parsed("issue_comment", r#"{"action":"edited"}"#),
            ignored("issue_comment", Some("edited"))
        );
        assert_eq!(
            parsed(
                "workflow_run",
                r#"{"action":"completed","workflow_run":{"conclusion":"success"}}"#
            ),
            ignored("workflow_run", Some("completed"))
        );
        assert_eq!(
            parsed(
                "workflow_run",
                r#"{"action":"completed","workflow_run":{"conclusion":null}}"#
            ),
            ignored("workflow_run", Some("completed"))
        );
        assert_eq!(
            parsed("push", r#"{"ref":"refs/heads/main"}"#),
            ignored("push", None)
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = parsed(
            "issue_comment",
            r#"{"action":"created","issue":{"title":"t"},"comment":{},"repository":{}}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("read the `issue_comment` webhook delivery: "),
            "{e}"
        );
        assert!(e.contains("`number`"), "{e}");
        let e = parsed("issue_comment", "not json").unwrap_err();
        assert!(
            e.starts_with("read the `issue_comment` webhook delivery: "),
            "{e}"
        );
    }

    #[test]
    fn a_bad_repository_name_is_refused() {
        let body = r#"{"action":"created","issue":{"number":1,"title":"t","body":null},
            "comment":{"body":"@hangar x","author_association":"OWNER","user":{"login":"o"}},
            "repository":{"full_name":"../x"}}"#;
        let e = parsed("issue_comment", body).unwrap_err();
        assert!(e.contains("repository.full_name"), "{e}");
    }
}
