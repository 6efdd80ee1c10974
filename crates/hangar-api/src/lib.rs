//! hangar's HTTP API: the axum router over the engine's runner, its wire types, the
//! OpenAPI document that describes it (checked against the router in a test), and the
//! client the CLI uses. No business logic: each route is one call on the engine.

mod activity;
pub mod attach;
pub mod client;
mod forge;
mod ops;
mod resources;
mod server;
mod session;
pub mod tls;
pub mod wire;

pub use activity::Activity;
pub use forge::GITHUB_WEBHOOK;
pub use server::{router, Api, ApiError, AttemptDiff, Caller, Listener, HEALTH, ROUTES};
pub use session::{SignedIn, WebSession};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");
