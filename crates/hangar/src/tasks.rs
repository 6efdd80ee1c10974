//! The environment and task commands: `env ...`, `exec`, `list`, `show`, `logs`, `diff`,
//! `apply`. Printing only; the engine does the work.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hangar_engine::{Engine, EngineError, Event, TaskRequest};
use hangar_spec::{Approval, Harness, Phase, TaskId, TaskStatus};
use hangar_store::db::{AttemptRecord, DiffSummary, LogLine, Stream, TaskQuery, TaskRecord};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

/// Exit code of `hangar exec` when the task ended in error or was cancelled.
pub const EXIT_TASK_FAILED: u8 = 3;

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Create an environment from a file, or from flags.
    Create(EnvCreateArgs),
    /// List environments.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show an environment's file (or, with --json, its parsed form).
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace an environment's file; its version goes up by one.
    Update {
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete an environment (its tasks stay).
    Delete { name: String },
    /// Which environments serve a repository (`owner/name`, a URL or a path).
    Resolve {
        #[arg(long)]
        repo: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// List environment snapshots.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Make an environment's next task rebuild its snapshot.
    Reset { environment: String },
    /// Remove expired and reset snapshots (and, past --budget, the least recently used).
    Gc {
        /// Keep at most this much, e.g. 20GiB.
        #[arg(long, value_parser = hangar_spec::parse_bytes)]
        budget: Option<u64>,
    },
    /// Push an environment's snapshot to a registry, as an image (its base image's
    /// layers plus the snapshot layer).
    Export {
        environment: String,
        reference: String,
        /// Use plain HTTP for this registry.
        #[arg(long)]
        insecure: bool,
        #[arg(long)]
        json: bool,
    },
    /// Pull a snapshot made by `cache export` and use it for its environment here.
    Import {
        reference: String,
        /// The environment to use it for (default: the one it was exported from).
        #[arg(long = "env")]
        environment: Option<String>,
        /// Use plain HTTP for this registry.
        #[arg(long)]
        insecure: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct EnvCreateArgs {
    /// The environment's name (with flags; a file names itself).
    name: Option<String>,
    /// An environment file (`.hangar/environment.toml`).
    #[arg(long, conflicts_with_all = ["repo", "image", "default_branch", "setup", "maintenance", "agent_script", "env"])]
    file: Option<PathBuf>,
    /// The repository: a git URL or a local path.
    #[arg(long)]
    repo: Option<String>,
    /// The image (default: debian-bookworm).
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    default_branch: Option<String>,
    /// Setup script (bash).
    #[arg(long)]
    setup: Option<String>,
    /// Maintenance script (bash).
    #[arg(long)]
    maintenance: Option<String>,
    /// The agent script, for the `script` harness (bash).
    #[arg(long)]
    agent_script: Option<String>,
    /// Environment variables, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    /// The environment to run in.
    #[arg(long = "env")]
    environment: String,
    /// Check out this branch after setup.
    #[arg(long, conflicts_with = "commit")]
    branch: Option<String>,
    /// Check out this commit after setup.
    #[arg(long)]
    commit: Option<String>,
    /// Run this file as the agent (the `script` harness) instead of the environment's.
    #[arg(long)]
    script: Option<PathBuf>,
    /// The agent CLI to run, instead of the environment's `[agent] harness`.
    #[arg(long, value_parser = parse_spelled::<Harness>)]
    harness: Option<Harness>,
    /// How much the agent may change: read-only, auto or full-access.
    #[arg(long, value_parser = parse_spelled::<Approval>)]
    approval: Option<Approval>,
    /// Best-of-N: run this many attempts side by side (1 to 4), ranked by `[agent] check`
    /// and then by the smaller diff.
    #[arg(long, default_value_t = 1)]
    attempts: u32,
    /// Return once the task is accepted; it runs in the background.
    #[arg(long)]
    detach: bool,
    /// Do not stream the phases' output.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// What to do.
    prompt: String,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
    /// Only tasks of this environment.
    #[arg(long = "env")]
    environment: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Continue after a previous page (its `cursor`).
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Args)]
pub struct TaskArgs {
    /// A task id, or a unique prefix of one.
    task: String,
    /// Which attempt (default: the best ready one, else the first).
    #[arg(long, conflicts_with = "best")]
    attempt: Option<u32>,
    /// The best attempt: ready, its check passed, the smallest diff (an error if none
    /// is ready).
    #[arg(long)]
    best: bool,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn env(engine: &Engine, cmd: EnvCommand) -> Result<()> {
    match cmd {
        EnvCommand::Create(args) => {
            let (file, source, base) = match &args.file {
                Some(path) => env_file(path)?,
                None => (
                    "the command line".to_string(),
                    source_from_flags(&args)?,
                    std::env::current_dir()?,
                ),
            };
            let rec = engine.create_env(&file, &source, &base).await?;
            eprintln!("created environment {} (repository {})", rec.name, rec.repo);
        }
        EnvCommand::List { json } => {
            let envs = engine.db().envs(engine.workspace()).await?;
            let mut rows = Vec::new();
            for rec in envs {
                let (_, env) = engine.env(&rec.name).await?;
                rows.push(json!({
                    "name": rec.name,
                    "version": rec.version,
                    "repo": rec.repo,
                    "image": env.image,
                    "created_at": rfc3339(rec.created_ms),
                    "updated_at": rfc3339(rec.updated_ms),
                }));
            }
            if json {
                print_json(&json!({ "environments": rows }))?;
            } else {
                println!(
                    "{:<24} {:>7}  {:<20} REPOSITORY",
                    "NAME", "VERSION", "IMAGE"
                );
                for r in rows {
                    println!(
                        "{:<24} {:>7}  {:<20} {}",
                        r["name"].as_str().unwrap_or(""),
                        r["version"],
                        r["image"].as_str().unwrap_or(""),
                        r["repo"].as_str().unwrap_or("")
                    );
                }
            }
        }
        EnvCommand::Show { name, json } => {
            let (rec, env) = engine.env(&name).await?;
            if json {
                print_json(&json!({
                    "name": rec.name,
                    "version": rec.version,
                    "created_at": rfc3339(rec.created_ms),
                    "updated_at": rfc3339(rec.updated_ms),
                    "spec": env,
                }))?;
            } else {
                print!("{}", rec.source);
            }
        }
        EnvCommand::Update { name, file } => {
            let (file, source, base) = env_file(&file)?;
            let rec = engine.update_env(&name, &file, &source, &base).await?;
            eprintln!(
                "updated environment {} to version {}",
                rec.name, rec.version
            );
        }
        EnvCommand::Delete { name } => {
            engine.db().delete_env(engine.workspace(), &name).await?;
            eprintln!("deleted environment {name}");
        }
        EnvCommand::Resolve { repo, json } => {
            let found = engine.resolve_env(&repo).await?;
            if json {
                let names: Vec<_> = found
                    .iter()
                    .map(|e| json!({"name": e.name, "repo": e.repo}))
                    .collect();
                print_json(&json!({ "environments": names }))?;
            } else if found.is_empty() {
                bail!(
                    "failed to find an environment for repository `{repo}` (see `hangar env list`)"
                );
            } else {
                for e in found {
                    println!("{}", e.name);
                }
            }
        }
    }
    Ok(())
}

pub async fn cache(engine: &Engine, cmd: CacheCommand) -> Result<()> {
    match cmd {
        CacheCommand::Ls { json } => {
            let snaps = engine.snapshots().await?;
            let rows: Vec<_> = snaps
                .iter()
                .map(|s| {
                    json!({
                        "environment": s.environment,
                        "key": s.key,
                        "size": s.size,
                        "built_at": rfc3339(s.created_ms),
                        "expires_at": rfc3339(s.expires_ms),
                        "last_used_at": rfc3339(s.last_used_ms),
                        "hits": s.hits,
                        "reset": s.reset,
                        "durable": s.durable,
                        "source": s.source,
                    })
                })
                .collect();
            if json {
                return print_json(&json!({ "snapshots": rows }));
            }
            println!(
                "{:<24} {:<6} {:>10}  {:<20} {:<20} {:>5}",
                "ENVIRONMENT", "KEY", "SIZE", "BUILT", "EXPIRES", "HITS"
            );
            for s in &snaps {
                println!(
                    "{:<24} {:<6} {:>10}  {:<20} {:<20} {:>5}{}",
                    s.environment,
                    &s.key[..4],
                    hangar_spec::format_bytes(s.size.max(0) as u64),
                    &rfc3339(s.created_ms)[..19],
                    &rfc3339(s.expires_ms)[..19],
                    s.hits,
                    match (&s.source, s.reset) {
                        (_, true) => "  (reset)".to_string(),
                        (Some(from), false) => format!("  (imported from {from})"),
                        (None, false) => String::new(),
                    }
                );
            }
        }
        CacheCommand::Reset { environment } => {
            let n = engine.cache_reset(&environment).await?;
            eprintln!("reset {n} snapshot(s) of {environment}; its next task rebuilds");
        }
        CacheCommand::Gc { budget } => {
            let r = engine.cache_gc(budget).await?;
            eprintln!(
                "removed {} snapshot(s), {} freed{}",
                r.snapshots,
                hangar_spec::format_bytes(r.bytes),
                if r.orphans > 0 {
                    format!(", and {} left by an interrupted build", r.orphans)
                } else {
                    String::new()
                }
            );
        }
        CacheCommand::Export {
            environment,
            reference,
            insecure,
            json,
        } => {
            let opts = hangar_image::RegistryOptions { insecure };
            let out = engine
                .cache_export(&environment, &reference, &opts, &|l| eprintln!("{l}"))
                .await?;
            if json {
                return print_json(&out);
            }
            eprintln!(
                "exported snapshot {} of {environment} ({} layer) to {reference}",
                &out.snapshot[..4],
                hangar_spec::format_bytes(out.layer_size)
            );
            println!("{}", out.manifest);
        }
        CacheCommand::Import {
            reference,
            environment,
            insecure,
            json,
        } => {
            let opts = hangar_image::RegistryOptions { insecure };
            let out = engine
                .cache_import(&reference, environment.as_deref(), &opts, &|l| {
                    eprintln!("{l}")
                })
                .await?;
            if json {
                return print_json(&out);
            }
            if out.imported {
                eprintln!(
                    "imported snapshot {} ({}) for {}; its next task starts from it",
                    &out.snapshot[..4],
                    hangar_spec::format_bytes(out.size),
                    out.environment
                );
            } else {
                eprintln!(
                    "{} already has snapshot {}; kept it",
                    out.environment,
                    &out.snapshot[..4]
                );
            }
        }
    }
    Ok(())
}

/// An environment file: its name for messages, its text, and the directory a relative
/// `repo` path is taken from.
fn env_file(path: &Path) -> Result<(String, String, PathBuf)> {
    let source = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok((path.display().to_string(), source, base))
}

/// An environment file written from `env create NAME --repo ...` flags, so that flags
/// and files go through the same validation.
fn source_from_flags(args: &EnvCreateArgs) -> Result<String> {
    let Some(name) = &args.name else {
        bail!("failed to create the environment: give --file FILE, or NAME with --repo");
    };
    let Some(repo) = &args.repo else {
        bail!("failed to create environment `{name}`: --repo is required without --file");
    };
    let mut doc = toml::Table::new();
    doc.insert("name".into(), name.clone().into());
    doc.insert("repo".into(), repo.clone().into());
    doc.insert(
        "image".into(),
        args.image
            .clone()
            .unwrap_or_else(|| "debian-bookworm".into())
            .into(),
    );
    if let Some(b) = &args.default_branch {
        doc.insert("default_branch".into(), b.clone().into());
    }
    let mut table = |key: &str, field: &str, value: &Option<String>| {
        if let Some(v) = value {
            let mut t = toml::Table::new();
            t.insert(field.into(), v.clone().into());
            doc.insert(key.into(), t.into());
        }
    };
    table("setup", "script", &args.setup);
    table("maintenance", "script", &args.maintenance);
    table("agent", "script", &args.agent_script);
    if !args.env.is_empty() {
        let mut vars = toml::Table::new();
        for kv in &args.env {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("failed to read --env `{kv}`: expected KEY=VALUE");
            };
            vars.insert(k.into(), v.into());
        }
        doc.insert("env".into(), vars.into());
    }
    Ok(toml::to_string(&doc)?)
}

/// `hangar exec`: accept the task, then run it here (or in a detached process).
pub async fn exec(engine: &Engine, data_dir: &Path, args: ExecArgs) -> Result<u8> {
    let script = match &args.script {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("failed to read the agent script {}", p.display()))?,
        ),
        None => None,
    };
    let task = engine
        .submit(&TaskRequest {
            environment: args.environment.clone(),
            prompt: args.prompt.clone(),
            branch: args.branch.clone(),
            commit: args.commit.clone(),
            // A script given for this task is the script harness's.
            harness: args
                .harness
                .or(args.script.as_ref().map(|_| Harness::Script)),
            approval: args.approval,
            attempts: args.attempts,
            script,
        })
        .await?;
    if args.detach {
        spawn_runner(data_dir, &task.id)?;
        eprintln!(
            "task {} accepted; follow it with `hangar show {}`",
            task.id, task.id
        );
        println!("{}", task.id);
        return Ok(0);
    }
    eprintln!("task {} in environment {}", task.id, task.environment);
    let quiet = args.quiet;
    let progress: hangar_engine::Progress = Arc::new(move |e: &Event| show_event(e, quiet));
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let watcher = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        eprintln!("hangar: cancelling; tearing the sandbox down");
        let _ = cancel_tx.send(true);
    });
    let done = engine.run_task(&task.id, progress, cancel_rx).await;
    watcher.abort();
    let done = done?;
    let attempts = engine.db().attempts(&done.id).await?;
    report_end(engine, &done, &attempts, quiet).await?;
    println!("{}", done.id);
    Ok(if done.status == TaskStatus::Ready {
        0
    } else {
        EXIT_TASK_FAILED
    })
}

