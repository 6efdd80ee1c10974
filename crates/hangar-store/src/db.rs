//! hangar's metadata in SQLite (sqlx, embedded migrations): environments, tasks,
//! attempts and their logs. Times are epoch milliseconds. Many CLI processes may open the
//! same file: WAL mode and a busy timeout let them take turns.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hangar_spec::{Approval, AttemptStatus, Harness, Phase, TaskId, TaskStatus};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

/// Failures of the metadata database. Messages read after "failed to ...".
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("failed to open the database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to migrate the database {}: {source}", path.display())]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("failed to {action}: {source}")]
    Query {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to create environment `{0}`: it already exists (use `hangar env update`)")]
    EnvExists(String),
    #[error("failed to find environment `{0}` (see `hangar env list`)")]
    EnvNotFound(String),
    #[error(
        "failed to find secret `{name}` of environment `{env}` (see `hangar secret ls {env}`)"
    )]
    SecretNotFound { env: String, name: String },
    #[error("failed to find task `{0}` (see `hangar list`)")]
    TaskNotFound(String),
    #[error("failed to find token `{0}` (see `hangar token ls`)")]
    TokenNotFound(String),
    #[error("failed to find task `{prefix}`: the prefix matches {}", matches.join(", "))]
    AmbiguousTask {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("failed to find attempt {attempt} of task {task}")]
    AttemptNotFound { task: String, attempt: u32 },
    #[error("failed to read stored {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("failed to read list cursor `{0}`")]
    BadCursor(String),
}

pub type DbResult<T> = std::result::Result<T, DbError>;

fn query(action: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError::Query { action, source }
}

fn corrupt(what: &'static str) -> impl FnOnce(String) -> DbError {
    move |reason| DbError::Corrupt { what, reason }
}

/// The workspace every object belongs to until tokens choose another.
pub const DEFAULT_WORKSPACE: &str = "default";

/// A stored environment (its file, validated when it was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRecord {
    pub workspace: String,
    pub name: String,
    pub version: i64,
    pub source: String,
    pub repo: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What starting a task records.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: TaskId,
    pub workspace: String,
    pub environment: String,
    pub environment_version: i64,
    pub spec: String,
    pub title: String,
    pub prompt: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub agent_script: Option<String>,
    /// Over the environment's `[agent] harness` and `approval`.
    pub harness: Option<Harness>,
    pub approval: Option<Approval>,
    pub attempts: u32,
    /// A follow-up's source: the task and attempt whose kept layer it starts from.
    pub from: Option<(TaskId, u32)>,
}

#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub id: TaskId,
    pub workspace: String,
    pub environment: String,
    pub environment_version: i64,
    pub spec: String,
    pub title: String,
    pub prompt: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub agent_script: Option<String>,
    pub harness: Option<Harness>,
    pub approval: Option<Approval>,
    /// A follow-up's source: the task and attempt whose kept layer it starts from.
    pub from: Option<(TaskId, u32)>,
    pub status: TaskStatus,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub attempt_total: u32,
    /// The diff summary of the task's leading attempt (the first ready one, else the first).
    pub summary: Option<DiffSummary>,
}

/// One event of an agent's run, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub attempt: u32,
    pub seq: i64,
    pub ts_ms: i64,
    /// message, command, file, error or final.
    pub kind: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiffSummary {
    pub files_changed: u32,
    pub lines_added: u32,
    pub lines_removed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub phase: Phase,
    pub started_ms: i64,
    pub ended_ms: i64,
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub index: u32,
    pub status: AttemptStatus,
    pub sandbox: Option<String>,
    /// How the environment was found (JSON {status, reason, snapshot}).
    pub cache: Option<String>,
    pub base_commit: Option<String>,
    pub result_tree: Option<String>,
    pub final_message: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub phases: Vec<PhaseTiming>,
    pub summary: Option<DiffSummary>,
    /// `[agent] check`'s result, when the environment has one and the agent succeeded.
    pub check: Option<CheckResult>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

/// How `[agent] check` ended in an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub passed: bool,
    /// `None` when it was stopped (timeout).
    pub exit_code: Option<i32>,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub status: AttemptStatus,
    pub final_message: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub summary: Option<DiffSummary>,
    pub diff: Option<Vec<u8>>,
    pub result_tree: Option<String>,
}

/// Which stream a log line came from; `hangar` lines are hangar's own notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    Hangar,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Hangar => "hangar",
        }
    }

    fn parse(s: &str) -> Option<Stream> {
        [Stream::Stdout, Stream::Stderr, Stream::Hangar]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub attempt: u32,
    pub seq: i64,
    pub ts_ms: i64,
    pub phase: Phase,
    pub stream: Stream,
    pub line: String,
}

/// One decision of an attempt's egress proxy, as stored (redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEntry {
    pub attempt: u32,
    pub seq: i64,
    pub ts_ms: i64,
    pub phase: String,
    pub method: Option<String>,
    /// A request's path (without its query); absent for a connection.
    pub path: Option<String>,
    pub host: String,
    pub port: u16,
    /// `allowed`, `failed`, or the reason it was blocked.
    pub decision: String,
    pub rule: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub note: Option<String>,
}

/// A text field of an attempt that is set on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptField {
    /// The id of the sandbox running it (for recovery after a crash).
    Sandbox,
    /// How its environment was found (JSON {status, reason, snapshot}).
    Cache,
    BaseCommit,
    /// `[agent] check`'s result (JSON [`CheckResult`]).
    Check,
}

impl AttemptField {
    fn column(self) -> &'static str {
        match self {
            AttemptField::Sandbox => "sandbox",
            AttemptField::Cache => "cache",
            AttemptField::BaseCommit => "base_commit",
            AttemptField::Check => "check_result",
        }
    }
}

