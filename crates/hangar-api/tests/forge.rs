//! GitHub webhooks through the router, end to end: real payloads (`@octokit/webhooks-examples`)
//! signed as GitHub signs them start real tasks in sandboxes, which answer on a GitHub
//! that serves only what its OpenAPI description says (`@octokit/openapi`), with pull
//! requests pushed to a real git server; bad signatures, replays, unknown events and
//! senders without write access.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hangar_engine::runner::Runner;
use hangar_engine::{Engine, EngineConfig, TaskFilter};
use hangar_secrets::Secret;
use hangar_spec::{Approval, TaskId};
use hangar_testkit::githttp::GitHttp;
use hangar_testkit::github::{sign, webhook_examples, FakeGitHub, Recorded};
use hangar_testkit::{git, repo_with};
use tower::ServiceExt;

const TOKEN: &str = "ghs_webhookTestToken0987654321";
const HOOK_SECRET: &str = "it's a secret to everybody";
/// The repository the recorded payloads are about.
const REPO: &str = "Codertocat/Hello-World";

struct Rig {
    router: axum::Router,
    engine: Engine,
    github: FakeGitHub,
    env: String,
    /// The webhook secret.
    secret: String,
    _served: tempfile::TempDir,
    _server: GitHttp,
}

async fn rig() -> Rig {
    let store = hangar_testkit::shared_store();
    hangar_testkit::debian_image(&store);
    let engine = Engine::open(EngineConfig::new(store, hangar_testkit::init_binary()))
        .await
        .expect("open the engine");
    let runner = Runner::new(Arc::new(engine));
    let engine = runner
        .engine()
        .in_workspace(&hangar_spec::Workspace::default_workspace());

    let served = tempfile::tempdir().unwrap();
    let work = repo_with(&[
        ("app.py", b"print('broken')\n"),
        (
            "AGENTS.md",
            b"# Agents\n\n## Review guidelines\n\nLook for unchecked errors.\n\n## Style\n\nShort lines.\n",
        ),
    ]);
    git(work.path(), &["branch", "changes"]);
    hangar_testkit::githttp::publish(work.path(), served.path(), "hello.git");
    let server = GitHttp::serve(served.path(), Some(("x-access-token", TOKEN)));
    let github = FakeGitHub::start();

    let env = format!("hooks-{}", TaskId::random());
    // Writes the prompt down where it may (a review is read-only), and says so last.
    let source = format!(
        "name = \"{env}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [secrets.GH]\n[secrets.HOOK]\n\
         [forge]\nkind = \"github\"\nrepository = \"{REPO}\"\napi = \"{}\"\ntoken = \"GH\"\n\
         webhook_secret = \"HOOK\"\nautofix = [\"CI\"]\n\
         [agent]\nscript = '''\n\
         if printf '%s\\n' \"$HANGAR_PROMPT\" > PROMPT.md 2>/dev/null; then echo 'wrote the prompt down'; \
         else echo 'Reviewed: no unchecked errors found'; fi\n'''\n",
        server.url("hello.git"),
        github.api()
    );
    engine
        .create_env("hooks.toml", &source, served.path())
        .await
        .expect("create the environment");
    // Every run's environment stays in the shared data dir: a secret of its own, so
    // deliveries verify only under this run's.
    let secret = format!("{HOOK_SECRET} {env}");
    for (name, value) in [("GH", TOKEN), ("HOOK", secret.as_str())] {
        engine
            .secret_set(&env, name, &Secret::new(value.into()).unwrap())
            .await
            .unwrap();
    }
    let router = hangar_api::router(hangar_api::Api {
        runner,
        listener: hangar_api::Listener::Remote { tls: false },
        activity: hangar_api::Activity::default(),
        sites: Default::default(),
    });
    Rig {
        router,
        engine,
        github,
        env,
        secret,
        _served: served,
        _server: server,
    }
}

/// Delivers `payload` as event `event` with id `id`, signed with `secret`.
async fn deliver(
    rig: &Rig,
    event: &str,
    id: &str,
    payload: &serde_json::Value,
    secret: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let mut req = Request::builder()
        .method("POST")
        .uri(hangar_api::GITHUB_WEBHOOK)
        .header("content-type", "application/json")
        .header("x-github-event", event)
        // Delivery ids are kept in the shared data dir: unique per run.
        .header("x-github-delivery", format!("{}-{id}", rig.env));
    if let Some(s) = secret {
        req = req.header("x-hub-signature-256", sign(s.as_bytes(), &body));
    }
    let resp = rig
        .router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, json)
}

