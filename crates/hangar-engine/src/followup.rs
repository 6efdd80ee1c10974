//! Follow-ups: a finished attempt's layer (everything it wrote, hangar's own files taken
//! out) is kept until the environment's cache TTL, and a later task given `from` starts
//! from it instead of the environment's snapshot, so its agent continues where the first
//! one stopped. Keeping is a rename, like a snapshot's; the kept layer's directory, record,
//! leases and collection are `layers.rs`'s.

use hangar_sandbox::Sandbox;
use hangar_spec::TaskId;
use hangar_store::db::TaskRecord;

use crate::error::Unfollowable;
use crate::layers::KeptMeta;
use crate::{Engine, Result};

/// A follow-up attempt's starting point.
pub(crate) struct FollowUp {
    pub name: String,
    pub meta: KeptMeta,
}

impl FollowUp {
    /// The layer names this one stands on, itself first.
    pub fn chain(&self) -> Vec<String> {
        let mut chain = vec![self.name.clone()];
        chain.extend(self.meta.below.iter().cloned());
        chain
    }
}

/// The name of an attempt's kept layer.
pub(crate) fn kept_name(task: &TaskId, index: u32) -> String {
    format!("{task}-{index}")
}

/// What a finished attempt's layer is kept with.
pub(crate) struct Keep<'a> {
    pub name: String,
    pub snapshot: &'a str,
    pub base_commit: String,
    pub below: Vec<String>,
    pub layers: Vec<&'a str>,
    pub ttl_ms: i64,
}

impl Engine {
    /// A kept layer's record, unless it is gone or expired.
    pub(crate) fn kept(&self, name: &str) -> Option<FollowUp> {
        let meta = self.layers.kept(name, self.now())?;
        Some(FollowUp {
            name: name.to_string(),
            meta,
        })
    }

    /// `TASK[:ATTEMPT]` in this workspace: the task and attempt a follow-up starts from
    /// (without an attempt: the best ready one, else the first), whose layer is kept.
    pub(crate) async fn follow_up_source(&self, spec: &str) -> Result<(TaskRecord, u32)> {
        let (task, attempt) = match spec.split_once(':') {
            Some((t, a)) => {
                let n = a
                    .parse()
                    .map_err(|_| Unfollowable::Spec(spec.to_string()))?;
                (t, Some(n))
            }
            None => (spec, None),
        };
        let id = self.db.resolve_task(&self.workspace, task).await?;
        let rec = self.db.task(&self.workspace, &id).await?;
        let attempts = self.db.attempts(&id).await?;
        let index = match attempt {
            Some(n) => n,
            None => crate::best::default_attempt(&attempts).unwrap_or(1),
        };
        let Some(a) = attempts.iter().find(|a| a.index == index) else {
            return Err(Unfollowable::NoAttempt {
                task: id,
                index,
                count: attempts.len(),
            }
            .into());
        };
        if !matches!(
            a.status,
            hangar_spec::AttemptStatus::Ready | hangar_spec::AttemptStatus::Error
        ) {
            return Err(Unfollowable::Unfinished {
                task: id,
                index,
                status: a.status,
            }
            .into());
        }
        if self.kept(&kept_name(&id, index)).is_none() {
            return Err(Unfollowable::NotKept { task: id, index }.into());
        }
        Ok((rec, index))
    }

    /// Keeps a finished attempt's upper directory as a layer (hangar's own files taken
    /// out first); on any failure the sandbox is still torn down.
    pub(crate) async fn keep_attempt(&self, sandbox: Sandbox, keep: Keep<'_>) -> Result<()> {
        if let Err(e) = self.strip_hangar_files(&sandbox).await {
            let _ = sandbox.destroy().await;
            return Err(e);
        }
        self.layers.keep(sandbox, keep, self.now()).await
    }
}
