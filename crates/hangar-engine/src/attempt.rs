//! One attempt, start to end: sandbox from the image, clone the default branch from the
//! host mirror, setup (auto-install, setup script), check out the task's branch or commit,
//! maintenance (in a sandbox of its own when it has secrets), the agent, collect the diff,
//! the check (in a fresh sandbox, on the diff), teardown. Each phase is timed and logged;
//! whatever fails becomes the attempt's error sentence.
//!
//! `Engine::run_attempt` is the one door: it takes a slot, decrypts the secrets, prepares
//! (the engine's image, mirror and cache key) and hands the rest to the functions below,
//! which read top to bottom in the order they run and see only their [`Ctx`]: the
//! attempt's plan, sandbox state and [`Deps`] (the database, the layer directories, the
//! sandbox and proxy settings), never the engine itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_image::ImageDefaults;
use hangar_net::Internal;
use hangar_sandbox::{BindMount, Sandbox, SandboxSpec, Upper};
use hangar_secrets::ScanMode;
use hangar_spec::{AttemptStatus, Environment, LeakPolicy, Phase, TaskId};
use hangar_store::db::{now_ms, AttemptField, AttemptOutcome, Db, PhaseTiming, SnapshotRecord};
use tokio::sync::{mpsc, watch};

use crate::autoinstall;
use crate::cache::{self, CacheInfo, CacheStatus, KeyComponents, Lookup};
use crate::diff;
use crate::error::{io_err, EngineError, Result};
use crate::followup::{FollowUp, Keep};
use crate::net::NetSettings;
use crate::net::{AuditLog, SandboxNet};
use crate::phase::{
    run_step, script_line, Logger, RunsAs, Step, StepResult, MIRROR_DIR, RUN_DIR, START_DIR,
    USER_RUN_DIR,
};
use crate::secrets::EnvSecrets;
use crate::{Engine, Event, Progress, Sandboxes};

/// What the attempt needs from its task.
pub(crate) struct AttemptPlan<'a> {
    pub task: &'a TaskId,
    pub index: u32,
    pub env: &'a Environment,
    pub prompt: &'a str,
    pub branch: Option<&'a str>,
    pub commit: Option<&'a str>,
    /// The agent script: the task's `--script`, else the environment's.
    pub agent_script: &'a str,
    pub progress: Progress,
    /// A follow-up's source task and attempt.
    pub from: Option<&'a (TaskId, u32)>,
}

/// A phase that ended the attempt early.
pub(crate) struct Stop {
    pub status: AttemptStatus,
    pub error: String,
    pub exit_code: Option<i32>,
    /// The phase it happened in (set by [`timed`]).
    pub phase: Option<Phase>,
}

impl Stop {
    /// A step of `label` that the wall clock stopped after `limit`.
    pub(crate) fn timed_out(label: &str, limit: Duration, res: &StepResult) -> Stop {
        Stop {
            status: AttemptStatus::Error,
            error: format!("the {label} {}", stopped_after(limit)),
            exit_code: res.status.code.or(res.status.signal.map(|s| 128 + s)),
            phase: None,
        }
    }

    pub(crate) fn error(error: impl Into<String>) -> Stop {
        Stop {
            status: AttemptStatus::Error,
            error: error.into(),
            exit_code: None,
            phase: None,
        }
    }
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Stop {
        Stop::error(e.to_string())
    }
}

impl From<hangar_sandbox::SandboxError> for Stop {
    fn from(e: hangar_sandbox::SandboxError) -> Stop {
        Stop::error(e.to_string())
    }
}

/// One of hangar's own scripts: a failure is `what` plus the script's last line.
struct Own<'a> {
    phase: Phase,
    name: &'a str,
    script: &'a str,
    cwd: &'a str,
    env: &'a [(&'a str, &'a str)],
    what: &'a str,
}

/// What an attempt's phases use of the engine, and nothing more of it: the phases are
/// functions over a [`Ctx`], never methods of the engine.
pub(crate) struct Deps<'a> {
    /// Where the attempt's rows go (its status, phases, fields, events) and the
    /// snapshots' records.
    pub db: &'a Db,
    /// The layer directories it stands on and keeps.
    pub layers: LayerDirs<'a>,
    /// How its sandboxes are made, and their limits where `[resources]` sets none.
    pub sandboxes: &'a Sandboxes,
    /// Its proxies' resolver, trust and CA.
    pub net: &'a NetSettings,
    /// What its proxies may open of the internal ranges (the view's principal decides).
    pub internal: Internal,
    /// The workspace its snapshot is recorded in.
    pub workspace: &'a str,
}

/// The engine's layer directories as an attempt uses them: snapshots (looked up, locked,
/// built into, made durable), the kept layers of follow-ups, the agent CLI's layers and
/// the image layers its sandboxes lease. Only these operations of the engine are
/// reachable from here.
#[derive(Clone, Copy)]
pub(crate) struct LayerDirs<'a>(&'a Engine);

impl LayerDirs<'_> {
    fn snapshot_dir(&self, key: &str) -> PathBuf {
        self.0.snapshot_dir(key)
    }

    async fn hold_snapshot(&self, key: &str, found: bool) -> Result<std::fs::File> {
        self.0.hold_snapshot(key, found).await
    }

    fn serves(&self, s: &SnapshotRecord) -> bool {
        self.0.serves(s)
    }

    fn make_durable_later(&self, key: &str) {
        self.0.make_durable_later(key)
    }

    fn kept(&self, name: &str) -> Option<FollowUp> {
        self.0.kept(name)
    }

    fn kept_lower(&self, name: &str) -> PathBuf {
        self.0.layers.lower(crate::layers::Kind::Kept, name)
    }

    async fn keep_attempt(&self, sandbox: Sandbox, keep: Keep<'_>) -> Result<()> {
        self.0.keep_attempt(sandbox, keep).await
    }

    async fn harness_layer(
        &self,
        ctx: &mut Ctx<'_>,
        p: &Prepared,
    ) -> Result<Option<PathBuf>, Stop> {
        self.0.harness_layer(ctx, p).await
    }

    fn lease_stack(&self, sandbox_dir: &Path, lowers: &[PathBuf]) -> Result<()> {
        self.0.layers.lease_stack(sandbox_dir, lowers)
    }

    /// The engine's clock: snapshot ages and expiry.
    fn now(&self) -> i64 {
        self.0.now()
    }

    /// This boot's id, which a snapshot not yet durable is recorded with.
    fn boot_id(&self) -> String {
        self.0.boot_id.clone()
    }
}

/// The attempt's sandbox and what every exec in it shares.
pub(crate) struct Ctx<'a> {
    pub deps: Deps<'a>,
    pub plan: &'a AttemptPlan<'a>,
    pub logger: Logger,
    pub workdir: String,
    pub base_env: Vec<(String, String)>,
    pub cancel: watch::Receiver<bool>,
    pub secrets: EnvSecrets,
    /// The proxy of the sandbox in use.
    pub net: Option<SandboxNet>,
    /// The commit the attempt's diff is against, once the workspace has one.
    pub base_commit: Option<String>,
    pub audit: mpsc::UnboundedSender<hangar_net::AuditEntry>,
    /// `[agent] user`, once found in the sandbox.
    pub user: Option<AgentUser>,
}

/// `[agent] user` as the sandbox's `/etc/passwd` has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl AgentUser {
    /// `name`'s entry in a passwd file.
    fn find(passwd: &str, name: &str) -> Option<AgentUser> {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0] != name {
                return None;
            }
            Some(AgentUser {
                name: name.to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
    }
}

