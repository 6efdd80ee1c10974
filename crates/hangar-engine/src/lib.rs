//! hangar's engine: environments in, tasks out. It keeps repository mirrors on the host,
//! runs each attempt through its phases in a sandbox, stores logs, timings and the diff,
//! and applies a finished diff to a user's checkout. It speaks no HTTP.

mod agent;
mod apply;
mod attempt;
pub mod autoinstall;
pub mod best;
pub mod cache;
mod dest;
pub mod diff;
mod error;
mod followup;
mod git;
pub mod images;
pub mod limits;
mod net;
mod phase;
pub mod run;
pub mod runner;
pub mod secrets;
mod slots;
pub mod tokens;
pub mod travel;
mod view;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hangar_sandbox::{HostConfig, RuntimeKind};
use hangar_spec::{Approval, AttemptStatus, Environment, Harness, Phase, TaskId};
use hangar_store::db::{
    Db, EnvRecord, LogLine, NewTask, SnapshotRecord, TaskRecord, DEFAULT_WORKSPACE,
};
use hangar_store::{Digest, ImageRecord, Store};
use tokio::sync::watch;

pub use apply::{apply_patch, ApplyReport};
use dest::Principal;
pub use error::{EngineError, Result};
pub use git::{Mirrors, Pin, Reach};
pub use hangar_net::trust::{host_cas, read_cas};
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

/// What [`Engine::cache_gc`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheGcReport {
    pub snapshots: u32,
    pub bytes: u64,
    /// Directories no record knew (left by a crash mid-build).
    pub orphans: u32,
    /// Attempt layers kept for follow-ups: expired, or standing on a collected snapshot.
    pub kept: u32,
}

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

/// Attempts of one task, at most, unless configured (each is a sandbox, a proxy and an
/// agent CLI).
pub const MAX_ATTEMPTS: u32 = 4;

/// `<dir>/<key>.lock`, locked, unless someone holds it (a build, or a task about to
/// lease the snapshot).
fn try_lock_key(dir: &Path, key: &str) -> Option<std::fs::File> {
    hangar_store::lock::try_lock(&dir.join(format!("{key}.lock")))
        .ok()
        .flatten()
}

/// The environment's `[agent]` with a task's choices over it.
fn effective_agent(
    env: &Environment,
    harness: Option<Harness>,
    approval: Option<Approval>,
    script: Option<&str>,
) -> hangar_spec::Agent {
    let mut agent = env.agent.clone();
    if let Some(h) = harness {
        agent.harness = h;
    }
    if let Some(a) = approval {
        agent.approval = a;
    }
    if let Some(s) = script {
        agent.script = Some(s.to_string());
    }
    agent
}

/// The engine over one data directory.
pub struct Engine {
    /// What every workspace's view of this engine shares (see [`Engine::in_workspace`]).
    shared: Arc<Shared>,
    /// The workspace whose environments, secrets and tasks this view sees.
    workspace: String,
    /// Whom this view acts for, which decides what its destinations may be.
    principal: Principal,
}