/// A stored secret: its value only as ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub name: String,
    pub ciphertext: Vec<u8>,
    pub updated_ms: i64,
}

/// A stored environment snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub key: String,
    pub workspace: String,
    pub environment: String,
    /// JSON of the key's components (compared to explain a miss).
    pub components: String,
    pub size: i64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub last_used_ms: i64,
    pub hits: i64,
    pub reset: bool,
    /// The boot (`/proc/sys/kernel/random/boot_id`) the snapshot was committed in.
    pub boot_id: String,
    /// Whether its data is known to be on disk; until then it only serves `boot_id`.
    pub durable: bool,
    /// The registry reference it was imported from; `None` when built here.
    pub source: Option<String>,
}

/// Which tasks to list, newest first.
#[derive(Debug, Clone)]
pub struct TaskQuery {
    pub workspace: String,
    pub environment: Option<String>,
    pub limit: u32,
    /// From a previous page's [`TaskPage::cursor`].
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TaskPage {
    pub tasks: Vec<TaskRecord>,
    /// Present when more tasks follow.
    pub cursor: Option<String>,
}

/// A stored API token (its hash, never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub workspace: String,
    pub created_ms: i64,
}

/// The metadata database.
#[derive(Clone)]
pub struct Db {
    pool: SqlitePool,
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open(path: &Path) -> DbResult<Db> {
        // Creating the file, switching it to WAL and migrating it are not safe against
        // another process doing the same at the same moment (two CLI commands on a new
        // data dir): take turns.
        let lock_path = path.with_extension("migrate.lock");
        let db_path = path.to_path_buf();
        let lock = tokio::task::spawn_blocking(move || {
            let f = crate::private::create_file(&lock_path)?;
            f.lock()?;
            // The database holds every workspace's environments and logs: its owner's
            // alone, from its first byte, with the WAL and shared memory SQLite makes
            // beside it in the same mode; an older install's are tightened.
            crate::private::create_file(&db_path)?;
            for suffix in ["-wal", "-shm"] {
                let mut beside = db_path.clone().into_os_string();
                beside.push(suffix);
                crate::private::tighten(Path::new(&beside))?;
            }
            Ok::<_, std::io::Error>(f)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| DbError::Open {
            path: path.to_path_buf(),
            source: sqlx::Error::Io(e),
        })?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = match SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
        {
            Ok(pool) => pool,
            Err(source) => {
                return Err(DbError::Open {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let migrated = sqlx::migrate!("./migrations").run(&pool).await;
        drop(lock);
        migrated.map_err(|source| DbError::Migrate {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Db { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- environments ----

    pub async fn create_env(&self, rec: &EnvRecord) -> DbResult<()> {
        let res = sqlx::query(
            "INSERT INTO environments (workspace, name, version, source, repo, created_ms, updated_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&rec.workspace)
        .bind(&rec.name)
        .bind(rec.version)
        .bind(&rec.source)
        .bind(&rec.repo)
        .bind(rec.created_ms)
        .bind(rec.updated_ms)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(DbError::EnvExists(rec.name.clone()))
            }
            Err(e) => Err(query("store the environment")(e)),
        }
    }

    /// Replaces an environment's file; its version goes up by one.
    pub async fn update_env(
        &self,
        workspace: &str,
        name: &str,
        source: &str,
        repo: &str,
    ) -> DbResult<EnvRecord> {
        let n = sqlx::query(
            "UPDATE environments SET source = ?, repo = ?, version = version + 1, updated_ms = ?
             WHERE workspace = ? AND name = ?",
        )
        .bind(source)
        .bind(repo)
        .bind(now_ms())
        .bind(workspace)
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(query("update the environment"))?
        .rows_affected();
        if n == 0 {
            return Err(DbError::EnvNotFound(name.to_string()));
        }
        self.env(workspace, name).await
    }

    pub async fn env(&self, workspace: &str, name: &str) -> DbResult<EnvRecord> {
        sqlx::query("SELECT * FROM environments WHERE workspace = ? AND name = ?")
            .bind(workspace)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("read the environment"))?
            .map(|r| env_row(&r))
            .ok_or_else(|| DbError::EnvNotFound(name.to_string()))
    }

    pub async fn envs(&self, workspace: &str) -> DbResult<Vec<EnvRecord>> {
        let rows = sqlx::query("SELECT * FROM environments WHERE workspace = ? ORDER BY name")
            .bind(workspace)
            .fetch_all(&self.pool)
            .await
            .map_err(query("list environments"))?;
        Ok(rows.iter().map(env_row).collect())
    }

    /// Deletes an environment and its secrets.
    pub async fn delete_env(&self, workspace: &str, name: &str) -> DbResult<()> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM environments WHERE workspace = ? AND name = ?")
            .bind(workspace)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(query("delete the environment"))?
            .rows_affected();
        if n == 0 {
            return Err(DbError::EnvNotFound(name.to_string()));
        }
        sqlx::query("DELETE FROM secrets WHERE workspace = ? AND environment = ?")
            .bind(workspace)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(query("delete the environment's secrets"))?;
        tx.commit().await.map_err(query("delete the environment"))?;
        Ok(())
    }

    // ---- secrets (ciphertext only) ----

    /// Sets a secret's encrypted value, replacing an earlier one.
    pub async fn put_secret(
        &self,
        workspace: &str,
        env: &str,
        name: &str,
        ciphertext: &[u8],
    ) -> DbResult<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO secrets (workspace, environment, name, ciphertext, created_ms, updated_ms)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (workspace, environment, name)
             DO UPDATE SET ciphertext = excluded.ciphertext, updated_ms = excluded.updated_ms",
        )
        .bind(workspace)
        .bind(env)
        .bind(name)
        .bind(ciphertext)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query("store the secret"))?;
        Ok(())
    }

    /// An environment's secrets, by name.
    pub async fn secrets(&self, workspace: &str, env: &str) -> DbResult<Vec<SecretRow>> {
        let rows = sqlx::query(
            "SELECT name, ciphertext, updated_ms FROM secrets
             WHERE workspace = ? AND environment = ? ORDER BY name",
        )
        .bind(workspace)
        .bind(env)
        .fetch_all(&self.pool)
        .await
        .map_err(query("read the environment's secrets"))?;
        Ok(rows
            .iter()
            .map(|r| SecretRow {
                name: r.get("name"),
                ciphertext: r.get("ciphertext"),
                updated_ms: r.get("updated_ms"),
            })
            .collect())
    }

    pub async fn delete_secret(&self, workspace: &str, env: &str, name: &str) -> DbResult<()> {
        let n =
            sqlx::query("DELETE FROM secrets WHERE workspace = ? AND environment = ? AND name = ?")
                .bind(workspace)
                .bind(env)
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(query("delete the secret"))?
                .rows_affected();
        if n == 0 {
            return Err(DbError::SecretNotFound {
                env: env.to_string(),
                name: name.to_string(),
            });
        }
        Ok(())
    }

    // ---- tasks and attempts ----

    /// Records a new task with its attempts, all pending.
    pub async fn create_task(&self, t: &NewTask) -> DbResult<TaskRecord> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO tasks (id, workspace, environment, environment_version, spec, title, prompt,
                                branch, git_commit, agent_script, harness, approval, status,
                                created_ms, updated_ms, from_task, from_attempt)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.as_str())
        .bind(&t.workspace)
        .bind(&t.environment)
        .bind(t.environment_version)
        .bind(&t.spec)
        .bind(&t.title)
        .bind(&t.prompt)
        .bind(&t.branch)
        .bind(&t.commit)
        .bind(&t.agent_script)
        .bind(t.harness.map(|h| h.as_str()))
        .bind(t.approval.map(|a| a.as_str()))
        .bind(TaskStatus::Pending.as_str())
        .bind(now)
        .bind(now)
        .bind(t.from.as_ref().map(|(id, _)| id.as_str()))
        .bind(t.from.as_ref().map(|(_, idx)| *idx))
        .execute(&mut *tx)
        .await
        .map_err(query("store the task"))?;
        for idx in 1..=t.attempts {
            sqlx::query(
                "INSERT INTO attempts (task_id, idx, status, created_ms) VALUES (?, ?, ?, ?)",
            )
            .bind(t.id.as_str())
            .bind(idx)
            .bind(AttemptStatus::Pending.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query("store the task's attempts"))?;
        }
        tx.commit().await.map_err(query("commit the task"))?;
        self.task(&t.workspace, &t.id).await
    }

    /// Finds a task by its id or a unique prefix of it.
    pub async fn resolve_task(&self, workspace: &str, id_or_prefix: &str) -> DbResult<TaskId> {
        if !TaskId::is_prefix(id_or_prefix) {
            return Err(DbError::TaskNotFound(id_or_prefix.to_string()));
        }
        let pattern = format!("{}%", id_or_prefix.to_ascii_lowercase());
        let rows = sqlx::query("SELECT id FROM tasks WHERE workspace = ? AND id LIKE ? LIMIT 6")
            .bind(workspace)
            .bind(&pattern)
            .fetch_all(&self.pool)
            .await
            .map_err(query("look up the task"))?;
        let ids: Vec<String> = rows.iter().map(|r| r.get("id")).collect();
        match ids.as_slice() {
            [] => Err(DbError::TaskNotFound(id_or_prefix.to_string())),
            [one] => TaskId::from_str(one).map_err(|e| corrupt("task id")(e.to_string())),
            _ => Err(DbError::AmbiguousTask {
                prefix: id_or_prefix.to_string(),
                matches: ids,
            }),
        }
    }

    pub async fn task(&self, workspace: &str, id: &TaskId) -> DbResult<TaskRecord> {
        let row = sqlx::query(&format!("{TASK_SELECT} WHERE t.workspace = ? AND t.id = ?"))
            .bind(workspace)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(query("read the task"))?
            .ok_or_else(|| DbError::TaskNotFound(id.to_string()))?;
        task_row(&row)
    }

    pub async fn tasks(&self, q: &TaskQuery) -> DbResult<TaskPage> {
        let (before_ms, before_id) = match &q.cursor {
            None => (i64::MAX, String::new()),
            Some(c) => c
                .split_once(':')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| DbError::BadCursor(c.clone()))?,
        };
        let limit = q.limit.max(1);
        let rows = sqlx::query(&format!(
            "{TASK_SELECT} WHERE t.workspace = ? AND (? IS NULL OR t.environment = ?)
               AND (t.created_ms < ? OR (t.created_ms = ? AND (? = '' OR t.id < ?)))
             ORDER BY t.created_ms DESC, t.id DESC LIMIT ?"
        ))
        .bind(&q.workspace)
        .bind(&q.environment)
        .bind(&q.environment)
        .bind(before_ms)
        .bind(before_ms)
        .bind(&before_id)
        .bind(&before_id)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(query("list tasks"))?;
        let mut tasks = rows.iter().map(task_row).collect::<DbResult<Vec<_>>>()?;
        let cursor = if tasks.len() > limit as usize {
            tasks.truncate(limit as usize);
            tasks.last().map(|t| format!("{}:{}", t.created_ms, t.id))
        } else {
            None
        };
        Ok(TaskPage { tasks, cursor })
    }

