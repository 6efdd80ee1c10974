//! hangar's engine: environments in, tasks out. It keeps repository mirrors on the host,
//! runs each attempt through its phases in a sandbox, stores logs, timings and the diff,
//! and applies a finished diff to a user's checkout. It speaks no HTTP.

mod admission;
mod agent;
mod apply;
mod attempt;
pub mod autoinstall;
pub mod best;
pub mod cache;
mod config;
mod dest;
pub mod diff;
mod error;
mod followup;
pub mod forge;
mod git;
pub mod images;
mod layers;
pub mod limits;
mod net;
mod phase;
mod push;
pub mod run;
pub mod runner;
mod scheduler;
pub mod secrets;
pub mod sessions;
mod syncs;
pub mod tokens;
pub mod travel;
mod validate;
mod view;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hangar_sandbox::{HostConfig, RuntimeKind};
use hangar_spec::{Approval, AttemptStatus, Environment, Harness, Phase, TaskId, Workspace};
use hangar_store::db::{Db, EnvRecord, LogLine, NewTask, SnapshotRecord, TaskRecord};
use hangar_store::{Bucket, Digest, ImageRecord, Store};
use tokio::sync::watch;

pub use admission::default_max_running;
pub use apply::{apply_patch, ApplyReport};
pub use config::{EngineConfig, MAX_ATTEMPTS};
use dest::Principal;
pub use error::{EngineError, FollowRefusal, Invalid, Result, Unfollowable};
pub use forge::{Delivery, ForgeConnect, Heard, PullOptions, Pulled};
pub use git::{Mirrors, Pin, Reach};
pub use hangar_net::trust::{host_cas, read_cas};
pub use layers::CacheGcReport;
pub use push::{CommitRequest, Committed, Identity, Push, Pushed};
pub use view::{Task, TaskFilter};

/// What a running task reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    PhaseStarted {
        attempt: u32,
        phase: Phase,
    },
    PhaseFinished {
        attempt: u32,
        phase: Phase,
        ms: i64,
        ok: bool,
    },
    Line(LogLine),
}

/// Receives [`Event`]s; shared by every attempt of a task.
pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

/// A new task.
#[derive(Debug, Clone, Default)]
pub struct TaskRequest {
    pub environment: String,
    pub prompt: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// The agent script's text (`hangar exec --script FILE`), instead of the environment's.
    pub script: Option<String>,
    /// Over the environment's `[agent] harness` and `approval`.
    pub harness: Option<Harness>,
    pub approval: Option<Approval>,
    /// Best-of-N: how many attempts run side by side from the same snapshot (0 means 1).
    pub attempts: u32,
    /// A follow-up: `TASK[:ATTEMPT]` whose kept layer the attempts start from (in that
    /// task's environment).
    pub from: Option<String>,
}

/// How often a running task looks for a cancel asked for from another process.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The engine over one data directory.
pub struct Engine {
    /// What every workspace's view of this engine shares (see [`Engine::in_workspace`]).
    shared: Arc<Shared>,
    /// The workspace whose environments, secrets and tasks this view sees.
    workspace: Workspace,
    /// Whom this view acts for, which decides what its destinations may be.
    principal: Principal,
}

/// The engine's state, shared by its workspace views, in its parts.
#[doc(hidden)]
pub struct Shared {
    store: Store,
    db: Db,
    mirrors: Mirrors,
    /// The mirror refreshes under way and just done, shared by the attempts of a burst.
    syncs: syncs::Syncs,
    /// How sandboxes are made here, and their limits.
    sandboxes: Sandboxes,
    /// When attempts run: the slots, the fair queue, the task locks.
    scheduler: scheduler::Scheduler,
    /// The installation's secret key.
    keys: secrets::Keys,
    /// How the proxies resolve and trust, and what tenants may reach.
    net: net::NetSettings,
    clock: Clock,
    /// This boot's id (a snapshot not yet durable serves only the boot that built it).
    boot_id: String,
    /// Snapshot, kept and harness layer directories, and their collector.
    layers: layers::Layers,
    /// Where users reach the daemon, for links the forge shows.
    public_url: Option<String>,
}