/// Starts `hangar task-run ID` in its own session, detached from this terminal.
fn spawn_runner(data_dir: &Path, id: &TaskId) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("failed to locate the hangar executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["task-run", id.as_str()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of this process.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .context("failed to start the background task runner")?;
    Ok(())
}

/// The hidden `task-run` command behind `exec --detach`.
pub async fn task_run(engine: &Engine, id: &str) -> Result<u8> {
    let id: TaskId = id.parse()?;
    let (_tx, rx) = watch::channel(false);
    let progress: hangar_engine::Progress = Arc::new(|_: &Event| {});
    engine.run_task(&id, progress, rx).await?;
    Ok(0)
}

fn show_event(e: &Event, quiet: bool) {
    let mut err = std::io::stderr().lock();
    let _ = match e {
        Event::PhaseStarted { phase, .. } => writeln!(err, "==> {phase}"),
        Event::PhaseFinished { phase, ms, ok, .. } => writeln!(
            err,
            "==> {phase} {} in {}",
            if *ok { "done" } else { "failed" },
            duration(*ms)
        ),
        Event::Line(l) if !quiet || l.stream == Stream::Hangar => {
            writeln!(err, "    {} | {}", l.phase, l.line)
        }
        Event::Line(_) => Ok(()),
    };
}

