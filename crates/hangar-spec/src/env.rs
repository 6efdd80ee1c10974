//! The environment file (`.hangar/environment.toml`): parsed into spanned raw values,
//! then validated into [`Environment`], whose values are known good. Every error names
//! the file, the line and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use crate::duration::{format_duration, parse_duration};
use crate::ids::EnvName;
use crate::size::{format_bytes, parse_bytes};

/// One problem in an environment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub message: String,
}

/// An environment file that could not be read; lists every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}: {}", self.file, d.line, d.message)?;
        }
        Ok(())
    }
}

/// The image of an environment file that names none: built by hangar from Debian
/// packages with the common toolchains (`hangar image build hangar-default`).
pub const DEFAULT_IMAGE: &str = "hangar-default";

/// A validated environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Environment {
    pub name: EnvName,
    /// `follow = true`: the stored environment takes the repository's
    /// [`REPO_ENV_FILE`] at its default branch's tip for each task (what only the owner
    /// may change excepted).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
    /// A URL git understands, or a local path (made absolute by the caller).
    pub repo: String,
    pub default_branch: String,
    /// [`DEFAULT_IMAGE`] when the file names none.
    pub image: String,
    pub setup: Setup,
    pub maintenance: Maintenance,
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretDecl>,
    pub network: Network,
    pub agent: Agent,
    pub cache: Cache,
    pub resources: ResourceLimits,
    /// `[toolchains]`: tool to the exact version installed in setup from its registry.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub toolchains: BTreeMap<String, String>,
    /// `[forge]`: the forge the repository lives on, for pull requests and webhooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forge: Option<Forge>,
}

spelled_enum! {
    ForgeKind {
        GitHub = "github",
    }
}

/// The `author_association` values GitHub gives a comment's author.
pub const ASSOCIATIONS: &[&str] = &[
    "OWNER",
    "MEMBER",
    "COLLABORATOR",
    "CONTRIBUTOR",
    "FIRST_TIME_CONTRIBUTOR",
    "FIRST_TIMER",
    "MANNEQUIN",
    "NONE",
];

/// Who may trigger hangar from a comment unless `[forge] trusted` says otherwise: those
/// with write access.
pub const DEFAULT_TRUSTED: &[&str] = &["OWNER", "MEMBER", "COLLABORATOR"];

/// The commits hangar makes unless `[forge] author` names someone.
pub const DEFAULT_AUTHOR: &str = "hangar <hangar@localhost>";

/// github.com's API.
pub const GITHUB_API: &str = "https://api.github.com";

/// `[forge]`: where pull requests are opened and webhooks come from. The two secrets
/// serve hangar on the host alone (no phase gets them unless their declarations say so).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forge {
    pub kind: ForgeKind,
    /// `owner/name` on the forge.
    pub repository: String,
    /// The API's base URL (GitHub Enterprise Server: `https://HOST/api/v3`).
    pub api: String,
    /// The declared secret holding the token that pushes and calls the API.
    pub token: String,
    /// The declared secret that signs webhook deliveries; without it no webhook is heard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// The handle a comment names to call hangar, `@hangar`.
    pub mention: String,
    /// The `author_association`s that may trigger a task from a comment.
    pub trusted: Vec<String>,
    /// Workflows whose failed runs start an autofix task, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub autofix: Vec<String>,
    /// `Name <email>`: the author and committer of hangar's commits.
    pub author: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setup {
    pub script: String,
    pub auto_install: bool,
    /// What a secret value found in the snapshot after setup does.
    pub on_secret_leak: LeakPolicy,
    /// `[setup.install.<tool>]`: auto-install's command for a tool, changed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub install: BTreeMap<String, InstallChange>,
    /// The wall clock each of setup's scripts (auto-install, the setup script) gets:
    /// repository code runs there, and a hung install must not hold a slot for ever.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

/// Where a repository keeps its environment file, which `follow = true` follows.
pub const REPO_ENV_FILE: &str = ".hangar/environment.toml";

/// The toolchains `[toolchains]` pins: those a reachable registry serves (Node from the
/// npm registry, uv from the Python index).
pub const TOOLCHAINS: [&str; 2] = ["node", "uv"];

/// The tools auto-install runs, by the names `[setup.install.<tool>]` takes.
pub const INSTALL_TOOLS: [&str; 9] = [
    "pnpm", "yarn", "npm", "uv", "poetry", "pipenv", "pip", "cargo", "go",
];

/// How an environment changes auto-install's command for one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallChange {
    /// Flags added to the command (`args = "--no-audit"`).
    Args(String),
    /// The whole command instead (`command = "pip install uv && uv sync --frozen"`): it
    /// may install the tool first, so the image need not have it.
    Command(String),
}

