//! The environment, cache and task commands: `env ...`, `cache ...`, `exec`, `list`,
//! `show`, `status`, `wait`, `cancel`, `logs`, `diff`, `apply`, all through the daemon's
//! API. Printing only.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hangar_api::client::{query, segment, Client};
use hangar_api::wire::{
    rfc3339, CacheGc, CacheGcReport, CacheReset, DiffSummary, EnvFile, EnvList, EnvView, Events,
    ExportResult, ExportSnapshot, ImportResult, ImportSnapshot, LogLine, Logs, Network,
    SnapshotList, Stream, StreamEvent, SubmitTask, TaskList, TaskView,
};
use hangar_engine::EngineError;
use hangar_spec::{Approval, Harness, Phase, TaskStatus};

use crate::print_json;
use crate::progress::Status;
use serde_json::json;

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
    /// The image (default: the default image, hangar-default).
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
    #[arg(long = "env", required_unless_present = "from")]
    environment: Option<String>,
    /// A follow-up: start from this task's attempt (`TASK` or `TASK:ATTEMPT`; default
    /// the best ready one) as its agent left it, in its environment.
    #[arg(long, conflicts_with_all = ["branch", "commit"])]
    from: Option<String>,
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

/// The environment file's request: its name for messages, its text, and its directory
/// (absolute: the daemon resolves a relative `repo` from it).
fn env_request(file: String, source: String, base: &Path) -> Result<EnvFile> {
    let base = std::path::absolute(base)
        .with_context(|| format!("failed to resolve {}", base.display()))?;
    Ok(EnvFile {
        file,
        source,
        base_dir: base.display().to_string(),
    })
}

/// `/v1/environments/{name}`.
pub(crate) fn env_path(name: &str) -> String {
    format!("/v1/environments/{}", segment(name))
}

pub async fn env(client: &Client, cmd: EnvCommand) -> Result<()> {
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
            let env: EnvView = client
                .post("/v1/environments", &env_request(file, source, &base)?)
                .await?;
            eprintln!("created environment {} (repository {})", env.name, env.repo);
        }
        EnvCommand::List { json } => {
            let list: EnvList = client.get("/v1/environments").await?;
            if json {
                print_json(&list)?;
            } else {
                println!(
                    "{:<24} {:>7}  {:<20} REPOSITORY",
                    "NAME", "VERSION", "IMAGE"
                );
                for e in list.environments {
                    println!(
                        "{:<24} {:>7}  {:<20} {}",
                        e.name, e.version, e.image, e.repo
                    );
                }
            }
        }
        EnvCommand::Show { name, json } => {
            let env: EnvView = client.get(&env_path(&name)).await?;
            if json {
                print_json(&json!({
                    "name": env.name,
                    "version": env.version,
                    "created_at": env.created_at,
                    "updated_at": env.updated_at,
                    "spec": env.spec,
                }))?;
            } else {
                print!("{}", env.source);
            }
        }
        EnvCommand::Update { name, file } => {
            let (file, source, base) = env_file(&file)?;
            let env: EnvView = client
                .put(&env_path(&name), &env_request(file, source, &base)?)
                .await?;
            eprintln!(
                "updated environment {} to version {}",
                env.name, env.version
            );
        }
        EnvCommand::Delete { name } => {
            client.delete(&env_path(&name)).await?;
            eprintln!("deleted environment {name}");
        }
        EnvCommand::Resolve { repo, json } => {
            let path = format!("/v1/environments{}", query(&[("repo", Some(repo.clone()))]));
            let found: EnvList = client.get(&path).await?;
            if json {
                let names: Vec<_> = found
                    .environments
                    .iter()
                    .map(|e| json!({"name": e.name, "repo": e.repo}))
                    .collect();
                print_json(&json!({ "environments": names }))?;
            } else if found.environments.is_empty() {
                bail!(
                    "failed to find an environment for repository `{repo}` (see `hangar env list`)"
                );
            } else {
                for e in found.environments {
                    println!("{}", e.name);
                }
            }
        }
    }
    Ok(())
}

