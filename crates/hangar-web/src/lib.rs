//! hangar's web UI: server-rendered HTML pages, served by the daemon beside its API,
//! that read and act only through the API's in-process operations (the same calls, the
//! same caller's view and the same wire types as `/v1`), so the UI holds no business
//! logic and sees exactly what the signed-in workspace's token would.

mod assets;
mod auth;
mod diff;
mod layout;
mod pages;

use axum::Router;
use hangar_api::Api;

/// The daemon's whole router: the API, and the web UI under `/ui`.
pub fn app(api: Api) -> Router {
    let ui = Router::new()
        .merge(assets::routes())
        .merge(auth::routes(&api))
        .merge(
            pages::routes().route_layer(axum::middleware::from_fn_with_state(
                api.clone(),
                auth::require,
            )),
        )
        .layer(axum::middleware::from_fn(auth::security_headers))
        .with_state(api.clone());
    hangar_api::router(api).merge(ui)
}
