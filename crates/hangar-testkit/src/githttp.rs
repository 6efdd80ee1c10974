//! A git server over smart HTTP on loopback: `git http-backend` (the git on PATH's own)
//! run as CGI for each request, with Basic credentials required to push, as a forge
//! asks for a token. What it is sent (the Authorization headers) is recorded. Stopped on
//! drop.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};

pub struct GitHttp {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

struct Served {
    root: PathBuf,
    backend: PathBuf,
    /// `Basic base64(user:password)`, required to push.
    expected: Option<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl GitHttp {
    /// Serves every repository under `root`; reading needs nothing, pushing needs
    /// `auth`'s user and password (without it, pushing needs nothing either).
    pub fn serve(root: &Path, auth: Option<(&str, &str)>) -> GitHttp {
        use base64::Engine as _;
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("run git --exec-path");
        let backend = PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim())
            .join("git-http-backend");
        assert!(backend.exists(), "{} is missing", backend.display());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the git server");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(Served {
            root: root.to_path_buf(),
            backend,
            expected: auth.map(|(u, p)| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                )
            }),
            seen: seen.clone(),
        });
        let shutdown = crate::upstream::serve_http1(listener, move |req| {
            let served = served.clone();
            async move { cgi(req, &served).await }
        });
        GitHttp {
            addr,
            seen,
            _shutdown: shutdown,
        }
    }

    /// The URL of repository `name` (a directory under the root).
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// Every Authorization header it was sent, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Publishes the repository at `work` as the bare repository `name` under `root` (what
/// a [`GitHttp`] of `root` serves); its path.
pub fn publish(work: &Path, root: &Path, name: &str) -> PathBuf {
    let bare = root.join(name);
    crate::git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().expect("a UTF-8 path"),
            bare.to_str().expect("a UTF-8 path"),
        ],
    );
    bare
}

fn answer(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp
}

/// One request through `git http-backend`.
async fn cgi(req: Request<hyper::body::Incoming>, served: &Served) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let authorization = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(a) = &authorization {
        served
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(a.clone());
    }
    let query = parts.uri.query().unwrap_or("").to_string();
    let pushing =
        parts.uri.path().ends_with("/git-receive-pack") || query == "service=git-receive-pack";
    let authenticated = match (&served.expected, &authorization) {
        (None, _) => true,
        (Some(want), Some(got)) => want == got,
        (Some(_), None) => false,
    };
    if pushing && !authenticated {
        let mut resp = answer(StatusCode::UNAUTHORIZED, "credentials needed to push\n");
        resp.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"git\""),
        );
        return resp;
    }
    let input = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(StatusCode::BAD_REQUEST, "unreadable body\n"),
    };
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = Command::new(&served.backend);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &served.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", &served.root)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", &query)
        .env("CONTENT_TYPE", header(hyper::header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", input.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            header(hyper::header::CONTENT_ENCODING),
        )
        .env(
            "GIT_PROTOCOL",
            header(hyper::header::HeaderName::from_static("git-protocol")),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if pushing {
        cmd.env("REMOTE_USER", "pusher");
    }
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn()?;
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output()?;
        let _ = writer.join();
        std::io::Result::Ok(out)
    })
    .await;
    let out = match out {
        Ok(Ok(o)) => o,
        _ => {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "git http-backend failed\n",
            )
        }
    };
    // A CGI answer: headers, a blank line, the body.
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, gap)) = split else {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            &String::from_utf8_lossy(&out.stderr),
        );
    };
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(&raw[at + gap..])));
    for line in String::from_utf8_lossy(&raw[..at]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse().ok());
            if let Some(code) = code.and_then(|c| StatusCode::from_u16(c).ok()) {
                *resp.status_mut() = code;
            }
        } else if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.trim().as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
