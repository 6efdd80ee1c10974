//! The `tasks` table: what each task was asked to do, with the environment file it ran
//! with, its status (recomputed from its attempts', see `attempts.rs`), its follow-up
//! source and a cancellation request; listed newest first in pages.

use std::str::FromStr;

use hangar_spec::{Approval, AttemptStatus, Harness, TaskId, TaskStatus};

use super::{corrupt, int, query, Db, DbError, DbResult, DiffSummary};

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

/// Which tasks to list, newest first.
#[derive(Debug, Clone)]
pub struct TaskQuery {
    pub workspace: String,
    pub environment: Option<String>,
    pub status: Option<TaskStatus>,
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

/// Tasks with their attempt count and the leading attempt's summary (the first ready
/// attempt with a diff summary, else the first with one).
const TASK_SELECT: &str = "SELECT t.*,
    (SELECT COUNT(*) FROM attempts a WHERE a.task_id = t.id) AS attempt_total,
    lead.files_changed, lead.lines_added, lead.lines_removed
  FROM tasks t
  LEFT JOIN attempts lead ON lead.task_id = t.id AND lead.idx = (
    SELECT a.idx FROM attempts a WHERE a.task_id = t.id AND a.files_changed IS NOT NULL
    ORDER BY (a.status = 'ready') DESC, a.idx LIMIT 1)";

/// A row of [`TASK_SELECT`].
#[derive(sqlx::FromRow)]
struct TaskColumns {
    id: String,
    workspace: String,
    environment: String,
    environment_version: i64,
    spec: String,
    title: String,
    prompt: String,
    branch: Option<String>,
    git_commit: Option<String>,
    agent_script: Option<String>,
    harness: Option<String>,
    approval: Option<String>,
    from_task: Option<String>,
    from_attempt: Option<i64>,
    status: String,
    created_ms: i64,
    updated_ms: i64,
    attempt_total: i64,
    files_changed: Option<i64>,
    lines_added: Option<i64>,
    lines_removed: Option<i64>,
}

impl TryFrom<TaskColumns> for TaskRecord {
    type Error = DbError;

