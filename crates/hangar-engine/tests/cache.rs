//! The environment cache in real sandboxes: hits and misses with their reasons, expiry on
//! an injected clock, reset, collection, single flight, what survives a snapshot, and
//! that a failed setup caches nothing.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use hangar_engine::cache::CacheInfo;
use hangar_engine::{Engine, EngineConfig};
use hangar_spec::{Phase, TaskId};
use hangar_store::db::{AttemptRecord, SnapshotRecord, TaskRecord};
use hangar_store::Bucket;

mod common;

/// An engine whose clock runs `offset` ms ahead of the real one.
async fn engine(offset: Arc<AtomicI64>) -> Engine {
    common::open(EngineConfig {
        clock: Arc::new(move || hangar_store::db::now_ms() + offset.load(Ordering::SeqCst)),
        ..common::config()
    })
    .await
}

fn repo() -> tempfile::TempDir {
    hangar_testkit::repo_with(&[("README", b"x\n")])
}

fn source(name: &str, repo: &Path, setup: &str) -> String {
    format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [setup]\nscript = '''\n{setup}\n'''\n\
         [maintenance]\nscript = 'echo maintenance ran'\n\
         [cache]\nttl = '1h'\n\
         [agent]\nscript = '''\necho \"$(cat /opt/from-setup) $(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\\\0' ' ' | grep -o 'sleep 100[0]' | wc -l)\"\n'''\n",
        repo.display()
    )
}

/// A new environment over a new repository, with this setup script.
async fn env(engine: &Engine, prefix: &str, setup: &str) -> (tempfile::TempDir, String) {
    let origin = repo();
    let name = format!("{prefix}-{}", TaskId::random());
    engine
        .create_env(
            "e.toml",
            &source(&name, origin.path(), setup),
            origin.path(),
        )
        .await
        .unwrap();
    (origin, name)
}

async fn run(engine: &Engine, env: &str) -> (TaskRecord, AttemptRecord, CacheInfo, Vec<String>) {
    let (task, a) = common::run(engine, &common::request(env, "go")).await;
    with_logs(engine, task, a).await
}

async fn run_id(
    engine: &Engine,
    id: &TaskId,
) -> (TaskRecord, AttemptRecord, CacheInfo, Vec<String>) {
    let (task, a) = common::run_id(engine, id).await;
    with_logs(engine, task, a).await
}

async fn with_logs(
    engine: &Engine,
    task: TaskRecord,
    a: AttemptRecord,
) -> (TaskRecord, AttemptRecord, CacheInfo, Vec<String>) {
    let (logs, cache) = (common::logs(engine, &task.id).await, common::cache_of(&a));
    (task, a, cache, logs)
}

/// The snapshots of environment `name`, newest first.
async fn snapshots_of(engine: &Engine, name: &str) -> Vec<SnapshotRecord> {
    let all = engine.snapshots().await.unwrap();
    all.into_iter().filter(|s| s.environment == name).collect()
}

fn built(a: &AttemptRecord) -> bool {
    a.phases.iter().any(|p| p.phase == Phase::Setup)
}

#[tokio::test]
async fn hits_and_misses_say_why_expire_reset_and_are_collected() {
    let offset = Arc::new(AtomicI64::new(0));
    let engine = engine(offset.clone()).await;
    let setup = "echo from-setup > /opt/from-setup";
    let (origin, name) = env(&engine, "cache", setup).await;

    let (_, a, cache, logs) = run(&engine, &name).await;
    assert_eq!(
        (cache.status.as_str(), cache.reason.as_str()),
        ("miss", "none yet"),
        "{:?}",
        a.error
    );
    assert!(built(&a));
    assert_eq!(a.final_message.as_deref(), Some("from-setup 0"));
    assert!(logs.contains(&"maintenance ran".to_string()));
    let first = cache.snapshot.clone();
    engine.settle().await;
    let snaps = snapshots_of(&engine, &name).await;
    let committed = &snaps[0];
    assert!(
        committed.durable,
        "the snapshot was synced in the background: {committed:?}"
    );

    let (_, a, cache, logs) = run(&engine, &name).await;
    assert_eq!(cache.status.as_str(), "hit");
    assert_eq!(cache.reason, format!("snapshot {first}, built just now"));
    assert!(!built(&a), "a hit runs no setup");
    assert!(
        logs.contains(&"maintenance ran".to_string()),
        "maintenance runs on every attempt"
    );
    assert_eq!(a.final_message.as_deref(), Some("from-setup 0"));

    let changed = source(&name, origin.path(), "echo changed > /opt/from-setup");
    engine
        .update_env(&name, "e.toml", &changed, origin.path())
        .await
        .unwrap();
    let (_, a, cache, _) = run(&engine, &name).await;
    assert_eq!(
        (cache.status.as_str(), cache.reason.clone()),
        (
            "miss",
            format!("setup script changed since snapshot {first}")
        )
    );
    assert_eq!(a.final_message.as_deref(), Some("changed 0"));
    let second = cache.snapshot.clone();

    // Two hours on: past this environment's TTL (1 h), within everyone else's (12 h by
    // default), so the collection below leaves other tests' snapshots alone.
    offset.store(2 * 3600 * 1000, Ordering::SeqCst);
    let (_, _, cache, _) = run(&engine, &name).await;
    assert_eq!(
        (cache.status.as_str(), cache.reason.clone()),
        (
            "miss",
            format!("expired: snapshot {second} was built 2 h ago")
        )
    );

    let (_, _, cache, _) = run(&engine, &name).await;
    assert_eq!(cache.status.as_str(), "hit", "the rebuilt snapshot serves");
    assert_eq!(
        engine.cache_reset(&name).await.unwrap(),
        2,
        "both snapshots of the environment"
    );
    let (_, _, cache, _) = run(&engine, &name).await;
    assert_eq!(
        (cache.status.as_str(), cache.reason.as_str()),
        ("miss", "reset")
    );

    // Collect what is expired or reset: the first snapshot (other key, expired now) and
    // nothing that the latest build made.
    let before = snapshots_of(&engine, &name).await;
    engine.cache_gc(None).await.unwrap();
    let after = snapshots_of(&engine, &name).await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(after.len(), 1, "before: {before:?}\nafter: {after:?}");
    assert!(after[0].key.starts_with(&second));
    assert!(!after[0].reset);
    let root = hangar_testkit::shared_store().path(Bucket::Snapshots);
    for s in &before {
        assert_eq!(
            root.join(&s.key).is_dir(),
            s.key == after[0].key,
            "{}",
            s.key
        );
    }
}

