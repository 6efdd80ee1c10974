//! The destinations a token tenant's workspace makes hangar (or its proxy) connect to:
//! the repository, the model endpoint, the allow rules' hosts and the registries of
//! `cache export`/`import`. A tenant is not trusted with the daemon host's network, so
//! each is checked against the host-local and internal ranges and the host's own
//! addresses; opening one is the local admin's decision (`hangar serve --open-internal`),
//! never a tenant's environment file. The local admin's own views check nothing here.

use std::net::IpAddr;

use hangar_net::addr::{host_addresses, is_host_local};
use hangar_net::Internal;
use hangar_spec::{Environment, HostRule};

use crate::error::{EngineError, Result};
use crate::git::{Pin, Reach};
use crate::{is_local_relative, Engine};

/// Who a view of the engine acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The local admin: the Unix socket without a token, or a process of its own.
    LocalAdmin,
    /// A token's holder, confined to the token's workspace and kept off the daemon host's
    /// filesystem and network.
    Tenant,
}

/// The flag that opens an internal host for tenants, for the errors that name it.
const OPEN_FLAG: &str = "hangar serve --open-internal";

/// A repository on this machine's filesystem: a path, or a `file://` URL. Only the local
/// admin may name one: through a token it would read any repository on the host.
fn is_local_repo(repo: &str) -> bool {
    repo.starts_with('/') || repo.starts_with("file://") || is_local_relative(repo)
}

impl Engine {
    /// What the proxy of this view's sandboxes lets open internal addresses.
    pub(crate) fn internal(&self) -> Internal {
        match self.principal {
            Principal::LocalAdmin => Internal::ExactRules,
            Principal::Tenant => Internal::Opened(self.net.open_internal.clone()),
        }
    }

    /// Whether the admin opened `host` (at `port`, or at every port when the tenant's
    /// rule names none), matched as the proxy matches it.
    fn opened(&self, host: &str, port: Option<u16>) -> bool {
        self.net.open_internal.iter().any(|o| match port {
            Some(p) => o.matches(host, p),
            None => o.port.is_none() && o.matches(host, 0),
        })
    }

    /// Every destination of a tenant's environment: its repository, its model endpoint
    /// and the hosts its allow rules name (a wildcard is left to the proxy, which checks
    /// every address it connects to).
    pub(crate) async fn check_destinations(&self, env: &Environment) -> Result<()> {
        if self.principal == Principal::LocalAdmin {
            return Ok(());
        }
        self.check_repo(&env.repo).await?;
        if let Some((rule, _)) = env.agent.endpoint_rule() {
            let port = rule.port.unwrap_or(443);
            self.check_host("[agent] endpoint", &rule.pattern, Some(port))
                .await?;
        }
        if let Some((rule, _)) = env.forge.as_ref().and_then(|f| f.api_rule()) {
            self.check_host("[forge] api", &rule.pattern, rule.port)
                .await?;
        }
        for (phase, table) in [
            ("setup", &env.network.setup),
            ("maintenance", &env.network.maintenance),
            ("agent", &env.network.agent),
        ] {
            for rule in table.allow.iter().filter(|r| !r.pattern.starts_with("*.")) {
                let field = format!("network.{phase}.allow `{rule}`");
                self.check_host(&field, &rule.pattern, rule.port).await?;
            }
        }
        Ok(())
    }

    /// A tenant's repository: a `git://` or `http(s)://` URL whose host is not internal.
    /// A path on the daemon's machine would read any repository there; ssh would use the
    /// daemon's own keys and configuration: both are the local admin's alone. Returns how
    /// far the mirror's git may reach: for a tenant, only to the addresses checked here.
    pub(crate) async fn check_repo(&self, repo: &str) -> Result<Reach> {
        if self.principal == Principal::LocalAdmin {
            return Ok(Reach::Any);
        }
        let forbidden = |reason: &str| EngineError::Forbidden {
            what: format!("repo `{repo}`"),
            reason: reason.to_string(),
        };
        if is_local_repo(repo) {
            return Err(forbidden(
                "it is a path on the daemon's machine, which only the local admin may name \
                 (use a git://, http:// or https:// URL)",
            ));
        }
        let Some((scheme, default_port, rest)) =
            [("git://", 9418), ("http://", 80), ("https://", 443)]
                .into_iter()
                .find_map(|(scheme, port)| {
                    repo.strip_prefix(scheme).map(|rest| (scheme, port, rest))
                })
        else {
            return Err(forbidden(
                "only the local admin may name an ssh or other non-URL repository (use a \
                 git://, http:// or https:// URL)",
            ));
        };
        let written = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = written.rsplit('@').next().unwrap_or(written);
        let rule = HostRule::parse(authority)
            .map_err(|e| forbidden(&format!("its host cannot be read: {e}")))?;
        let port = rule.port.unwrap_or(default_port);
        let what = format!("repo `{repo}`");
        let addrs = self.check_host(&what, &rule.pattern, Some(port)).await?;
        if addrs.is_empty() && !self.opened(&rule.pattern, Some(port)) {
            // git would look the name up again itself, unchecked.
            return Err(forbidden(&format!(
                "its host {} does not resolve now, so it cannot be checked (try again)",
                rule.pattern
            )));
        }
        Ok(Reach::Checked(Pin {
            origin: format!("{scheme}{written}"),
            host: rule.pattern,
            port,
            addrs,
        }))
    }

