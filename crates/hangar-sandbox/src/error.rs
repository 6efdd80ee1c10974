//! Typed errors of the sandbox layer. Each message reads after "failed to ...".

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong creating, using or tearing down a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to {action}: {source}")]
    Sys {
        action: String,
        #[source]
        source: nix::Error,
    },
    #[error("failed to find the OCI runtime `{name}` (looked in PATH, /usr/sbin and /sbin); install it with `apt-get install {name}`")]
    RuntimeNotFound { name: String },
    #[error("failed to find hangar-init at {}: build it with `scripts/build` or set HANGAR_INIT", path.display())]
    InitNotFound { path: PathBuf },
    #[error("failed to start sandbox {id} with {runtime}: {log}")]
    RuntimeFailed {
        id: String,
        runtime: String,
        log: String,
    },
    #[error("failed to create sandbox {id}: it already exists")]
    AlreadyExists { id: String },
    #[error("failed to mount the overlay root of sandbox {id}: the option string is {len} bytes, over the kernel's page-size limit (too many layers)")]
    OverlayOptionsTooLong { id: String, len: usize },
    #[error("failed to run `{program}` in sandbox {id}: could not {stage}: {source}")]
    Spawn {
        id: String,
        program: String,
        stage: hangar_init::SpawnStage,
        #[source]
        source: io::Error,
    },
    #[error("failed to talk to the init of sandbox {id}: {reason}")]
    Control { id: String, reason: String },
    #[error("failed to run `{program}` in sandbox {id}: the request is {size} bytes, over the {max}-byte limit (environment or arguments too large)")]
    RequestTooLarge {
        id: String,
        program: String,
        size: usize,
        max: usize,
    },
    #[error("failed to resolve {path} in sandbox {id}: {source}")]
    File {
        id: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to tear down sandbox {id}: {leftover}")]
    Teardown { id: String, leftover: String },
    #[error("invalid sandbox id `{0}`: use 1 to 48 characters of a-z, 0-9 and '-'")]
    InvalidId(String),
    #[error("failed to write the OCI spec of sandbox {id}: {reason}")]
    Spec { id: String, reason: String },
}

pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> SandboxError {
    let path = path.into();
    move |source| SandboxError::Io {
        action,
        path,
        source,
    }
}

pub(crate) fn sys_err(action: impl Into<String>) -> impl FnOnce(nix::Error) -> SandboxError {
    let action = action.into();
    move |source| SandboxError::Sys { action, source }
}
