//! A stand-in for the internet: an HTTP and an HTTPS server (its own test CA) on the
//! host's loopback or on a "public" address outside the host (a network namespace of its
//! own behind a veth pair), recording every request it sees, for the proxy's tests and
//! benchmark. `/bytes/N` answers N bytes; anything else echoes the request as JSON.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub tls: bool,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A request's headers as name and (lossy) text, in order.
pub(crate) fn header_list(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The first header called `name` (any case).
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub struct Upstream {
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The CA that signed the HTTPS server's certificate (for its names and its IP).
    pub ca_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Dropped with the server: its thread then stops serving.
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Adds `ip` to the host's `lo` (idempotent): a host-local address outside the internal
/// ranges. The proxy refuses it as one of the host's own unless a rule names it exactly
/// (a model endpoint's); a "public" server goes [`outside_address`]. Use documentation
/// ranges.
pub fn add_loopback_address(ip: IpAddr) {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    let out = Command::new("ip")
        .args(["addr", "add", &format!("{ip}/{prefix}"), "dev", "lo"])
        .output()
        .expect("run ip addr add");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("File exists") || err.contains("already assigned"),
        "ip addr add {ip}: {err}"
    );
}

/// The network namespace standing in for the internet, and its link to the host: the
/// host's end has a link-local address, the far end the test servers' public ones.
const OUTSIDE: &str = "hangar-test-outside";
const HOST_END: (&str, &str) = ("hgt-out0", "169.254.251.1/30");
const FAR_END: (&str, &str) = ("hgt-out1", "169.254.251.2/30");

fn ip_cmd(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().expect("run ip");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Puts `ip` outside the host: on the far end of a veth pair into the `hangar-test-outside`
/// namespace, routed there from the host. A server there is reached as a public host is,
/// and its address is none of the host's own (which the proxy refuses, as loopback).
/// Idempotent and safe across test processes (a file lock); returns the namespace's path.
pub fn outside_address(ip: IpAddr) -> PathBuf {
    let ns = PathBuf::from(format!("/run/netns/{OUTSIDE}"));
    let lock = std::fs::File::create(format!("/run/{OUTSIDE}.lock")).expect("create lock");
    lock.lock().expect("lock the outside namespace");
    if !ns.exists() {
        ip_cmd(&["netns", "add", OUTSIDE]).unwrap();
    }
    if ip_cmd(&["link", "show", HOST_END.0]).is_err() {
        for args in [
            vec![
                "link", "add", HOST_END.0, "type", "veth", "peer", "name", FAR_END.0, "netns",
                OUTSIDE,
            ],
            vec!["addr", "add", HOST_END.1, "dev", HOST_END.0],
            vec!["link", "set", HOST_END.0, "up"],
            vec!["-n", OUTSIDE, "addr", "add", FAR_END.1, "dev", FAR_END.0],
            vec!["-n", OUTSIDE, "link", "set", FAR_END.0, "up"],
            vec!["-n", OUTSIDE, "link", "set", "lo", "up"],
        ] {
            ip_cmd(&args).unwrap();
        }
    }
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    let addr = format!("{ip}/{prefix}");
    // A host address takes precedence over the route: one an older test put on `lo` goes.
    let _ = ip_cmd(&["addr", "del", &addr, "dev", "lo"]);
    ip_cmd(&["-n", OUTSIDE, "addr", "replace", &addr, "dev", FAR_END.0]).unwrap();
    ip_cmd(&["route", "replace", &addr, "dev", HOST_END.0]).unwrap();
    ns
}

/// Runs `serve` on its own thread and runtime, so it serves whatever runtime the test
/// uses (or none); it stops when the returned sender is dropped.
pub(crate) fn on_own_thread<F, Fut>(serve: F) -> tokio::sync::oneshot::Sender<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            tokio::select! {
                () = serve() => {}
                _ = stop => {}
            }
        });
    });
    shutdown
}

/// Serves HTTP/1.1 on `listener` from a thread and runtime of its own, each request
/// answered by `answer`, until the returned sender is dropped: the loop every plain
/// test server here shares.
pub(crate) fn serve_http1<F, Fut, B>(
    listener: std::net::TcpListener,
    answer: F,
) -> tokio::sync::oneshot::Sender<()>
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    on_own_thread(move || async move {
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

impl Upstream {
    /// Starts both servers on `ip` (a loopback address, or else one outside the host,
    /// see [`outside_address`]), with a certificate for `names` and the IP.
    pub fn start(ip: IpAddr, names: &[&str]) -> Upstream {
        let bind = |ip: IpAddr| -> std::net::TcpListener {
            if ip.is_loopback() {
                std::net::TcpListener::bind((ip, 0)).expect("bind")
            } else {
                let ns = outside_address(ip);
                hangar_sandbox::netns::listen_in(&ns, SocketAddr::new(ip, 0))
                    .expect("listen outside the host")
            }
        };
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hangar test upstream CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let mut sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        sans.push(ip.to_string());
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let mut leaf_params = rcgen::CertificateParams::new(sans).expect("names");
        leaf_params.use_authority_key_identifier_extension = true;
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        );
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("server config");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let (plain, secure) = (bind(ip), bind(ip));
        let (http, https) = (
            plain.local_addr().expect("addr"),
            secure.local_addr().expect("addr"),
        );
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let served = seen.clone();
        let shutdown = on_own_thread(move || async move {
            let listen = |l: std::net::TcpListener| {
                l.set_nonblocking(true).expect("nonblocking");
                tokio::net::TcpListener::from_std(l).expect("listener")
            };
            tokio::spawn(serve(listen(plain), None, served.clone()));
            serve(listen(secure), Some(acceptor), served).await;
        });
        Upstream {
            http,
            https,
            ca_pem: ca_cert.pem(),
            seen,
            _shutdown: shutdown,
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (tls, seen) = (tls.clone(), seen.clone());
        tokio::spawn(async move {
            let is_tls = tls.is_some();
            let svc = hyper::service::service_fn(move |req| {
                let seen = seen.clone();
                async move { Ok::<_, Infallible>(answer(req, is_tls, &seen)) }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
            }
        });
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn answer(
    req: Request<hyper::body::Incoming>,
    tls: bool,
    seen: &Mutex<Vec<Seen>>,
) -> Response<Body> {
    let s = Seen {
        tls,
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        headers: header_list(req.headers()),
    };
    seen.lock().expect("seen").push(s.clone());
    if let Some(n) = s
        .path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        const CHUNK: usize = 64 * 1024;
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let chunks = (0..n.div_ceil(CHUNK as u64)).map(move |i| {
            let left = (n - i * CHUNK as u64).min(CHUNK as u64) as usize;
            Ok::<_, Infallible>(Frame::data(chunk.slice(..left)))
        });
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let mut resp = Response::new(BodyExt::boxed(body));
        resp.headers_mut()
            .insert("content-length", n.to_string().parse().expect("header"));
        return resp;
    }
    let headers: serde_json::Map<String, serde_json::Value> = s
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let json = serde_json::json!({
        "tls": tls, "method": s.method, "path": s.path, "headers": headers,
    });
    Response::new(BodyExt::boxed(Full::new(Bytes::from(json.to_string()))))
}
