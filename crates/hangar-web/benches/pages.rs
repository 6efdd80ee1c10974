//! Web UI benchmark (`cargo bench -p hangar-web --bench pages`): the server's time to
//! answer the task list with 10,000 tasks in the store, and the task page of a task with
//! a 5,000-line diff, side by side with the JSON API's time for the same data (the list:
//! `GET /v1/tasks`; the task page: the task, its events, its network log and its diff,
//! the four reads the page makes). In-process through the daemon's router, each request
//! authenticated as it would be (a bearer token for the API, a session cookie for the
//! pages), the answer's whole body read; requests alternate so both see the same machine.
//!
//! The store is seeded through its database directly: 10,000 tasks cannot be run, and
//! what is measured is reading and rendering them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use hangar_engine::runner::Runner;
use hangar_engine::{Engine, EngineConfig};
use hangar_spec::{AttemptStatus, TaskId};
use hangar_store::db::{AttemptOutcome, Db, DiffSummary, NewTask};
use hangar_store::{Bucket, Store};
use hangar_testkit::bench::{print_table, summarize};
use http_body_util::BodyExt;
use tower::ServiceExt;

const TASKS: usize = 10_000;
const DIFF_FILES: usize = 25;
/// Lines removed and added per file: 25 x 200 = 5,000 changed lines.
const CHANGED_PER_FILE: usize = 100;
const ROUNDS: usize = 200;

fn task(environment: &str, title: String) -> NewTask {
    NewTask {
        id: TaskId::random(),
        workspace: "default".into(),
        environment: environment.into(),
        environment_version: 1,
        spec: String::new(),
        title: title.clone(),
        prompt: title,
        branch: Some("main".into()),
        commit: None,
        agent_script: None,
        harness: None,
        approval: None,
        attempts: 1,
        from: None,
    }
}

fn big_diff() -> String {
    let mut d = String::new();
    for f in 0..DIFF_FILES {
        let path = format!("src/module_{f}/file_{f}.rs");
        d.push_str(&format!(
            "diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n@@ -1,{n} +1,{n} @@\n",
            n = CHANGED_PER_FILE
        ));
        for i in 0..CHANGED_PER_FILE {
            d.push_str(&format!(
                "-    let value_{i} = compute({i}, \"old <text> & more\");\n"
            ));
        }
        for i in 0..CHANGED_PER_FILE {
            d.push_str(&format!(
                "+    let value_{i} = compute({i}, \"new <text> & more\");\n"
            ));
        }
    }
    d
}

/// Seeds the store: 10,000 finished tasks over two environments, the newest with the
/// big diff. Answers the big one's id.
async fn seed(store: &Store) -> TaskId {
    let db = Db::open(&store.path(Bucket::Database)).await.unwrap();
    let ready = |files_changed, lines: usize, diff: Option<Vec<u8>>| AttemptOutcome {
        status: AttemptStatus::Ready,
        final_message: Some("Done: the change is in place and the tests pass.".into()),
        exit_code: Some(0),
        error: None,
        summary: Some(DiffSummary {
            files_changed,
            lines_added: lines as u32,
            lines_removed: lines as u32,
        }),
        diff,
        result_tree: None,
    };
    for i in 0..TASKS - 1 {
        let env = if i % 2 == 0 { "web" } else { "api" };
        let t = db
            .create_task(&task(
                env,
                format!("task {i}: fix the flaky test in module {i}"),
            ))
            .await
            .unwrap();
        db.start_attempt(&t.id, 1).await.unwrap();
        let small = "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+b\n";
        db.finish_attempt(&t.id, 1, &ready(1, 1, Some(small.as_bytes().to_vec())))
            .await
            .unwrap();
    }
    let big = db
        .create_task(&task("web", "rename compute's callers".into()))
        .await
        .unwrap();
    db.start_attempt(&big.id, 1).await.unwrap();
    db.finish_attempt(
        &big.id,
        1,
        &ready(
            DIFF_FILES as u32,
            DIFF_FILES * CHANGED_PER_FILE,
            Some(big_diff().into_bytes()),
        ),
    )
    .await
    .unwrap();
    big.id
}

/// One request's time, from sending it to its body's last byte.
async fn timed(app: &Router, uri: &str, auth: (header::HeaderName, &str)) -> Duration {
    let req = Request::get(uri)
        .header(auth.0, auth.1)
        .body(Body::empty())
        .unwrap();
    let started = Instant::now();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let took = started.elapsed();
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    took
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("data")).unwrap();
    eprintln!("seeding {TASKS} tasks ...");
    let big = seed(&store).await;
    let engine = Engine::open(EngineConfig::new(store, hangar_testkit::init_binary()))
        .await
        .unwrap();
    let token = engine.create_token("default").await.unwrap().token;
    let runner = Runner::new(Arc::new(engine));
    let api = hangar_api::Api {
        runner,
        listener: hangar_api::Listener::Remote { tls: false },
        activity: hangar_api::Activity::default(),
        sites: Arc::from(Vec::new()),
    };
    let cookie = format!(
        "hangar_session={}",
        api.sign_in(token.expose_str())
            .await
            .unwrap()
            .cookie
            .expose_str()
    );
    let bearer = format!("Bearer {}", token.expose_str());
    let app = hangar_web::app(api);
    let as_api = (header::AUTHORIZATION, bearer.as_str());
    let as_page = (header::COOKIE, cookie.as_str());

    let task_reads = [
        format!("/v1/tasks/{big}"),
        format!("/v1/tasks/{big}/events"),
        format!("/v1/tasks/{big}/network"),
        format!("/v1/tasks/{big}/diff"),
    ];
    let page = format!("/ui/tasks/{big}");
    // Warm: the first requests pay for the pool's connections and the page's statics.
    for _ in 0..5 {
        timed(&app, "/v1/tasks?limit=50", as_api.clone()).await;
        timed(&app, "/ui/tasks", as_page.clone()).await;
        timed(&app, &page, as_page.clone()).await;
    }
    let (mut list_api, mut list_page, mut task_api, mut diff_api, mut task_page) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        list_api.push(timed(&app, "/v1/tasks?limit=50", as_api.clone()).await);
        list_page.push(timed(&app, "/ui/tasks", as_page.clone()).await);
        let mut sum = Duration::ZERO;
        for uri in &task_reads {
            let t = timed(&app, uri, as_api.clone()).await;
            if uri.ends_with("/diff") {
                diff_api.push(t);
            }
            sum += t;
        }
        task_api.push(sum);
        task_page.push(timed(&app, &page, as_page.clone()).await);
    }
    print_table(
        &format!(
            "web UI against the JSON API, {TASKS} tasks in the store, {} changed diff lines, {ROUNDS} rounds",
            DIFF_FILES * CHANGED_PER_FILE * 2
        ),
        44,
        &[
            summarize("task list: GET /v1/tasks?limit=50", list_api),
            summarize("task list: GET /ui/tasks (50 rows)", list_page),
            summarize("task: GET /v1/tasks/ID/diff alone", diff_api),
            summarize("task: API task+events+network+diff", task_api),
            summarize("task: GET /ui/tasks/ID (diff inline)", task_page),
        ],
    );
}