/// How this engine makes sandboxes.
pub(crate) struct Sandboxes {
    host: HostConfig,
    runtime: RuntimeKind,
    /// Each sandbox's limits where its environment's `[resources]` sets none.
    limits: limits::MachineLimits,
}

/// The error an attempt gets when the process running it died.
pub const RECOVERED: &str =
    "hangar stopped while this attempt ran; its sandbox was removed when hangar started again";

/// What [`Engine::recover`] did.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Sandboxes of dead processes removed.
    pub sandboxes: usize,
    /// Tasks whose unfinished attempts were marked `error`.
    pub tasks: Vec<TaskId>,
}

impl std::ops::Deref for Engine {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// An environment's snapshot key and what it was computed from.
struct Keyed {
    image: ImageRecord,
    mirror: PathBuf,
    steps: Vec<autoinstall::InstallStep>,
    components: cache::KeyComponents,
}

/// Now, in epoch milliseconds; tests replace it to move time without sleeping.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

impl Engine {
    /// Opens the engine that `config` describes (see [`EngineConfig::new`] for the
    /// defaults).
    pub async fn open(config: EngineConfig) -> Result<Engine> {
        let EngineConfig {
            store,
            init_binary,
            max_running,
            max_attempts,
            secret_key_file,
            resolver,
            trusted_cas,
            clock,
            open_internal,
            public_url,
        } = config;
        let max_running = max_running.max(1);
        let max_attempts = match max_attempts {
            None => MAX_ATTEMPTS,
            Some(n) if n >= 1 && n as usize <= max_running => n,
            Some(n) => {
                return Err(EngineError::MaxAttempts {
                    max_attempts: n,
                    max_running,
                })
            }
        };
        let db = Db::open(&store.path(Bucket::Database)).await?;
        let budget = admission::Budget::detect(max_running);
        let shared = Shared {
            mirrors: Mirrors::new(store.path(Bucket::Mirrors)),
            syncs: syncs::Syncs::default(),
            layers: layers::Layers::new(store.clone(), db.clone()),
            db,
            sandboxes: Sandboxes {
                host: HostConfig::new(store.path(Bucket::Run), init_binary),
                runtime: RuntimeKind::default(),
                limits: limits::MachineLimits::detect(store.root(), budget.cpu_slots),
            },
            scheduler: scheduler::Scheduler::new(budget, max_attempts, store.path(Bucket::Locks)),
            keys: secrets::Keys::new(secret_key_file),
            net: net::NetSettings::new(
                resolver,
                trusted_cas,
                open_internal,
                store.path(Bucket::Proxy),
            ),
            clock,
            boot_id: boot_id(),
            public_url,
            store,
        };
        Ok(Engine {
            shared: Arc::new(shared),
            workspace: Workspace::default_workspace(),
            principal: Principal::LocalAdmin,
        })
    }

    /// The same engine (its store, slots, queue and settings) seeing workspace `ws` as the
    /// local admin.
    pub fn in_workspace(&self, ws: &Workspace) -> Engine {
        Engine {
            shared: self.shared.clone(),
            workspace: ws.clone(),
            principal: Principal::LocalAdmin,
        }
    }

    /// Another handle on this same view (its workspace and principal).
    pub(crate) fn again(&self) -> Engine {
        Engine {
            shared: self.shared.clone(),
            workspace: self.workspace.clone(),
            principal: self.principal,
        }
    }

    /// The same engine seeing workspace `ws` for a token's holder: its repositories,
    /// endpoints, allow rules, registries and images are checked (see `dest.rs`).
    pub fn for_tenant(&self, ws: &Workspace) -> Engine {
        Engine {
            principal: Principal::Tenant,
            ..self.in_workspace(ws)
        }
    }

    /// How many attempts may run at once.
    pub fn max_running(&self) -> usize {
        self.scheduler.max_running()
    }

    /// The limits a sandbox gets where its environment's `[resources]` sets none.
    pub fn default_limits(&self) -> limits::MachineLimits {
        self.sandboxes.limits
    }

