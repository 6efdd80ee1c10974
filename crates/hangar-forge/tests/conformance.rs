//! The [`Forge`] trait's shared suite, generic over the forge, run against [`GitHub`]
//! pointed at the testkit's fake GitHub, which checks every request against GitHub's
//! OpenAPI description and answers with its examples.

use std::sync::Arc;
use std::time::Duration;

use hangar_forge::github::{GitHub, GitHubConfig};
use hangar_forge::{Forge, ForgeError, NewPull, RepoName};
use hangar_secrets::Secret;
use hangar_testkit::github::FakeGitHub;
use serde_json::json;

const TOKEN: &str = "ghs_c0nformanceT0kenNeverShown";

/// A TLS client that trusts nothing: the fake speaks plain HTTP on loopback.
fn no_tls() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    )
}

fn github(fake: &FakeGitHub, max_retry_wait: Duration) -> GitHub {
    GitHub::new(GitHubConfig {
        api: fake.api(),
        token: Secret::new(TOKEN.as_bytes().to_vec()).unwrap(),
        tls: no_tls(),
        max_retry_wait,
        tries: 3,
    })
    .unwrap()
}

fn repo() -> RepoName {
    RepoName::parse("octo/repo").unwrap()
}

/// Runs `f` on a fresh fake and a client of it, then checks that every request the
/// client sent was one the description has, and that the token appears in no error.
fn suite<Fut, T>(f: impl FnOnce(&FakeGitHub, GitHub) -> Fut) -> (FakeGitHub, T)
where
    Fut: std::future::Future<Output = T>,
{
    let fake = FakeGitHub::start();
    let client = github(&fake, Duration::from_secs(5));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(f(&fake, client));
    assert_eq!(fake.violations(), Vec::<String>::new());
    for r in fake.requests() {
        if r.operation != "_storage" {
            assert_eq!(
                r.authorization.as_deref(),
                Some(&*format!("Bearer {TOKEN}")),
                "{r:?}"
            );
        }
    }
    (fake, out)
}

fn no_token(e: &ForgeError) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(TOKEN), "{text}");
}

// The suite, generic over the forge: each operation's result as the forge reports it.

async fn reads_the_default_branch<F: Forge>(forge: &F, expected: &str) {
    let info = forge.repository(&repo()).await.unwrap();
    assert_eq!(info.default_branch, expected);
}

async fn opens_a_pull<F: Forge>(forge: &F, expected_number: u64, expected_url: &str) {
    let pull = NewPull {
        title: "Fix the flaky test".into(),
        body: "body".into(),
        head: "hangar/t-1".into(),
        base: "main".into(),
        draft: true,
    };
    let got = forge.open_pull(&repo(), &pull).await.unwrap();
    assert_eq!(
        (got.number, got.url.as_str()),
        (expected_number, expected_url)
    );
}

#[test]
fn repository_reads_the_default_branch() {
    let (fake, ()) = suite(|fake, gh| {
        let expected = fake.example("repos/get", 200)["default_branch"]
            .as_str()
            .unwrap()
            .to_string();
        async move { reads_the_default_branch(&gh, &expected).await }
    });
    let r = &fake.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("GET", "/repos/octo/repo")
    );
}

#[test]
fn open_pull_sends_what_the_description_asks_and_reads_the_answer() {
    let (fake, ()) = suite(|fake, gh| {
        let mut answer = fake.example("pulls/create", 201);
        answer["number"] = json!(4242);
        answer["html_url"] = json!("https://github.com/octo/repo/pull/4242");
        fake.answer_next("pulls/create", 201, Some(answer), &[]);
        async move { opens_a_pull(&gh, 4242, "https://github.com/octo/repo/pull/4242").await }
    });
    let r = &fake.requests()[0];
    assert_eq!(r.operation, "pulls/create");
    assert_eq!(
        r.body,
        json!({"title": "Fix the flaky test", "body": "body", "head": "hangar/t-1",
               "base": "main", "draft": true})
    );
}

#[test]
fn an_existing_pull_is_pull_exists() {
    let (_, e) = suite(|fake, gh| {
        let mut answer = fake.example("pulls/create", 422);
        answer["errors"] = json!([{
            "resource": "PullRequest",
            "code": "custom",
            "message": "A pull request already exists for octo:hangar/t-1."
        }]);
        fake.answer_next("pulls/create", 422, Some(answer), &[]);
        async move {
            let pull = NewPull {
                title: "t".into(),
                body: "b".into(),
                head: "hangar/t-1".into(),
                base: "main".into(),
                draft: false,
            };
            gh.open_pull(&repo(), &pull).await.unwrap_err()
        }
    });
    assert!(
        matches!(&e, ForgeError::PullExists { head, base } if head == "hangar/t-1" && base == "main"),
        "{e}"
    );
}