    /// The registry of a `cache export`/`import` reference (`host[:port]/name:tag`; a
    /// reference without a registry host names the client's default public one).
    pub(crate) async fn check_registry(&self, reference: &str, insecure: bool) -> Result<()> {
        if self.principal == Principal::LocalAdmin {
            return Ok(());
        }
        // A reference the registry client cannot read fails there, naming what is wrong.
        let Ok(registry) = hangar_image::registry_of(reference) else {
            return Ok(());
        };
        let rule = HostRule::parse(&registry).map_err(|e| EngineError::Forbidden {
            what: format!("the registry of `{reference}`"),
            reason: format!("its host cannot be read: {e}"),
        })?;
        let port = rule.port.unwrap_or(if insecure { 80 } else { 443 });
        self.check_host(
            &format!("the registry of `{reference}`"),
            &rule.pattern,
            Some(port),
        )
        .await
        .map(drop)
    }

    /// Refuses `host` when it is, or resolves to, an internal or host-local address the
    /// admin has not opened; the addresses checked (none when the admin opened it, or when
    /// the name does not resolve now: that is left to the connection, which fails or is
    /// checked then, as the proxy checks every address it connects to).
    async fn check_host(&self, what: &str, host: &str, port: Option<u16>) -> Result<Vec<IpAddr>> {
        if self.opened(host, port) {
            return Ok(Vec::new());
        }
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match self.net.resolver.resolve(host, port.unwrap_or(443)).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    tracing::info!("{what}: {host} does not resolve now ({e})");
                    return Ok(Vec::new());
                }
            },
        };
        let own = host_addresses();
        let Some(ip) = addrs.iter().copied().find(|ip| is_host_local(*ip, &own)) else {
            return Ok(addrs);
        };
        let named = match port {
            Some(p) if host.contains(':') => format!("[{host}]:{p}"),
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Err(EngineError::Forbidden {
            what: what.to_string(),
            reason: format!(
                "{host} is or resolves to {ip}, an internal or host-local address of the \
                 daemon's host; only the local admin opens one for a token's workspace \
                 (`{OPEN_FLAG} {named}`)"
            ),
        })
    }

    /// A tenant names only images already in the store: a pull writes into the
    /// installation's store, which is the local admin's.
    pub(crate) fn check_image(&self, env: &Environment) -> Result<()> {
        if self.principal == Principal::LocalAdmin {
            return Ok(());
        }
        match self.store.image(&env.image) {
            Err(hangar_store::StoreError::ImageNotFound(_))
                if hangar_image::BuildOptions::new(&env.image, None, &[]).is_err() =>
            {
                Err(EngineError::Forbidden {
                    what: format!("image `{}`", env.image),
                    reason: format!(
                        "it is not in this installation's store, and only the local admin \
                         pulls images (`hangar image pull {}`)",
                        env.image
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn paths_and_file_urls_are_local_repositories() {
        for local in ["/srv/x", "file:///srv/x", "..", "x"] {
            assert!(is_local_repo(local), "{local}");
        }
        for remote in [
            "https://h/x",
            "git://127.0.0.1:9418/x",
            "git@host:x",
            "ssh://h/x",
        ] {
            assert!(!is_local_repo(remote), "{remote}");
        }
    }

    /// A tenant's view over an empty data dir, names resolved by a table, and the admin's
    /// named hosts.
    async fn tenant(opened: &[&str]) -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let store = hangar_store::Store::open(dir.path()).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let engine = Engine::open(crate::EngineConfig {
            resolver: Arc::new(
                hangar_net::StaticResolver::new()
                    .with("public.test", &[ip("198.51.100.1")])
                    .with("internal.test", &[ip("198.51.100.1"), ip("10.0.0.1")])
                    .with("opened.test", &[ip("10.0.0.2")])
                    .with("localhost", &[ip("127.0.0.1")]),
            ),
            open_internal: opened.iter().map(|h| HostRule::parse(h).unwrap()).collect(),
            ..crate::EngineConfig::new(store, "/nonexistent/hangar-init".into())
        })
        .await
        .unwrap();
        let view = engine.for_tenant(&"t".parse().unwrap());
        (dir, view)
    }

    /// `Ok` or the error's message, containing `expected`.
    fn check(got: Result<()>, expected: Option<&str>, input: &str) {
        match (got, expected) {
            (Ok(()), None) => {}
            (Err(e), Some(part)) => {
                assert!(matches!(e, EngineError::Forbidden { .. }), "{input}: {e}");
                assert!(e.to_string().contains(part), "{input}: {e}");
            }
            (got, expected) => panic!("{input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[tokio::test]
    async fn a_tenants_repository_is_a_url_to_an_external_or_opened_host() {
        let (_dir, engine) = tenant(&["opened.test:443", "127.0.0.1:9418"]).await;
        for (repo, expected) in [
            ("https://public.test/a/b.git", None),
            ("https://opened.test/a/b.git", None),
            ("git://127.0.0.1/x", None),
            (
                "git://127.0.0.1:9419/x",
                Some("--open-internal 127.0.0.1:9419"),
            ),
            (
                "http://opened.test/x",
                Some("--open-internal opened.test:80"),
            ),
            ("https://internal.test/x", Some("resolves to 10.0.0.1")),
            (
                "https://user@[::1]:8443/x",
                Some("--open-internal [::1]:8443"),
            ),
            ("https://192.168.1.1/x", Some("192.168.1.1")),
            (
                "ssh://git@public.test/x",
                Some("only the local admin may name an ssh"),
            ),
            (
                "git@public.test:x.git",
                Some("only the local admin may name an ssh"),
            ),
            ("/srv/repos/x", Some("a path on the daemon's machine")),
            (
                "file:///srv/repos/x",
                Some("a path on the daemon's machine"),
            ),
            ("../x", Some("a path on the daemon's machine")),
        ] {
            check(engine.check_repo(repo).await.map(drop), expected, repo);
        }
        // The local admin's view checks nothing.
        let admin = engine.in_workspace(&"t".parse().unwrap());
        check(
            admin.check_repo("git://127.0.0.1:1/x").await.map(drop),
            None,
            "admin",
        );
    }

    #[tokio::test]
    async fn a_tenants_forge_api_is_an_external_or_opened_host() {
        let (_dir, engine) = tenant(&["opened.test:443"]).await;
        for (api, expected) in [
            ("https://public.test/api/v3", None),
            ("https://opened.test", None),
            ("https://internal.test", Some("resolves to 10.0.0.1")),
            ("http://127.0.0.1:9", Some("--open-internal 127.0.0.1:9")),
            ("https://[::1]:8443/api", Some("--open-internal [::1]:8443")),
        ] {
            let source = format!(
                "name = \"e\"\nrepo = \"https://public.test/o/r.git\"\n[secrets.T]\n\
                 [forge]\nkind = \"github\"\napi = \"{api}\"\ntoken = \"T\"\n"
            );
            let env = Environment::parse("e.toml", &source).unwrap();
            check(engine.check_destinations(&env).await, expected, api);
        }
    }

    /// Regression: git looked the tenant's repository host up again after the check, so a
    /// name rebound to loopback in between reached the daemon's host. The mirror's git
    /// is held to the checked addresses, and a name that cannot be checked is refused.
    #[tokio::test]
    async fn a_tenants_mirror_reaches_only_the_addresses_checked() {
        let (_dir, engine) = tenant(&["opened.test:443"]).await;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let pin = |origin: &str, host: &str, port, addrs: Vec<IpAddr>| {
            Reach::Checked(Pin {
                origin: origin.into(),
                host: host.into(),
                port,
                addrs,
            })
        };
        for (repo, want) in [
            (
                "https://user@public.test/a/b.git",
                pin(
                    "https://user@public.test",
                    "public.test",
                    443,
                    vec![ip("198.51.100.1")],
                ),
            ),
            (
                "git://public.test:9000/x",
                pin(
                    "git://public.test:9000",
                    "public.test",
                    9000,
                    vec![ip("198.51.100.1")],
                ),
            ),
            (
                "https://opened.test/x",
                pin("https://opened.test", "opened.test", 443, vec![]),
            ),
        ] {
            assert_eq!(engine.check_repo(repo).await.unwrap(), want, "{repo}");
        }
        check(
            engine.check_repo("https://unknown.test/x").await.map(drop),
            Some("does not resolve now"),
            "unknown",
        );
        assert_eq!(
            engine
                .in_workspace(&"t".parse().unwrap())
                .check_repo("https://unknown.test/x")
                .await
                .unwrap(),
            Reach::Any
        );
    }

    #[tokio::test]
    async fn a_tenants_registry_reference_names_no_internal_host() {
        let (_dir, engine) = tenant(&[]).await;
        for (reference, insecure, expected) in [
            (
                "127.0.0.1:5000/x:1",
                true,
                Some("--open-internal 127.0.0.1:5000"),
            ),
            ("localhost/x:1", true, Some("--open-internal localhost:80")),
            (
                "internal.test/x:1",
                false,
                Some("--open-internal internal.test:443"),
            ),
            ("public.test/x:1", false, None),
            // No registry host: the default public registry.
            ("library/x:1", false, None),
            ("x:1", false, None),
        ] {
            check(
                engine.check_registry(reference, insecure).await,
                expected,
                reference,
            );
        }
    }
}
