//! Helpers the engine's integration tests share: an engine over the shared test data dir,
//! and a task run to its end with its first attempt, logs and cache outcome.

// Each test binary compiles this module and uses a different part of it.
#![allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]

use std::sync::Arc;

use hangar_engine::cache::CacheInfo;
use hangar_engine::{Engine, EngineConfig, Event, Progress, Task, TaskRequest};
use hangar_spec::TaskId;
use hangar_store::db::{AttemptRecord, TaskRecord};
use tokio::sync::watch;

/// The default configuration of an engine over the shared test data dir, with the Debian
/// image built.
pub fn config() -> EngineConfig {
    let store = hangar_testkit::shared_store();
    hangar_testkit::debian_image(&store);
    EngineConfig::new(store, hangar_testkit::init_binary())
}

pub async fn open(config: EngineConfig) -> Engine {
    Engine::open(config).await.expect("open the engine")
}

/// An engine over the shared test data dir, with the Debian image built.
pub async fn engine() -> Engine {
    open(config()).await
}

pub fn request(env: &str, prompt: &str) -> TaskRequest {
    TaskRequest {
        environment: env.into(),
        prompt: prompt.into(),
        ..TaskRequest::default()
    }
}

pub fn quiet() -> Progress {
    Arc::new(|_: &Event| {})
}

/// Submits `req` and runs it to its end; the task and its first attempt.
pub async fn run(engine: &Engine, req: &TaskRequest) -> (TaskRecord, AttemptRecord) {
    let task = engine.submit(req).await.expect("submit");
    run_id(engine, &task.id).await
}

/// Runs a submitted task to its end; the task and its first attempt.
pub async fn run_id(engine: &Engine, id: &TaskId) -> (TaskRecord, AttemptRecord) {
    let (_tx, rx) = watch::channel(false);
    let task = engine.run_task(id, quiet(), rx).await.expect("run");
    let attempt = engine
        .attempts(&handle(engine, id).await)
        .await
        .unwrap()
        .remove(0);
    (task, attempt)
}

/// The handle of a task of `engine`'s workspace, for reading its parts.
pub async fn handle(engine: &Engine, id: &TaskId) -> Task {
    engine
        .task(id.as_str())
        .await
        .expect("the task, in its workspace")
}

/// Every stored log line of a task, in order.
pub async fn logs(engine: &Engine, id: &TaskId) -> Vec<String> {
    engine
        .logs(&handle(engine, id).await, None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect()
}

/// An attempt's stored diff as text (empty when it has none).
pub async fn diff(engine: &Engine, id: &TaskId, attempt: u32) -> String {
    let diff = engine
        .diff(&handle(engine, id).await, attempt)
        .await
        .unwrap()
        .unwrap_or_default();
    String::from_utf8_lossy(&diff).into_owned()
}

/// How the attempt found its environment.
pub fn cache_of(a: &AttemptRecord) -> CacheInfo {
    serde_json::from_str(a.cache.as_deref().expect("cache recorded")).unwrap()
}
