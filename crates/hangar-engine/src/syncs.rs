//! One mirror refresh for many attempts: the attempts of a burst each need the mirror at
//! least as fresh as when they were accepted, and one fetch that started after they
//! arrived gives them that, where one fetch each would queue them behind each other on
//! the mirror's lock.
//!
//! Per repository (and the reach it is fetched with), at most one refresh runs in this
//! engine. A caller takes the result of a refresh that started after it arrived (done,
//! or under way: it waits for it); one that started before it, it waits out and then
//! asks again. A failed refresh is shared with nobody: the next caller runs its own.
//! The state's lock is held only to read or swap it, never across an await.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::watch;

use crate::error::{EngineError, Result};
use crate::git::{Mirrors, Reach};

/// What one refresh found: the mirror and the names at the top of the branch asked for.
#[derive(Debug, Clone)]
pub(crate) struct Synced {
    pub mirror: PathBuf,
    pub top: Vec<String>,
}

#[derive(Default)]
struct Entry {
    /// A refresh under way: its receiver says `Some(ok)` when it ends.
    running: Option<watch::Receiver<Option<bool>>>,
    /// The last refresh that succeeded: when it started, and what it found.
    last: Option<(Instant, Synced)>,
    /// Refreshes run, for the tests' count.
    runs: u64,
}

/// The engine's mirror refreshes.
#[derive(Default)]
pub(crate) struct Syncs {
    entries: Mutex<HashMap<String, Entry>>,
}

enum Next {
    Done(Synced),
    Wait(watch::Receiver<Option<bool>>),
    Run(watch::Sender<Option<bool>>, Instant),
}

impl Syncs {
    /// The mirror of `repo`, refreshed no earlier than this call, with the names at
    /// the top of `branch`.
    pub(crate) async fn sync(
        &self,
        mirrors: &Mirrors,
        repo: &str,
        branch: &str,
        reach: &Reach,
    ) -> Result<Synced> {
        let arrived = Instant::now();
        let key = format!("{repo}\n{branch}\n{}", reach.git_config().join("\n"));
        loop {
            let next = {
                let mut entries = self.entries.lock().expect("not poisoned");
                let e = entries.entry(key.clone()).or_default();
                match (&e.last, &e.running) {
                    (Some((started, synced)), _) if *started >= arrived => {
                        Next::Done(synced.clone())
                    }
                    (_, Some(done)) => Next::Wait(done.clone()),
                    (_, None) => {
                        let (tx, rx) = watch::channel(None);
                        let started = Instant::now();
                        e.running = Some(rx);
                        e.runs += 1;
                        Next::Run(tx, started)
                    }
                }
            };
            match next {
                Next::Done(synced) => return Ok(synced),
                // Whatever it found, ask again: it may have started too early, or failed.
                Next::Wait(mut done) => {
                    if done.wait_for(Option::is_some).await.is_err() {
                        // Its runner was dropped mid-refresh (its task cancelled): the
                        // refresh is nobody's, and the next caller runs one.
                        let mut entries = self.entries.lock().expect("not poisoned");
                        if let Some(e) = entries.get_mut(&key) {
                            if e.running.as_ref().is_some_and(|r| r.same_channel(&done)) {
                                e.running = None;
                            }
                        }
                    }
                }
                Next::Run(tx, started) => {
                    let got = refresh(mirrors.clone(), repo, branch, reach.clone()).await;
                    {
                        let mut entries = self.entries.lock().expect("not poisoned");
                        let e = entries.entry(key.clone()).or_default();
                        e.running = None;
                        if let Ok(synced) = &got {
                            e.last = Some((started, synced.clone()));
                        }
                    }
                    let _ = tx.send(Some(got.is_ok()));
                    return got;
                }
            }
        }
    }
}

async fn refresh(mirrors: Mirrors, repo: &str, branch: &str, reach: Reach) -> Result<Synced> {
    let (repo, branch) = (repo.to_string(), branch.to_string());
    tokio::task::spawn_blocking(move || {
        let mirror = mirrors.sync(&repo, &reach)?;
        let top = mirrors.top_files(&repo, &branch)?;
        Ok(Synced { mirror, top })
    })
    .await
    .map_err(|e| EngineError::Git {
        what: "mirror".into(),
        message: e.to_string(),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of callers shares one refresh that started after they all arrived, and
    /// a caller that arrives after it ended gets its own.
    #[tokio::test]
    async fn a_burst_shares_a_refresh_and_a_later_caller_refreshes_again() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        hangar_testkit::git(&src, &["init", "-q", "-b", "main"]);
        std::fs::write(src.join("a.txt"), "a").unwrap();
        hangar_testkit::git(&src, &["add", "-A"]);
        hangar_testkit::git(&src, &["commit", "-qm", "one"]);
        let mirrors = Mirrors::new(dir.path().join("mirrors"));
        let repo = src.display().to_string();
        let syncs = std::sync::Arc::new(Syncs::default());
        let burst: Vec<_> = (0..8)
            .map(|_| {
                let (syncs, mirrors, repo) = (syncs.clone(), mirrors.clone(), repo.clone());
                tokio::spawn(async move {
                    syncs
                        .sync(&mirrors, &repo, "main", &Reach::Any)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for b in burst {
            assert_eq!(b.await.unwrap().top, vec!["a.txt".to_string()]);
        }
        // The first ran alone; the seven that arrived while it ran share the next.
        let runs = |s: &Syncs| {
            s.entries
                .lock()
                .unwrap()
                .values()
                .map(|e| e.runs)
                .sum::<u64>()
        };
        assert_eq!(runs(&syncs), 2);
        // A new commit after the burst: the next caller sees it, not the burst's result.
        std::fs::write(src.join("b.txt"), "b").unwrap();
        hangar_testkit::git(&src, &["add", "-A"]);
        hangar_testkit::git(&src, &["commit", "-qm", "two"]);
        let later = syncs
            .sync(&mirrors, &repo, "main", &Reach::Any)
            .await
            .unwrap();
        assert_eq!(later.top, vec!["a.txt".to_string(), "b.txt".to_string()]);
    }

    #[tokio::test]
    async fn a_failed_refresh_is_nobodys_answer() {
        let dir = tempfile::tempdir().unwrap();
        let mirrors = Mirrors::new(dir.path().join("mirrors"));
        let repo = dir.path().join("missing").display().to_string();
        let syncs = Syncs::default();
        for _ in 0..2 {
            let err = syncs
                .sync(&mirrors, &repo, "main", &Reach::Any)
                .await
                .unwrap_err();
            assert!(matches!(err, EngineError::Git { .. }), "{err}");
        }
        assert!(syncs
            .entries
            .lock()
            .unwrap()
            .values()
            .all(|e| e.running.is_none()));
    }
}