    /// How many attempts run now.
    pub fn running(&self) -> usize {
        self.scheduler.running()
    }

    /// Crash recovery, for the one process that runs tasks on this data dir (the
    /// daemon) as it starts: removes what is left of sandboxes whose owner died, and
    /// marks every attempt that was pending or running `error` with the reason. Their
    /// logs so far stay.
    pub async fn recover(&self) -> Result<Recovered> {
        let host = self.sandboxes.host.clone();
        let reaped = tokio::task::spawn_blocking(move || hangar_sandbox::reap(&host))
            .await
            .map_err(|e| EngineError::Io {
                action: "reap the sandboxes in",
                path: self.store.path(Bucket::Run),
                source: std::io::Error::other(e.to_string()),
            })??;
        for (id, left) in &reaped.failed {
            tracing::warn!("sandbox {id} of a stopped daemon was not fully removed: {left}");
        }
        let mut tasks = Vec::new();
        for id in self.db.unfinished_tasks().await? {
            let Some(orphan) = self.scheduler.orphan(&id)? else {
                continue; // a live process runs it
            };
            self.fail_unfinished(&id, RECOVERED).await?;
            orphan.release();
            tasks.push(id);
        }
        Ok(Recovered {
            sandboxes: reaped.removed.len(),
            tasks,
        })
    }

    /// Marks every attempt of a task that is still pending or running `error`, saying
    /// `reason` and what it was doing.
    pub async fn fail_unfinished(&self, id: &TaskId, reason: &str) -> Result<()> {
        for a in self.db.attempts(id).await? {
            if !matches!(a.status, AttemptStatus::Pending | AttemptStatus::Running) {
                continue;
            }
            let outcome = hangar_store::db::AttemptOutcome {
                status: AttemptStatus::Error,
                final_message: None,
                exit_code: None,
                error: Some(format!("{reason} (it was {})", a.status)),
                summary: None,
                diff: None,
                result_tree: None,
            };
            self.db.finish_attempt(id, a.index, &outcome).await?;
        }
        Ok(())
    }

    /// Where a task waits for a slot: 1 when its first waiting attempt is next. `None`
    /// when none of its attempts is waiting.
    pub fn queue_position(&self, task: &Task) -> Option<usize> {
        self.scheduler.position(self.mine(task).ok()?)
    }

    /// Waits until every snapshot this engine committed is on disk (or failed to get
    /// there, which leaves it serving this boot only). A process calls it before it exits.
    pub async fn settle(&self) {
        self.layers.settle().await;
    }

