//! The API's client, as the CLI uses it: HTTP/1.1 over the daemon's Unix socket (or TCP
//! with a bearer token, over TLS unless the daemon is on loopback), one connection per
//! request, errors carried back as the daemon worded them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use hangar_secrets::Secret;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{ErrorBody, OpEvent, StreamEvent, UiLinks};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to read the daemon's URL `{url}`: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("failed to connect to the hangar daemon at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// The handshake failed: most often the daemon's certificate is not signed by a CA
    /// the client trusts.
    #[error("failed to verify the hangar daemon at {target}: {source}")]
    Handshake {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// Plain HTTP to an address beyond loopback would carry the bearer token (and all
    /// else) in clear.
    #[error(
        "failed to connect to the hangar daemon at {target}: it is not on loopback ({addr}), \
         and plain HTTP would send the bearer token in clear (use https:// with a daemon \
         serving --tls-cert, or --insecure-url to send it anyway)"
    )]
    PlainHttp { target: String, addr: SocketAddr },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("failed to talk to the hangar daemon: {0}")]
    Http(String),
    /// The daemon's own answer; its message reads after "failed to".
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("failed to read the daemon's answer to {path}: {reason}")]
    Decode { path: String, reason: String },
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Where the daemon listens.
#[derive(Debug, Clone)]
enum Target {
    Unix(PathBuf),
    Tcp {
        url: RemoteUrl,
        /// Set for `https://`.
        tls: Option<Arc<rustls::ClientConfig>>,
        plain_http: PlainHttp,
    },
}

/// How a remote daemon is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// TLS, the daemon's certificate verified.
    Https,
    Http,
}

/// A daemon's TCP listener, as `--url` names it: `https://HOST:PORT`, or for plain HTTP
/// `http://HOST:PORT`, `tcp:HOST:PORT` or `HOST:PORT` (an IPv6 host in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    pub scheme: Scheme,
    /// A name or an IP address, without brackets.
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for RemoteUrl {
    type Err = ClientError;

    fn from_str(url: &str) -> Result<RemoteUrl> {
        let err = |reason| ClientError::Url {
            url: url.to_string(),
            reason,
        };
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("tcp:"))
        {
            (Scheme::Http, rest)
        } else if url.contains("://") {
            return Err(err("expected https://, http:// or tcp: in front"));
        } else {
            (Scheme::Http, url)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(err("expected HOST:PORT, without a path"));
        }
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(err("expected HOST:PORT"));
        };
        let host = match host.strip_prefix('[') {
            Some(h) => h
                .strip_suffix(']')
                .ok_or(err("expected `]` after an IPv6 host"))?,
            None if host.contains(':') => return Err(err("expected an IPv6 host in brackets")),
            None => host,
        };
        if host.is_empty() {
            return Err(err("expected HOST:PORT"));
        }
        let port = port.parse().map_err(|_| err("expected a port number"))?;
        Ok(RemoteUrl {
            scheme,
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Where plain HTTP may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainHttp {
    /// Only to loopback addresses, so a bearer token never crosses a network in clear.
    LoopbackOnly,
    /// Anywhere (`--insecure-url`): a network the caller trusts.
    Anywhere,
}

/// How to reach a remote daemon besides its URL.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// A CA (PEM) trusted for `https://` besides the system's roots: a private CA's.
    pub ca: Option<PathBuf>,
    pub plain_http: PlainHttp,
}

/// A client of one daemon.
#[derive(Clone)]
pub struct Client {
    target: Target,
    /// A bearer token; never printed, and its header marked sensitive.
    token: Option<Secret>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .field("token", &self.token.as_ref().map(|_| "[set]"))
            .finish()
    }
}

impl Client {
    pub fn unix(socket: impl Into<PathBuf>) -> Client {
        Client {
            target: Target::Unix(socket.into()),
            token: None,
        }
    }

