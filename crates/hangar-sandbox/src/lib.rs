//! hangar sandboxes: an overlay root over read-only image layers, a network namespace with
//! only loopback, cgroup limits, and hangar-init as PID 1, run by an OCI runtime (crun or
//! runc). Commands run one after another with an explicit environment each; teardown
//! leaves nothing behind. This crate knows nothing of tasks, images or the store.

pub mod cgroup;
mod control;
pub mod disk;
mod error;
mod mounts;
pub mod netns;
pub mod overlay;
mod reap;
pub mod runtime;
mod sandbox;
pub mod spec;

pub use error::{Result, SandboxError};
pub use mounts::ReadOnly;
pub use netns::netns_names;
pub use reap::{reap, Reaped};
pub use runtime::{OciRuntime, RuntimeKind};
pub use sandbox::{
    make_durable, ExecSpec, ExitStatus, HostConfig, Output, Process, Sandbox, SandboxId,
    SandboxSpec, Stdio, Upper,
};
pub use spec::{BindMount, Resources};
