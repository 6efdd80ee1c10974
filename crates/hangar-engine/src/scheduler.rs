//! Which attempts run now and which wait: admission (by reserved memory and the
//! machine's load, see `admission.rs`), the fair queue of the attempts waiting, their
//! positions, and the locks of the tasks this engine runs.
//!
//! Workspace views of one engine share its admission, so a FIFO would let one
//! workspace's burst queue every other workspace's task behind all of its own. Waiters
//! are kept in one lane per workspace and admitted from the lanes in turn: a workspace
//! waits at most one turn per other waiting workspace. Within a lane, arrival order.
//!
//! A task's lock (`locks/task-<id>.lock`, a flock) is taken before the task is stored and
//! held until it has run, so recovery can tell a task whose process died (its lock is
//! free) from one that another live process runs.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_spec::TaskId;
use tokio::sync::{oneshot, watch};

use crate::admission::{Budget, LoadProbe};
use crate::error::{io_err, EngineError, Result};

/// The engine's part that decides when attempts run.
pub(crate) struct Scheduler {
    slots: Arc<Slots>,
    max_running: usize,
    /// Best-of-N's limit per task, at most `max_running`.
    max_attempts: u32,
    locks: TaskLocks,
}

impl Scheduler {
    /// Admission within `budget`; task locks under `locks_dir`.
    pub(crate) fn new(budget: Budget, max_attempts: u32, locks_dir: PathBuf) -> Scheduler {
        Scheduler {
            slots: Arc::new(Slots::new(budget)),
            max_running: budget.max_running,
            max_attempts,
            locks: TaskLocks {
                dir: locks_dir,
                held: Mutex::default(),
            },
        }
    }

    pub(crate) fn max_running(&self) -> usize {
        self.max_running
    }

    pub(crate) fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How many attempts are admitted.
    pub(crate) fn running(&self) -> usize {
        self.slots.running()
    }

    /// Where a task waits for a slot: 1 when its first waiting attempt is next. `None`
    /// when none of its attempts is waiting.
    pub(crate) fn position(&self, task: &TaskId) -> Option<usize> {
        self.slots.position(task)
    }

    /// Waits until one attempt reserving `reserve` bytes is admitted, in `workspace`'s
    /// turn, unless the task is cancelled meanwhile (then `None`: it goes on without
    /// one, to be marked cancelled).
    pub(crate) async fn take(
        &self,
        workspace: &str,
        task: &TaskId,
        index: u32,
        reserve: u64,
        cancel: watch::Receiver<bool>,
    ) -> Option<Slot> {
        self.slots
            .take(workspace, task, index, reserve, cancel)
            .await
    }

    /// Takes a new task's lock, before the task is stored; [`Scheduler::hold`] keeps it
    /// once it is.
    pub(crate) fn lock_task(&self, id: &TaskId) -> Result<TaskLock> {
        let path = self.locks.path(id);
        let file = hangar_store::lock::try_lock(&path)
            .map_err(io_err("lock", &path))?
            .ok_or_else(|| EngineError::TaskTaken(id.clone()))?;
        Ok(TaskLock {
            id: id.clone(),
            file,
        })
    }

    /// Keeps a stored task's lock until [`Scheduler::release`].
    pub(crate) fn hold(&self, lock: TaskLock) {
        self.locks.held().insert(lock.id, lock.file);
    }

    /// Lets go of a task this engine submitted, once it has run.
    pub(crate) fn release(&self, id: &TaskId) {
        if let Some(lock) = self.locks.held().remove(id) {
            let _ = std::fs::remove_file(self.locks.path(id));
            drop(lock);
        }
    }

    /// The lock of an unfinished task whose process died; `None` when a live process
    /// holds it (it runs the task).
    pub(crate) fn orphan(&self, id: &TaskId) -> Result<Option<Orphan>> {
        let path = self.locks.path(id);
        let file = hangar_store::lock::try_lock(&path).map_err(io_err("lock", &path))?;
        Ok(file.map(|file| Orphan { path, _file: file }))
    }
}

/// The task locks this engine holds.
struct TaskLocks {
    dir: PathBuf,
    /// Locks of the tasks this engine submitted and has not finished running.
    held: Mutex<HashMap<TaskId, std::fs::File>>,
}

