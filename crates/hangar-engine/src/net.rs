//! The network side of an attempt: each sandbox's egress proxy (its listener bound inside
//! the sandbox's namespace, served here), the policy each phase runs under, the hangar CA
//! in the sandbox's trust store, and the audit log, redacted on its way to the store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use hangar_image::LayerStack;
use hangar_net::{
    package_manager_hosts, registry_vars, AuditEntry, Ca, ImageFiles, Internal, PhasePolicy,
    PresetHost, Proxy, ProxyConfig, Resolve, Rule,
};
use hangar_sandbox::Sandbox;
use hangar_secrets::Redactor;
use hangar_spec::TaskId;
use hangar_spec::{Access, Approval, Environment, Phase, Preset};
use hangar_store::db::{Db, NetworkEntry};
use hangar_store::Digest;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::phase::RUN_DIR;
use crate::secrets::EnvSecrets;
use crate::Engine;

/// Where the proxy listens inside every sandbox.
pub(crate) const PROXY_ADDR: &str = "127.0.0.1:3128";
/// The image's trust store, where Debian-family tools look.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How the engine's proxies resolve names and verify intercepted servers, and which CAs
/// its sandboxes trust besides the image's.
pub(crate) struct NetSettings {
    pub resolver: Arc<dyn Resolve>,
    /// The administrator's CAs (PEM certificates); `None`: the host's locally added ones.
    pub trusted: Option<Vec<String>>,
    pub config: OnceLock<NetConfig>,
    /// The `package-managers` hosts of each image seen, so that a second sandbox of the
    /// same image reads none of its files again.
    presets: PresetCache,
}

/// What an image's preset hosts are derived from: its layers (by diff_id, top-most first)
/// and the variables that configure its package managers.
#[derive(PartialEq, Eq, Hash)]
struct PresetKey {
    layers: Vec<Digest>,
    vars: Vec<(String, String)>,
}

/// The `package-managers` hosts of each image seen.
#[derive(Default)]
struct PresetCache(Mutex<HashMap<PresetKey, Arc<[PresetHost]>>>);

impl PresetCache {
    /// The `package-managers` hosts of an image (its layers top-most first), read from the
    /// image's own layers on the host: never from the sandbox's root, whose snapshot and
    /// upper directory setup and the agent write, and which could name any host there.
    /// Kept per image; the lock is not held while the files are read.
    fn hosts(&self, image: &[(Digest, PathBuf)], env: &[(String, String)]) -> Arc<[PresetHost]> {
        let key = PresetKey {
            layers: image.iter().map(|(d, _)| d.clone()).collect(),
            vars: registry_vars(env),
        };
        let cache = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hosts) = cache().get(&key) {
            return hosts.clone();
        }
        let stack = LayerStack::new(image.iter().map(|(_, p)| p.clone()).collect());
        let read = |p: &str| match stack.read(p) {
            Ok(found) => found.map(|b| String::from_utf8_lossy(&b).into_owned()),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        };
        let list = |p: &str| match stack.list(p) {
            Ok(found) => found.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("{e}");
                Vec::new()
            }
        };
        let hosts: Arc<[PresetHost]> = package_manager_hosts(&ImageFiles {
            read: &read,
            list: &list,
            env: &key.vars,
        })
        .into();
        cache().insert(key, hosts.clone());
        hosts
    }
}

impl Default for NetSettings {
    fn default() -> NetSettings {
        NetSettings {
            resolver: Arc::new(hangar_net::SystemResolver::default()),
            trusted: None,
            config: OnceLock::new(),
            presets: PresetCache::default(),
        }
    }
}

/// The proxies' configuration and what every sandbox's trust stores get, made once.
#[derive(Clone)]
pub(crate) struct NetConfig {
    pub proxy: ProxyConfig,
    pub roots: Arc<SandboxRoots>,
}

/// The certificates hangar adds to a sandbox's trust stores: the administrator's CAs
/// (behind a TLS-inspecting egress, every HTTPS client in the sandbox needs them, as the
/// host's own tools do), then the hangar CA (for the connections the proxy opens).
pub(crate) struct SandboxRoots {
    /// The hangar CA, PEM.
    hangar: String,
    /// Every certificate added, PEM, one after another.
    block: String,
}

