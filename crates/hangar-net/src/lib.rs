//! hangar's egress proxy: one per sandbox, serving a listener bound inside the sandbox's
//! network namespace and making every upstream connection from the host. Decisions follow
//! the phase's [`PhasePolicy`]; every one is an [`AuditEntry`].

pub mod addr;
pub mod audit;
pub mod ca;
mod error;
pub mod policy;
mod pool;
pub mod presets;
pub mod proxy;
pub mod resolve;
pub mod trust;

pub use audit::AuditEntry;
pub use ca::Ca;
pub use error::{NetError, Result};
pub use policy::{Injection, Internal, PhasePolicy, Reason, Rule, Verdict};
pub use presets::{package_manager_hosts, registry_vars, ImageFiles, PresetHost};
pub use proxy::{upstream_tls, Proxy, ProxyConfig, REASON_HEADER};
pub use resolve::{Resolve, ResolverSettings, StaticResolver, SystemResolver};