impl TaskLocks {
    fn path(&self, id: &TaskId) -> PathBuf {
        self.dir.join(format!("task-{id}.lock"))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, std::fs::File>> {
        self.held.lock().expect("not poisoned")
    }
}

/// A new task's lock, taken before it is stored.
pub(crate) struct TaskLock {
    id: TaskId,
    file: std::fs::File,
}

/// A dead process's task lock, taken by recovery.
pub(crate) struct Orphan {
    path: PathBuf,
    _file: std::fs::File,
}

impl Orphan {
    /// The task is recovered: its lock file goes.
    pub(crate) fn release(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Waiters, one lane per workspace, served round-robin. Pure data, so its order is
/// tested as data.
#[derive(Debug)]
pub(crate) struct FairQueue<T> {
    /// Workspaces with waiters, the one served next first; each lane oldest first.
    lanes: VecDeque<(String, VecDeque<T>)>,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            lanes: VecDeque::new(),
        }
    }
}

impl<T> FairQueue<T> {
    /// Adds a waiter at the end of its workspace's lane; a new lane's turn comes after
    /// those already waiting.
    pub(crate) fn push(&mut self, workspace: &str, item: T) {
        match self.lanes.iter_mut().find(|(ws, _)| ws == workspace) {
            Some((_, lane)) => lane.push_back(item),
            None => self
                .lanes
                .push_back((workspace.to_string(), VecDeque::from([item]))),
        }
    }

    /// The next waiter to serve; its lane's next turn comes after every other lane's.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let (ws, mut lane) = self.lanes.pop_front()?;
        let item = lane.pop_front();
        if !lane.is_empty() {
            self.lanes.push_back((ws, lane));
        }
        item
    }

    /// The waiter [`FairQueue::pop`] would serve next.
    pub(crate) fn peek(&self) -> Option<&T> {
        self.lanes.front().and_then(|(_, lane)| lane.front())
    }

    /// Takes out the first waiter that `pred` picks.
    pub(crate) fn remove(&mut self, pred: impl Fn(&T) -> bool) -> Option<T> {
        let (l, i) = self
            .lanes
            .iter()
            .enumerate()
            .find_map(|(l, (_, lane))| lane.iter().position(&pred).map(|i| (l, i)))?;
        let item = self.lanes[l].1.remove(i);
        if self.lanes[l].1.is_empty() {
            self.lanes.remove(l);
        }
        item
    }

    /// Every waiter in the order they would be served if nobody else came.
    pub(crate) fn order(&self) -> Vec<&T> {
        let longest = self.lanes.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
        (0..longest)
            .flat_map(|round| self.lanes.iter().filter_map(move |(_, l)| l.get(round)))
            .collect()
    }
}

/// One waiting attempt.
struct Waiter {
    task: TaskId,
    index: u32,
    /// The memory it reserves once it runs.
    reserve: u64,
    /// Told when it is admitted; a send that fails means the waiter left.
    grant: oneshot::Sender<()>,
}

struct State {
    running: usize,
    reserved: u64,
    queue: FairQueue<Waiter>,
}

/// How often a waiter held back by the machine's load (not by a running attempt, whose
/// end would admit it) asks again.
const RECHECK: Duration = Duration::from_millis(200);

/// The engine's admission: the running attempts, what they reserve, and who waits. Its
/// lock is held only to count or move waiters, never across an await.
struct Slots {
    budget: Budget,
    probe: LoadProbe,
    state: Mutex<State>,
}