    /// A daemon's TCP listener; for `https://`, the trust `options` name is read now.
    pub fn remote(url: RemoteUrl, options: &RemoteOptions) -> Result<Client> {
        let tls = match url.scheme {
            Scheme::Https => Some(crate::tls::client_config(options.ca.as_deref())?),
            Scheme::Http => None,
        };
        Ok(Client {
            target: Target::Tcp {
                url,
                tls,
                plain_http: options.plain_http,
            },
            token: None,
        })
    }

    /// Sends `token` with every request: the caller acts in its workspace.
    pub fn with_token(mut self, token: Option<Secret>) -> Client {
        self.token = token;
        self
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Unix(p) => p.display().to_string(),
            Target::Tcp { url, .. } => url.to_string(),
        }
    }

    /// A request to `path` with the headers every request carries.
    fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "hangar");
        let Some(token) = &self.token else {
            return req;
        };
        let mut req = req.header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", token.expose_str()),
        );
        if let Some(v) = req
            .headers_mut()
            .and_then(|h| h.get_mut(hyper::header::AUTHORIZATION))
        {
            v.set_sensitive(true);
        }
        req
    }

    /// Opens a connection, sends one request on it and returns the answer; the
    /// connection may then be upgraded.
    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>> {
        let connect_err = |source| ClientError::Connect {
            target: self.describe(),
            source,
        };
        let stream: Box<dyn Io> = match &self.target {
            Target::Unix(p) => Box::new(
                tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(connect_err)?,
            ),
            Target::Tcp {
                url,
                tls,
                plain_http,
            } => {
                // Checked and connected to from one lookup, so what is checked is what
                // is reached.
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
                    .await
                    .map_err(connect_err)?
                    .collect();
                let beyond = addrs.iter().find(|a| !a.ip().is_loopback());
                if let (None, PlainHttp::LoopbackOnly, Some(addr)) = (tls, plain_http, beyond) {
                    return Err(ClientError::PlainHttp {
                        target: self.describe(),
                        addr: *addr,
                    });
                }
                let tcp = tokio::net::TcpStream::connect(&addrs[..])
                    .await
                    .map_err(connect_err)?;
                match tls {
                    None => Box::new(tcp),
                    Some(config) => {
                        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                            .map_err(|_| ClientError::Url {
                                url: url.to_string(),
                                reason: "the host is neither a DNS name nor an IP address",
                            })?;
                        let tls = tokio_rustls::TlsConnector::from(config.clone())
                            .connect(name, tcp)
                            .await
                            .map_err(|source| ClientError::Handshake {
                                target: self.describe(),
                                source,
                            })?;
                        Box::new(tls)
                    }
                }
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Response<Incoming>> {
        let mut req = self.request(method, path);
        let (content_type, body) = match body {
            Some(Body::Json(b)) => (Some("application/json"), Bytes::from(b)),
            Some(Body::Secret(s)) => (
                Some("application/octet-stream"),
                Bytes::from_owner(Exposed(s)),
            ),
            None => (None, Bytes::new()),
        };
        if let Some(t) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, t);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = self.exchange(req).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(api_error(path, resp).await)
    }

    /// POSTs to `path` asking to upgrade the connection to `protocol`; the raw stream
    /// once the daemon has switched (its error otherwise).
    pub async fn upgrade(
        &self,
        path: &str,
        protocol: &str,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
        let req = self
            .request(Method::POST, path)
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, protocol)
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = self.exchange(req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(api_error(path, resp).await);
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(TokioIo::new(upgraded))
    }

    /// Whether a daemon answers on the socket.
    pub async fn ping(&self) -> bool {
        self.send(Method::GET, "/v1/health", None).await.is_ok()
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(Method::GET, path, None).await?;
        decode(path, resp).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self.send(Method::POST, path, Some(json(body)?)).await?;
        decode(path, resp).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self.send(Method::PUT, path, Some(json(body)?)).await?;
        decode(path, resp).await
    }

    /// PUTs a secret's value as the raw body, expecting no answer body.
    pub async fn put_secret(&self, path: &str, value: Secret) -> Result<()> {
        self.send(Method::PUT, path, Some(Body::Secret(value)))
            .await?;
        Ok(())
    }

    /// PUTs a secret's value as the raw body, decoding the answer.
    pub async fn put_secret_json<T: DeserializeOwned>(
        &self,
        path: &str,
        value: Secret,
    ) -> Result<T> {
        let resp = self
            .send(Method::PUT, path, Some(Body::Secret(value)))
            .await?;
        decode(path, resp).await
    }

    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(Method::DELETE, path, None).await?;
        decode(path, resp).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(Method::DELETE, path, None).await?;
        Ok(())
    }

    /// `POST /v1/ui/links`: a one-time link that signs a browser in to the web UI as the
    /// local admin, on each of the daemon's TCP listeners.
    pub async fn ui_links(&self) -> Result<UiLinks> {
        let path = "/v1/ui/links";
        let resp = self.send(Method::POST, path, None).await?;
        decode(path, resp).await
    }

    /// A raw answer and the named response header (such as `hangar-attempt`).
    pub async fn get_bytes(&self, path: &str, header: &str) -> Result<(Option<String>, Bytes)> {
        let resp = self.send(Method::GET, path, None).await?;
        let value = resp
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = collect(path, resp).await?;
        Ok((value, body))
    }

    /// Follows a stream of server-sent events, calling `on` for each until the stream
    /// ends (after its `end` event).
    pub async fn follow(&self, path: &str, on: impl FnMut(StreamEvent)) -> Result<()> {
        self.events(Method::GET, path, None, on).await
    }

    /// Runs a long operation (POST `body` to `path`), calling `on_line` for each progress
    /// line; its result, or its error as the daemon worded it.
    pub async fn operation<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        mut on_line: impl FnMut(&str),
    ) -> Result<T> {
        let mut last = None;
        self.events(
            Method::POST,
            path,
            Some(json(body)?),
            |e: OpEvent| match e {
                OpEvent::Progress { line } => on_line(&line),
                done => last = Some(done),
            },
        )
        .await?;
        match last {
            Some(OpEvent::Done { result }) => {
                serde_json::from_value(result).map_err(|e| ClientError::Decode {
                    path: path.to_string(),
                    reason: e.to_string(),
                })
            }
            Some(OpEvent::Failed { error }) => Err(ClientError::Api {
                status: 0,
                code: error.code,
                message: error.message,
            }),
            _ => Err(ClientError::Http(format!(
                "the daemon ended {path} without a result"
            ))),
        }
    }

    async fn events<E: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        mut on: impl FnMut(E),
    ) -> Result<()> {
        let mut resp = self.send(method, path, body).await?;
        let mut pending = Vec::<u8>::new();
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = find(&pending, b"\n\n") {
                let message: Vec<u8> = pending.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&message);
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let event =
                    serde_json::from_str(&data.join("\n")).map_err(|e| ClientError::Decode {
                        path: path.to_string(),
                        reason: e.to_string(),
                    })?;
                on(event);
            }
        }
        Ok(())
    }
}