async fn report_end(
    engine: &Engine,
    task: &TaskRecord,
    attempts: &[AttemptRecord],
    quiet: bool,
) -> Result<()> {
    for a in attempts {
        match (&a.error, a.summary) {
            (Some(err), _) => {
                eprintln!("hangar: task {} attempt {}: {err}", task.id, a.index);
                if quiet {
                    let logs = engine.db().logs(&task.id, Some(a.index)).await?;
                    let failed_phase = logs
                        .iter()
                        .rev()
                        .find(|l| l.stream != Stream::Hangar)
                        .map(|l| l.phase);
                    let tail: Vec<&LogLine> = logs
                        .iter()
                        .filter(|l| Some(l.phase) == failed_phase && l.stream != Stream::Hangar)
                        .collect();
                    for l in tail.iter().skip(tail.len().saturating_sub(20)) {
                        eprintln!("    {} | {}", l.phase, l.line);
                    }
                }
            }
            (None, Some(s)) => {
                eprintln!("task {} {}: {}", task.id, task.status, describe_summary(&s))
            }
            (None, None) => eprintln!("task {} {}", task.id, task.status),
        }
        if let Some(m) = &a.final_message {
            eprintln!("final message: {m}");
        }
    }
    Ok(())
}

/// `850ms`, `12.3s`.
fn duration(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn describe_summary(s: &DiffSummary) -> String {
    format!(
        "{} file{} changed, +{} -{}",
        s.files_changed,
        if s.files_changed == 1 { "" } else { "s" },
        s.lines_added,
        s.lines_removed
    )
}

fn task_json(t: &TaskRecord) -> serde_json::Value {
    json!({
        "id": t.id,
        "title": t.title,
        "status": t.status,
        "environment": t.environment,
        "created_at": rfc3339(t.created_ms),
        "updated_at": rfc3339(t.updated_ms),
        "attempt_total": t.attempt_total,
        "summary": t.summary.unwrap_or_default(),
    })
}

pub async fn list(engine: &Engine, args: ListArgs) -> Result<()> {
    let page = engine
        .db()
        .tasks(&TaskQuery {
            workspace: engine.workspace().to_string(),
            environment: args.environment,
            limit: args.limit,
            cursor: args.cursor,
        })
        .await?;
    if args.json {
        let tasks: Vec<_> = page.tasks.iter().map(task_json).collect();
        return print_json(&json!({ "tasks": tasks, "cursor": page.cursor }));
    }
    println!(
        "{:<12}  {:<9}  {:<16}  {:<20}  {:<14}  TITLE",
        "ID", "STATUS", "ENVIRONMENT", "CREATED", "CHANGES"
    );
    for t in &page.tasks {
        let s = t.summary.unwrap_or_default();
        println!(
            "{:<12}  {:<9}  {:<16}  {:<20}  {:<14}  {}",
            t.id,
            t.status,
            t.environment,
            &rfc3339(t.created_ms)[..19],
            format!(
                "{}f +{} -{}",
                s.files_changed, s.lines_added, s.lines_removed
            ),
            t.title
        );
    }
    if let Some(c) = page.cursor {
        eprintln!("more: hangar list --cursor {c}");
    }
    Ok(())
}

async fn load(engine: &Engine, task: &str) -> Result<(TaskRecord, Vec<AttemptRecord>)> {
    let id = engine.db().resolve_task(engine.workspace(), task).await?;
    let t = engine.db().task(engine.workspace(), &id).await?;
    let attempts = engine.db().attempts(&id).await?;
    Ok((t, attempts))
}

fn attempt_json(a: &AttemptRecord) -> serde_json::Value {
    let timings: Vec<_> = a
        .phases
        .iter()
        .map(|p| {
            json!({
                "phase": p.phase,
                "started_at": rfc3339(p.started_ms),
                "duration_ms": p.ended_ms - p.started_ms,
            })
        })
        .collect();
    json!({
        "index": a.index,
        "status": a.status,
        "final_message": a.final_message,
        "exit_code": a.exit_code,
        "error": a.error,
        "base_commit": a.base_commit,
        "sandbox": a.sandbox,
        "cache": a.cache.as_deref().and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok()),
        "timings": timings,
        "summary": a.summary,
        "check": a.check,
        "created_at": rfc3339(a.created_ms),
        "started_at": a.started_ms.map(rfc3339),
        "finished_at": a.finished_ms.map(rfc3339),
    })
}

