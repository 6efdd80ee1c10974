//! The API's client, as the CLI uses it: HTTP/1.1 over the daemon's Unix socket, one
//! connection per request, errors carried back as the daemon worded them.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{ErrorBody, StreamEvent};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to connect to the hangar daemon at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

impl ClientError {
    /// True when the answer was 404 for a route that does exist (the object is not
    /// there, or not in the caller's workspace).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, code, .. } if code != "no-such-route")
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn unix(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "hangar");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(api_error(path, resp).await)
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
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = self.send(Method::POST, path, Some(body)).await?;
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
    pub async fn follow(&self, path: &str, mut on: impl FnMut(StreamEvent)) -> Result<()> {
        let mut resp = self.send(Method::GET, path, None).await?;
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
