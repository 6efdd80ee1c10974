//! The owner of every layer directory the engine keeps: environment snapshots
//! (`snapshots/<key>`), attempt layers kept for follow-ups (`kept/<task>-<n>`) and agent
//! CLI layers (`harnesses/<key>`), after containerd's snapshotter: each kind is prepared
//! (its key's lock taken, its directory named), committed (a sandbox's upper dir renamed
//! into place, then its record written: the database row, `meta.json`, the `.done`
//! marker), viewed (the directory a sandbox stacks), walked, leased by the sandboxes that
//! stand on it (`run/<id>/<kind>`, see [`hangar_store::LeaseKind`]) and removed by one
//! collector, [`Layers::gc`], which `cache gc` runs. Image layers are the content store's
//! and go with their image (`image rm`).
//!
//! What the collector removes:
//! - snapshots: reset, expired or lost ones, then the least recently used past the
//!   budget; never one a running sandbox leases or whose key's lock is held (a build, or
//!   a task between its lookup and its sandbox's lease); a directory without a record
//!   (a crash mid-build) and a record without its directory;
//! - kept layers: expired ones no follow-up (running, or kept above them) stands on, the
//!   ones standing on a collected snapshot, and one left without its record by a crash;
//! - harness layers: one no running sandbox leases, whose lock is free, and which no task
//!   used for [`HARNESS_TTL`] (every use stamps its `.done` marker's mtime with the
//!   engine's clock), or whose install never finished. Harness layers are shared by every
//!   environment on the image and cost minutes of downloads to rebuild, so the budget,
//!   which is the environment cache's, does not apply to them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hangar_sandbox::Sandbox;
use hangar_store::db::{Db, SnapshotRecord};
use hangar_store::{Bucket, LeaseKind, Store};
use serde::{Deserialize, Serialize};

use crate::cache::{self, KeyComponents, Lookup, Now};
use crate::error::{io_err, EngineError, Result};
use crate::followup::Keep;
use crate::Engine;

/// The kinds of layer this module keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Snapshot,
    Kept,
    Harness,
}

impl Kind {
    fn bucket(self) -> Bucket {
        self.lease().bucket()
    }

    /// The lease a sandbox standing on a layer of this kind holds.
    fn lease(self) -> LeaseKind {
        match self {
            Kind::Snapshot => LeaseKind::Snapshot,
            Kind::Kept => LeaseKind::Kept,
            Kind::Harness => LeaseKind::Harness,
        }
    }
}

/// A kept layer's record, in its directory.
const META: &str = "meta.json";

/// A kept layer without its record this old was left by a crash while it was kept.
const ABANDONED: Duration = Duration::from_secs(3600);

/// A harness layer no task used for this long (and no sandbox leases) is collected.
pub(crate) const HARNESS_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What [`Engine::cache_gc`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheGcReport {
    pub snapshots: u32,
    pub bytes: u64,
    /// Directories no record knew (left by a crash mid-build).
    pub orphans: u32,
    /// Attempt layers kept for follow-ups: expired, or standing on a collected snapshot.
    pub kept: u32,
    /// Agent CLI layers: unused for [`HARNESS_TTL`], or left by an interrupted install.
    pub harnesses: u32,
}

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

/// A harness layer as a task finds it.
pub(crate) enum HarnessLayer {
    /// Installed: the directory to stack.
    Ready(PathBuf),
    /// To be installed into `dir`, under the key's lock, then [`Layers::commit_harness`].
    Missing(HarnessBuild),
}

/// A harness layer being installed; its key's lock is held until it is committed or
/// dropped.
pub(crate) struct HarnessBuild {
    pub dir: PathBuf,
    key: String,
    _lock: File,
}

/// Whether a swap of a staged directory into place happened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Swap {
    Done,
    /// A holder leases the layer there now: it was left alone.
    InUse,
}