pub async fn show(engine: &Engine, args: TaskArgs, as_json: bool) -> Result<()> {
    let (t, attempts) = load(engine, &args.task).await?;
    if as_json {
        let mut v = task_json(&t);
        v["prompt"] = json!(t.prompt);
        v["branch"] = json!(t.branch);
        v["commit"] = json!(t.commit);
        v["environment_version"] = json!(t.environment_version);
        v["attempts"] = attempts.iter().map(attempt_json).collect();
        v["ranking"] = json!(hangar_engine::best::rank(&attempts));
        v["best"] = json!(hangar_engine::best::best(&attempts));
        return print_json(&v);
    }
    println!("task        {}", t.id);
    println!("title       {}", t.title);
    println!("status      {}", t.status);
    println!(
        "environment {} (version {})",
        t.environment, t.environment_version
    );
    if let Some(b) = &t.branch {
        println!("branch      {b}");
    }
    if let Some(c) = &t.commit {
        println!("commit      {c}");
    }
    println!("created     {}", rfc3339(t.created_ms));
    if attempts.len() > 1 {
        let ranking = hangar_engine::best::rank(&attempts);
        let listed: Vec<String> = ranking.iter().map(|i| i.to_string()).collect();
        match hangar_engine::best::best(&attempts) {
            Some(b) => println!("best        attempt {b} (ranking {})", listed.join(", ")),
            None => println!("best        none ready (ranking {})", listed.join(", ")),
        }
    }
    for a in &attempts {
        println!();
        println!("attempt {}   {}", a.index, a.status);
        if let Some(c) = a
            .cache
            .as_deref()
            .and_then(|c| serde_json::from_str::<hangar_engine::cache::CacheInfo>(c).ok())
        {
            println!("  cache     {}", c.describe());
        }
        if let Some(b) = &a.base_commit {
            println!("  base      {b}");
        }
        if let Some(s) = &a.summary {
            println!("  changes   {}", describe_summary(s));
        }
        if let Some(c) = &a.check {
            match (c.passed, c.exit_code) {
                (true, _) => println!("  check     passed"),
                (false, Some(code)) => println!("  check     failed (exit code {code})"),
                (false, None) => println!("  check     stopped by the timeout"),
            }
        }
        if let Some(m) = &a.final_message {
            println!("  message   {m}");
        }
        if let Some(e) = &a.error {
            println!("  error     {e}");
        }
        let timings: Vec<String> = a
            .phases
            .iter()
            .map(|p| format!("{} {}", p.phase, duration(p.ended_ms - p.started_ms)))
            .collect();
        if !timings.is_empty() {
            println!("  timings   {}", timings.join(", "));
        }
    }
    Ok(())
}