impl Ctx<'_> {
    /// Who the agent phase's processes and the check are.
    pub(crate) fn agent_runs_as(&self) -> RunsAs {
        match &self.user {
            Some(u) => RunsAs::User {
                uid: u.uid,
                gid: u.gid,
            },
            None => RunsAs::Root,
        }
    }

    /// An exec's complete environment: the image's and the attempt's, then the secrets
    /// (or placeholders) that this phase, and only this phase, gets.
    fn env_for(&self, phase: Phase) -> Vec<(String, String)> {
        let mut env = self.base_env.clone();
        hangar_image::set_var(&mut env, "HANGAR_PHASE", phase.as_str());
        for (k, v) in self.secrets.env_for(self.plan.env, phase) {
            hangar_image::set_var(&mut env, &k, &v);
        }
        env
    }

    /// Runs a step with the phase's environment plus `extra`; a cancel ends the attempt.
    pub(crate) async fn run(
        &mut self,
        sandbox: &Sandbox,
        mut step: Step<'_>,
        extra: &[(&str, &str)],
    ) -> Result<StepResult, Stop> {
        step.env = self.env_for(step.phase);
        for (k, v) in extra {
            hangar_image::set_var(&mut step.env, k, v);
        }
        if let Some(net) = &self.net {
            net.enter(self.plan.env, step.phase, &self.secrets);
        }
        let res = run_step(sandbox, &self.logger, step, &mut self.cancel).await?;
        if let Some(over) = sandbox.disk_exceeded() {
            return Err(Stop::error(disk_exceeded(over)));
        }
        if res.cancelled {
            return Err(cancelled());
        }
        Ok(res)
    }

    /// Runs hangar's own script (clone, checkout, collect); a failure is `what` plus
    /// the last line the script printed.
    async fn internal(&mut self, sandbox: &Sandbox, own: Own<'_>) -> Result<StepResult, Stop> {
        let Own {
            phase,
            name,
            script,
            cwd,
            env: extra,
            what,
        } = own;
        let step = Step {
            phase,
            name,
            script,
            cwd,
            env: Vec::new(),
            timeout: None,
            runs_as: RunsAs::Root,
        };
        let res = self.run(sandbox, step, extra).await?;
        if !res.success() {
            return Err(Stop::error(format!(
                "failed to {what}: {}",
                res.last_words()
            )));
        }
        Ok(res)
    }

    /// Runs a user script (setup, maintenance, agent): a failure names its line.
    pub(crate) async fn user(
        &mut self,
        sandbox: &Sandbox,
        phase: Phase,
        label: &str,
        script: &str,
        extra: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<StepResult, Stop> {
        let cwd = self.workdir.clone();
        // Setup and maintenance keep root; the agent's script is the agent.
        let runs_as = match phase {
            Phase::Agent => self.agent_runs_as(),
            _ => RunsAs::Root,
        };
        let step = Step {
            phase,
            name: phase.as_str(),
            script,
            cwd: &cwd,
            env: Vec::new(),
            timeout,
            runs_as,
        };
        let res = self.run(sandbox, step, extra).await?;
        if res.timed_out {
            return Err(Stop::timed_out(label, timeout.unwrap_or_default(), &res));
        }
        if !res.status.success() {
            let code = res.status.code_or_signal();
            let at = res
                .failed_line
                .map(|n| match script_line(script, n) {
                    Some(text) => format!(" at line {n} (`{text}`)"),
                    None => format!(" at line {n}"),
                })
                .unwrap_or_default();
            let how = if res.status.oom_killed {
                "was killed for running out of memory".to_string()
            } else {
                format!("with exit code {code}")
            };
            return Err(Stop {
                status: AttemptStatus::Error,
                error: format!("the {label} failed{at} {how}"),
                exit_code: Some(code),
                phase: None,
            });
        }
        Ok(res)
    }
}

/// Runs one phase, recording its timing and telling the progress callback.
pub(crate) async fn timed<T>(
    db: &Db,
    plan: &AttemptPlan<'_>,
    phase: Phase,
    f: impl std::future::Future<Output = Result<T, Stop>>,
) -> Result<T, Stop> {
    let started_ms = now_ms();
    (plan.progress)(&Event::PhaseStarted {
        attempt: plan.index,
        phase,
    });
    let out = f.await.map_err(|mut stop| {
        stop.phase.get_or_insert(phase);
        stop
    });
    let ended_ms = now_ms();
    let timing = PhaseTiming {
        phase,
        started_ms,
        ended_ms,
    };
    if let Err(e) = db.add_phase(plan.task, plan.index, timing).await {
        tracing::warn!("{e}");
    }
    (plan.progress)(&Event::PhaseFinished {
        attempt: plan.index,
        phase,
        ms: ended_ms - started_ms,
        ok: out.is_ok(),
    });
    out
}

/// How the disk watchdog's stop is told.
fn disk_exceeded(over: hangar_sandbox::disk::DiskExceeded) -> String {
    format!(
        "the sandbox wrote {} to its disk, past `[resources] disk` ({}), and every process in it was stopped",
        hangar_spec::format_bytes(over.used),
        hangar_spec::format_bytes(over.limit)
    )
}

/// How a step the wall clock ended is told.
fn stopped_after(limit: Duration) -> String {
    format!(
        "did not finish within {} and was stopped",
        hangar_spec::format_duration(limit)
    )
}

pub(crate) fn cancelled() -> Stop {
    Stop {
        status: AttemptStatus::Cancelled,
        error: "cancelled".into(),
        exit_code: None,
        phase: None,
    }
}

/// What a sandbox of the attempt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Setup's, the CLI install's, maintenance's, the agent's: each in turn is the
    /// attempt's recorded sandbox.
    Attempt,
    /// The check's: the recorded one stays the agent's.
    Check,
}

/// Where the agent's workspace comes from.
enum Workspace<'a> {
    /// Checked out, then maintained without secrets, in the agent's own sandbox.
    Here,
    /// Checked out and maintained (with secrets) in a sandbox of its own, whose upper
    /// directory the agent's sandbox took over; the base commit.
    Maintained { base: String },
    /// A follow-up's: its source's, as the source's agent left it.
    FollowUp(&'a crate::followup::FollowUp),
}

/// What `[agent] check`'s sandbox stands on: the snapshot, the CLI's layer and the
/// image's layers, never an agent's kept layer.
struct CheckBase<'a> {
    lowers: Vec<PathBuf>,
    prepared: &'a Prepared,
}

/// What preparing found: the image, the mirror, and whether a snapshot serves.
pub(crate) struct Prepared {
    pub layers: Vec<(hangar_store::Digest, PathBuf)>,
    defaults: ImageDefaults,
    mirror: PathBuf,
    components: KeyComponents,
    key: String,
    lookup: Lookup,
    steps: Vec<autoinstall::InstallStep>,
}

impl Prepared {
    fn lookup_reason(&self) -> String {
        match &self.lookup {
            Lookup::Miss(r) => r.clone(),
            Lookup::Hit(_) => String::new(),
        }
    }
}