impl SandboxRoots {
    fn new(trusted: &[String], hangar: &str) -> SandboxRoots {
        let mut block = String::new();
        for pem in trusted.iter().map(String::as_str).chain([hangar]) {
            block.push_str(pem.trim());
            block.push('\n');
        }
        SandboxRoots {
            hangar: hangar.trim().to_string(),
            block,
        }
    }
}

fn ca_file() -> String {
    format!("{RUN_DIR}/hangar-ca.pem")
}

fn ca_bundle() -> String {
    format!("{RUN_DIR}/ca-bundle.pem")
}

/// The variables every exec gets: the proxy, and the trust store that includes the
/// administrator's CAs and the hangar CA, for every client that reads one from the
/// environment.
pub(crate) fn proxy_env() -> Vec<(String, String)> {
    let proxy = format!("http://{PROXY_ADDR}");
    let mut env: Vec<(String, String)> = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]
        .iter()
        .map(|k| (k.to_string(), proxy.clone()))
        .collect();
    for k in ["NO_PROXY", "no_proxy"] {
        env.push((k.into(), "localhost,127.0.0.1".into()));
    }
    // OpenSSL, Go and uv; Python's requests and pip (which bundle their own roots
    // otherwise); curl, git and cargo (libcurl); Deno.
    for k in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "PIP_CERT",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "CARGO_HTTP_CAINFO",
        "DENO_CERT",
    ] {
        env.push((k.into(), ca_bundle()));
    }
    // Node adds these to its built-in roots rather than replacing them; its own fetch
    // ignores the proxy variables unless told.
    env.push(("NODE_EXTRA_CA_CERTS".into(), ca_file()));
    env.push(("NODE_USE_ENV_PROXY".into(), "1".into()));
    env
}

/// A sandbox's proxy, the registry hosts its image's package managers use, and who may
/// open internal addresses (the workspace's principal decides).
pub(crate) struct SandboxNet {
    proxy: Proxy,
    presets: Arc<[PresetHost]>,
    internal: Internal,
}

impl SandboxNet {
    /// Puts `phase`'s policy in force, cutting every connection of the phase before.
    pub(crate) fn enter(&self, env: &Environment, phase: Phase, secrets: &EnvSecrets) {
        if self.proxy.phase() != phase.as_str() {
            self.proxy
                .set_policy(policy(env, phase, secrets, &self.presets, &self.internal));
        }
    }

    /// hangar's own install of a harness's CLI: any public host, TLS opened so the
    /// upstream is verified with the host's trust store, no secrets.
    pub(crate) fn enter_install(&self) {
        self.proxy.set_policy(PhasePolicy {
            access: Access::Unrestricted,
            intercept_all: true,
            ..PhasePolicy::off("install")
        });
    }
}

/// A phase's policy: its `[network.<phase>]` table, the preset hosts it asks for, and the
/// projected secrets it may have injected. Phases of hangar's own (checkout, collect)
/// reach nothing.
pub(crate) fn policy(
    env: &Environment,
    phase: Phase,
    secrets: &EnvSecrets,
    presets: &[PresetHost],
    internal: &Internal,
) -> PhasePolicy {
    let table = match phase {
        Phase::Setup => &env.network.setup,
        Phase::Maintenance => &env.network.maintenance,
        Phase::Agent => &env.network.agent,
        _ => return PhasePolicy::off(phase.as_str()),
    };
    let name = phase.as_str();
    let mut allow: Vec<Rule> = table
        .allow
        .iter()
        .map(|h| Rule::new(h.clone(), format!("network.{name}.allow")))
        .collect();
    let mut access = table.access;
    if phase == Phase::Agent {
        if env.agent.approval == Approval::FullAccess {
            access = Access::Unrestricted;
        }
        // The model endpoint, by that rule alone: even a host-local address (in the
        // admin's workspace, or one the admin opened), and even when the agent's network
        // is off.
        if let Some((rule, _)) = env.agent.endpoint_rule() {
            allow.push(Rule::hangars(rule, "agent.endpoint"));
            if access == Access::Off {
                access = Access::Limited;
            }
        }
    }
    if table.presets.contains(&Preset::PackageManagers) {
        allow.extend(presets.iter().map(|p| {
            Rule::preset(
                p.host.clone(),
                format!("preset package-managers (from {})", p.source),
            )
        }));
    }
    PhasePolicy {
        phase: name.to_string(),
        access,
        allow,
        deny: table
            .deny
            .iter()
            .map(|h| Rule::new(h.clone(), format!("network.{name}.deny")))
            .collect(),
        methods: table.methods.clone(),
        injections: secrets.injections(env, phase),
        intercept_all: false,
        internal: internal.clone(),
    }
}

