//! A big repository's attempts (root; `cargo bench -p hangar-engine --bench bigrepo`):
//! 100,000 files in nested directories and about 1 GB of history, beside the small
//! example repository (examples/pyfix), with the same trivial setup and the same agent
//! (a plain script changing 10 files), warm (the snapshot cached), interleaved:
//!
//! 1. from task accepted to the agent phase starting, from the stored records (the
//!    task's `created_ms`, the agent phase's `started_ms`): fetch, checkout, mark;
//! 2. the collect phase of the big repository's 10-file change.
//!
//! The repository is generated once with `git fast-import` (incompressible blobs, so the
//! pack really is that big) and cached under the shared test data dir by a key of how it
//! is made, so later runs reuse it. `BIGREPO_TASKS` sets how many tasks of each run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hangar_engine::Engine;
use hangar_spec::{AttemptStatus, Phase, TaskId};
use hangar_store::db::AttemptRecord;
use hangar_testkit::bench::{print_table, report, summarize, Measure, Stat, Target, Unit};
use rand::rngs::StdRng;
use rand::{RngCore as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};

#[path = "../tests/common/mod.rs"]
mod common;

/// Files in the big repository's tree: `src/m<a>/p<b>/q<c>/f<nn>.txt`, 100 per directory.
const FILES: usize = 100_000;
/// Commits of history after the first, each replacing one incompressible blob.
const HISTORY: usize = 100;
/// That blob's size: `HISTORY` of them make the history's gigabyte.
const CHUNK: usize = 10 << 20;
/// Small files each history commit changes too, so the history touches the tree.
const TOUCHED: usize = 10;

/// The agent of both environments: 10 files changed (the big repository's are tracked;
/// the small one gets them as new files).
const AGENT: &str = r#"for i in 0 1 2 3 4 5 6 7 8 9; do
  f="src/m0/p$i/q0/f00.txt"
  mkdir -p "$(dirname "$f")"
  echo "changed by the agent" >> "$f"
done"#;

fn path_of(i: usize) -> String {
    format!(
        "src/m{}/p{}/q{}/f{:02}.txt",
        i / 10_000,
        i / 1000 % 10,
        i / 100 % 10,
        i % 100
    )
}

/// The big repository (bare, branch main), generated on first use.
fn big_repo() -> PathBuf {
    let recipe = format!(
        "bigrepo v1: {FILES} files, {HISTORY} commits of a {CHUNK}-byte random blob and \
         {TOUCHED} small files, fast-import, pack.compression=0"
    );
    let key = hex::encode(&Sha256::digest(recipe.as_bytes())[..8]);
    let dir = hangar_testkit::shared_store()
        .root()
        .join("bench-repos")
        .join(format!("bigrepo-{key}.git"));
    if dir.join("HEAD").is_file() {
        return dir;
    }
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let partial = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let t = Instant::now();
    generate(&partial);
    std::fs::rename(&partial, &dir).unwrap();
    println!(
        "generated the big repository in {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    dir
}

/// Streams the repository into `git fast-import`: one commit of `FILES` small files,
/// then `HISTORY` commits of a random `CHUNK` (stored uncompressed and undeltified: it
/// is random, so neither would gain anything, and both would take minutes).
fn generate(dir: &Path) {
    let git = |args: &[&str]| {
        let ok = Command::new("git").args(args).status().unwrap().success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "--bare", "-b", "main", dir.to_str().unwrap()]);
    std::fs::write(dir.join("info/attributes"), "history/** -delta\n").unwrap();
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "pack.compression=0",
            "fast-import",
            "--quiet",
            "--big-file-threshold=1m",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().unwrap());
    let mut rng = StdRng::seed_from_u64(19);
    let data = |out: &mut dyn std::io::Write, bytes: &[u8]| {
        writeln!(out, "data {}", bytes.len()).unwrap();
        out.write_all(bytes).unwrap();
        out.write_all(b"\n").unwrap();
    };
    let small = |rng: &mut StdRng, path: &str| {
        let mut b = [0u8; 24];
        rng.fill_bytes(&mut b);
        format!("{path}\n{}\n", hex::encode(b)).into_bytes()
    };
    let file = |out: &mut dyn std::io::Write, path: &str, bytes: &[u8]| {
        writeln!(out, "M 100644 inline {path}").unwrap();
        data(out, bytes);
    };
    let commit = |out: &mut dyn std::io::Write, n: usize, msg: &str| {
        write!(
            out,
            "commit refs/heads/main\ncommitter bench <bench@localhost> {} +0000\ndata {}\n{msg}\n",
            1_700_000_000 + n,
            msg.len()
        )
        .unwrap();
    };
    commit(&mut out, 0, "initial");
    file(&mut out, ".gitattributes", b"history/** -delta\n");
    for i in 0..FILES {
        let p = path_of(i);
        let b = small(&mut rng, &p);
        file(&mut out, &p, &b);
    }
    let mut chunk = vec![0u8; CHUNK];
    for c in 1..=HISTORY {
        commit(&mut out, c, &format!("history {c}"));
        rng.fill_bytes(&mut chunk);
        file(&mut out, "history/chunk.bin", &chunk);
        for k in 0..TOUCHED {
            let p = path_of((c * 7919 + k * 104_729) % FILES);
            let b = small(&mut rng, &p);
            file(&mut out, &p, &b);
        }
    }
    drop(out);
    assert!(child.wait().unwrap().success(), "git fast-import");
}