impl Engine {
    /// Runs one attempt and records how it ended. Never fails: every failure becomes
    /// the attempt's `error`.
    pub(crate) async fn run_attempt(
        &self,
        plan: &AttemptPlan<'_>,
        cancel: watch::Receiver<bool>,
    ) -> Result<()> {
        let reserve = crate::admission::reservation(plan.env);
        let _slot = self
            .scheduler
            .take(
                &self.workspace,
                plan.task,
                plan.index,
                reserve,
                cancel.clone(),
            )
            .await;
        self.db.start_attempt(plan.task, plan.index).await?;
        let secrets = self.env_secrets(plan.env).await;
        let loaded = secrets.as_ref().map(|_| ()).map_err(|e| e.to_string());
        let secrets = secrets.unwrap_or_else(|_| EnvSecrets::none());
        let redactor = secrets.redactor.clone();
        let logger = Logger::new(
            self.db.clone(),
            plan.task.clone(),
            plan.index,
            plan.progress.clone(),
            redactor.clone(),
        );
        let audit = AuditLog::start(
            self.db.clone(),
            plan.task.clone(),
            plan.index,
            redactor.clone(),
        );
        let mut ctx = Ctx {
            deps: Deps {
                db: &self.db,
                layers: LayerDirs(self),
                sandboxes: &self.sandboxes,
                net: &self.net,
                internal: self.internal(),
                workspace: &self.workspace,
            },
            plan,
            logger,
            workdir: format!("/workspace/{}", hangar_spec::repo_name(&plan.env.repo)),
            base_env: Vec::new(),
            cancel,
            secrets,
            net: None,
            base_commit: None,
            audit: audit.sender(),
            user: None,
        };
        let outcome = match loaded {
            Ok(()) => {
                let prepared = self.prepare(plan, &ctx.secrets);
                match timed(&self.db, plan, Phase::Prepare, prepared).await {
                    Ok(p) => attempt(&mut ctx, p).await,
                    Err(stop) => Err(stop),
                }
            }
            Err(e) => Err(Stop::error(e)),
        };
        let outcome = outcome.map_err(|mut stop| {
            stop.error = redactor.redact(&stop.error).into_owned();
            stop
        });
        let record = match outcome {
            Ok(done) => done,
            Err(stop) => {
                ctx.logger
                    .note(stop.phase.unwrap_or(Phase::Prepare), &stop.error);
                AttemptOutcome {
                    status: stop.status,
                    final_message: None,
                    exit_code: stop.exit_code,
                    error: Some(stop.error),
                    summary: None,
                    diff: None,
                    result_tree: None,
                }
            }
        };
        ctx.logger.finish().await;
        drop(ctx.net);
        drop(ctx.audit);
        audit.finish().await;
        // Nothing stored carries a secret value: not the message, not the diff.
        let record = AttemptOutcome {
            final_message: record
                .final_message
                .map(|m| redactor.redact(&m).into_owned()),
            diff: record.diff.map(|d| redactor.redact_bytes(&d).into_owned()),
            ..record
        };
        self.db
            .finish_attempt(plan.task, plan.index, &record)
            .await?;
        Ok(())
    }

    /// Image layers, the repository mirror, the cache key and its lookup.
    async fn prepare(
        &self,
        plan: &AttemptPlan<'_>,
        secrets: &EnvSecrets,
    ) -> Result<Prepared, Stop> {
        let env = plan.env;
        let keyed = self.keyed(env, secrets).await?;
        let layers = self.image_layers(&keyed.image).await?;
        let defaults = ImageDefaults::of(&self.store, &keyed.image).map_err(EngineError::from)?;
        let (key, lookup) = self.lookup(env.name.as_str(), &keyed.components).await?;
        Ok(Prepared {
            layers,
            defaults,
            mirror: keyed.mirror,
            components: keyed.components,
            key,
            lookup,
            steps: keyed.steps,
        })
    }
}

/// The attempt from what preparing found to its teardown: the CLI's layer, the snapshot
/// (looked up or built) or a follow-up's kept layers, the sandbox (and maintenance's own
/// when it has secrets), the phases, then the attempt's layer kept or its sandbox torn
/// down.
async fn attempt(ctx: &mut Ctx<'_>, p: Prepared) -> Result<AttemptOutcome, Stop> {
    let plan = ctx.plan;
    // Every sandbox of the attempt (setup's, maintenance's, the agent's, the check's)
    // gets these: said once.
    ctx.logger.note(
        Phase::Prepare,
        &ctx.deps.sandboxes.limits.describe(&plan.env.resources),
    );
    ctx.base_env = base_env(plan.env, p.defaults.clone(), &ctx.workdir);
    hangar_image::set_var(&mut ctx.base_env, "HANGAR_ATTEMPT", &plan.index.to_string());
    // The CLI's layer first: its install can take minutes, and nothing below waits
    // on it.
    let layers = ctx.deps.layers;
    let harness = layers.harness_layer(ctx, &p).await?;
    let follow = match plan.from {
        Some((task, index)) => {
            let name = crate::followup::kept_name(task, *index);
            let Some(f) = ctx.deps.layers.kept(&name) else {
                return Err(Stop::error(format!(
                    "failed to start from task {task} attempt {index}: its kept layer \
                     is gone (expired or collected)"
                )));
            };
            let info = CacheInfo {
                status: CacheStatus::From,
                reason: format!("task {task} attempt {index}'s layer"),
                snapshot: cache::short(&f.meta.snapshot).into(),
            };
            record_cache(ctx, &info).await?;
            Some(f)
        }
        None => None,
    };
    // The snapshot's lock is held from here until the sandbox over it holds its
    // lease, so `cache gc` cannot take it away in between; a build runs under it. A
    // follow-up's kept layer holds its snapshot's lease itself.
    let (mut lowers, hold, snapshot_key) = match &follow {
        Some(f) => {
            let mut lowers: Vec<PathBuf> = f
                .chain()
                .iter()
                .map(|n| ctx.deps.layers.kept_lower(n))
                .collect();
            lowers.push(ctx.deps.layers.snapshot_dir(&f.meta.snapshot));
            (lowers, None, f.meta.snapshot.clone())
        }
        None => {
            let found = matches!(p.lookup, Lookup::Hit(_));
            let hold = ctx.deps.layers.hold_snapshot(&p.key, found).await?;
            snapshot_for(ctx, &p).await?;
            (
                vec![ctx.deps.layers.snapshot_dir(&p.key)],
                Some(hold),
                p.key.clone(),
            )
        }
    };
    let mut below: Vec<PathBuf> = harness.into_iter().collect();
    below.extend(p.layers.iter().map(|(_, d)| d.clone()));
    // The check stands on the snapshot, not on anything an agent wrote.
    let check = CheckBase {
        lowers: std::iter::once(ctx.deps.layers.snapshot_dir(&snapshot_key))
            .chain(below.iter().cloned())
            .collect(),
        prepared: &p,
    };
    lowers.extend(below);
    let chain = follow.as_ref().map(|f| f.chain()).unwrap_or_default();
    let env = plan.env;
    // Secrets in maintenance: it runs in a sandbox of its own, so that nothing it or
    // the repository code it runs leaves outside its files (a process, a file in
    // /dev/shm, System V or POSIX IPC) outlives it; its files, scanned, are what the
    // agent's sandbox starts from.
    let apart = follow.is_none()
        && !env.maintenance.script.trim().is_empty()
        && ctx.secrets.reach(env, Phase::Maintenance);
    let (sandbox, workspace) = if apart {
        let (upper, base) = maintain_apart(ctx, lowers.clone(), hold, &p).await?;
        let hold = ctx.deps.layers.hold_snapshot(&snapshot_key, true).await?;
        // The sandbox leases what it stands on before it is returned.
        let sandbox = sandbox_over(ctx, lowers, Some(upper), &p, Role::Attempt).await?;
        drop(hold);
        (sandbox, Workspace::Maintained { base })
    } else {
        let sandbox = sandbox(ctx, lowers, &p).await?;
        drop(hold);
        let workspace = match &follow {
            Some(f) => Workspace::FollowUp(f),
            None => Workspace::Here,
        };
        (sandbox, workspace)
    };
    let out = phases(ctx, &sandbox, workspace, &check).await;
    ctx.net = None;
    // A collected attempt's layer is kept for follow-ups; any other is torn down.
    let base = match &out {
        Ok(_) => ctx.base_commit.take(),
        Err(_) => None,
    };
    let torn_down = match base {
        Some(base_commit) => {
            let layers: Vec<&str> = p.layers.iter().map(|(d, _)| d.hex()).collect();
            ctx.deps
                .layers
                .keep_attempt(
                    sandbox,
                    crate::followup::Keep {
                        name: crate::followup::kept_name(plan.task, plan.index),
                        snapshot: &snapshot_key,
                        base_commit,
                        below: chain,
                        layers,
                        ttl_ms: plan.env.cache.ttl.as_millis() as i64,
                    },
                )
                .await
                .map_err(|e| format!("keeping the attempt's layer: {e}"))
        }
        None => sandbox.destroy().await.map_err(|e| e.to_string()),
    };
    if let Err(e) = torn_down {
        ctx.logger.note(Phase::Collect, &format!("teardown: {e}"));
    }
    out
}

