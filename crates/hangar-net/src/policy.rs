//! What one phase of one sandbox may reach: the `[network.<phase>]` table with its presets
//! expanded, plus the projected secrets of that phase. Pure: decisions here, I/O elsewhere.

use std::sync::Arc;

use hangar_secrets::Secret;
use hangar_spec::{Access, HostRule};

/// Why a request was refused; the words of the 403's `X-Hangar-Reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Allowlist,
    Method,
    PrivateAddress,
    NetworkOff,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowlist => "blocked-by-allowlist",
            Reason::Method => "blocked-by-method",
            Reason::PrivateAddress => "blocked-private-address",
            Reason::NetworkOff => "network-off",
        }
    }
}

/// A host rule and where it came from (`network.agent.allow`, `preset package-managers`),
/// so the audit log can say which rule decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub host: HostRule,
    pub origin: String,
    owner: Owner,
}

/// Whose rule it is: the environment's rules follow its phase's method list; hangar's own
/// (the agent's model endpoint) do not, since the harness must reach its model however
/// the agent's other traffic is limited. A preset's follow the method list but never open
/// an internal address: their hosts come from files and variables, not from a rule the
/// environment's owner wrote for that host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Environment,
    Hangar,
    Preset,
}

impl Rule {
    pub fn new(host: HostRule, origin: impl Into<String>) -> Rule {
        Rule {
            host,
            origin: origin.into(),
            owner: Owner::Environment,
        }
    }

    /// One of hangar's own rules: no method list applies to it.
    pub fn hangars(host: HostRule, origin: impl Into<String>) -> Rule {
        Rule {
            owner: Owner::Hangar,
            ..Rule::new(host, origin)
        }
    }

    /// A preset's rule: it allows its host but never opens an internal address, even when
    /// it names the exact host and port.
    pub fn preset(host: HostRule, origin: impl Into<String>) -> Rule {
        Rule {
            owner: Owner::Preset,
            ..Rule::new(host, origin)
        }
    }

    fn describe(&self) -> String {
        format!("{} {}", self.origin, self.host)
    }

    /// Names exactly this host and port, and is the environment's or hangar's own: only
    /// such a rule opens an internal address (in the local admin's workspace).
    fn names_exactly(&self, host: &str, port: u16) -> bool {
        self.owner != Owner::Preset
            && self.host.port == Some(port)
            && self.host.pattern == normalize(host)
    }
}

/// A projected secret, as the proxy of one phase sees it.
#[derive(Debug)]
pub struct Injection {
    pub name: String,
    pub placeholder: String,
    pub value: Secret,
    pub hosts: Vec<HostRule>,
    /// Lowercase.
    pub header: String,
    /// `{}` marks where the value goes.
    pub format: String,
    /// Injected into plain-HTTP requests too; otherwise only inside intercepted TLS.
    pub plain_http: bool,
}

impl Injection {
    pub fn applies_to(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|h| h.matches(host, port))
    }
}

/// Who may open internal and host-local addresses for a phase: a decision about the
/// workspace, not about one rule, since a token tenant's environment file must not open the
/// daemon host's network to it.
#[derive(Debug, Clone, PartialEq)]
pub enum Internal {
    /// The local admin's own workspace: an allow rule of the environment (or hangar's
    /// endpoint rule) that names the exact host and port opens it; a preset's never does.
    ExactRules,
    /// A token tenant's workspace: only these hosts, which the local admin opened in the
    /// daemon's configuration, whatever the environment's rules say.
    Opened(Arc<[HostRule]>),
}

/// One phase's policy.
#[derive(Debug)]
pub struct PhasePolicy {
    /// The phase's name, for the audit log and the rules' descriptions.
    pub phase: String,
    pub access: Access,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    /// Upper case; empty means any method.
    pub methods: Vec<String>,
    pub injections: Vec<Injection>,
    /// Open TLS for every allowed host, so the upstream is verified with the host's
    /// trust store (hangar's own installs, behind a TLS-inspecting egress, need it).
    pub intercept_all: bool,
    /// Who may open internal and host-local addresses.
    pub internal: Internal,
}