spelled_enum! {
    /// `fail`: the build fails naming the secret and the file; `scrub`: the value is
    /// replaced by the secret's placeholder in that file.
    LeakPolicy {
        Fail = "fail",
        Scrub = "scrub",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Maintenance {
    pub script: String,
    /// The wall clock the maintenance script gets.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

spelled_enum! {
    SecretPhase {
        Setup = "setup",
        Maintenance = "maintenance",
        Agent = "agent",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretDecl {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject: Option<Inject>,
    pub phases: Vec<SecretPhase>,
}

/// Where the proxy swaps a projected secret's placeholder for its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inject {
    pub hosts: Vec<HostRule>,
    pub header: String,
    /// Contains `{}` exactly once: where the value goes.
    pub format: String,
    /// Also inject into plain-HTTP requests (every host then names its port). Without it
    /// the value goes out only inside TLS the proxy verified, never readable on the wire.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub plain_http: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    pub setup: NetworkPolicy,
    pub maintenance: NetworkPolicy,
    pub agent: NetworkPolicy,
}

spelled_enum! {
    Access {
        Off = "off",
        Limited = "limited",
        Unrestricted = "unrestricted",
    }
}

spelled_enum! {
    Preset {
        PackageManagers = "package-managers",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkPolicy {
    pub access: Access,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<HostRule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<HostRule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub presets: Vec<Preset>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

impl NetworkPolicy {
    fn with_access(access: Access) -> NetworkPolicy {
        NetworkPolicy {
            access,
            allow: Vec::new(),
            deny: Vec::new(),
            presets: Vec::new(),
            methods: Vec::new(),
        }
    }
}

/// `host`, `*.suffix`, either with an optional `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// Lowercase; a leading `*.` matches any subdomain (not the bare suffix).
    pub pattern: String,
    pub port: Option<u16>,
}

impl HostRule {
    pub fn parse(s: &str) -> Result<HostRule, String> {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("`{s}` has a bad port `{p}`"))?;
                (h, Some(port))
            }
            _ => (s, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = host.strip_prefix("*.").unwrap_or(host);
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let is_ip = name.parse::<std::net::IpAddr>().is_ok();
        if !is_ip && (name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label)) {
            return Err(format!(
                "`{s}` is not a host rule (use `example.com`, `*.example.com`, optionally `:443`)"
            ));
        }
        Ok(HostRule {
            pattern: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The loopback address this rule's host is (`localhost` is 127.0.0.1), if it is one.
    pub fn loopback_ip(&self) -> Option<std::net::IpAddr> {
        match self.pattern.as_str() {
            "localhost" => Some(std::net::IpAddr::from([127, 0, 0, 1])),
            other => other
                .parse::<std::net::IpAddr>()
                .ok()
                .filter(|ip| ip.is_loopback()),
        }
    }

    /// Whether a request to `host:port` matches this rule.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_ok = match self.pattern.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.pattern,
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = self.pattern.contains(':');
        match (bracket, self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.pattern),
            (false, Some(p)) => write!(f, "{}:{p}", self.pattern),
            (_, None) => f.write_str(&self.pattern),
        }
    }
}

impl Serialize for HostRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

spelled_enum! {
    Harness {
        Codex = "codex",
        Claude = "claude",
        Openclaw = "openclaw",
        Hermes = "hermes",
        Aider = "aider",
        Script = "script",
    }
}

spelled_enum! {
    Approval {
        ReadOnly = "read-only",
        Auto = "auto",
        FullAccess = "full-access",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    pub harness: Harness,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The name of a declared secret, projected for the endpoint's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub approval: Approval,
    /// With the `script` harness: bash run in the workspace as the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// The unprivileged user the agent and the check run as, owning the workspace and its
    /// home (setup and maintenance still run as root); `None`: root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The largest diff an attempt may hand back, in bytes; a larger one is refused.
    #[serde(serialize_with = "ser_bytes")]
    pub max_diff: u64,
}

impl Agent {
    /// The endpoint's exact host and port (the scheme's port when it names none), as a
    /// rule, and whether it is https.
    pub fn endpoint_rule(&self) -> Option<(HostRule, bool)> {
        url_rule(self.endpoint.as_deref()?)
    }
}

impl Forge {
    /// The API's exact host and port, as a rule, and whether it is https.
    pub fn api_rule(&self) -> Option<(HostRule, bool)> {
        url_rule(&self.api)
    }
}

/// An http(s) URL's exact host and port (the scheme's port when it names none), as a
/// rule, and whether it is https; `None` for another scheme or a bad host.
fn url_rule(url: &str) -> Option<(HostRule, bool)> {
    let (tls, rest) = match url.strip_prefix("https://") {
        Some(r) => (true, r),
        None => (false, url.strip_prefix("http://")?),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let mut rule = HostRule::parse(authority).ok()?;
    rule.port.get_or_insert(if tls { 443 } else { 80 });
    Some((rule, tls))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cache {
    #[serde(serialize_with = "ser_duration")]
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct ResourceLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_bytes"
    )]
    pub memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// What the sandbox may write (its upper dir's allocated size).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_bytes"
    )]
    pub disk: Option<u64>,
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// A size as the file writes it: with its unit where that is exact, else in bytes
/// (`format_bytes` rounds to a tenth of a unit, and a stored file must read back the same).
fn exact_bytes(b: u64) -> String {
    let text = format_bytes(b);
    if parse_bytes(&text) == Ok(b) {
        text
    } else {
        b.to_string()
    }
}

fn ser_bytes<S: Serializer>(b: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&exact_bytes(*b))
}

fn ser_opt_bytes<S: Serializer>(b: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_str(&exact_bytes(*b)),
        None => s.serialize_none(),
    }
}

pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// `[setup] timeout` unless set: an install that compiles a large tree fits, a hung one
/// does not hold its slot for long.
pub const DEFAULT_SETUP_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// `[maintenance] timeout` unless set: maintenance refreshes what setup made.
pub const DEFAULT_MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(12 * 3600);
/// `[agent] max_diff` unless set: far above any change a person reviews, far below what
/// a forgotten `node_modules` weighs.
pub const DEFAULT_MAX_DIFF: u64 = 10 << 20;
const METHODS: &[&str] = &[
    "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "TRACE",
];

impl Environment {
    /// Parses and validates an environment file; `file` names it in errors.
    pub fn parse(file: &str, src: &str) -> Result<Environment, SpecError> {
        let raw: RawEnv = toml::from_str(src).map_err(|e| SpecError {
            file: file.to_string(),
            diagnostics: vec![toml_diagnostic(src, &e)],
        })?;
        let mut cx = Cx {
            src,
            diags: Vec::new(),
        };
        let env = raw.validate(&mut cx);
        match env {
            Some(env) if cx.diags.is_empty() => Ok(env),
            _ => Err(SpecError {
                file: file.to_string(),
                diagnostics: cx.diags,
            }),
        }
    }

    /// The environment as an environment file; [`Environment::parse`] reads it back equal.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an environment serializes to TOML")
    }

    /// Secrets that reach a phase's execs.
    pub fn secrets_for(&self, phase: SecretPhase) -> impl Iterator<Item = (&str, &SecretDecl)> {
        self.secrets
            .iter()
            .filter(move |(_, d)| d.phases.contains(&phase))
            .map(|(k, d)| (k.as_str(), d))
    }
}

/// Collects diagnostics while validating.
struct Cx<'a> {
    src: &'a str,
    diags: Vec<Diagnostic>,
}

impl Cx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        line_of(self.src, span.start)
    }

    fn err(&mut self, span: &Range<usize>, key: &str, message: impl fmt::Display) {
        self.diags.push(Diagnostic {
            line: self.line(span),
            message: format!("`{key}`: {message}"),
        });
    }

    /// Runs a check on a spanned value; on failure records it under `key`.
    fn check<T, U>(
        &mut self,
        key: &str,
        v: &Spanned<T>,
        f: impl FnOnce(&T) -> Result<U, String>,
    ) -> Option<U> {
        match f(v.get_ref()) {
            Ok(u) => Some(u),
            Err(m) => {
                self.err(&v.span(), key, m);
                None
            }
        }
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

/// Turns toml's error into a diagnostic in our words, naming the key when the line has one.
fn toml_diagnostic(src: &str, e: &toml::de::Error) -> Diagnostic {
    let span = e.span().unwrap_or(0..0);
    let line = line_of(src, span.start);
    let mut message = e
        .message()
        .trim()
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key");
    if let Some(i) = message.find(", expected") {
        let rest = message[i + 2..].to_string();
        message = format!("{} ({rest})", &message[..i]);
    }
    let line_text = src.lines().nth(line - 1).unwrap_or("");
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let message = match key {
        Some(k) if !message.contains(&format!("`{k}`")) => format!("`{k}`: {message}"),
        _ => message,
    };
    Diagnostic { line, message }
}

fn valid_var_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_var_name(kind: &str, s: &str) -> Result<(), String> {
    if !valid_var_name(s) {
        return Err(format!(
            "`{s}` is not a valid {kind} name (letters, digits and `_`, not starting with a digit)"
        ));
    }
    if s.starts_with("HANGAR_") {
        return Err(format!(
            "`{s}`: names starting with HANGAR_ are hangar's own"
        ));
    }
    Ok(())
}

/// A branch name git accepts (the common rules of `git check-ref-format`).
pub fn check_branch(s: &str) -> Result<String, String> {
    let bad = s.is_empty()
        || s.starts_with('-')
        || s.starts_with('/')
        || s.ends_with('/')
        || s.ends_with('.')
        || s.ends_with(".lock")
        || s.contains("..")
        || s.contains("//")
        || s.contains("@{")
        || s.split('/').any(|c| c.starts_with('.'))
        || s.chars()
            .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c));
    if bad {
        Err(format!("`{s}` is not a valid branch name"))
    } else {
        Ok(s.to_string())
    }
}