/// Looks the environment's snapshot up, or builds it (under the caller's lock), and
/// records how the attempt found it.
async fn snapshot_for(ctx: &mut Ctx<'_>, p: &Prepared) -> Result<(), Stop> {
    let plan = ctx.plan;
    let snapshot = ctx.deps.layers.snapshot_dir(&p.key);
    let info = match &p.lookup {
        Lookup::Hit(s) if snapshot.is_dir() => {
            ctx.deps
                .db
                .touch_snapshot(&s.key, ctx.deps.layers.now())
                .await
                .map_err(EngineError::from)?;
            CacheInfo {
                status: CacheStatus::Hit,
                reason: cache::hit_reason(s, ctx.deps.layers.now()),
                snapshot: cache::short(&s.key).into(),
            }
        }
        lookup => {
            let reason = match lookup {
                Lookup::Miss(reason) => reason.clone(),
                Lookup::Hit(s) => format!(
                    "snapshot {} was collected just before this task could use it",
                    cache::short(&s.key)
                ),
            };
            let missed = CacheInfo {
                status: CacheStatus::Miss,
                reason: reason.clone(),
                snapshot: cache::short(&p.key).into(),
            };
            record_cache(ctx, &missed).await?;
            timed(ctx.deps.db, plan, Phase::Setup, build(ctx, p, reason)).await?
        }
    };
    if matches!(p.lookup, Lookup::Hit(_)) || info.reason != p.lookup_reason() {
        record_cache(ctx, &info).await?;
    }
    Ok(())
}

/// Builds the snapshot for `p.key`, once: the caller holds the key's lock, so
/// concurrent builders of the same key (in this process or another) wait on it and
/// then find it built. Setup runs
/// in its own sandbox, whose upper directory becomes the snapshot by a rename; a
/// failure anywhere stores nothing.
async fn build(ctx: &mut Ctx<'_>, p: &Prepared, reason: String) -> Result<CacheInfo, Stop> {
    let plan = ctx.plan;
    let dir = ctx.deps.layers.snapshot_dir(&p.key);
    let short = cache::short(&p.key).to_string();
    let layers = ctx.deps.layers;
    if let Some(s) = ctx
        .deps
        .db
        .snapshot(&p.key)
        .await
        .map_err(EngineError::from)?
        .filter(|s| layers.serves(s))
    {
        ctx.logger.note(
            Phase::Setup,
            &format!("snapshot {short} was built by another task meanwhile"),
        );
        return Ok(CacheInfo {
            status: CacheStatus::Miss,
            reason: format!(
                "{reason}; waited for snapshot {short}, built {}",
                hangar_spec::format_ago(ctx.deps.layers.now() - s.created_ms)
            ),
            snapshot: short,
        });
    }
    // A directory without a record is what a crash mid-build leaves.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
    }
    let lowers = p.layers.iter().map(|(_, d)| d.clone()).collect();
    let sandbox = sandbox(ctx, lowers, p).await?;
    let setup = match setup(ctx, &sandbox, &p.steps).await {
        Ok(()) => prune_git(ctx, &sandbox).await,
        failed => failed,
    };
    ctx.net = None;
    let cleaned = match &setup {
        Ok(()) => ctx.deps.net.strip(&sandbox).await,
        Err(_) => Ok(()),
    };
    let kept = match (&setup, cleaned) {
        (Ok(()), Ok(())) => sandbox
            .destroy_keeping_upper(dir.clone())
            .await
            .map_err(EngineError::from),
        (_, cleaned) => {
            let destroyed = sandbox.destroy().await;
            cleaned.and(destroyed.map_err(EngineError::from))
        }
    };
    setup?;
    if let Err(e) = kept {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(Stop::error(format!("failed to keep the snapshot: {e}")));
    }
    if let Err(stop) = leak_scan(ctx, &dir, Phase::Setup).await {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(stop);
    }
    let size = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || hangar_sandbox::disk::usage(&dir)
    })
    .await
    .unwrap_or(0);
    let now = ctx.deps.layers.now();
    ctx.deps
        .db
        .put_snapshot(&SnapshotRecord {
            key: p.key.clone(),
            workspace: ctx.deps.workspace.to_string(),
            environment: plan.env.name.to_string(),
            components: serde_json::to_string(&p.components).expect("components serialize"),
            size: size as i64,
            created_ms: now,
            expires_ms: now + plan.env.cache.ttl.as_millis() as i64,
            last_used_ms: now,
            hits: 0,
            reset: false,
            boot_id: ctx.deps.layers.boot_id(),
            durable: false,
            source: None,
        })
        .await
        .map_err(EngineError::from)?;
    ctx.deps.layers.make_durable_later(&p.key);
    Ok(CacheInfo {
        status: CacheStatus::Miss,
        reason,
        snapshot: short,
    })
}

/// Clone the default branch, auto-install, the setup script.
async fn setup(
    ctx: &mut Ctx<'_>,
    sandbox: &Sandbox,
    steps: &[autoinstall::InstallStep],
) -> Result<(), Stop> {
    let env = ctx.plan.env;
    let workdir = ctx.workdir.clone();
    let branch = env.default_branch.clone();
    if let Some(user) = &env.agent.user {
        ctx.internal(
            sandbox,
            Own {
                phase: Phase::Setup,
                name: "user",
                script: ADD_USER,
                cwd: "/",
                env: &[("HANGAR_USER", user)],
                what: &format!("make `[agent] user` `{user}`"),
            },
        )
        .await?;
        find_user(ctx, sandbox).await?;
    }
    for (tool, version) in &env.toolchains {
        let install = hangar_harness::toolchain(tool, version).ok_or_else(|| {
            Stop::error(format!(
                "failed to install toolchain `{tool}`: hangar has none"
            ))
        })?;
        let (var, url) = crate::agent::registry(install.needs).map_err(Stop::error)?;
        ctx.internal(
            sandbox,
            Own {
                phase: Phase::Setup,
                name: "toolchain",
                script: &install.script,
                cwd: "/",
                env: &[(var, url.as_str())],
                what: &format!("install {tool} {version} ([toolchains])"),
            },
        )
        .await?;
    }
    ctx.internal(
        sandbox,
        Own {
            phase: Phase::Setup,
            name: "clone",
            script: CLONE,
            cwd: "/",
            env: &[
                ("HANGAR_WORKDIR", &workdir),
                ("HANGAR_DEFAULT_BRANCH", &branch),
                ("HANGAR_MIRROR", MIRROR_DIR),
            ],
            what: &format!("clone the default branch `{branch}`"),
        },
    )
    .await?;
    if !env.setup.auto_install {
        ctx.logger.note(Phase::Setup, "auto-install: off");
    } else if steps.is_empty() {
        ctx.logger
            .note(Phase::Setup, "auto-install: no lockfiles found");
    } else {
        ctx.internal(
            sandbox,
            Own {
                phase: Phase::Setup,
                name: "probe",
                script: &autoinstall::probe_script(steps),
                cwd: &workdir,
                env: &[],
                what: "auto-install",
            },
        )
        .await?;
        let script = autoinstall::install_script(steps);
        ctx.user(
            sandbox,
            Phase::Setup,
            "auto-install",
            &script,
            &[],
            Some(env.setup.timeout),
        )
        .await?;
    }
    if !env.setup.script.trim().is_empty() {
        ctx.user(
            sandbox,
            Phase::Setup,
            "setup script",
            &env.setup.script,
            &[],
            Some(env.setup.timeout),
        )
        .await?;
    }
    own(ctx, sandbox, Phase::Setup).await
}

