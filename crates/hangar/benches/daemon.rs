//! Daemon benchmark (root; `cargo bench -p hangar --bench daemon`, or `scripts/bench
//! daemon`) on the cached example environment (examples/pyfix):
//!
//! 1. task accepted -> agent started, in-process (the engine called directly, the
//!    baseline) beside the same through the daemon (`hangar exec --detach`, then `wait`),
//!    one task at a time;
//! 2. a burst of 50 tasks submitted at once through the daemon, their agent waiting on
//!    the model (it sleeps): when each agent started, and that none failed;
//! 3. host memory per idle running attempt: 100 attempts whose agent sleeps, running at
//!    once, against the machine before them (`MemAvailable`, with the daemon's own
//!    growth reported beside it).
//!
//! Every latency comes from the same stored timestamps: the task's creation (when it was
//! accepted) and its agent phase's start.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_engine::{Engine, EngineConfig, Event, Progress, TaskRequest};
use hangar_spec::{Phase, TaskId};
use hangar_testkit::bench::{
    print_table, proc_bytes, report, summarize, Measure, Stat, Target, Unit,
};
use tokio::sync::watch;

#[path = "../tests/common/mod.rs"]
mod common;

const SINGLE: usize = 15;
const BURST: usize = 50;
const IDLE: usize = 100;

/// When `id`'s agent started, as milliseconds since the task was accepted; `None` while
/// it has not.
async fn agent_started(engine: &Engine, id: &TaskId) -> Option<Duration> {
    let handle = engine.task(id.as_str()).await.unwrap();
    let task = handle.record();
    let attempts = engine.attempts(&handle).await.unwrap();
    let agent = attempts
        .first()?
        .phases
        .iter()
        .find(|p| p.phase == Phase::Agent)?;
    Some(Duration::from_millis(
        (agent.started_ms - task.created_ms).max(0) as u64,
    ))
}

/// Accepted -> agent started of a task that ended ready.
async fn accepted_to_agent(engine: &Engine, id: &TaskId) -> Duration {
    let handle = engine.task(id.as_str()).await.unwrap();
    assert_eq!(
        handle.record().status,
        hangar_spec::TaskStatus::Ready,
        "task {id}"
    );
    agent_started(engine, id).await.expect("an agent phase")
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

/// Submits `n` tasks at once through the daemon; their ids.
fn submit(socket: &Path, env: &str, n: usize) -> Vec<String> {
    let exec = ["exec", "--detach", "--env", env, "Fix the failing test"];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let exec = &exec;
                s.spawn(move || hangar(socket, exec))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Creates environment `<name>-<suffix>`: the example's, with its agent replaced by
/// `sleep SECS` (an agent waiting on its model) and no check; its name.
async fn sleeping_env(
    engine: &Engine,
    example: &hangar_testkit::ExampleEnv,
    name: &str,
    suffix: &str,
    secs: u64,
) -> String {
    let env = format!("{name}-{suffix}");
    let source = example
        .source
        .replace(
            "script = \"bash .hangar/agent.sh\"",
            &format!("script = \"sleep {secs}\""),
        )
        .replace("check = \"python3 -m unittest -q\"", "")
        .replace(&format!("name = \"{name}\""), &format!("name = \"{env}\""));
    assert!(source.contains("sleep"), "the example's agent line changed");
    engine
        .create_env(&format!("bench-{suffix}.toml"), &source, &example.dir)
        .await
        .unwrap();
    env
}

/// How many processes on the host run exactly `cmdline`.
fn agents_running(cmdline: &str) -> usize {
    let want: Vec<u8> = cmdline
        .split(' ')
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| *c == want)
        .count()
}

fn mem_available() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    proc_bytes(&meminfo, "MemAvailable").expect("MemAvailable")
}

/// A process's proportional set size (its share of the pages it maps).
fn pss(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    proc_bytes(&rollup, "Pss").expect("Pss")
}

/// What the machine holds, settled: the page cache dropped, the median of a few reads.
fn settled_available() -> u64 {
    std::thread::sleep(Duration::from_secs(2));
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let mut reads: Vec<u64> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            mem_available()
        })
        .collect();
    reads.sort();
    reads[2]
}

