//! The engine's errors. Messages read after "failed to ..." and name the thing.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Spec(#[from] hangar_spec::SpecError),
    #[error(transparent)]
    Db(#[from] hangar_store::db::DbError),
    #[error(transparent)]
    Store(#[from] hangar_store::StoreError),
    #[error(transparent)]
    Image(#[from] hangar_image::ImageError),
    #[error(transparent)]
    Sandbox(#[from] hangar_sandbox::SandboxError),
    #[error(transparent)]
    Secret(#[from] hangar_secrets::SecretError),
    #[error(transparent)]
    Net(#[from] hangar_net::NetError),
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to run git ({what}): {message}")]
    Git { what: String, message: String },
    #[error("failed to apply the diff: {0}")]
    Apply(String),
    #[error("failed to apply the diff: it conflicts in {}", files.join(", "))]
    Conflicts { files: Vec<String> },
    #[error("failed to read the diff: {0}")]
    BadPatch(String),
    #[error("failed to export the snapshot of environment `{env}`: {reason}")]
    Export { env: String, reason: String },
    #[error("failed to import {reference}: {reason}")]
    Import { reference: String, reason: String },
    #[error(
        "failed to import {reference}: snapshot {snapshot} is in use by a running attempt or \
         a kept one; import again when they are done"
    )]
    SnapshotInUse { reference: String, snapshot: String },
    #[error("failed to start the task: {0}")]
    BadRequest(String),
    /// Something only the local admin may do or open (a destination on the daemon host's
    /// network, a path on its filesystem, a pull into its store).
    #[error("failed to use {what}: {reason}")]
    Forbidden { what: String, reason: String },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.into();
    move |source| EngineError::Io {
        action,
        path,
        source,
    }
}
