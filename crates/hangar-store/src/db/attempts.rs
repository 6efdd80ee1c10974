//! The `attempts` table: each attempt of a task, its status, phase timings (a JSON
//! list), outcome, diff and check result. Every status change recomputes its task's
//! status in the same transaction.

use hangar_spec::{AttemptStatus, Phase, TaskId, TaskStatus};
use serde::{Deserialize, Serialize};

use super::backend::{self, Backend};
use super::{corrupt, int, now_ms, query, Db, DbError, DbResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// The columns of an attempt but its diff, which only [`Db::diff`] reads.
const ATTEMPT_COLUMNS: &str = "idx, status, sandbox, cache, base_commit, result_tree,
    final_message, exit_code, error, phases, files_changed, lines_added, lines_removed,
    check_result, created_ms, started_ms, finished_ms";

#[derive(sqlx::FromRow)]
struct AttemptColumns {
    idx: i64,
    status: String,
    sandbox: Option<String>,
    cache: Option<String>,
    base_commit: Option<String>,
    result_tree: Option<String>,
    final_message: Option<String>,
    exit_code: Option<i32>,
    error: Option<String>,
    phases: String,
    files_changed: Option<i64>,
    lines_added: Option<i64>,
    lines_removed: Option<i64>,
    check_result: Option<String>,
    created_ms: i64,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
}

impl TryFrom<AttemptColumns> for AttemptRecord {
    type Error = DbError;

    fn try_from(r: AttemptColumns) -> DbResult<AttemptRecord> {
        Ok(AttemptRecord {
            index: int("attempt index", r.idx)?,
            status: r.status.parse().map_err(corrupt("attempt status"))?,
            sandbox: r.sandbox,
            cache: r.cache,
            base_commit: r.base_commit,
            result_tree: r.result_tree,
            final_message: r.final_message,
            exit_code: r.exit_code,
            error: r.error,
            phases: serde_json::from_str(&r.phases)
                .map_err(|e| corrupt("phase timings")(e.to_string()))?,
            summary: match r.files_changed {
                Some(files) => Some(DiffSummary {
                    files_changed: int("diff summary", files)?,
                    lines_added: int("diff summary", r.lines_added.unwrap_or(0))?,
                    lines_removed: int("diff summary", r.lines_removed.unwrap_or(0))?,
                }),
                None => None,
            },
            check: r
                .check_result
                .map(|c| serde_json::from_str(&c))
                .transpose()
                .map_err(|e| corrupt("check result")(e.to_string()))?,
            created_ms: r.created_ms,
            started_ms: r.started_ms,
            finished_ms: r.finished_ms,
        })
    }
}

type AttemptQuery<'q> = sqlx::query::Query<'q, Backend, <Backend as sqlx::Database>::Arguments<'q>>;

impl Db {
    pub async fn attempts(&self, task: &TaskId) -> DbResult<Vec<AttemptRecord>> {
        let rows: Vec<AttemptColumns> = sqlx::query_as(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = $1 ORDER BY idx"
        ))
        .bind(task.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(query("read the task's attempts"))?;
        rows.into_iter().map(AttemptRecord::try_from).collect()
    }

    pub async fn start_attempt(&self, task: &TaskId, idx: u32) -> DbResult<()> {
        let q = sqlx::query(
            "UPDATE attempts SET status = 'running', started_ms = $1
             WHERE task_id = $2 AND idx = $3",
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
            "UPDATE attempts SET {} = $1 WHERE task_id = $2 AND idx = $3",
            field.column()
        );
        update_attempt(&self.pool, task, idx, sqlx::query(&sql).bind(value)).await
    }

    /// Appends one phase's timing.
    pub async fn add_phase(&self, task: &TaskId, idx: u32, timing: PhaseTiming) -> DbResult<()> {
        let entry = serde_json::to_string(&timing).expect("a timing serializes");
        let sql = format!(
            "UPDATE attempts SET phases = {} WHERE task_id = $2 AND idx = $3",
            backend::json_list_append("phases", "$1")
        );
        update_attempt(&self.pool, task, idx, sqlx::query(&sql).bind(entry)).await
    }

    pub async fn finish_attempt(
        &self,
        task: &TaskId,
        idx: u32,
        o: &AttemptOutcome,
    ) -> DbResult<()> {
        let s = o.summary;
        let q = sqlx::query(
            "UPDATE attempts SET status = $1, final_message = $2, exit_code = $3, error = $4,
                 files_changed = $5, lines_added = $6, lines_removed = $7, diff = $8,
                 result_tree = $9, finished_ms = $10
             WHERE task_id = $11 AND idx = $12",
        )
        .bind(o.status.as_str())
        .bind(o.final_message.as_deref())
        .bind(o.exit_code)
        .bind(o.error.as_deref())
        .bind(s.map(|s| i64::from(s.files_changed)))
        .bind(s.map(|s| i64::from(s.lines_added)))
        .bind(s.map(|s| i64::from(s.lines_removed)))
        .bind(o.diff.as_deref())
        .bind(o.result_tree.as_deref())
        .bind(now_ms());
        self.set_attempt(task, idx, q).await
    }

    /// Changes an attempt's status (with `q`, whose last two placeholders are the task
    /// id and index), then recomputes the task's status from its attempts', in one
    /// transaction.
    async fn set_attempt(&self, task: &TaskId, idx: u32, q: AttemptQuery<'_>) -> DbResult<()> {
        let mut tx = self.begin().await?;
        update_attempt(&mut *tx, task, idx, q).await?;
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status FROM attempts WHERE task_id = $1")
                .bind(task.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(query("read attempt statuses"))?;
        let statuses = statuses
            .iter()
            .map(|s| s.parse::<AttemptStatus>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt("attempt status"))?;
        sqlx::query("UPDATE tasks SET status = $1, updated_ms = $2 WHERE id = $3")
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
        let diff: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT diff FROM attempts WHERE task_id = $1 AND idx = $2")
                .bind(task.as_str())
                .bind(i64::from(idx))
                .fetch_optional(&self.pool)
                .await
                .map_err(query("read the diff"))?;
        diff.ok_or_else(|| DbError::AttemptNotFound {
            task: task.to_string(),
            attempt: idx,
        })
    }
}

/// Runs an `UPDATE attempts ... WHERE task_id = $n AND idx = $n+1`, binding those two
/// last; updating no attempt is an error.
async fn update_attempt<'q, 'c, E>(
    exec: E,
    task: &TaskId,
    idx: u32,
    q: AttemptQuery<'q>,
) -> DbResult<()>
where
    E: sqlx::Executor<'c, Database = Backend>,
{
    let n = q
        .bind(task.as_str().to_string())
        .bind(i64::from(idx))
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

#[cfg(test)]
mod tests {
    use hangar_spec::{AttemptStatus, Phase, TaskId, TaskStatus};

    use crate::db::testing::{db, new_task};
    use crate::db::{AttemptField, AttemptOutcome, CheckResult, DbError, DiffSummary, PhaseTiming};

    #[tokio::test]
    async fn task_status_follows_attempts() {
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
    }

    #[tokio::test]
    async fn attempt_fields_are_set_one_by_one() {
        let (_d, db) = db().await;
        let t = db.create_task(&new_task("web")).await.unwrap();
        let check = CheckResult {
            passed: false,
            exit_code: Some(3),
        };
        db.set_attempt_field(&t.id, 2, AttemptField::Sandbox, "sbx-1")
            .await
            .unwrap();
        db.set_attempt_field(&t.id, 2, AttemptField::Cache, r#"{"status":"hit"}"#)
            .await
            .unwrap();
        db.set_attempt_field(&t.id, 2, AttemptField::BaseCommit, "abc")
            .await
            .unwrap();
        db.set_attempt_field(
            &t.id,
            2,
            AttemptField::Check,
            &serde_json::to_string(&check).unwrap(),
        )
        .await
        .unwrap();
        let attempts = db.attempts(&t.id).await.unwrap();
        assert_eq!(attempts.iter().map(|a| a.index).collect::<Vec<_>>(), [1, 2]);
        let (first, second) = (&attempts[0], &attempts[1]);
        assert_eq!(
            (first.sandbox.as_deref(), first.check, first.summary),
            (None, None, None)
        );
        assert_eq!(
            (
                second.sandbox.as_deref(),
                second.cache.as_deref(),
                second.base_commit.as_deref(),
                second.check
            ),
            (
                Some("sbx-1"),
                Some(r#"{"status":"hit"}"#),
                Some("abc"),
                Some(check)
            )
        );
        // A field is no status change.
        assert_eq!(second.status, AttemptStatus::Pending);
        assert_eq!(
            db.task("default", &t.id).await.unwrap().status,
            TaskStatus::Pending
        );
        assert_eq!(db.diff(&t.id, 2).await.unwrap(), None);

        assert!(matches!(
            db.set_attempt_field(&t.id, 3, AttemptField::Sandbox, "x")
                .await,
            Err(DbError::AttemptNotFound { attempt: 3, .. })
        ));
        assert!(matches!(
            db.start_attempt(&TaskId::random(), 1).await,
            Err(DbError::AttemptNotFound { attempt: 1, .. })
        ));
    }
}