/// A request body: JSON, or a secret's value.
enum Body {
    Json(Vec<u8>),
    Secret(Secret),
}

/// A secret as the body's bytes, wiped once hyper drops the body.
struct Exposed(Secret);

impl AsRef<[u8]> for Exposed {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

fn json(body: &impl Serialize) -> Result<Body> {
    serde_json::to_vec(body)
        .map(Body::Json)
        .map_err(|e| ClientError::Http(e.to_string()))
}

/// A connection to the daemon, over either transport.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn collect(path: &str, resp: Response<Incoming>) -> Result<Bytes> {
    resp.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ClientError::Decode {
            path: path.to_string(),
            reason: e.to_string(),
        })
}

async fn decode<T: DeserializeOwned>(path: &str, resp: Response<Incoming>) -> Result<T> {
    let body = collect(path, resp).await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

async fn api_error(path: &str, resp: Response<Incoming>) -> ClientError {
    let status = resp.status();
    match collect(path, resp).await {
        Ok(body) => match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => ClientError::Api {
                status: status.as_u16(),
                code: b.error.code,
                message: b.error.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: "unknown".into(),
                message: format!(
                    "failed: the daemon answered {path} with {}",
                    status_text(status)
                ),
            },
        },
        Err(e) => e,
    }
}