pub async fn cache(client: &Client, cmd: CacheCommand) -> Result<()> {
    match cmd {
        CacheCommand::Ls { json } => {
            let list: SnapshotList = client.get("/v1/cache").await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<24} {:<6} {:>10}  {:<20} {:<20} {:>5}  SOURCE",
                "ENVIRONMENT", "KEY", "SIZE", "BUILT", "EXPIRES", "HITS"
            );
            for s in &list.snapshots {
                println!(
                    "{:<24} {:<6} {:>10}  {:<20} {:<20} {:>5}  {}{}",
                    s.environment,
                    s.key.get(..4).unwrap_or(&s.key),
                    hangar_spec::format_bytes(s.size.max(0) as u64),
                    s.built_at.get(..19).unwrap_or(&s.built_at),
                    s.expires_at.get(..19).unwrap_or(&s.expires_at),
                    s.hits,
                    match &s.source {
                        Some(from) => format!("imported from {from}"),
                        None => "built here".to_string(),
                    },
                    if s.reset { " (reset)" } else { "" }
                );
            }
        }
        CacheCommand::Reset { environment } => {
            let r: CacheReset = client
                .post(&format!("{}/cache/reset", env_path(&environment)), &())
                .await?;
            eprintln!(
                "reset {} snapshot(s) of {environment}; its next task rebuilds",
                r.reset
            );
        }
        CacheCommand::Gc { budget } => {
            let r: CacheGcReport = client.post("/v1/cache/gc", &CacheGc { budget }).await?;
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
            if r.kept > 0 {
                eprintln!("removed {} attempt layer(s) kept for follow-ups", r.kept);
            }
            if r.harnesses > 0 {
                eprintln!("removed {} unused agent CLI layer(s)", r.harnesses);
            }
        }
        CacheCommand::Export {
            environment,
            reference,
            insecure,
            json,
        } => {
            let body = ExportSnapshot {
                reference: reference.clone(),
                insecure,
            };
            let path = format!("{}/cache/export", env_path(&environment));
            let out: ExportResult = client.operation(&path, &body, |l| eprintln!("{l}")).await?;
            if json {
                return print_json(&out);
            }
            eprintln!(
                "exported snapshot {} of {environment} ({} layer) to {reference}",
                out.snapshot.get(..4).unwrap_or(&out.snapshot),
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
            let body = ImportSnapshot {
                reference,
                environment,
                insecure,
            };
            let out: ImportResult = client
                .operation("/v1/cache/import", &body, |l| eprintln!("{l}"))
                .await?;
            if json {
                return print_json(&out);
            }
            let short = out.snapshot.get(..4).unwrap_or(&out.snapshot);
            if out.imported {
                eprintln!(
                    "imported snapshot {short} ({}) for {}; its next task starts from it",
                    hangar_spec::format_bytes(out.size),
                    out.environment
                );
            } else {
                eprintln!("{} already has snapshot {short}; kept it", out.environment);
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
    if let Some(image) = &args.image {
        doc.insert("image".into(), image.clone().into());
    }
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

/// `hangar exec`: the daemon accepts the task; then, unless detached, its phases are
/// followed live until it ends (Ctrl-C cancels it).
pub async fn exec(client: &Client, args: ExecArgs) -> Result<u8> {
    let script = match &args.script {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("failed to read the agent script {}", p.display()))?,
        ),
        None => None,
    };
    let submit = SubmitTask {
        environment: args.environment.clone().unwrap_or_default(),
        from: args.from.clone(),
        prompt: args.prompt.clone(),
        branch: args.branch.clone(),
        commit: args.commit.clone(),
        // A script given for this task is the script harness's.
        harness: args
            .harness
            .or(args.script.as_ref().map(|_| Harness::Script)),
        approval: args.approval,
        attempts: Some(args.attempts),
        script,
    };
    let task: TaskView = client.post("/v1/tasks", &submit).await?;
    let id = task.task.id.clone();
    if args.detach {
        eprintln!("task {id} accepted; follow it with `hangar logs --follow {id}`");
        println!("{id}");
        return Ok(0);
    }
    // Installed before anything is shown, so a signal sent once the task is seen cancels
    // it instead of ending hangar by the default action and leaving the task running.
    let stop = crate::signals::StopSignals::new();
    eprintln!("task {id} in environment {}", task.task.environment);
    let quiet = args.quiet;
    let watcher = tokio::spawn({
        let (client, id) = (client.clone(), id.clone());
        async move {
            let Some(mut signals) = stop else {
                return;
            };
            signals.next().await;
            eprintln!("hangar: cancelling; tearing the sandbox down");
            let _ = client
                .post::<_, TaskView>(&task_path(&id, "cancel", ""), &())
                .await;
        }
    });
    let shown = Shown::new(quiet, task.attempts.len() as u32);
    let ticker = shown.tick();
    let followed = client
        .follow(&task_path(&id, "logs", "?follow=true"), |e| shown.event(&e))
        .await;
    ticker.abort();
    shown.finish();
    watcher.abort();
    followed?;
    let done: TaskView = client.get(&task_path(&id, "", "")).await?;
    report_end(client, &done, quiet).await?;
    println!("{id}");
    Ok(if done.task.status == TaskStatus::Ready {
        0
    } else {
        EXIT_TASK_FAILED
    })
}

/// `/v1/tasks/{id}[/what][query]`.
fn task_path(id: &str, what: &str, query: &str) -> String {
    let what = if what.is_empty() {
        String::new()
    } else {
        format!("/{what}")
    };
    format!("/v1/tasks/{}{what}{query}", segment(id))
}

/// A followed task on the terminal: the phases and (unless quiet) their output as
/// lines, under a status line with a bar of the phases and the time.
struct Shown {
    quiet: bool,
    status: std::sync::Arc<std::sync::Mutex<Status>>,
    /// Phases finished so far, of attempt 1 (the bar's progress).
    finished: std::sync::atomic::AtomicU64,
    /// How many attempts the task runs.
    attempts: u32,
}

/// Phases an attempt may go through (prepare, setup, checkout, maintenance, agent,
/// collect): the bar's whole.
const PHASES: u64 = 6;

impl Shown {
    fn new(quiet: bool, attempts: u32) -> Shown {
        Shown {
            quiet,
            status: std::sync::Arc::new(std::sync::Mutex::new(Status::new())),
            finished: Default::default(),
            attempts,
        }
    }

    /// Redraws the status line now and then, so its time moves.
    fn tick(&self) -> tokio::task::JoinHandle<()> {
        let status = self.status.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                status.lock().expect("not poisoned").draw();
            }
        })
    }

    fn event(&self, e: &StreamEvent) {
        use std::sync::atomic::Ordering;
        let mut status = self.status.lock().expect("not poisoned");
        match e {
            StreamEvent::PhaseStarted { phase, attempt } => {
                status.line(&format!("==> {}{phase}", self.label(*attempt)));
                let done = self.finished.load(Ordering::Relaxed);
                let what = if *attempt > 1 {
                    format!("{phase} (attempt {attempt})")
                } else {
                    phase.to_string()
                };
                status.step(what, Some((done, PHASES)));
            }
            StreamEvent::PhaseFinished {
                phase,
                ms,
                ok,
                attempt,
            } => {
                if *attempt == 1 {
                    self.finished.fetch_add(1, Ordering::Relaxed);
                }
                status.line(&format!(
                    "==> {}{phase} {} in {}",
                    self.label(*attempt),
                    if *ok { "done" } else { "failed" },
                    hangar_spec::format_millis(*ms)
                ));
            }
            StreamEvent::Line(l) if !self.quiet || l.stream == Stream::Hangar => status.line(
                &format!("    {}{} | {}", self.label(l.attempt), l.phase, l.line),
            ),
            StreamEvent::Missed { count } => status.line(&format!(
                "    ({count} lines skipped; `hangar logs` has them all)"
            )),
            StreamEvent::Line(_) | StreamEvent::End { .. } => {}
        }
    }

    fn finish(&self) {
        self.status.lock().expect("not poisoned").finish();
    }

    /// `[2] ` before what attempt 2 of several printed: best-of-N's attempts run side by
    /// side and their lines interleave.
    fn label(&self, attempt: u32) -> String {
        if self.attempts > 1 {
            format!("[{attempt}] ")
        } else {
            String::new()
        }
    }
}

