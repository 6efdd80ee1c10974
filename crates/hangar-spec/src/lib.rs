//! hangar's environment file and task vocabulary: parsing, validation and diagnostics
//! that name the key and line. No I/O: callers hand in text and get typed values back.

#[macro_use]
mod spelled;
mod duration;
mod env;
mod ids;
mod size;
mod task;

pub mod gitpath;
pub use duration::{format_ago, format_duration, format_millis, parse_duration};
pub use env::{
    check_branch, Access, Agent, Approval, Cache, Diagnostic, Environment, Forge, ForgeKind,
    Harness, HostRule, Inject, InstallChange, LeakPolicy, Maintenance, Network, NetworkPolicy,
    Preset, ResourceLimits, SecretDecl, SecretPhase, Setup, SpecError, ASSOCIATIONS,
    DEFAULT_AUTHOR, DEFAULT_IMAGE, DEFAULT_TRUSTED, GITHUB_API, INSTALL_TOOLS, REPO_ENV_FILE,
    TOOLCHAINS,
};
pub use ids::{EnvName, IdError, TaskId, Workspace};
pub use size::{format_bytes, parse_bytes};
pub use task::{repo_name, AttemptStatus, Phase, TaskStatus};