/// The engine's state, shared by its workspace views.
#[doc(hidden)]
pub struct Shared {
    store: Store,
    db: Db,
    host: HostConfig,
    mirrors: Mirrors,
    runtime: RuntimeKind,
    clock: Clock,
    /// This boot's id (a snapshot not yet durable serves only the boot that built it).
    boot_id: String,
    /// Background syncs making freshly committed snapshots durable; [`Engine::settle`]
    /// waits for them. The lock is only held to add or take tasks, never across an await.
    syncs: std::sync::Mutex<tokio::task::JoinSet<()>>,
    /// Where the installation's secret key lives (`<data dir>/secret.key` by default).
    secret_key_file: PathBuf,
    keyring: std::sync::OnceLock<Arc<hangar_secrets::Keyring>>,
    net: net::NetSettings,
    /// The internal hosts the local admin opened for tenants (`--open-internal`).
    open_internal: Arc<[hangar_spec::HostRule]>,
    /// Attempts running at once in this process; the others wait here, each
    /// workspace in its turn.
    slots: Arc<slots::Slots>,
    max_running: usize,
    /// Each sandbox's limits where its environment's `[resources]` sets none.
    limits: limits::MachineLimits,
    /// Best-of-N's limit per task.
    max_attempts: u32,
    /// Locks of the tasks this engine submitted and has not finished running.
    task_locks: std::sync::Mutex<std::collections::HashMap<TaskId, std::fs::File>>,
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

/// The default number of attempts running at once: two per core, and no more than one
/// per 2 GiB of memory (an agent CLI with its sandbox and proxy uses up to about that).
pub fn default_slots() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: sysconf only reads system constants.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let gib = (pages.max(0) as u64 * page.max(0) as u64) >> 30;
    (cores * 2).min((gib / 2) as usize).max(1)
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
    /// Opens the engine over a store; `init_binary` is the static hangar-init.
    pub async fn open(store: Store, init_binary: PathBuf) -> Result<Engine> {
        let db = Db::open(&store.root().join("hangar.db")).await?;
        let shared = Shared {
            host: HostConfig::new(store.run_dir(), init_binary),
            mirrors: Mirrors::new(store.root().join("mirrors")),
            db,
            runtime: RuntimeKind::default(),
            clock: Arc::new(hangar_store::db::now_ms),
            boot_id: boot_id(),
            syncs: Default::default(),
            secret_key_file: store.root().join("secret.key"),
            keyring: Default::default(),
            net: Default::default(),
            open_internal: Arc::new([]),
            slots: Arc::new(slots::Slots::new(default_slots())),
            max_running: default_slots(),
            limits: limits::MachineLimits::detect(store.root(), default_slots()),
            max_attempts: MAX_ATTEMPTS,
            task_locks: Default::default(),
            store,
        };
        Ok(Engine {
            shared: Arc::new(shared),
            workspace: DEFAULT_WORKSPACE.to_string(),
            principal: Principal::LocalAdmin,
        })
    }

    /// The same engine (its store, slots, queue and settings) seeing workspace `ws` as the
    /// local admin.
    pub fn in_workspace(&self, ws: &str) -> Engine {
        Engine {
            shared: self.shared.clone(),
            workspace: ws.to_string(),
            principal: Principal::LocalAdmin,
        }
    }

    /// The same engine seeing workspace `ws` for a token's holder: its repositories,
    /// endpoints, allow rules, registries and images are checked (see `dest.rs`).
    pub fn for_tenant(&self, ws: &str) -> Engine {
        Engine {
            principal: Principal::Tenant,
            ..self.in_workspace(ws)
        }
    }

    /// The internal hosts (`host` or `host:port`) a tenant's destinations may be: the
    /// local admin's decision, in the daemon's configuration.
    pub fn set_open_internal(&mut self, hosts: Vec<hangar_spec::HostRule>) {
        self.settings().open_internal = hosts.into();
    }

    /// The settings, which are changed only before the engine is shared.
    fn settings(&mut self) -> &mut Shared {
        Arc::get_mut(&mut self.shared).expect("an engine is configured before it is shared")
    }

    /// How many attempts may run at once in this engine (at least 1); the rest queue.
    pub fn set_max_running(&mut self, n: usize) {
        let s = self.settings();
        s.max_running = n.max(1);
        s.slots = Arc::new(slots::Slots::new(s.max_running));
        s.limits = limits::MachineLimits::detect(s.store.root(), s.max_running);
    }

    /// How many attempts one task may ask for (best-of-N), at most what may run at once:
    /// more would only queue behind each other.
    pub fn set_max_attempts(&mut self, n: u32) -> Result<()> {
        let limit = self.max_running as u32;
        if n == 0 || n > limit {
            return Err(EngineError::BadRequest(format!(
                "a task's attempts must be 1 to {limit} here (the attempts that run at once)"
            )));
        }
        self.settings().max_attempts = n;
        Ok(())
    }

    /// How many attempts may run at once.
    pub fn max_running(&self) -> usize {
        self.max_running
    }

