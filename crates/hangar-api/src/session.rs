//! The web UI's sessions, as calls the UI makes on [`Api`] in-process: a token or a
//! one-time code becomes a session cookie's secret, and a cookie becomes the [`Caller`]
//! its pages act as (made here, as every caller is made by this crate). Also
//! `POST /v1/ui/links`, where the local admin (`hangar ui`) gets a one-time link.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use hangar_engine::sessions::{NewSession, SESSION_LIFETIME};
use hangar_secrets::Secret;

use crate::server::{admin_only, Api, ApiError, ApiResult, Caller, Listener};
use crate::wire::{rfc3339, UiLinks};

/// A session just made: the secret its cookie holds, this once, and how long it lives.
pub struct SignedIn {
    pub cookie: Secret,
    pub max_age: Duration,
}

/// A browser's live session, as its cookie says.
pub struct WebSession {
    pub caller: Caller,
    /// The value its forms and htmx requests must send back.
    pub csrf: String,
    /// When it ends, in epoch milliseconds.
    pub expires_ms: i64,
}

fn signed_in(made: Option<NewSession>, why: &str) -> ApiResult<SignedIn> {
    match made {
        Some(s) => Ok(SignedIn {
            cookie: s.secret,
            max_age: SESSION_LIFETIME,
        }),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("failed to sign in: {why}"),
        )),
    }
}

impl Api {
    /// Signs in with a workspace token: 401 for a token that is not known. `token` is
    /// hashed, never copied or shown.
    pub async fn sign_in(&self, token: &str) -> ApiResult<SignedIn> {
        self.activity.touch();
        let made = self.runner.engine().sign_in(token).await?;
        signed_in(made, "the token is not known (it may have been removed)")
    }

    /// Redeems a one-time code from `hangar ui`: 401 for one used, expired or not known.
    pub async fn redeem(&self, code: &str) -> ApiResult<SignedIn> {
        self.activity.touch();
        let made = self.runner.engine().redeem(code).await?;
        signed_in(
            made,
            "the sign-in link was used already or has expired (run `hangar ui` for a new one)",
        )
    }

    /// The session a cookie's value opens; `None` when there is none (never was, ended,
    /// expired, or its token was removed).
    pub async fn session(&self, cookie: &str) -> ApiResult<Option<WebSession>> {
        self.activity.touch();
        let Some(grant) = self.runner.engine().session(cookie).await? else {
            return Ok(None);
        };
        Ok(Some(WebSession {
            caller: Caller::new(grant.workspace, grant.admin),
            csrf: grant.csrf,
            expires_ms: grant.expires_ms,
        }))
    }

    /// Ends the session a cookie's value opens, if any.
    pub async fn sign_out(&self, cookie: &str) -> ApiResult<()> {
        self.activity.touch();
        Ok(self.runner.engine().sign_out(cookie).await?)
    }

    /// Whether this listener speaks TLS, so a cookie it sets may say `Secure`.
    pub fn is_tls(&self) -> bool {
        matches!(self.listener, Listener::Remote { tls: true })
    }
}

/// `POST /v1/ui/links`: a one-time sign-in link on each TCP listener (the local admin's).
pub(crate) async fn create_ui_links(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<(StatusCode, Json<UiLinks>)> {
    admin_only(&caller, "make a sign-in link")?;
    if api.sites.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "failed to make a sign-in link: the daemon has no TCP listener for a browser to \
             open it on (start it with `hangar serve --listen tcp:HOST:PORT`)",
        ));
    }
    let link = api.engine(&caller).sign_in_link().await?;
    let urls = api
        .sites
        .iter()
        .map(|site| {
            Secret::new(format!("{site}/ui/sign-in?code={}", link.code.expose_str()).into_bytes())
        })
        .collect::<Result<_, _>>()
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(UiLinks {
            urls,
            expires_at: rfc3339(link.expires_ms),
        }),
    ))
}