async fn report_end(client: &Client, task: &TaskView, quiet: bool) -> Result<()> {
    let id = &task.task.id;
    let several = task.attempts.len() > 1;
    for a in &task.attempts {
        let which = if several {
            format!(" attempt {}", a.index)
        } else {
            String::new()
        };
        match (&a.error, a.summary) {
            (Some(err), _) => {
                eprintln!("hangar: task {id} attempt {}: {err}", a.index);
                if quiet {
                    let query = format!("?attempt={}", a.index);
                    let logs: Logs = client.get(&task_path(id, "logs", &query)).await?;
                    let failed_phase = logs
                        .logs
                        .iter()
                        .rev()
                        .find(|l| l.stream != Stream::Hangar)
                        .map(|l| l.phase);
                    let tail: Vec<&LogLine> = logs
                        .logs
                        .iter()
                        .filter(|l| Some(l.phase) == failed_phase && l.stream != Stream::Hangar)
                        .collect();
                    for l in tail.iter().skip(tail.len().saturating_sub(20)) {
                        eprintln!("    {} | {}", l.phase, l.line);
                    }
                }
            }
            (None, Some(s)) => {
                eprintln!("task {id}{which} {}: {}", a.status, describe_summary(&s))
            }
            (None, None) => eprintln!("task {id}{which} {}", a.status),
        }
        if let Some(m) = &a.final_message {
            eprintln!("final message: {m}");
        }
    }
    if several {
        match task.best {
            Some(best) => eprintln!(
                "task {id}: best is attempt {best} (ranking {}); `hangar apply {id} --best`",
                task.ranking
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => eprintln!("task {id}: no attempt is ready"),
        }
    }
    Ok(())
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

pub async fn list(client: &Client, args: ListArgs) -> Result<()> {
    let path = format!(
        "/v1/tasks{}",
        query(&[
            ("environment", args.environment),
            ("limit", Some(args.limit.to_string())),
            ("cursor", args.cursor),
        ])
    );
    let page: TaskList = client.get(&path).await?;
    if args.json {
        return print_json(&page);
    }
    println!(
        "{:<12}  {:<9}  {:<16}  {:<20}  {:<14}  TITLE",
        "ID", "STATUS", "ENVIRONMENT", "CREATED", "CHANGES"
    );
    for t in &page.tasks {
        let s = t.summary;
        println!(
            "{:<12}  {:<9}  {:<16}  {:<20}  {:<14}  {}",
            t.id,
            t.status,
            t.environment,
            t.created_at.get(..19).unwrap_or(&t.created_at),
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

async fn load(client: &Client, task: &str) -> Result<TaskView> {
    Ok(client.get(&task_path(task, "", "")).await?)
}

pub async fn show(client: &Client, args: TaskArgs, as_json: bool) -> Result<()> {
    let t = load(client, &args.task).await?;
    if as_json {
        return print_json(&t);
    }
    println!("task        {}", t.task.id);
    println!("title       {}", t.task.title);
    println!("status      {}", t.task.status);
    if let Some(p) = t.queue_position {
        println!("queued      position {p} (waiting for a free slot)");
    }
    println!(
        "environment {} (version {})",
        t.task.environment, t.environment_version
    );
    if let Some(b) = &t.task.branch {
        println!("branch      {b}");
    }
    if let Some(c) = &t.commit {
        println!("commit      {c}");
    }
    println!("created     {}", t.task.created_at);
    if t.attempts.len() > 1 {
        let listed: Vec<String> = t.ranking.iter().map(|i| i.to_string()).collect();
        match t.best {
            Some(b) => println!("best        attempt {b} (ranking {})", listed.join(", ")),
            None => println!("best        none ready (ranking {})", listed.join(", ")),
        }
    }
    if let Some(f) = &t.forge {
        let on = f.number.map(|n| format!(" #{n}")).unwrap_or_default();
        let how = match (&f.error, &f.answered_at) {
            (Some(e), _) => format!("failed: {e}"),
            (None, Some(at)) => format!("answered {at}"),
            (None, None) => "answers when the task ends".to_string(),
        };
        println!("forge       {} on {}{on}: {how}", f.kind, f.repository);
    }
    for p in &t.pull_requests {
        let what = match (&p.url, p.number) {
            (Some(url), Some(n)) => format!("#{n} {url}"),
            _ => "no pull request".to_string(),
        };
        println!(
            "pull        attempt {}: {what} (branch {} at {}, into {})",
            p.attempt,
            p.branch,
            &p.commit[..p.commit.len().min(12)],
            p.base
        );
    }
    for a in &t.attempts {
        println!();
        println!("attempt {}   {}", a.index, a.status);
        if let Some(c) = &a.cache {
            println!("  cache     {} ({})", c.status, c.reason);
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
            .timings
            .iter()
            .map(|p| format!("{} {}", p.phase, hangar_spec::format_millis(p.duration_ms)))
            .collect();
        if !timings.is_empty() {
            println!("  timings   {}", timings.join(", "));
        }
    }
    Ok(())
}

/// `?attempt=N` or `?best=true` (with `extra` pairs), as the task's arguments say.
fn which(args: &TaskArgs, extra: &[(&str, Option<String>)]) -> String {
    let mut pairs = vec![
        ("attempt", args.attempt.map(|n| n.to_string())),
        ("best", args.best.then(|| "true".to_string())),
    ];
    pairs.extend_from_slice(extra);
    query(&pairs)
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
        TaskStatus::Error | TaskStatus::Cancelled => EXIT_TASK_FAILED,
        TaskStatus::Pending | TaskStatus::Running => 4,
    }
}

fn print_status(t: &TaskView, as_json: bool) -> Result<()> {
    if as_json {
        return print_json(&json!({
            "id": t.task.id,
            "status": t.task.status,
            "best": t.best,
        }));
    }
    println!("{}", t.task.status);
    Ok(())
}

/// Prints a task's status; the exit code says it (0 only when ready).
pub async fn status(client: &Client, task: &str, as_json: bool) -> Result<u8> {
    let t = load(client, task).await?;
    print_status(&t, as_json)?;
    Ok(status_code(t.task.status))
}

/// Cancels a running task and waits for its attempts to stop; exits 0 once it reads
/// `cancelled`.
pub async fn cancel(client: &Client, task: &str) -> Result<u8> {
    let t: TaskView = client.post(&task_path(task, "cancel", ""), &()).await?;
    eprintln!("cancelling task {}", t.task.id);
    let code = wait(
        client,
        WaitArgs {
            task: t.task.id.clone(),
            timeout: Some(std::time::Duration::from_secs(120)),
            json: false,
        },
    )
    .await?;
    let t = load(client, &t.task.id).await?;
    Ok(if t.task.status == TaskStatus::Cancelled {
        0
    } else {
        code
    })
}

/// Waits until a task has finished (following it), then prints its status as `status`
/// does.
pub async fn wait(client: &Client, args: WaitArgs) -> Result<u8> {
    let t = load(client, &args.task).await?;
    let path = task_path(&t.task.id, "logs", "?follow=true");
    // On a terminal, a status line says where the task is while this waits.
    let mut status = Status::new();
    let id = t.task.id.clone();
    match t.queue_position {
        Some(p) => status.step(format!("task {id} queued (position {p})"), None),
        None => status.step(format!("task {id} {}", t.task.status), None),
    }
    let follow = client.follow(&path, |e| match e {
        StreamEvent::PhaseStarted { phase, .. } => status.step(format!("task {id}: {phase}"), None),
        _ => status.draw(),
    });
    let finished = match args.timeout {
        Some(limit) => tokio::time::timeout(limit, follow).await.ok(),
        None => Some(follow.await),
    };
    if let Some(followed) = finished {
        followed?;
    }
    status.finish();
    let t = load(client, &t.task.id).await?;
    if !t.task.status.is_finished() {
        eprintln!(
            "hangar: task {} is still {} after {}",
            t.task.id,
            t.task.status,
            hangar_spec::format_duration(args.timeout.unwrap_or_default())
        );
    }
    print_status(&t, args.json)?;
    Ok(status_code(t.task.status))
}

/// Prints log lines as `hangar logs` does: a header when the phase changes, then each
/// line marked by its stream.
struct LogPrinter {
    phase: Option<(u32, Phase)>,
}

impl LogPrinter {
    fn line(&mut self, out: &mut impl Write, l: &LogLine) -> std::io::Result<()> {
        if self.phase != Some((l.attempt, l.phase)) {
            writeln!(out, "==> {} (attempt {})", l.phase, l.attempt)?;
            self.phase = Some((l.attempt, l.phase));
        }
        let mark = match l.stream {
            Stream::Stdout => " ",
            Stream::Stderr => "!",
            Stream::Hangar => "#",
        };
        writeln!(out, "{mark} {}", l.line)
    }
}

pub async fn logs(client: &Client, args: TaskArgs, as_json: bool, follow: bool) -> Result<()> {
    let mut printer = LogPrinter { phase: None };
    if follow {
        let path = task_path(
            &args.task,
            "logs",
            &which(&args, &[("follow", Some("true".into()))]),
        );
        return Ok(client
            .follow(&path, |e| {
                let mut out = std::io::stdout().lock();
                let _ = match &e {
                    StreamEvent::Line(l) if as_json => {
                        writeln!(out, "{}", serde_json::to_string(l).unwrap_or_default())
                    }
                    StreamEvent::Line(l) => printer.line(&mut out, l),
                    StreamEvent::Missed { count } => {
                        writeln!(out, "({count} lines skipped; `hangar logs` has them all)")
                    }
                    StreamEvent::End { status } if !as_json => writeln!(out, "==> {status}"),
                    _ => Ok(()),
                };
                let _ = out.flush();
            })
            .await?);
    }
    let logs: Logs = client
        .get(&task_path(&args.task, "logs", &which(&args, &[])))
        .await?;
    if as_json {
        return print_json(&logs);
    }
    let task = load(client, &args.task).await?;
    let mut out = std::io::stdout().lock();
    for (attempt, phase, lines) in by_phase(&task, &logs.logs) {
        if lines.is_empty() {
            writeln!(out, "==> {phase} (attempt {attempt})\n  (no output)")?;
            printer.phase = Some((attempt, phase));
        }
        for l in lines {
            printer.line(&mut out, l)?;
        }
    }
    Ok(())
}

/// The log lines of each phase an attempt went through, in the order it ran them, a
/// phase that printed nothing included (regression: `hangar logs` left those out, so a
/// reader could not tell a silent phase from one that never ran). Lines of a phase that
/// has no timing (the attempt ended in it) follow in their own order.
fn by_phase<'a>(task: &TaskView, lines: &'a [LogLine]) -> Vec<(u32, Phase, Vec<&'a LogLine>)> {
    let attempts: std::collections::BTreeSet<u32> = lines.iter().map(|l| l.attempt).collect();
    let mut out: Vec<(u32, Phase, Vec<&LogLine>)> = Vec::new();
    for a in task.attempts.iter().filter(|a| attempts.contains(&a.index)) {
        for t in &a.timings {
            if !out.iter().any(|(i, p, _)| (*i, *p) == (a.index, t.phase)) {
                out.push((a.index, t.phase, Vec::new()));
            }
        }
    }
    for l in lines {
        match out
            .iter_mut()
            .find(|(i, p, _)| (*i, *p) == (l.attempt, l.phase))
        {
            Some((_, _, group)) => group.push(l),
            None => out.push((l.attempt, l.phase, vec![l])),
        }
    }
    out
}

fn parse_spelled<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

/// The agent's events, one line each (commands with their exit code).
pub async fn events(client: &Client, args: TaskArgs, as_json: bool) -> Result<()> {
    let events: Events = client
        .get(&task_path(&args.task, "events", &which(&args, &[])))
        .await?;
    if as_json {
        return print_json(&events);
    }
    let mut out = std::io::stdout().lock();
    if events.events.is_empty() {
        writeln!(out, "no agent events recorded for task {}", args.task)?;
    }
    for e in &events.events {
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
pub async fn network_log(client: &Client, args: TaskArgs, as_json: bool) -> Result<()> {
    let network: Network = client
        .get(&task_path(&args.task, "network", &which(&args, &[])))
        .await?;
    if as_json {
        return print_json(&network);
    }
    let mut out = std::io::stdout().lock();
    if network.network.is_empty() {
        writeln!(out, "no network activity recorded for task {}", args.task)?;
    }
    for e in &network.network {
        let mut target = if e.host.contains(':') {
            format!("[{}]:{}", e.host, e.port)
        } else {
            format!("{}:{}", e.host, e.port)
        };
        target.push_str(e.path.as_deref().unwrap_or_default());
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

/// The diff of the attempt the arguments mean, and that attempt's index.
async fn stored_diff(client: &Client, args: &TaskArgs) -> Result<(u32, Vec<u8>)> {
    let (index, diff) = client
        .get_bytes(
            &task_path(&args.task, "diff", &which(args, &[])),
            "hangar-attempt",
        )
        .await?;
    let index = index
        .and_then(|i| i.parse().ok())
        .context("failed to read the diff: the daemon did not say which attempt it is")?;
    Ok((index, diff.to_vec()))
}

pub async fn diff(client: &Client, args: TaskArgs) -> Result<()> {
    let (_, diff) = stored_diff(client, &args).await?;
    std::io::stdout().lock().write_all(&diff)?;
    Ok(())
}

/// Applies the diff to the checkout this command runs in (the CLI's own machine).
pub async fn apply(client: &Client, args: TaskArgs) -> Result<()> {
    let (idx, diff) = stored_diff(client, &args).await?;
    let task = &args.task;
    let cwd = std::env::current_dir()?;
    match hangar_engine::apply_patch(&cwd, &diff) {
        Ok(r) if r.files.is_empty() => {
            eprintln!("task {task} attempt {idx} changed nothing; nothing to apply")
        }
        Ok(r) => {
            eprintln!(
                "applied task {task} attempt {idx} to {}{}:",
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
                "failed to apply task {task} cleanly: conflicts in {} (resolve them, then `git add`)",
                files.join(", ")
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