    pub async fn create_token(&self, t: &TokenRecord, hash: &str) -> DbResult<()> {
        sqlx::query("INSERT INTO tokens (id, workspace, hash, created_ms) VALUES (?, ?, ?, ?)")
            .bind(&t.id)
            .bind(&t.workspace)
            .bind(hash)
            .bind(t.created_ms)
            .execute(&self.pool)
            .await
            .map_err(query("store the token"))?;
        Ok(())
    }

    /// The workspace a token's hash grants, if the token exists.
    pub async fn token_workspace(&self, hash: &str) -> DbResult<Option<String>> {
        sqlx::query_scalar("SELECT workspace FROM tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("look up the token"))
    }

    pub async fn tokens(&self) -> DbResult<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT id, workspace, created_ms FROM tokens ORDER BY created_ms")
            .fetch_all(&self.pool)
            .await
            .map_err(query("list the tokens"))?;
        Ok(rows
            .iter()
            .map(|r| TokenRecord {
                id: r.get("id"),
                workspace: r.get("workspace"),
                created_ms: r.get("created_ms"),
            })
            .collect())
    }

    pub async fn delete_token(&self, id: &str) -> DbResult<()> {
        let n = sqlx::query("DELETE FROM tokens WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(query("remove the token"))?
            .rows_affected();
        if n == 0 {
            return Err(DbError::TokenNotFound(id.to_string()));
        }
        Ok(())
    }

    /// Tasks of any workspace still pending or running, oldest first.
    pub async fn unfinished_tasks(&self) -> DbResult<Vec<TaskId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE status IN ('pending', 'running') ORDER BY created_ms",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query("read the unfinished tasks"))?;
        ids.iter()
            .map(|id| {
                id.parse()
                    .map_err(|e: hangar_spec::IdError| corrupt("task id")(e.to_string()))
            })
            .collect()
    }