const MIB: f64 = (1 << 20) as f64;

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

    // The burst's environment: the example's, its agent waiting on the model.
    let waiting = sleeping_env(&engine, &example, &name, "wait", 5).await;
    // Its snapshot is built first: the burst is on a cached environment.
    hangar(&socket, &["wait", &submit(&socket, &waiting, 1)[0]]);
    // Past two per core, admission asks the machine's load: say what it was.
    let pressure = std::fs::read_to_string("/proc/pressure/cpu").unwrap_or_default();
    println!(
        "CPU pressure before the burst: {}",
        pressure.lines().next().unwrap_or("no PSI")
    );
    let started = Instant::now();
    let ids = submit(&socket, &waiting, BURST);
    for id in &ids {
        hangar(&socket, &["wait", id]);
    }
    let total = started.elapsed();
    let mut burst = Vec::new();
    for id in &ids {
        burst.push(accepted_to_agent(&engine, &id.parse().unwrap()).await);
    }

    print_table(
        "task accepted -> agent started, cached environment",
        56,
        &[
            summarize(
                &format!("in-process engine, one at a time ({SINGLE})"),
                in_process.clone(),
            ),
            summarize(
                &format!("through the daemon, one at a time ({SINGLE})"),
                single.clone(),
            ),
            summarize(
                &format!("through the daemon, {BURST} at once"),
                burst.clone(),
            ),
        ],
    );
    println!(
        "burst of {BURST}: all finished in {:.1}s",
        total.as_secs_f64()
    );
    report(&Measure {
        measure: "task accepted -> agent started, cached environment, through the daemon".into(),
        baseline: Some("the engine in-process".into()),
        unit: Unit::Ms,
        ours: Stat::of_durations(&single),
        base: Some(Stat::of_durations(&in_process)),
        target: Target::AtMost {
            p50: 60.0,
            p95: Some(100.0),
            max: None,
        },
        note: None,
    });
    report(&Measure {
        measure: format!(
            "burst: {BURST} tasks at once, agent waiting on the model: accepted -> agent started"
        ),
        baseline: None,
        unit: Unit::Ms,
        ours: Stat::of_durations(&burst),
        base: None,
        target: Target::AtMost {
            p50: 1000.0,
            p95: None,
            max: Some(2000.0),
        },
        note: Some(format!(
            "none failed; max {:.0} ms",
            Stat::of_durations(&burst).max
        )),
    });

    // Idle attempts: the daemon's growth and the machine's, 100 at once.
    let idle_env = sleeping_env(&engine, &example, &name, "idle", 600).await;
    let warm = submit(&socket, &idle_env, 1);
    while agents_running("sleep 600") == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `cancel` waits for the task to end, and says it ended cancelled with exit code 3.
    let _ = hangar_at(&socket)
        .args(["cancel", &warm[0]])
        .output()
        .unwrap();
    // It ends cancelled: `wait` says so with its exit code.
    let _ = hangar_at(&socket)
        .args(["wait", &warm[0]])
        .output()
        .unwrap();
    let daemon_before = pss(daemon.id());
    let before = settled_available();
    submit(&socket, &idle_env, IDLE);
    // A phase is stored when it ends: a running agent shows as its process, the
    // environment's `sleep 600`, one per sandbox.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let started = agents_running("sleep 600");
        if started >= IDLE {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {started} of {IDLE} idle attempts started in 4 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = settled_available();
    let daemon_during = pss(daemon.id());
    hangar(&socket, &["shutdown"]);
    let _ = daemon.wait();
    let per_attempt = before.saturating_sub(during) as f64 / IDLE as f64 / MIB;
    let daemon_per_attempt = daemon_during.saturating_sub(daemon_before) as f64 / IDLE as f64 / MIB;

    println!(
        "{IDLE} idle attempts: {per_attempt:.2} MiB each on the machine, of which the \
         daemon {daemon_per_attempt:.2} MiB"
    );
    report(&Measure {
        measure: format!("host memory per idle running attempt, {IDLE} at once"),
        baseline: None,
        unit: Unit::MiB,
        ours: Stat::one(per_attempt),
        base: None,
        target: Target::AtMost {
            p50: 4.0,
            p95: None,
            max: None,
        },
        note: Some(format!("of which the daemon {daemon_per_attempt:.2} MiB")),
    });
    engine.cache_gc(None).await.unwrap();
}
