//! Follow-ups: a finished attempt's layer (everything it wrote, hangar's own files taken
//! out) is kept until the environment's cache TTL, and a later task given `from` starts
//! from it instead of the environment's snapshot, so its agent continues where the first
//! one stopped. Keeping is a rename, like a snapshot's.

use std::path::PathBuf;

use hangar_sandbox::Sandbox;
use hangar_spec::TaskId;
use hangar_store::db::TaskRecord;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Unfollowable};
use crate::{Engine, EngineError, Result};

const META: &str = "meta.json";

/// A kept layer without its record this old was left by a crash while it was kept.
const ABANDONED: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a kept layer sits on, and until when it is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeptMeta {
    /// The environment snapshot at the bottom of the stack.
    pub snapshot: String,
    /// The commit the attempt's diff is against (a follow-up's diff is against it too).
    pub base_commit: String,
    pub expires_ms: i64,
    /// Kept layers below this one (a follow-up of a follow-up), nearest first.
    pub below: Vec<String>,
}

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

/// The record in a kept layer's directory, if it has a readable one.
fn read_meta(dir: &std::path::Path) -> Option<KeptMeta> {
    let text = std::fs::read(dir.join(META)).ok()?;
    serde_json::from_slice(&text).ok()
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
    pub(crate) fn kept_path(&self, name: &str) -> PathBuf {
        self.store.kept_dir().join(name)
    }

    /// A kept layer's record, unless it is gone or expired.
    pub(crate) fn kept(&self, name: &str) -> Option<FollowUp> {
        let meta = read_meta(&self.kept_path(name))?;
        (meta.expires_ms > self.now()).then(|| FollowUp {
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
        let dir = self.kept_path(&keep.name);
        if let Err(e) = self.strip_hangar_files(&sandbox).await {
            let _ = sandbox.destroy().await;
            return Err(e);
        }
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        if let Err(e) = sandbox.destroy_keeping_upper(dir.join("upper")).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        let meta = KeptMeta {
            snapshot: keep.snapshot.to_string(),
            base_commit: keep.base_commit,
            expires_ms: self.now() + keep.ttl_ms,
            below: keep.below,
        };
        let below: Vec<&str> = meta.below.iter().map(String::as_str).collect();
        let written = hangar_store::lease(&dir, "snapshot", &[keep.snapshot])
            .and_then(|()| hangar_store::lease(&dir, "kept", &below))
            .and_then(|()| hangar_store::lease(&dir, "layers", &keep.layers));
        let meta_path = dir.join(META);
        let written = written.map_err(EngineError::from).and_then(|()| {
            std::fs::write(
                &meta_path,
                serde_json::to_vec(&meta).expect("meta serializes"),
            )
            .map_err(io_err("write", &meta_path))
        });
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        written
    }

    /// Removes kept layers that have expired and that no follow-up (running, or kept
    /// above them) stands on; how many. A chain goes from the top down, a round each.
    pub(crate) fn collect_kept(&self) -> u32 {
        let mut removed = 0;
        loop {
            let round = self.collect_kept_once();
            if round == 0 {
                return removed;
            }
            removed += round;
        }
    }

    /// Removes the kept layers standing on snapshot `key`, which is being collected
    /// (no running sandbox uses it, so none uses them); how many.
    pub(crate) fn drop_kept_on(&self, key: &str) -> u32 {
        let Ok(entries) = std::fs::read_dir(self.store.kept_dir()) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            if read_meta(&e.path()).is_some_and(|m| m.snapshot == key)
                && std::fs::remove_dir_all(e.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    fn collect_kept_once(&self) -> u32 {
        let leased = self.store.leased("kept");
        let Ok(entries) = std::fs::read_dir(self.store.kept_dir()) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let has_meta = e.path().join(META).exists();
            // Without its record it is being kept right now, or a crash interrupted
            // that long ago.
            let abandoned = !has_meta
                && e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > ABANDONED);
            let expired = has_meta && self.kept(&name).is_none();
            if leased.contains(&name) || !(expired || abandoned) {
                continue;
            }
            if std::fs::remove_dir_all(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A kept layer named `name`, expiring at `expires_ms`, standing on `below`.
    fn kept(engine: &Engine, name: &str, expires_ms: i64, below: &[&str]) {
        let dir = engine.kept_path(name);
        std::fs::create_dir_all(dir.join("upper")).unwrap();
        let meta = KeptMeta {
            snapshot: "s".into(),
            base_commit: "b".into(),
            expires_ms,
            below: below.iter().map(|b| b.to_string()).collect(),
        };
        std::fs::write(dir.join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
        hangar_store::lease(&dir, "kept", below).unwrap();
    }

    fn left(engine: &Engine) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(engine.store.kept_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn expired_layers_go_unless_a_live_one_or_a_sandbox_stands_on_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = hangar_store::Store::open(dir.path()).unwrap();
        let engine = Engine::open(crate::EngineConfig {
            clock: Arc::new(|| 1_000),
            ..crate::EngineConfig::new(store, "/nonexistent/init".into())
        })
        .await
        .unwrap();
        // A chain expired from top to bottom; one expired but under a live one; one
        // expired but used by a running sandbox; one live; one without a record yet.
        kept(&engine, "chain-1", 500, &[]);
        kept(&engine, "chain-2", 500, &["chain-1"]);
        kept(&engine, "chain-3", 500, &["chain-2", "chain-1"]);
        kept(&engine, "under-live", 500, &[]);
        kept(&engine, "live", 5_000, &["under-live"]);
        kept(&engine, "in-use", 500, &[]);
        let sandbox = engine.store.run_dir().join("sb-1");
        std::fs::create_dir_all(&sandbox).unwrap();
        hangar_store::lease(&sandbox, "kept", &["in-use"]).unwrap();
        std::fs::create_dir_all(engine.kept_path("being-kept")).unwrap();

        assert_eq!(engine.collect_kept(), 3);
        assert_eq!(
            left(&engine),
            ["being-kept", "in-use", "live", "under-live"]
        );
        assert!(engine.kept("live").is_some());
        assert!(
            engine.kept("in-use").is_none(),
            "expired: not offered to follow-ups"
        );
    }
}