    pub async fn attempts(&self, task: &TaskId) -> DbResult<Vec<AttemptRecord>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE task_id = ? ORDER BY idx")
            .bind(task.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(query("read the task's attempts"))?;
        rows.iter().map(attempt_row).collect()
    }

    pub async fn start_attempt(&self, task: &TaskId, idx: u32) -> DbResult<()> {
        let q = sqlx::query(
            "UPDATE attempts SET status = 'running', started_ms = ? WHERE task_id = ? AND idx = ?",
        )
        .bind(now_ms());
        self.set_attempt(task, idx, q).await
    }

    /// Sets one text field of an attempt (no status change).
    pub async fn set_attempt_field(
        &self,
        task: &TaskId,
        idx: u32,
        field: AttemptField,
        value: &str,
    ) -> DbResult<()> {
        let sql = format!(
            "UPDATE attempts SET {} = ? WHERE task_id = ? AND idx = ?",
            field.column()
        );
        update_attempt(&self.pool, task, idx, sqlx::query(&sql).bind(value)).await
    }

    /// Appends one phase's timing.
    pub async fn add_phase(&self, task: &TaskId, idx: u32, timing: PhaseTiming) -> DbResult<()> {
        let entry = serde_json::to_string(&timing).expect("a timing serializes");
        let q = sqlx::query(
            "UPDATE attempts SET phases = json_insert(phases, '$[#]', json(?))
             WHERE task_id = ? AND idx = ?",
        )
        .bind(entry);
        update_attempt(&self.pool, task, idx, q).await
    }

    pub async fn finish_attempt(
        &self,
        task: &TaskId,
        idx: u32,
        o: &AttemptOutcome,
    ) -> DbResult<()> {
        let s = o.summary;
        let q = sqlx::query(
            "UPDATE attempts SET status = ?, final_message = ?, exit_code = ?, error = ?,
                 files_changed = ?, lines_added = ?, lines_removed = ?, diff = ?, result_tree = ?,
                 finished_ms = ?
             WHERE task_id = ? AND idx = ?",
        )
        .bind(o.status.as_str())
        .bind(o.final_message.as_deref())
        .bind(o.exit_code)
        .bind(o.error.as_deref())
        .bind(s.map(|s| s.files_changed))
        .bind(s.map(|s| s.lines_added))
        .bind(s.map(|s| s.lines_removed))
        .bind(o.diff.as_deref())
        .bind(o.result_tree.as_deref())
        .bind(now_ms());
        self.set_attempt(task, idx, q).await
    }

