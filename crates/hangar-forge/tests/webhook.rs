//! GitHub's own example deliveries (`@octokit/webhooks-examples`) read by
//! `webhook::parse`, and their signatures checked by `webhook::verify`.

use hangar_forge::webhook::{self, CommentPlace, Hook, WebhookError};
use hangar_testkit::github::{sign, webhook_examples};
use serde_json::{json, Value};

fn parse(event: &str, payload: &Value) -> Hook {
    let body = serde_json::to_vec(payload).unwrap();
    webhook::parse(event, &body).unwrap_or_else(|e| panic!("{event}: {e}\n{payload}"))
}

#[test]
fn every_issue_comment_example_parses() {
    let examples = webhook_examples("issue_comment");
    assert!(!examples.is_empty());
    for mut example in examples {
        let action = example["action"].as_str().unwrap().to_string();
        example["comment"]["body"] = json!("@hangar fix it");
        match parse("issue_comment", &example) {
            Hook::Comment(c) => {
                assert_eq!(action, "created");
                assert_eq!(c.body, "@hangar fix it");
                assert_eq!(c.place, CommentPlace::Issue);
                assert_eq!(c.number, example["issue"]["number"].as_u64().unwrap());
                assert_eq!(
                    c.repo.to_string(),
                    example["repository"]["full_name"].as_str().unwrap()
                );
                assert_eq!(
                    c.sender,
                    example["comment"]["user"]["login"].as_str().unwrap()
                );
                assert_eq!(
                    c.association,
                    example["comment"]["author_association"].as_str().unwrap()
                );
                assert_eq!(c.title, example["issue"]["title"].as_str().unwrap());
                assert_eq!(
                    c.issue_body,
                    example["issue"]["body"].as_str().unwrap_or("")
                );
                assert_eq!(c.head, None);
                // The same comment on a pull request's conversation.
                example["issue"]["pull_request"] =
                    json!({"url": "https://api.github.com/repos/o/r/pulls/1"});
                example["issue"]["body"] = Value::Null;
                let Hook::Comment(c) = parse("issue_comment", &example) else {
                    panic!("not a comment")
                };
                assert_eq!(
                    (c.place, c.issue_body.as_str()),
                    (CommentPlace::PullConversation, "")
                );
            }
            Hook::Ignored { event, action: a } => {
                assert_ne!(action, "created");
                assert_eq!(
                    (event.as_str(), a.as_deref()),
                    ("issue_comment", Some(&*action))
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn every_review_comment_example_parses() {
    for mut example in webhook_examples("pull_request_review_comment") {
        let action = example["action"].as_str().unwrap().to_string();
        example["comment"]["body"] = json!("@hangar review");
        match parse("pull_request_review_comment", &example) {
            Hook::Comment(c) => {
                assert_eq!(action, "created");
                assert_eq!(c.place, CommentPlace::PullReview);
                assert_eq!(
                    c.number,
                    example["pull_request"]["number"].as_u64().unwrap()
                );
                assert_eq!(
                    c.head.as_deref(),
                    example["pull_request"]["head"]["ref"].as_str()
                );
                assert_eq!(c.title, example["pull_request"]["title"].as_str().unwrap());
            }
            Hook::Ignored { .. } => assert_ne!(action, "created"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn every_workflow_run_example_parses_and_only_a_failure_counts() {
    let examples = webhook_examples("workflow_run");
    let mut failures = 0;
    for example in &examples {
        // As delivered: none of the examples is a failure.
        assert!(matches!(
            parse("workflow_run", example),
            Hook::Ignored { .. }
        ));
        let mut failed = example.clone();
        failed["workflow_run"]["conclusion"] = json!("failure");
        match parse("workflow_run", &failed) {
            Hook::WorkflowFailed(w) => {
                failures += 1;
                assert_eq!(failed["action"], "completed");
                let run = &failed["workflow_run"];
                assert_eq!(w.run_id, run["id"].as_u64().unwrap());
                assert_eq!(w.workflow, run["name"].as_str().unwrap());
                assert_eq!(w.head_sha, run["head_sha"].as_str().unwrap());
                assert_eq!(w.head_branch, run["head_branch"].as_str().unwrap_or(""));
                assert_eq!(
                    w.repo.to_string(),
                    failed["repository"]["full_name"].as_str().unwrap()
                );
            }
            Hook::Ignored { action, .. } => assert_ne!(action.as_deref(), Some("completed")),
            other => panic!("{other:?}"),
        }
    }
    assert!(failures > 0, "no completed run among the examples");
}

#[test]
fn a_ping_is_ignored() {
    for example in webhook_examples("ping") {
        assert!(matches!(
            parse("ping", &example),
            Hook::Ignored { action: None, .. }
        ));
    }
}

fn check(secret: &[u8], body: &[u8], header: Option<&str>, expected: Result<(), &str>) {
    let got = webhook::verify(secret, body, header).map_err(|e| match e {
        WebhookError::Unsigned => "unsigned",
        WebhookError::BadSignature => "bad",
        WebhookError::BadPayload { .. } => "payload",
    });
    assert_eq!(got, expected, "{header:?}");
}

#[test]
fn signatures_of_real_deliveries_are_checked() {
    let secret = b"webhook s3cret";
    let body = serde_json::to_vec(&webhook_examples("issue_comment")[0]).unwrap();
    let good = sign(secret, &body);
    check(secret, &body, Some(&good), Ok(()));
    check(b"another secret", &body, Some(&good), Err("bad"));
    let mut changed = body.clone();
    let last = changed.len() - 2;
    changed[last] ^= 1;
    check(secret, &changed, Some(&good), Err("bad"));
    check(secret, &body, None, Err("unsigned"));
    check(secret, &body, Some("sha256="), Err("bad"));
    check(secret, &body, Some("sha256=not-hex"), Err("bad"));
    check(secret, &body, Some(&good[7..]), Err("bad"));
    check(
        secret,
        &body,
        Some(&good.replace("sha256", "sha1")),
        Err("bad"),
    );
}
