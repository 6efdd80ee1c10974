//! The engine's errors. Messages read after "failed to ..." and name the thing.

use std::path::PathBuf;

use hangar_spec::{AttemptStatus, TaskId, TaskStatus};

pub use crate::validate::Invalid;

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
    /// Something only the local admin may do or open (a destination on the daemon host's
    /// network, a path on its filesystem, a pull into its store).
    #[error("failed to use {what}: {reason}")]
    Forbidden { what: String, reason: String },

    // ---- committing and pushing an attempt's diff ----
    #[error("failed to use the commit identity: {reason}")]
    BadIdentity { reason: String },
    #[error("failed to read commit `{commit}` of {repo}: {reason}")]
    NoSuchCommit {
        repo: String,
        commit: String,
        reason: String,
    },
    #[error("failed to commit the diff on commit {base} of {repo}: the diff changes nothing")]
    NothingToCommit { repo: String, base: String },
    #[error("failed to apply the diff to commit {base}: {reason}")]
    PatchDoesNotApply { base: String, reason: String },
    #[error("failed to push to branch `{0}`: it is not a valid branch name")]
    BadBranch(String),
    /// `url` never holds a user name or password.
    #[error("failed to push to {url}: {reason}")]
    BadPushUrl { url: String, reason: String },
    /// The remote refused the ref: not a fast-forward, or its hooks or rules said no.
    #[error("failed to push branch `{branch}` to {url}: the remote refused it: {reason}")]
    PushRejected {
        branch: String,
        url: String,
        reason: String,
    },
    /// The push did not reach a verdict on the ref (authentication, network, protocol);
    /// the reason is git's, with the token taken out.
    #[error("failed to push branch `{branch}` to {url}: {reason}")]
    PushFailed {
        branch: String,
        url: String,
        reason: String,
    },

    // ---- the engine's configuration ----
    #[error(
        "failed to configure the engine: a task's attempts must be 1 to {max_running} here \
         (the attempts that run at once), not {max_attempts}"
    )]
    MaxAttempts {
        max_attempts: u32,
        max_running: usize,
    },

    // ---- environments ----
    #[error("failed to update environment `{name}`: {file} describes environment `{described}`")]
    EnvRenamed {
        name: String,
        file: String,
        described: String,
    },
    #[error("failed to read repo `{repo}` of {file} (resolved to {}): {source}", resolved.display())]
    LocalRepoUnreadable {
        file: String,
        repo: String,
        resolved: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `follow = true` and the repository's file is not one the environment may take.
    #[error("failed to follow {file}: {reason}")]
    FollowedFileRejected { file: String, reason: FollowRefusal },

    // ---- secrets ----
    #[error(
        "failed to set secret `{name}`: environment `{env}` declares no secret `{name}`; add \
         [secrets.{name}] to its file"
    )]
    SecretUndeclared { env: String, name: String },
    #[error(
        "failed to start the task: environment `{env}` declares {} without a value; set {} with {}",
        names.iter().map(|m| format!("secret `{m}`")).collect::<Vec<_>>().join(", "),
        if names.len() == 1 { "it" } else { "them" },
        names.iter().map(|m| format!("`hangar secret set {env} {m}`")).collect::<Vec<_>>().join(", ")
    )]
    SecretsUnset { env: String, names: Vec<String> },

    // ---- tasks ----
    /// The request itself cannot run as asked (see `validate.rs`).
    #[error("failed to start the task: {0}")]
    InvalidTask(#[from] Invalid),
    /// `--from` names no attempt that a follow-up can start from.
    #[error("failed to start the task: {0}")]
    FollowUp(#[from] Unfollowable),
    #[error("failed to lock task {0}: another process holds its lock")]
    TaskTaken(TaskId),
    #[error("failed to cancel task {id}: it has already finished ({status})")]
    TaskFinished { id: TaskId, status: TaskStatus },

    // ---- tokens ----
    #[error("failed to use the workspace: {0}")]
    InvalidWorkspace(hangar_spec::IdError),

    // ---- the forge ----
    #[error("failed to open a pull request for task {task}: {why}")]
    NothingToPull { task: TaskId, why: String },
    #[error("failed to use {what} `{branch}`: it {message}")]
    PullBranch {
        what: &'static str,
        branch: String,
        message: String,
    },
    /// The commit made on the host holds another tree than the attempt's workspace did.
    #[error(
        "failed to commit the attempt's diff: it makes tree {got} on the host, and the \
         attempt's workspace held {expected}"
    )]
    TreeMismatch { expected: String, got: String },
    #[error(
        "failed to use the forge of environment `{env}`: secret `{name}` has no value; set it \
         with `hangar secret set {env} {name}`"
    )]
    ForgeSecretUnset { env: String, name: String },
    #[error("failed to {0}")]
    Forge(#[from] hangar_forge::ForgeError),
    #[error("failed to {0}")]
    Webhook(#[from] hangar_forge::webhook::WebhookError),
    /// A blocking step's thread ended without an answer (it panicked).
    #[error("failed to finish a background step: {0}")]
    Background(String),

    // ---- `hangar run` ----
    #[error("failed to run a command: none was given")]
    NoCommand,
    #[error("failed to read environment variable `{0}`: expected KEY=VALUE")]
    BadVariable(String),
}

/// Why a repository's environment file was not followed.
#[derive(Debug, thiserror::Error)]
pub enum FollowRefusal {
    #[error("it is not UTF-8 text")]
    NotText,
    /// It changes what only the environment's owner may change.
    #[error(
        "it changes {}, which an environment follows from its repository only through \
         `hangar env update {env}`",
        changed.join(", ")
    )]
    Guarded {
        env: String,
        changed: Vec<&'static str>,
    },
}

/// Why `--from` names nothing a follow-up can start from.
#[derive(Debug, thiserror::Error)]
pub enum Unfollowable {
    #[error("invalid --from `{0}`: expected TASK or TASK:ATTEMPT")]
    Spec(String),
    #[error("task {task} has no attempt {index} ({count} attempts)")]
    NoAttempt {
        task: TaskId,
        index: u32,
        count: usize,
    },
    #[error("task {task} attempt {index} has not finished ({status})")]
    Unfinished {
        task: TaskId,
        index: u32,
        status: AttemptStatus,
    },
    #[error(
        "task {task} attempt {index} has no kept layer: it expired, or the attempt ended \
         before its diff was collected"
    )]
    NotKept { task: TaskId, index: u32 },
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
