//! hangar's metadata database (sqlx, embedded migrations): environments, secrets, tasks,
//! attempts, snapshots, API tokens, web sessions, the forge's pull requests, deliveries
//! and triggers, and the per-attempt logs, one module per table. Times are epoch milliseconds.
//!
//! The backend is SQLite (`sqlite.rs`), and everything that only SQLite accepts lives
//! there: the connection settings, the migrations and the few SQL expressions that have
//! no common spelling. The table modules write SQL that PostgreSQL accepts too: `$N`
//! placeholders (sqlx's SQLite driver numbers them as PostgreSQL does), `ON CONFLICT`
//! upserts, `TRUE` for flags, and row structs that decode only `String`, `i64`, `i32`,
//! `bool` and bytes. A PostgreSQL backend is then another module offering the same
//! items as `sqlite.rs`, chosen where `backend` is named below.

use std::path::{Path, PathBuf};

use sqlx::Database;

mod attempts;
mod envs;
mod forge;
mod logs;
mod secrets;
mod sessions;
mod snapshots;
mod sqlite;
mod tasks;
mod tokens;

pub use attempts::{
    AttemptField, AttemptOutcome, AttemptRecord, CheckResult, DiffSummary, PhaseTiming,
};
pub use envs::EnvRecord;
pub use forge::{PullRecord, TriggerRecord};
pub use logs::{EventRow, LogLine, NetworkEntry, Stream};
pub use secrets::SecretRow;
pub use sessions::SessionRecord;
pub use snapshots::SnapshotRecord;
pub use tasks::{NewTask, TaskPage, TaskQuery, TaskRecord};
pub use tokens::TokenRecord;

// The backend in use. Its module offers `Backend` (the sqlx database), `Pool`, `open`
// and the SQL fragments without a common spelling; a second backend is chosen here.
use sqlite as backend;

use backend::Backend;

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
    /// Shown with `{:?}`: the cursor is the caller's text, and may hold a newline.
    #[error("failed to read list cursor {0:?}: expected one from a previous page")]
    BadCursor(String),
}

pub type DbResult<T> = std::result::Result<T, DbError>;

fn query(action: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError::Query { action, source }
}

fn corrupt(what: &'static str) -> impl FnOnce(String) -> DbError {
    move |reason| DbError::Corrupt { what, reason }
}

/// An integer column as the narrower type its record holds. Rows decode integers as
/// `i64`, the one integer type both backends store every count, index and time in.
fn int<T: TryFrom<i64>>(what: &'static str, value: i64) -> DbResult<T> {
    T::try_from(value).map_err(|_| DbError::Corrupt {
        what,
        reason: format!("{value} is out of range"),
    })
}

/// The metadata database.
#[derive(Clone)]
pub struct Db {
    pool: backend::Pool,
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The rows of a query as the backend returns them, for `FromRow` bounds.
type BackendRow = <Backend as Database>::Row;

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open(path: &Path) -> DbResult<Db> {
        Ok(Db {
            pool: backend::open(path).await?,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> DbResult<sqlx::Transaction<'static, Backend>> {
        self.pool
            .begin()
            .await
            .map_err(query("begin a transaction"))
    }
}

#[cfg(test)]
mod testing {
    //! What the table modules' tests share: a fresh database and a task to store.

    use hangar_spec::{TaskId, Workspace};

    use super::{Db, EnvRecord, NewTask};

    pub(super) async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hangar.db")).await.unwrap();
        (dir, db)
    }

    /// Environment `web` of the default workspace, version 1.
    pub(super) fn web_env() -> EnvRecord {
        EnvRecord {
            workspace: Workspace::DEFAULT.into(),
            name: "web".into(),
            version: 1,
            source: "name = \"web\"".into(),
            repo: "/srv/web".into(),
            created_ms: 1,
            updated_ms: 1,
        }
    }

    pub(super) fn new_task(env: &str) -> NewTask {
        NewTask {
            id: TaskId::random(),
            workspace: Workspace::DEFAULT.into(),
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
}