impl Slots {
    fn new(budget: Budget) -> Slots {
        Slots {
            budget,
            probe: LoadProbe::default(),
            state: Mutex::new(State {
                running: 0,
                reserved: 0,
                queue: FairQueue::default(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    fn running(&self) -> usize {
        self.state().running
    }

    fn position(&self, task: &TaskId) -> Option<usize> {
        let state = self.state();
        state
            .queue
            .order()
            .iter()
            .position(|w| &w.task == task)
            .map(|i| i + 1)
    }

    async fn take(
        self: &Arc<Self>,
        workspace: &str,
        task: &TaskId,
        index: u32,
        reserve: u64,
        mut cancel: watch::Receiver<bool>,
    ) -> Option<Slot> {
        let (grant, granted) = oneshot::channel();
        self.state().queue.push(
            workspace,
            Waiter {
                task: task.clone(),
                index,
                reserve,
                grant,
            },
        );
        // Admitted at once when nobody is ahead of it and it fits.
        self.admit();
        let mut wait = Leave {
            slots: self,
            task,
            index,
            reserve,
            granted,
            served: false,
        };
        let got = loop {
            tokio::select! {
                // An admission already made is taken even if the task was cancelled.
                biased;
                got = &mut wait.granted => break got.is_ok(),
                _ = cancel.wait_for(|c| *c) => break false,
                _ = tokio::time::sleep(RECHECK) => self.admit(),
            }
        };
        if !got {
            return None; // `wait` leaves the queue, giving back what it was granted
        }
        wait.served = true;
        Some(Slot {
            slots: self.clone(),
            reserve,
        })
    }

    /// Admits the waiters at the head of the queue that fit, in turn; the first that
    /// does not fit holds the rest back, so a big reservation is not starved by small
    /// ones behind it.
    fn admit(&self) {
        let load = self.probe.load();
        let mut state = self.state();
        while let Some(next) = state.queue.peek() {
            let reserve = next.reserve;
            if !self
                .budget
                .admits(state.running, state.reserved, reserve, || load)
            {
                return;
            }
            let w = state.queue.pop().expect("peeked");
            if w.grant.send(()).is_ok() {
                state.running += 1;
                state.reserved += w.reserve;
            }
        }
    }

    /// An attempt's end: what it reserved is free for the next waiters.
    fn release(&self, reserve: u64) {
        {
            let mut state = self.state();
            state.running -= 1;
            state.reserved -= reserve;
        }
        self.admit();
    }
}

/// A waiter that stops waiting (cancelled, or its future dropped): out of the queue,
/// and what it was granted meanwhile goes on to the next.
struct Leave<'a> {
    slots: &'a Slots,
    task: &'a TaskId,
    index: u32,
    reserve: u64,
    granted: oneshot::Receiver<()>,
    /// The grant was received: nothing to undo.
    served: bool,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        let removed = self
            .slots
            .state()
            .queue
            .remove(|w| &w.task == self.task && w.index == self.index)
            .is_some();
        if !removed && self.granted.try_recv().is_ok() {
            self.slots.release(self.reserve);
        }
    }
}

/// A running attempt's admission; given back on drop.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    reserve: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.reserve);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `(workspace, item)` in order, then checks the order of service both as
    /// [`FairQueue::order`] predicts it and as [`FairQueue::pop`] gives it.
    fn check(arrivals: &[(&str, &str)], expected: &[&str]) {
        let mut q = FairQueue::default();
        for (ws, item) in arrivals {
            q.push(ws, item.to_string());
        }
        let predicted: Vec<&str> = q.order().into_iter().map(String::as_str).collect();
        assert_eq!(predicted, expected, "predicted order for {arrivals:?}");
        let served: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(served, expected, "served order for {arrivals:?}");
    }

    #[test]
    fn a_burst_of_one_workspace_does_not_queue_another_behind_it() {
        check(
            &[
                ("a", "a1"),
                ("a", "a2"),
                ("a", "a3"),
                ("a", "a4"),
                ("a", "a5"),
                ("b", "b1"),
            ],
            &["a1", "b1", "a2", "a3", "a4", "a5"],
        );
        check(
            &[
                ("a", "a1"),
                ("b", "b1"),
                ("a", "a2"),
                ("c", "c1"),
                ("b", "b2"),
            ],
            &["a1", "b1", "c1", "a2", "b2"],
        );
        check(&[("a", "a1"), ("a", "a2")], &["a1", "a2"]);
        check(&[], &[]);
    }

    #[test]
    fn a_removed_waiter_leaves_its_lane_and_an_empty_lane_goes() {
        let mut q = FairQueue::default();
        for (ws, item) in [("a", "a1"), ("b", "b1"), ("a", "a2")] {
            q.push(ws, item);
        }
        assert_eq!(q.remove(|i| *i == "b1"), Some("b1"));
        assert_eq!(q.remove(|i| *i == "b1"), None);
        assert_eq!(q.order(), vec![&"a1", &"a2"]);
        q.push("b", "b2");
        assert_eq!(q.order(), vec![&"a1", &"b2", &"a2"]);
    }

    fn task(n: u8) -> TaskId {
        format!("{n:012x}").parse().unwrap()
    }

    #[test]
    fn a_task_lock_is_one_holders_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let scheduler = Scheduler::new(slots(1, 1), 1, dir.path().join("locks"));
        let other = Scheduler::new(slots(1, 1), 1, dir.path().join("locks"));
        let lock = scheduler.lock_task(&task(1)).unwrap();
        assert!(matches!(
            other.lock_task(&task(1)),
            Err(EngineError::TaskTaken(id)) if id == task(1)
        ));
        scheduler.hold(lock);
        assert!(other.orphan(&task(1)).unwrap().is_none(), "a live holder");
        scheduler.release(&task(1));
        let orphan = other.orphan(&task(1)).unwrap().expect("nobody holds it");
        orphan.release();
        assert!(!dir
            .path()
            .join("locks")
            .join(format!("task-{}.lock", task(1)))
            .exists());
    }

    /// `n` attempts at once, each reservation of 1 within a memory budget of `memory`;
    /// the load never asked (every attempt within the CPU slots).
    fn slots(n: usize, memory: u64) -> Budget {
        Budget {
            max_running: n,
            memory,
            cpu_slots: n,
            headroom: 0,
        }
    }

    #[tokio::test]
    async fn slots_are_handed_round_robin_and_a_cancelled_waiter_passes_its_turn() {
        let slots = Arc::new(Slots::new(slots(1, 1)));
        let (_keep, never) = watch::channel(false);
        let first = slots
            .take("a", &task(0), 0, 1, never.clone())
            .await
            .unwrap();
        let mut waiting = Vec::new();
        let (served_tx, mut served) = tokio::sync::mpsc::unbounded_channel();
        let (cancel_tx, cancel) = watch::channel(false);
        for (ws, n, rx) in [
            ("a", 1, never.clone()),
            ("a", 2, never.clone()),
            ("b", 3, cancel),
            ("c", 4, never.clone()),
        ] {
            let (mine, tx) = (slots.clone(), served_tx.clone());
            waiting.push(tokio::spawn(async move {
                let slot = mine.take(ws, &task(n), 0, 1, rx).await;
                let _ = tx.send((n, slot.is_some()));
                // Held until the test's next step lets it go.
                tokio::task::yield_now().await;
                drop(slot);
            }));
            // Each waiter is queued before the next arrives.
            while slots.position(&task(n)).is_none() {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(slots.position(&task(1)), Some(1));
        assert_eq!(slots.position(&task(3)), Some(2));
        assert_eq!(slots.position(&task(4)), Some(3));
        assert_eq!(slots.position(&task(2)), Some(4));
        cancel_tx.send(true).unwrap();
        assert_eq!(served.recv().await, Some((3, false)));
        assert_eq!(slots.position(&task(3)), None);
        drop(first);
        let order: Vec<_> = [
            served.recv().await,
            served.recv().await,
            served.recv().await,
        ]
        .into_iter()
        .map(|s| s.unwrap())
        .collect();
        assert_eq!(order, [(1, true), (4, true), (2, true)]);
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(slots.running(), 0);
        assert_eq!(slots.state().reserved, 0);
    }

    #[tokio::test]
    async fn reservations_admit_while_they_fit_and_a_big_one_is_not_passed() {
        let slots = Arc::new(Slots::new(slots(10, 4)));
        let (_keep, never) = watch::channel(false);
        let a = slots
            .take("a", &task(0), 0, 2, never.clone())
            .await
            .unwrap();
        let b = slots
            .take("a", &task(1), 0, 1, never.clone())
            .await
            .unwrap();
        assert_eq!((slots.running(), slots.state().reserved), (2, 3));
        // 3 reserved of 4: a reservation of 3 waits, and a small one behind it too.
        let (served_tx, mut served) = tokio::sync::mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for (n, reserve) in [(2, 3), (3, 1)] {
            let (mine, tx, rx) = (slots.clone(), served_tx.clone(), never.clone());
            waiting.push(tokio::spawn(async move {
                let slot = mine.take("b", &task(n), 0, reserve, rx).await.unwrap();
                tx.send(n).unwrap();
                slot
            }));
            while slots.position(&task(n)).is_none() {
                tokio::task::yield_now().await;
            }
        }
        drop(b);
        assert_eq!(slots.position(&task(2)), Some(1), "2 free: still too small");
        assert_eq!(
            slots.position(&task(3)),
            Some(2),
            "the small one waits its turn"
        );
        drop(a);
        assert_eq!(served.recv().await, Some(2));
        assert_eq!(served.recv().await, Some(3));
        let held: Vec<Slot> = futures_join(waiting).await;
        assert_eq!((slots.running(), slots.state().reserved), (2, 4));
        drop(held);
        assert_eq!((slots.running(), slots.state().reserved), (0, 0));
    }

    async fn futures_join(handles: Vec<tokio::task::JoinHandle<Slot>>) -> Vec<Slot> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