impl Engine {
    /// The proxies' shared configuration: the installation's CA (made on first use under
    /// `<data dir>/proxy`), the upstream trust store (the host's roots and the
    /// administrator's CAs), and what the sandboxes' trust stores get.
    pub(crate) fn net_config(&self) -> Result<NetConfig> {
        if let Some(c) = self.net.config.get() {
            return Ok(c.clone());
        }
        let dir = self.store.path(hangar_store::Bucket::Proxy);
        let ca = Ca::load_or_create(&dir)?;
        let trusted = match &self.net.trusted {
            Some(pems) => pems.clone(),
            None => hangar_net::trust::host_cas(),
        };
        let roots = Arc::new(SandboxRoots::new(&trusted, ca.cert_pem()));
        let config = NetConfig {
            proxy: ProxyConfig {
                ca: Arc::new(ca),
                resolver: self.net.resolver.clone(),
                upstream_tls: hangar_net::upstream_tls(trusted.concat().as_bytes())?,
            },
            roots,
        };
        Ok(self.net.config.get_or_init(|| config).clone())
    }

    /// Takes out of `sandbox` what hangar put in before its upper directory is kept (a
    /// snapshot, a CLI's layer, an attempt's layer): the added roots in the image's trust
    /// store and the run directory.
    pub(crate) async fn strip_hangar_files(&self, sandbox: &Sandbox) -> Result<()> {
        let roots = self.net_config()?.roots;
        remove_roots(sandbox, &roots)?;
        sandbox
            .output(hangar_sandbox::ExecSpec::new(["rm", "-rf", RUN_DIR]))
            .await?;
        Ok(())
    }

    /// Starts `sandbox`'s proxy (reaching nothing until a phase is entered), installs the
    /// hangar CA in its trust store, and finds its image's package managers' registries.
    pub(crate) fn start_net(
        &self,
        sandbox: &Sandbox,
        image: &[(Digest, PathBuf)],
        image_env: &[(String, String)],
        agent: &hangar_spec::Agent,
        audit: mpsc::UnboundedSender<AuditEntry>,
    ) -> Result<SandboxNet> {
        let NetConfig {
            proxy: config,
            roots,
        } = self.net_config()?;
        install_roots(sandbox, &roots)?;
        let presets = self.net.presets.hosts(image, image_env);
        let addr = PROXY_ADDR.parse().expect("a socket address");
        let listener = sandbox.listen(addr)?;
        let mut proxy = Proxy::start(listener, config, PhasePolicy::off("prepare"), audit)?;
        if let Some((addr, host, port)) = loopback_endpoint(agent) {
            proxy.forward(sandbox.listen(addr)?, &host, port)?;
        }
        Ok(SandboxNet {
            proxy,
            presets,
            internal: self.internal(),
        })
    }
}

/// A model endpoint on the host's loopback: the sandbox has a loopback of its own, so the
/// same address there is served by the proxy, forwarding to the host's (what the CLI
/// sends there is checked, logged and given its key as through the proxy).
fn loopback_endpoint(agent: &hangar_spec::Agent) -> Option<(std::net::SocketAddr, String, u16)> {
    let (rule, tls) = agent.endpoint_rule()?;
    let port = rule.port?;
    let ip = rule.loopback_ip()?;
    // The proxy's own port is taken, and TLS to a loopback name cannot be verified.
    let addr = std::net::SocketAddr::new(ip, port);
    (!tls && addr.to_string() != PROXY_ADDR).then(|| (addr, rule.pattern.clone(), port))
}

/// The added roots alone (what Node adds to its own), a bundle of the image's roots plus
/// them (what the variables name), and them appended to the image's own trust store.
fn install_roots(sandbox: &Sandbox, roots: &SandboxRoots) -> Result<()> {
    sandbox.write_file(&ca_file(), roots.block.as_bytes(), 0o644)?;
    let system = sandbox.read_file(SYSTEM_BUNDLE).ok();
    let mut bundle = system.clone().unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(roots.block.as_bytes());
    sandbox.write_file(&ca_bundle(), &bundle, 0o644)?;
    if let Some(system) = system {
        if !String::from_utf8_lossy(&system).contains(roots.block.trim()) {
            sandbox.write_file(SYSTEM_BUNDLE, &bundle, 0o644)?;
        }
    }
    Ok(())
}

