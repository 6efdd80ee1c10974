//! The forge's tables: `pull_requests` (the branch pushed for an attempt and the pull
//! request opened from it), `forge_deliveries` (webhook delivery ids already heard) and
//! `forge_triggers` (what a task started from a webhook owes the forge when it ends).

use hangar_spec::TaskId;

use super::{corrupt, int, query, Db, DbResult};

/// A branch pushed for an attempt, and its pull request once one is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRecord {
    pub task: TaskId,
    pub attempt: u32,
    pub branch: String,
    pub base: String,
    pub commit: String,
    /// `None`: pushed, and no pull request (not yet opened, or no forge).
    pub number: Option<u64>,
    pub url: Option<String>,
    pub created_ms: i64,
}

#[derive(sqlx::FromRow)]
struct PullColumns {
    task_id: String,
    attempt: i64,
    branch: String,
    base: String,
    commit_id: String,
    number: Option<i64>,
    url: Option<String>,
    created_ms: i64,
}

impl TryFrom<PullColumns> for PullRecord {
    type Error = super::DbError;

    fn try_from(c: PullColumns) -> DbResult<PullRecord> {
        Ok(PullRecord {
            task: c
                .task_id
                .parse()
                .map_err(|e| corrupt("pull request")(format!("{e}")))?,
            attempt: int("pull request attempt", c.attempt)?,
            branch: c.branch,
            base: c.base,
            commit: c.commit_id,
            number: c
                .number
                .map(|n| int("pull request number", n))
                .transpose()?,
            url: c.url,
            created_ms: c.created_ms,
        })
    }
}

/// What a task started from the forge owes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRecord {
    pub task: TaskId,
    /// `mention`, `review` or `autofix`.
    pub kind: String,
    /// `owner/name`.
    pub repository: String,
    /// The issue or pull request to answer on (none for an autofix).
    pub number: Option<u64>,
    /// Where a pull request of the task's change goes.
    pub base: String,
    pub answered_ms: Option<i64>,
    /// Why answering the forge failed, if it did.
    pub error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TriggerColumns {
    task_id: String,
    kind: String,
    repository: String,
    number: Option<i64>,
    base: String,
    answered_ms: Option<i64>,
    error: Option<String>,
}

impl TryFrom<TriggerColumns> for TriggerRecord {
    type Error = super::DbError;

    fn try_from(c: TriggerColumns) -> DbResult<TriggerRecord> {
        Ok(TriggerRecord {
            task: c
                .task_id
                .parse()
                .map_err(|e| corrupt("forge trigger")(format!("{e}")))?,
            kind: c.kind,
            repository: c.repository,
            number: c
                .number
                .map(|n| int("forge trigger number", n))
                .transpose()?,
            base: c.base,
            answered_ms: c.answered_ms,
            error: c.error,
        })
    }
}

const PULL_COLUMNS: &str = "task_id, attempt, branch, base, commit_id, number, url, created_ms";

impl Db {
    /// Records the branch pushed for an attempt; the first record stands (a second push
    /// of the same attempt finds it instead).
    pub async fn record_push(&self, p: &PullRecord) -> DbResult<PullRecord> {
        sqlx::query(
            "INSERT INTO pull_requests (task_id, attempt, branch, base, commit_id, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (task_id, attempt) DO NOTHING",
        )
        .bind(p.task.as_str())
        .bind(i64::from(p.attempt))
        .bind(&p.branch)
        .bind(&p.base)
        .bind(&p.commit)
        .bind(p.created_ms)
        .execute(&self.pool)
        .await
        .map_err(query("record the pushed branch"))?;
        self.pull_request(&p.task, p.attempt)
            .await?
            .ok_or_else(|| corrupt("pull request")("the record just stored is gone".into()))
    }

    /// Records the pull request opened from an attempt's branch.
    pub async fn record_pull(
        &self,
        task: &TaskId,
        attempt: u32,
        number: u64,
        url: &str,
    ) -> DbResult<()> {
        let number = i64::try_from(number)
            .map_err(|_| corrupt("pull request number")(format!("{number} is out of range")))?;
        sqlx::query(
            "UPDATE pull_requests SET number = $1, url = $2 WHERE task_id = $3 AND attempt = $4",
        )
        .bind(number)
        .bind(url)
        .bind(task.as_str())
        .bind(i64::from(attempt))
        .execute(&self.pool)
        .await
        .map_err(query("record the pull request"))?;
        Ok(())
    }

    pub async fn pull_request(&self, task: &TaskId, attempt: u32) -> DbResult<Option<PullRecord>> {
        let row: Option<PullColumns> = sqlx::query_as(&format!(
            "SELECT {PULL_COLUMNS} FROM pull_requests WHERE task_id = $1 AND attempt = $2"
        ))
        .bind(task.as_str())
        .bind(i64::from(attempt))
        .fetch_optional(&self.pool)
        .await
        .map_err(query("read the pull request"))?;
        row.map(PullRecord::try_from).transpose()
    }

