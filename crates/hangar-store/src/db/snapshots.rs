//! The `snapshots` table: environment snapshots (the cached result of setup, one layer
//! each), with what their key was made from, their size, use and durability.

use super::{query, Db, DbResult};

/// A stored environment snapshot.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SnapshotRecord {
    pub key: String,
    pub workspace: String,
    pub environment: String,
    /// JSON of the key's components (compared to explain a miss).
    pub components: String,
    pub size: i64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub last_used_ms: i64,
    pub hits: i64,
    pub reset: bool,
    /// The boot (`/proc/sys/kernel/random/boot_id`) the snapshot was committed in.
    pub boot_id: String,
    /// Whether its data is known to be on disk; until then it only serves `boot_id`.
    pub durable: bool,
    /// The registry reference it was imported from; `None` when built here.
    pub source: Option<String>,
}

impl Db {
    /// Stores a snapshot, replacing the record of the same key.
    pub async fn put_snapshot(&self, s: &SnapshotRecord) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO snapshots (key, workspace, environment, components, size,
                 created_ms, expires_ms, last_used_ms, hits, reset, boot_id, durable, source)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (key) DO UPDATE SET workspace = excluded.workspace,
                 environment = excluded.environment, components = excluded.components,
                 size = excluded.size, created_ms = excluded.created_ms,
                 expires_ms = excluded.expires_ms, last_used_ms = excluded.last_used_ms,
                 hits = excluded.hits, reset = excluded.reset, boot_id = excluded.boot_id,
                 durable = excluded.durable, source = excluded.source",
        )
        .bind(&s.key)
        .bind(&s.workspace)
        .bind(&s.environment)
        .bind(&s.components)
        .bind(s.size)
        .bind(s.created_ms)
        .bind(s.expires_ms)
        .bind(s.last_used_ms)
        .bind(s.hits)
        .bind(s.reset)
        .bind(&s.boot_id)
        .bind(s.durable)
        .bind(&s.source)
        .execute(&self.pool)
        .await
        .map_err(query("store the snapshot"))?;
        Ok(())
    }

    pub async fn snapshot(&self, key: &str) -> DbResult<Option<SnapshotRecord>> {
        sqlx::query_as("SELECT * FROM snapshots WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("read the snapshot"))
    }

    /// An environment's snapshots, newest first.
    pub async fn snapshots_of(&self, workspace: &str, env: &str) -> DbResult<Vec<SnapshotRecord>> {
        sqlx::query_as(
            "SELECT * FROM snapshots WHERE workspace = $1 AND environment = $2
             ORDER BY created_ms DESC",
        )
        .bind(workspace)
        .bind(env)
        .fetch_all(&self.pool)
        .await
        .map_err(query("list the environment's snapshots"))
    }

    /// Every snapshot, of every workspace (gc works on the whole data dir).
    pub async fn all_snapshots(&self) -> DbResult<Vec<SnapshotRecord>> {
        sqlx::query_as("SELECT * FROM snapshots ORDER BY workspace, environment, created_ms DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(query("list snapshots"))
    }

    /// Counts a hit.
    pub async fn touch_snapshot(&self, key: &str, now_ms: i64) -> DbResult<()> {
        sqlx::query("UPDATE snapshots SET hits = hits + 1, last_used_ms = $1 WHERE key = $2")
            .bind(now_ms)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(query("count a snapshot hit"))?;
        Ok(())
    }

    /// Records that a snapshot's data reached the disk.
    pub async fn mark_snapshot_durable(&self, key: &str) -> DbResult<()> {
        sqlx::query("UPDATE snapshots SET durable = TRUE WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(query("mark the snapshot durable"))?;
        Ok(())
    }

    /// Marks an environment's snapshots as reset; returns how many.
    pub async fn reset_snapshots(&self, workspace: &str, env: &str) -> DbResult<u64> {
        Ok(sqlx::query(
            "UPDATE snapshots SET reset = TRUE WHERE workspace = $1 AND environment = $2",
        )
        .bind(workspace)
        .bind(env)
        .execute(&self.pool)
        .await
        .map_err(query("reset the environment's snapshots"))?
        .rows_affected())
    }

    pub async fn delete_snapshot(&self, key: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM snapshots WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(query("delete the snapshot"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::db::testing::db;
    use crate::db::SnapshotRecord;

    fn snapshot(key: &str, env: &str, created_ms: i64) -> SnapshotRecord {
        SnapshotRecord {
            key: key.into(),
            workspace: "default".into(),
            environment: env.into(),
            components: "{}".into(),
            size: 100,
            created_ms,
            expires_ms: created_ms + 1000,
            last_used_ms: created_ms,
            hits: 0,
            reset: false,
            boot_id: "boot-1".into(),
            durable: false,
            source: None,
        }
    }

    #[tokio::test]
    async fn snapshots_are_replaced_counted_made_durable_and_reset() {
        let (_d, db) = db().await;
        db.put_snapshot(&snapshot("k1", "web", 10)).await.unwrap();
        db.put_snapshot(&snapshot("k2", "web", 20)).await.unwrap();
        db.put_snapshot(&snapshot("k3", "api", 30)).await.unwrap();
        // A second record of a key replaces the first, every column.
        let imported = SnapshotRecord {
            size: 7,
            durable: true,
            source: Some("registry.test/web:cache".into()),
            ..snapshot("k1", "web", 15)
        };
        db.put_snapshot(&imported).await.unwrap();
        assert_eq!(db.snapshot("k1").await.unwrap(), Some(imported.clone()));
        assert_eq!(db.snapshot("nope").await.unwrap(), None);

        let keys = |v: Vec<SnapshotRecord>| v.into_iter().map(|s| s.key).collect::<Vec<_>>();
        assert_eq!(
            keys(db.snapshots_of("default", "web").await.unwrap()),
            ["k2", "k1"]
        );
        assert!(db.snapshots_of("other", "web").await.unwrap().is_empty());
        assert_eq!(keys(db.all_snapshots().await.unwrap()), ["k3", "k2", "k1"]);

        db.touch_snapshot("k2", 50).await.unwrap();
        db.touch_snapshot("k2", 60).await.unwrap();
        db.mark_snapshot_durable("k2").await.unwrap();
        let k2 = db.snapshot("k2").await.unwrap().unwrap();
        assert_eq!((k2.hits, k2.last_used_ms, k2.durable), (2, 60, true));

        assert_eq!(db.reset_snapshots("default", "web").await.unwrap(), 2);
        let reset: Vec<bool> = db
            .all_snapshots()
            .await
            .unwrap()
            .iter()
            .map(|s| s.reset)
            .collect();
        assert_eq!(reset, [false, true, true]);

        db.delete_snapshot("k1").await.unwrap();
        assert_eq!(db.snapshot("k1").await.unwrap(), None);
        assert_eq!(
            keys(db.snapshots_of("default", "web").await.unwrap()),
            ["k2"]
        );
    }
}
