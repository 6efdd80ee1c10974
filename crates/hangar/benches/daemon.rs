//! Daemon benchmark (root; `cargo bench -p hangar --bench daemon`): from task accepted to
//! the agent process started on the cached example environment (examples/pyfix),
//!
//! 1. in-process (the engine called directly: the baseline the cache benchmark measures),
//! 2. through the daemon, one task at a time (`hangar exec --detach`, then `wait`),
//! 3. a burst of 50 tasks submitted at once through the daemon: p50/p95 and total time.
//!
//! Every figure comes from the same stored timestamps: the task's creation (when it was
//! accepted) and its agent phase's start.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_engine::{Engine, EngineConfig, Event, Progress, TaskRequest};
use hangar_spec::{Phase, TaskId};
use hangar_testkit::bench::{print_table, summarize};
use tokio::sync::watch;

#[path = "../tests/common/mod.rs"]
mod common;

const SINGLE: usize = 15;
const BURST: usize = 50;

/// Accepted → agent started, from the task's stored records.
async fn accepted_to_agent(engine: &Engine, id: &TaskId) -> Duration {
    let handle = engine.task(id.as_str()).await.unwrap();
    let task = handle.record();
    assert_eq!(task.status, hangar_spec::TaskStatus::Ready, "task {id}");
    let attempts = engine.attempts(&handle).await.unwrap();
    let agent = attempts[0]
        .phases
        .iter()
        .find(|p| p.phase == Phase::Agent)
        .expect("an agent phase");
    Duration::from_millis((agent.started_ms - task.created_ms).max(0) as u64)
}

/// `hangar` over the shared test data dir, through the daemon at `socket`.
fn hangar_at(socket: &Path) -> std::process::Command {
    let mut cmd = common::hangar(hangar_testkit::shared_store().root());
    cmd.env("HANGAR_SOCKET", socket);
    cmd
}

fn hangar(socket: &Path, args: &[&str]) -> String {
    let out = hangar_at(socket).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "hangar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let store = hangar_testkit::shared_store();
    hangar_testkit::debian_image(&store);
    let engine = Engine::open(EngineConfig::new(store, hangar_testkit::init_binary()))
        .await
        .unwrap();
    let name = format!("bench-{}", TaskId::random());
    let example = hangar_testkit::example_env("pyfix", &name);
    engine
        .create_env("bench.toml", &example.source, &example.dir)
        .await
        .unwrap();
    let request = TaskRequest {
        environment: name.clone(),
        prompt: "Fix the failing test".into(),
        ..TaskRequest::default()
    };
    let quiet: Progress = Arc::new(|_: &Event| {});

    let mut in_process = Vec::new();
    for i in 0..=SINGLE {
        let task = engine.submit(&request).await.unwrap();
        let (_tx, rx) = watch::channel(false);
        engine.run_task(&task.id, quiet.clone(), rx).await.unwrap();
        if i > 0 {
            // The first builds the snapshot.
            in_process.push(accepted_to_agent(&engine, &task.id).await);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bench.sock");
    let mut daemon = hangar_at(&socket)
        .args(["serve"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exec = ["exec", "--detach", "--env", &name, "Fix the failing test"];
    let mut single = Vec::new();
    for _ in 0..SINGLE {
        let id = hangar(&socket, &exec);
        hangar(&socket, &["wait", &id]);
        single.push(accepted_to_agent(&engine, &id.parse().unwrap()).await);
    }

    let started = Instant::now();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..BURST)
            .map(|_| {
                let (socket, exec) = (&socket, &exec);
                s.spawn(move || hangar(socket, exec))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for id in &ids {
        hangar(&socket, &["wait", id]);
    }
    let total = started.elapsed();
    let mut burst = Vec::new();
    for id in &ids {
        burst.push(accepted_to_agent(&engine, &id.parse().unwrap()).await);
    }
    hangar(&socket, &["shutdown"]);
    let _ = daemon.wait();

    print_table(
        "task accepted -> agent started, cached environment",
        56,
        &[
            summarize(
                &format!("in-process engine, one at a time ({SINGLE})"),
                in_process,
            ),
            summarize(
                &format!("through the daemon, one at a time ({SINGLE})"),
                single,
            ),
            summarize(&format!("through the daemon, {BURST} at once"), burst),
        ],
    );
    println!(
        "burst of {BURST}: all finished in {:.1}s ({} attempts at once)",
        total.as_secs_f64(),
        hangar_engine::default_slots()
    );
    engine.cache_gc(None).await.unwrap();
}