/// The recorded payload of `event` with `action`, as sent for `REPO`.
fn payload(event: &str, action: &str) -> serde_json::Value {
    webhook_examples(event)
        .into_iter()
        .find(|p| p["action"] == action && p["repository"]["full_name"] == REPO)
        .unwrap_or_else(|| panic!("no recorded {event} {action} payload for {REPO}"))
}

/// Waits until the fake GitHub has received a request of `operation` past the first
/// `seen`; all its requests then.
async fn wait_for(github: &FakeGitHub, operation: &str, seen: usize) -> Vec<Recorded> {
    let start = Instant::now();
    loop {
        let got = github.requests();
        if got.iter().filter(|r| r.operation == operation).count() > seen {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no {operation} request came; got {:?}",
            got.iter().map(|r| &r.operation).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn count(requests: &[Recorded], operation: &str) -> usize {
    requests.iter().filter(|r| r.operation == operation).count()
}

async fn tasks_of(rig: &Rig) -> Vec<hangar_store::db::TaskRecord> {
    rig.engine
        .tasks(&TaskFilter {
            environment: Some(rig.env.clone()),
            limit: 100,
            ..TaskFilter::default()
        })
        .await
        .unwrap()
        .tasks
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_start_tasks_that_answer_with_comments_pull_requests_and_reviews() {
    let rig = rig().await;

    // A mention on an issue: a task on the default branch with the issue in its prompt,
    // then a pull request into the default branch and a comment that links it.
    let mut issue = payload("issue_comment", "created");
    issue["comment"]["body"] = "Thanks!\n\n@hangar write the prompt down".into();
    issue["comment"]["author_association"] = "OWNER".into();
    let (status, answer) =
        deliver(&rig, "issue_comment", "d-issue", &issue, Some(&rig.secret)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["status"], "accepted");
    let requests = wait_for(&rig.github, "issues/create-comment", 0).await;
    assert_eq!(count(&requests, "pulls/create"), 1);
    let create = requests
        .iter()
        .find(|r| r.operation == "pulls/create")
        .unwrap();
    assert_eq!(create.body["base"], "main");
    let comment = requests
        .iter()
        .find(|r| r.operation == "issues/create-comment")
        .unwrap();
    let number = issue["issue"]["number"].as_u64().unwrap();
    assert_eq!(
        comment.path,
        format!("/repos/{REPO}/issues/{number}/comments")
    );
    let pull = rig.github.example("pulls/create", 201);
    assert!(
        comment.body["body"]
            .as_str()
            .unwrap()
            .contains(pull["html_url"].as_str().unwrap()),
        "{}",
        comment.body
    );
    let tasks = tasks_of(&rig).await;
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].prompt.starts_with("write the prompt down"));
    assert!(tasks[0]
        .prompt
        .contains(issue["issue"]["title"].as_str().unwrap()));

    // The same delivery again: answered, and nothing more runs.
    let (status, answer) =
        deliver(&rig, "issue_comment", "d-issue", &issue, Some(&rig.secret)).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );

    // A bad signature is refused and nothing of it is kept: the same id, signed, is new.
    let (status, _) = deliver(
        &rig,
        "issue_comment",
        "d-forged",
        &issue,
        Some("not the secret"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = deliver(&rig, "issue_comment", "d-forged", &issue, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut edited = issue.clone();
    edited["action"] = "edited".into();
    let (status, _) = deliver(
        &rig,
        "issue_comment",
        "d-forged",
        &edited,
        Some(&rig.secret),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "an edited comment is not acted on"
    );
    // A delivery without GitHub's headers is named as such.
    let resp = rig
        .router
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri(hangar_api::GITHUB_WEBHOOK)
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("X-GitHub-Event"));
    // An event hangar does not act on.
    let star = serde_json::json!({"action": "created", "repository": issue["repository"]});
    let (status, _) = deliver(&rig, "star", "d-star", &star, Some(&rig.secret)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // A comment that does not call hangar.
    let mut chat = issue.clone();
    chat["comment"]["body"] = "email hangar@example.org about it".into();
    let (status, _) = deliver(&rig, "issue_comment", "d-chat", &chat, Some(&rig.secret)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // A sender without write access gets a polite answer and no task.
    let before = count(&rig.github.requests(), "issues/create-comment");
    let mut stranger = issue.clone();
    stranger["comment"]["author_association"] = "NONE".into();
    let (status, _) = deliver(
        &rig,
        "issue_comment",
        "d-stranger",
        &stranger,
        Some(&rig.secret),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let requests = wait_for(&rig.github, "issues/create-comment", before).await;
    let polite = requests
        .iter()
        .filter(|r| r.operation == "issues/create-comment")
        .nth(before)
        .unwrap();
    let sender = stranger["comment"]["user"]["login"].as_str().unwrap();
    assert_eq!(
        polite.body["body"].as_str().unwrap(),
        hangar_forge::text::not_allowed(sender)
    );
    assert_eq!(tasks_of(&rig).await.len(), 1);

    // `@hangar review` on a pull request's line: a read-only task on its head branch
    // with AGENTS.md's review guidelines, whose final message becomes a review.
    let mut review = payload("pull_request_review_comment", "created");
    review["comment"]["body"] = "@hangar review for security regressions".into();
    review["comment"]["author_association"] = "MEMBER".into();
    let number = review["pull_request"]["number"].as_u64().unwrap();
    let mut head = rig.github.example("pulls/get", 200);
    head["number"] = number.into();
    head["head"]["ref"] = "changes".into();
    head["head"]["repo"]["full_name"] = REPO.into();
    head["head"]["repo"]["name"] = "Hello-World".into();
    head["head"]["repo"]["owner"]["login"] = "Codertocat".into();
    rig.github.answer_next("pulls/get", 200, Some(head), &[]);
    let (status, _) = deliver(
        &rig,
        "pull_request_review_comment",
        "d-review",
        &review,
        Some(&rig.secret),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let requests = wait_for(&rig.github, "pulls/create-review", 0).await;
    let posted = requests
        .iter()
        .find(|r| r.operation == "pulls/create-review")
        .unwrap();
    assert_eq!(posted.path, format!("/repos/{REPO}/pulls/{number}/reviews"));
    assert_eq!(posted.body["event"], "COMMENT");
    assert!(
        posted.body["body"]
            .as_str()
            .unwrap()
            .contains("Reviewed: no unchecked errors found"),
        "{}",
        posted.body
    );
    let tasks = tasks_of(&rig).await;
    let reviewed = tasks
        .iter()
        .find(|t| t.approval == Some(Approval::ReadOnly))
        .unwrap();
    assert_eq!(reviewed.branch.as_deref(), Some("changes"));
    assert!(reviewed.prompt.contains("Focus: for security regressions"));
    assert!(reviewed.prompt.contains("Look for unchecked errors."));
    assert!(!reviewed.prompt.contains("Short lines."));
    assert_eq!(
        count(&requests, "pulls/create"),
        1,
        "a review opens no pull request"
    );

    // A failed run of a workflow [forge] autofix names: a task with the failing jobs'
    // log tails, then a pull request into the failed branch.
    let mut run = payload("workflow_run", "completed");
    run["workflow_run"]["name"] = "CI".into();
    run["workflow_run"]["conclusion"] = "failure".into();
    let branch = run["workflow_run"]["head_branch"]
        .as_str()
        .unwrap()
        .to_string();
    let mut jobs = rig
        .github
        .example("actions/list-jobs-for-workflow-run", 200);
    jobs["jobs"][0]["conclusion"] = "failure".into();
    jobs["jobs"][0]["name"] = "unit tests".into();
    let job_id = jobs["jobs"][0]["id"].as_u64().unwrap();
    rig.github
        .answer_next("actions/list-jobs-for-workflow-run", 200, Some(jobs), &[]);
    rig.github.set_job_log(
        job_id,
        "collecting\nFAILED test_app.py::test_prints - AssertionError\n",
    );
    let (status, _) = deliver(&rig, "workflow_run", "d-run", &run, Some(&rig.secret)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let requests = wait_for(&rig.github, "pulls/create", 1).await;
    let fix = requests
        .iter()
        .filter(|r| r.operation == "pulls/create")
        .nth(1)
        .unwrap();
    assert_eq!(fix.body["base"], branch.as_str());
    assert_ne!(
        fix.body["head"],
        branch.as_str(),
        "never a push to the failed branch"
    );
    let tasks = tasks_of(&rig).await;
    let autofix = tasks
        .iter()
        .find(|t| t.prompt.contains("The workflow `CI` failed"))
        .unwrap();
    assert!(autofix.prompt.contains("unit tests"));
    assert!(autofix.prompt.contains("FAILED test_app.py::test_prints"));
    // A successful run, or a workflow it does not name, starts nothing.
    let mut passed = run.clone();
    passed["workflow_run"]["conclusion"] = "success".into();
    let (status, _) = deliver(&rig, "workflow_run", "d-run-ok", &passed, Some(&rig.secret)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut other = run.clone();
    other["workflow_run"]["name"] = "Docs".into();
    let (status, _) = deliver(
        &rig,
        "workflow_run",
        "d-run-docs",
        &other,
        Some(&rig.secret),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    assert_eq!(rig.github.violations(), Vec::<String>::new());
    assert_eq!(tasks_of(&rig).await.len(), 3);
}
