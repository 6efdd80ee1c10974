//! The API through its router, without a socket: the OpenAPI document against the
//! routes, errors for bad requests, and a real task accepted, followed live and diffed.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use hangar_api::wire::{StreamEvent, TaskView};
use hangar_engine::runner::Runner;
use hangar_engine::{Engine, EngineConfig};
use tower::ServiceExt;

async fn runner_over(store: hangar_store::Store) -> Arc<Runner> {
    let engine = Engine::open(EngineConfig::new(store, hangar_testkit::init_binary()))
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
    call_as(router, None, method, uri, body).await
}

/// A new token for `workspace`, as the text a client sends.
async fn token(engine: &Engine, workspace: &str) -> String {
    let t = engine.create_token(workspace).await.unwrap();
    t.token.expose_str().to_string()
}

async fn call_as(
    router: &axum::Router,
    token: Option<&str>,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
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
        .chain([
            &("get", hangar_api::HEALTH),
            &("post", hangar_api::GITHUB_WEBHOOK),
        ])
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);

    // And each route is wired: asked about a task that does not exist, it answers
    // `not-found`, never the fallback's `no-such-route`.
    let (_dir, runner) = empty_runner().await;
    let router = hangar_api::router(hangar_api::Api {
        runner,
        listener: hangar_api::Listener::Local,
        activity: hangar_api::Activity::default(),
        sites: Default::default(),
    });
    for (method, path) in hangar_api::ROUTES {
        let uri = path
            .replace("{id}", "nosuchtask")
            .replace("{name}", "nosuchenv")
            .replace("/v1/images/nosuchenv", "/v1/images/nosuchimage")
            .replace("{secret}", "NOSUCH");
        let method: Method = method.to_uppercase().parse().unwrap();
        let body = match (method.as_str(), uri.as_str()) {
            ("POST", "/v1/tasks") => Some(r#"{"environment": "nosuchenv", "prompt": "p"}"#),
            ("POST", "/v1/environments") => Some(r#"{"file": "f", "source": "", "base_dir": "/"}"#),
            ("PUT", "/v1/environments/nosuchenv") => {
                Some(r#"{"file": "f", "source": "", "base_dir": "/"}"#)
            }
            ("POST", "/v1/tokens") => Some(r#"{"workspace": "Not Valid"}"#),
            ("POST", "/v1/images/build") => Some(r#"{"name": "nosuchimage"}"#),
            ("POST", "/v1/images/pull" | "/v1/cache/import") => Some(r#"{"reference": "a b"}"#),
            ("POST", "/v1/images/push") => Some(r#"{"name": "nosuchimage", "reference": "x"}"#),
            ("POST", "/v1/images/import") => Some(r#"{"path": "/nonexistent"}"#),
            ("POST", "/v1/environments/nosuchenv/cache/export") => Some(r#"{"reference": "x"}"#),
            ("POST", "/v1/cache/gc") => Some("{}"),
            ("POST", "/v1/tasks/nosuchtask/pull") => Some("{}"),
            ("PUT", _) => Some("value"),
            _ => None,
        };
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
    let router = hangar_api::router(hangar_api::Api {
        runner,
        listener: hangar_api::Listener::Local,
        activity: hangar_api::Activity::default(),
        sites: Default::default(),
    });
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
    // Build options travel in the body and are checked before anything runs.
    check(
        &router,
        (
            post.clone(),
            "/v1/images/build",
            Some(r#"{"name": "tools", "from": "debian-bookworm", "packages": ["jq", "Bad_Pkg"]}"#),
        ),
        (400, "bad-request", "`Bad_Pkg` is not a Debian package name"),
    )
    .await;
    check(
        &router,
        (
            post.clone(),
            "/v1/images/build",
            Some(r#"{"name": "tools", "from": "ubuntu-noble"}"#),
        ),
        (
            400,
            "bad-request",
            "`--from ubuntu-noble` is not debian-<suite>",
        ),
    )
    .await;
    check(
        &router,
        (
            post.clone(),
            "/v1/images/build",
            Some(r#"{"name": "tools"}"#),
        ),
        (
            400,
            "bad-request",
            "or give a base with --from debian-<suite>",
        ),
    )
    .await;
}

/// Regression: an environment file without `image` gets the default image, and a task on
/// a machine that has not built it yet must say how to build it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_the_default_image_says_how_to_build_it() {
    let (_dir, runner) = empty_runner().await;
    let repo = hangar_testkit::repo_with(&[("README", b"hello\n")]);
    let source = format!(
        "name = \"plain\"\nrepo = \"{}\"\n[agent]\nscript = \"true\"\n",
        repo.path().display()
    );
    runner
        .engine()
        .create_env("plain.toml", &source, repo.path())
        .await
        .expect("create the environment");
    let router = hangar_api::router(hangar_api::Api {
        runner,
        listener: hangar_api::Listener::Local,
        activity: hangar_api::Activity::default(),
        sites: Default::default(),
    });
    let (status, accepted) = call(
        &router,
        Method::POST,
        "/v1/tasks",
        Some(r#"{"environment": "plain", "prompt": "p"}"#),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&accepted)
    );
    let task: TaskView = serde_json::from_slice(&accepted).unwrap();
    let uri = format!("/v1/tasks/{}", task.task.id);
    call(
        &router,
        Method::GET,
        &format!("{uri}/logs?follow=true"),
        None,
    )
    .await;
    let (_, shown) = call(&router, Method::GET, &uri, None).await;
    let shown: TaskView = serde_json::from_slice(&shown).unwrap();
    let error = shown.attempts[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("image `hangar-default`")
            && error.contains("`hangar image build hangar-default`"),
        "{error}"
    );
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
    let router = hangar_api::router(hangar_api::Api {
        runner: runner.clone(),
        listener: hangar_api::Listener::Local,
        activity: hangar_api::Activity::default(),
        sites: Default::default(),
    });

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
    // A finished task is not cancelled: the request conflicts with its state.
    let (status, refused) = call(
        &router,
        Method::POST,
        &format!("/v1/tasks/{}/cancel", task.task.id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error_of(&refused),
        (
            "conflict".to_string(),
            format!(
                "failed to cancel task {}: it has already finished (ready)",
                task.task.id
            )
        )
    );
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_sees_only_its_own_workspace() {
    let store = hangar_testkit::shared_store();
    hangar_testkit::debian_image(&store);
    // A token's environment names its repository by URL (a path on the daemon's machine
    // is the admin's); one on the host's loopback is the admin's to open.
    let repo = hangar_testkit::repo_with(&[("README", b"hi\n")]);
    let served = hangar_testkit::gitd::GitDaemon::serve(repo.path().parent().unwrap());
    let engine = Engine::open(EngineConfig {
        open_internal: vec![hangar_spec::HostRule::parse(&served.authority()).unwrap()],
        ..EngineConfig::new(store, hangar_testkit::init_binary())
    })
    .await
    .expect("open the engine");
    let runner = Runner::new(Arc::new(engine));
    let engine = runner.engine();
    let u = hangar_spec::TaskId::random();
    let a = token(engine, &format!("a-{u}")).await;
    let b = token(engine, &format!("b-{u}")).await;
    let remote = hangar_api::router(hangar_api::Api {
        runner: runner.clone(),
        listener: hangar_api::Listener::Remote { tls: false },
        activity: hangar_api::Activity::default(),
        sites: Default::default(),
    });
    let local = hangar_api::router(hangar_api::Api {
        runner: runner.clone(),
        listener: hangar_api::Listener::Local,
        activity: hangar_api::Activity::default(),
        sites: Default::default(),
    });

    // Workspace A: an environment with a secret, and a task.
    let name_of_repo = repo
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let source_for = |repo: &str| {
        serde_json::json!({
            "file": "a.toml",
            "source": format!(
                "name = \"shared-name\"\nrepo = \"{repo}\"\nimage = \"debian-bookworm\"\n\
                 [secrets.TOKEN]\n[agent]\nscript = \"echo a > a.txt\"\n"
            ),
            "base_dir": "/",
        })
        .to_string()
    };
    let env_body = source_for(&served.url(&name_of_repo));
    let as_a = |m: Method, uri: &str, body: Option<&str>| {
        let (remote, a, uri, body) = (
            remote.clone(),
            a.clone(),
            uri.to_string(),
            body.map(str::to_string),
        );
        async move { call_as(&remote, Some(&a), m, &uri, body.as_deref()).await }
    };
    for local in [
        repo.path().display().to_string(),
        "file:///etc".into(),
        "..".into(),
    ] {
        let (status, got) = as_a(Method::POST, "/v1/environments", Some(&source_for(&local))).await;
        let (code, message) = error_of(&got);
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{local}"
        );
        assert!(
            message.contains("a path on the daemon's machine"),
            "{message}"
        );
    }
    let (status, got) = as_a(Method::POST, "/v1/environments", Some(&env_body)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&got)
    );
    let (status, _) = as_a(
        Method::PUT,
        "/v1/environments/shared-name/secrets/TOKEN",
        Some("sekrit-a"),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, task) = as_a(
        Method::POST,
        "/v1/tasks",
        Some(r#"{"environment": "shared-name", "prompt": "p"}"#),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&task)
    );
    let task: TaskView = serde_json::from_slice(&task).unwrap();
    let id = task.task.id.clone();

    // Token B: everything of A answers 404, as if it did not exist.
    let tid = |suffix: &str| format!("/v1/tasks/{id}{suffix}");
    // The parts of A's task, each read through the task's handle in the caller's view.
    let parts: Vec<String> = [
        "/logs?attempt=1",
        "/logs?best=true",
        "/logs?follow=true&attempt=1",
        "/events?attempt=1",
        "/network?attempt=1",
        "/diff?attempt=1",
        "/diff?best=true",
    ]
    .into_iter()
    .map(tid)
    .collect();
    let probes: Vec<(Method, String, Option<&str>)> = vec![
        (Method::GET, "/v1/environments/shared-name".into(), None),
        (
            Method::PUT,
            "/v1/environments/shared-name".into(),
            Some(env_body.as_str()),
        ),
        (Method::DELETE, "/v1/environments/shared-name".into(), None),
        (
            Method::GET,
            "/v1/environments/shared-name/secrets".into(),
            None,
        ),
        (
            Method::PUT,
            "/v1/environments/shared-name/secrets/TOKEN".into(),
            Some("sekrit-b"),
        ),
        (
            Method::DELETE,
            "/v1/environments/shared-name/secrets/TOKEN".into(),
            None,
        ),
        (
            Method::POST,
            "/v1/tasks".into(),
            Some(r#"{"environment": "shared-name", "prompt": "p"}"#),
        ),
        (Method::GET, tid(""), None),
        (Method::POST, tid("/cancel"), None),
        (Method::GET, tid("/logs"), None),
        (Method::GET, tid("/logs?follow=true"), None),
        (Method::GET, tid("/events"), None),
        (Method::GET, tid("/network"), None),
        (Method::GET, tid("/diff"), None),
        (Method::GET, format!("/v1/tasks/{}", &id[..4]), None),
    ];
    let probes: Vec<(Method, String, Option<&str>)> = probes
        .into_iter()
        .chain(parts.iter().map(|uri| (Method::GET, uri.clone(), None)))
        .collect();
    for (m, uri, body) in &probes {
        let (status, got) = call_as(&remote, Some(&b), m.clone(), uri, *body).await;
        let (code, _) = error_of(&got);
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "not-found"),
            "B: {m} {uri}"
        );
    }
    let (_, listed) = call_as(&remote, Some(&b), Method::GET, "/v1/tasks", None).await;
    let listed: serde_json::Value = serde_json::from_slice(&listed).unwrap();
    assert_eq!(
        listed["tasks"],
        serde_json::json!([]),
        "B lists none of A's tasks"
    );
    let (_, envs) = call_as(&remote, Some(&b), Method::GET, "/v1/environments", None).await;
    let envs: serde_json::Value = serde_json::from_slice(&envs).unwrap();
    assert_eq!(envs["environments"], serde_json::json!([]));
    // B may use the same name in its own workspace.
    let (status, _) = call_as(
        &remote,
        Some(&b),
        Method::POST,
        "/v1/environments",
        Some(&env_body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Nothing of A changed: its environment, its secret, its task.
    let (status, env) = as_a(Method::GET, "/v1/environments/shared-name", None).await;
    assert_eq!(status, StatusCode::OK);
    let env: serde_json::Value = serde_json::from_slice(&env).unwrap();
    assert_eq!(env["version"], 1);
    let (_, secrets) = as_a(Method::GET, "/v1/environments/shared-name/secrets", None).await;
    let secrets: serde_json::Value = serde_json::from_slice(&secrets).unwrap();
    assert_eq!(secrets["secrets"][0]["set"], true);
    let (status, _) = as_a(Method::GET, &tid(""), None).await;
    assert_eq!(status, StatusCode::OK);

    // No token, an unknown token, or a workspace token on the token routes.
    let (status, got) = call_as(&remote, None, Method::GET, "/v1/tasks", None).await;
    assert_eq!(
        (status, error_of(&got).0.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, _) = call_as(&remote, Some("hgr_0000"), Method::GET, "/v1/tasks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, got) = call_as(&local, Some(&a), Method::GET, "/v1/tokens", None).await;
    assert_eq!(
        (status, error_of(&got).0.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, got) = call_as(
        &remote,
        Some(&a),
        Method::POST,
        "/v1/tokens",
        Some(r#"{"workspace": "x"}"#),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Images belong to the installation: a workspace token may list them, not change them.
    for (m, uri, body) in [
        (Method::DELETE, "/v1/images/debian-bookworm", None),
        (
            Method::POST,
            "/v1/images/pull",
            Some(r#"{"reference": "x/y:1"}"#),
        ),
        (Method::POST, "/v1/cache/gc", Some("{}")),
        (Method::POST, "/v1/run?spec=%7B%7D", None),
    ] {
        let (status, _) = call_as(&remote, Some(&a), m.clone(), uri, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{m} {uri}");
    }
    let (status, _) = call_as(&remote, Some(&a), Method::GET, "/v1/images", None).await;
    assert_eq!(status, StatusCode::OK);

    // The local admin (the socket, no token) manages tokens; a removed token is refused.
    let (_, tokens) = call(&local, Method::GET, "/v1/tokens", None).await;
    assert!(
        !String::from_utf8_lossy(&tokens).contains(&a),
        "tokens are never listed"
    );
    let ids: Vec<String> = engine
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.workspace == format!("b-{u}"))
        .map(|t| t.id)
        .collect();
    let (status, _) = call(
        &local,
        Method::DELETE,
        &format!("/v1/tokens/{}", ids[0]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call_as(&remote, Some(&b), Method::GET, "/v1/tasks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let mut done = false;
    for _ in 0..600 {
        let (_, v) = as_a(Method::GET, &tid(""), None).await;
        let v: TaskView = serde_json::from_slice(&v).unwrap();
        if v.task.status.is_finished() {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(done, "task {id} finished");
    // Finished, A's task is read from the store: A reads its parts, B and the local
    // admin's default workspace find nothing, followed or not.
    for uri in &parts {
        let (status, got) = as_a(Method::GET, uri, None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "A: {uri}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    let b2 = token(engine, &format!("b-{u}")).await;
    for uri in parts.iter().chain([&tid(""), &tid("/cancel")]) {
        let method = if uri.ends_with("/cancel") {
            Method::POST
        } else {
            Method::GET
        };
        for (who, router, token) in [("B", &remote, Some(b2.as_str())), ("admin", &local, None)] {
            let (status, got) = call_as(router, token, method.clone(), uri, None).await;
            assert_eq!(
                (status, error_of(&got).0.as_str()),
                (StatusCode::NOT_FOUND, "not-found"),
                "{who}: {method} {uri}"
            );
        }
    }
    // A's task made a snapshot of A's environment; B, which ran nothing, sees none.
    let snapshots = |token: String| {
        let remote = remote.clone();
        async move {
            let (_, v) = call_as(&remote, Some(&token), Method::GET, "/v1/cache", None).await;
            let v: serde_json::Value = serde_json::from_slice(&v).unwrap();
            v["snapshots"].as_array().unwrap().len()
        }
    };
    assert_eq!(snapshots(a.clone()).await, 1);
    assert_eq!(snapshots(b2).await, 0);
    runner.shutdown().await;
}