    /// Changes an attempt's status (with `q`, whose last placeholders are the task id
    /// and index), then recomputes the task's status from its attempts', in one
    /// transaction.
    async fn set_attempt(&self, task: &TaskId, idx: u32, q: AttemptQuery<'_>) -> DbResult<()> {
        let mut tx = self.begin().await?;
        update_attempt(&mut *tx, task, idx, q).await?;
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status FROM attempts WHERE task_id = ?")
                .bind(task.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(query("read attempt statuses"))?;
        let statuses = statuses
            .iter()
            .map(|s| s.parse::<AttemptStatus>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt("attempt status"))?;
        sqlx::query("UPDATE tasks SET status = ?, updated_ms = ? WHERE id = ?")
            .bind(TaskStatus::from_attempts(&statuses).as_str())
            .bind(now_ms())
            .bind(task.as_str())
            .execute(&mut *tx)
            .await
            .map_err(query("update the task's status"))?;
        tx.commit()
            .await
            .map_err(query("commit the attempt update"))
    }

    pub async fn diff(&self, task: &TaskId, idx: u32) -> DbResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT diff FROM attempts WHERE task_id = ? AND idx = ?")
            .bind(task.as_str())
            .bind(idx)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("read the diff"))?
            .ok_or_else(|| DbError::AttemptNotFound {
                task: task.to_string(),
                attempt: idx,
            })?;
        Ok(row.get("diff"))
    }

    // ---- snapshots ----

    pub async fn put_snapshot(&self, s: &SnapshotRecord) -> DbResult<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO snapshots (key, workspace, environment, components, size,
                 created_ms, expires_ms, last_used_ms, hits, reset, boot_id, durable, source)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.key)
        .bind(&s.workspace)
        .bind(&s.environment)
        .bind(&s.components)
        .bind(s.size)
        .bind(s.created_ms)
        .bind(s.expires_ms)
        .bind(s.last_used_ms)
        .bind(s.hits)
        .bind(s.reset)
        .bind(&s.boot_id)
        .bind(s.durable)
        .bind(&s.source)
        .execute(&self.pool)
        .await
        .map_err(query("store the snapshot"))?;
        Ok(())
    }

    pub async fn snapshot(&self, key: &str) -> DbResult<Option<SnapshotRecord>> {
        let row = sqlx::query("SELECT * FROM snapshots WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("read the snapshot"))?;
        Ok(row.as_ref().map(snapshot_row))
    }

    /// An environment's snapshots, newest first.
    pub async fn snapshots_of(&self, workspace: &str, env: &str) -> DbResult<Vec<SnapshotRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM snapshots WHERE workspace = ? AND environment = ?
             ORDER BY created_ms DESC",
        )
        .bind(workspace)
        .bind(env)
        .fetch_all(&self.pool)
        .await
        .map_err(query("list the environment's snapshots"))?;
        Ok(rows.iter().map(snapshot_row).collect())
    }

    /// Every snapshot, of every workspace (gc works on the whole data dir).
    pub async fn all_snapshots(&self) -> DbResult<Vec<SnapshotRecord>> {
        let rows =
            sqlx::query("SELECT * FROM snapshots ORDER BY workspace, environment, created_ms DESC")
                .fetch_all(&self.pool)
                .await
                .map_err(query("list snapshots"))?;
        Ok(rows.iter().map(snapshot_row).collect())
    }

    /// Counts a hit.
    pub async fn touch_snapshot(&self, key: &str, now_ms: i64) -> DbResult<()> {
        sqlx::query("UPDATE snapshots SET hits = hits + 1, last_used_ms = ? WHERE key = ?")
            .bind(now_ms)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(query("count a snapshot hit"))?;
        Ok(())
    }

    /// Records that a snapshot's data reached the disk.
    pub async fn mark_snapshot_durable(&self, key: &str) -> DbResult<()> {
        sqlx::query("UPDATE snapshots SET durable = 1 WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(query("mark the snapshot durable"))?;
        Ok(())
    }

    /// Marks an environment's snapshots as reset; returns how many.
    pub async fn reset_snapshots(&self, workspace: &str, env: &str) -> DbResult<u64> {
        Ok(
            sqlx::query("UPDATE snapshots SET reset = 1 WHERE workspace = ? AND environment = ?")
                .bind(workspace)
                .bind(env)
                .execute(&self.pool)
                .await
                .map_err(query("reset the environment's snapshots"))?
                .rows_affected(),
        )
    }

    pub async fn delete_snapshot(&self, key: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM snapshots WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(query("delete the snapshot"))?;
        Ok(())
    }

    // ---- logs ----

    /// Appends log lines; `seq` numbers them within the attempt.
    pub async fn append_logs(&self, task: &TaskId, lines: &[LogLine]) -> DbResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for l in lines {
            sqlx::query(
                "INSERT INTO logs (task_id, attempt, seq, ts_ms, phase, stream, line)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(task.as_str())
            .bind(l.attempt)
            .bind(l.seq)
            .bind(l.ts_ms)
            .bind(l.phase.as_str())
            .bind(l.stream.as_str())
            .bind(&l.line)
            .execute(&mut *tx)
            .await
            .map_err(query("store log lines"))?;
        }
        tx.commit().await.map_err(query("commit log lines"))
    }

    pub async fn append_network(&self, task: &TaskId, entries: &[NetworkEntry]) -> DbResult<()> {
        let mut tx = self.begin().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO network_log (task_id, attempt, seq, ts_ms, phase, method, path, host,
                 port, decision, rule, bytes_up, bytes_down, note)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(task.as_str())
            .bind(e.attempt)
            .bind(e.seq)
            .bind(e.ts_ms)
            .bind(&e.phase)
            .bind(&e.method)
            .bind(&e.path)
            .bind(&e.host)
            .bind(e.port)
            .bind(&e.decision)
            .bind(&e.rule)
            .bind(e.bytes_up as i64)
            .bind(e.bytes_down as i64)
            .bind(&e.note)
            .execute(&mut *tx)
            .await
            .map_err(query("store network log entries"))?;
        }
        tx.commit()
            .await
            .map_err(query("commit network log entries"))
    }

    /// Asks the process running `task` to cancel it.
    pub async fn request_cancel(&self, task: &TaskId) -> DbResult<()> {
        sqlx::query("UPDATE tasks SET cancel_requested = 1 WHERE id = ?")
            .bind(task.as_str())
            .execute(&self.pool)
            .await
            .map_err(query("request the task's cancellation"))?;
        Ok(())
    }

    pub async fn cancel_requested(&self, task: &TaskId) -> DbResult<bool> {
        let v: Option<i64> = sqlx::query_scalar("SELECT cancel_requested FROM tasks WHERE id = ?")
            .bind(task.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(query("read the task's cancellation"))?;
        Ok(v.unwrap_or(0) != 0)
    }

    pub async fn append_events(&self, task: &TaskId, events: &[EventRow]) -> DbResult<()> {
        let mut tx = self.begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO agent_events (task_id, attempt, seq, ts_ms, kind, text, exit_code, detail)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(task.as_str())
            .bind(e.attempt)
            .bind(e.seq)
            .bind(e.ts_ms)
            .bind(&e.kind)
            .bind(&e.text)
            .bind(e.exit_code)
            .bind(&e.detail)
            .execute(&mut *tx)
            .await
            .map_err(query("store the agent's events"))?;
        }
        tx.commit()
            .await
            .map_err(query("commit the agent's events"))
    }

    async fn begin(&self) -> DbResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool
            .begin()
            .await
            .map_err(query("begin a transaction"))
    }

    /// A task's rows of a per-attempt table (one attempt, or all), sorted by `order`'s
    /// columns.
    async fn per_attempt(
        &self,
        table: &'static str,
        order: &'static str,
        task: &TaskId,
        attempt: Option<u32>,
        what: &'static str,
    ) -> DbResult<Vec<sqlx::sqlite::SqliteRow>> {
        sqlx::query(&format!(
            "SELECT * FROM {table} WHERE task_id = ? AND (? IS NULL OR attempt = ?)
             ORDER BY {order}"
        ))
        .bind(task.as_str())
        .bind(attempt)
        .bind(attempt)
        .fetch_all(&self.pool)
        .await
        .map_err(query(what))
    }

    /// The agent's events for a task (one attempt, or all), in order.
    pub async fn events(&self, task: &TaskId, attempt: Option<u32>) -> DbResult<Vec<EventRow>> {
        let rows = self
            .per_attempt(
                "agent_events",
                "attempt, seq",
                task,
                attempt,
                "read the agent's events",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| EventRow {
                attempt: r.get::<u32, _>("attempt"),
                seq: r.get("seq"),
                ts_ms: r.get("ts_ms"),
                kind: r.get("kind"),
                text: r.get("text"),
                exit_code: r.get("exit_code"),
                detail: r.get("detail"),
            })
            .collect())
    }

    /// The proxy's decisions for a task (one attempt, or all), in time order: a
    /// connection's entry is written when it closes, after the requests made inside it.
    pub async fn network_log(
        &self,
        task: &TaskId,
        attempt: Option<u32>,
    ) -> DbResult<Vec<NetworkEntry>> {
        let rows = self
            .per_attempt(
                "network_log",
                "ts_ms, attempt, seq",
                task,
                attempt,
                "read the network log",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| NetworkEntry {
                attempt: r.get::<u32, _>("attempt"),
                seq: r.get("seq"),
                ts_ms: r.get("ts_ms"),
                phase: r.get("phase"),
                method: r.get("method"),
                path: r.get("path"),
                host: r.get("host"),
                port: r.get::<u16, _>("port"),
                decision: r.get("decision"),
                rule: r.get("rule"),
                bytes_up: r.get::<i64, _>("bytes_up") as u64,
                bytes_down: r.get::<i64, _>("bytes_down") as u64,
                note: r.get("note"),
            })
            .collect())
    }

    pub async fn logs(&self, task: &TaskId, attempt: Option<u32>) -> DbResult<Vec<LogLine>> {
        let rows = self
            .per_attempt("logs", "attempt, seq", task, attempt, "read logs")
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LogLine {
                    attempt: r.get::<u32, _>("attempt"),
                    seq: r.get("seq"),
                    ts_ms: r.get("ts_ms"),
                    phase: r
                        .get::<String, _>("phase")
                        .parse()
                        .map_err(corrupt("log phase"))?,
                    stream: Stream::parse(&r.get::<String, _>("stream"))
                        .ok_or_else(|| corrupt("log stream")("unknown stream".into()))?,
                    line: r.get("line"),
                })
            })
            .collect()
    }
}

type AttemptQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Runs an `UPDATE attempts ... WHERE task_id = ? AND idx = ?`, binding those two last;
/// updating no attempt is an error.
async fn update_attempt<'q, 'c, E>(
    exec: E,
    task: &TaskId,
    idx: u32,
    q: AttemptQuery<'q>,
) -> DbResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let n = q
        .bind(task.as_str().to_string())
        .bind(idx)
        .execute(exec)
        .await
        .map_err(query("update the attempt"))?
        .rows_affected();
    if n == 0 {
        return Err(DbError::AttemptNotFound {
            task: task.to_string(),
            attempt: idx,
        });
    }
    Ok(())
}

/// Tasks with their attempt count and the leading attempt's summary.
const TASK_SELECT: &str = "SELECT t.*,
    (SELECT COUNT(*) FROM attempts a WHERE a.task_id = t.id) AS attempt_total,
    (SELECT a.files_changed || ',' || a.lines_added || ',' || a.lines_removed FROM attempts a
      WHERE a.task_id = t.id AND a.files_changed IS NOT NULL
      ORDER BY (a.status = 'ready') DESC, a.idx LIMIT 1) AS summary
  FROM tasks t";

fn env_row(r: &sqlx::sqlite::SqliteRow) -> EnvRecord {
    EnvRecord {
        workspace: r.get("workspace"),
        name: r.get("name"),
        version: r.get("version"),
        source: r.get("source"),
        repo: r.get("repo"),
        created_ms: r.get("created_ms"),
        updated_ms: r.get("updated_ms"),
    }
}

fn snapshot_row(r: &sqlx::sqlite::SqliteRow) -> SnapshotRecord {
    SnapshotRecord {
        key: r.get("key"),
        workspace: r.get("workspace"),
        environment: r.get("environment"),
        components: r.get("components"),
        size: r.get("size"),
        created_ms: r.get("created_ms"),
        expires_ms: r.get("expires_ms"),
        last_used_ms: r.get("last_used_ms"),
        hits: r.get("hits"),
        reset: r.get("reset"),
        boot_id: r.get("boot_id"),
        durable: r.get("durable"),
        source: r.get("source"),
    }
}

fn parse_summary(s: &str) -> Option<DiffSummary> {
    let mut it = s.split(',').map(|n| n.parse::<u32>().ok());
    Some(DiffSummary {
        files_changed: it.next()??,
        lines_added: it.next()??,
        lines_removed: it.next()??,
    })
}

