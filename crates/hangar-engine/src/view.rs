//! A workspace's tasks as its view of the engine sees them. A task is reached only by a
//! lookup in the view's workspace ([`Engine::task`]), which hands out a [`Task`]; its
//! parts (attempts, logs, agent events, network log, diff, queue position, cancel) are
//! read through that handle, so no caller can reach another workspace's task by its id.

use hangar_spec::TaskId;
use hangar_store::db::{
    AttemptRecord, DbError, EventRow, LogLine, NetworkEntry, TaskPage, TaskQuery, TaskRecord,
};

use crate::{Engine, Result};

/// A task of one workspace, found there by [`Engine::task`] (or stored there by
/// [`Engine::submit`]). Only the engine makes one, so holding it means its workspace
/// was checked; each view still refuses a handle of another workspace.
#[derive(Debug, Clone)]
pub struct Task {
    record: TaskRecord,
}

impl Task {
    /// The handle of a task record the engine read or stored in its workspace.
    pub(crate) fn checked(record: TaskRecord) -> Task {
        Task { record }
    }

    pub fn id(&self) -> &TaskId {
        &self.record.id
    }

    /// The task as it was when this handle was made.
    pub fn record(&self) -> &TaskRecord {
        &self.record
    }
}

/// Which of a view's tasks to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this environment's.
    pub environment: Option<String>,
    /// Only the tasks with this status.
    pub status: Option<hangar_spec::TaskStatus>,
    /// At most this many (at least 1).
    pub limit: u32,
    /// From a previous page's [`TaskPage::cursor`].
    pub cursor: Option<String>,
}

impl Engine {
    /// A task of this view's workspace by its id or a unique prefix of it. Another
    /// workspace's task is not found, exactly as one that does not exist.
    pub async fn task(&self, id_or_prefix: &str) -> Result<Task> {
        let id = self.db.resolve_task(&self.workspace, id_or_prefix).await?;
        let record = self.db.task(&self.workspace, &id).await?;
        Ok(Task::checked(record))
    }

    /// The task again, as it is now.
    pub async fn refresh(&self, task: &Task) -> Result<Task> {
        let id = self.mine(task)?;
        Ok(Task::checked(self.db.task(&self.workspace, id).await?))
    }

    /// This workspace's tasks, newest first, a page at a time.
    pub async fn tasks(&self, filter: &TaskFilter) -> Result<TaskPage> {
        Ok(self
            .db
            .tasks(&TaskQuery {
                workspace: self.workspace.to_string(),
                environment: filter.environment.clone(),
                status: filter.status,
                limit: filter.limit,
                cursor: filter.cursor.clone(),
            })
            .await?)
    }

    /// The task's attempts, by index.
    pub async fn attempts(&self, task: &Task) -> Result<Vec<AttemptRecord>> {
        Ok(self.db.attempts(self.mine(task)?).await?)
    }

    /// The task's log lines (one attempt's, or all), in order.
    pub async fn logs(&self, task: &Task, only: Option<u32>) -> Result<Vec<LogLine>> {
        Ok(self.db.logs(self.mine(task)?, only).await?)
    }

    /// The agent's events (one attempt's, or all), in order.
    pub async fn events(&self, task: &Task, only: Option<u32>) -> Result<Vec<EventRow>> {
        Ok(self.db.events(self.mine(task)?, only).await?)
    }

    /// The proxy's decisions (one attempt's, or all), in time order.
    pub async fn network_log(&self, task: &Task, only: Option<u32>) -> Result<Vec<NetworkEntry>> {
        Ok(self.db.network_log(self.mine(task)?, only).await?)
    }

    /// An attempt's diff, as `git apply` reads it; `None` until it has one.
    pub async fn diff(&self, task: &Task, attempt: u32) -> Result<Option<Vec<u8>>> {
        Ok(self.db.diff(self.mine(task)?, attempt).await?)
    }

    /// The task's id, when the handle is of this view's workspace; a handle of another
    /// one answers as a task that does not exist.
    pub(crate) fn mine<'t>(&self, task: &'t Task) -> Result<&'t TaskId> {
        if task.record.workspace == self.workspace.as_str() {
            Ok(task.id())
        } else {
            Err(DbError::TaskNotFound(task.id().to_string()).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskRequest;

    /// An engine over a data dir of its own, with environment `e` in workspaces `a` and
    /// `b` and a task submitted in `a` (nothing runs: no root needed).
    async fn two_workspaces() -> (tempfile::TempDir, Engine, Task) {
        let dir = tempfile::tempdir().unwrap();
        let store = hangar_store::Store::open(dir.path().join("data")).unwrap();
        let engine = Engine::open(crate::EngineConfig::new(
            store,
            "/nonexistent/hangar-init".into(),
        ))
        .await
        .unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let source = format!(
            "name = \"e\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n[agent]\nscript = \"true\"\n",
            repo.display()
        );
        for ws in ["a", "b"] {
            engine
                .in_workspace(&ws.parse().unwrap())
                .create_env("e.toml", &source, &repo)
                .await
                .unwrap();
        }
        let a = engine.in_workspace(&"a".parse().unwrap());
        let stored = a
            .submit(&TaskRequest {
                environment: "e".into(),
                prompt: "p".into(),
                ..TaskRequest::default()
            })
            .await
            .unwrap();
        let task = a.task(&stored.id.as_str()[..6]).await.unwrap();
        assert_eq!(task.id(), &stored.id, "found by a prefix");
        (dir, engine, task)
    }

    async fn listed(view: &Engine) -> Vec<TaskId> {
        let filter = TaskFilter {
            limit: 10,
            ..TaskFilter::default()
        };
        let page = view.tasks(&filter).await.unwrap();
        page.tasks.into_iter().map(|t| t.id).collect()
    }

    fn not_found<T: std::fmt::Debug>(r: Result<T>, what: &str) {
        match r {
            Err(crate::EngineError::Db(DbError::TaskNotFound(_))) => {}
            other => panic!("{what}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn another_workspaces_task_is_not_found_nor_read_through_its_handle() {
        let (_dir, engine, task) = two_workspaces().await;
        let (a, b) = (
            engine.in_workspace(&"a".parse().unwrap()),
            engine.for_tenant(&"b".parse().unwrap()),
        );
        assert_eq!(a.attempts(&task).await.unwrap().len(), 1);
        assert_eq!(a.refresh(&task).await.unwrap().id(), task.id());
        let id = task.id().as_str();
        not_found(b.task(id).await, "lookup by id");
        not_found(b.task(&id[..4]).await, "lookup by prefix");
        not_found(engine.task(id).await, "the default workspace's lookup");
        // A handle made in A, handed to B's view by mistake.
        not_found(b.refresh(&task).await, "refresh");
        not_found(b.attempts(&task).await, "attempts");
        not_found(b.logs(&task, None).await, "logs");
        not_found(b.events(&task, Some(1)).await, "events");
        not_found(b.network_log(&task, None).await, "network log");
        not_found(b.diff(&task, 1).await, "diff");
        not_found(b.cancel(&task).await, "cancel");
        assert!(!engine.db.cancel_requested(task.id()).await.unwrap());
        assert_eq!(b.queue_position(&task), None, "queue position");
        assert_eq!(listed(&a).await, [task.id().clone()]);
        assert_eq!(listed(&b).await, []);
        a.cancel(&task).await.unwrap();
        assert!(engine.db.cancel_requested(task.id()).await.unwrap());
    }
}