fn status_text(s: StatusCode) -> String {
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
}

/// `?key=value&...` with each value percent-encoded; absent values are left out.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes one path segment (a task id or prefix).
pub fn segment(s: &str) -> String {
    encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expected: Result<(Scheme, &str, u16), &str>) {
        let got = url.parse::<RemoteUrl>();
        match (got, expected) {
            (Ok(got), Ok((scheme, host, port))) => {
                assert_eq!(
                    (got.scheme, got.host.as_str(), got.port),
                    (scheme, host, port)
                );
            }
            (Err(e), Err(reason)) => assert_eq!(
                e.to_string(),
                format!("failed to read the daemon's URL `{url}`: {reason}")
            ),
            (got, expected) => panic!("{url}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn remote_urls_are_parsed() {
        use Scheme::*;
        check(
            "https://hangar.example:7700",
            Ok((Https, "hangar.example", 7700)),
        );
        check(
            "https://hangar.example:7700/",
            Ok((Https, "hangar.example", 7700)),
        );
        check("http://10.0.0.5:7700", Ok((Http, "10.0.0.5", 7700)));
        check("tcp:127.0.0.1:7700", Ok((Http, "127.0.0.1", 7700)));
        check("localhost:7700", Ok((Http, "localhost", 7700)));
        check("https://[::1]:7700", Ok((Https, "::1", 7700)));
        check("https://hangar.example", Err("expected HOST:PORT"));
        check("https://:7700", Err("expected HOST:PORT"));
        check("https://h:x", Err("expected a port number"));
        check("https://h:70000", Err("expected a port number"));
        check(
            "https://h:7700/v1",
            Err("expected HOST:PORT, without a path"),
        );
        check(
            "ftp://h:7700",
            Err("expected https://, http:// or tcp: in front"),
        );
        check("https://::1:7700", Err("expected an IPv6 host in brackets"));
        check("https://[::1:7700", Err("expected `]` after an IPv6 host"));
    }

    #[test]
    fn a_url_prints_as_it_is_spoken_to() {
        for url in ["https://h:1", "http://10.0.0.5:7700", "https://[::1]:7700"] {
            assert_eq!(url.parse::<RemoteUrl>().unwrap().to_string(), url);
        }
        assert_eq!(
            "tcp:127.0.0.1:1".parse::<RemoteUrl>().unwrap().to_string(),
            "http://127.0.0.1:1"
        );
    }

    fn plain(url: &str, plain_http: PlainHttp) -> Client {
        let options = RemoteOptions {
            ca: None,
            plain_http,
        };
        Client::remote(url.parse().unwrap(), &options)
            .unwrap()
            .with_token(Some(Secret::new(b"hgr_secret".to_vec()).unwrap()))
    }

    /// 192.0.2.0/24 is TEST-NET-1: nothing answers there, so reaching the refusal proves
    /// no connection was tried.
    #[tokio::test]
    async fn plain_http_beyond_loopback_is_refused_before_connecting() {
        let e = plain("http://192.0.2.1:7700", PlainHttp::LoopbackOnly)
            .get::<serde_json::Value>("/v1/tasks")
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::PlainHttp { .. }), "{e}");
        assert!(e.to_string().contains("--insecure-url"), "{e}");
    }

    #[tokio::test]
    async fn plain_http_to_loopback_connects() {
        // Nothing listens on port 1: the answer is a refused connection, not a refusal.
        let e = plain("http://127.0.0.1:1", PlainHttp::LoopbackOnly)
            .get::<serde_json::Value>("/v1/tasks")
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    }
}