    /// A task's pushed branches and pull requests, by attempt.
    pub async fn pull_requests(&self, task: &TaskId) -> DbResult<Vec<PullRecord>> {
        let rows: Vec<PullColumns> = sqlx::query_as(&format!(
            "SELECT {PULL_COLUMNS} FROM pull_requests WHERE task_id = $1 ORDER BY attempt"
        ))
        .bind(task.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(query("list the pull requests"))?;
        rows.into_iter().map(PullRecord::try_from).collect()
    }

    /// Notes a webhook delivery; `false` when its id was heard before.
    pub async fn record_delivery(&self, id: &str, event: &str, now_ms: i64) -> DbResult<bool> {
        let n = sqlx::query(
            "INSERT INTO forge_deliveries (id, event, received_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(event)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(query("record the webhook delivery"))?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn create_trigger(&self, t: &TriggerRecord) -> DbResult<()> {
        let number = t
            .number
            .map(|n| {
                i64::try_from(n)
                    .map_err(|_| corrupt("forge trigger")(format!("{n} is out of range")))
            })
            .transpose()?;
        sqlx::query(
            "INSERT INTO forge_triggers (task_id, kind, repository, number, base) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(t.task.as_str())
        .bind(&t.kind)
        .bind(&t.repository)
        .bind(number)
        .bind(&t.base)
        .execute(&self.pool)
        .await
        .map_err(query("record what the task owes the forge"))?;
        Ok(())
    }

    pub async fn trigger(&self, task: &TaskId) -> DbResult<Option<TriggerRecord>> {
        let row: Option<TriggerColumns> = sqlx::query_as(
            "SELECT task_id, kind, repository, number, base, answered_ms, error FROM forge_triggers \
             WHERE task_id = $1",
        )
        .bind(task.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(query("read what the task owes the forge"))?;
        row.map(TriggerRecord::try_from).transpose()
    }

    /// Marks a trigger answered; `false` when it already was (so two answers never go).
    pub async fn answer_trigger(&self, task: &TaskId, now_ms: i64) -> DbResult<bool> {
        let n = sqlx::query(
            "UPDATE forge_triggers SET answered_ms = $1 WHERE task_id = $2 AND answered_ms IS NULL",
        )
        .bind(now_ms)
        .bind(task.as_str())
        .execute(&self.pool)
        .await
        .map_err(query("mark the forge answered"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Notes why answering the forge failed.
    pub async fn trigger_failed(&self, task: &TaskId, error: &str) -> DbResult<()> {
        sqlx::query("UPDATE forge_triggers SET error = $1 WHERE task_id = $2")
            .bind(error)
            .bind(task.as_str())
            .execute(&self.pool)
            .await
            .map_err(query("note why the forge was not answered"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::db::testing::{db, new_task, web_env};
    use crate::db::{PullRecord, TriggerRecord};

    #[tokio::test]
    async fn an_attempts_first_push_stands_and_gains_its_pull_request() {
        let (_d, db) = db().await;
        db.create_env(&web_env()).await.unwrap();
        let task = db.create_task(&new_task("web")).await.unwrap();
        let push = |branch: &str, commit: &str| PullRecord {
            task: task.id.clone(),
            attempt: 1,
            branch: branch.into(),
            base: "main".into(),
            commit: commit.into(),
            number: None,
            url: None,
            created_ms: 5,
        };
        assert_eq!(db.pull_request(&task.id, 1).await.unwrap(), None);
        assert_eq!(
            db.record_push(&push("hangar/a", "c1")).await.unwrap(),
            push("hangar/a", "c1")
        );
        // A second push of the same attempt finds the first.
        assert_eq!(
            db.record_push(&push("hangar/b", "c2")).await.unwrap(),
            push("hangar/a", "c1")
        );
        db.record_pull(&task.id, 1, 17, "https://forge/o/r/pull/17")
            .await
            .unwrap();
        let got = db.pull_request(&task.id, 1).await.unwrap().unwrap();
        assert_eq!(
            (got.number, got.url.as_deref()),
            (Some(17), Some("https://forge/o/r/pull/17"))
        );
        assert_eq!(db.pull_requests(&task.id).await.unwrap(), [got]);
    }

    #[tokio::test]
    async fn a_delivery_is_heard_once_and_a_trigger_answered_once() {
        let (_d, db) = db().await;
        assert!(db.record_delivery("d-1", "issue_comment", 1).await.unwrap());
        assert!(!db.record_delivery("d-1", "issue_comment", 2).await.unwrap());
        assert!(db.record_delivery("d-2", "issue_comment", 3).await.unwrap());

        db.create_env(&web_env()).await.unwrap();
        let task = db.create_task(&new_task("web")).await.unwrap();
        let t = TriggerRecord {
            task: task.id.clone(),
            kind: "mention".into(),
            repository: "o/r".into(),
            number: Some(3),
            base: "main".into(),
            answered_ms: None,
            error: None,
        };
        db.create_trigger(&t).await.unwrap();
        assert_eq!(db.trigger(&task.id).await.unwrap(), Some(t.clone()));
        assert!(db.answer_trigger(&task.id, 9).await.unwrap());
        assert!(!db.answer_trigger(&task.id, 10).await.unwrap());
        assert_eq!(
            db.trigger(&task.id).await.unwrap().unwrap().answered_ms,
            Some(9)
        );
    }
}