/// An environment over `repo` with the trivial setup and the 10-file agent.
async fn env(engine: &Engine, repo: &Path, kind: &str) -> String {
    let name = format!("bench-{kind}-{}", TaskId::random());
    let source = format!(
        "name = \"{name}\"\nrepo = \"{}\"\ndefault_branch = \"main\"\nimage = \"debian-bookworm\"\n\n\
         [setup]\nscript = \"true\"\n\n[agent]\nharness = \"script\"\ntimeout = \"5m\"\n\
         script = '''\n{AGENT}\n'''\n",
        repo.display()
    );
    engine
        .create_env("bench.toml", &source, repo)
        .await
        .unwrap();
    name
}

fn phase(a: &AttemptRecord, phase: Phase) -> &hangar_store::db::PhaseTiming {
    a.phases
        .iter()
        .find(|p| p.phase == phase)
        .unwrap_or_else(|| panic!("a {phase:?} phase"))
}

fn ms(from: i64, to: i64) -> Duration {
    Duration::from_millis((to - from).max(0) as u64)
}

/// One task to its end: accepted → agent phase started, the agent phase, collect,
/// prepare (the mirror's refresh among it), checkout.
async fn task(engine: &Engine, env: &str) -> [Duration; 5] {
    let (task, a) = common::run(engine, &common::request(env, "change 10 files")).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    let summary = a.summary.as_ref().expect("a diff summary");
    assert_eq!(summary.files_changed, 10, "the agent's 10 files");
    let agent = phase(&a, Phase::Agent);
    let collect = phase(&a, Phase::Collect);
    let prepare = phase(&a, Phase::Prepare);
    let checkout = phase(&a, Phase::Checkout);
    [
        ms(task.created_ms, agent.started_ms),
        ms(agent.started_ms, agent.ended_ms),
        ms(collect.started_ms, collect.ended_ms),
        ms(prepare.started_ms, prepare.ended_ms),
        ms(checkout.started_ms, checkout.ended_ms),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tasks: usize = std::env::var("BIGREPO_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let repo = big_repo();
    let engine = common::engine().await;
    let big = env(&engine, &repo, "big").await;
    let example = hangar_testkit::example_repo("pyfix", "bench-small");
    let small = env(&engine, example.path(), "small").await;

    // Warm-up: the mirrors and the snapshots (the big one's setup clones the gigabyte).
    for name in [&big, &small] {
        let t = Instant::now();
        task(&engine, name).await;
        println!(
            "first task of {name} (builds its snapshot): {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    let (mut big_runs, mut small_runs) = (Vec::new(), Vec::new());
    for _ in 0..tasks {
        big_runs.push(task(&engine, &big).await);
        small_runs.push(task(&engine, &small).await);
    }
    let col = |runs: &[[Duration; 5]], i: usize| runs.iter().map(|r| r[i]).collect::<Vec<_>>();
    print_table(
        &format!("big (100k files, ~1 GB history) and small repositories, warm, {tasks} tasks each interleaved"),
        56,
        &[
            summarize("big: accepted -> agent phase started", col(&big_runs, 0)),
            summarize("small: accepted -> agent phase started", col(&small_runs, 0)),
            summarize("big: prepare (the mirror refreshed)", col(&big_runs, 3)),
            summarize("small: prepare (the mirror refreshed)", col(&small_runs, 3)),
            summarize("big: checkout", col(&big_runs, 4)),
            summarize("small: checkout", col(&small_runs, 4)),
            summarize("big: agent phase (mark + the script)", col(&big_runs, 1)),
            summarize("small: agent phase (mark + the script)", col(&small_runs, 1)),
            summarize("big: collect of a 10-file change", col(&big_runs, 2)),
            summarize("small: collect of a 10-file change", col(&small_runs, 2)),
        ],
    );
    report(&Measure {
        measure: "big repository (100k files, ~1 GB history): accepted -> agent started, warm"
            .into(),
        baseline: Some("small repository (examples/pyfix), same run".into()),
        unit: Unit::Ms,
        ours: Stat::of_durations(&col(&big_runs, 0)),
        base: Some(Stat::of_durations(&col(&small_runs, 0))),
        target: Target::RatioAtMost {
            p50: 2.0,
            p95: None,
        },
        note: None,
    });
    report(&Measure {
        measure: "big repository: collect of a 10-file change".into(),
        baseline: Some("small repository's collect, same run".into()),
        unit: Unit::Ms,
        ours: Stat::of_durations(&col(&big_runs, 2)),
        base: Some(Stat::of_durations(&col(&small_runs, 2))),
        target: Target::AtMost {
            p50: 300.0,
            p95: None,
            max: None,
        },
        note: None,
    });
}