/// The layer directories of one data dir.
#[derive(Clone)]
pub(crate) struct Layers {
    store: Store,
    db: Db,
    /// Background syncs making freshly committed snapshots durable; [`Layers::settle`]
    /// waits for them. The lock is only held to add or take tasks, never across an await.
    syncs: Arc<Mutex<tokio::task::JoinSet<()>>>,
}

impl Layers {
    pub(crate) fn new(store: Store, db: Db) -> Layers {
        Layers {
            store,
            db,
            syncs: Default::default(),
        }
    }

    /// The layer's directory: `snapshots/<key>`, `kept/<name>`, `harnesses/<key>`.
    pub(crate) fn dir(&self, kind: Kind, name: &str) -> PathBuf {
        self.store.path(kind.bucket()).join(name)
    }

    /// The directory a sandbox stacks for the layer (a kept layer's is its `upper`, beside
    /// its record and leases).
    pub(crate) fn lower(&self, kind: Kind, name: &str) -> PathBuf {
        match kind {
            Kind::Kept => self.dir(kind, name).join("upper"),
            Kind::Snapshot | Kind::Harness => self.dir(kind, name),
        }
    }

    fn lock_path(&self, kind: Kind, key: &str) -> PathBuf {
        self.store.path(kind.bucket()).join(format!("{key}.lock"))
    }

    fn harness_marker(&self, key: &str) -> PathBuf {
        self.dir(Kind::Harness, key).with_extension("done")
    }

    /// Takes the lock that makes one builder (or importer) per key, waiting for its
    /// holder; gc leaves a layer whose lock is held alone.
    pub(crate) async fn lock(&self, kind: Kind, key: &str) -> Result<File> {
        self.lock_as(kind, key, File::lock).await
    }

    /// The key's lock shared with other sharers: taken while nobody holds it alone.
    pub(crate) async fn lock_shared(&self, kind: Kind, key: &str) -> Result<File> {
        self.lock_as(kind, key, File::lock_shared).await
    }

