//! What an engine is opened with ([`crate::Engine::open`]): its data dir's store, the
//! hangar-init binary, and the settings the daemon's flags and the tests choose. An engine
//! is never reconfigured: every view of it shares one configuration.

use std::path::PathBuf;
use std::sync::Arc;

use hangar_net::Resolve;
use hangar_spec::HostRule;
use hangar_store::{Bucket, Store};

use crate::{default_max_running, Clock};

/// Attempts of one task, at most, unless configured (each is a sandbox, a proxy and an
/// agent CLI).
pub const MAX_ATTEMPTS: u32 = 4;

/// An engine's configuration; [`EngineConfig::new`] gives every setting its default, and
/// a caller changes the fields it needs before [`crate::Engine::open`].
pub struct EngineConfig {
    /// The data dir's content store; the database, mirrors, snapshots and sandboxes live
    /// beside it.
    pub store: Store,
    /// The static hangar-init, PID 1 of every sandbox.
    pub init_binary: PathBuf,
    /// How many attempts run at once, at most (at least 1); the others queue. Within it
    /// each attempt reserves memory and, past two per core, waits for the machine's load
    /// to leave room (see `admission.rs`). Default: [`default_max_running`].
    pub max_running: usize,
    /// How many attempts one task may ask for (best-of-N): 1 to `max_running`, since more
    /// would only queue behind each other (checked by `open`). `None`: [`MAX_ATTEMPTS`].
    pub max_attempts: Option<u32>,
    /// Where the installation's secret key lives (`HANGAR_SECRET_KEY_FILE`). Default:
    /// `<data dir>/secret.key`.
    pub secret_key_file: PathBuf,
    /// How the proxies resolve upstream names. Default: the system's resolver.
    pub resolver: Arc<dyn Resolve>,
    /// The CA certificates (PEM, from [`crate::read_cas`]) that every sandbox trusts, and
    /// that verify the servers whose TLS the proxy opens: a TLS-inspecting egress's CA, a
    /// private registry's. `None`: the host's locally added CAs ([`crate::host_cas`]).
    pub trusted_cas: Option<Vec<String>>,
    /// Now, for snapshot ages and expiry; tests move it without sleeping.
    pub clock: Clock,
    /// The internal hosts (`host` or `host:port`) a tenant's destinations may be: the
    /// local admin's decision (`hangar serve --open-internal`). Default: none.
    pub open_internal: Vec<HostRule>,
    /// The daemon's address as its users reach it (`https://hangar.example:7700`), for
    /// the links to a task's page that pull requests and comments carry. Default: none.
    pub public_url: Option<String>,
}

impl EngineConfig {
    /// The defaults for an engine over `store` whose sandboxes start `init_binary`.
    pub fn new(store: Store, init_binary: PathBuf) -> EngineConfig {
        EngineConfig {
            secret_key_file: store.path(Bucket::SecretKey),
            store,
            init_binary,
            max_running: default_max_running(),
            max_attempts: None,
            resolver: Arc::new(hangar_net::SystemResolver::default()),
            trusted_cas: None,
            clock: Arc::new(hangar_store::db::now_ms),
            open_internal: Vec::new(),
            public_url: None,
        }
    }
}