/// Drops what setup made of the workspace repository and then let go of (a commit
/// reset away, an amended one): its reflogs, then its unreachable loose objects, so an
/// honest setup is not refused for them; the leak scan still reads every object left,
/// packed or loose, reachable or not. Unreachable objects in packs stay (a repack
/// costs a rewrite of the whole pack on every build). The repository's config may be
/// hostile: hooks and fsmonitor are off, and a failure here only leaves objects that
/// the scan reads.
async fn prune_git(ctx: &mut Ctx<'_>, sandbox: &Sandbox) -> Result<(), Stop> {
    if ctx.secrets.redactor.is_empty() {
        return Ok(());
    }
    const PRUNE: &str = r#"export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
cd "$HANGAR_WORKDIR" 2>/dev/null && [ "$(git rev-parse --is-inside-work-tree 2>/dev/null)" = true ] || exit 0
g() { git -c core.hooksPath=/dev/null -c core.fsmonitor=false "$@"; }
if ! { g reflog expire --expire=now --expire-unreachable=now --all && g prune --expire=now; } 2>&1; then
  echo "failed to prune the workspace repository's unreachable objects; the leak scan reads them all"
fi
"#;
    let workdir = ctx.workdir.clone();
    ctx.internal(
        sandbox,
        Own {
            phase: Phase::Setup,
            name: "prune",
            script: PRUNE,
            cwd: "/",
            env: &[("HANGAR_WORKDIR", &workdir)],
            what: "prune the workspace repository",
        },
    )
    .await
    .map(|_| ())
}

/// No secret value, in any of its encodings, may stay where the agent can read it
/// (file contents, names, extended attributes, git objects): after setup, in the
/// snapshot (scrubbed to placeholders when the environment says so, except in git
/// objects and compressed files, which cannot be); after maintenance, in the
/// attempt's upper directory. `dir` must not be in use.
async fn leak_scan(ctx: &Ctx<'_>, dir: &Path, phase: Phase) -> Result<(), Stop> {
    if ctx.secrets.redactor.is_empty() {
        return Ok(());
    }
    let scrub = phase == Phase::Setup && ctx.plan.env.setup.on_secret_leak == LeakPolicy::Scrub;
    let (redactor, placeholders, root) = (
        ctx.secrets.redactor.clone(),
        ctx.secrets.placeholders.clone(),
        dir.to_path_buf(),
    );
    let leaks = tokio::task::spawn_blocking(move || {
        let mode = if scrub {
            ScanMode::Scrub(&placeholders)
        } else {
            ScanMode::Report
        };
        hangar_secrets::scan(&root, &redactor, mode)
    })
    .await
    .map_err(|e| Stop::error(format!("failed to scan for secrets: {e}")))?
    .map_err(EngineError::from)?;
    let (scrubbed, left): (Vec<_>, Vec<_>) = leaks
        .into_iter()
        .partition(|l| scrub && l.place.scrubbable());
    for l in &scrubbed {
        ctx.logger.note(
            phase,
            &format!(
                "scrubbed secret `{}` from {}: it now holds the secret's placeholder",
                l.secret,
                l.location()
            ),
        );
    }
    if left.is_empty() {
        return Ok(());
    }
    let found = left
        .iter()
        .map(|l| format!("secret `{}` in {}", l.secret, l.location()))
        .collect::<Vec<_>>()
        .join(", ");
    Err(Stop::error(match phase {
        Phase::Setup if scrub => format!(
            "setup left {found}, which cannot be scrubbed; the snapshot is not kept \
             (remove it in the setup script; for a git object, the commit or file that \
             holds it and then `git gc --prune=now`)"
        ),
        Phase::Setup => format!(
            "setup left {found}; the snapshot is not kept (remove the file in the setup \
             script, or set [setup] on_secret_leak = \"scrub\")"
        ),
        _ => format!("the {phase} script left {found}, where the agent would read it"),
    }))
}

async fn record_cache(ctx: &Ctx<'_>, info: &CacheInfo) -> Result<(), Stop> {
    ctx.logger
        .note(Phase::Prepare, &format!("cache: {}", info.describe()));
    let json = info.to_stored();
    ctx.deps
        .db
        .set_attempt_field(ctx.plan.task, ctx.plan.index, AttemptField::Cache, &json)
        .await
        .map_err(EngineError::from)?;
    Ok(())
}

/// Finds `[agent] user` and checks out the task's branch or commit; the base commit,
/// recorded on the attempt.
async fn prelude(ctx: &mut Ctx<'_>, sandbox: &Sandbox) -> Result<String, Stop> {
    find_user(ctx, sandbox).await?;
    let workdir = ctx.workdir.clone();
    let base = checkout(ctx, sandbox, &workdir).await?;
    record_base(ctx, &base).await?;
    Ok(base)
}

/// Finds `[agent] user` in the sandbox: the agent phase runs as it, and every phase
/// in its home, so what setup leaves there (caches, `~/.bashrc`) is the agent's.
async fn find_user(ctx: &mut Ctx<'_>, sandbox: &Sandbox) -> Result<(), Stop> {
    let Some(name) = &ctx.plan.env.agent.user else {
        return Ok(());
    };
    let passwd = sandbox.read_file("/etc/passwd")?;
    let user = AgentUser::find(&String::from_utf8_lossy(&passwd), name).ok_or_else(|| {
        Stop::error(format!(
            "failed to find `[agent] user` `{name}` in the sandbox's /etc/passwd"
        ))
    })?;
    // Setup wrote that file: it must not make the agent root again.
    if user.uid == 0 || user.gid == 0 {
        return Err(Stop::error(format!(
            "failed to run the agent as `{name}`: /etc/passwd gives it uid {} gid {}, \
             which are root's",
            user.uid, user.gid
        )));
    }
    hangar_image::set_var(&mut ctx.base_env, "HOME", &user.home);
    // Root's git (checkout, maintenance, collect) refuses a repository another user
    // owns unless told it is safe; a command-scope setting, as git requires.
    for (k, v) in [
        ("GIT_CONFIG_COUNT", "1"),
        ("GIT_CONFIG_KEY_0", "safe.directory"),
        ("GIT_CONFIG_VALUE_0", "*"),
    ] {
        hangar_image::set_var(&mut ctx.base_env, k, v);
    }
    ctx.user = Some(user);
    Ok(())
}

/// Checks out the task's branch or commit; the base commit.
async fn checkout(ctx: &mut Ctx<'_>, sandbox: &Sandbox, workdir: &str) -> Result<String, Stop> {
    let plan = ctx.plan;
    let env = plan.env;
    timed(ctx.deps.db, plan, Phase::Checkout, async {
        ctx.internal(
            sandbox,
            Own {
                phase: Phase::Checkout,
                name: "checkout",
                script: CHECKOUT,
                cwd: workdir,
                env: &[
                    ("HANGAR_DEFAULT_BRANCH", &env.default_branch),
                    ("HANGAR_BRANCH", plan.branch.unwrap_or("")),
                    ("HANGAR_COMMIT", plan.commit.unwrap_or("")),
                    ("HANGAR_RUN", RUN_DIR),
                ],
                what: "check out the task's branch or commit",
            },
        )
        .await?;
        let base = sandbox.read_file(&format!("{RUN_DIR}/base"))?;
        let base = String::from_utf8_lossy(&base).trim().to_string();
        if base.len() < 40 || !base.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Stop::error(format!(
                "failed to read the base commit (git printed `{base}`)"
            )));
        }
        Ok(base)
    })
    .await
}