/// The attempt a command means: the one asked for, else the first ready, else the first.
fn pick(attempts: &[AttemptRecord], args: &TaskArgs, task: &TaskRecord) -> Result<u32> {
    if args.best {
        return hangar_engine::best::best(attempts).with_context(|| {
            format!(
                "failed to pick the best attempt of task {}: none is ready (status {})",
                task.id, task.status
            )
        });
    }
    if let Some(n) = args.attempt {
        if attempts.iter().any(|a| a.index == n) {
            return Ok(n);
        }
        bail!(
            "failed to find attempt {n} of task {} ({} attempts)",
            task.id,
            attempts.len()
        );
    }
    hangar_engine::best::best(attempts)
        .or(attempts.first().map(|a| a.index))
        .with_context(|| format!("task {} has no attempts", task.id))
}

#[derive(Args)]
pub struct WaitArgs {
    /// A task id, or a unique prefix of one.
    task: String,
    /// Give up after this long (e.g. `90s`, `10m`); exit code 4.
    #[arg(long, value_parser = hangar_spec::parse_duration)]
    timeout: Option<std::time::Duration>,
    #[arg(long)]
    json: bool,
}

/// A finished task's exit code: 0 when ready, 3 when it ended in error or was cancelled;
/// 4 while it is still pending or running.
fn status_code(status: TaskStatus) -> u8 {
    match status {
        TaskStatus::Ready => 0,
        TaskStatus::Error | TaskStatus::Cancelled => 3,
        TaskStatus::Pending | TaskStatus::Running => 4,
    }
}