#[test]
fn another_422_is_rejected_with_githubs_message() {
    let (_, e) = suite(|fake, gh| {
        let mut answer = fake.example("pulls/create", 422);
        answer["message"] = json!("Validation Failed");
        answer["errors"] = json!([{"resource": "PullRequest", "field": "base", "code": "invalid"}]);
        fake.answer_next("pulls/create", 422, Some(answer), &[]);
        async move {
            let pull = NewPull {
                title: "t".into(),
                body: "b".into(),
                head: "h".into(),
                base: "nope".into(),
                draft: false,
            };
            gh.open_pull(&repo(), &pull).await.unwrap_err()
        }
    });
    no_token(&e);
    assert_eq!(
        e.to_string(),
        "open a pull request on octo/repo: the forge answered 422: Validation Failed (base: invalid)"
    );
}

#[test]
fn find_pull_asks_for_the_branch_and_checks_the_answer() {
    let (fake, (found, missing)) = suite(|fake, gh| {
        let example = fake.example("pulls/list", 200);
        let head = example[0]["head"]["ref"].as_str().unwrap().to_string();
        let base = example[0]["base"]["ref"].as_str().unwrap().to_string();
        let number = example[0]["number"].as_u64().unwrap();
        // The second answer is the example again: its branch is not the one asked for.
        fake.answer_next("pulls/list", 200, None, &[]);
        fake.answer_next("pulls/list", 200, None, &[]);
        async move {
            let found = gh.find_pull(&repo(), &head, &base).await.unwrap();
            assert_eq!(found.as_ref().map(|p| p.number), Some(number));
            let missing = gh.find_pull(&repo(), "hangar/other", &base).await.unwrap();
            (found.map(|p| (p.head, p.base)), missing)
        }
    });
    assert!(found.is_some());
    assert_eq!(missing, None);
    let r = &fake.requests()[0];
    assert_eq!(r.operation, "pulls/list");
    let query: Vec<(String, String)> = form_pairs(&r.query);
    let (head, base) = found.unwrap();
    assert!(
        query.contains(&("head".into(), format!("octo:{head}"))),
        "{query:?}"
    );
    assert!(query.contains(&("base".into(), base)), "{query:?}");
    assert!(
        query.contains(&("state".into(), "open".into())),
        "{query:?}"
    );
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn pull_reads_the_head() {
    let (_, (info, example)) = suite(|fake, gh| {
        let example = fake.example("pulls/get", 200);
        async move { (gh.pull(&repo(), 1347).await.unwrap(), example) }
    });
    assert_eq!(info.number, example["number"].as_u64().unwrap());
    assert_eq!(info.title, example["title"].as_str().unwrap());
    assert_eq!(info.head, example["head"]["ref"].as_str().unwrap());
    assert_eq!(info.base, example["base"]["ref"].as_str().unwrap());
    assert_eq!(
        info.head_repo.map(|r| r.to_string()).as_deref(),
        example["head"]["repo"]["full_name"].as_str()
    );
}

/// GitHub answers `head.repo: null` once a fork's repository is deleted, though its
/// description says the field is a repository: the fake records that one divergence,
/// and the client reads the answer.
#[test]
fn a_deleted_head_repository_is_none() {
    let fake = FakeGitHub::start();
    let mut deleted = fake.example("pulls/get", 200);
    deleted["head"]["repo"] = serde_json::Value::Null;
    deleted["body"] = serde_json::Value::Null;
    fake.answer_next("pulls/get", 200, Some(deleted), &[]);
    assert_eq!(
        fake.violations(),
        ["pulls/get: the 200 answer a test queued: answer.head.repo is null, not object"]
    );
    let gh = github(&fake, Duration::from_secs(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info = rt.block_on(gh.pull(&repo(), 1347)).unwrap();
    assert_eq!((info.head_repo, info.body.as_str()), (None, ""));
    assert_eq!(fake.violations().len(), 1, "{:?}", fake.violations());
}

#[test]
fn comment_and_review_post_their_bodies() {
    let (fake, ()) = suite(|_, gh| async move {
        gh.comment(&repo(), 7, "hello").await.unwrap();
        gh.review(&repo(), 8, "looks fine").await.unwrap();
    });
    let r = fake.requests();
    assert_eq!(r[0].operation, "issues/create-comment");
    assert_eq!(r[0].path, "/repos/octo/repo/issues/7/comments");
    assert_eq!(r[0].body, json!({"body": "hello"}));
    assert_eq!(r[1].operation, "pulls/create-review");
    assert_eq!(r[1].body, json!({"body": "looks fine", "event": "COMMENT"}));
}

#[test]
fn failed_jobs_follow_the_log_redirect_without_the_token() {
    let (fake, jobs) = suite(|fake, gh| {
        let mut jobs = fake.example("actions/list-jobs-for-workflow-run", 200);
        let mut failed = jobs["jobs"][0].clone();
        failed["id"] = json!(11);
        failed["name"] = json!("test");
        failed["conclusion"] = json!("failure");
        let mut gone = failed.clone();
        gone["id"] = json!(12);
        gone["name"] = json!("lint");
        jobs["jobs"].as_array_mut().unwrap().extend([failed, gone]);
        jobs["total_count"] = json!(3);
        fake.answer_next("actions/list-jobs-for-workflow-run", 200, Some(jobs), &[]);
        fake.set_job_log(11, "one\ntwo\nthree\nfour\n");
        // Job 12's log is the storage's default one.
        async move { gh.failed_jobs(&repo(), 30433642, 2).await.unwrap() }
    });
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(
        (jobs[0].name.as_str(), jobs[0].log_tail.as_str()),
        ("test", "three\nfour")
    );
    assert_eq!(jobs[1].name, "lint");
    let requests = fake.requests();
    let list = &requests[0];
    assert_eq!(list.operation, "actions/list-jobs-for-workflow-run");
    assert!(list.query.contains("filter=latest"), "{}", list.query);
    let storage: Vec<_> = requests
        .iter()
        .filter(|r| r.operation == "_storage")
        .collect();
    assert_eq!(storage.len(), 2, "{requests:?}");
    for r in storage {
        assert_eq!(r.authorization, None, "{r:?}");
    }
}

#[test]
fn a_missing_log_is_an_empty_tail() {
    let (_, jobs) = suite(|fake, gh| {
        let mut jobs = fake.example("actions/list-jobs-for-workflow-run", 200);
        jobs["jobs"][0]["conclusion"] = json!("failure");
        fake.answer_next("actions/list-jobs-for-workflow-run", 200, Some(jobs), &[]);
        fake.answer_next(
            "actions/download-job-logs-for-workflow-run",
            302,
            None,
            &[("location", &format!("{}/_storage/logs/none", fake.api()))],
        );
        async move { gh.failed_jobs(&repo(), 1, 10).await.unwrap() }
    });
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].log_tail, "");
}

#[test]
fn a_rate_limit_is_waited_out_then_the_call_succeeds() {
    for (status, headers) in [
        (429, vec![("retry-after", "1")]),
        (403, vec![("retry-after", "1")]),
        (
            403,
            vec![("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "0")],
        ),
    ] {
        let (fake, ()) = suite(|fake, gh| {
            fake.answer_next("repos/get", status, None, &headers);
            async move {
                gh.repository(&repo()).await.unwrap();
            }
        });
        assert_eq!(fake.requests().len(), 2, "{status} {headers:?}");
    }
}

#[test]
fn a_rate_limit_beyond_the_longest_wait_gives_up_at_once() {
    let (fake, e) = suite(|fake, gh| {
        fake.answer_next("repos/get", 403, None, &[("retry-after", "3600")]);
        async move { gh.repository(&repo()).await.unwrap_err() }
    });
    no_token(&e);
    assert!(
        matches!(
            e,
            ForgeError::RateLimited {
                tries: 1,
                retry_after_s: 3600,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[test]
fn a_failing_forge_is_tried_again() {
    let (fake, ()) = suite(|fake, gh| {
        fake.answer_next("pulls/get", 503, None, &[]);
        async move {
            gh.pull(&repo(), 1).await.unwrap();
        }
    });
    assert_eq!(fake.requests().len(), 2);
    let (fake, e) = suite(|fake, gh| {
        for _ in 0..3 {
            fake.answer_next("pulls/get", 500, None, &[]);
        }
        async move { gh.pull(&repo(), 1).await.unwrap_err() }
    });
    no_token(&e);
    assert!(
        matches!(
            e,
            ForgeError::Failing {
                status: 500,
                tries: 3,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(fake.requests().len(), 3);
}

#[test]
fn a_refusal_names_the_operation_and_the_repository_but_not_the_token() {
    let (_, e) = suite(|fake, gh| {
        fake.answer_next("issues/create-comment", 404, None, &[]);
        async move { gh.comment(&repo(), 5, "x").await.unwrap_err() }
    });
    no_token(&e);
    let text = e.to_string();
    assert!(
        text.starts_with("comment on #5 of octo/repo: the forge answered 404"),
        "{text}"
    );
}

#[test]
fn an_unreachable_forge_is_named_without_the_token() {
    // Nothing listens on port 1 of loopback.
    let gh = GitHub::new(GitHubConfig {
        api: "http://127.0.0.1:1".into(),
        token: Secret::new(TOKEN.as_bytes().to_vec()).unwrap(),
        tls: no_tls(),
        max_retry_wait: Duration::from_secs(1),
        tries: 2,
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(gh.repository(&repo())).unwrap_err();
    no_token(&e);
    assert!(matches!(e, ForgeError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string().starts_with("read the repository octo/repo: "),
        "{e}"
    );
}

#[test]
fn an_enterprise_server_path_prefix_is_kept() {
    let fake = FakeGitHub::start();
    let gh = GitHub::new(GitHubConfig {
        api: format!("{}/api/v3", fake.api()),
        ..GitHubConfig::new(Secret::new(TOKEN.as_bytes().to_vec()).unwrap(), no_tls())
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The fake serves github.com's paths: the prefixed path is one it does not have.
    let e = rt.block_on(gh.repository(&repo())).unwrap_err();
    assert!(matches!(e, ForgeError::Rejected { status: 400, .. }), "{e}");
    assert_eq!(fake.requests()[0].path, "/api/v3/repos/octo/repo");
}