fn check_repo(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("is empty; give a git URL or a local path".into());
    }
    if s.starts_with('-') {
        return Err(format!("`{s}` starts with `-`"));
    }
    if let Some((scheme, _)) = s.split_once("::") {
        return Err(format!(
            "`{scheme}::` transports are refused; use https, ssh, git or a path"
        ));
    }
    if let Some((scheme, _)) = s.split_once("://") {
        if !["https", "http", "ssh", "git", "file"].contains(&scheme) {
            return Err(format!("unsupported URL scheme `{scheme}`"));
        }
    }
    Ok(s.to_string())
}

fn check_endpoint(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("`{s}` is not an http(s) URL"))?;
    let authority = rest.split('/').next().unwrap_or("");
    HostRule::parse(authority).map_err(|_| format!("`{s}` has no valid host"))?;
    Ok(s.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    name: Option<Spanned<String>>,
    follow: Option<bool>,
    repo: Option<Spanned<String>>,
    default_branch: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    #[serde(default)]
    setup: RawSetup,
    #[serde(default)]
    maintenance: RawMaintenance,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    secrets: BTreeMap<String, Spanned<RawSecret>>,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    resources: RawResources,
    #[serde(default)]
    toolchains: BTreeMap<String, Spanned<String>>,
    forge: Option<Spanned<RawForge>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForge {
    kind: Option<Spanned<String>>,
    repository: Option<Spanned<String>>,
    api: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    webhook_secret: Option<Spanned<String>>,
    mention: Option<Spanned<String>>,
    trusted: Option<Spanned<Vec<String>>>,
    autofix: Option<Vec<String>>,
    author: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSetup {
    script: Option<String>,
    auto_install: Option<bool>,
    on_secret_leak: Option<Spanned<String>>,
    #[serde(default)]
    install: BTreeMap<String, Spanned<RawInstall>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstall {
    args: Option<String>,
    command: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMaintenance {
    script: Option<String>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    inject: Option<Spanned<RawInject>>,
    phases: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInject {
    hosts: Spanned<Vec<String>>,
    header: Spanned<String>,
    #[serde(default)]
    format: Option<Spanned<String>>,
    #[serde(default)]
    plain_http: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    setup: Option<Spanned<RawPolicy>>,
    maintenance: Option<Spanned<RawPolicy>>,
    agent: Option<Spanned<RawPolicy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    access: Option<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    presets: Vec<Spanned<String>>,
    #[serde(default)]
    methods: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    harness: Option<Spanned<String>>,
    model: Option<String>,
    endpoint: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    approval: Option<Spanned<String>>,
    script: Option<String>,
    timeout: Option<Spanned<String>>,
    check: Option<String>,
    max_diff: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    ttl: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpus: Option<Spanned<f64>>,
    memory: Option<Spanned<String>>,
    pids: Option<Spanned<i64>>,
    disk: Option<Spanned<String>>,
}

impl RawEnv {
    fn validate(self, cx: &mut Cx<'_>) -> Option<Environment> {
        let top = 0..0;
        let required = |v: &Option<Spanned<String>>, key: &str, cx: &mut Cx<'_>| {
            if v.is_none() {
                cx.err(&top, key, "missing (required)");
            }
        };
        required(&self.name, "name", cx);
        required(&self.repo, "repo", cx);

        let name = self.name.as_ref().and_then(|n| {
            cx.check("name", n, |s| {
                s.parse::<EnvName>().map_err(|e| e.to_string())
            })
        });
        let repo = self
            .repo
            .as_ref()
            .and_then(|r| cx.check("repo", r, |s| check_repo(s)));
        let default_branch = match &self.default_branch {
            Some(b) => cx.check("default_branch", b, |s| check_branch(s)),
            None => Some("main".to_string()),
        };
        let image = match &self.image {
            Some(i) => cx.check("image", i, |s| {
                if s.trim().is_empty() || s.chars().any(char::is_whitespace) {
                    Err(format!("`{s}` is not an image name or reference"))
                } else {
                    Ok(s.clone())
                }
            }),
            None => Some(DEFAULT_IMAGE.to_string()),
        };

        let mut env = BTreeMap::new();
        for (k, v) in &self.env {
            if let Err(m) = check_var_name("variable", k) {
                cx.err(&v.span(), &format!("env.{k}"), m);
            }
            env.insert(k.clone(), v.get_ref().clone());
        }

        let mut secrets = BTreeMap::new();
        for (k, v) in &self.secrets {
            let key = format!("secrets.{k}");
            if let Err(m) = check_var_name("secret", k) {
                cx.err(&v.span(), &key, m);
            }
            if env.contains_key(k) {
                cx.err(
                    &v.span(),
                    &key,
                    "is also set in [env]; a name is a secret or a variable, not both",
                );
            }
            if let Some(decl) = validate_secret(cx, &key, v.get_ref()) {
                secrets.insert(k.clone(), decl);
            }
        }

        let network = Network {
            setup: validate_policy(
                cx,
                "network.setup",
                &self.network.setup,
                Access::Unrestricted,
            ),
            maintenance: validate_policy(
                cx,
                "network.maintenance",
                &self.network.maintenance,
                Access::Unrestricted,
            ),
            agent: validate_policy(cx, "network.agent", &self.network.agent, Access::Off),
        };

        let agent = validate_agent(cx, self.agent, &secrets);
        // The model key serves the agent only (as a placeholder, projected for the
        // endpoint), unless its declaration names other phases.
        if let Some(key) = agent.as_ref().and_then(|a| a.key.as_ref()) {
            if let (Some(decl), Some(raw)) = (secrets.get_mut(key), self.secrets.get(key)) {
                if raw.get_ref().phases.is_none() {
                    decl.phases.clear();
                }
            }
        }
        let forge = match &self.forge {
            Some(f) => validate_forge(cx, f, repo.as_deref(), &secrets),
            None => None,
        };
        // The forge's secrets serve hangar on the host, unless their declarations name
        // phases.
        if let Some(f) = &forge {
            for key in std::iter::once(&f.token).chain(f.webhook_secret.as_ref()) {
                if let (Some(decl), Some(raw)) = (secrets.get_mut(key), self.secrets.get(key)) {
                    if raw.get_ref().phases.is_none() {
                        decl.phases.clear();
                    }
                }
            }
        }
        let on_secret_leak = match &self.setup.on_secret_leak {
            Some(p) => cx
                .check("setup.on_secret_leak", p, |s| s.parse::<LeakPolicy>())
                .unwrap_or(LeakPolicy::Fail),
            None => LeakPolicy::Fail,
        };
        let mut toolchains = BTreeMap::new();
        for (tool, version) in &self.toolchains {
            let key = format!("toolchains.{tool}");
            let checked = if TOOLCHAINS.contains(&tool.as_str()) {
                let v = version.get_ref();
                let parts: Vec<&str> = v.split('.').collect();
                if parts.len() == 3
                    && parts
                        .iter()
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                {
                    Ok(v.clone())
                } else {
                    Err(format!(
                        "`{v}` is not an exact version (MAJOR.MINOR.PATCH, e.g. 22.11.0)"
                    ))
                }
            } else {
                Err(format!(
                    "is no toolchain hangar installs (one of {}; others come from the image)",
                    TOOLCHAINS.join(", ")
                ))
            };
            match checked {
                Ok(v) => {
                    toolchains.insert(tool.clone(), v);
                }
                Err(m) => cx.err(&version.span(), &key, m),
            }
        }
        let mut install = BTreeMap::new();
        for (tool, raw) in &self.setup.install {
            let key = format!("setup.install.{tool}");
            let r = raw.get_ref();
            let change = if !INSTALL_TOOLS.contains(&tool.as_str()) {
                Err(format!(
                    "is no tool auto-install runs (one of {})",
                    INSTALL_TOOLS.join(", ")
                ))
            } else {
                match (&r.args, &r.command) {
                    (Some(a), None) => Ok(InstallChange::Args(a.clone())),
                    (None, Some(c)) if !c.trim().is_empty() => {
                        Ok(InstallChange::Command(c.clone()))
                    }
                    (None, Some(_)) => Err("has an empty `command`".to_string()),
                    (Some(_), Some(_)) => {
                        Err("gives both `args` and `command`: give one".to_string())
                    }
                    (None, None) => Err("gives neither `args` nor `command`".to_string()),
                }
            };
            match change {
                Ok(c) => {
                    install.insert(tool.clone(), c);
                }
                Err(m) => cx.err(&raw.span(), &key, m),
            }
        }
        let cache = Cache {
            ttl: match &self.cache.ttl {
                Some(t) => cx
                    .check("cache.ttl", t, |s| parse_duration(s))
                    .unwrap_or(DEFAULT_CACHE_TTL),
                None => DEFAULT_CACHE_TTL,
            },
        };
        let r = &self.resources;
        let resources = ResourceLimits {
            cpus: r.cpus.as_ref().and_then(|c| {
                cx.check("resources.cpus", c, |c| {
                    if *c > 0.0 && *c <= 1024.0 {
                        Ok(*c)
                    } else {
                        Err(format!("{c} is not a CPU count (give a number above 0)"))
                    }
                })
            }),
            memory: r
                .memory
                .as_ref()
                .and_then(|m| cx.check("resources.memory", m, |s| parse_bytes(s))),
            disk: r
                .disk
                .as_ref()
                .and_then(|d| cx.check("resources.disk", d, |s| parse_bytes(s))),
            pids: r.pids.as_ref().and_then(|p| {
                cx.check("resources.pids", p, |p| {
                    if *p >= 1 {
                        Ok(*p)
                    } else {
                        Err(format!("{p} is not a process limit (give at least 1)"))
                    }
                })
            }),
        };

        let setup_timeout = step_timeout(
            cx,
            "setup.timeout",
            &self.setup.timeout,
            DEFAULT_SETUP_TIMEOUT,
        );
        let maintenance_timeout = step_timeout(
            cx,
            "maintenance.timeout",
            &self.maintenance.timeout,
            DEFAULT_MAINTENANCE_TIMEOUT,
        );

        Some(Environment {
            name: name?,
            follow: self.follow.unwrap_or(false),
            repo: repo?,
            default_branch: default_branch?,
            image: image?,
            setup: Setup {
                script: self.setup.script.unwrap_or_default(),
                auto_install: self.setup.auto_install.unwrap_or(true),
                on_secret_leak,
                install,
                timeout: setup_timeout?,
            },
            maintenance: Maintenance {
                script: self.maintenance.script.unwrap_or_default(),
                timeout: maintenance_timeout?,
            },
            env,
            secrets,
            network,
            agent: agent?,
            cache,
            resources,
            toolchains,
            forge,
        })
    }
}

fn validate_forge(
    cx: &mut Cx<'_>,
    raw: &Spanned<RawForge>,
    repo: Option<&str>,
    secrets: &BTreeMap<String, SecretDecl>,
) -> Option<Forge> {
    let span = raw.span();
    let raw = raw.get_ref();
    let kind = match &raw.kind {
        Some(k) => cx.check("forge.kind", k, |s| s.parse::<ForgeKind>()),
        None => {
            cx.err(&span, "forge.kind", "missing (required): `github`");
            None
        }
    };
    let repository = match &raw.repository {
        Some(r) => cx.check("forge.repository", r, |s| check_forge_repository(s)),
        None => match repo.map(repository_of_url) {
            Some(Some(r)) => Some(r),
            Some(None) => {
                cx.err(
                    &span,
                    "forge.repository",
                    "missing, and `repo` is not an https://HOST/OWNER/NAME URL to read it from",
                );
                None
            }
            None => None,
        },
    };
    let api = match &raw.api {
        Some(a) => cx.check("forge.api", a, |s| check_forge_api(s)),
        None => Some(GITHUB_API.to_string()),
    };
    let secret = |cx: &mut Cx<'_>, key: &str, v: &Spanned<String>| {
        cx.check(key, v, |s| {
            if secrets.contains_key(s) {
                Ok(s.clone())
            } else {
                Err(format!("names no secret: declare it with [secrets.{s}]"))
            }
        })
    };
    let token = match &raw.token {
        Some(t) => secret(cx, "forge.token", t),
        None => {
            cx.err(
                &span,
                "forge.token",
                "missing (required): the secret holding the token that pushes and opens pull requests",
            );
            None
        }
    };
    let webhook_secret = match &raw.webhook_secret {
        Some(w) => Some(secret(cx, "forge.webhook_secret", w)?),
        None => None,
    };
    let mention = match &raw.mention {
        Some(m) => cx.check("forge.mention", m, |s| {
            let handle = s.strip_prefix('@').unwrap_or("");
            if !handle.is_empty()
                && handle
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            {
                Ok(s.clone())
            } else {
                Err(format!("`{s}` is not a handle like `@hangar`"))
            }
        }),
        None => Some("@hangar".to_string()),
    };
    let trusted = match &raw.trusted {
        Some(t) => cx.check("forge.trusted", t, |list| {
            let mut out: Vec<String> = Vec::new();
            for a in list {
                let up = a.to_ascii_uppercase();
                if !ASSOCIATIONS.contains(&up.as_str()) {
                    return Err(format!(
                        "`{a}` is not an author association (one of {})",
                        ASSOCIATIONS.join(", ")
                    ));
                }
                if !out.contains(&up) {
                    out.push(up);
                }
            }
            Ok(out)
        }),
        None => Some(DEFAULT_TRUSTED.iter().map(|s| s.to_string()).collect()),
    };
    let author = match &raw.author {
        Some(a) => cx.check("forge.author", a, |s| check_author(s)),
        None => Some(DEFAULT_AUTHOR.to_string()),
    };
    Some(Forge {
        kind: kind?,
        repository: repository?,
        api: api?,
        token: token?,
        webhook_secret,
        mention: mention?,
        trusted: trusted?,
        autofix: raw.autofix.clone().unwrap_or_default(),
        author: author?,
    })
}

fn check_forge_repository(s: &str) -> Result<String, String> {
    let ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match s.split_once('/') {
        Some((o, n)) if ok(o) && ok(n) => Ok(s.to_string()),
        _ => Err(format!("`{s}` is not `owner/name`")),
    }
}

/// `owner/name` out of `https://HOST/OWNER/NAME[.git][/]`.
fn repository_of_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let mut parts = rest.trim_end_matches('/').split('/');
    let _host = parts.next()?;
    let owner = parts.next()?;
    let name = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let name = name.strip_suffix(".git").unwrap_or(name);
    check_forge_repository(&format!("{owner}/{name}")).ok()
}

/// An https URL, or plain http to a loopback address (a test's or a tunnel's).
fn check_forge_api(s: &str) -> Result<String, String> {
    let trimmed = s.trim_end_matches('/');
    if !trimmed.starts_with("https://") && !trimmed.starts_with("http://") {
        return Err(format!("`{s}` is not an https:// URL"));
    }
    match url_rule(trimmed) {
        Some((rule, _)) if rule.pattern.starts_with('*') => Err(format!("`{s}` names no host")),
        None => Err(format!("`{s}` names no host")),
        Some((rule, false)) if rule.loopback_ip().is_none() => Err(format!(
            "`{s}` is plain http beyond loopback: the token would cross the network unencrypted"
        )),
        Some(_) => Ok(trimmed.to_string()),
    }
}

/// `Name <email>`, one line.
fn check_author(s: &str) -> Result<String, String> {
    let bad = || format!("`{s}` is not `Name <email>`");
    let (name, rest) = s.split_once('<').ok_or_else(bad)?;
    let email = rest.strip_suffix('>').ok_or_else(bad)?;
    if name.trim().is_empty()
        || email.is_empty()
        || !email.contains('@')
        || s.chars().any(|c| c.is_control())
        || email.contains(['<', '>'])
        || name.contains('>')
    {
        return Err(bad());
    }
    Ok(format!("{} <{email}>", name.trim()))
}

/// A script's wall clock, `default` when unset.
fn step_timeout(
    cx: &mut Cx<'_>,
    key: &str,
    raw: &Option<Spanned<String>>,
    default: Duration,
) -> Option<Duration> {
    match raw {
        None => Some(default),
        Some(t) => cx.check(key, t, |s| parse_duration(s)),
    }
}

fn validate_secret(cx: &mut Cx<'_>, key: &str, raw: &RawSecret) -> Option<SecretDecl> {
    let inject = match &raw.inject {
        None => None,
        Some(inj) => {
            let i = inj.get_ref();
            let key = format!("{key}.inject");
            let mut hosts = Vec::new();
            if i.hosts.get_ref().is_empty() {
                cx.err(&i.hosts.span(), &format!("{key}.hosts"), "names no host");
            }
            for h in i.hosts.get_ref() {
                match HostRule::parse(h) {
                    Ok(r) => hosts.push(r),
                    Err(m) => cx.err(&i.hosts.span(), &format!("{key}.hosts"), m),
                }
            }
            let header = cx.check(&format!("{key}.header"), &i.header, |h| {
                let token = !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if token {
                    Ok(h.clone())
                } else {
                    Err(format!("`{h}` is not an HTTP header name"))
                }
            });
            let format = match &i.format {
                None => Some("{}".to_string()),
                Some(f) => cx.check(&format!("{key}.format"), f, |f| {
                    if f.matches("{}").count() == 1 {
                        Ok(f.clone())
                    } else {
                        Err(format!(
                            "`{f}` must contain `{{}}` exactly once (where the value goes)"
                        ))
                    }
                }),
            };
            let plain_http = match &i.plain_http {
                None => false,
                // A value sent in the clear goes to exactly the ports named, not to
                // whatever port a request picks.
                Some(p) => cx
                    .check(&format!("{key}.plain_http"), p, |on| {
                        match hosts.iter().find(|h| *on && h.port.is_none()) {
                            Some(h) => Err(format!(
                                "sends the value unencrypted, so every host names its port \
                                 (`{h}` names none)"
                            )),
                            None => Ok(*on),
                        }
                    })
                    .unwrap_or(false),
            };
            Some(Inject {
                hosts,
                header: header?,
                format: format?,
                plain_http,
            })
        }
    };
    let phases = match &raw.phases {
        None => vec![SecretPhase::Setup, SecretPhase::Maintenance],
        Some(p) => {
            let mut phases = Vec::new();
            for s in p.get_ref() {
                match s.parse::<SecretPhase>() {
                    Ok(ph) if !phases.contains(&ph) => phases.push(ph),
                    Ok(_) => {}
                    Err(m) => cx.err(&p.span(), &format!("{key}.phases"), m),
                }
            }
            if phases.contains(&SecretPhase::Agent) && inject.is_none() {
                cx.err(
                    &p.span(),
                    &format!("{key}.phases"),
                    "a secret reaches the agent phase only as a projected secret: add `inject`",
                );
            }
            phases.sort();
            phases
        }
    };
    Some(SecretDecl { inject, phases })
}

fn validate_policy(
    cx: &mut Cx<'_>,
    key: &str,
    raw: &Option<Spanned<RawPolicy>>,
    default: Access,
) -> NetworkPolicy {
    let Some(raw) = raw else {
        return NetworkPolicy::with_access(default);
    };
    let span = raw.span();
    let raw = raw.get_ref();
    let access = match &raw.access {
        Some(a) => cx
            .check(&format!("{key}.access"), a, |s| s.parse::<Access>())
            .unwrap_or(default),
        None => default,
    };
    let mut policy = NetworkPolicy::with_access(access);
    let rules = |cx: &mut Cx<'_>, name: &str, list: &[Spanned<String>]| -> Vec<HostRule> {
        list.iter()
            .filter_map(|r| cx.check(&format!("{key}.{name}"), r, |s| HostRule::parse(s)))
            .collect()
    };
    policy.allow = rules(cx, "allow", &raw.allow);
    policy.deny = rules(cx, "deny", &raw.deny);
    policy.presets = raw
        .presets
        .iter()
        .filter_map(|p| cx.check(&format!("{key}.presets"), p, |s| s.parse::<Preset>()))
        .collect();
    policy.methods = raw
        .methods
        .iter()
        .filter_map(|m| {
            cx.check(&format!("{key}.methods"), m, |s| {
                if METHODS.contains(&s.as_str()) {
                    Ok(s.clone())
                } else {
                    Err(format!("`{s}` is not one of {}", METHODS.join(", ")))
                }
            })
        })
        .collect();
    let limits = !(raw.allow.is_empty() && raw.presets.is_empty() && raw.methods.is_empty());
    if limits && access != Access::Limited {
        cx.err(
            &span,
            key,
            "`allow`, `presets` and `methods` apply only with access = \"limited\"",
        );
    }
    policy
}

fn validate_agent(
    cx: &mut Cx<'_>,
    raw: RawAgent,
    secrets: &BTreeMap<String, SecretDecl>,
) -> Option<Agent> {
    let harness = match &raw.harness {
        Some(h) => cx.check("agent.harness", h, |s| s.parse::<Harness>())?,
        None => Harness::Script,
    };
    let approval = match &raw.approval {
        Some(a) => cx.check("agent.approval", a, |s| s.parse::<Approval>())?,
        None => Approval::Auto,
    };
    let timeout = match &raw.timeout {
        Some(t) => cx.check("agent.timeout", t, |s| parse_duration(s))?,
        None => DEFAULT_AGENT_TIMEOUT,
    };
    let user = match &raw.user {
        Some(u) => Some(cx.check("agent.user", u, |s| check_user_name(s))?),
        None => None,
    };
    let max_diff = match &raw.max_diff {
        Some(m) => cx.check("agent.max_diff", m, |s| parse_bytes(s))?,
        None => DEFAULT_MAX_DIFF,
    };
    let endpoint = match &raw.endpoint {
        Some(e) => Some(cx.check("agent.endpoint", e, |s| check_endpoint(s))?),
        None => None,
    };
    let key = match &raw.key {
        Some(k) => Some(cx.check("agent.key", k, |s| {
            if secrets.contains_key(s) {
                Ok(s.clone())
            } else {
                Err(format!("names no secret: declare it with [secrets.{s}]"))
            }
        })?),
        None => None,
    };
    if let (Some(k), None) = (&raw.key, &endpoint) {
        cx.err(
            &k.span(),
            "agent.key",
            "needs `agent.endpoint`: the key is projected for the endpoint's host only",
        );
    }
    Some(Agent {
        harness,
        model: raw.model,
        endpoint,
        key,
        approval,
        script: raw.script,
        timeout,
        check: raw.check,
        user,
        max_diff,
    })
}

/// A user name as `useradd` takes it (its portable rules), and not root: root is the
/// default that `user` is there to leave.
fn check_user_name(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !first_ok || !rest_ok || s.len() > 32 {
        return Err(format!(
            "`{s}` is not a user name (lowercase letters, digits, `_` and `-`, starting with \
             a letter or `_`, at most 32)"
        ));
    }
    if s == "root" {
        return Err("names root, which the agent runs as without it".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "payments"
follow = true
repo = "https://git.example.com/acme/payments.git"
default_branch = "main"
image = "debian-bookworm"

[setup]
script = "pip install -e '.[test]'"
auto_install = true
on_secret_leak = "scrub"

[setup.install.npm]
args = "--no-audit"

[setup.install.uv]
command = "pip install uv && uv sync --frozen"

[maintenance]
script = "pip install -e '.[test]'"

[env]
DATABASE_URL = "postgres://localhost/test"

[secrets.NPM_TOKEN]
[secrets.OPENAI_API_KEY]
[secrets.GH_TOKEN]
inject = { hosts = ["api.github.com"], header = "Authorization", format = "Bearer {}" }
phases = ["agent"]

[network.agent]
access = "limited"
allow = ["api.github.com", "*.internal.example"]
presets = ["package-managers"]
methods = ["GET", "HEAD", "OPTIONS"]

[agent]
harness = "codex"
model = "gpt-5.5"
endpoint = "https://api.openai.com/v1"
key = "OPENAI_API_KEY"
approval = "auto"
timeout = "30m"
check = "pytest -q"
user = "dev"
max_diff = "1000001"

[cache]
ttl = "12h"

[resources]
cpus = 2
memory = "4GiB"
pids = 4096

[toolchains]
node = "22.11.0"
"#;

    #[test]
    fn design_example_parses_and_round_trips() {
        let env = Environment::parse("env.toml", FULL).unwrap();
        assert_eq!(env.name.as_str(), "payments");
        assert_eq!(env.agent.harness, Harness::Codex);
        assert_eq!(env.agent.timeout, Duration::from_secs(1800));
        assert_eq!(env.resources.memory, Some(4 << 30));
        assert_eq!(env.resources.cpus, Some(2.0));
        assert_eq!(env.network.agent.access, Access::Limited);
        assert_eq!(env.network.setup.access, Access::Unrestricted);
        assert_eq!(
            env.secrets["NPM_TOKEN"].phases,
            vec![SecretPhase::Setup, SecretPhase::Maintenance]
        );
        assert_eq!(env.secrets["GH_TOKEN"].phases, vec![SecretPhase::Agent]);
        assert_eq!(env.setup.on_secret_leak, LeakPolicy::Scrub);
        // A size that is no whole number of a unit reads back the same.
        assert_eq!(env.agent.max_diff, 1_000_001);
        assert_eq!(env.agent.user.as_deref(), Some("dev"));
        assert_eq!(env.toolchains["node"], "22.11.0");
        assert!(env.follow);
        assert_eq!(
            env.setup.install["uv"],
            InstallChange::Command("pip install uv && uv sync --frozen".into())
        );
        assert_eq!(
            env.setup.install["npm"],
            InstallChange::Args("--no-audit".into())
        );
        let again = Environment::parse("again.toml", &env.to_toml()).unwrap();
        assert_eq!(again, env);
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let env = Environment::parse(
            "m.toml",
            "name = \"m\"\nrepo = \"/srv/m\"\nimage = \"debian-bookworm\"\n",
        )
        .unwrap();
        assert_eq!(env.default_branch, "main");
        assert_eq!(env.agent.harness, Harness::Script);
        assert_eq!(env.agent.approval, Approval::Auto);
        assert_eq!(env.network.agent.access, Access::Off);
        assert_eq!(env.cache.ttl, DEFAULT_CACHE_TTL);
        assert!(env.setup.auto_install);
        assert_eq!(env.setup.on_secret_leak, LeakPolicy::Fail);
        assert_eq!(Environment::parse("x", &env.to_toml()).unwrap(), env);
    }

    #[test]
    fn file_without_image_uses_the_default_image() {
        let env = Environment::parse("m.toml", "name = \"m\"\nrepo = \"/srv/m\"\n").unwrap();
        assert_eq!(env.image, DEFAULT_IMAGE);
        assert_eq!(Environment::parse("x", &env.to_toml()).unwrap(), env);
    }

    const HEAD: &str = "name = \"e\"\nrepo = \"/srv/e\"\nimage = \"debian-bookworm\"\n";

    /// Parses `HEAD + body` and expects the first diagnostic to be on `line` and to
    /// contain `message`.
    fn check(body: &str, line: usize, message: &str) {
        let src = format!("{HEAD}{body}");
        let err = Environment::parse("env.toml", &src).expect_err(body);
        let d = &err.diagnostics[0];
        assert!(
            d.line == line && d.message.contains(message),
            "for {body:?}: got line {} {:?}, want line {line} containing {message:?}",
            d.line,
            d.message
        );
        assert!(err.to_string().starts_with(&format!("env.toml:{line}: ")));
    }

    #[test]
    fn limits_and_timeouts_parse_and_round_trip() {
        let src = format!(
            "{HEAD}[setup]\ntimeout = \"2s\"\n[maintenance]\ntimeout = \"5m\"\n\
             [resources]\ndisk = \"2GiB\"\n"
        );
        let env = Environment::parse("env.toml", &src).unwrap();
        assert_eq!(env.setup.timeout, Duration::from_secs(2));
        assert_eq!(env.maintenance.timeout, Duration::from_secs(300));
        assert_eq!(env.resources.disk, Some(2 << 30));
        assert_eq!(Environment::parse("x", &env.to_toml()).unwrap(), env);

        let env = Environment::parse("env.toml", HEAD).unwrap();
        assert_eq!(env.setup.timeout, DEFAULT_SETUP_TIMEOUT);
        assert_eq!(env.maintenance.timeout, DEFAULT_MAINTENANCE_TIMEOUT);
        assert_eq!(env.resources.disk, None);
    }

    #[test]
    fn bad_limits_and_timeouts_name_the_key() {
        check(
            "[setup]\ntimeout = \"soon\"\n",
            5,
            "`setup.timeout`: `soon` is not a duration",
        );
        check(
            "[setup]\ntimeout = \"0s\"\n",
            5,
            "`setup.timeout`: `0s` is zero",
        );
        check(
            "[maintenance]\ntimeout = \"10\"\n",
            5,
            "`maintenance.timeout`: `10` lacks a unit",
        );
        check(
            "[resources]\ndisk = \"big\"\n",
            5,
            "`resources.disk`: `big` is not a size",
        );
        check(
            "[resources]\ndisk = \"0\"\n",
            5,
            "`resources.disk`: `0` is out of range",
        );
        check(
            "[resources]\ndisk = 5\n",
            5,
            "`disk`: invalid type: integer `5`",
        );
    }

    #[test]
    fn bad_files_name_key_and_line() {
        check("colour = \"red\"\n", 4, "unknown key `colour`");
        check(
            "[setup]\nscrpt = \"x\"\n",
            5,
            "unknown key `scrpt` (expected one of `script`, `auto_install`, `on_secret_leak`, `install`, `timeout`)",
        );
        check("[setpu]\n", 4, "unknown key `setpu`");
        check(
            "[setup]\nauto_install = \"yes\"\n",
            5,
            "`auto_install`: invalid type",
        );
        check(
            "[toolchains]\nnode = \"22\"\n",
            5,
            "`toolchains.node`: `22` is not an exact version (MAJOR.MINOR.PATCH",
        );
        check(
            "[toolchains]\nrust = \"1.80.0\"\n",
            5,
            "`toolchains.rust`: is no toolchain hangar installs (one of node, uv;",
        );
        check(
            "[setup.install.npx]\nargs = \"-y\"\n",
            4,
            "`setup.install.npx`: is no tool auto-install runs (one of pnpm, yarn, npm,",
        );
        check(
            "[setup.install.npm]\nargs = \"-y\"\ncommand = \"npm i\"\n",
            4,
            "`setup.install.npm`: gives both `args` and `command`: give one",
        );
        check(
            "[setup.install.npm]\nflags = \"-y\"\n",
            5,
            "unknown key `flags`",
        );
        check(
            "[agent]\nuser = \"Bob\"\n",
            5,
            "`agent.user`: `Bob` is not a user name",
        );
        check("[agent]\nuser = \"root\"\n", 5, "`agent.user`: names root");
        check(
            "[agent]\nmax_diff = \"0\"\n",
            5,
            "`agent.max_diff`: `0` is out of range",
        );
        check(
            "[agent]\nmax_diff = \"lots\"\n",
            5,
            "`agent.max_diff`: `lots` is not a size",
        );
        check(
            "[agent]\ntimeout = \"3x\"\n",
            5,
            "`agent.timeout`: `3x` has an unknown unit `x`",
        );
        check(
            "[agent]\ntimeout = 30\n",
            5,
            "`timeout`: invalid type: integer `30`",
        );
        check(
            "[agent]\nharness = \"gpt\"\n",
            5,
            "`agent.harness`: `gpt` is not one of codex",
        );
        check(
            "[setup]\non_secret_leak = \"ignore\"\n",
            5,
            "`setup.on_secret_leak`: `ignore` is not one of fail, scrub",
        );
        check(
            "[agent]\napproval = \"yolo\"\n",
            5,
            "`agent.approval`: `yolo` is not one of read-only",
        );
        check(
            "[agent]\nendpoint = \"ftp://x\"\n",
            5,
            "`agent.endpoint`: `ftp://x` is not an http(s) URL",
        );
        check(
            "[agent]\nendpoint = \"https://m.example/v1\"\nkey = \"NOPE\"\n",
            6,
            "`agent.key`: names no secret",
        );
        check(
            "[secrets.T]\n[agent]\nkey = \"T\"\n",
            6,
            "`agent.key`: needs `agent.endpoint`",
        );
        check(
            "[env]\n\"1BAD\" = \"x\"\n",
            5,
            "`env.1BAD`: `1BAD` is not a valid variable name",
        );
        check("[env]\nHANGAR_X = \"x\"\n", 5, "hangar's own");
        check(
            "[env]\nPORT = 8080\n",
            5,
            "`PORT`: invalid type: integer `8080` (expected a string)",
        );
        check(
            "[env]\nT = \"x\"\n[secrets.T]\n",
            6,
            "`secrets.T`: is also set in [env]",
        );
        check(
            "[secrets.S]\nphases = [\"agent\"]\n",
            5,
            "only as a projected secret",
        );
        check(
            "[secrets.S]\nphases = [\"collect\"]\n",
            5,
            "`collect` is not one of setup, maintenance, agent",
        );
        check(
            "[secrets.S]\ninject = { hosts = [\"api.x\"], header = \"Bad Header\" }\n",
            5,
            "`secrets.S.inject.header`: `Bad Header` is not an HTTP header name",
        );
        check(
            "[secrets.S]\ninject = { hosts = [\"api.x\"], header = \"A\", format = \"Bearer\" }\n",
            5,
            "must contain `{}` exactly once",
        );
        check(
            "[secrets.S]\ninject = { hosts = [\"a b\"], header = \"A\" }\n",
            5,
            "`a b` is not a host rule",
        );
        check(
            "[secrets.S]\ninject = { hosts = [\"api.x:8080\", \"api.y\"], header = \"A\", \
             plain_http = true }\n",
            5,
            "`secrets.S.inject.plain_http`: sends the value unencrypted, so every host names \
             its port (`api.y` names none)",
        );
        check(
            "[secrets.S]\ninject = { hosts = [\"api.x\"], header = \"A\", plain_http = \"yes\" }\n",
            5,
            "invalid type: string \"yes\" (expected a boolean)",
        );
        check(
            "[network.agent]\naccess = \"some\"\n",
            5,
            "`network.agent.access`: `some` is not one of off",
        );
        check(
            "[network.agent]\nallow = [\"x.com\"]\n",
            4,
            "apply only with access = \"limited\"",
        );
        check(
            "[network.agent]\naccess = \"limited\"\nallow = [\"x.com:http\"]\n",
            6,
            "bad port `http`",
        );
        check(
            "[network.agent]\naccess = \"limited\"\npresets = [\"pypi\"]\n",
            6,
            "`pypi` is not one of package-managers",
        );
        check(
            "[network.agent]\naccess = \"limited\"\nmethods = [\"get\"]\n",
            6,
            "`get` is not one of GET",
        );
        check("[network.lockdown]\n", 4, "unknown key `lockdown`");
        check(
            "[cache]\nttl = \"forever\"\n",
            5,
            "`cache.ttl`: `forever` is not a duration",
        );
        check(
            "[resources]\nmemory = \"lots\"\n",
            5,
            "`resources.memory`: `lots` is not a size",
        );
        check(
            "[resources]\ncpus = 0\n",
            5,
            "`resources.cpus`: 0 is not a CPU count",
        );
        check(
            "[resources]\npids = 0\n",
            5,
            "`resources.pids`: 0 is not a process limit",
        );
        check(
            "default_branch = \"a..b\"\n",
            4,
            "`default_branch`: `a..b` is not a valid branch name",
        );
        check("[setup\n", 4, "unclosed table (expected `]`)");
    }

    #[test]
    fn missing_and_bad_top_level_keys() {
        let err = Environment::parse("e.toml", "repo = \"ext::sh -c x\"\n").unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("e.toml:1: `name`: missing (required)"),
            "{all}"
        );
        assert!(!all.contains("`image`"), "{all}");
        assert!(all.contains("`ext::` transports are refused"), "{all}");
        let err = Environment::parse(
            "e.toml",
            "name = \"Bad Name\"\nrepo = \"-u\"\nimage = \"i\"\n",
        )
        .unwrap_err();
        assert_eq!(err.diagnostics.len(), 2, "{err}");
        assert_eq!(err.diagnostics[1].line, 2);
    }

    #[test]
    fn host_rules() {
        let r = HostRule::parse("*.Example.com:443").unwrap();
        assert!(r.matches("api.example.com", 443));
        assert!(!r.matches("example.com", 443));
        assert!(!r.matches("api.example.com", 80));
        let r = HostRule::parse("registry.example.org").unwrap();
        assert!(r.matches("Registry.Example.org.", 8443));
        assert!(!r.matches("evilregistry.example.org", 443));
        assert_eq!(
            HostRule::parse("[::1]:8080").unwrap().to_string(),
            "[::1]:8080"
        );
        assert!(HostRule::parse("a_b.com").is_err());
        assert!(HostRule::parse("x.com:0").is_err());
    }

    #[test]
    fn the_model_key_serves_the_agent_only_unless_told() {
        let head = "name = \"m\"\nrepo = \"/srv/m\"\nimage = \"i\"\n";
        let env = Environment::parse(
            "m.toml",
            &format!("{head}[secrets.K]\n[agent]\nendpoint = \"http://127.0.0.1:18100/v1\"\nkey = \"K\"\n"),
        )
        .unwrap();
        assert!(env.secrets["K"].phases.is_empty());
        let env = Environment::parse(
            "m.toml",
            &format!("{head}[secrets.K]\nphases = [\"setup\"]\n[agent]\nendpoint = \"https://m.test/v1\"\nkey = \"K\"\n"),
        )
        .unwrap();
        assert_eq!(env.secrets["K"].phases, vec![SecretPhase::Setup]);
    }

    #[test]
    fn endpoint_rules_name_the_exact_host_and_port() {
        let check = |url: &str, expected: Option<(&str, bool)>| {
            let agent = Agent {
                endpoint: Some(url.into()),
                ..Environment::parse("m", "name = \"m\"\nrepo = \"/r\"\nimage = \"i\"\n")
                    .unwrap()
                    .agent
            };
            let got = agent.endpoint_rule().map(|(r, tls)| (r.to_string(), tls));
            assert_eq!(got, expected.map(|(r, tls)| (r.to_string(), tls)), "{url}");
        };
        check(
            "http://127.0.0.1:18100/v1",
            Some(("127.0.0.1:18100", false)),
        );
        check("https://api.test/v1", Some(("api.test:443", true)));
        check("http://Models.Test", Some(("models.test:80", false)));
        check("http://[::1]:8080/v1", Some(("[::1]:8080", false)));
        check("ftp://x", None);
        for (host, loopback) in [
            ("localhost", Some("127.0.0.1")),
            ("127.0.0.2:80", Some("127.0.0.2")),
            ("[::1]:8080", Some("::1")),
            ("10.0.0.1", None),
            ("models.test", None),
        ] {
            let got = HostRule::parse(host).unwrap().loopback_ip();
            assert_eq!(got.map(|ip| ip.to_string()).as_deref(), loopback, "{host}");
        }
    }

    #[test]
    fn a_forge_section_parses_with_defaults_and_round_trips() {
        let src = "name = \"e\"\nrepo = \"https://github.example/octo/hello.git\"\n\
                   [secrets.GH]\n[secrets.HOOK]\n[secrets.NPM]\n\
                   [forge]\nkind = \"github\"\ntoken = \"GH\"\nwebhook_secret = \"HOOK\"\n\
                   trusted = [\"owner\", \"MEMBER\"]\nautofix = [\"CI\"]\n";
        let env = Environment::parse("env.toml", src).unwrap();
        let forge = env.forge.as_ref().unwrap();
        assert_eq!(forge.kind, ForgeKind::GitHub);
        assert_eq!(forge.repository, "octo/hello");
        assert_eq!(forge.api, GITHUB_API);
        assert_eq!(forge.mention, "@hangar");
        assert_eq!(forge.trusted, ["OWNER", "MEMBER"]);
        assert_eq!(forge.author, DEFAULT_AUTHOR);
        // The forge's secrets serve the host alone; the others keep their default phases.
        assert!(env.secrets["GH"].phases.is_empty());
        assert!(env.secrets["HOOK"].phases.is_empty());
        assert_eq!(
            env.secrets["NPM"].phases,
            [SecretPhase::Setup, SecretPhase::Maintenance]
        );
        assert_eq!(Environment::parse("x", &env.to_toml()).unwrap(), env);

        let env = Environment::parse(
            "env.toml",
            &format!(
                "{HEAD}[secrets.GH]\n[forge]\nkind = \"github\"\nrepository = \"o/r\"\n\
                 api = \"http://127.0.0.1:9/api/v3/\"\ntoken = \"GH\"\n\
                 author = \"Bot  <bot@example.org>\"\n"
            ),
        )
        .unwrap();
        let forge = env.forge.unwrap();
        assert_eq!(forge.api, "http://127.0.0.1:9/api/v3");
        assert_eq!(forge.author, "Bot <bot@example.org>");
        assert_eq!(forge.webhook_secret, None);
    }

    #[test]
    fn bad_forge_sections_name_the_key() {
        let f = |body: &str| format!("[secrets.GH]\n[forge]\nkind = \"github\"\n{body}");
        // HEAD's repo is a path: the repository must be named.
        check(&f("token = \"GH\"\n"), 5, "`forge.repository`: missing");
        let with = |body: &str| f(&format!("repository = \"o/r\"\ntoken = \"GH\"\n{body}"));
        check(
            "[forge]\nkind = \"gitlab\"\nrepository = \"o/r\"\n",
            5,
            "`forge.kind`",
        );
        check(
            &f("repository = \"o\"\ntoken = \"GH\"\n"),
            7,
            "`forge.repository`: `o` is not `owner/name`",
        );
        check(&f("repository = \"o/r\"\n"), 5, "`forge.token`: missing");
        check(
            &f("repository = \"o/r\"\ntoken = \"NOPE\"\n"),
            8,
            "`forge.token`: names no secret",
        );
        check(
            &with("webhook_secret = \"W\"\n"),
            9,
            "`forge.webhook_secret`: names no secret",
        );
        check(
            &with("api = \"http://api.example\"\n"),
            9,
            "plain http beyond loopback",
        );
        check(&with("api = \"ftp://x\"\n"), 9, "not an https:// URL");
        check(
            &with("mention = \"hangar\"\n"),
            9,
            "is not a handle like `@hangar`",
        );
        check(
            &with("trusted = [\"ANYONE\"]\n"),
            9,
            "`ANYONE` is not an author association",
        );
        check(&with("author = \"hangar\"\n"), 9, "is not `Name <email>`");
        check(
            &with("author = \"a <b@c>\\n\"\n"),
            9,
            "is not `Name <email>`",
        );
        check(&with("branch = \"x\"\n"), 9, "unknown key `branch`");
    }
}