/// The host check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow {
        /// The allow rule that matched (none in an unrestricted phase).
        rule: Option<String>,
        /// Internal and host-local addresses are allowed: see [`Internal`].
        internal_ok: bool,
        /// TLS must be opened: a method rule or an injection needs to see inside.
        intercept: bool,
    },
    Block {
        reason: Reason,
        rule: String,
    },
}

impl PhasePolicy {
    /// A phase that reaches nothing.
    pub fn off(phase: &str) -> PhasePolicy {
        PhasePolicy {
            phase: phase.to_string(),
            access: Access::Off,
            allow: Vec::new(),
            deny: Vec::new(),
            methods: Vec::new(),
            injections: Vec::new(),
            intercept_all: false,
            internal: Internal::ExactRules,
        }
    }

    /// Decides on a destination before anything is resolved or connected. Deny rules win
    /// over allow rules; the address check comes later, at connect time.
    pub fn check_host(&self, host: &str, port: u16) -> Verdict {
        let host = &normalize(host);
        let phase = &self.phase;
        if self.access == Access::Off {
            return Verdict::Block {
                reason: Reason::NetworkOff,
                rule: format!("network.{phase}.access = off"),
            };
        }
        if let Some(d) = self.deny.iter().find(|r| r.host.matches(host, port)) {
            return Verdict::Block {
                reason: Reason::Allowlist,
                rule: d.describe(),
            };
        }
        let internal_ok = match &self.internal {
            Internal::ExactRules => self.allow.iter().any(|r| r.names_exactly(host, port)),
            Internal::Opened(hosts) => hosts.iter().any(|h| h.matches(host, port)),
        };
        let intercept = self.intercept_all
            || (!self.methods.is_empty() && !self.hangars(host, port))
            || self.injections.iter().any(|i| i.applies_to(host, port));
        match self.access {
            Access::Unrestricted => Verdict::Allow {
                rule: None,
                internal_ok,
                intercept,
            },
            _ => match self.allow.iter().find(|r| r.host.matches(host, port)) {
                Some(r) => Verdict::Allow {
                    rule: Some(r.describe()),
                    internal_ok,
                    intercept,
                },
                None => Verdict::Block {
                    reason: Reason::Allowlist,
                    rule: format!("no rule of network.{phase} allows {host}:{port}"),
                },
            },
        }
    }

    /// Whether one of hangar's own rules allows `host:port`.
    fn hangars(&self, host: &str, port: u16) -> bool {
        let host = &normalize(host);
        self.allow
            .iter()
            .any(|r| r.owner == Owner::Hangar && r.host.matches(host, port))
    }

    /// `None` when `method` may be sent to `host:port`, else the rule that refuses it.
    pub fn check_method(&self, host: &str, port: u16, method: &str) -> Option<String> {
        if self.methods.is_empty()
            || self.methods.iter().any(|m| m == method)
            || self.hangars(host, port)
        {
            None
        } else {
            Some(format!(
                "network.{}.methods = [{}]",
                self.phase,
                self.methods.join(", ")
            ))
        }
    }
}