fn print_status(t: &TaskRecord, attempts: &[AttemptRecord], as_json: bool) -> Result<()> {
    if as_json {
        return print_json(&json!({
            "id": t.id.as_str(),
            "status": t.status,
            "best": hangar_engine::best::best(attempts),
        }));
    }
    println!("{}", t.status);
    Ok(())
}

/// Prints a task's status; the exit code says it (0 only when ready).
pub async fn status(engine: &Engine, task: &str, as_json: bool) -> Result<u8> {
    let (t, attempts) = load(engine, task).await?;
    print_status(&t, &attempts, as_json)?;
    Ok(status_code(t.status))
}

/// Cancels a running task (wherever it runs) and waits for its attempts to stop; exits 0
/// once it reads `cancelled`.
pub async fn cancel(engine: &Engine, task: &str) -> Result<u8> {
    let (t, _) = load(engine, task).await?;
    engine.cancel(&t.id).await?;
    eprintln!("cancelling task {}", t.id);
    let code = wait(
        engine,
        WaitArgs {
            task: t.id.to_string(),
            timeout: Some(std::time::Duration::from_secs(120)),
            json: false,
        },
    )
    .await?;
    let (t, _) = load(engine, task).await?;
    Ok(if t.status == TaskStatus::Cancelled {
        0
    } else {
        code
    })
}

