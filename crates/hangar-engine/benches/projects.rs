//! Real projects' installs, in hangar and on the host, side by side (root; `cargo bench -p
//! hangar-engine --bench projects`): for six (pip), minimist (npm ci) and semver (cargo
//! fetch), each round runs
//!
//! 1. the install auto-install runs, on the host in a copy of the repository with empty
//!    caches (the baseline: what the same machine takes outside any sandbox);
//! 2. a cold task (the snapshot reset, so setup runs the install through hangar's proxy):
//!    the setup phase alone, and the task from accepted to ready, check included;
//! 3. a warm task (a cache hit), accepted to ready, check included.

use std::time::{Duration, Instant};

use hangar_engine::Engine;
use hangar_spec::{AttemptStatus, Phase, TaskId};
use hangar_store::db::AttemptRecord;
use hangar_testkit::bench::{print_table, summarize, Row};
use hangar_testkit::projects::{self, RealProject};

#[path = "../tests/common/mod.rs"]
mod common;

const ROUNDS: usize = 3;

fn phase_ms(a: &AttemptRecord, phase: Phase) -> Duration {
    a.phases
        .iter()
        .filter(|p| p.phase == phase)
        .map(|p| Duration::from_millis((p.ended_ms - p.started_ms).max(0) as u64))
        .sum()
}

/// Runs a task to its end; how long from accepted to ready, and its attempt.
async fn task(engine: &Engine, env: &str) -> (Duration, AttemptRecord) {
    let started = Instant::now();
    let (_, a) = common::run(engine, &common::request(env, "append a line")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    assert!(
        a.check.as_ref().is_some_and(|c| c.passed),
        "the suite failed"
    );
    (started.elapsed(), a)
}

async fn bench(engine: &Engine, p: RealProject, rows: &mut Vec<Row>) {
    let name = format!("bench-{}-{}", p.name, TaskId::random());
    let file = format!(
        "name = \"{name}\"\nrepo = \"{}\"\n\n[agent]\ncheck = \"{}\"\nscript = '''\n\
         echo '{}' >> {}\n'''\n",
        p.repo.path().display(),
        p.check,
        p.line,
        p.file,
    );
    engine
        .create_env("environment.toml", &file, p.repo.path())
        .await
        .unwrap();
    let (mut host, mut setup, mut cold, mut warm) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let copy = tempfile::tempdir().unwrap();
        let caches = tempfile::tempdir().unwrap();
        hangar_testkit::git(
            copy.path(),
            &["clone", "-q", p.repo.path().to_str().unwrap(), "."],
        );
        let t = Instant::now();
        let out = p.host_install(copy.path(), caches.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        host.push(t.elapsed());

        engine.cache_reset(&name).await.unwrap();
        let (took, a) = task(engine, &name).await;
        assert_eq!(common::cache_of(&a).status.as_str(), "miss");
        setup.push(phase_ms(&a, Phase::Setup));
        cold.push(took);
        let (took, b) = task(engine, &name).await;
        assert_eq!(common::cache_of(&b).status.as_str(), "hit");
        warm.push(took);
    }
    let n = p.name;
    rows.push(summarize(&format!("{n}: install on the host"), host));
    rows.push(summarize(
        &format!("{n}: setup in hangar (clone + install)"),
        setup,
    ));
    rows.push(summarize(
        &format!("{n}: cold task, accepted -> ready"),
        cold,
    ));
    rows.push(summarize(
        &format!("{n}: warm task, accepted -> ready"),
        warm,
    ));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let store = hangar_testkit::shared_store();
    hangar_testkit::default_image(&store);
    let engine = common::engine().await;
    let mut rows = Vec::new();
    for p in [projects::six(), projects::minimist(), projects::semver()] {
        bench(&engine, p, &mut rows).await;
    }
    print_table(
        &format!("real projects, {ROUNDS} rounds (the check is each project's suite)"),
        48,
        &rows,
    );
}
