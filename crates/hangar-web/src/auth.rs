//! Signing in to the web UI: a workspace token or a one-time link becomes a session
//! cookie; every page's request is checked against it, and every form against its
//! CSRF token.

use axum::Router;
use hangar_api::{Api, Caller};

/// A signed-in browser: who it is (as the API sees it) and the token its forms carry.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) caller: Caller,
    /// The value every form and every htmx request must send back (`csrf` field or
    /// `X-CSRF-Token` header).
    pub(crate) csrf: String,
}

pub(crate) fn routes() -> Router<Api> {
    Router::new()
}