/// Host names compare lowercase and without a trailing dot; IPv6 without brackets.
pub fn normalize(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str, origin: &str) -> Rule {
        Rule::new(HostRule::parse(s).unwrap(), origin)
    }

    fn policy(access: Access, allow: &[&str], deny: &[&str], methods: &[&str]) -> PhasePolicy {
        PhasePolicy {
            phase: "agent".into(),
            access,
            allow: allow
                .iter()
                .map(|r| rule(r, "network.agent.allow"))
                .collect(),
            deny: deny.iter().map(|r| rule(r, "network.agent.deny")).collect(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            injections: Vec::new(),
            intercept_all: false,
            internal: Internal::ExactRules,
        }
    }

    fn check(p: &PhasePolicy, target: &str, expected: &str) {
        let (host, port) = target.rsplit_once(':').unwrap();
        let got = match p.check_host(host, port.parse().unwrap()) {
            Verdict::Allow {
                rule,
                internal_ok,
                intercept,
            } => format!(
                "allow {}{}{}",
                rule.unwrap_or_else(|| "-".into()),
                if internal_ok { " internal-ok" } else { "" },
                if intercept { " intercept" } else { "" }
            ),
            Verdict::Block { reason, rule } => format!("{} ({rule})", reason.as_str()),
        };
        assert_eq!(got, expected, "{target}");
    }

    #[test]
    fn off_refuses_everything() {
        let p = policy(Access::Off, &[], &[], &[]);
        check(
            &p,
            "example.com:443",
            "network-off (network.agent.access = off)",
        );
    }

    #[test]
    fn limited_allows_only_listed_hosts() {
        let p = policy(
            Access::Limited,
            &["api.github.com", "*.internal.example", "db.test:5432"],
            &["secret.internal.example"],
            &[],
        );
        check(
            &p,
            "api.github.com:443",
            "allow network.agent.allow api.github.com",
        );
        check(
            &p,
            "API.GitHub.com.:443",
            "allow network.agent.allow api.github.com",
        );
        check(
            &p,
            "x.internal.example:443",
            "allow network.agent.allow *.internal.example",
        );
        check(
            &p,
            "internal.example:443",
            "blocked-by-allowlist (no rule of network.agent allows internal.example:443)",
        );
        check(
            &p,
            "secret.internal.example:443",
            "blocked-by-allowlist (network.agent.deny secret.internal.example)",
        );
        check(
            &p,
            "db.test:5432",
            "allow network.agent.allow db.test:5432 internal-ok",
        );
        check(
            &p,
            "db.test:5433",
            "blocked-by-allowlist (no rule of network.agent allows db.test:5433)",
        );
        check(
            &p,
            "github.com:443",
            "blocked-by-allowlist (no rule of network.agent allows github.com:443)",
        );
    }

    #[test]
    fn a_host_rule_without_port_never_opens_internal_addresses() {
        let p = policy(Access::Unrestricted, &[], &[], &[]);
        check(&p, "localhost:80", "allow -");
        let p = policy(Access::Limited, &["127.0.0.1"], &[], &[]);
        check(&p, "127.0.0.1:80", "allow network.agent.allow 127.0.0.1");
        let p = policy(Access::Limited, &["[::1]:8080"], &[], &[]);
        check(
            &p,
            "[::1]:8080",
            "allow network.agent.allow [::1]:8080 internal-ok",
        );
    }

    /// Regression: a registry URL written into `~/.npmrc` or `[env] NPM_CONFIG_REGISTRY`
    /// became a preset rule naming `127.0.0.1:5000`, which opened the host's loopback.
    #[test]
    fn a_preset_rule_never_opens_internal_addresses() {
        let mut p = policy(Access::Limited, &[], &[], &[]);
        p.allow.push(Rule::preset(
            HostRule::parse("127.0.0.1:5000").unwrap(),
            "preset package-managers (from NPM_CONFIG_REGISTRY)",
        ));
        check(
            &p,
            "127.0.0.1:5000",
            "allow preset package-managers (from NPM_CONFIG_REGISTRY) 127.0.0.1:5000",
        );
        // The environment's own exact rule still opens it in the admin's workspace.
        p.allow.push(rule("127.0.0.1:5000", "network.agent.allow"));
        check(
            &p,
            "127.0.0.1:5000",
            "allow preset package-managers (from NPM_CONFIG_REGISTRY) 127.0.0.1:5000 internal-ok",
        );
    }

    /// Regression: a token tenant's exact allow rule (and its model endpoint) opened the
    /// daemon host's loopback; for a tenant only the admin's named hosts open anything.
    #[test]
    fn a_tenants_rules_open_only_the_hosts_the_admin_opened() {
        let opened: Arc<[HostRule]> = vec![HostRule::parse("db.test:5432").unwrap()].into();
        let mut p = policy(
            Access::Limited,
            &["127.0.0.1:8080", "db.test:5432", "db.test:5433"],
            &[],
            &[],
        );
        p.allow.push(Rule::hangars(
            HostRule::parse("127.0.0.1:9000").unwrap(),
            "agent.endpoint",
        ));
        p.internal = Internal::Opened(opened);
        check(
            &p,
            "127.0.0.1:8080",
            "allow network.agent.allow 127.0.0.1:8080",
        );
        check(&p, "127.0.0.1:9000", "allow agent.endpoint 127.0.0.1:9000");
        check(
            &p,
            "db.test:5432",
            "allow network.agent.allow db.test:5432 internal-ok",
        );
        check(&p, "db.test:5433", "allow network.agent.allow db.test:5433");
        // Opened is not allowed: the environment's rules still decide what is reached.
        check(
            &p,
            "DB.test.:5432",
            "allow network.agent.allow db.test:5432 internal-ok",
        );
        p.allow.clear();
        check(
            &p,
            "db.test:5432",
            "blocked-by-allowlist (no rule of network.agent allows db.test:5432)",
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = policy(Access::Limited, &["a.test:443"], &["a.test"], &[]);
        check(
            &p,
            "a.test:443",
            "blocked-by-allowlist (network.agent.deny a.test)",
        );
        let p = policy(Access::Unrestricted, &[], &["*.test"], &[]);
        check(
            &p,
            "a.test:443",
            "blocked-by-allowlist (network.agent.deny *.test)",
        );
        check(&p, "a.example:443", "allow -");
    }

    /// Regression: `methods` on `[network.agent]` refused the harness's POST to its own
    /// model endpoint.
    #[test]
    fn no_method_list_applies_to_hangars_own_rules() {
        let mut p = policy(Access::Limited, &["docs.test"], &[], &["GET"]);
        p.allow.push(Rule::hangars(
            HostRule::parse("models.test:8443").unwrap(),
            "agent.endpoint",
        ));
        check(
            &p,
            "models.test:8443",
            "allow agent.endpoint models.test:8443 internal-ok",
        );
        assert_eq!(p.check_method("Models.Test.", 8443, "POST"), None);
        // The same host on another port, and the environment's hosts, keep the list.
        assert!(p.check_method("models.test", 443, "POST").is_some());
        check(
            &p,
            "docs.test:443",
            "allow network.agent.allow docs.test intercept",
        );
        assert!(p.check_method("docs.test", 443, "POST").is_some());
    }

    #[test]
    fn methods_and_injections_make_a_host_intercepted() {
        let p = policy(Access::Limited, &["a.test"], &[], &["GET", "HEAD"]);
        check(
            &p,
            "a.test:443",
            "allow network.agent.allow a.test intercept",
        );
        assert_eq!(p.check_method("a.test", 443, "GET"), None);
        assert_eq!(
            p.check_method("a.test", 443, "POST").as_deref(),
            Some("network.agent.methods = [GET, HEAD]")
        );
        let mut p = policy(Access::Limited, &["a.test", "b.test"], &[], &[]);
        p.injections.push(Injection {
            name: "KEY".into(),
            placeholder: "hangar-placeholder-0".into(),
            value: Secret::new("value".into()).unwrap(),
            hosts: vec![HostRule::parse("a.test").unwrap()],
            header: "authorization".into(),
            format: "Bearer {}".into(),
            plain_http: false,
        });
        check(
            &p,
            "a.test:443",
            "allow network.agent.allow a.test intercept",
        );
        check(&p, "b.test:443", "allow network.agent.allow b.test");
        assert_eq!(p.check_method("b.test", 443, "POST"), None);
        p.intercept_all = true;
        check(
            &p,
            "b.test:443",
            "allow network.agent.allow b.test intercept",
        );
        check(
            &p,
            "c.test:443",
            "blocked-by-allowlist (no rule of network.agent allows c.test:443)",
        );
    }
}
