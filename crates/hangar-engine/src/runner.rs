//! Tasks run in the background of a long-lived process (the daemon): accepted, run up to
//! the engine's limit of attempts at once, followed live, and stopped on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use hangar_spec::{TaskId, TaskStatus};
use hangar_store::db::{LogLine, TriggerRecord};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::{Engine, Event, Progress, Result, Task, TaskRequest};

/// How many events a follower may fall behind before it misses some (it is then told).
const FOLLOW_BACKLOG: usize = 4096;

/// What a follower of a task is told, in order: what the task did so far, each new
/// event, and how it ended.
#[derive(Debug, Clone)]
pub enum Followed {
    /// Something the task did; of a task not running here, a stored log line.
    Event(Event),
    /// The follower fell this many events behind and missed them (the store has them).
    Missed { count: u64 },
    /// The task has finished (or runs elsewhere); nothing follows.
    End { status: TaskStatus },
}

/// Where a follower is.
enum Following {
    /// A task running here: its events so far, then the channel of new ones.
    Live {
        so_far: std::vec::IntoIter<Event>,
        next: broadcast::Receiver<Event>,
    },
    /// A task not running here: its stored lines are read next.
    Stored,
    Lines(std::vec::IntoIter<LogLine>),
    /// Its status is read from the store next.
    End,
    Done,
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
    pub async fn accept(self: &Arc<Self>, engine: Engine, req: &TaskRequest) -> Result<Task> {
        self.start(engine, req, None::<fn(&TaskId) -> TriggerRecord>)
            .await
    }

    /// As [`Runner::accept`], with what the task owes the forge stored before it runs, so
    /// the answer goes however quickly it ends.
    pub(crate) async fn accept_owing(
        self: &Arc<Self>,
        engine: Engine,
        req: &TaskRequest,
        owes: impl FnOnce(&TaskId) -> TriggerRecord,
    ) -> Result<Task> {
        self.start(engine, req, Some(owes)).await
    }

    async fn start(
        self: &Arc<Self>,
        engine: Engine,
        req: &TaskRequest,
        owes: Option<impl FnOnce(&TaskId) -> TriggerRecord>,
    ) -> Result<Task> {
        let task = Task::checked(engine.submit(req).await?);
        let id = task.id().clone();
        let owing = owes.is_some();
        if let Some(owes) = owes {
            if let Err(e) = engine.db.create_trigger(&owes(&id)).await {
                let reason = format!("failed to note what the task owes the forge: {e}");
                engine.fail_unfinished(&id, &reason).await?;
                return Err(e.into());
            }
        }
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
            if owing {
                if let Err(e) = engine.answer_forge(&id).await {
                    tracing::warn!("task {id}: failed to answer the forge: {e}");
                }
            }
        });
        Ok(task)
    }

    /// Runs forge work that a webhook's answer does not wait for, beside the tasks (so
    /// shutdown waits for it too), logging how it failed.
    pub(crate) fn spawn_forge_work(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = Result<()>> + Send + 'static,
    ) {
        self.tasks.lock().expect("not poisoned").spawn(async move {
            if let Err(e) = work.await {
                tracing::warn!("webhook: failed to {what}: {e}");
            }
        });
    }

    fn publish(&self, id: &TaskId, e: &Event) {
        let mut live = self.live.lock().expect("not poisoned");
        if let Some(l) = live.get_mut(id) {
            l.history.push(e.clone());
            let _ = l.tx.send(e.clone());
        }
    }

    /// Follows a task of `engine`'s view (attempt `only`'s events, or all): while this
    /// runner runs it, what it did so far and then each new event; once it has finished,
    /// or when another process runs it, its stored log lines; then how it ended.
    pub fn follow(
        &self,
        engine: Engine,
        task: Task,
        only: Option<u32>,
    ) -> impl Stream<Item = Followed> + Send + 'static {
        let start = match self.live.lock().expect("not poisoned").get(task.id()) {
            Some(l) => Following::Live {
                so_far: l.history.clone().into_iter(),
                next: l.tx.subscribe(),
            },
            None => Following::Stored,
        };
        let follower = Arc::new((engine, task));
        futures_util::stream::unfold(start, move |state| {
            let follower = Arc::clone(&follower);
            async move { next_followed(state, &follower.0, &follower.1, only).await }
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

/// Whether a follower of attempt `only` (or of all) is told `e`.
fn keeps(only: Option<u32>, e: &Event) -> bool {
    match (only, e) {
        (None, _) => true,
        (Some(n), Event::PhaseStarted { attempt, .. } | Event::PhaseFinished { attempt, .. }) => {
            *attempt == n
        }
        (Some(n), Event::Line(l)) => l.attempt == n,
    }
}

/// The next thing a follower is told, and where it is then; `None` at the end. What the
/// store cannot tell (its lines, the final status) is left out, as for a task gone.
async fn next_followed(
    mut state: Following,
    engine: &Engine,
    task: &Task,
    only: Option<u32>,
) -> Option<(Followed, Following)> {
    loop {
        state = match state {
            Following::Live {
                mut so_far,
                mut next,
            } => {
                let e = match so_far.next() {
                    Some(e) => e,
                    None => match next.recv().await {
                        Ok(e) => e,
                        Err(RecvError::Lagged(count)) => {
                            return Some((
                                Followed::Missed { count },
                                Following::Live { so_far, next },
                            ))
                        }
                        Err(RecvError::Closed) => {
                            state = Following::End;
                            continue;
                        }
                    },
                };
                let state = Following::Live { so_far, next };
                if keeps(only, &e) {
                    return Some((Followed::Event(e), state));
                }
                state
            }
            Following::Stored => match engine.logs(task, only).await {
                Ok(lines) => Following::Lines(lines.into_iter()),
                Err(_) => Following::End,
            },
            Following::Lines(mut lines) => match lines.next() {
                Some(l) => return Some((Followed::Event(Event::Line(l)), Following::Lines(lines))),
                None => Following::End,
            },
            Following::End => {
                let status = engine.refresh(task).await.ok()?.record().status;
                return Some((Followed::End { status }, Following::Done));
            }
            Following::Done => return None,
        }
    }
}
