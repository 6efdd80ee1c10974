//! The `sessions` and `sign_in_codes` tables: the web UI's signed-in browsers and the
//! one-time codes of `hangar ui`'s links. Only hashes of session secrets and codes are
//! stored; the engine makes and hashes them. A session made from a token is deleted with
//! the token (a foreign key, `ON DELETE CASCADE`), so removing a token signs its browsers
//! out at once; every read also checks the expiry, whether or not the row was pruned yet.

use super::{query, Db, DbResult};

/// A stored web session (its hash, never the secret).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRecord {
    pub workspace: String,
    /// The local admin's (made from a one-time link), not a token tenant's.
    pub admin: bool,
    /// The token it was made from; `None` for a one-time link's.
    pub token_id: Option<String>,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// A token keeps at most this many web sessions; signing in again ends its oldest.
pub const SESSIONS_PER_TOKEN: i64 = 100;

impl Db {
    /// Stores a session of the token whose hash is `token_hash`, in that token's workspace;
    /// `None` when no such token exists. One statement, so a token removed at the same
    /// moment either takes the new session with it or was never found.
    pub async fn create_token_session(
        &self,
        token_hash: &str,
        session_hash: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> DbResult<Option<SessionRecord>> {
        let mut tx = self.begin().await?;
        let made: Option<SessionRecord> = sqlx::query_as(
            "INSERT INTO sessions (hash, workspace, admin, token_id, created_ms, expires_ms) \
             SELECT $1, workspace, FALSE, id, $2, $3 FROM tokens WHERE hash = $4 \
             RETURNING workspace, admin, token_id, created_ms, expires_ms",
        )
        .bind(session_hash)
        .bind(created_ms)
        .bind(expires_ms)
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query("store the web session"))?;
        if let Some(token_id) = made.as_ref().and_then(|m| m.token_id.as_deref()) {
            // Each sign-in adds a row that lives 12 hours: a token's holder signing in
            // in a loop would fill the database. The oldest go; the new one stays.
            sqlx::query(
                "DELETE FROM sessions WHERE token_id = $1 AND hash NOT IN ( \
                   SELECT hash FROM sessions WHERE token_id = $1 \
                   ORDER BY hash = $2 DESC, created_ms DESC LIMIT $3)",
            )
            .bind(token_id)
            .bind(session_hash)
            .bind(SESSIONS_PER_TOKEN)
            .execute(&mut *tx)
            .await
            .map_err(query("end a token's oldest web sessions"))?;
        }
        tx.commit().await.map_err(query("commit the web session"))?;
        Ok(made)
    }

    /// Stores a one-time sign-in code that redeems into an admin session of `workspace`.
    pub async fn create_sign_in_code(
        &self,
        code_hash: &str,
        workspace: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO sign_in_codes (hash, workspace, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(code_hash)
        .bind(workspace)
        .bind(created_ms)
        .bind(expires_ms)
        .execute(&self.pool)
        .await
        .map_err(query("store the sign-in code"))?;
        Ok(())
    }

    /// Consumes the code whose hash is `code_hash`, if it exists and has not expired at
    /// `now_ms`, and stores the admin session it redeems into; `None` otherwise. The code
    /// is deleted by the statement that finds it, so of two redeems at once only one gets
    /// a row back.
    pub async fn redeem_sign_in_code(
        &self,
        code_hash: &str,
        now_ms: i64,
        session_hash: &str,
        expires_ms: i64,
    ) -> DbResult<Option<SessionRecord>> {
        let mut tx = self.begin().await?;
        let workspace: Option<String> = sqlx::query_scalar(
            "DELETE FROM sign_in_codes WHERE hash = $1 AND expires_ms > $2 RETURNING workspace",
        )
        .bind(code_hash)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query("redeem the sign-in code"))?;
        let Some(workspace) = workspace else {
            return Ok(None);
        };
        let session = SessionRecord {
            workspace,
            admin: true,
            token_id: None,
            created_ms: now_ms,
            expires_ms,
        };
        sqlx::query(
            "INSERT INTO sessions (hash, workspace, admin, token_id, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(session_hash)
        .bind(&session.workspace)
        .bind(session.admin)
        .bind(&session.token_id)
        .bind(session.created_ms)
        .bind(session.expires_ms)
        .execute(&mut *tx)
        .await
        .map_err(query("store the web session"))?;
        tx.commit().await.map_err(query("commit the web session"))?;
        Ok(Some(session))
    }

    /// The session whose secret hashes to `hash`, unless it expired by `now_ms`.
    pub async fn session(&self, hash: &str, now_ms: i64) -> DbResult<Option<SessionRecord>> {
        sqlx::query_as(
            "SELECT workspace, admin, token_id, created_ms, expires_ms FROM sessions \
             WHERE hash = $1 AND expires_ms > $2",
        )
        .bind(hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("look up the web session"))
    }

    /// Ends a session; ending one that is gone already is no error (a second sign-out).
    pub async fn delete_session(&self, hash: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(query("end the web session"))?;
        Ok(())
    }

    /// Deletes the sessions and sign-in codes that expired by `now_ms`.
    pub async fn prune_sessions(&self, now_ms: i64) -> DbResult<()> {
        let mut tx = self.begin().await?;
        for sql in [
            "DELETE FROM sessions WHERE expires_ms <= $1",
            "DELETE FROM sign_in_codes WHERE expires_ms <= $1",
        ] {
            sqlx::query(sql)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(query("prune expired web sessions"))?;
        }
        tx.commit()
            .await
            .map_err(query("prune expired web sessions"))
    }
}

#[cfg(test)]
mod tests {
    use crate::db::sessions::SESSIONS_PER_TOKEN;
    use crate::db::testing::db;
    use crate::db::{SessionRecord, TokenRecord};