async fn record_base(ctx: &mut Ctx<'_>, base: &str) -> Result<(), Stop> {
    ctx.deps
        .db
        .set_attempt_field(
            ctx.plan.task,
            ctx.plan.index,
            AttemptField::BaseCommit,
            base,
        )
        .await
        .map_err(EngineError::from)?;
    ctx.base_commit = Some(base.to_string());
    Ok(())
}

/// The maintenance script, in a sandbox of its own over `lowers` (the caller's lock on
/// the snapshot is dropped once that sandbox holds its lease): checkout, the script,
/// then the sandbox is stopped with everything that is not its files (its processes,
/// tmpfs mounts, IPC), and its upper directory is scanned for the secrets' values.
/// That directory, for the agent's sandbox to take over, and the base commit.
async fn maintain_apart(
    ctx: &mut Ctx<'_>,
    lowers: Vec<PathBuf>,
    hold: Option<std::fs::File>,
    p: &Prepared,
) -> Result<(Upper, String), Stop> {
    let plan = ctx.plan;
    let sandbox = sandbox(ctx, lowers, p).await?;
    drop(hold);
    let base = match prelude(ctx, &sandbox).await {
        Ok(base) => base,
        Err(stop) => {
            discard(ctx, sandbox, Phase::Checkout).await;
            return Err(stop);
        }
    };
    let upper = timed(ctx.deps.db, plan, Phase::Maintenance, async {
        if let Err(stop) = maintenance(ctx, &sandbox).await {
            discard(ctx, sandbox, Phase::Maintenance).await;
            return Err(stop);
        }
        ctx.net = None;
        let upper = sandbox.stop_keeping_upper().await?;
        match leak_scan(ctx, &upper.path(), Phase::Maintenance).await {
            Ok(()) => Ok(upper),
            Err(stop) => {
                // A large tree to remove: off the async workers.
                let _ = tokio::task::spawn_blocking(move || drop(upper)).await;
                Err(stop)
            }
        }
    })
    .await?;
    Ok((upper, base))
}

/// The maintenance script, in whichever sandbox the attempt runs it.
async fn maintenance(ctx: &mut Ctx<'_>, sandbox: &Sandbox) -> Result<StepResult, Stop> {
    let maintenance = &ctx.plan.env.maintenance;
    ctx.user(
        sandbox,
        Phase::Maintenance,
        "maintenance script",
        &maintenance.script,
        &[],
        Some(maintenance.timeout),
    )
    .await
}

/// In the agent's sandbox: its workspace (checked out and maintained here, maintained
/// apart, or a follow-up's), the agent, the diff collected (and checked apart); the
/// attempt's outcome.
async fn phases(
    ctx: &mut Ctx<'_>,
    sandbox: &Sandbox,
    workspace: Workspace<'_>,
    check: &CheckBase<'_>,
) -> Result<AttemptOutcome, Stop> {
    let plan = ctx.plan;
    let env = plan.env;
    let workdir = ctx.workdir.clone();
    let follow_up = match workspace {
        Workspace::FollowUp(_) => "1",
        _ => "",
    };
    let base = match workspace {
        // A follow-up's workspace is its source's, as the source's agent left it:
        // neither checked out again nor maintained, and diffed against the same base.
        Workspace::FollowUp(f) => {
            find_user(ctx, sandbox).await?;
            let base = f.meta.base_commit.clone();
            record_base(ctx, &base).await?;
            base
        }
        Workspace::Here => {
            let base = prelude(ctx, sandbox).await?;
            if !env.maintenance.script.trim().is_empty() {
                timed(
                    ctx.deps.db,
                    plan,
                    Phase::Maintenance,
                    maintenance(ctx, sandbox),
                )
                .await?;
            }
            base
        }
        Workspace::Maintained { base } => base,
    };

    let agent = timed(ctx.deps.db, plan, Phase::Agent, async {
        ctx.internal(
            sandbox,
            Own {
                phase: Phase::Agent,
                name: "mark",
                script: MARK,
                cwd: &workdir,
                env: &[
                    ("HANGAR_BASE", base.as_str()),
                    ("HANGAR_START", START_DIR),
                    ("HANGAR_FOLLOW_UP", follow_up),
                ],
                what: "record the workspace before the agent",
            },
        )
        .await?;
        crate::agent::run(ctx, sandbox).await
    })
    .await;
    // The diff is collected whether or not the agent succeeded: a failed agent's
    // partial work is still worth reading.
    let collected = timed(ctx.deps.db, plan, Phase::Collect, async {
        ctx.internal(
            sandbox,
            Own {
                phase: Phase::Collect,
                name: "collect",
                script: COLLECT,
                cwd: &workdir,
                env: &[
                    ("HANGAR_BASE", base.as_str()),
                    ("HANGAR_RUN", RUN_DIR),
                    ("HANGAR_START", START_DIR),
                ],
                what: "collect the diff",
            },
        )
        .await?;
        let read = |name: &str| -> Result<Vec<u8>, Stop> {
            sandbox
                .read_file(&format!("{RUN_DIR}/{name}"))
                .map_err(Stop::from)
        };
        let patch = read("diff.patch")?;
        let numstat = String::from_utf8_lossy(&read("numstat")?).into_owned();
        let tree = String::from_utf8_lossy(&read("tree")?).trim().to_string();
        if let (Ok(_), Some(script)) = (&agent, &env.agent.check) {
            run_check(ctx, check, script, &patch, &base).await?;
        }
        Ok((patch, diff::summary(&numstat), tree))
    })
    .await;
    let (patch, summary, tree) = collected?;
    if patch.len() as u64 > env.agent.max_diff {
        let error = diff::oversized(&patch, env.agent.max_diff);
        ctx.logger.note(Phase::Collect, &error);
        return Ok(AttemptOutcome {
            status: AttemptStatus::Error,
            final_message: agent.ok().and_then(|done| done.final_message),
            exit_code: None,
            error: Some(error),
            summary: Some(summary),
            diff: None,
            result_tree: None,
        });
    }
    let (status, final_message, exit_code, error) = match agent {
        Ok(done) => (
            AttemptStatus::Ready,
            done.final_message,
            done.exit_code,
            None,
        ),
        Err(stop) => (stop.status, None, stop.exit_code, Some(stop.error)),
    };
    if let Some(e) = &error {
        ctx.logger.note(Phase::Agent, e);
    }
    Ok(AttemptOutcome {
        status,
        final_message,
        exit_code,
        error,
        summary: Some(summary),
        diff: Some(patch),
        result_tree: Some(tree),
    })
}

/// Runs `[agent] check` on the attempt's diff and records whether it passed: in a
/// fresh sandbox over the snapshot, its workspace checked out at the base and the
/// diff applied, so the check judges the change a user would apply. Not in the
/// agent's sandbox, where the agent decided what `python3` or `make` is and what its
/// processes report. Network off, no secrets, as `[agent] user` when there is one.
async fn run_check(
    ctx: &mut Ctx<'_>,
    on: &CheckBase<'_>,
    script: &str,
    patch: &[u8],
    base: &str,
) -> Result<(), Stop> {
    let sandbox = sandbox_over(ctx, on.lowers.clone(), None, on.prepared, Role::Check).await?;
    let ran = check_in(ctx, &sandbox, script, patch, base).await;
    discard(ctx, sandbox, Phase::Collect).await;
    let res = ran?;
    let result = hangar_store::db::CheckResult {
        passed: res.success(),
        exit_code: if res.timed_out { None } else { res.status.code },
    };
    let said = match (result.passed, result.exit_code) {
        (true, _) => "passed".to_string(),
        (false, Some(code)) => format!("failed with exit code {code}"),
        (false, None) => stopped_after(ctx.plan.env.agent.timeout),
    };
    ctx.logger.note(Phase::Collect, &format!("check: {said}"));
    let json = serde_json::to_string(&result).expect("a check result serializes");
    ctx.deps
        .db
        .set_attempt_field(ctx.plan.task, ctx.plan.index, AttemptField::Check, &json)
        .await
        .map_err(EngineError::from)?;
    Ok(())
}