    fn now_at(&self) -> cache::Now<'_> {
        cache::Now {
            ms: self.now(),
            boot_id: &self.boot_id,
        }
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// An image's layers, unpacked (each once) on a blocking thread, bottom first.
    async fn image_layers(&self, rec: &ImageRecord) -> Result<Vec<(Digest, PathBuf)>> {
        let (store, rec) = (self.store.clone(), rec.clone());
        tokio::task::spawn_blocking(move || hangar_image::layers(&store, &rec))
            .await
            .map_err(|e| EngineError::Io {
                action: "unpack the layers under",
                path: self.store.path(Bucket::Layers),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(EngineError::from)
    }

    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    // ---- environments ----

    /// Validates an environment file and stores it. A relative local `repo` is taken
    /// from `base_dir` (the file's directory).
    pub async fn create_env(&self, file: &str, source: &str, base_dir: &Path) -> Result<EnvRecord> {
        let env = Environment::parse(file, source)?;
        self.check_destinations(&env).await?;
        let env = normalized(file, env, base_dir)?;
        let now = hangar_store::db::now_ms();
        let rec = EnvRecord {
            workspace: self.workspace.to_string(),
            name: env.name.to_string(),
            version: 1,
            source: env.to_toml(),
            repo: env.repo.clone(),
            created_ms: now,
            updated_ms: now,
        };
        self.db.create_env(&rec).await?;
        Ok(rec)
    }

    /// Replaces environment `name` with a new file (which must keep the name).
    pub async fn update_env(
        &self,
        name: &str,
        file: &str,
        source: &str,
        base_dir: &Path,
    ) -> Result<EnvRecord> {
        let env = Environment::parse(file, source)?;
        self.check_destinations(&env).await?;
        let env = normalized(file, env, base_dir)?;
        if env.name.as_str() != name {
            return Err(EngineError::EnvRenamed {
                name: name.to_string(),
                file: file.to_string(),
                described: env.name.to_string(),
            });
        }
        Ok(self
            .db
            .update_env(&self.workspace, name, &env.to_toml(), &env.repo)
            .await?)
    }

    /// An environment that follows its repository's file takes the file at the default
    /// branch's tip, stored as a new version when it differs. Whoever can push to that
    /// branch then defines the environment, so what only its owner may change (name,
    /// repository, secrets, network policy, the model's endpoint and key) must stay as
    /// stored: a change there is refused, naming it, until `hangar env update`.
    async fn follow_repository_file(
        &self,
        rec: EnvRecord,
        env: Environment,
    ) -> Result<(EnvRecord, Environment)> {
        let (mirrors, repo, branch) = (
            self.mirrors.clone(),
            env.repo.clone(),
            env.default_branch.clone(),
        );
        let reach = self.check_repo(&env.repo).await?;
        let (tip, text) = tokio::task::spawn_blocking(move || {
            mirrors.sync(&repo, &reach)?;
            mirrors.file_at(&repo, &branch, hangar_spec::REPO_ENV_FILE)
        })
        .await
        .map_err(|e| EngineError::Git {
            what: "mirror".into(),
            message: e.to_string(),
        })??;
        let Some(text) = text else {
            return Ok((rec, env));
        };
        let short = &tip[..tip.len().min(12)];
        let file = format!("{} at {short}", hangar_spec::REPO_ENV_FILE);
        let text = String::from_utf8(text).map_err(|_| EngineError::FollowedFileRejected {
            file: file.clone(),
            reason: FollowRefusal::NotText,
        })?;
        // A local repository's file names it relative to its own directory.
        let base_dir = Path::new(&env.repo).join(".hangar");
        let theirs = normalized(&file, Environment::parse(&file, &text)?, &base_dir)?;
        if theirs == env {
            return Ok((rec, env));
        }
        let guarded = [
            ("name", theirs.name != env.name),
            ("repo", theirs.repo != env.repo),
            ("[secrets]", theirs.secrets != env.secrets),
            ("[network]", theirs.network != env.network),
            (
                "[agent] endpoint",
                theirs.agent.endpoint != env.agent.endpoint,
            ),
            ("[agent] key", theirs.agent.key != env.agent.key),
            ("[forge]", theirs.forge != env.forge),
        ];
        let changed: Vec<&str> = guarded
            .iter()
            .filter(|(_, c)| *c)
            .map(|(k, _)| *k)
            .collect();
        if !changed.is_empty() {
            return Err(EngineError::FollowedFileRejected {
                file,
                reason: FollowRefusal::Guarded {
                    env: env.name.to_string(),
                    changed,
                },
            });
        }
        let rec = self
            .db
            .update_env(&self.workspace, &rec.name, &theirs.to_toml(), &theirs.repo)
            .await?;
        tracing::info!(
            "environment `{}` follows {file}: version {}",
            rec.name,
            rec.version
        );
        Ok((rec, theirs))
    }

    /// A stored environment, parsed.
    pub async fn env(&self, name: &str) -> Result<(EnvRecord, Environment)> {
        let rec = self.db.env(&self.workspace, name).await?;
        let env = Environment::parse(&format!("environment `{name}`"), &rec.source)?;
        Ok((rec, env))
    }

    /// This workspace's environments, by name, each with its parsed file.
    pub async fn envs(&self) -> Result<Vec<(EnvRecord, Environment)>> {
        let mut out = Vec::new();
        for rec in self.db.envs(&self.workspace).await? {
            let env = Environment::parse(&format!("environment `{}`", rec.name), &rec.source)?;
            out.push((rec, env));
        }
        Ok(out)
    }

    /// Deletes an environment and its secrets; its tasks stay.
    pub async fn delete_env(&self, name: &str) -> Result<()> {
        Ok(self.db.delete_env(&self.workspace, name).await?)
    }

    /// Environments whose repository is `query`: a URL, a path, or its last components
    /// (`owner/name`), compared without scheme, host, `.git` or trailing slash.
    pub async fn resolve_env(&self, query: &str) -> Result<Vec<EnvRecord>> {
        let want = repo_key(query);
        let envs = self.db.envs(&self.workspace).await?;
        Ok(envs
            .into_iter()
            .filter(|e| {
                let have = repo_key(&e.repo);
                !want.is_empty() && (have == want || have.ends_with(&format!("/{want}")))
            })
            .collect())
    }

    // ---- tasks ----

    /// Records a task (pending) after checking that it can run: the request against its
    /// environment and the engine's limits (`validate.rs`), and what only a lookup tells
    /// (the follow-up's source, the environment's destinations and its followed file, the
    /// image, unset secrets).
    pub async fn submit(&self, req: &TaskRequest) -> Result<TaskRecord> {
        let from = match &req.from {
            Some(spec) => {
                let (source, index) = self.follow_up_source(spec).await?;
                validate::follow_up(req, &source.id, &source.environment)?;
                Some((source, index))
            }
            None => None,
        };
        let env_name = match &from {
            Some((source, _)) => source.environment.as_str(),
            None => req.environment.as_str(),
        };
        let (rec, env) = self.env(env_name).await?;
        // Checked again at each task: names resolve elsewhere over time.
        self.check_destinations(&env).await?;
        let (rec, env) = if env.follow {
            self.follow_repository_file(rec, env).await?
        } else {
            (rec, env)
        };
        // After following: the repository's file may name another image.
        self.check_image(&env)?;
        let limits = validate::Limits {
            max_attempts: self.scheduler.max_attempts(),
        };
        let attempts = validate::task(&env, req, limits)?;
        let missing = self.unset_secrets(&env).await?;
        if !missing.is_empty() {
            return Err(secrets::missing_secrets(&env, &missing));
        }
        let task = NewTask {
            id: TaskId::random(),
            workspace: self.workspace.to_string(),
            environment: rec.name.clone(),
            environment_version: rec.version,
            spec: rec.source.clone(),
            title: title_of(&req.prompt),
            prompt: req.prompt.clone(),
            branch: req.branch.clone(),
            commit: req.commit.clone(),
            agent_script: req.script.clone(),
            harness: req.harness,
            approval: req.approval,
            attempts,
            from: from.map(|(source, index)| (source.id, index)),
        };
        // Held from before the task is stored until it has run, so recovery can tell a
        // task whose process died from one another process is running.
        let lock = self.scheduler.lock_task(&task.id)?;
        let stored = self.db.create_task(&task).await?;
        self.scheduler.hold(lock);
        Ok(stored)
    }

    /// Runs a pending task's attempts to the end; `cancel` set to true stops them.
    pub async fn run_task(
        &self,
        id: &TaskId,
        progress: Progress,
        cancel: watch::Receiver<bool>,
    ) -> Result<TaskRecord> {
        let task = self.db.task(&self.workspace, id).await?;
        let mut env = Environment::parse(&format!("task {id}'s environment"), &task.spec)?;
        env.agent = validate::effective_agent(
            &env,
            task.harness,
            task.approval,
            task.agent_script.as_deref(),
        );
        let script = env.agent.script.clone().unwrap_or_default();
        // A cancel asked for from elsewhere (`hangar cancel`) reaches the attempts like
        // the caller's own.
        let mut outer = cancel;
        let (cancel_tx, cancel) = watch::channel(*outer.borrow());
        let watcher = tokio::spawn({
            let (db, id) = (self.db.clone(), id.clone());
            async move {
                let mut outer_alive = true;
                loop {
                    if *outer.borrow() || db.cancel_requested(&id).await.unwrap_or(false) {
                        let _ = cancel_tx.send(true);
                        return;
                    }
                    tokio::select! {
                        changed = outer.changed(), if outer_alive => {
                            outer_alive = changed.is_ok();
                        }
                        () = tokio::time::sleep(CANCEL_POLL) => {}
                    }
                }
            }
        });
        let attempts = self.db.attempts(id).await?;
        let plans: Vec<attempt::AttemptPlan<'_>> = attempts
            .iter()
            .filter(|a| a.status == hangar_spec::AttemptStatus::Pending)
            .map(|a| attempt::AttemptPlan {
                task: id,
                index: a.index,
                env: &env,
                prompt: &task.prompt,
                branch: task.branch.as_deref(),
                commit: task.commit.as_deref(),
                agent_script: &script,
                progress: progress.clone(),
                from: task.from.as_ref(),
            })
            .collect();
        // Best-of-N: side by side, each in its own sandbox; the first to need the
        // snapshot builds it and the others wait for it on its lock.
        let runs = plans
            .iter()
            .map(|plan| self.run_attempt(plan, cancel.clone()));
        let results = futures_util::future::join_all(runs).await;
        watcher.abort();
        let outcome = results.into_iter().collect::<Result<Vec<()>>>();
        let task = self.db.task(&self.workspace, id).await;
        if task.as_ref().is_ok_and(|t| t.status.is_finished()) {
            self.scheduler.release(id);
        }
        outcome?;
        Ok(task?)
    }

    /// Asks whichever process runs the task to cancel it: its attempts stop and their
    /// sandboxes are torn down. A finished task cannot be cancelled.
    pub async fn cancel(&self, task: &Task) -> Result<()> {
        let id = self.mine(task)?;
        let task = self.db.task(&self.workspace, id).await?;
        if task.status.is_finished() {
            return Err(EngineError::TaskFinished {
                id: id.clone(),
                status: task.status,
            });
        }
        Ok(self.db.request_cancel(id).await?)
    }

    // ---- the environment cache ----

    /// Every snapshot of this workspace, by environment, newest first.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        Ok(self
            .db
            .all_snapshots()
            .await?
            .into_iter()
            .filter(|s| s.workspace == self.workspace.as_str())
            .collect())
    }