    async fn lock_as(
        &self,
        kind: Kind,
        key: &str,
        how: fn(&File) -> std::io::Result<()>,
    ) -> Result<File> {
        let parent = self.store.path(kind.bucket());
        let lock_path = self.lock_path(kind, key);
        let waited = self.dir(kind, key);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
            let f = File::create(&lock_path).map_err(io_err("create", &lock_path))?;
            how(&f).map_err(io_err("lock", &lock_path))?;
            Ok(f)
        })
        .await
        .map_err(|e| EngineError::Io {
            action: "wait for the lock of",
            path: waited,
            source: std::io::Error::other(e.to_string()),
        })?
    }

    /// The key's lock, unless someone holds it.
    fn try_lock(&self, kind: Kind, key: &str) -> Option<File> {
        hangar_store::lock::try_lock(&self.lock_path(kind, key))
            .ok()
            .flatten()
    }

    /// Leases, in a sandbox's directory, every layer of `lowers` (what it stands on).
    pub(crate) fn lease_stack(&self, sandbox_dir: &Path, lowers: &[PathBuf]) -> Result<()> {
        Ok(self.store.lease_stack(sandbox_dir, lowers)?)
    }

    /// The layers of `kind` on disk (directories only: locks and markers are not
    /// layers), by name.
    fn walk(&self, kind: Kind) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(self.store.path(kind.bucket())) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect()
    }

    /// Removes a layer's directory (a harness layer's marker first, so that nobody takes
    /// it for installed meanwhile).
    fn remove(&self, kind: Kind, name: &str) -> Result<()> {
        if kind == Kind::Harness {
            let marker = self.harness_marker(name);
            match std::fs::remove_file(&marker) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err("remove", &marker)(e))
                }
                _ => {}
            }
        }
        let dir = self.dir(kind, name);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", &dir)(e)),
            _ => Ok(()),
        }
    }

    // ---- snapshots ----

    /// Whether a stored snapshot may serve a task now: not reset, expired or lost, and
    /// on disk.
    pub(crate) fn serves(&self, s: &SnapshotRecord, now: Now<'_>) -> bool {
        !s.reset
            && s.expires_ms > now.ms
            && !cache::lost(s, now)
            && self.dir(Kind::Snapshot, &s.key).is_dir()
    }

    /// The key for `components` and whether a snapshot of environment `env` in
    /// `workspace` serves it now (a record whose directory is gone is a miss).
    pub(crate) async fn lookup(
        &self,
        workspace: &str,
        env: &str,
        components: &KeyComponents,
        now: Now<'_>,
    ) -> Result<(String, Lookup)> {
        let snapshots = self.db.snapshots_of(workspace, env).await?;
        let key = components.key();
        let mut found = cache::lookup(&key, components, &snapshots, now);
        if matches!(found, Lookup::Hit(_)) && !self.dir(Kind::Snapshot, &key).is_dir() {
            found = Lookup::Miss(format!(
                "snapshot {} is missing on disk",
                cache::short(&key)
            ));
        }
        Ok((key, found))
    }

    /// Moves a staged directory into place as layer `name` (on a blocking thread's
    /// time: it may remove a large tree), replacing the one there unless a holder leases
    /// it. The caller holds the key's lock.
    pub(crate) fn swap_in(
        &self,
        kind: Kind,
        name: &str,
        staging: tempfile::TempDir,
    ) -> Result<Swap> {
        let target = self.dir(kind, name);
        if target.exists() {
            // A sandbox reads it as a lower: neither removed nor replaced under it.
            if self.store.leased(kind.lease()).contains(name) {
                return Ok(Swap::InUse);
            }
            std::fs::remove_dir_all(&target).map_err(io_err("remove", &target))?;
        }
        // Renamed while still owned by `staging`, which removes it if the rename fails.
        std::fs::rename(staging.path(), &target).map_err(io_err("move into place", &target))?;
        let _renamed = staging.keep();
        Ok(Swap::Done)
    }

    /// Starts making a committed snapshot durable in the background.
    pub(crate) fn make_durable_later(&self, key: &str) {
        let (db, dir, key) = (
            self.db.clone(),
            self.dir(Kind::Snapshot, key),
            key.to_string(),
        );
        self.syncs.lock().expect("not poisoned").spawn(async move {
            let synced =
                tokio::task::spawn_blocking(move || hangar_sandbox::make_durable(&dir)).await;
            match synced {
                Ok(Ok(())) => {
                    if let Err(e) = db.mark_snapshot_durable(&key).await {
                        tracing::warn!("failed to mark snapshot {key} durable: {e}");
                    }
                }
                Ok(Err(e)) => tracing::warn!("snapshot {key} stays unsynced: {e}"),
                Err(e) => tracing::warn!("snapshot {key} stays unsynced: {e}"),
            }
        });
    }

    /// Waits until every snapshot committed here is on disk (or failed to get there).
    pub(crate) async fn settle(&self) {
        let mut pending = std::mem::take(&mut *self.syncs.lock().expect("not poisoned"));
        while pending.join_next().await.is_some() {}
    }

    // ---- kept attempt layers ----

    /// A kept layer's record, unless it is gone or expired at `now_ms`.
    pub(crate) fn kept(&self, name: &str, now_ms: i64) -> Option<KeptMeta> {
        read_meta(&self.dir(Kind::Kept, name)).filter(|m| m.expires_ms > now_ms)
    }

    /// Keeps a finished attempt's sandbox's upper dir as a kept layer (a rename), with
    /// leases on what it stands on and, last, its record; the sandbox is torn down, and
    /// on a failure nothing is kept.
    pub(crate) async fn keep(&self, sandbox: Sandbox, keep: Keep<'_>, now_ms: i64) -> Result<()> {
        let dir = self.dir(Kind::Kept, &keep.name);
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        if let Err(e) = sandbox
            .destroy_keeping_upper(self.lower(Kind::Kept, &keep.name))
            .await
        {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        let meta = KeptMeta {
            snapshot: keep.snapshot.to_string(),
            base_commit: keep.base_commit,
            expires_ms: now_ms + keep.ttl_ms,
            below: keep.below,
        };
        let below: Vec<&str> = meta.below.iter().map(String::as_str).collect();
        let written = hangar_store::lease(&dir, LeaseKind::Snapshot, &[keep.snapshot])
            .and_then(|()| hangar_store::lease(&dir, LeaseKind::Kept, &below))
            .and_then(|()| hangar_store::lease(&dir, LeaseKind::Layers, &keep.layers));
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
    fn collect_kept(&self, now_ms: i64) -> u32 {
        let mut removed = 0;
        loop {
            let round = self.collect_kept_once(now_ms);
            if round == 0 {
                return removed;
            }
            removed += round;
        }
    }

    fn collect_kept_once(&self, now_ms: i64) -> u32 {
        let leased = self.store.leased(LeaseKind::Kept);
        let mut removed = 0;
        for (name, path) in self.walk(Kind::Kept) {
            let has_meta = path.join(META).exists();
            // Without its record it is being kept right now, or a crash interrupted
            // that long ago.
            let abandoned = !has_meta
                && std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > ABANDONED);
            let expired = has_meta && self.kept(&name, now_ms).is_none();
            if leased.contains(&name) || !(expired || abandoned) {
                continue;
            }
            if self.remove(Kind::Kept, &name).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Removes the kept layers standing on snapshot `key`, which is being collected
    /// (no running sandbox uses it, so none uses them); how many.
    fn drop_kept_on(&self, key: &str) -> u32 {
        let mut removed = 0;
        for (name, path) in self.walk(Kind::Kept) {
            if read_meta(&path).is_some_and(|m| m.snapshot == key)
                && self.remove(Kind::Kept, &name).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    // ---- harness layers ----

    /// Harness layer `key`: installed (its use stamped at `now_ms`), or missing, with
    /// its lock held for the install.
    pub(crate) async fn harness(&self, key: &str, now_ms: i64) -> Result<HarnessLayer> {
        let lock = self.lock(Kind::Harness, key).await?;
        let dir = self.dir(Kind::Harness, key);
        let marker = self.harness_marker(key);
        if marker.exists() && dir.is_dir() {
            stamp(&marker, now_ms)?;
            return Ok(HarnessLayer::Ready(dir));
        }
        Ok(HarnessLayer::Missing(HarnessBuild {
            dir,
            key: key.to_string(),
            _lock: lock,
        }))
    }

    /// Marks an installed harness layer done (its marker holds the install's id), used
    /// at `now_ms`, and lets go of its lock.
    pub(crate) fn commit_harness(
        &self,
        build: HarnessBuild,
        install_id: &str,
        now_ms: i64,
    ) -> Result<PathBuf> {
        let marker = self.harness_marker(&build.key);
        std::fs::write(&marker, install_id.as_bytes()).map_err(io_err("write", &marker))?;
        stamp(&marker, now_ms)?;
        Ok(build.dir)
    }

    /// Removes the harness layers no running sandbox leases, whose lock is free and that
    /// no task used for [`HARNESS_TTL`] before `now_ms`, or whose install never
    /// finished; how many. Markers without their layer go too.
    fn collect_harnesses(&self, now_ms: i64) -> Result<u32> {
        let leased = self.store.leased_by_sandboxes(LeaseKind::Harness);
        let mut removed = 0;
        for (key, _) in self.walk(Kind::Harness) {
            if leased.contains(&key) {
                continue;
            }
            // Held by an install, or by a task picking the layer up (it stamps the
            // marker under the lock, so a layer it takes is not stale).
            let Some(_lock) = self.try_lock(Kind::Harness, &key) else {
                continue;
            };
            let used = std::fs::metadata(self.harness_marker(&key))
                .and_then(|m| m.modified())
                .map(ms_of);
            let stale = match used {
                Ok(used_ms) => used_ms + HARNESS_TTL.as_millis() as i64 <= now_ms,
                Err(_) => true, // no marker, and nobody installing: interrupted
            };
            if stale {
                self.remove(Kind::Harness, &key)?;
                removed += 1;
            }
        }
        let bucket = self.store.path(Bucket::Harnesses);
        for entry in std::fs::read_dir(&bucket).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "done") && !path.with_extension("").is_dir() {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(removed)
    }

    // ---- the collector ----

    /// Collects every kind: snapshots (see the module's documentation, `budget` bytes
    /// for them), the kept layers on them and expired ones, and harness layers.
    pub(crate) async fn gc(&self, now: Now<'_>, budget: Option<u64>) -> Result<CacheGcReport> {
        let all = self.db.all_snapshots().await?;
        let in_use = self.store.leased_by_sandboxes(LeaseKind::Snapshot);
        let leased = self.store.leased(LeaseKind::Snapshot);
        let mut report = CacheGcReport::default();
        for s in cache::to_collect(&all, &in_use, now, budget) {
            // Its lock is held from a build until its record exists, and from a task's
            // lookup until the sandbox using it holds its lease: take it, then look at
            // the leases again, so a task that leased it meanwhile keeps it.
            let Some(_lock) = self.try_lock(Kind::Snapshot, &s.key) else {
                continue;
            };
            if self
                .store
                .leased_by_sandboxes(LeaseKind::Snapshot)
                .contains(&s.key)
            {
                continue;
            }
            report.kept += self.drop_kept_on(&s.key);
            self.remove(Kind::Snapshot, &s.key)?;
            self.db.delete_snapshot(&s.key).await?;
            report.snapshots += 1;
            report.bytes += s.size.max(0) as u64;
        }
        for s in &all {
            if !self.dir(Kind::Snapshot, &s.key).is_dir() && !leased.contains(&s.key) {
                self.db.delete_snapshot(&s.key).await?;
            }
        }
        for (name, _) in self.walk(Kind::Snapshot) {
            if all.iter().any(|s| s.key == name) || leased.contains(&name) {
                continue;
            }
            // A build holds its key's lock from before its directory appears until its
            // record is written.
            let Some(_lock) = self.try_lock(Kind::Snapshot, &name) else {
                continue;
            };
            self.remove(Kind::Snapshot, &name)?;
            report.orphans += 1;
        }
        report.kept += self.collect_kept(now.ms);
        report.harnesses += self.collect_harnesses(now.ms)?;
        Ok(report)
    }
}

/// The record in a kept layer's directory, if it has a readable one.
fn read_meta(dir: &Path) -> Option<KeptMeta> {
    let text = std::fs::read(dir.join(META)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Records a use of a harness layer at `now_ms` (the engine's clock, which tests move)
/// as its marker's mtime.
fn stamp(marker: &Path, now_ms: i64) -> Result<()> {
    let at = UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64);
    std::fs::OpenOptions::new()
        .write(true)
        .open(marker)
        .and_then(|f| f.set_modified(at))
        .map_err(io_err("mark as used", marker))
}

fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Engine {
    /// Removes reset and expired snapshots, then least recently used ones past `budget`
    /// bytes, and whatever a crash left (a directory without a record, a record without
    /// its directory); the kept attempt layers standing on a collected snapshot go with
    /// it, expired ones too; and harness layers unused for [`HARNESS_TTL`]. Whatever a
    /// running sandbox stands on stays (see [`Layers::gc`]).
    pub async fn cache_gc(&self, budget: Option<u64>) -> Result<CacheGcReport> {
        self.layers.gc(self.now_at(), budget).await
    }

    /// Where the snapshot with this key lives: beside the sandboxes' directories, on
    /// the same filesystem, so that an upper directory becomes one by a rename.
    pub(crate) fn snapshot_dir(&self, key: &str) -> PathBuf {
        self.layers.dir(Kind::Snapshot, key)
    }

    /// Takes the lock that makes one builder (or importer) per key; others wait here.
    pub(crate) async fn lock_snapshot(&self, key: &str) -> Result<File> {
        self.layers.lock(Kind::Snapshot, key).await
    }

    /// The lock an attempt holds on the snapshot it stands on until its sandbox leases
    /// it: shared when the snapshot is stored (`found`) and on disk, so the attempts of
    /// a burst over one snapshot start side by side while `cache gc` and a builder,
    /// which take it alone, wait; else taken alone, since the attempt builds it.
    pub(crate) async fn hold_snapshot(&self, key: &str, found: bool) -> Result<File> {
        if found {
            let shared = self.layers.lock_shared(Kind::Snapshot, key).await?;
            if self.snapshot_dir(key).is_dir() {
                return Ok(shared);
            }
        }
        self.lock_snapshot(key).await
    }

    /// Whether a stored snapshot may serve a task now.
    pub(crate) fn serves(&self, s: &SnapshotRecord) -> bool {
        self.layers.serves(s, self.now_at())
    }

    /// The key for `components` and whether a snapshot of environment `env` serves it
    /// here and now.
    pub(crate) async fn lookup(
        &self,
        env: &str,
        components: &KeyComponents,
    ) -> Result<(String, Lookup)> {
        self.layers
            .lookup(&self.workspace, env, components, self.now_at())
            .await
    }

    /// Starts making a committed snapshot durable in the background.
    pub(crate) fn make_durable_later(&self, key: &str) {
        self.layers.make_durable_later(key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn engine(dir: &Path, now_ms: i64) -> Engine {
        let store = Store::open(dir).unwrap();
        Engine::open(crate::EngineConfig {
            clock: Arc::new(move || now_ms),
            ..crate::EngineConfig::new(store, "/nonexistent/init".into())
        })
        .await
        .unwrap()
    }

    /// A kept layer named `name`, expiring at `expires_ms`, standing on `below`.
    fn kept(layers: &Layers, name: &str, expires_ms: i64, below: &[&str]) {
        let dir = layers.dir(Kind::Kept, name);
        std::fs::create_dir_all(layers.lower(Kind::Kept, name)).unwrap();
        let meta = KeptMeta {
            snapshot: "s".into(),
            base_commit: "b".into(),
            expires_ms,
            below: below.iter().map(|b| b.to_string()).collect(),
        };
        std::fs::write(dir.join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
        hangar_store::lease(&dir, LeaseKind::Kept, below).unwrap();
    }

    fn left(layers: &Layers, kind: Kind) -> Vec<String> {
        let mut names: Vec<String> = layers.walk(kind).into_iter().map(|(n, _)| n).collect();
        names.sort();
        names
    }

    /// A sandbox's directory under `run/`, leasing `names` of `kind` as a real one does.
    fn sandbox_leasing(engine: &Engine, id: &str, kind: LeaseKind, names: &[&str]) {
        let sandbox = engine.store.path(hangar_store::Bucket::Run).join(id);
        std::fs::create_dir_all(&sandbox).unwrap();
        hangar_store::lease(&sandbox, kind, names).unwrap();
    }

    #[tokio::test]
    async fn expired_layers_go_unless_a_live_one_or_a_sandbox_stands_on_them() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), 1_000).await;
        let layers = &engine.layers;
        // A chain expired from top to bottom; one expired but under a live one; one
        // expired but used by a running sandbox; one live; one without a record yet.
        kept(layers, "chain-1", 500, &[]);
        kept(layers, "chain-2", 500, &["chain-1"]);
        kept(layers, "chain-3", 500, &["chain-2", "chain-1"]);
        kept(layers, "under-live", 500, &[]);
        kept(layers, "live", 5_000, &["under-live"]);
        kept(layers, "in-use", 500, &[]);
        sandbox_leasing(&engine, "sb-1", LeaseKind::Kept, &["in-use"]);
        std::fs::create_dir_all(layers.dir(Kind::Kept, "being-kept")).unwrap();

        assert_eq!(layers.collect_kept(engine.now()), 3);
        assert_eq!(
            left(layers, Kind::Kept),
            ["being-kept", "in-use", "live", "under-live"]
        );
        assert!(engine.kept("live").is_some());
        assert!(
            engine.kept("in-use").is_none(),
            "expired: not offered to follow-ups"
        );
    }

    /// A harness layer `key` as an install leaves it, last used at `used_ms`.
    fn harness(layers: &Layers, key: &str, used_ms: i64) {
        std::fs::create_dir_all(layers.dir(Kind::Harness, key).join("opt/hangar")).unwrap();
        let marker = layers.harness_marker(key);
        std::fs::write(&marker, "install-id").unwrap();
        stamp(&marker, used_ms).unwrap();
    }

    #[tokio::test]
    async fn cache_gc_collects_unused_harness_layers_and_keeps_leased_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = HARNESS_TTL.as_millis() as i64;
        let now = 10 * ttl;
        let engine = engine(dir.path(), now).await;
        let layers = &engine.layers;
        harness(layers, "unused", now - ttl - 1);
        harness(layers, "leased", now - ttl - 1);
        harness(layers, "recent", now - ttl / 2);
        harness(layers, "locked", now - ttl - 1);
        // An install that never finished (no marker, nobody holds its lock), and a
        // marker whose layer is gone.
        std::fs::create_dir_all(layers.dir(Kind::Harness, "interrupted")).unwrap();
        std::fs::write(layers.harness_marker("vanished"), "install-id").unwrap();
        sandbox_leasing(&engine, "sb-1", LeaseKind::Harness, &["leased"]);
        let lock = layers.lock(Kind::Harness, "locked").await.unwrap();

        let report = engine.cache_gc(None).await.unwrap();
        assert_eq!(
            report,
            CacheGcReport {
                harnesses: 2,
                ..CacheGcReport::default()
            }
        );
        assert_eq!(left(layers, Kind::Harness), ["leased", "locked", "recent"]);
        assert!(!layers.harness_marker("unused").exists());
        assert!(!layers.harness_marker("vanished").exists());
        for key in ["leased", "locked", "recent"] {
            assert!(layers.harness_marker(key).exists(), "{key}");
        }

        // Once its lock is free the locked one goes; once the sandbox is gone the leased
        // one would too, but a task picks it up meanwhile (a use is stamped) and it stays.
        drop(lock);
        std::fs::remove_dir_all(engine.store.path(hangar_store::Bucket::Run).join("sb-1")).unwrap();
        assert!(matches!(
            layers.harness("leased", now).await.unwrap(),
            HarnessLayer::Ready(_)
        ));
        let report = engine.cache_gc(None).await.unwrap();
        assert_eq!(report.harnesses, 1);
        assert_eq!(left(layers, Kind::Harness), ["leased", "recent"]);
    }

    #[tokio::test]
    async fn a_harness_layer_is_installed_once_under_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), 1_000).await;
        let layers = &engine.layers;
        let HarnessLayer::Missing(build) = layers.harness("k", 1_000).await.unwrap() else {
            panic!("nothing is installed yet");
        };
        assert!(
            layers.try_lock(Kind::Harness, "k").is_none(),
            "the install holds the lock"
        );
        std::fs::create_dir_all(&build.dir).unwrap();
        let installed = layers.commit_harness(build, "codex@1", 2_000).unwrap();
        assert_eq!(installed, layers.dir(Kind::Harness, "k"));
        assert!(
            layers.try_lock(Kind::Harness, "k").is_some(),
            "committed: let go"
        );
        let marker = layers.harness_marker("k");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "codex@1");
        let used = |m: &Path| ms_of(std::fs::metadata(m).unwrap().modified().unwrap());
        assert_eq!(used(&marker), 2_000);
        assert!(matches!(
            layers.harness("k", 3_000).await.unwrap(),
            HarnessLayer::Ready(d) if d == installed
        ));
        assert_eq!(used(&marker), 3_000, "a use is stamped");
    }
}