    fn try_from(r: TaskColumns) -> DbResult<TaskRecord> {
        Ok(TaskRecord {
            id: TaskId::from_str(&r.id).map_err(|e| corrupt("task id")(e.to_string()))?,
            workspace: r.workspace,
            environment: r.environment,
            environment_version: r.environment_version,
            spec: r.spec,
            title: r.title,
            prompt: r.prompt,
            branch: r.branch,
            commit: r.git_commit,
            agent_script: r.agent_script,
            harness: r
                .harness
                .map(|h| h.parse())
                .transpose()
                .map_err(corrupt("task harness"))?,
            approval: r
                .approval
                .map(|a| a.parse())
                .transpose()
                .map_err(corrupt("task approval"))?,
            from: match (r.from_task, r.from_attempt) {
                (Some(t), Some(i)) => Some((
                    TaskId::from_str(&t).map_err(|e| corrupt("task source")(e.to_string()))?,
                    int("task source attempt", i)?,
                )),
                _ => None,
            },
            status: r.status.parse().map_err(corrupt("task status"))?,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
            attempt_total: int("attempt count", r.attempt_total)?,
            summary: match (r.files_changed, r.lines_added, r.lines_removed) {
                (Some(files), Some(added), Some(removed)) => Some(DiffSummary {
                    files_changed: int("diff summary", files)?,
                    lines_added: int("diff summary", added)?,
                    lines_removed: int("diff summary", removed)?,
                }),
                _ => None,
            },
        })
    }
}

impl Db {
    /// Records a new task with its attempts, all pending.
    pub async fn create_task(&self, t: &NewTask) -> DbResult<TaskRecord> {
        let now = super::now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO tasks (id, workspace, environment, environment_version, spec, title, prompt,
                                branch, git_commit, agent_script, harness, approval, status,
                                created_ms, updated_ms, from_task, from_attempt)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16)",
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
        .bind(t.from.as_ref().map(|(id, _)| id.as_str()))
        .bind(t.from.as_ref().map(|(_, idx)| i64::from(*idx)))
        .execute(&mut *tx)
        .await
        .map_err(query("store the task"))?;
        for idx in 1..=t.attempts {
            sqlx::query(
                "INSERT INTO attempts (task_id, idx, status, created_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(t.id.as_str())
            .bind(i64::from(idx))
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
        // Ids are lowercase hex and so is the pattern, so SQLite's case-blind LIKE and
        // PostgreSQL's case-sensitive one agree.
        let pattern = format!("{}%", id_or_prefix.to_ascii_lowercase());
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM tasks WHERE workspace = $1 AND id LIKE $2 LIMIT 6")
                .bind(workspace)
                .bind(&pattern)
                .fetch_all(&self.pool)
                .await
                .map_err(query("look up the task"))?;
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
        sqlx::query_as::<_, TaskColumns>(&format!(
            "{TASK_SELECT} WHERE t.workspace = $1 AND t.id = $2"
        ))
        .bind(workspace)
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(query("read the task"))?
        .ok_or_else(|| DbError::TaskNotFound(id.to_string()))?
        .try_into()
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
        let rows = sqlx::query_as::<_, TaskColumns>(&format!(
            "{TASK_SELECT} WHERE t.workspace = $1 AND ($2 IS NULL OR t.environment = $2)
               AND (t.created_ms < $3 OR (t.created_ms = $3 AND ($4 = '' OR t.id < $4)))
               AND ($6 IS NULL OR t.status = $6)
             ORDER BY t.created_ms DESC, t.id DESC LIMIT $5"
        ))
        .bind(&q.workspace)
        .bind(&q.environment)
        .bind(before_ms)
        .bind(&before_id)
        .bind(i64::from(limit) + 1)
        .bind(q.status.map(TaskStatus::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(query("list tasks"))?;
        let mut tasks = rows
            .into_iter()
            .map(TaskRecord::try_from)
            .collect::<DbResult<Vec<_>>>()?;
        let cursor = if tasks.len() > limit as usize {
            tasks.truncate(limit as usize);
            tasks.last().map(|t| format!("{}:{}", t.created_ms, t.id))
        } else {
            None
        };
        Ok(TaskPage { tasks, cursor })
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

    /// Asks the process running `task` to cancel it.
    pub async fn request_cancel(&self, task: &TaskId) -> DbResult<()> {
        sqlx::query("UPDATE tasks SET cancel_requested = TRUE WHERE id = $1")
            .bind(task.as_str())
            .execute(&self.pool)
            .await
            .map_err(query("request the task's cancellation"))?;
        Ok(())
    }

    pub async fn cancel_requested(&self, task: &TaskId) -> DbResult<bool> {
        let v: Option<bool> =
            sqlx::query_scalar("SELECT cancel_requested FROM tasks WHERE id = $1")
                .bind(task.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(query("read the task's cancellation"))?;
        Ok(v.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use hangar_spec::{Approval, AttemptStatus, Harness, TaskId, TaskStatus};

    use crate::db::testing::{db, new_task};
    use crate::db::{AttemptOutcome, DbError, DiffSummary, NewTask, TaskQuery};

    #[tokio::test]
    async fn tasks_list_in_pages() {
        let (_d, db) = db().await;
        db.create_task(&new_task("web")).await.unwrap();
        for _ in 0..4 {
            db.create_task(&new_task("api")).await.unwrap();
        }
        let mut q = TaskQuery {
            workspace: "default".into(),
            environment: None,
            status: None,
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
    async fn tasks_list_by_status() {
        let (_d, db) = db().await;
        let waiting = db.create_task(&new_task("web")).await.unwrap();
        let started = db.create_task(&new_task("web")).await.unwrap();
        db.start_attempt(&started.id, 1).await.unwrap();
        let ids = |status| {
            let q = TaskQuery {
                workspace: "default".into(),
                environment: None,
                status: Some(status),
                limit: 10,
                cursor: None,
            };
            let db = &db;
            async move {
                let page = db.tasks(&q).await.unwrap();
                page.tasks.into_iter().map(|t| t.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(ids(TaskStatus::Running).await, [started.id]);
        assert_eq!(ids(TaskStatus::Pending).await, [waiting.id]);
        assert_eq!(ids(TaskStatus::Ready).await, []);
    }

    #[tokio::test]
    async fn task_prefixes_resolve_within_the_workspace() {
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
    }

    #[tokio::test]
    async fn a_task_keeps_what_it_was_asked() {
        let (_d, db) = db().await;
        let first = db.create_task(&new_task("web")).await.unwrap();
        let asked = NewTask {
            branch: Some("main".into()),
            commit: Some("abc123".into()),
            agent_script: Some("echo hi".into()),
            harness: Some(Harness::Claude),
            approval: Some(Approval::ReadOnly),
            attempts: 3,
            from: Some((first.id.clone(), 2)),
            ..new_task("web")
        };
        let t = db.create_task(&asked).await.unwrap();
        assert_eq!(db.task("default", &t.id).await.unwrap().id, asked.id);
        assert!(matches!(
            db.task("other", &t.id).await,
            Err(DbError::TaskNotFound(_))
        ));
        assert_eq!(
            (
                t.branch.as_deref(),
                t.commit.as_deref(),
                t.agent_script.as_deref()
            ),
            (Some("main"), Some("abc123"), Some("echo hi"))
        );
        assert_eq!(
            (t.harness, t.approval, t.from),
            (
                Some(Harness::Claude),
                Some(Approval::ReadOnly),
                Some((first.id.clone(), 2))
            )
        );
        assert_eq!((t.attempt_total, t.summary), (3, None));
        assert_eq!(t.status, TaskStatus::Pending);
    }

    /// The leading attempt is the first ready one with a diff, else the first with one.
    #[tokio::test]
    async fn a_task_is_summed_up_by_its_leading_attempt() {
        let (_d, db) = db().await;
        let t = db
            .create_task(&NewTask {
                attempts: 3,
                ..new_task("web")
            })
            .await
            .unwrap();
        let outcome = |status, files_changed| AttemptOutcome {
            status,
            final_message: None,
            exit_code: None,
            error: None,
            summary: Some(DiffSummary {
                files_changed,
                lines_added: 10 * files_changed,
                lines_removed: 100 * files_changed,
            }),
            diff: None,
            result_tree: None,
        };
        db.finish_attempt(&t.id, 2, &outcome(AttemptStatus::Error, 2))
            .await
            .unwrap();
        assert_eq!(
            db.task("default", &t.id).await.unwrap().summary,
            outcome(AttemptStatus::Error, 2).summary
        );
        db.finish_attempt(&t.id, 3, &outcome(AttemptStatus::Ready, 3))
            .await
            .unwrap();
        assert_eq!(
            db.task("default", &t.id).await.unwrap().summary,
            outcome(AttemptStatus::Ready, 3).summary
        );
    }

    #[tokio::test]
    async fn unfinished_tasks_and_cancel_requests() {
        let (_d, db) = db().await;
        let older = db.create_task(&new_task("web")).await.unwrap();
        let newer = db
            .create_task(&NewTask {
                attempts: 1,
                ..new_task("web")
            })
            .await
            .unwrap();
        assert_eq!(
            db.unfinished_tasks().await.unwrap(),
            [older.id.clone(), newer.id.clone()]
        );
        db.start_attempt(&newer.id, 1).await.unwrap();
        assert_eq!(db.unfinished_tasks().await.unwrap().len(), 2);
        db.finish_attempt(
            &newer.id,
            1,
            &AttemptOutcome {
                status: AttemptStatus::Cancelled,
                final_message: None,
                exit_code: None,
                error: None,
                summary: None,
                diff: None,
                result_tree: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            db.unfinished_tasks().await.unwrap(),
            std::slice::from_ref(&older.id)
        );

        assert!(!db.cancel_requested(&older.id).await.unwrap());
        db.request_cancel(&older.id).await.unwrap();
        assert!(db.cancel_requested(&older.id).await.unwrap());
        assert!(!db.cancel_requested(&newer.id).await.unwrap());
        assert!(!db.cancel_requested(&TaskId::random()).await.unwrap());
    }
}
