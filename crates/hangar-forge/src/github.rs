//! GitHub's REST API (github.com and GitHub Enterprise Server, whose API base URL is
//! configured), as the [`Forge`] trait asks for it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hangar_secrets::Secret;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{FailedJob, Forge, ForgeError, NewPull, PullInfo, PullRequest, RepoInfo, RepoName};

/// github.com's API; GitHub Enterprise Server's is `https://HOST/api/v3`.
pub const DEFAULT_API: &str = "https://api.github.com";

/// The REST API version hangar is written against.
pub const API_VERSION: &str = "2022-11-28";

/// The longest JSON answer read; GitHub's pages of 100 items stay far below it.
const MAX_JSON: usize = 16 << 20;
/// The longest job log read (GitHub's logs are plain text; a runaway build's can be
/// large, and only its tail is kept).
const MAX_LOG: usize = 64 << 20;
/// How many redirects a log download may take (GitHub's takes one).
const MAX_REDIRECTS: usize = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One request's whole exchange, its answer's body included.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(120);
/// What a rate limit without a stated wait asks for: GitHub documents "at least one
/// minute" for its secondary limits.
const DEFAULT_RATE_WAIT: Duration = Duration::from_secs(60);

/// How one client talks to one GitHub.
pub struct GitHubConfig {
    /// The API's base URL: `https://...`, or `http://` to a loopback address only.
    pub api: String,
    /// An installation token or a fine-grained token; sent only to `api`'s origin.
    pub token: Secret,
    /// How the forge's certificate is verified: the installation's trust (the host's
    /// roots and the admin's CAs), the same the proxies verify servers with.
    pub tls: Arc<rustls::ClientConfig>,
    /// The longest wait a `Retry-After` may ask for before hangar gives up on it.
    pub max_retry_wait: Duration,
    /// How many times a request is tried when the forge says to try again.
    pub tries: u32,
}

impl GitHubConfig {
    /// github.com with `token` verified by `tls`, a wait of at most a minute and three
    /// tries.
    pub fn new(token: Secret, tls: Arc<rustls::ClientConfig>) -> GitHubConfig {
        GitHubConfig {
            api: DEFAULT_API.to_string(),
            token,
            tls,
            max_retry_wait: Duration::from_secs(60),
            tries: 3,
        }
    }
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("api", &self.api)
            .field("token", &"[redacted]")
            .field("max_retry_wait", &self.max_retry_wait)
            .field("tries", &self.tries)
            .finish()
    }
}

/// An origin and what it is spoken to with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    /// A name or an IP address, without brackets.
    host: String,
    port: u16,
}

impl Origin {
    /// The `Host` header's value.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// `https://HOST[:PORT][/path...]` or `http://` to loopback, split; the path without its
/// query or fragment, at least `/`.
fn parse_url(url: &str) -> Result<(Origin, String), String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("expected https:// (or http:// to a loopback address)".into());
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err("a URL with credentials in it is refused".into());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(r) => {
            let (h, after) = r.split_once(']').ok_or("expected `]` after an IPv6 host")?;
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(p.strip_prefix(':').ok_or("expected `:` after `]`")?),
                ),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("expected a host".into());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
    {
        return Err("the host holds characters no host name has".into());
    }
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p.parse().map_err(|_| "expected a port number")?,
    };
    if !https && !loopback_name(host) {
        return Err(
            "plain http:// is allowed only to a loopback address: the token would cross the \
             network in clear"
                .into(),
        );
    }
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    Ok((
        Origin {
            https,
            host: host.to_ascii_lowercase(),
            port,
        },
        path.to_string(),
    ))
}

fn loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A GitHub (github.com or an Enterprise Server) as one token sees it.
pub struct GitHub {
    origin: Origin,
    /// The API's path prefix without its trailing `/` (`/api/v3`, or empty).
    prefix: String,
    token: Secret,
    tls: Arc<rustls::ClientConfig>,
    max_retry_wait: Duration,
    tries: u32,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field(
                "api",
                &format!("{}{}", self.origin.authority(), self.prefix),
            )
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// An answer read whole.
struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// What one try came to.
enum Tried {
    Answer(Answer),
    Unreachable(String),
}

impl GitHub {
    pub fn new(config: GitHubConfig) -> Result<GitHub, ForgeError> {
        let bad = |why: String| ForgeError::BadUrl {
            url: config.api.clone(),
            why,
        };
        let (origin, path) = parse_url(&config.api).map_err(bad)?;
        let prefix = path.trim_end_matches('/').to_string();
        Ok(GitHub {
            origin,
            prefix,
            token: config.token,
            tls: config.tls,
            max_retry_wait: config.max_retry_wait,
            tries: config.tries.max(1),
        })
    }