fn task_row(r: &sqlx::sqlite::SqliteRow) -> DbResult<TaskRecord> {
    Ok(TaskRecord {
        id: TaskId::from_str(&r.get::<String, _>("id"))
            .map_err(|e| corrupt("task id")(e.to_string()))?,
        workspace: r.get("workspace"),
        environment: r.get("environment"),
        environment_version: r.get("environment_version"),
        spec: r.get("spec"),
        title: r.get("title"),
        prompt: r.get("prompt"),
        branch: r.get("branch"),
        commit: r.get("git_commit"),
        agent_script: r.get("agent_script"),
        harness: r
            .get::<Option<String>, _>("harness")
            .map(|h| h.parse())
            .transpose()
            .map_err(corrupt("task harness"))?,
        approval: r
            .get::<Option<String>, _>("approval")
            .map(|a| a.parse())
            .transpose()
            .map_err(corrupt("task approval"))?,
        from: match (
            r.get::<Option<String>, _>("from_task"),
            r.get::<Option<u32>, _>("from_attempt"),
        ) {
            (Some(t), Some(i)) => Some((
                TaskId::from_str(&t).map_err(|e| corrupt("task source")(e.to_string()))?,
                i,
            )),
            _ => None,
        },
        status: r
            .get::<String, _>("status")
            .parse()
            .map_err(corrupt("task status"))?,
        created_ms: r.get("created_ms"),
        updated_ms: r.get("updated_ms"),
        attempt_total: r.get::<u32, _>("attempt_total"),
        summary: r
            .get::<Option<String>, _>("summary")
            .as_deref()
            .and_then(parse_summary),
    })
}

