//! The API through its router, without a socket: the OpenAPI document against the
//! routes, errors for bad requests, and a real task accepted, followed live and diffed.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use hangar_api::wire::{StreamEvent, TaskView};
use hangar_engine::runner::Runner;
use hangar_engine::Engine;
use tower::ServiceExt;

async fn runner_over(store: hangar_store::Store) -> Arc<Runner> {
    let engine = Engine::open(store, hangar_testkit::init_binary())
        .await
        .expect("open the engine");
    Runner::new(Arc::new(engine))
}

/// A runner over an empty data dir of its own (no root needed).
async fn empty_runner() -> (tempfile::TempDir, Arc<Runner>) {
    let dir = tempfile::tempdir().unwrap();
    let store = hangar_store::Store::open(dir.path()).unwrap();
    (dir, runner_over(store).await)
}

async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Body::from(body.unwrap_or("").to_string()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

fn error_of(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).expect("an error body is JSON");
    (
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routers_routes() {
    let doc: serde_json::Value = serde_json::from_str(hangar_api::OPENAPI).expect("valid JSON");
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let mut routed: Vec<(String, String)> = hangar_api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);

    // And each route is wired: asked about a task that does not exist, it answers
    // `not-found`, never the fallback's `no-such-route`.
    let (_dir, runner) = empty_runner().await;
    let router = hangar_api::router(runner);
    for (method, path) in hangar_api::ROUTES {
        let uri = path.replace("{id}", "nosuchtask");
        let method: Method = method.to_uppercase().parse().unwrap();
        let body = (method == Method::POST && !uri.contains("nosuchtask"))
            .then_some(r#"{"environment": "nosuchenv", "prompt": "p"}"#);
        let (status, body) = call(&router, method.clone(), &uri, body).await;
        if status.is_success() {
            continue;
        }
        let (code, _) = error_of(&body);
        assert_ne!(code, "no-such-route", "{method} {uri} is not routed");
    }
    // The enums the document spells are the ones the API parses.
    let schema = &doc["components"]["schemas"]["SubmitTask"]["properties"];
    let spelled = |v: &serde_json::Value| -> Vec<String> {
        v["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let harnesses: Vec<String> = hangar_spec::Harness::ALL
        .iter()
        .map(|h| h.as_str().to_string())
        .collect();
    assert_eq!(spelled(&schema["harness"]), harnesses);
    let approvals: Vec<String> = hangar_spec::Approval::ALL
        .iter()
        .map(|a| a.as_str().to_string())
        .collect();
    assert_eq!(spelled(&schema["approval"]), approvals);
}

/// A request and the status, error code and part of the message it must get.
async fn check(
    router: &axum::Router,
    req: (Method, &str, Option<&str>),
    expected: (u16, &str, &str),
) {
    let (method, uri, body) = req;
    let (status, got) = call(router, method.clone(), uri, body).await;
    assert!(
        serde_json::from_slice::<serde_json::Value>(&got).is_ok(),
        "{method} {uri}: {status} {}",
        String::from_utf8_lossy(&got)
    );
    let (code, message) = error_of(&got);
    assert_eq!(
        (status.as_u16(), code.as_str()),
        (expected.0, expected.1),
        "{method} {uri}: {message}"
    );
    assert!(
        message.contains(expected.2),
        "{method} {uri}: `{message}` should say `{}`",
        expected.2
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let (_dir, runner) = empty_runner().await;
    let router = hangar_api::router(runner);
    let post = Method::POST;
    let get = Method::GET;
    check(
        &router,
        (get.clone(), "/v1/nothing", None),
        (404, "no-such-route", "/v1/nothing"),
    )
    .await;
    check(
        &router,
        (post.clone(), "/v1/tasks", Some("{")),
        (400, "bad-request", "failed to read the task"),
    )
    .await;
    check(
        &router,
        (post.clone(), "/v1/tasks", Some(r#"{"environment": "e"}"#)),
        (400, "bad-request", "prompt"),
    )
    .await;
    check(
        &router,
        (
            post.clone(),
            "/v1/tasks",
            Some(r#"{"environment": "e", "prompt": "p", "colour": 1}"#),
        ),
        (400, "bad-request", "colour"),
    )
    .await;
    check(
        &router,
        (
            post.clone(),
            "/v1/tasks",
            Some(r#"{"environment": "e", "prompt": "p", "harness": "vim"}"#),
        ),
        (400, "bad-request", "harness"),
    )
    .await;
    check(
        &router,
        (
            post.clone(),
            "/v1/tasks",
            Some(r#"{"environment": "nosuchenv", "prompt": "p"}"#),
        ),
        (404, "not-found", "environment `nosuchenv`"),
    )
    .await;
    check(
        &router,
        (get.clone(), "/v1/tasks/abc123", None),
        (404, "not-found", "task `abc123`"),
    )
    .await;
    check(
        &router,
        (get.clone(), "/v1/tasks?limit=many", None),
        (400, "bad-request", "limit"),
    )
    .await;
    check(
        &router,
        (post.clone(), "/v1/tasks/abc123/cancel", None),
        (404, "not-found", "abc123"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_accepted_followed_live_and_diffed() {
    let store = hangar_testkit::shared_store();
    hangar_testkit::debian_image(&store);
    let runner = runner_over(store).await;
    let repo = hangar_testkit::repo_with(&[("README", b"hello\n")]);
    let name = format!("api-{}", std::process::id());
    let source = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n[agent]\nscript = \"\"\"\nfor i in 1 2 3; do echo step $i; done\necho changed >> README\necho all done\n\"\"\"\n",
        repo.path().display()
    );
    runner
        .engine()
        .create_env("api.toml", &source, repo.path())
        .await
        .expect("create the environment");
    let router = hangar_api::router(runner.clone());

    let body = format!(r#"{{"environment": "{name}", "prompt": "change the readme"}}"#);
    let (status, accepted) = call(&router, Method::POST, "/v1/tasks", Some(&body)).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&accepted)
    );
    let task: TaskView = serde_json::from_slice(&accepted).unwrap();
    assert_eq!(task.task.title, "change the readme");

    // Followed as server-sent events: phases, the agent's lines, then the end.
    let (status, stream) = call(
        &router,
        Method::GET,
        &format!("/v1/tasks/{}/logs?follow=true", task.task.id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events: Vec<StreamEvent> = String::from_utf8(stream)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("an event"))
        .collect();
    let lines: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Line(l) if l.phase == hangar_spec::Phase::Agent => Some(l.line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["step 1", "step 2", "step 3", "all done"]);
    assert!(events.iter().any(|e| matches!(
        e,
        StreamEvent::PhaseFinished {
            phase: hangar_spec::Phase::Agent,
            ok: true,
            ..
        }
    )));
    assert_eq!(
        events.last(),
        Some(&StreamEvent::End {
            status: hangar_spec::TaskStatus::Ready
        })
    );

    let (status, diff) = call(
        &router,
        Method::GET,
        &format!("/v1/tasks/{}/diff", task.task.id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let diff = String::from_utf8(diff).unwrap();
    assert!(diff.contains("+changed"), "{diff}");
    // Following a finished task replays its stored lines and ends.
    let (_, again) = call(
        &router,
        Method::GET,
        &format!("/v1/tasks/{}/logs?follow=true&attempt=1", task.task.id),
        None,
    )
    .await;
    let again = String::from_utf8(again).unwrap();
    assert!(
        again.contains("all done") && again.contains(r#""type":"end""#),
        "{again}"
    );
    runner.shutdown().await;
}
