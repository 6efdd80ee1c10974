//! The `secrets` table: each environment's secret values, only as ciphertext (encrypted
//! to the installation's key before they reach the store).

use super::{now_ms, query, Db, DbError, DbResult};

/// A stored secret: its value only as ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecretRow {
    pub name: String,
    pub ciphertext: Vec<u8>,
    pub updated_ms: i64,
}

impl Db {
    /// Sets a secret's encrypted value, replacing an earlier one.
    pub async fn put_secret(
        &self,
        workspace: &str,
        env: &str,
        name: &str,
        ciphertext: &[u8],
    ) -> DbResult<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO secrets (workspace, environment, name, ciphertext, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (workspace, environment, name)
             DO UPDATE SET ciphertext = excluded.ciphertext, updated_ms = excluded.updated_ms",
        )
        .bind(workspace)
        .bind(env)
        .bind(name)
        .bind(ciphertext)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query("store the secret"))?;
        Ok(())
    }

    /// An environment's secrets, by name.
    pub async fn secrets(&self, workspace: &str, env: &str) -> DbResult<Vec<SecretRow>> {
        sqlx::query_as(
            "SELECT name, ciphertext, updated_ms FROM secrets
             WHERE workspace = $1 AND environment = $2 ORDER BY name",
        )
        .bind(workspace)
        .bind(env)
        .fetch_all(&self.pool)
        .await
        .map_err(query("read the environment's secrets"))
    }

    pub async fn delete_secret(&self, workspace: &str, env: &str, name: &str) -> DbResult<()> {
        let n = sqlx::query(
            "DELETE FROM secrets WHERE workspace = $1 AND environment = $2 AND name = $3",
        )
        .bind(workspace)
        .bind(env)
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(query("delete the secret"))?
        .rows_affected();
        if n == 0 {
            return Err(DbError::SecretNotFound {
                env: env.to_string(),
                name: name.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::db::testing::{db, web_env};
    use crate::db::DbError;

    #[tokio::test]
    async fn secrets_are_replaced_listed_by_name_and_go_with_their_environment() {
        let (_d, db) = db().await;
        db.create_env(&web_env()).await.unwrap();
        db.put_secret("default", "web", "TOKEN", b"one")
            .await
            .unwrap();
        db.put_secret("default", "web", "KEY", b"two")
            .await
            .unwrap();
        db.put_secret("default", "web", "TOKEN", b"three")
            .await
            .unwrap();
        db.put_secret("default", "api", "TOKEN", b"other")
            .await
            .unwrap();
        let got: Vec<(String, Vec<u8>)> = db
            .secrets("default", "web")
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.ciphertext))
            .collect();
        assert_eq!(
            got,
            [
                ("KEY".to_string(), b"two".to_vec()),
                ("TOKEN".to_string(), b"three".to_vec())
            ]
        );
        assert!(db.secrets("other", "web").await.unwrap().is_empty());

        db.delete_secret("default", "web", "KEY").await.unwrap();
        assert!(matches!(
            db.delete_secret("default", "web", "KEY").await,
            Err(DbError::SecretNotFound { env, name }) if env == "web" && name == "KEY"
        ));
        db.delete_env("default", "web").await.unwrap();
        assert!(db.secrets("default", "web").await.unwrap().is_empty());
        assert_eq!(db.secrets("default", "api").await.unwrap().len(), 1);
    }
}