/// Waits until a task has finished, then prints its status as `status` does.
pub async fn wait(engine: &Engine, args: WaitArgs) -> Result<u8> {
    let started = std::time::Instant::now();
    loop {
        let (t, attempts) = load(engine, &args.task).await?;
        let out_of_time = args.timeout.is_some_and(|limit| started.elapsed() >= limit);
        if t.status.is_finished() || out_of_time {
            if !t.status.is_finished() {
                eprintln!(
                    "hangar: task {} is still {} after {}",
                    t.id,
                    t.status,
                    hangar_spec::format_duration(args.timeout.unwrap_or_default())
                );
            }
            print_status(&t, &attempts, args.json)?;
            return Ok(status_code(t.status));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The task, and which attempt's records to show: the one asked for, or all.
async fn load_for_logs(engine: &Engine, args: &TaskArgs) -> Result<(TaskRecord, Option<u32>)> {
    let (t, attempts) = load(engine, &args.task).await?;
    let which = match (args.best, args.attempt) {
        (false, None) => None,
        _ => Some(pick(&attempts, args, &t)?),
    };
    Ok((t, which))
}

pub async fn logs(engine: &Engine, args: TaskArgs, as_json: bool) -> Result<()> {
    let (t, which) = load_for_logs(engine, &args).await?;
    let lines = engine.db().logs(&t.id, which).await?;
    if as_json {
        return print_json(&json!({ "logs": lines }));
    }
    let mut out = std::io::stdout().lock();
    let mut phase: Option<Phase> = None;
    for l in &lines {
        if phase != Some(l.phase) {
            writeln!(out, "==> {} (attempt {})", l.phase, l.attempt)?;
            phase = Some(l.phase);
        }
        let mark = match l.stream {
            Stream::Stdout => " ",
            Stream::Stderr => "!",
            Stream::Hangar => "#",
        };
        writeln!(out, "{mark} {}", l.line)?;
    }
    Ok(())
}

fn parse_spelled<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

/// The agent's events, one line each (commands with their exit code).
pub async fn events(engine: &Engine, args: TaskArgs, as_json: bool) -> Result<()> {
    let (t, which) = load_for_logs(engine, &args).await?;
    let events = engine.db().events(&t.id, which).await?;
    if as_json {
        return print_json(&json!({ "events": events }));
    }
    let mut out = std::io::stdout().lock();
    if events.is_empty() {
        writeln!(out, "no agent events recorded for task {}", t.id)?;
    }
    for e in &events {
        let mut line = format!("#{} {:<7} {}", e.attempt, e.kind, e.text.trim_end());
        match (e.kind.as_str(), e.exit_code, &e.detail) {
            ("command", Some(code), _) => line.push_str(&format!(" (exit {code})")),
            ("file", _, Some(how)) => line.push_str(&format!(" ({how})")),
            _ => {}
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The egress proxy's decisions, one line each.
pub async fn network_log(engine: &Engine, args: TaskArgs, as_json: bool) -> Result<()> {
    let (t, which) = load_for_logs(engine, &args).await?;
    let entries = engine.db().network_log(&t.id, which).await?;
    if as_json {
        return print_json(&json!({ "network": entries }));
    }
    let mut out = std::io::stdout().lock();
    if entries.is_empty() {
        writeln!(out, "no network activity recorded for task {}", t.id)?;
    }
    for e in &entries {
        let target = if e.host.contains(':') {
            format!("[{}]:{}", e.host, e.port)
        } else {
            format!("{}:{}", e.host, e.port)
        };
        write!(
            out,
            "{} #{} {:<11} {:<7} {target} {}",
            rfc3339(e.ts_ms),
            e.attempt,
            e.phase,
            e.method.as_deref().unwrap_or("CONNECT"),
            e.decision
        )?;
        if e.bytes_up + e.bytes_down > 0 {
            write!(out, " ({} up, {} down)", e.bytes_up, e.bytes_down)?;
        }
        if let Some(rule) = &e.rule {
            write!(out, " by {rule}")?;
        }
        if let Some(note) = &e.note {
            write!(out, " [{note}]")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

async fn stored_diff(engine: &Engine, args: &TaskArgs) -> Result<(TaskRecord, u32, Vec<u8>)> {
    let (t, attempts) = load(engine, &args.task).await?;
    let idx = pick(&attempts, args, &t)?;
    let Some(diff) = engine.db().diff(&t.id, idx).await? else {
        bail!(
            "failed to read the diff of task {} attempt {idx}: it has none yet (status {})",
            t.id,
            t.status
        );
    };
    Ok((t, idx, diff))
}

pub async fn diff(engine: &Engine, args: TaskArgs) -> Result<()> {
    let (_, _, diff) = stored_diff(engine, &args).await?;
    std::io::stdout().lock().write_all(&diff)?;
    Ok(())
}

pub async fn apply(engine: &Engine, args: TaskArgs) -> Result<()> {
    let (t, idx, diff) = stored_diff(engine, &args).await?;
    let cwd = std::env::current_dir()?;
    match hangar_engine::apply_patch(&cwd, &diff) {
        Ok(r) if r.files.is_empty() => {
            eprintln!(
                "task {} attempt {idx} changed nothing; nothing to apply",
                t.id
            )
        }
        Ok(r) => {
            eprintln!(
                "applied task {} attempt {idx} to {}{}:",
                t.id,
                r.repo.display(),
                if r.merged {
                    " (three-way merge, staged)"
                } else {
                    ""
                }
            );
            for f in r.files {
                println!("{f}");
            }
        }
        Err(EngineError::Conflicts { files }) => {
            for f in &files {
                println!("{f}");
            }
            bail!(
                "failed to apply task {} cleanly: conflicts in {} (resolve them, then `git add`)",
                t.id,
                files.join(", ")
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
