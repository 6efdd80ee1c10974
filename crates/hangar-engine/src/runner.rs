//! Tasks run in the background of a long-lived process (the daemon): accepted, run up to
//! the engine's limit of attempts at once, followed live, and stopped on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hangar_spec::TaskId;
use hangar_store::db::TaskRecord;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::{Engine, Event, Progress, Result, TaskRequest};

/// How many events a follower may fall behind before it misses some (it is then told).
const FOLLOW_BACKLOG: usize = 4096;

/// What a follower of a running task gets: everything so far, then what comes.
pub struct Following {
    pub so_far: Vec<Event>,
    pub next: broadcast::Receiver<Event>,
}

/// The live part of a running task: its events so far and the channel of new ones. The
/// lock is held only to push or copy, never across an await.
struct Live {
    history: Vec<Event>,
    tx: broadcast::Sender<Event>,
}

/// Runs accepted tasks in the background.
pub struct Runner {
    engine: Arc<Engine>,
    live: Mutex<HashMap<TaskId, Live>>,
    tasks: Mutex<JoinSet<()>>,
    stop: watch::Sender<bool>,
}

impl Runner {
    pub fn new(engine: Arc<Engine>) -> Arc<Runner> {
        Arc::new(Runner {
            engine,
            live: Mutex::default(),
            tasks: Mutex::default(),
            stop: watch::channel(false).0,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stores the task through `engine` (the caller's view of this runner's engine: its
    /// workspace and principal), starts it in the background and returns it as accepted.
    pub async fn accept(self: &Arc<Self>, engine: Engine, req: &TaskRequest) -> Result<TaskRecord> {
        let task = engine.submit(req).await?;
        let id = task.id.clone();
        self.live.lock().expect("not poisoned").insert(
            id.clone(),
            Live {
                history: Vec::new(),
                tx: broadcast::channel(FOLLOW_BACKLOG).0,
            },
        );
        let runner = Arc::clone(self);
        let progress: Progress = {
            let (runner, id) = (Arc::clone(self), id.clone());
            Arc::new(move |e: &Event| runner.publish(&id, e))
        };
        let stop = self.stop.subscribe();
        self.tasks.lock().expect("not poisoned").spawn(async move {
            if let Err(e) = engine.run_task(&id, progress, stop).await {
                tracing::warn!("task {id} failed outside its attempts: {e}");
                let reason = format!("failed to run the task: {e}");
                if let Err(e) = engine.fail_unfinished(&id, &reason).await {
                    tracing::warn!("task {id} could not be marked failed: {e}");
                }
            }
            // Dropping the sender ends every follower's stream.
            runner.live.lock().expect("not poisoned").remove(&id);
        });
        Ok(task)
    }

    fn publish(&self, id: &TaskId, e: &Event) {
        let mut live = self.live.lock().expect("not poisoned");
        if let Some(l) = live.get_mut(id) {
            l.history.push(e.clone());
            let _ = l.tx.send(e.clone());
        }
    }

    /// Follows a task this runner is running; `None` once it has finished (read the
    /// store then).
    pub fn follow(&self, id: &TaskId) -> Option<Following> {
        let live = self.live.lock().expect("not poisoned");
        live.get(id).map(|l| Following {
            so_far: l.history.clone(),
            next: l.tx.subscribe(),
        })
    }

    /// How many tasks run or wait here.
    pub fn active(&self) -> usize {
        self.live.lock().expect("not poisoned").len()
    }

    /// Cancels every running task and waits until each has stopped and torn down.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.drain().await;
    }

    /// Waits until every accepted task has finished.
    pub async fn drain(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("not poisoned"));
        while tasks.join_next().await.is_some() {}
        self.engine.settle().await;
    }
}
