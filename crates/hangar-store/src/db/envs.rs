//! The `environments` table: each environment's file, validated when it was written, and
//! its version, per workspace.

use super::{now_ms, query, Db, DbError, DbResult};

/// A stored environment (its file, validated when it was written).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnvRecord {
    pub workspace: String,
    pub name: String,
    pub version: i64,
    pub source: String,
    pub repo: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Db {
    pub async fn create_env(&self, rec: &EnvRecord) -> DbResult<()> {
        let res = sqlx::query(
            "INSERT INTO environments (workspace, name, version, source, repo, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&rec.workspace)
        .bind(&rec.name)
        .bind(rec.version)
        .bind(&rec.source)
        .bind(&rec.repo)
        .bind(rec.created_ms)
        .bind(rec.updated_ms)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(DbError::EnvExists(rec.name.clone()))
            }
            Err(e) => Err(query("store the environment")(e)),
        }
    }

    /// Replaces an environment's file; its version goes up by one.
    pub async fn update_env(
        &self,
        workspace: &str,
        name: &str,
        source: &str,
        repo: &str,
    ) -> DbResult<EnvRecord> {
        let n = sqlx::query(
            "UPDATE environments SET source = $1, repo = $2, version = version + 1, updated_ms = $3
             WHERE workspace = $4 AND name = $5",
        )
        .bind(source)
        .bind(repo)
        .bind(now_ms())
        .bind(workspace)
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(query("update the environment"))?
        .rows_affected();
        if n == 0 {
            return Err(DbError::EnvNotFound(name.to_string()));
        }
        self.env(workspace, name).await
    }

    pub async fn env(&self, workspace: &str, name: &str) -> DbResult<EnvRecord> {
        sqlx::query_as("SELECT * FROM environments WHERE workspace = $1 AND name = $2")
            .bind(workspace)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("read the environment"))?
            .ok_or_else(|| DbError::EnvNotFound(name.to_string()))
    }

    pub async fn envs(&self, workspace: &str) -> DbResult<Vec<EnvRecord>> {
        sqlx::query_as("SELECT * FROM environments WHERE workspace = $1 ORDER BY name")
            .bind(workspace)
            .fetch_all(&self.pool)
            .await
            .map_err(query("list environments"))
    }

    /// Every workspace's environments (the forge's webhooks choose among them).
    pub async fn all_envs(&self) -> DbResult<Vec<EnvRecord>> {
        sqlx::query_as("SELECT * FROM environments ORDER BY workspace, name")
            .fetch_all(&self.pool)
            .await
            .map_err(query("list every workspace's environments"))
    }

    /// Deletes an environment and its secrets.
    pub async fn delete_env(&self, workspace: &str, name: &str) -> DbResult<()> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM environments WHERE workspace = $1 AND name = $2")
            .bind(workspace)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(query("delete the environment"))?
            .rows_affected();
        if n == 0 {
            return Err(DbError::EnvNotFound(name.to_string()));
        }
        sqlx::query("DELETE FROM secrets WHERE workspace = $1 AND environment = $2")
            .bind(workspace)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(query("delete the environment's secrets"))?;
        tx.commit().await.map_err(query("delete the environment"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::db::testing::{db, web_env};
    use crate::db::DbError;

    #[tokio::test]
    async fn environments_round_trip() {
        let (_d, db) = db().await;
        let rec = web_env();
        db.create_env(&rec).await.unwrap();
        assert!(matches!(db.create_env(&rec).await, Err(DbError::EnvExists(n)) if n == "web"));
        let updated = db
            .update_env("default", "web", "x", "/srv/web2")
            .await
            .unwrap();
        assert_eq!((updated.version, updated.repo.as_str()), (2, "/srv/web2"));
        assert!(db.envs("other").await.unwrap().is_empty());
        assert!(matches!(
            db.env("other", "web").await,
            Err(DbError::EnvNotFound(_))
        ));
        db.delete_env("default", "web").await.unwrap();
        assert!(matches!(
            db.delete_env("default", "web").await,
            Err(DbError::EnvNotFound(_))
        ));
    }
}