/// The check's workspace (see [`CHECK_WORKSPACE`]), then the check itself.
async fn check_in(
    ctx: &mut Ctx<'_>,
    sandbox: &Sandbox,
    script: &str,
    patch: &[u8],
    base: &str,
) -> Result<StepResult, Stop> {
    // The snapshot's /etc/passwd: nothing the agent wrote.
    find_user(ctx, sandbox).await?;
    sandbox.write_file(&format!("{RUN_DIR}/check.patch"), patch, 0o600)?;
    let workdir = ctx.workdir.clone();
    ctx.internal(
        sandbox,
        Own {
            phase: Phase::Collect,
            name: "check-workspace",
            script: CHECK_WORKSPACE,
            cwd: &workdir,
            env: &[("HANGAR_BASE", base), ("HANGAR_RUN", RUN_DIR)],
            what: "apply the attempt's diff for the check",
        },
    )
    .await?;
    own(ctx, sandbox, Phase::Collect).await?;
    let step = Step {
        phase: Phase::Collect,
        name: "check",
        script,
        cwd: &workdir,
        env: Vec::new(),
        timeout: Some(ctx.plan.env.agent.timeout),
        runs_as: ctx.agent_runs_as(),
    };
    ctx.run(sandbox, step, &[]).await
}

/// Hands the workspace and the user's home to `[agent] user` (see [`OWN`]).
pub(crate) async fn own(ctx: &mut Ctx<'_>, sandbox: &Sandbox, phase: Phase) -> Result<(), Stop> {
    let Some(user) = ctx.user.clone() else {
        return Ok(());
    };
    let workdir = ctx.workdir.clone();
    let (uid, gid) = (user.uid.to_string(), user.gid.to_string());
    ctx.internal(
        sandbox,
        Own {
            phase,
            name: "own",
            script: OWN,
            cwd: "/",
            env: &[
                ("HANGAR_WORKDIR", &workdir),
                ("HANGAR_UID", &uid),
                ("HANGAR_GID", &gid),
                ("HANGAR_USER_RUN", USER_RUN_DIR),
                ("HANGAR_AGENT_RUN", hangar_harness::RUN_DIR),
            ],
            what: &format!("give the workspace to `{}`", user.name),
        },
    )
    .await
    .map(|_| ())
}

/// A sandbox over `lowers` with the mirror mounted, recorded on the attempt.
/// Its proxy is started (reaching nothing until a phase is entered) into `ctx.net`.
pub(crate) async fn sandbox(
    ctx: &mut Ctx<'_>,
    lowers: Vec<PathBuf>,
    p: &Prepared,
) -> Result<Sandbox, Stop> {
    sandbox_over(ctx, lowers, None, p, Role::Attempt).await
}

/// [`sandbox`], starting from `upper` (another sandbox's writes over the same
/// `lowers`) when given; recorded on the attempt for [`Role::Attempt`].
async fn sandbox_over(
    ctx: &mut Ctx<'_>,
    lowers: Vec<PathBuf>,
    upper: Option<Upper>,
    p: &Prepared,
    role: Role,
) -> Result<Sandbox, Stop> {
    let plan = ctx.plan;
    let mut spec = SandboxSpec::new(lowers);
    spec.upper = upper;
    spec.resources = ctx.deps.sandboxes.limits.apply(&plan.env.resources);
    spec.runtime = ctx.deps.sandboxes.runtime;
    spec.mounts.push(BindMount {
        source: p.mirror.clone(),
        destination: MIRROR_DIR.into(),
        read_only: true,
    });
    if role == Role::Attempt {
        ctx.deps
            .db
            .set_attempt_field(
                plan.task,
                plan.index,
                AttemptField::Sandbox,
                spec.id.as_str(),
            )
            .await
            .map_err(EngineError::from)?;
    }
    // Every layer it stands on (image, snapshot, kept, harness) is leased from its
    // first moment, so no collector takes one away under it.
    let stack = spec.lowers.clone();
    let sandbox = Sandbox::create(&ctx.deps.sandboxes.host, spec).await?;
    ctx.deps.layers.lease_stack(sandbox.dir(), &stack)?;
    match furnish(ctx, &sandbox, &p.layers).await {
        Ok(()) => Ok(sandbox),
        Err(stop) => {
            discard(ctx, sandbox, Phase::Prepare).await;
            Err(stop)
        }
    }
}

/// hangar's run directory (the agent may replace it, so every later access goes
/// through the sandbox's own root, see Sandbox::write_file) and the proxy.
async fn furnish(
    ctx: &mut Ctx<'_>,
    sandbox: &Sandbox,
    image: &[(hangar_store::Digest, PathBuf)],
) -> Result<(), Stop> {
    let mkdir = sandbox
        .output(hangar_sandbox::ExecSpec::new(["mkdir", "-p", RUN_DIR]))
        .await?;
    if !mkdir.status.success() {
        return Err(Stop::error(format!(
            "failed to create {RUN_DIR} in the sandbox: {}",
            String::from_utf8_lossy(&mkdir.stderr).trim()
        )));
    }
    ctx.net = Some(ctx.deps.net.start(
        sandbox,
        image,
        &ctx.base_env,
        &ctx.plan.env.agent,
        ctx.audit.clone(),
        ctx.deps.internal.clone(),
    )?);
    Ok(())
}

/// Tears down a sandbox that the attempt is done with (its proxy first); what could
/// not be removed is noted in `phase`'s log.
async fn discard(ctx: &mut Ctx<'_>, sandbox: Sandbox, phase: Phase) {
    ctx.net = None;
    if let Err(e) = sandbox.destroy().await {
        ctx.logger.note(phase, &format!("teardown: {e}"));
    }
}

/// The environment every exec starts from: the image's, a UTF-8 locale, `[toolchains]` on
/// PATH, `[env]`, and where the workspace is.
fn base_env(env: &Environment, defaults: ImageDefaults, workdir: &str) -> Vec<(String, String)> {
    let mut out = defaults.env;
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    if !out.iter().any(|(k, _)| k == "LANG") {
        out.push(("LANG".into(), "C.UTF-8".into()));
    }
    if !env.toolchains.is_empty() {
        let path = out
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let pinned = format!("{}:{path}", hangar_harness::toolchain_path());
        hangar_image::set_var(&mut out, "PATH", &pinned);
    }
    for (k, v) in &env.env {
        hangar_image::set_var(&mut out, k, v);
    }
    hangar_image::set_var(&mut out, "HANGAR_WORKSPACE", workdir);
    for (k, v) in crate::net::proxy_env() {
        hangar_image::set_var(&mut out, &k, &v);
    }
    out
}

// ---- hangar's own scripts, run in the attempt's sandboxes ----

const CLONE: &str = r#"mkdir -p "$(dirname "$HANGAR_WORKDIR")"
git clone --quiet --no-hardlinks --branch "$HANGAR_DEFAULT_BRANCH" "$HANGAR_MIRROR" "$HANGAR_WORKDIR" 2>&1
"#;

/// The workspace in a snapshot is as old as the snapshot: fetch from the mirror (mounted
/// read-only, refreshed on the host for this task), then check out the task's branch,
/// commit, or the default branch's tip. `--force`: the base is exactly the commit, even
/// where setup changed tracked files.
const CHECKOUT: &str = r#"git fetch --quiet --prune origin
if [ -n "$HANGAR_BRANCH" ]; then
  if ! git rev-parse --verify --quiet "refs/remotes/origin/$HANGAR_BRANCH^{commit}" >/dev/null; then
    echo "branch $HANGAR_BRANCH is not in the repository" >&2; exit 1
  fi
  git checkout --quiet --force -B "$HANGAR_BRANCH" "origin/$HANGAR_BRANCH"