/// Takes the added roots back out of the image's trust store before an upper directory
/// is kept: a snapshot may travel to another installation, whose administrator trusts
/// other CAs. What is removed comes from the host, not from the sandbox's copy, which
/// setup could have changed; the hangar CA goes wherever setup moved it.
fn remove_roots(sandbox: &Sandbox, roots: &SandboxRoots) -> hangar_sandbox::Result<()> {
    let Ok(system) = sandbox.read_file(SYSTEM_BUNDLE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&system);
    let hangar = format!("{}\n", roots.hangar);
    if !text.contains(&roots.block) && !text.contains(&hangar) {
        return Ok(());
    }
    let cleaned = text.replacen(&roots.block, "", 1).replace(&hangar, "");
    sandbox.write_file(SYSTEM_BUNDLE, cleaned.as_bytes(), 0o644)
}

/// Writes an attempt's audit entries to the store as they come, redacted.
pub(crate) struct AuditLog {
    tx: mpsc::UnboundedSender<AuditEntry>,
    writer: tokio::task::JoinHandle<()>,
}

impl AuditLog {
    pub(crate) fn start(db: Db, task: TaskId, attempt: u32, redactor: Redactor) -> AuditLog {
        let (tx, mut rx) = mpsc::unbounded_channel::<AuditEntry>();
        let writer = tokio::spawn(async move {
            let mut seq = 0;
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let rows: Vec<NetworkEntry> = batch
                    .into_iter()
                    .map(|e| {
                        seq += 1;
                        let r = |s: &str| redactor.redact(s).into_owned();
                        NetworkEntry {
                            attempt,
                            seq,
                            ts_ms: e.time_ms,
                            phase: e.phase,
                            method: e.method.as_deref().map(r),
                            path: e.path.as_deref().map(r),
                            host: r(&e.host),
                            port: e.port,
                            decision: e.decision,
                            rule: e.rule.as_deref().map(r),
                            bytes_up: e.bytes_up,
                            bytes_down: e.bytes_down,
                            note: e.note.as_deref().map(r),
                        }
                    })
                    .collect();
                if let Err(e) = db.append_network(&task, &rows).await {
                    tracing::warn!("{e}");
                }
            }
        });
        AuditLog { tx, writer }
    }

    pub(crate) fn sender(&self) -> mpsc::UnboundedSender<AuditEntry> {
        self.tx.clone()
    }

    /// Waits for the entries of connections that are closing (every proxy of the attempt
    /// must be dropped first).
    pub(crate) async fn finish(self) {
        drop(self.tx);
        let mut writer = self.writer;
        if tokio::time::timeout(std::time::Duration::from_secs(10), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
            tracing::warn!("the network log writer did not finish; later entries are lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hosts of an image, each `host (source)`.
    fn check_hosts(
        cache: &PresetCache,
        image: &[(Digest, PathBuf)],
        env: &[(&str, &str)],
        expected: &[&str],
    ) {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let got: Vec<String> = cache
            .hosts(image, &env)
            .iter()
            .map(|p| format!("{} ({})", p.host, p.source))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_second_sandbox_of_an_image_reads_none_of_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        std::fs::create_dir_all(layer.join("etc/apt")).unwrap();
        std::fs::write(
            layer.join("etc/apt/sources.list"),
            "deb http://mirror.test/debian bookworm main\n",
        )
        .unwrap();
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let image = [(digest, layer.clone())];
        let cache = PresetCache::default();
        let apt = "mirror.test (/etc/apt/sources.list)";
        check_hosts(&cache, &image, &[("HANGAR_ATTEMPT", "1")], &[apt]);
        // Gone from the disk, the layer is not read again: not for another attempt, whose
        // other variables configure no package manager, either.
        std::fs::remove_dir_all(&layer).unwrap();
        check_hosts(&cache, &image, &[("HANGAR_ATTEMPT", "2")], &[apt]);
        // A variable that does configure one makes another key, read afresh.
        check_hosts(
            &cache,
            &image,
            &[("GOPROXY", "https://goproxy.test")],
            &["goproxy.test (GOPROXY)"],
        );
    }
}
