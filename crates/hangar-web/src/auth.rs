//! Signing in to the web UI: a workspace token or a one-time link becomes a session
//! cookie; every page's request is checked against it, and every form against its
//! CSRF token.

use axum::Router;
use hangar_api::Api;

pub(crate) fn routes() -> Router<Api> {
    Router::new()
}