elif [ -n "$HANGAR_COMMIT" ]; then
  if ! git rev-parse --verify --quiet "$HANGAR_COMMIT^{commit}" >/dev/null; then
    echo "commit $HANGAR_COMMIT is not in the repository" >&2; exit 1
  fi
  git -c advice.detachedHead=false checkout --quiet --force --detach "$HANGAR_COMMIT"
else
  git checkout --quiet --force -B "$HANGAR_DEFAULT_BRANCH" "origin/$HANGAR_DEFAULT_BRANCH"
fi
git rev-parse HEAD > "$HANGAR_RUN/base"
git log -1 --format='at %h %s'
"#;

/// The workspace as the agent finds it, recorded so that the diff holds only what the
/// agent changed: setup's and maintenance's files (a `node_modules` without a
/// `.gitignore`, a venv, build output) were there before it and are not its work. The
/// tree and its objects live in hangar's own object directory beside the repository's,
/// so nothing is added to the repository and the agent's `git gc` cannot lose them; the
/// index starts from the repository's, so only files changed since checkout are hashed.
/// Indexes are copied with their mtime (`cp -p`): git tells a file changed within the
/// second its entry was recorded (same size, same mtime in seconds) by comparing entries
/// with the index file's own mtime, which a plain copy would make later.
/// A follow-up keeps its source's record: its diff holds both agents' work.
const MARK: &str = r#"export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
g() { git -c core.hooksPath=/dev/null -c core.fsmonitor=false "$@"; }
if [ -n "$HANGAR_FOLLOW_UP" ] && [ -f "$HANGAR_START/tree" ]; then exit 0; fi
rm -rf "$HANGAR_START"
mkdir -p "$HANGAR_START/objects"
index="$(g rev-parse --git-path index)"
objects="$(cd "$(g rev-parse --git-path objects)" && pwd)"
export GIT_INDEX_FILE="$HANGAR_START/index" GIT_OBJECT_DIRECTORY="$HANGAR_START/objects" GIT_ALTERNATE_OBJECT_DIRECTORIES="$objects"
cp -p "$index" "$GIT_INDEX_FILE" 2>/dev/null || g read-tree "$HANGAR_BASE"
g add -A .
g write-tree > "$HANGAR_START/tree.new"
mv "$HANGAR_START/tree.new" "$HANGAR_START/tree"
"#;

/// The diff against the base, of the paths the agent changed (between the record
/// [`MARK`] made and the workspace now), as the agent left them; from temporary indexes,
/// so the agent's own index (and any commits it made) do not matter. Deleting a file
/// setup made is no change to the base. The agent may have rewritten the repository's
/// config: external diff drivers, textconv, hooks and fsmonitor are switched off.
const COLLECT: &str = r#"kill -KILL -1 2>/dev/null || true
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
g() { git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.quotePath=true "$@"; }
objects="$(cd "$(g rev-parse --git-path objects)" && pwd)"
export GIT_OBJECT_DIRECTORY="$HANGAR_START/objects" GIT_ALTERNATE_OBJECT_DIRECTORIES="$objects"
mkdir -p "$GIT_OBJECT_DIRECTORY"
export GIT_INDEX_FILE="$HANGAR_RUN/collect.index"
rm -f "$GIT_INDEX_FILE"
if start="$(cat "$HANGAR_START/tree" 2>/dev/null)" && g cat-file -e "$start^{tree}" 2>/dev/null; then
  cp -p "$HANGAR_START/index" "$GIT_INDEX_FILE" 2>/dev/null || g read-tree "$start"
  g add -A .
  end="$(g write-tree)"
  export GIT_INDEX_FILE="$HANGAR_RUN/result.index"
  rm -f "$GIT_INDEX_FILE"
  g read-tree "$HANGAR_BASE"
  g diff-tree -r -z --no-renames "$start" "$end" | while IFS= read -r -d '' meta && IFS= read -r -d '' path; do
    set -- $meta
    if [ "$5" = D ]; then
      printf '0 0000000000000000000000000000000000000000\t%s\0' "$path"
    else
      printf '%s %s\t%s\0' "$2" "$4" "$path"
    fi
  done | g update-index -z --index-info
else
  echo "the record of the workspace at the agent's start is gone: the diff holds every change since the base"
  g read-tree "$HANGAR_BASE"
  g add -A .
fi
g write-tree > "$HANGAR_RUN/tree"
g diff --cached --binary --full-index --no-ext-diff --no-textconv -M "$HANGAR_BASE" > "$HANGAR_RUN/diff.patch"
g diff --cached --numstat --no-ext-diff --no-textconv -M "$HANGAR_BASE" > "$HANGAR_RUN/numstat"
"#;

/// `[agent] user`, made in setup's sandbox (before the clone, so setup fills the user's
/// home) unless the image has it. Its home starts without /etc/skel's `.bashrc`, which
/// returns early in a non-interactive shell and so would hide what setup appends; its
/// `.profile` reads `.bashrc` for login shells.
const ADD_USER: &str = r#"if ! getent passwd "$HANGAR_USER" >/dev/null; then
  if ! command -v useradd >/dev/null; then
    echo "the image has no user $HANGAR_USER and no useradd to make one (install the passwd package)" >&2
    exit 1
  fi
  skel="$(mktemp -d)"
  echo '[ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"' > "$skel/.profile"
  useradd --create-home --skel "$skel" --user-group --shell /bin/bash "$HANGAR_USER"
  rm -rf "$skel"
fi
mkdir -p "$(getent passwd "$HANGAR_USER" | cut -d: -f6)"
"#;

/// Gives `[agent] user` the workspace, its home and the run directories it writes, as
/// root (setup, checkout and maintenance) left them. Only what another owns is changed:
/// a chown copies a file up from the snapshot.
const OWN: &str = r#"mkdir -p "$HANGAR_USER_RUN" "$HANGAR_AGENT_RUN"
find "$HANGAR_WORKDIR" "$HOME" "$HANGAR_USER_RUN" "$HANGAR_AGENT_RUN" -xdev \( ! -user "$HANGAR_UID" -o ! -group "$HANGAR_GID" \) -print0 | xargs -0 -r chown -h "$HANGAR_UID:$HANGAR_GID"
"#;

/// The check's workspace: the snapshot's, fetched from the mirror and checked out at the
/// base, then the attempt's diff applied (see [`COLLECT`]). It is applied to a temporary
/// index made from the base, so it applies exactly as to a fresh clone, and that index's
/// paths are written out: a file the diff adds where setup left an untracked one (the
/// diff is against the base, not against the snapshot's workspace) is the diff's.
const CHECK_WORKSPACE: &str = r#"git fetch --quiet --prune origin
if ! git rev-parse --verify --quiet "$HANGAR_BASE^{commit}" >/dev/null; then
  echo "the base commit $HANGAR_BASE is no longer in the repository" >&2; exit 1
fi
git -c advice.detachedHead=false checkout --quiet --force --detach "$HANGAR_BASE"
if [ -s "$HANGAR_RUN/check.patch" ]; then
  export GIT_INDEX_FILE="$HANGAR_RUN/check.index"
  git read-tree "$HANGAR_BASE"
  git apply --cached "$HANGAR_RUN/check.patch"
  git diff --cached --name-only -z --no-renames --diff-filter=D "$HANGAR_BASE" | xargs -0 -r rm -f --
  git diff --cached --name-only -z --no-renames --diff-filter=d "$HANGAR_BASE" | git checkout-index --force -z --stdin
fi
"#;
