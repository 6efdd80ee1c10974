//! Web sessions: a signed-in browser holds a random secret in a cookie; only its SHA-256
//! is stored, so a stolen database signs nobody in. A session comes from a workspace
//! token (and ends when the token is removed) or from a one-time link the local admin
//! asks for (`hangar ui`), whose code is stored hashed too and redeems once. Secrets and
//! codes travel as [`Secret`]s: no log line or error message can carry one.

use std::time::Duration;

use hangar_secrets::Secret;
use hangar_spec::Workspace;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::dest::Principal;
use crate::tokens::{hash, parse_workspace};
use crate::{Engine, EngineError, Result};

/// How long a web session lasts from sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// How long a one-time sign-in link may wait to be opened.
pub const SIGN_IN_LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The cookie's secret starts with this, the one-time code with [`CODE_PREFIX`]: a value
/// of the wrong kind is refused before any lookup.
const SESSION_PREFIX: &str = "hgs_";
const CODE_PREFIX: &str = "hgc_";

/// A session just made: the secret for the browser's cookie, this once.
pub struct NewSession {
    pub secret: Secret,
    pub expires_ms: i64,
}

/// A one-time sign-in code, for the link `hangar ui` prints.
pub struct SignInLink {
    pub code: Secret,
    pub expires_ms: i64,
}

/// What a live session grants.
pub struct SessionGrant {
    pub workspace: Workspace,
    /// The local admin's (from a one-time link), not a token tenant's.
    pub admin: bool,
    pub expires_ms: i64,
    /// The value its forms must send back: derived from the session's secret by a keyed
    /// hash, so only a holder of the cookie can know it, and nothing stored reveals it.
    pub csrf: String,
}

fn random(prefix: &str) -> Result<Secret> {
    Ok(Secret::new(
        format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>())).into_bytes(),
    )?)
}