    /// The limits a sandbox gets where its environment's `[resources]` sets none.
    pub fn default_limits(&self) -> limits::MachineLimits {
        self.limits
    }

    /// How many attempts run now.
    pub fn running(&self) -> usize {
        self.slots.running()
    }

    /// Crash recovery, for the one process that runs tasks on this data dir (the
    /// daemon) as it starts: removes what is left of sandboxes whose owner died, and
    /// marks every attempt that was pending or running `error` with the reason. Their
    /// logs so far stay.
    pub async fn recover(&self) -> Result<Recovered> {
        let host = self.host.clone();
        let reaped = tokio::task::spawn_blocking(move || hangar_sandbox::reap(&host))
            .await
            .map_err(|e| EngineError::Io {
                action: "reap the sandboxes in",
                path: self.store.run_dir(),
                source: std::io::Error::other(e.to_string()),
            })??;
        for (id, left) in &reaped.failed {
            tracing::warn!("sandbox {id} of a stopped daemon was not fully removed: {left}");
        }
        let mut tasks = Vec::new();
        for id in self.db.unfinished_tasks().await? {
            let lock_path = self.task_lock_path(&id);
            let Some(_orphan) = hangar_store::lock::try_lock(&lock_path)
                .map_err(error::io_err("lock", &lock_path))?
            else {
                continue; // a live process runs it
            };
            self.fail_unfinished(&id, RECOVERED).await?;
            let _ = std::fs::remove_file(&lock_path);
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
        self.slots.position(self.mine(task).ok()?)
    }

    /// Waits for a slot for one attempt, in this workspace's turn (see `slots`), unless
    /// the task is cancelled meanwhile (then it goes on without one, to be marked
    /// cancelled).
    async fn take_slot(
        &self,
        task: &TaskId,
        index: u32,
        cancel: watch::Receiver<bool>,
    ) -> Option<slots::Slot> {
        self.slots.take(&self.workspace, task, index, cancel).await
    }

    /// Uses another key file for secrets (`HANGAR_SECRET_KEY_FILE`).
    pub fn set_secret_key_file(&mut self, path: PathBuf) {
        let s = self.settings();
        s.secret_key_file = path;
        s.keyring = Default::default();
    }

    /// Resolves the proxies' upstream names with `resolver` instead of the system's.
    pub fn set_resolver(&mut self, resolver: Arc<dyn hangar_net::Resolve>) {
        let s = self.settings();
        s.net.resolver = resolver;
        s.net.config = Default::default();
    }

    /// Trusts these CA certificates (PEM, from [`read_cas`]) in every sandbox and for the
    /// servers whose TLS the proxy opens, instead of the host's locally added CAs
    /// ([`host_cas`], the default): a TLS-inspecting egress's CA, a private registry's.
    pub fn set_trusted_cas(&mut self, pems: Vec<String>) {
        let s = self.settings();
        s.net.trusted = Some(pems);
        s.net.config = Default::default();
    }

    /// Waits until every snapshot this engine committed is on disk (or failed to get
    /// there, which leaves it serving this boot only). A process calls it before it exits.
    pub async fn settle(&self) {
        let mut pending = std::mem::take(&mut *self.syncs.lock().expect("not poisoned"));
        while pending.join_next().await.is_some() {}
    }

    /// Starts making a committed snapshot durable in the background.
    fn make_durable_later(&self, key: &str) {
        let (db, dir, key) = (self.db.clone(), self.snapshot_dir(key), key.to_string());
        self.syncs.lock().expect("not poisoned").spawn(async move {
            let synced =
                tokio::task::spawn_blocking(move || hangar_sandbox::make_durable(&dir)).await;
            match synced {
                Ok(Ok(())) => {
                    if let Err(e) = db.mark_snapshot_durable(&key).await {
                        tracing::warn!("failed to mark snapshot {key} durable: {e}");
                    }
                }
                Ok(Err(e)) => tracing::warn!("snapshot {key} stays unsynced: {e}"),
                Err(e) => tracing::warn!("snapshot {key} stays unsynced: {e}"),
            }
        });
    }

    /// Whether a stored snapshot may serve a task now: not reset, expired or lost, and
    /// on disk.
    fn serves(&self, s: &SnapshotRecord) -> bool {
        !s.reset
            && s.expires_ms > self.now()
            && !cache::lost(s, self.now_at())
            && self.snapshot_dir(&s.key).is_dir()
    }

    /// The key for `components` and whether a snapshot of environment `env` serves it
    /// here and now (a record whose directory is gone is a miss).
    async fn lookup(
        &self,
        env: &str,
        components: &cache::KeyComponents,
    ) -> Result<(String, cache::Lookup)> {
        let snapshots = self.db.snapshots_of(&self.workspace, env).await?;
        let key = components.key();
        let mut found = cache::lookup(&key, components, &snapshots, self.now_at());
        if matches!(found, cache::Lookup::Hit(_)) && !self.snapshot_dir(&key).is_dir() {
            found = cache::Lookup::Miss(format!(
                "snapshot {} is missing on disk",
                cache::short(&key)
            ));
        }
        Ok((key, found))
    }

    /// Takes the lock that makes one builder (or importer) per key; others wait here.
    async fn lock_snapshot(&self, key: &str) -> Result<std::fs::File> {
        self.lock_in(&self.store.root().join("snapshots"), key)
            .await
    }

    /// Takes the lock `<parent>/<key>.lock`, waiting for its holder.
    async fn lock_in(&self, parent: &std::path::Path, key: &str) -> Result<std::fs::File> {
        let parent = parent.to_path_buf();
        let parent_for_error = parent.clone();
        let lock_path = parent.join(format!("{key}.lock"));
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&parent).map_err(error::io_err("create", &parent))?;
            let f =
                std::fs::File::create(&lock_path).map_err(error::io_err("create", &lock_path))?;
            f.lock().map_err(error::io_err("lock", &lock_path))?;
            Ok(f)
        })
        .await
        .map_err(|e| EngineError::Io {
            action: "wait for the lock of",
            path: parent_for_error.join(key),
            source: std::io::Error::other(e.to_string()),
        })?
    }

    fn now_at(&self) -> cache::Now<'_> {
        cache::Now {
            ms: self.now(),
            boot_id: &self.boot_id,
        }
    }

    /// Replaces the clock used for snapshot ages and expiry.
    pub fn set_clock(&mut self, clock: Clock) {
        self.settings().clock = clock;
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Where the snapshot with this key lives: beside the sandboxes' directories, on
    /// the same filesystem, so that an upper directory becomes one by a rename.
    fn snapshot_dir(&self, key: &str) -> PathBuf {
        self.store.root().join("snapshots").join(key)
    }

    /// An image's layers, unpacked (each once) on a blocking thread, bottom first.
    async fn image_layers(&self, rec: &ImageRecord) -> Result<Vec<(Digest, PathBuf)>> {
        let (store, rec) = (self.store.clone(), rec.clone());
        tokio::task::spawn_blocking(move || hangar_image::layers(&store, &rec))
            .await
            .map_err(|e| EngineError::Io {
                action: "unpack the layers under",
                path: self.store.root().join("layers"),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(EngineError::from)
    }

    pub fn workspace(&self) -> &str {
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
            workspace: self.workspace.clone(),
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
            return Err(EngineError::BadRequest(format!(
                "{file} describes environment `{}`, not `{name}`",
                env.name
            )));
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
        let text = String::from_utf8(text)
            .map_err(|_| EngineError::BadRequest(format!("{file} is not UTF-8 text")))?;
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
        ];
        let changed: Vec<&str> = guarded
            .iter()
            .filter(|(_, c)| *c)
            .map(|(k, _)| *k)
            .collect();
        if !changed.is_empty() {
            return Err(EngineError::BadRequest(format!(
                "{file} changes {}, which an environment follows from its repository only \
                 through `hangar env update {}`",
                changed.join(", "),
                env.name
            )));
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

    /// Records a task (pending) after checking that it can run.
    pub async fn submit(&self, req: &TaskRequest) -> Result<TaskRecord> {
        let from = match &req.from {
            Some(spec) => {
                let (source, index) = self.follow_up_source(spec).await?;
                if !req.environment.is_empty() && req.environment != source.environment {
                    return Err(EngineError::BadRequest(format!(
                        "a follow-up of task {} runs in its environment `{}`, not `{}`",
                        source.id, source.environment, req.environment
                    )));
                }
                if req.branch.is_some() || req.commit.is_some() {
                    return Err(EngineError::BadRequest(
                        "a follow-up continues on its source's checkout: no --branch or --commit"
                            .into(),
                    ));
                }
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
        if req.prompt.trim().is_empty() {
            return Err(EngineError::BadRequest("the prompt is empty".into()));
        }
        if req.branch.is_some() && req.commit.is_some() {
            return Err(EngineError::BadRequest(
                "give a branch or a commit, not both".into(),
            ));
        }
        if let Some(b) = &req.branch {
            hangar_spec::check_branch(b).map_err(EngineError::BadRequest)?;
        }
        if let Some(c) = &req.commit {
            if !(4..=64).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(EngineError::BadRequest(format!(
                    "`{c}` is not a commit id (4 to 64 hex digits)"
                )));
            }
        }
        let attempts = req.attempts.max(1);
        if attempts > self.max_attempts {
            return Err(EngineError::BadRequest(format!(
                "{attempts} attempts asked for; a task runs at most {}",
                self.max_attempts
            )));
        }
        let missing = self.unset_secrets(&env).await?;
        if !missing.is_empty() {
            return Err(secrets::missing_secrets(&env, &missing));
        }
        let agent = effective_agent(&env, req.harness, req.approval, req.script.as_deref());
        if agent.harness == Harness::Script && agent.script.is_none() {
            return Err(EngineError::BadRequest(format!(
                "environment `{}` has no [agent] script; give one with --script FILE, or \
                 choose an agent CLI with --harness",
                env.name
            )));
        }
        if agent.harness != Harness::Script {
            if agent.endpoint.is_none() {
                return Err(EngineError::BadRequest(format!(
                    "the `{}` harness needs the model's endpoint: set [agent] endpoint in \
                     environment `{}`",
                    agent.harness, env.name
                )));
            }
            if let Some((rule, true)) = agent.endpoint_rule() {
                if rule.loopback_ip().is_some() {
                    return Err(EngineError::BadRequest(format!(
                        "[agent] endpoint of environment `{}` is https on the host's loopback; \
                         use http there (the sandbox reaches it through hangar)",
                        env.name
                    )));
                }
            }
        }
        let task = NewTask {
            id: TaskId::random(),
            workspace: self.workspace.clone(),
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
        let lock_path = self.task_lock_path(&task.id);
        let lock = hangar_store::lock::try_lock(&lock_path)
            .map_err(error::io_err("lock", &lock_path))?
            .ok_or_else(|| EngineError::BadRequest(format!("task {} is taken", task.id)))?;
        let stored = self.db.create_task(&task).await?;
        self.task_locks
            .lock()
            .expect("not poisoned")
            .insert(task.id, lock);
        Ok(stored)
    }

    fn task_lock_path(&self, id: &TaskId) -> PathBuf {
        self.store
            .root()
            .join("locks")
            .join(format!("task-{id}.lock"))
    }

    /// Lets go of a task this engine submitted, once it has run.
    fn release_task(&self, id: &TaskId) {
        if let Some(lock) = self.task_locks.lock().expect("not poisoned").remove(id) {
            let _ = std::fs::remove_file(self.task_lock_path(id));
            drop(lock);
        }
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
        env.agent = effective_agent(
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
            self.release_task(id);
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
            return Err(EngineError::BadRequest(format!(
                "task {id} has already finished ({})",
                task.status
            )));
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
            .filter(|s| s.workspace == self.workspace)
            .collect())
    }

    /// Makes the environment's next task rebuild its snapshot; returns how many
    /// snapshots were reset.
    pub async fn cache_reset(&self, env: &str) -> Result<u64> {
        self.db.env(&self.workspace, env).await?;
        Ok(self.db.reset_snapshots(&self.workspace, env).await?)
    }

    /// Removes reset and expired snapshots, then least recently used ones past `budget`
    /// bytes, and whatever a crash left (a directory without a record, a record without
    /// its directory). Snapshots in use by a running sandbox stay; the kept attempt
    /// layers standing on a collected snapshot go with it.
    pub async fn cache_gc(&self, budget: Option<u64>) -> Result<CacheGcReport> {
        let all = self.db.all_snapshots().await?;
        let in_use = self.store.leased_by_sandboxes("snapshot");
        let leased = self.store.leased("snapshot");
        let mut report = CacheGcReport::default();
        let root = self.store.root().join("snapshots");
        for s in cache::to_collect(&all, &in_use, self.now_at(), budget) {
            // Its lock is held from a build until its record exists, and from a task's
            // lookup until the sandbox using it holds its lease: take it, then look at
            // the leases again, so a task that leased it meanwhile keeps it.
            let Some(_lock) = try_lock_key(&root, &s.key) else {
                continue;
            };
            if self.store.leased_by_sandboxes("snapshot").contains(&s.key) {
                continue;
            }
            report.kept += self.drop_kept_on(&s.key);
            let dir = self.snapshot_dir(&s.key);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(error::io_err("remove", &dir))?;
            }
            self.db.delete_snapshot(&s.key).await?;
            report.snapshots += 1;
            report.bytes += s.size.max(0) as u64;
        }
        for s in &all {
            if !self.snapshot_dir(&s.key).is_dir() && !leased.contains(&s.key) {
                self.db.delete_snapshot(&s.key).await?;
            }
        }
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let known = all.iter().any(|s| s.key == name) || name.ends_with(".lock");
            if known || leased.contains(&name) || !entry.path().is_dir() {
                continue;
            }
            // A build holds its key's lock from before its directory appears until its
            // record is written.
            let Some(_lock) = try_lock_key(&root, &name) else {
                continue;
            };
            std::fs::remove_dir_all(entry.path()).map_err(error::io_err("remove", entry.path()))?;
            report.orphans += 1;
        }
        report.kept += self.collect_kept();
        Ok(report)
    }

    /// What an environment's snapshot key is made of here and now: its image, its
    /// repository's mirror (synced) and the auto-install plan from the default branch.
    async fn keyed(&self, env: &Environment, secrets: &secrets::EnvSecrets) -> Result<Keyed> {
        let image = self.image_for(env).await?;
        let (mirrors, repo, branch) = (
            self.mirrors.clone(),
            env.repo.clone(),
            env.default_branch.clone(),
        );
        let reach = self.check_repo(&env.repo).await?;
        let (mirror, top) = tokio::task::spawn_blocking(move || {
            let mirror = mirrors.sync(&repo, &reach)?;
            let top = mirrors.top_files(&repo, &branch)?;
            Ok::<_, EngineError>((mirror, top))
        })
        .await
        .map_err(|e| EngineError::Git {
            what: "mirror".into(),
            message: e.to_string(),
        })??;
        let steps = if env.setup.auto_install {
            autoinstall::plan(&top, &env.setup.install)
        } else {
            Vec::new()
        };
        let components = cache::components(
            &self.workspace,
            env,
            image.manifest.as_str(),
            self.runtime.name(),
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
        let abs = std::fs::canonicalize(&joined).map_err(|e| {
            EngineError::BadRequest(format!(
                "{file}: repo `{}` (resolved to {}) cannot be read: {e}",
                env.repo,
                joined.display()
            ))
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

    #[test]
    fn titles() {
        assert_eq!(title_of("\n  Fix the bug \nmore"), "Fix the bug");
        let long = "x".repeat(100);
        assert_eq!(title_of(&long).chars().count(), 80);
    }
}