    /// Makes the environment's next task rebuild its snapshot; returns how many
    /// snapshots were reset.
    pub async fn cache_reset(&self, env: &str) -> Result<u64> {
        self.db.env(&self.workspace, env).await?;
        Ok(self.db.reset_snapshots(&self.workspace, env).await?)
    }

    /// What an environment's snapshot key is made of here and now: its image, its
    /// repository's mirror (synced) and the auto-install plan from the default branch.
    async fn keyed(&self, env: &Environment, secrets: &secrets::EnvSecrets) -> Result<Keyed> {
        let image = self.image_for(env).await?;
        let reach = self.check_repo(&env.repo).await?;
        let syncs::Synced { mirror, top } = self
            .syncs
            .sync(&self.mirrors, &env.repo, &env.default_branch, &reach)
            .await?;
        let steps = if env.setup.auto_install {
            autoinstall::plan(&top, &env.setup.install)
        } else {
            Vec::new()
        };
        let components = cache::components(
            &self.workspace,
            env,
            image.manifest.as_str(),
            self.sandboxes.runtime.name(),
            &steps,
            secrets.setup_hashes.clone(),
        );
        Ok(Keyed {
            image,
            mirror,
            steps,
            components,
        })
    }

    /// The image an environment names: from the local store, else pulled; a missing
    /// built-in image (the default one included) is not built here but named with the
    /// command that builds it.
    async fn image_for(&self, env: &Environment) -> Result<ImageRecord> {
        match self.store.image(&env.image) {
            Ok(rec) => Ok(rec),
            Err(hangar_store::StoreError::ImageNotFound(_))
                if hangar_image::BuildOptions::new(&env.image, None, &[]).is_ok() =>
            {
                Err(hangar_image::ImageError::NotBuilt {
                    name: env.image.clone(),
                }
                .into())
            }
            Err(hangar_store::StoreError::ImageNotFound(_)) if env.image.contains('/') => {
                self.check_image(env)?;
                Ok(hangar_image::pull(
                    &self.store,
                    &env.image,
                    None,
                    &hangar_image::RegistryOptions::default(),
                    &|l| tracing::info!("{l}"),
                )
                .await?)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Makes a parsed environment's relative local repository path absolute.
fn normalized(file: &str, mut env: Environment, base_dir: &Path) -> Result<Environment> {
    if is_local_relative(&env.repo) {
        let joined = base_dir.join(&env.repo);
        let abs =
            std::fs::canonicalize(&joined).map_err(|source| EngineError::LocalRepoUnreadable {
                file: file.to_string(),
                repo: env.repo.clone(),
                resolved: joined.clone(),
                source,
            })?;
        env.repo = abs.to_string_lossy().into_owned();
    }
    Ok(env)
}

/// A path that is neither absolute nor a URL (`scheme://`, `user@host:path`).
pub(crate) fn is_local_relative(repo: &str) -> bool {
    let scp_like = repo
        .split_once(':')
        .is_some_and(|(host, _)| !host.contains('/'));
    !repo.starts_with('/') && !repo.contains("://") && !scp_like
}

/// A repository's comparable form: no scheme, no `user@`, `:` as `/`, no `.git`.
fn repo_key(repo: &str) -> String {
    let s = repo.trim().trim_end_matches('/');
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.rsplit_once('@').map_or(s, |(_, rest)| rest);
    s.replace(':', "/")
        .trim_end_matches(".git")
        .trim_end_matches('/')
        .to_string()
}

/// A task's title: the prompt's first non-empty line, at most 80 characters.
fn title_of(prompt: &str) -> String {
    let first = prompt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if first.chars().count() > 80 {
        format!("{}…", first.chars().take(79).collect::<String>())
    } else {
        first.to_string()
    }
}

/// The kernel's id of this boot; a fresh random one (trusting nothing unsynced) when it
/// cannot be read.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("unknown-{}", TaskId::random()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_keys_compare_loosely() {
        for (input, want) in [
            (
                "https://git.example.com/acme/payments.git",
                "git.example.com/acme/payments",
            ),
            ("git@github.com:acme/web.git", "github.com/acme/web"),
            ("/srv/repos/acme/tools/", "/srv/repos/acme/tools"),
            ("acme/web", "acme/web"),
        ] {
            assert_eq!(repo_key(input), want, "{input}");
        }
        assert!(is_local_relative(".."));
        assert!(is_local_relative("repos/x"));
        assert!(!is_local_relative("/abs"));
        assert!(!is_local_relative("git@host:x"));
        assert!(!is_local_relative("https://h/x"));
    }

    #[tokio::test]
    async fn a_tasks_attempts_are_limited_to_what_runs_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let open = |max_running, max_attempts| {
            let store = Store::open(dir.path()).unwrap();
            Engine::open(EngineConfig {
                max_running,
                max_attempts,
                ..EngineConfig::new(store, "/nonexistent/init".into())
            })
        };
        for (max_running, max_attempts, expected) in [
            (2, None, Ok(MAX_ATTEMPTS)),
            (2, Some(2), Ok(2)),
            (0, Some(1), Ok(1)),
            (
                2,
                Some(3),
                Err(
                    "failed to configure the engine: a task's attempts must be 1 to 2 here \
                     (the attempts that run at once), not 3",
                ),
            ),
            (
                2,
                Some(0),
                Err(
                    "failed to configure the engine: a task's attempts must be 1 to 2 here \
                     (the attempts that run at once), not 0",
                ),
            ),
        ] {
            let got = open(max_running, max_attempts)
                .await
                .map(|e| e.scheduler.max_attempts())
                .map_err(|e| e.to_string());
            assert_eq!(
                got,
                expected.map_err(str::to_string),
                "{max_running} {max_attempts:?}"
            );
        }
    }

    #[test]
    fn titles() {
        assert_eq!(title_of("\n  Fix the bug \nmore"), "Fix the bug");
        let long = "x".repeat(100);
        assert_eq!(title_of(&long).chars().count(), 80);
    }
}