    fn token(id: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            workspace: "team".into(),
            created_ms: 1,
        }
    }

    #[tokio::test]
    async fn a_token_session_lives_until_its_expiry_or_its_token() {
        let (_d, db) = db().await;
        db.create_token(&token("t1"), "token-1").await.unwrap();
        db.create_token(&token("t2"), "token-2").await.unwrap();

        let made = db
            .create_token_session("token-1", "session-1", 10, 100)
            .await
            .unwrap();
        let want = SessionRecord {
            workspace: "team".into(),
            admin: false,
            token_id: Some("t1".into()),
            created_ms: 10,
            expires_ms: 100,
        };
        assert_eq!(made.as_ref(), Some(&want));
        assert_eq!(
            db.create_token_session("no-such-token", "session-x", 10, 100)
                .await
                .unwrap(),
            None
        );
        assert_eq!(db.session("session-x", 10).await.unwrap(), None);
        db.create_token_session("token-2", "session-2", 10, 100)
            .await
            .unwrap()
            .unwrap();

        assert_eq!(db.session("session-1", 99).await.unwrap(), Some(want));
        // Expired at its expiry, pruned or not.
        assert_eq!(db.session("session-1", 100).await.unwrap(), None);

        // Removing a token ends its sessions, and only its own.
        db.delete_token("t1").await.unwrap();
        assert_eq!(db.session("session-1", 50).await.unwrap(), None);
        assert!(db.session("session-2", 50).await.unwrap().is_some());

        db.delete_session("session-2").await.unwrap();
        assert_eq!(db.session("session-2", 50).await.unwrap(), None);
        db.delete_session("session-2").await.unwrap();
    }

    #[tokio::test]
    async fn sign_ins_of_one_token_keep_at_most_n_sessions() {
        let (_d, db) = db().await;
        db.create_token(&token("t1"), "token-1").await.unwrap();
        db.create_token(&token("t2"), "token-2").await.unwrap();
        db.create_token_session("token-2", "other", 1, 1_000)
            .await
            .unwrap()
            .unwrap();
        let n = SESSIONS_PER_TOKEN as usize;
        // All in the same millisecond but the first: the newest is kept whatever the
        // order of their hashes.
        for i in 0..n + 5 {
            let at = if i == 0 { 1 } else { 2 };
            db.create_token_session("token-1", &format!("s{:03}", n + 5 - i), at, 1_000)
                .await
                .unwrap()
                .unwrap();
            assert!(
                db.session(&format!("s{:03}", n + 5 - i), 3)
                    .await
                    .unwrap()
                    .is_some(),
                "{i}"
            );
        }
        let live =
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sessions WHERE token_id = 't1'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(live, SESSIONS_PER_TOKEN);
        // The first (the oldest) went; another token's session stayed.
        assert_eq!(
            db.session(&format!("s{:03}", n + 5), 3).await.unwrap(),
            None
        );
        assert!(db.session("other", 3).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_sign_in_code_redeems_once_and_not_after_its_expiry() {
        let (_d, db) = db().await;
        db.create_sign_in_code("code-1", "default", 0, 600)
            .await
            .unwrap();
        db.create_sign_in_code("code-2", "default", 0, 600)
            .await
            .unwrap();

        // Two redeems at once: exactly one gets the session.
        let (a, b) = tokio::join!(
            db.redeem_sign_in_code("code-1", 10, "session-a", 1000),
            db.redeem_sign_in_code("code-1", 10, "session-b", 1000),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            [&a, &b].iter().filter(|s| s.is_some()).count(),
            1,
            "{a:?} {b:?}"
        );
        let (won, lost) = if a.is_some() {
            ("session-a", "session-b")
        } else {
            ("session-b", "session-a")
        };
        assert_eq!(
            db.session(won, 10).await.unwrap(),
            Some(SessionRecord {
                workspace: "default".into(),
                admin: true,
                token_id: None,
                created_ms: 10,
                expires_ms: 1000,
            })
        );
        assert_eq!(db.session(lost, 10).await.unwrap(), None);
        assert_eq!(
            db.redeem_sign_in_code("code-1", 11, "session-c", 1000)
                .await
                .unwrap(),
            None
        );

        // An expired code redeems into nothing, and pruning removes it and old sessions.
        assert_eq!(
            db.redeem_sign_in_code("code-2", 600, "session-d", 1000)
                .await
                .unwrap(),
            None
        );
        db.prune_sessions(1000).await.unwrap();
        assert_eq!(db.session(won, 0).await.unwrap(), None);
        assert_eq!(
            db.redeem_sign_in_code("code-2", 0, "session-e", 1000)
                .await
                .unwrap(),
            None
        );
    }
}