fn attempt_row(r: &sqlx::sqlite::SqliteRow) -> DbResult<AttemptRecord> {
    let files: Option<u32> = r.get("files_changed");
    Ok(AttemptRecord {
        index: r.get::<u32, _>("idx"),
        status: r
            .get::<String, _>("status")
            .parse()
            .map_err(corrupt("attempt status"))?,
        sandbox: r.get("sandbox"),
        cache: r.get("cache"),
        base_commit: r.get("base_commit"),
        result_tree: r.get("result_tree"),
        final_message: r.get("final_message"),
        exit_code: r.get("exit_code"),
        error: r.get("error"),
        phases: serde_json::from_str(&r.get::<String, _>("phases"))
            .map_err(|e| corrupt("phase timings")(e.to_string()))?,
        summary: files.map(|files_changed| DiffSummary {
            files_changed,
            lines_added: r.get::<Option<u32>, _>("lines_added").unwrap_or(0),
            lines_removed: r.get::<Option<u32>, _>("lines_removed").unwrap_or(0),
        }),
        check: r
            .get::<Option<String>, _>("check_result")
            .map(|c| serde_json::from_str(&c))
            .transpose()
            .map_err(|e| corrupt("check result")(e.to_string()))?,
        created_ms: r.get("created_ms"),
        started_ms: r.get("started_ms"),
        finished_ms: r.get("finished_ms"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hangar.db")).await.unwrap();
        (dir, db)
    }

    fn new_task(env: &str) -> NewTask {
        NewTask {
            id: TaskId::random(),
            workspace: DEFAULT_WORKSPACE.into(),
            environment: env.into(),
            environment_version: 1,
            spec: "name = \"e\"".into(),
            title: "fix it".into(),
            prompt: "fix it\nplease".into(),
            branch: None,
            commit: None,
            agent_script: None,
            harness: None,
            approval: None,
            attempts: 2,
            from: None,
        }
    }

    /// In octal, as `ls` and chmod speak of it.
    fn mode(p: &Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        format!(
            "{:o}",
            std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
        )
    }

    /// Regression: hangar.db was 0644, so any local user read every workspace's
    /// environments and logs.
    #[tokio::test]
    async fn the_database_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hangar.db");
        let db = Db::open(&path).await.unwrap();
        // A write, so the WAL and shared memory exist.
        db.create_env(&EnvRecord {
            workspace: DEFAULT_WORKSPACE.into(),
            name: "web".into(),
            version: 1,
            source: "name = \"web\"".into(),
            repo: "/srv/web".into(),
            created_ms: 1,
            updated_ms: 1,
        })
        .await
        .unwrap();
        let wal = dir.path().join("hangar.db-wal");
        let shm = dir.path().join("hangar.db-shm");
        for p in [&path, &wal, &shm] {
            assert_eq!(mode(p), "600", "{}", p.display());
        }
        db.close().await;
        // An older install's open modes are closed when it opens.
        for p in [&path, &wal, &shm] {
            if p.exists() {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let db = Db::open(&path).await.unwrap();
        db.envs(DEFAULT_WORKSPACE).await.unwrap();
        for p in [&path, &wal, &shm] {
            if p.exists() {
                assert_eq!(mode(p), "600", "{}", p.display());
            }
        }
        assert_eq!(mode(&path), "600");
    }

    #[tokio::test]
    async fn concurrent_first_opens_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hangar.db");
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { Db::open(&path).await.map(|_| ()) })
            })
            .collect();
        for o in opens {
            o.await.unwrap().expect("every concurrent open succeeds");
        }
    }

    #[tokio::test]
    async fn environments_round_trip() {
        let (_d, db) = db().await;
        let rec = EnvRecord {
            workspace: DEFAULT_WORKSPACE.into(),
            name: "web".into(),
            version: 1,
            source: "name = \"web\"".into(),
            repo: "/srv/web".into(),
            created_ms: 1,
            updated_ms: 1,
        };
        db.create_env(&rec).await.unwrap();
        assert!(matches!(db.create_env(&rec).await, Err(DbError::EnvExists(n)) if n == "web"));
        let updated = db
            .update_env("default", "web", "x", "/srv/web2")
            .await
            .unwrap();
        assert_eq!((updated.version, updated.repo.as_str()), (2, "/srv/web2"));
        assert!(db.envs("other").await.unwrap().is_empty());
        assert!(matches!(
            db.env("other", "web").await,
            Err(DbError::EnvNotFound(_))
        ));
        db.delete_env("default", "web").await.unwrap();
        assert!(matches!(
            db.delete_env("default", "web").await,
            Err(DbError::EnvNotFound(_))
        ));
    }

    /// Regression: entries came back in the order they were written, and a connection's
    /// entry is written when it closes, after the requests inside it.
    #[tokio::test]
    async fn the_network_log_is_in_time_order() {
        let (_d, db) = db().await;
        let t = db.create_task(&new_task("web")).await.unwrap();
        let entry = |attempt: u32, seq: i64, ts_ms: i64, path: Option<&str>| NetworkEntry {
            attempt,
            seq,
            ts_ms,
            phase: "agent".into(),
            method: path.map(|_| "GET".into()),
            path: path.map(str::to_string),
            host: "api.test".into(),
            port: 443,
            decision: "allowed".into(),
            rule: None,
            bytes_up: 0,
            bytes_down: 0,
            note: None,
        };
        // As the proxy sends them: two requests inside a connection, then the connection.
        let written = [
            entry(1, 1, 20, Some("/a")),
            entry(1, 2, 30, Some("/b")),
            entry(1, 3, 10, None),
            entry(2, 1, 20, None),
            entry(1, 4, 20, Some("/c")),
        ];
        db.append_network(&t.id, &written).await.unwrap();
        let check = |got: Vec<NetworkEntry>, expected: &[(u32, i64)]| {
            let got: Vec<(u32, i64)> = got.iter().map(|e| (e.attempt, e.seq)).collect();
            assert_eq!(got, expected);
        };
        check(
            db.network_log(&t.id, None).await.unwrap(),
            &[(1, 3), (1, 1), (1, 4), (2, 1), (1, 2)],
        );
        check(
            db.network_log(&t.id, Some(1)).await.unwrap(),
            &[(1, 3), (1, 1), (1, 4), (1, 2)],
        );
        let paths: Vec<Option<String>> = db
            .network_log(&t.id, Some(1))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                None,
                Some("/a".into()),
                Some("/c".into()),
                Some("/b".into())
            ]
        );
    }

    #[tokio::test]
    async fn task_status_follows_attempts_and_lists_page() {
        let (_d, db) = db().await;
        let t = db.create_task(&new_task("web")).await.unwrap();
        assert_eq!((t.status, t.attempt_total), (TaskStatus::Pending, 2));
        db.start_attempt(&t.id, 1).await.unwrap();
        assert_eq!(
            db.task("default", &t.id).await.unwrap().status,
            TaskStatus::Running
        );
        let timing = PhaseTiming {
            phase: Phase::Setup,
            started_ms: 5,
            ended_ms: 9,
        };
        db.add_phase(&t.id, 1, timing).await.unwrap();
        db.add_phase(&t.id, 1, timing).await.unwrap();
        let outcome = AttemptOutcome {
            status: AttemptStatus::Ready,
            final_message: Some("done".into()),
            exit_code: Some(0),
            error: None,
            summary: Some(DiffSummary {
                files_changed: 1,
                lines_added: 2,
                lines_removed: 3,
            }),
            diff: Some(b"diff --git".to_vec()),
            result_tree: None,
        };
        db.finish_attempt(&t.id, 1, &outcome).await.unwrap();
        db.finish_attempt(
            &t.id,
            2,
            &AttemptOutcome {
                status: AttemptStatus::Error,
                error: Some("it broke".into()),
                summary: None,
                diff: None,
                ..outcome.clone()
            },
        )
        .await
        .unwrap();
        let t = db.task("default", &t.id).await.unwrap();
        assert_eq!(t.status, TaskStatus::Ready);
        assert_eq!(t.summary, outcome.summary);
        let attempts = db.attempts(&t.id).await.unwrap();
        assert_eq!(attempts[0].phases, vec![timing, timing]);
        assert_eq!(attempts[1].error.as_deref(), Some("it broke"));
        assert_eq!(db.diff(&t.id, 1).await.unwrap().unwrap(), b"diff --git");
        assert!(matches!(
            db.diff(&t.id, 3).await,
            Err(DbError::AttemptNotFound { attempt: 3, .. })
        ));

        for _ in 0..4 {
            db.create_task(&new_task("api")).await.unwrap();
        }
        let mut q = TaskQuery {
            workspace: "default".into(),
            environment: None,
            limit: 2,
            cursor: None,
        };
        let mut seen = Vec::new();
        loop {
            let page = db.tasks(&q).await.unwrap();
            seen.extend(page.tasks.iter().map(|t| t.id.clone()));
            match page.cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 5);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 5, "pages overlap");
        q.environment = Some("web".into());
        q.cursor = None;
        assert_eq!(db.tasks(&q).await.unwrap().tasks.len(), 1);
        q.cursor = Some("nonsense".into());
        assert!(matches!(db.tasks(&q).await, Err(DbError::BadCursor(_))));
    }

    #[tokio::test]
    async fn task_prefixes_and_logs() {
        let (_d, db) = db().await;
        let t = db.create_task(&new_task("web")).await.unwrap();
        assert_eq!(
            db.resolve_task("default", &t.id.as_str()[..5])
                .await
                .unwrap(),
            t.id
        );
        assert!(matches!(
            db.resolve_task("default", "not-hex").await,
            Err(DbError::TaskNotFound(_))
        ));
        assert!(matches!(
            db.resolve_task("other", t.id.as_str()).await,
            Err(DbError::TaskNotFound(_))
        ));
        let line = |seq, text: &str| LogLine {
            attempt: 1,
            seq,
            ts_ms: 10,
            phase: Phase::Setup,
            stream: Stream::Stdout,
            line: text.into(),
        };
        db.append_logs(&t.id, &[line(0, "a"), line(1, "b")])
            .await
            .unwrap();
        let logs = db.logs(&t.id, Some(1)).await.unwrap();
        assert_eq!(logs, vec![line(0, "a"), line(1, "b")]);
        assert!(db.logs(&t.id, Some(2)).await.unwrap().is_empty());
    }
}
