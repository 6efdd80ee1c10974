//! Environment cache benchmark (root; `cargo bench -p hangar-engine --bench cache`):
//!
//! 1. From task accepted (`submit` returns) to the agent process starting, on the example
//!    environment (examples/pyfix), cold (the snapshot is reset, so setup runs) and warm
//!    (a cache hit), interleaved in one run.
//! 2. Committing a snapshot: `destroy_keeping_upper` (a rename) after setup wrote 10 MB and
//!    1 GB, beside the copy a snapshot would otherwise cost (`cp -a` of the same upper +
//!    sync), so the O(1) commit is measured against the O(size) baseline. The background
//!    `make_durable` (syncfs) that follows a commit off the critical path is shown too.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_engine::{Engine, Event, Progress, TaskRequest};
use hangar_sandbox::{ExecSpec, Sandbox, SandboxSpec};
use hangar_spec::{Phase, TaskId};
use hangar_testkit::bench::{print_table, summarize, Row};
use tokio::sync::watch;

#[path = "../tests/common/mod.rs"]
mod common;

const TASKS: usize = 15;

/// Accepted → agent started for one task.
async fn to_agent(engine: &Engine, env: &str) -> Duration {
    let started = Arc::new(Mutex::new(None::<Instant>));
    let seen = started.clone();
    let progress: Progress = Arc::new(move |e: &Event| {
        if let Event::PhaseStarted {
            phase: Phase::Agent,
            ..
        } = e
        {
            seen.lock().unwrap().get_or_insert_with(Instant::now);
        }
    });
    let task = engine
        .submit(&TaskRequest {
            environment: env.into(),
            prompt: "Fix the failing test".into(),
            ..TaskRequest::default()
        })
        .await
        .unwrap();
    let accepted = Instant::now();
    let (_tx, rx) = watch::channel(false);
    let done = engine.run_task(&task.id, progress, rx).await.unwrap();
    assert_eq!(done.status, hangar_spec::TaskStatus::Ready);
    let at = started.lock().unwrap().expect("the agent started");
    at - accepted
}

/// Keeping an upper that holds `bytes` of fresh data, against copying it.
async fn keep(bytes: u64, rows: &mut Vec<Row>) {
    let store = hangar_testkit::shared_store();
    let layers = hangar_image::layer_dirs(&store, &hangar_testkit::debian_image(&store)).unwrap();
    let host = hangar_testkit::host(&store);
    let (mut kept, mut synced, mut copied) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let sb = Sandbox::create(&host, SandboxSpec::new(layers.clone()))
            .await
            .unwrap();
        let out = sb
            .output(ExecSpec::new([
                "/bin/sh",
                "-c",
                &format!("head -c {bytes} /dev/urandom > /opt/blob"),
            ]))
            .await
            .unwrap();
        assert!(out.status.success());
        // Keep, then sync what it kept (the engine does this in the background), then copy.
        let dest = store
            .path(hangar_store::Bucket::Tmp)
            .join(format!("kept-{}", TaskId::random()));
        let t = Instant::now();
        sb.destroy_keeping_upper(dest.clone()).await.unwrap();
        kept.push(t.elapsed());
        let t = Instant::now();
        hangar_sandbox::make_durable(&dest).unwrap();
        synced.push(t.elapsed());
        let copy = store
            .path(hangar_store::Bucket::Tmp)
            .join(format!("copy-{}", TaskId::random()));
        let t = Instant::now();
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&dest)
            .arg(&copy)
            .status()
            .unwrap()
            .success());
        hangar_sandbox::make_durable(&copy).unwrap();
        copied.push(t.elapsed());
        std::fs::remove_dir_all(dest).unwrap();
        std::fs::remove_dir_all(copy).unwrap();
    }
    let size = hangar_spec::format_bytes(bytes);
    rows.push(summarize(
        &format!("commit snapshot ({size}): destroy + rename"),
        kept,
    ));
    rows.push(summarize(
        &format!("  then in the background ({size}): syncfs"),
        synced,
    ));
    rows.push(summarize(
        &format!("baseline ({size}): cp -a of the upper + sync"),
        copied,
    ));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let engine = common::engine().await;
    let name = format!("bench-{}", TaskId::random());
    let example = hangar_testkit::example_env("pyfix", &name);
    engine
        .create_env("bench.toml", &example.source, &example.dir)
        .await
        .unwrap();

    to_agent(&engine, &name).await; // warm-up: mirror, layers, first snapshot
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..TASKS {
        engine.cache_reset(&name).await.unwrap();
        cold.push(to_agent(&engine, &name).await);
        warm.push(to_agent(&engine, &name).await);
    }
    let mut rows = vec![
        summarize("task accepted -> agent started, cold (setup runs)", cold),
        summarize("task accepted -> agent started, warm (cache hit)", warm),
    ];
    keep(10 << 20, &mut rows).await;
    keep(1 << 30, &mut rows).await;
    engine.cache_gc(None).await.unwrap();

    print_table(
        &format!(
            "environment cache ({TASKS} cold and {TASKS} warm tasks interleaved; 3 keeps each)"
        ),
        62,
        &rows,
    );
}
