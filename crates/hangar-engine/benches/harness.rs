//! Harness overhead (root; `cargo bench -p hangar-engine --bench harness`): the same
//! scripted task (the model asks for a file to be written, then answers) run by Codex CLI
//! and Claude Code two ways, interleaved in one run:
//!
//! - bare: the CLI's own command line (docs/harnesses.md), exec'd in a sandbox over the
//!   same image and CLI layer, in a clone of the same repository (both CLIs read the git
//!   state of their working directory at start), its model served on the sandbox's own
//!   loopback;
//! - through hangar: a task's agent phase as the adapter runs it (its config files, the
//!   step wrapper, the model reached through the proxy's forwarder with the key
//!   injected, the CLI's output read back and judged, its events stored).
//!
//! The difference is what the adapter adds to an agent run (issue 19's target: <= +30 ms
//! at p50), reported per CLI with `hangar_testkit::bench::report`; the note says how much
//! of the phase passed before the CLI started (the workspace's record, MARK, and the
//! run's files).

use std::time::{Duration, Instant};

use hangar_engine::{Engine, TaskRequest};
use hangar_harness::Kind;
use hangar_sandbox::{ExecSpec, Sandbox, SandboxSpec};
use hangar_secrets::Secret;
use hangar_spec::{Phase, TaskId, TaskStatus};
use hangar_testkit::bench::{print_table, report, summarize, Measure, Row, Stat, Target, Unit};
use hangar_testkit::model::{Behavior, ModelServer, Turn};
use tokio::sync::watch;

fn runs() -> usize {
    std::env::var("HANGAR_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10)
}
#[path = "../tests/common/mod.rs"]
mod common;

const KEY: &str = "sk-bench-key-0123456789";

fn script() -> Behavior {
    Behavior::Script(vec![
        Turn::Write {
            path: "hello.txt".into(),
            content: "hi\n".into(),
        },
        Turn::Text("created hello.txt".into()),
    ])
}

/// The CLI's bare command line, with its model at `base` (no path).
fn bare_command(kind: Kind, base: &str) -> String {
    match kind {
        Kind::Codex => format!(
            "rm -rf /tmp/ch /w/hello.txt && mkdir -p /tmp/ch && cd /w && CODEX_HOME=/tmp/ch MODEL_KEY={KEY} \
             codex exec --json --ephemeral --skip-git-repo-check \
             --dangerously-bypass-approvals-and-sandbox -m m -C /w \
             -c model_provider='\"x\"' \
             -c 'model_providers.x={{name=\"x\",base_url=\"{base}/v1\",env_key=\"MODEL_KEY\",wire_api=\"responses\"}}' \
             -o /tmp/ch/last.txt 'create hello.txt' </dev/null >/dev/null"
        ),
        Kind::Claude => format!(
            "rm -rf /tmp/cl /w/hello.txt && mkdir -p /tmp/cl && cd /w && HOME=/tmp/cl \
             CLAUDE_CONFIG_DIR=/tmp/cl/.claude ANTHROPIC_BASE_URL={base} ANTHROPIC_API_KEY={KEY} \
             CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 CLAUDE_CODE_MAX_RETRIES=0 IS_SANDBOX=1 \
             claude -p 'create hello.txt' --output-format stream-json --verbose \
             --permission-mode bypassPermissions --model m </dev/null >/dev/null"
        ),
        _ => unreachable!("the bench covers codex and claude"),
    }
}

/// The layer hangar installed `kind`'s CLI into (found by the install it records).
fn cli_layer(store: &hangar_store::Store, kind: Kind) -> std::path::PathBuf {
    let id = hangar_harness::harness(kind).install().unwrap().id;
    std::fs::read_dir(store.path(hangar_store::Bucket::Harnesses))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "done")
                && std::fs::read_to_string(p).is_ok_and(|s| s == id)
        })
        .map(|p| p.with_extension(""))
        .expect("the CLI's layer (run a task first)")
}

/// The agent phase's duration, and how long of it passed before the CLI started (the
/// first line the phase logged after hangar's own note, which is written just before the
/// CLI's step).
async fn through_hangar(engine: &Engine, env: &str) -> (Duration, Duration) {
    let task = engine
        .submit(&TaskRequest {
            environment: env.into(),
            prompt: "create hello.txt".into(),
            ..TaskRequest::default()
        })
        .await
        .unwrap();
    let (_tx, rx) = watch::channel(false);
    // When the agent phase's note came (ms since the epoch, as the phases are timed).
    let noted = std::sync::Arc::new(std::sync::Mutex::new(None::<i64>));
    let seen = noted.clone();
    let progress = move |e: &hangar_engine::Event| {
        if let hangar_engine::Event::Line(l) = e {
            if l.phase == Phase::Agent && l.line.starts_with("agent: ") {
                seen.lock().unwrap().get_or_insert(l.ts_ms);
            }
        }
    };
    let done = engine
        .run_task(&task.id, std::sync::Arc::new(progress), rx)
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Ready);
    let attempt = engine
        .attempts(&common::handle(engine, &task.id).await)
        .await
        .unwrap()
        .remove(0);
    let t = attempt
        .phases
        .iter()
        .find(|p| p.phase == Phase::Agent)
        .expect("an agent phase");
    let before = noted.lock().unwrap().expect("the agent's note") - t.started_ms;
    (
        Duration::from_millis((t.ended_ms - t.started_ms) as u64),
        Duration::from_millis(before.max(0) as u64),
    )
}