    /// Connects to `origin` and exchanges one request; plain HTTP only to addresses on
    /// loopback, checked on the addresses connected to.
    async fn exchange(
        &self,
        origin: &Origin,
        req: Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<Answer, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((origin.host.as_str(), origin.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", origin.host))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{} has no address", origin.host));
        }
        if !origin.https {
            if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                return Err(format!(
                    "{} is not on loopback ({a}): plain HTTP is refused",
                    origin.host
                ));
            }
        }
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addrs[..]))
            .await
            .map_err(|_| format!("connecting to {} timed out", origin.authority()))?
            .map_err(|e| format!("cannot connect to {}: {e}", origin.authority()))?;
        let exchange = async {
            let stream: Box<dyn Io> = if origin.https {
                let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
                    .map_err(|_| format!("{} is not a host name", origin.host))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {} failed: {e}", origin.authority()))?;
                Box::new(tls)
            } else {
                Box::new(tcp)
            };
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| format!("reading the answer failed: {e}"))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{} did not answer in time", origin.authority()))?
    }

    /// A request to the API: the token and GitHub's headers on it.
    fn api_request(
        &self,
        method: &Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path_and_query}", self.prefix))
            .header(hyper::header::HOST, self.origin.authority())
            .header(hyper::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(hyper::header::USER_AGENT, "hangar");
        let mut auth =
            hyper::header::HeaderValue::from_str(&format!("Bearer {}", self.token.expose_str()))
                // The value itself is never put in the message: it holds the token.
                .map_err(|_| "the token holds characters a header may not".to_string())?;
        auth.set_sensitive(true);
        if let Some(h) = req.headers_mut() {
            h.insert(hyper::header::AUTHORIZATION, auth);
        }
        let body = match body {
            Some(v) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        req.body(Full::new(body)).map_err(|e| e.to_string())
    }

    /// Sends one API request, trying again on rate limits, 5xx and lost connections; a
    /// 2xx or 3xx answer, or the error.
    async fn call(
        &self,
        what: &str,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        limit: usize,
    ) -> Result<Answer, ForgeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tried = match self.api_request(&method, path_and_query, body) {
                Ok(req) => match self.exchange(&self.origin, req, limit).await {
                    Ok(a) => Tried::Answer(a),
                    Err(e) => Tried::Unreachable(e),
                },
                Err(message) => {
                    return Err(ForgeError::Unreachable {
                        what: what.to_string(),
                        message,
                    })
                }
            };
            let last = attempt >= self.tries;
            let answer = match tried {
                Tried::Unreachable(message) => {
                    if last {
                        return Err(ForgeError::Unreachable {
                            what: what.to_string(),
                            message,
                        });
                    }
                    tracing::debug!("{what}: try {attempt} failed: {message}");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Tried::Answer(a) => a,
            };
            let status = answer.status;
            if status.is_success() || status.is_redirection() {
                return Ok(answer);
            }
            if let Some(wait) = rate_limit_wait(&answer) {
                let retry_after_s = wait.as_secs_f64().ceil() as u64;
                if wait > self.max_retry_wait || last {
                    return Err(ForgeError::RateLimited {
                        what: what.to_string(),
                        tries: attempt,
                        retry_after_s,
                    });
                }
                tracing::info!("{what}: rate limited, waiting {retry_after_s} s");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_server_error() {
                if last {
                    return Err(ForgeError::Failing {
                        what: what.to_string(),
                        status: status.as_u16(),
                        tries: attempt,
                    });
                }
                tracing::debug!("{what}: try {attempt} answered {status}");
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            return Err(ForgeError::Rejected {
                what: what.to_string(),
                status: status.as_u16(),
                message: error_message(&answer.body),
            });
        }
    }

    /// An API call whose answer is JSON of type `T`.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<T, ForgeError> {
        let answer = self
            .call(what, method, path_and_query, body, MAX_JSON)
            .await?;
        serde_json::from_slice(&answer.body).map_err(|e| ForgeError::BadAnswer {
            what: what.to_string(),
            message: e.to_string(),
        })
    }

    /// A job's log: the API's answer is a redirect to storage on another host, followed
    /// without the token. `None` when GitHub kept no log (404, 410).
    async fn job_log(&self, repo: &RepoName, job: u64) -> Result<Option<Bytes>, ForgeError> {
        let what = format!("read the log of job {job} of {repo}");
        let path = format!(
            "/repos/{}/{}/actions/jobs/{job}/logs",
            repo.owner(),
            repo.name()
        );
        let mut answer = match self.call(&what, Method::GET, &path, None, MAX_LOG).await {
            Ok(a) => a,
            Err(ForgeError::Rejected {
                status: 404 | 410, ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut base = (self.origin.clone(), format!("{}{path}", self.prefix));
        for _ in 0..=MAX_REDIRECTS {
            match answer.status.as_u16() {
                200..=299 => return Ok(Some(answer.body)),
                404 | 410 => return Ok(None),
                301 | 302 | 303 | 307 | 308 => {}
                status => {
                    return Err(ForgeError::Rejected {
                        what,
                        status,
                        message: "the log's storage refused it".into(),
                    })
                }
            }
            let location = answer
                .headers
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| ForgeError::BadAnswer {
                    what: what.clone(),
                    message: format!("a {} without a Location", answer.status.as_u16()),
                })?;
            let (origin, target) =
                resolve(&base.0, location).map_err(|why| ForgeError::BadAnswer {
                    what: what.clone(),
                    message: format!("the log's redirect is refused: {why}"),
                })?;
            // Storage is another origin: the token stays behind.
            let req = Request::builder()
                .method(Method::GET)
                .uri(target.as_str())
                .header(hyper::header::HOST, origin.authority())
                .header(hyper::header::USER_AGENT, "hangar")
                .body(Full::new(Bytes::new()))
                .map_err(|e| ForgeError::BadAnswer {
                    what: what.clone(),
                    message: format!("the log's redirect is refused: {e}"),
                })?;
            answer = self
                .exchange(&origin, req, MAX_LOG)
                .await
                .map_err(|message| ForgeError::Unreachable {
                    what: what.clone(),
                    message,
                })?;
            base = (origin, target);
        }
        Err(ForgeError::BadAnswer {
            what,
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }
}

/// A redirect's `Location` against the URL it answered: absolute (`https://`, or
/// `http://` to loopback) or a path on the same origin. The request target it names,
/// with its query.
fn resolve(base: &Origin, location: &str) -> Result<(Origin, String), String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Ok((base.clone(), location.to_string()));
    }
    let (origin, path) = parse_url(location)?;
    let query = location
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(""))
        .filter(|q| !q.is_empty());
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    Ok((origin, target))
}

/// A connection, TLS or plain.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The pause before try `attempt + 1` after a 5xx or a lost connection.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(4))
}

