//! Limits in real sandboxes: an environment without `[resources]` still gets the
//! machine's memory, pids and CPU limits; an agent writing past `[resources] disk` is
//! stopped with the reason and nothing of it is kept; setup and maintenance scripts
//! that hang end at their timeouts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hangar_engine::{Engine, Event, Progress};
use hangar_sandbox::cgroup::CgroupLayout;
use hangar_sandbox::SandboxId;
use hangar_spec::{AttemptStatus, Phase, TaskId, TaskStatus};
use hangar_testkit::repo_with as repo;
use tokio::sync::watch;

mod common;

use common::{engine, request};

/// A new environment over `repo`; `extra` is more of the file (tables).
async fn env(engine: &Engine, repo: &Path, extra: &str) -> String {
    let name = format!("l-{}", TaskId::random());
    let source = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n{extra}",
        repo.display()
    );
    engine
        .create_env("test.toml", &source, repo)
        .await
        .expect("create the environment");
    name
}

/// The first of `files` that one of the sandbox cgroup's directories holds, read.
fn cgroup_value(dirs: &[PathBuf], files: &[&str]) -> String {
    dirs.iter()
        .flat_map(|d| files.iter().map(move |f| d.join(f)))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| panic!("none of {files:?} in {dirs:?}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_without_resources_gets_the_machines_limits() {
    let engine = engine().await;
    let origin = repo(&[("README", b"x\n")]);
    let name = env(
        &engine,
        origin.path(),
        "[agent]\nscript = 'echo waiting; sleep 600'\n",
    )
    .await;
    let task = engine.submit(&request(&name, "wait")).await.unwrap();
    let (agent_tx, mut agent_started) = tokio::sync::mpsc::unbounded_channel();
    let progress: Progress = Arc::new(move |e: &Event| {
        if let Event::PhaseStarted {
            phase: Phase::Agent,
            ..
        } = e
        {
            let _ = agent_tx.send(());
        }
    });
    let (cancel, rx) = watch::channel(false);
    let runner = {
        let (engine, id) = (
            engine.in_workspace(&"default".parse().unwrap()),
            task.id.clone(),
        );
        tokio::spawn(async move { engine.run_task(&id, progress, rx).await })
    };
    agent_started.recv().await.expect("the agent phase starts");
    let a = engine
        .attempts(&common::handle(&engine, &task.id).await)
        .await
        .unwrap()
        .remove(0);
    let id = SandboxId::new(a.sandbox.expect("sandbox recorded")).unwrap();
    let layout = CgroupLayout::detect();
    let dirs = layout.existing_dirs(&layout.sandbox_path(&id.host_name()));
    let memory = cgroup_value(&dirs, &["memory.limit_in_bytes", "memory.max"]);
    let pids = cgroup_value(&dirs, &["pids.max"]);
    let quota = cgroup_value(&dirs, &["cpu.cfs_quota_us", "cpu.max"]);
    cancel.send(true).unwrap();
    let task = runner.await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Cancelled);

    let limits = engine.default_limits();
    assert_eq!(memory, limits.memory.to_string());
    assert_eq!(pids, limits.pids.to_string());
    let quota: i64 = quota.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(quota, (limits.cpus * 100_000.0) as i64);
    let logs = common::logs(&engine, &task.id).await;
    assert!(
        logs.iter()
            .any(|l| l.starts_with("limits: memory ") && l.contains("pids 4096 (default)")),
        "{logs:#?}"
    );
}

#[tokio::test]
async fn an_agent_writing_past_the_disk_limit_is_stopped_and_nothing_is_kept() {
    let engine = engine().await;
    let origin = repo(&[("README", b"x\n")]);
    // Bounded at 1 GiB so a broken watchdog fails the test rather than the disk.
    let name = env(
        &engine,
        origin.path(),
        "[resources]\ndisk = \"32MiB\"\n\
         [agent]\nscript = '''\nfor i in $(seq 256); do head -c 4194304 /dev/zero >> big; sleep 0.05; done\necho wrote it all\n'''\n",
    )
    .await;
    let (task, a) = common::run(&engine, &request(&name, "fill the disk")).await;
    assert_eq!(task.status, TaskStatus::Error);
    assert_eq!(a.status, AttemptStatus::Error);
    let error = a.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("the sandbox wrote ")
            && error.ends_with(
                "to its disk, past `[resources] disk` (32MiB), and every process in it was stopped"
            ),
        "{error}"
    );
    // The engine is over the shared test data dir.
    let kept = hangar_testkit::shared_store()
        .path(hangar_store::Bucket::Kept)
        .join(format!("{}-{}", task.id, a.index));
    assert!(!kept.exists(), "{} was kept", kept.display());
    let id = SandboxId::new(a.sandbox.expect("sandbox recorded")).unwrap();
    let store = hangar_testkit::shared_store();
    hangar_testkit::assert_no_traces(&hangar_testkit::host(&store), &id);
}

#[tokio::test]
async fn hung_setup_and_maintenance_scripts_end_at_their_timeouts() {
    let engine = engine().await;
    let origin = repo(&[("README", b"x\n")]);
    let name = env(
        &engine,
        origin.path(),
        "[setup]\nscript = 'echo installing; sleep 600'\ntimeout = \"2s\"\n\
         [agent]\nscript = 'echo hi'\n",
    )
    .await;
    let (task, a) = common::run(&engine, &request(&name, "setup hangs")).await;
    assert_eq!(task.status, TaskStatus::Error);
    assert_eq!(
        a.error.as_deref(),
        Some("the setup script did not finish within 2s and was stopped")
    );

    let name = env(
        &engine,
        origin.path(),
        "[maintenance]\nscript = 'echo refreshing; sleep 600'\ntimeout = \"2s\"\n\
         [agent]\nscript = 'echo hi'\n",
    )
    .await;
    let (task, a) = common::run(&engine, &request(&name, "maintenance hangs")).await;
    assert_eq!(task.status, TaskStatus::Error);
    assert_eq!(
        a.error.as_deref(),
        Some("the maintenance script did not finish within 2s and was stopped")
    );
}