fn csrf(secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(b"hangar: web session csrf, v1");
    hex::encode(mac.finalize().into_bytes())
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl Engine {
    /// Signs in with a workspace token (checked as [`Engine::authenticate`] checks it):
    /// a session of the token's workspace, ended when the token is removed. `None` for
    /// a token that does not exist. `token` is hashed, never copied.
    pub async fn sign_in(&self, token: &str) -> Result<Option<NewSession>> {
        if !token.starts_with(crate::tokens::PREFIX) {
            return Ok(None);
        }
        let now = self.now();
        self.db.prune_sessions(now).await?;
        let secret = random(SESSION_PREFIX)?;
        let expires_ms = now + ms(SESSION_LIFETIME);
        let made = self
            .db
            .create_token_session(
                &hash(token.as_bytes()),
                &hash(secret.expose()),
                now,
                expires_ms,
            )
            .await?;
        Ok(made.map(|_| NewSession { secret, expires_ms }))
    }

    /// A one-time code that redeems, within [`SIGN_IN_LINK_LIFETIME`], into a local
    /// admin's session of this view's workspace (the Unix socket's: `default`). The local
    /// admin's alone.
    pub async fn sign_in_link(&self) -> Result<SignInLink> {
        if self.principal != Principal::LocalAdmin {
            return Err(EngineError::Forbidden {
                what: "a one-time sign-in link".into(),
                reason: "only the local admin (the Unix socket, without a token) may make one"
                    .into(),
            });
        }
        let now = self.now();
        self.db.prune_sessions(now).await?;
        let code = random(CODE_PREFIX)?;
        let expires_ms = now + ms(SIGN_IN_LINK_LIFETIME);
        self.db
            .create_sign_in_code(
                &hash(code.expose()),
                self.workspace.as_str(),
                now,
                expires_ms,
            )
            .await?;
        Ok(SignInLink { code, expires_ms })
    }

    /// Redeems a one-time code into an admin session; `None` for a code that does not
    /// exist, was used already or expired. Of two redeems of one code, one wins.
    pub async fn redeem(&self, code: &str) -> Result<Option<NewSession>> {
        if !code.starts_with(CODE_PREFIX) {
            return Ok(None);
        }
        let now = self.now();
        self.db.prune_sessions(now).await?;
        let secret = random(SESSION_PREFIX)?;
        let expires_ms = now + ms(SESSION_LIFETIME);
        let made = self
            .db
            .redeem_sign_in_code(
                &hash(code.as_bytes()),
                now,
                &hash(secret.expose()),
                expires_ms,
            )
            .await?;
        Ok(made.map(|_| NewSession { secret, expires_ms }))
    }

    /// What the session whose cookie holds `secret` grants; `None` when it does not
    /// exist, expired, was signed out or its token was removed.
    pub async fn session(&self, secret: &str) -> Result<Option<SessionGrant>> {
        if !secret.starts_with(SESSION_PREFIX) {
            return Ok(None);
        }
        let Some(rec) = self
            .db
            .session(&hash(secret.as_bytes()), self.now())
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(SessionGrant {
            workspace: parse_workspace(&rec.workspace)?,
            admin: rec.admin,
            expires_ms: rec.expires_ms,
            csrf: csrf(secret.as_bytes()),
        }))
    }

    /// Ends the session whose cookie holds `secret` (no error when it is gone already).
    pub async fn sign_out(&self, secret: &str) -> Result<()> {
        Ok(self.db.delete_session(&hash(secret.as_bytes())).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use super::*;

    /// An engine over a data dir of its own whose clock the test moves.
    async fn engine() -> (tempfile::TempDir, Engine, Arc<AtomicI64>) {
        let dir = tempfile::tempdir().unwrap();
        let store = hangar_store::Store::open(dir.path()).unwrap();
        let now = Arc::new(AtomicI64::new(1_700_000_000_000));
        let clock = now.clone();
        let engine = Engine::open(crate::EngineConfig {
            clock: Arc::new(move || clock.load(Ordering::SeqCst)),
            ..crate::EngineConfig::new(store, "/nonexistent/hangar-init".into())
        })
        .await
        .unwrap();
        (dir, engine, now)
    }

    #[tokio::test]
    async fn a_token_signs_in_to_its_workspace_until_removed_or_expired() {
        let (_d, engine, now) = engine().await;
        let token = engine.create_token("team").await.unwrap();
        let start = now.load(Ordering::SeqCst);

        assert!(engine.sign_in("hgr_nosuchtoken").await.unwrap().is_none());
        assert!(engine.sign_in("not-a-token").await.unwrap().is_none());
        let s = engine
            .sign_in(token.token.expose_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.expires_ms, start + 12 * 3600 * 1000);
        let secret = s.secret.expose_str();
        assert!(secret.starts_with("hgs_"), "{secret}");

        let grant = engine.session(secret).await.unwrap().unwrap();
        assert_eq!(grant.workspace.as_str(), "team");
        assert!(!grant.admin);
        assert_eq!(grant.expires_ms, s.expires_ms);
        // The CSRF token is the same on every lookup, another session's differs, and it
        // is neither the secret nor its stored hash.
        assert_eq!(
            engine.session(secret).await.unwrap().unwrap().csrf,
            grant.csrf
        );
        assert_eq!(grant.csrf.len(), 64);
        assert!(!grant.csrf.contains(&secret[4..]));
        assert_ne!(grant.csrf, hash(secret.as_bytes()));
        let other = engine
            .sign_in(token.token.expose_str())
            .await
            .unwrap()
            .unwrap();
        let other_grant = engine
            .session(other.secret.expose_str())
            .await
            .unwrap()
            .unwrap();
        assert_ne!(other_grant.csrf, grant.csrf);
        // A token is not a session's secret, nor a secret a token.
        assert!(engine
            .session(token.token.expose_str())
            .await
            .unwrap()
            .is_none());
        assert!(engine.sign_in(secret).await.unwrap().is_none());

        // Expired at its expiry.
        now.store(s.expires_ms - 1, Ordering::SeqCst);
        assert!(engine.session(secret).await.unwrap().is_some());
        now.store(s.expires_ms, Ordering::SeqCst);
        assert!(engine.session(secret).await.unwrap().is_none());

        // Removing the token ends the sessions it opened.
        now.store(start, Ordering::SeqCst);
        assert!(engine
            .session(other.secret.expose_str())
            .await
            .unwrap()
            .is_some());
        engine.remove_token(&token.id).await.unwrap();
        assert!(engine
            .session(other.secret.expose_str())
            .await
            .unwrap()
            .is_none());
        assert!(engine
            .sign_in(token.token.expose_str())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_sign_in_link_is_the_admins_and_redeems_once_within_ten_minutes() {
        let (_d, engine, now) = engine().await;
        let tenant = engine.for_tenant(&"team".parse().unwrap());
        assert!(matches!(
            tenant.sign_in_link().await,
            Err(EngineError::Forbidden { .. })
        ));

        let start = now.load(Ordering::SeqCst);
        let link = engine.sign_in_link().await.unwrap();
        assert_eq!(link.expires_ms, start + 10 * 60 * 1000);
        let code = link.code.expose_str();
        assert!(code.starts_with("hgc_"), "{code}");
        let s = engine.redeem(code).await.unwrap().unwrap();
        let grant = engine
            .session(s.secret.expose_str())
            .await
            .unwrap()
            .unwrap();
        assert!(grant.admin);
        assert_eq!(grant.workspace, Workspace::default_workspace());
        assert!(engine.redeem(code).await.unwrap().is_none(), "used twice");
        // A code is not a session's secret.
        assert!(engine.session(code).await.unwrap().is_none());

        let late = engine.sign_in_link().await.unwrap();
        now.store(late.expires_ms, Ordering::SeqCst);
        assert!(engine
            .redeem(late.code.expose_str())
            .await
            .unwrap()
            .is_none());

        // Two redeems of one code at once: one session.
        let code = engine.sign_in_link().await.unwrap().code;
        let (a, b) = tokio::join!(
            engine.redeem(code.expose_str()),
            engine.redeem(code.expose_str())
        );
        assert_eq!(
            [a.unwrap(), b.unwrap()]
                .iter()
                .filter(|s| s.is_some())
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn signing_out_ends_the_session() {
        let (_d, engine, _now) = engine().await;
        let link = engine.sign_in_link().await.unwrap();
        let s = engine
            .redeem(link.code.expose_str())
            .await
            .unwrap()
            .unwrap();
        let secret = s.secret.expose_str();
        assert!(engine.session(secret).await.unwrap().is_some());
        engine.sign_out(secret).await.unwrap();
        assert!(engine.session(secret).await.unwrap().is_none());
        engine.sign_out(secret).await.unwrap();
    }
}