/// How long a rate-limited answer asks to wait, or `None` when it is not one: a 429, or
/// a 403 with `Retry-After` or `x-ratelimit-remaining: 0`.
fn rate_limit_wait(answer: &Answer) -> Option<Duration> {
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    let limited = match answer.status.as_u16() {
        429 => true,
        403 => retry_after.is_some() || exhausted,
        _ => false,
    };
    if !limited {
        return None;
    }
    if let Some(s) = retry_after {
        return Some(Duration::from_secs(s));
    }
    if exhausted {
        if let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok()) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            // The reset is a second's start: a wait of one more makes sure it passed.
            return Some(Duration::from_secs(reset.saturating_sub(now) + 1));
        }
    }
    Some(DEFAULT_RATE_WAIT)
}

/// GitHub's error document, read as far as it reads.
#[derive(Deserialize, Default)]
struct ErrorDoc {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

/// An entry of `errors`: an object with a message (Validation Error) or a string
/// (Validation Error Simple).
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorItem {
    Text(String),
    Object {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        field: Option<String>,
    },
}

impl ErrorItem {
    fn text(&self) -> Option<String> {
        match self {
            ErrorItem::Text(t) => Some(t.clone()),
            ErrorItem::Object {
                message: Some(m), ..
            } => Some(m.clone()),
            ErrorItem::Object {
                code: Some(c),
                field,
                ..
            } => Some(match field {
                Some(f) => format!("{f}: {c}"),
                None => c.clone(),
            }),
            ErrorItem::Object { .. } => None,
        }
    }
}

/// GitHub's `message` with its `errors[]` joined, or a note that it said nothing.
fn error_message(body: &[u8]) -> String {
    let doc: ErrorDoc = serde_json::from_slice(body).unwrap_or_default();
    let details: Vec<String> = doc.errors.iter().filter_map(ErrorItem::text).collect();
    let message = doc.message.unwrap_or_default();
    let text = match (message.is_empty(), details.is_empty()) {
        (_, true) => message,
        (true, false) => details.join("; "),
        (false, false) => format!("{message} ({})", details.join("; ")),
    };
    if text.is_empty() {
        "no message".to_string()
    } else {
        one_line(&text, 500)
    }
}

/// `s` on one line, at most `max` characters: a forge's message goes into a log line.
fn one_line(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

/// The last `n` lines of a log.
fn tail(log: &[u8], n: usize) -> String {
    if n == 0 {
        return String::new();
    }
    let text = String::from_utf8_lossy(log);
    let text = text.trim_end_matches(['\n', '\r']);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The fields of GitHub's documents hangar reads.
mod wire {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Repository {
        pub default_branch: String,
    }

    #[derive(Deserialize)]
    pub struct HeadRepo {
        pub full_name: String,
    }

    #[derive(Deserialize)]
    pub struct Branch {
        #[serde(rename = "ref")]
        pub ref_: String,
        #[serde(default)]
        pub repo: Option<HeadRepo>,
    }

    #[derive(Deserialize)]
    pub struct Pull {
        pub number: u64,
        pub html_url: String,
        pub title: String,
        #[serde(default)]
        pub body: Option<String>,
        pub head: Branch,
        pub base: Branch,
    }

    #[derive(Deserialize)]
    pub struct Job {
        pub id: u64,
        pub name: String,
        #[serde(default)]
        pub conclusion: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Jobs {
        pub jobs: Vec<Job>,
    }
}

impl From<wire::Pull> for PullRequest {
    fn from(p: wire::Pull) -> PullRequest {
        PullRequest {
            number: p.number,
            url: p.html_url,
            head: p.head.ref_,
            base: p.base.ref_,
        }
    }
}

fn repo_path(repo: &RepoName) -> String {
    format!("/repos/{}/{}", repo.owner(), repo.name())
}

impl Forge for GitHub {
    async fn repository(&self, repo: &RepoName) -> Result<RepoInfo, ForgeError> {
        let what = format!("read the repository {repo}");
        let r: wire::Repository = self
            .json(&what, Method::GET, &repo_path(repo), None)
            .await?;
        Ok(RepoInfo {
            default_branch: r.default_branch,
        })
    }

    async fn find_pull(
        &self,
        repo: &RepoName,
        head: &str,
        base: &str,
    ) -> Result<Option<PullRequest>, ForgeError> {
        let what = format!("find the pull request from `{head}` into `{base}` on {repo}");
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("head", &format!("{}:{head}", repo.owner()))
            .append_pair("base", base)
            .append_pair("state", "open")
            .finish();
        let path = format!("{}/pulls?{query}", repo_path(repo));
        let pulls: Vec<wire::Pull> = self.json(&what, Method::GET, &path, None).await?;
        // GitHub ignores a `head` it cannot read; the answer is checked, not trusted.
        Ok(pulls
            .into_iter()
            .find(|p| p.head.ref_ == head && p.base.ref_ == base)
            .map(PullRequest::from))
    }

    async fn open_pull(&self, repo: &RepoName, pull: &NewPull) -> Result<PullRequest, ForgeError> {
        let what = format!("open a pull request on {repo}");
        let body = json!({
            "title": pull.title,
            "body": pull.body,
            "head": pull.head,
            "base": pull.base,
            "draft": pull.draft,
        });
        let path = format!("{}/pulls", repo_path(repo));
        match self
            .json::<wire::Pull>(&what, Method::POST, &path, Some(&body))
            .await
        {
            Ok(p) => Ok(p.into()),
            Err(ForgeError::Rejected {
                status: 422,
                message,
                ..
            }) if message.contains("A pull request already exists") => {
                Err(ForgeError::PullExists {
                    head: pull.head.clone(),
                    base: pull.base.clone(),
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn pull(&self, repo: &RepoName, number: u64) -> Result<PullInfo, ForgeError> {
        let what = format!("read pull request #{number} of {repo}");
        let path = format!("{}/pulls/{number}", repo_path(repo));
        let p: wire::Pull = self.json(&what, Method::GET, &path, None).await?;
        let head_repo = match &p.head.repo {
            None => None,
            Some(r) => Some(
                RepoName::parse(&r.full_name).map_err(|e| ForgeError::BadAnswer {
                    what: what.clone(),
                    message: e.to_string(),
                })?,
            ),
        };
        Ok(PullInfo {
            number: p.number,
            title: p.title,
            body: p.body.unwrap_or_default(),
            head: p.head.ref_,
            head_repo,
            base: p.base.ref_,
        })
    }

    async fn comment(&self, repo: &RepoName, number: u64, body: &str) -> Result<(), ForgeError> {
        let what = format!("comment on #{number} of {repo}");
        let path = format!("{}/issues/{number}/comments", repo_path(repo));
        self.call(
            &what,
            Method::POST,
            &path,
            Some(&json!({ "body": body })),
            MAX_JSON,
        )
        .await?;
        Ok(())
    }

    async fn review(&self, repo: &RepoName, number: u64, body: &str) -> Result<(), ForgeError> {
        let what = format!("review pull request #{number} of {repo}");
        let path = format!("{}/pulls/{number}/reviews", repo_path(repo));
        self.call(
            &what,
            Method::POST,
            &path,
            Some(&json!({ "body": body, "event": "COMMENT" })),
            MAX_JSON,
        )
        .await?;
        Ok(())
    }

    async fn failed_jobs(
        &self,
        repo: &RepoName,
        run_id: u64,
        tail_lines: usize,
    ) -> Result<Vec<FailedJob>, ForgeError> {
        let what = format!("list the jobs of workflow run {run_id} of {repo}");
        // One page of 100: a run with more jobs than that is cut there.
        let path = format!(
            "{}/actions/runs/{run_id}/jobs?filter=latest&per_page=100",
            repo_path(repo)
        );
        let jobs: wire::Jobs = self.json(&what, Method::GET, &path, None).await?;
        let mut failed = Vec::new();
        for job in jobs
            .jobs
            .into_iter()
            .filter(|j| j.conclusion.as_deref() == Some("failure"))
        {
            let log_tail = match tail_lines {
                0 => String::new(),
                n => match self.job_log(repo, job.id).await? {
                    Some(log) => tail(&log, n),
                    None => String::new(),
                },
            };
            failed.push(FailedJob {
                name: job.name,
                log_tail,
            });
        }
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expected: Result<(&str, u16, bool, &str), &str>) {
        let got = parse_url(url);
        match (got, expected) {
            (Ok((o, path)), Ok((host, port, https, p))) => {
                assert_eq!(
                    (o.host.as_str(), o.port, o.https, path.as_str()),
                    (host, port, https, p),
                    "{url}"
                );
            }
            (Err(e), Err(why)) => assert!(e.contains(why), "{url}: {e}"),
            (got, expected) => panic!("{url}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn api_urls_are_read() {
        check(
            "https://api.github.com",
            Ok(("api.github.com", 443, true, "/")),
        );
        check(
            "https://api.github.com/",
            Ok(("api.github.com", 443, true, "/")),
        );
        check(
            "https://GHE.example:8443/api/v3/",
            Ok(("ghe.example", 8443, true, "/api/v3/")),
        );
        check("http://127.0.0.1:8080", Ok(("127.0.0.1", 8080, false, "/")));
        check("http://localhost/api", Ok(("localhost", 80, false, "/api")));
        check("http://[::1]:9", Ok(("::1", 9, false, "/")));
        check("https://[2001:db8::1]", Ok(("2001:db8::1", 443, true, "/")));
        check("http://10.0.0.1:80", Err("only to a loopback address"));
        check("http://ghe.example", Err("only to a loopback address"));
        check("ftp://x", Err("expected https://"));
        check("api.github.com", Err("expected https://"));
        check("https://user:pw@ghe.example", Err("credentials"));
        check("https://:443", Err("expected a host"));
        check("https://h:port", Err("expected a port number"));
        check("https://h a/", Err("characters"));
    }

    /// A TLS client that trusts nothing: these tests never open TLS.
    fn no_roots() -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    }

    #[test]
    fn a_bad_api_url_is_refused_at_construction() {
        let config = GitHubConfig {
            api: "http://192.0.2.1".into(),
            ..GitHubConfig::new(Secret::new(b"ghs_t0ken".to_vec()).unwrap(), no_roots())
        };
        let e = GitHub::new(config).unwrap_err();
        assert!(matches!(e, ForgeError::BadUrl { .. }), "{e}");
    }

    #[test]
    fn redirects_resolve_against_their_origin() {
        let base = parse_url("https://api.github.com/x").unwrap().0;
        let (o, t) = resolve(&base, "https://storage.example/logs/1?sig=a%2Fb").unwrap();
        assert_eq!(
            (o.host.as_str(), t.as_str()),
            ("storage.example", "/logs/1?sig=a%2Fb")
        );
        let (o, t) = resolve(&base, "/elsewhere?q=1").unwrap();
        assert_eq!((o, t.as_str()), (base.clone(), "/elsewhere?q=1"));
        assert!(resolve(&base, "http://storage.example/logs").is_err());
        assert!(resolve(&base, "//storage.example/logs").is_err());
        assert!(resolve(&base, "file:///etc/passwd").is_err());
    }

    #[test]
    fn error_messages_join_githubs_details() {
        let check =
            |body: &str, expected: &str| assert_eq!(error_message(body.as_bytes()), expected);
        check(
            r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for o:b."}]}"#,
            "Validation Failed (A pull request already exists for o:b.)",
        );
        check(
            r#"{"message":"Validation Failed","errors":[{"field":"head","code":"invalid"}]}"#,
            "Validation Failed (head: invalid)",
        );
        check(
            r#"{"message":"Unprocessable","errors":["a","b"]}"#,
            "Unprocessable (a; b)",
        );
        check(r#"{"message":"Not Found"}"#, "Not Found");
        check("<html>", "no message");
        check(r#"{"message":"a\nb"}"#, "a b");
    }

    #[test]
    fn log_tails_keep_the_last_lines() {
        let check =
            |log: &str, n: usize, expected: &str| assert_eq!(tail(log.as_bytes(), n), expected);
        check("a\nb\nc\n", 2, "b\nc");
        check("a\nb\nc", 5, "a\nb\nc");
        check("a\r\nb\r\n", 1, "b");
        check("\u{feff}a", 1, "a");
        check("a\nb", 0, "");
        check("", 3, "");
    }

    fn answer(status: u16, headers: &[(&'static str, &str)]) -> Answer {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: h,
            body: Bytes::new(),
        }
    }

    #[test]
    fn rate_limits_are_recognised() {
        let check = |status, headers: &[(&'static str, &str)], expected: Option<u64>| {
            assert_eq!(
                rate_limit_wait(&answer(status, headers)).map(|d| d.as_secs()),
                expected,
                "{status} {headers:?}"
            );
        };
        check(429, &[("retry-after", "7")], Some(7));
        check(429, &[], Some(60));
        check(403, &[("retry-after", "2")], Some(2));
        check(403, &[("x-ratelimit-remaining", "0")], Some(60));
        check(403, &[("x-ratelimit-remaining", "5")], None);
        check(403, &[], None);
        check(404, &[("retry-after", "2")], None);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let reset = (now + 30).to_string();
        let got = rate_limit_wait(&answer(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
        ))
        .unwrap()
        .as_secs();
        assert!((1..=31).contains(&got), "{got}");
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let token = "ghs_SuperSecretT0ken";
        let config = GitHubConfig::new(Secret::new(token.as_bytes().to_vec()).unwrap(), no_roots());
        assert!(!format!("{config:?}").contains(token));
        let gh = GitHub::new(config).unwrap();
        assert!(!format!("{gh:?}").contains(token));
    }
}