#[tokio::test]
async fn concurrent_tasks_wait_for_one_build_and_setup_processes_do_not_survive() {
    let engine = engine(Arc::new(AtomicI64::new(0))).await;
    let setup = "setsid sleep 1000 </dev/null >/dev/null 2>&1 &\nsleep 2\necho files-survive > /opt/from-setup";
    let (_origin, name) = env(&engine, "flight", setup).await;
    let submit = || async { engine.submit(&common::request(&name, "go")).await.unwrap() };
    let (a, b) = (submit().await, submit().await);
    let ((_, a, ca, la), (_, b, cb, lb)) =
        tokio::join!(run_id(&engine, &a.id), run_id(&engine, &b.id));
    let ran_setup = |logs: &[String]| logs.iter().any(|l| l == "auto-install: no lockfiles found");
    assert_eq!(
        [ran_setup(&la), ran_setup(&lb)]
            .iter()
            .filter(|x| **x)
            .count(),
        1,
        "one build for two tasks: {ca:?} {cb:?}"
    );
    assert_eq!(ca.snapshot, cb.snapshot);
    for x in [&a, &b] {
        assert_eq!(
            x.final_message.as_deref(),
            Some("files-survive 0"),
            "{:?}",
            x.error
        );
    }
}

#[tokio::test]
async fn a_failed_setup_caches_nothing() {
    let engine = engine(Arc::new(AtomicI64::new(0))).await;
    let (_origin, name) = env(&engine, "broken", "echo half > /opt/half\nexit 4").await;
    for _ in 0..2 {
        let (_, a, cache, _) = run(&engine, &name).await;
        assert_eq!(
            (cache.status.as_str(), cache.reason.as_str()),
            ("miss", "none yet")
        );
        assert_eq!(
            a.error.as_deref(),
            Some("the setup script failed with exit code 4")
        );
    }
    let snaps = engine.snapshots().await.unwrap();
    assert!(!snaps.iter().any(|s| s.environment == name), "{snaps:?}");
}

/// Regression: `cache gc` removed a snapshot between a task finding it and the task's
/// sandbox leasing it, and the task's checkout found no workspace. A held key lock now
/// keeps gc away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_leaves_a_snapshot_alone_while_its_lock_is_held() {
    let engine = engine(Arc::new(AtomicI64::new(0))).await;
    let (_origin, name) = env(&engine, "gc-lock", "echo built > /opt/from-setup").await;
    run(&engine, &name).await;
    let s = snapshots_of(&engine, &name).await.remove(0);
    engine.cache_reset(&name).await.unwrap();
    let root = hangar_testkit::shared_store().path(Bucket::Snapshots);
    let lock = std::fs::File::create(root.join(format!("{}.lock", s.key))).unwrap();
    lock.lock().unwrap();
    engine.cache_gc(None).await.unwrap();
    assert!(root.join(&s.key).is_dir(), "collected while locked");
    drop(lock);
    engine.cache_gc(None).await.unwrap();
    assert!(
        !root.join(&s.key).is_dir(),
        "a reset snapshot stays after gc"
    );
}