/// The CLI's name as the measures call it.
fn cli_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Codex => "Codex CLI",
        Kind::Claude => "Claude Code",
        _ => unreachable!("the bench covers codex and claude"),
    }
}

async fn bench(engine: &Engine, kind: Kind, rows: &mut Vec<Row>) -> Measure {
    let model = ModelServer::start("127.0.0.1".parse().unwrap(), script());
    let name = format!("bench-{kind}-{}", TaskId::random());
    let repo = hangar_testkit::repo_with(&[("README.md", b"bench\n")]);
    let path = if kind == Kind::Claude { "" } else { "/v1" };
    let file = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n[secrets.K]\n[agent]\n\
         harness = \"{kind}\"\nmodel = \"m\"\nendpoint = \"{}{path}\"\nkey = \"K\"\n",
        repo.path().display(),
        model.base_url()
    );
    engine
        .create_env("b.toml", &file, repo.path())
        .await
        .unwrap();
    engine
        .secret_set(&name, "K", &Secret::new(KEY.into()).unwrap())
        .await
        .unwrap();
    through_hangar(engine, &name).await; // warm-up: snapshot and the CLI's layer

    let store = hangar_testkit::shared_store();
    let mut lowers = vec![cli_layer(&store, kind)];
    lowers.extend(hangar_image::layer_dirs(&store, &hangar_testkit::debian_image(&store)).unwrap());
    let mut spec = SandboxSpec::new(lowers);
    spec.mounts.push(hangar_sandbox::BindMount {
        source: repo.path().to_path_buf(),
        destination: "/src".into(),
        read_only: true,
    });
    let sb = Sandbox::create(&hangar_testkit::host(&store), spec)
        .await
        .unwrap();
    let clone = sb
        .output(ExecSpec::new([
            "git",
            "-c",
            "safe.directory=*",
            "clone",
            "-q",
            "/src",
            "/w",
        ]))
        .await
        .unwrap();
    assert!(
        clone.status.success(),
        "{}",
        String::from_utf8_lossy(&clone.stderr)
    );
    let inside = ModelServer::serve(
        sb.listen("127.0.0.1:18100".parse().unwrap()).unwrap(),
        script(),
    );
    let prefix = hangar_harness::prefix(kind);
    let bare = || {
        ExecSpec::new(["bash", "-c", &bare_command(kind, "http://127.0.0.1:18100")])
            .env(
                "PATH",
                format!("{prefix}/bin:{prefix}/node/bin:/usr/local/bin:/usr/bin:/bin"),
            )
            .env("HOME", "/root")
            // Side requests (update checks and the like) are refused at once through
            // hangar's proxy; bare, with no route, the CLI waits them out (codex: 5 s).
            // A proxy address nothing listens on refuses as fast, so both compare fairly.
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1")
    };
    let out = sb.output(bare()).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (mut plain, mut hangar, mut before) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs() {
        let t = Instant::now();
        let out = sb.output(bare()).await.unwrap();
        assert!(out.status.success());
        plain.push(t.elapsed());
        let (phase, pre) = through_hangar(engine, &name).await;
        hangar.push(phase);
        before.push(pre);
    }
    assert!(inside.requests().iter().any(|r| r.is_model_call()));
    sb.destroy().await.unwrap();
    let cli = cli_name(kind);
    let pre = Stat::of_durations(&before);
    let m = Measure {
        measure: format!("harness adapter: {cli} agent phase"),
        baseline: Some(format!("bare {cli} in a sandbox")),
        unit: Unit::Ms,
        ours: Stat::of_durations(&hangar),
        base: Some(Stat::of_durations(&plain)),
        target: Target::OverAtMost { p50: 30.0 },
        note: Some(format!(
            "before the CLI starts: p50 {:.0} ms, p95 {:.0} ms",
            pre.p50, pre.p95
        )),
    };
    rows.push(summarize(&format!("{kind}: bare in a sandbox"), plain));
    rows.push(summarize(
        &format!("{kind}: through hangar's adapter"),
        hangar,
    ));
    rows.push(summarize(&format!("{kind}: of it before the CLI"), before));
    m
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let engine = common::engine().await;
    let kinds = [Kind::Codex, Kind::Claude];
    let mut rows = Vec::new();
    let mut measures = Vec::new();
    for kind in kinds {
        measures.push(bench(&engine, kind, &mut rows).await);
    }
    print_table(
        &format!(
            "harness overhead ({} runs each, interleaved; agent phase only)",
            runs()
        ),
        40,
        &rows,
    );
    for (kind, three) in kinds.iter().zip(rows.chunks(3)) {
        let added = three[1].p50.as_secs_f64() - three[0].p50.as_secs_f64();
        let label = format!("{kind}: added by hangar (p50)");
        println!("{label:<40} {:>9.1}", added * 1000.0);
    }
    for m in &measures {
        report(m);
    }
}
