//! The `tokens` table: API tokens, each granting one workspace. Only a hash of a token
//! is stored; the engine makes and hashes them.

use super::{query, Db, DbError, DbResult};

/// A stored API token (its hash, never the token).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRecord {
    pub id: String,
    pub workspace: String,
    pub created_ms: i64,
}

impl Db {
    pub async fn create_token(&self, t: &TokenRecord, hash: &str) -> DbResult<()> {
        sqlx::query("INSERT INTO tokens (id, workspace, hash, created_ms) VALUES ($1, $2, $3, $4)")
            .bind(&t.id)
            .bind(&t.workspace)
            .bind(hash)
            .bind(t.created_ms)
            .execute(&self.pool)
            .await
            .map_err(query("store the token"))?;
        Ok(())
    }

    /// The workspace a token's hash grants, if the token exists.
    pub async fn token_workspace(&self, hash: &str) -> DbResult<Option<String>> {
        sqlx::query_scalar("SELECT workspace FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("look up the token"))
    }

    pub async fn tokens(&self) -> DbResult<Vec<TokenRecord>> {
        sqlx::query_as("SELECT id, workspace, created_ms FROM tokens ORDER BY created_ms")
            .fetch_all(&self.pool)
            .await
            .map_err(query("list the tokens"))
    }

    pub async fn delete_token(&self, id: &str) -> DbResult<()> {
        let n = sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(query("remove the token"))?
            .rows_affected();
        if n == 0 {
            return Err(DbError::TokenNotFound(id.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::db::testing::db;
    use crate::db::{DbError, TokenRecord};

    #[tokio::test]
    async fn tokens_grant_their_workspace_until_removed() {
        let (_d, db) = db().await;
        let token = |id: &str, workspace: &str, created_ms| TokenRecord {
            id: id.into(),
            workspace: workspace.into(),
            created_ms,
        };
        // Listed oldest first, whatever order they were made in.
        db.create_token(&token("t2", "team", 20), "hash-2")
            .await
            .unwrap();
        db.create_token(&token("t1", "default", 10), "hash-1")
            .await
            .unwrap();
        assert!(matches!(
            db.create_token(&token("t3", "team", 30), "hash-2").await,
            Err(DbError::Query { .. })
        ));
        assert_eq!(
            db.tokens().await.unwrap(),
            [token("t1", "default", 10), token("t2", "team", 20)]
        );
        assert_eq!(
            db.token_workspace("hash-2").await.unwrap().as_deref(),
            Some("team")
        );
        assert_eq!(db.token_workspace("hash-9").await.unwrap(), None);

        db.delete_token("t2").await.unwrap();
        assert_eq!(db.token_workspace("hash-2").await.unwrap(), None);
        assert!(matches!(
            db.delete_token("t2").await,
            Err(DbError::TokenNotFound(id)) if id == "t2"
        ));
        assert_eq!(db.tokens().await.unwrap(), [token("t1", "default", 10)]);
    }
}
