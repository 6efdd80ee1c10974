//! The egress proxy of one sandbox: an HTTP/1.1 forward proxy on a listener the caller
//! bound inside the sandbox's network namespace, making every upstream connection from
//! the host. CONNECT is tunnelled after the host check, or TLS is opened with a leaf of the
//! hangar CA when the phase's policy must see inside (methods, injected credentials).

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, HOST};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::addr::{host_addresses, is_host_local};
use crate::audit::AuditEntry;
use crate::ca::Ca;
use crate::error::{NetError, Result};
use crate::policy::{normalize, Internal, PhasePolicy, Reason, Verdict};
use crate::pool::{self, Pool};
use crate::resolve::Resolve;

/// The header of a 403 that names why.
pub const REASON_HEADER: &str = "x-hangar-reason";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// What every sandbox's proxy shares.
#[derive(Clone)]
pub struct ProxyConfig {
    pub ca: Arc<Ca>,
    pub resolver: Arc<dyn Resolve>,
    /// How intercepted connections verify the real server.
    pub upstream_tls: Arc<rustls::ClientConfig>,
}

/// The TLS client configuration for intercepted connections: the host's trust store plus
/// `extra_roots_pem` (a private CA).
pub fn upstream_tls(extra_roots_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(extra_roots_pem) {
        let cert = cert.map_err(|e| NetError::Roots(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| NetError::Roots(e.to_string()))?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The policy in force, and its generation: a new generation ends every connection
/// opened under an older one.
#[derive(Clone)]
struct Epoch {
    generation: u64,
    policy: Arc<PhasePolicy>,
}

/// A running proxy. Dropping it stops accepting and ends every connection.
pub struct Proxy {
    epoch: watch::Sender<Epoch>,
    config: Arc<ProxyConfig>,
    audit: mpsc::UnboundedSender<AuditEntry>,
    /// Idle upstream connections of intercepted connections, this generation's only.
    pool: Arc<Pool>,
    accepts: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("phase", &self.epoch.borrow().policy.phase)
            .finish_non_exhaustive()
    }
}

/// What a listener serves.
#[derive(Clone)]
enum Mode {
    /// A forward proxy: CONNECT, and absolute-form plain HTTP.
    Proxy,
    /// Plain HTTP to one destination, for clients that talk to it as if it were local.
    Forward { host: String, port: u16 },
}

impl Proxy {
    /// Serves `listener` (bound by the caller, wherever it chose) under `policy`;
    /// decisions go to `audit`.
    pub fn start(
        listener: std::net::TcpListener,
        config: ProxyConfig,
        policy: PhasePolicy,
        audit: mpsc::UnboundedSender<AuditEntry>,
    ) -> Result<Proxy> {
        let (epoch, _) = watch::channel(Epoch {
            generation: 0,
            policy: Arc::new(policy),
        });
        let mut proxy = Proxy {
            epoch,
            config: Arc::new(config),
            audit,
            pool: Arc::default(),
            accepts: Vec::new(),
        };
        proxy.serve(listener, Mode::Proxy)?;
        Ok(proxy)
    }

    /// Also serves `listener` as plain HTTP to `host:port`, under the same policy and
    /// phase switches as the proxy: for a model endpoint on the host's loopback, which a
    /// sandbox reaches at the same address on its own loopback.
    pub fn forward(
        &mut self,
        listener: std::net::TcpListener,
        host: &str,
        port: u16,
    ) -> Result<()> {
        self.serve(
            listener,
            Mode::Forward {
                host: host.to_string(),
                port,
            },
        )
    }

    fn serve(&mut self, listener: std::net::TcpListener, mode: Mode) -> Result<()> {
        listener.set_nonblocking(true).map_err(NetError::Serve)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(NetError::Serve)?;
        let rx = self.epoch.subscribe();
        let (config, audit, pool) = (self.config.clone(), self.audit.clone(), self.pool.clone());
        self.accepts.push(tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors, say: back off rather than spin.
                        tracing::warn!("the proxy failed to accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let current = rx.borrow().clone();
                let conn = Arc::new(Conn {
                    config: config.clone(),
                    policy: current.policy,
                    audit: audit.clone(),
                    pool: pool.clone(),
                    cut: Cut {
                        rx: rx.clone(),
                        generation: current.generation,
                    },
                });
                let cut = conn.cut.clone();
                cut.spawn(serve_client(stream, conn, mode.clone()));
            }
        }));
        Ok(())
    }

    /// Switches to another phase's policy, ending every connection of the previous one.
    pub fn set_policy(&self, policy: PhasePolicy) {
        let mut generation = 0;
        self.epoch.send_modify(|e| {
            e.generation += 1;
            e.policy = Arc::new(policy);
            generation = e.generation;
        });
        // The old generation's idle connections go too (their tasks end with it), and
        // one it gives back from now on is refused.
        self.pool.new_generation(generation);
    }

    /// The phase whose policy is in force.
    pub fn phase(&self) -> String {
        self.epoch.borrow().policy.phase.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for a in &self.accepts {
            a.abort();
        }
        // Connections end when their receiver sees the sender gone.
    }
}

/// Ends a connection's work when the phase changes or the proxy stops.
#[derive(Clone)]
struct Cut {
    rx: watch::Receiver<Epoch>,
    generation: u64,
}

impl Cut {
    async fn wait(mut self) {
        loop {
            if self.rx.borrow_and_update().generation != self.generation {
                return;
            }
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }

    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let cut = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = work => {}
                () = cut.wait() => {}
            }
        });
    }
}

/// One client connection's view of the proxy, fixed at accept time.
struct Conn {
    config: Arc<ProxyConfig>,
    policy: Arc<PhasePolicy>,
    audit: mpsc::UnboundedSender<AuditEntry>,
    pool: Arc<Pool>,
    cut: Cut,
}

impl Conn {
    /// A connection's entry, or (with the request) a request's.
    fn entry<B>(&self, req: Option<&Request<B>>, host: &str, port: u16) -> AuditEntry {
        AuditEntry {
            time_ms: now_ms(),
            phase: self.policy.phase.clone(),
            method: req.map(|r| r.method().as_str().to_string()),
            path: req.map(|r| r.uri().path().to_string()),
            host: host.to_string(),
            port,
            decision: "allowed".into(),
            rule: None,
            bytes_up: 0,
            bytes_down: 0,
            note: None,
        }
    }

    fn log(&self, entry: AuditEntry) {
        let _ = self.audit.send(entry);
    }

    /// Logs the refusal and answers it.
    fn refuse(&self, mut entry: AuditEntry, reason: Reason, rule: String) -> Response<Body> {
        entry.decision = reason.as_str().into();
        entry.rule = Some(rule.clone());
        self.log(entry);
        let mut resp = Response::new(full(format!("hangar: {}: {rule}\n", reason.as_str())));
        *resp.status_mut() = StatusCode::FORBIDDEN;
        resp.headers_mut()
            .insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
        resp
    }

    fn fail(&self, mut entry: AuditEntry, what: String) -> Response<Body> {
        entry.decision = "failed".into();
        entry.note = Some(what.clone());
        self.log(entry);
        let mut resp = Response::new(full(format!("hangar: {what}\n")));
        *resp.status_mut() = StatusCode::BAD_GATEWAY;
        resp
    }

    /// Connects to the entry's destination and counts what passes; the entry (with
    /// `note` once connected) is logged with the byte counts when the returned guard
    /// drops, or at once if this fails.
    async fn open(
        self: &Arc<Self>,
        mut entry: AuditEntry,
        internal_ok: bool,
        note: Option<String>,
    ) -> Result<(Counted<TcpStream>, LogOnClose), Response<Body>> {
        let upstream = match self.connect(&entry.host, entry.port, internal_ok).await {
            Ok((_, s)) => s,
            Err(fail) => return Err(self.failed(entry, fail)),
        };
        entry.note = note;
        let counted = Counted::new(upstream);
        let guard = LogOnClose {
            conn: self.clone(),
            entry: Some(entry),
            up: counted.written.clone(),
            down: counted.read.clone(),
        };
        Ok((counted, guard))
    }

    /// The upstream side of an intercepted connection: an idle connection of the pool to
    /// one of the checked addresses, or else a new connection to one of them. The
    /// returned guard logs the entry with the bytes `Counted::client` counts.
    async fn open_link(
        self: &Arc<Self>,
        mut entry: AuditEntry,
        internal_ok: bool,
        note: Option<String>,
    ) -> Result<(Link, SocketAddr, LogOnClose), Response<Body>> {
        let (host, port) = (entry.host.clone(), entry.port);
        let addrs = match self.checked_addresses(&host, port, internal_ok).await {
            Ok(a) => a,
            Err(fail) => return Err(self.failed(entry, fail)),
        };
        let (link, addr) = match self.pool.take(self.cut.generation, &host, port, &addrs) {
            Some((addr, sender)) => (Link::Pooled(sender), addr),
            None => match self.connect_to(&host, port, addrs).await {
                Ok((addr, tcp)) => (Link::Fresh(tcp), addr),
                Err(fail) => return Err(self.failed(entry, fail)),
            },
        };
        entry.note = note;
        let guard = LogOnClose {
            conn: self.clone(),
            entry: Some(entry),
            up: Arc::default(),
            down: Arc::default(),
        };
        Ok((link, addr, guard))
    }

    fn failed(&self, entry: AuditEntry, fail: Fail) -> Response<Body> {
        match fail {
            Fail::Internal(why) => self.refuse(entry, Reason::PrivateAddress, why),
            Fail::Unreachable(why) => self.fail(entry, why),
        }
    }

    /// Resolves `host` and connects to one of its addresses, every one of which must be
    /// external (neither internal nor one of the host's own) unless the policy opens
    /// internal addresses for this host and port. The addresses checked are the addresses
    /// connected to: no second lookup, no rebinding window.
    async fn connect(
        &self,
        host: &str,
        port: u16,
        internal_ok: bool,
    ) -> Result<(SocketAddr, TcpStream), Fail> {
        let addrs = self.checked_addresses(host, port, internal_ok).await?;
        self.connect_to(host, port, addrs).await
    }

    /// `host`'s addresses (one lookup), each external unless the policy opens internal
    /// ones for it: the only addresses any connection for this request may go to.
    async fn checked_addresses(
        &self,
        host: &str,
        port: u16,
        internal_ok: bool,
    ) -> Result<Vec<IpAddr>, Fail> {
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .config
                .resolver
                .resolve(host, port)
                .await
                .map_err(|e| Fail::Unreachable(format!("failed to resolve {host}: {e}")))?,
        };
        if !internal_ok {
            // Read per connection: an address the host gained since counts at once.
            let own = host_addresses();
            if let Some(ip) = addrs.iter().find(|ip| is_host_local(**ip, &own)) {
                let opens = match self.policy.internal {
                    Internal::ExactRules => format!("only a rule naming {host}:{port} exactly"),
                    Internal::Opened(_) => format!(
                        "only the local admin, for a token's workspace (`hangar serve \
                         --open-internal {host}:{port}`),"
                    ),
                };
                return Err(Fail::Internal(format!(
                    "{host} is or resolves to the internal or host-local address {ip}; \
                     {opens} opens it"
                )));
            }
        }
        Ok(addrs)
    }

    /// A connection to the first of `addrs` (checked) that answers.
    async fn connect_to(
        &self,
        host: &str,
        port: u16,
        addrs: Vec<IpAddr>,
    ) -> Result<(SocketAddr, TcpStream), Fail> {
        let mut last = format!("{host} has no address");
        for ip in addrs {
            let addr = SocketAddr::new(ip, port);
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok((addr, s));
                }
                Ok(Err(e)) => last = format!("failed to connect to {host} ({addr}): {e}"),
                Err(_) => last = format!("failed to connect to {host} ({addr}): timed out"),
            }
        }
        Err(Fail::Unreachable(last))
    }
}

enum Fail {
    Internal(String),
    Unreachable(String),
}

async fn serve_client(stream: TcpStream, conn: Arc<Conn>, mode: Mode) {
    let svc = hyper::service::service_fn(move |req| {
        let (conn, mode) = (conn.clone(), mode.clone());
        async move {
            Ok::<_, Infallible>(match mode {
                Mode::Proxy => handle(req, conn).await,
                Mode::Forward { host, port } => forwarded(req, conn, &host, port).await,
            })
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
}

async fn handle(req: Request<Incoming>, conn: Arc<Conn>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect_method(req, conn).await;
    }
    plain_http(req, conn).await
}

/// A request to the forwarded destination, in origin form: made absolute, then checked
/// and sent as any plain-HTTP request through the proxy is.
async fn forwarded(
    mut req: Request<Incoming>,
    conn: Arc<Conn>,
    host: &str,
    port: u16,
) -> Response<Body> {
    if req.method() == Method::CONNECT || req.uri().authority().is_some() {
        return status(
            StatusCode::BAD_REQUEST,
            &format!("hangar: this address forwards to {host}:{port}; it is not a proxy\n"),
        );
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    match format!("http://{authority}{path}").parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return status(StatusCode::BAD_REQUEST, "hangar: bad request target\n"),
    }
    plain_http(req, conn).await
}

/// `CONNECT host:port`: the host check, the address check, then a tunnel or interception.
async fn connect_method(req: Request<Incoming>, conn: Arc<Conn>) -> Response<Body> {
    let Some((host, port)) = authority(req.uri(), 443) else {
        return status(StatusCode::BAD_REQUEST, "hangar: CONNECT needs host:port\n");
    };
    let mut entry = conn.entry(None::<&Request<Incoming>>, &host, port);
    let (internal_ok, intercept) = match conn.policy.check_host(&host, port) {
        Verdict::Block { reason, rule } => return conn.refuse(entry, reason, rule),
        Verdict::Allow {
            rule,
            internal_ok,
            intercept,
        } => {
            entry.rule = rule;
            (internal_ok, intercept)
        }
    };
    let rule = entry.rule.clone();
    let work_conn = conn.clone();
    if intercept {
        let note = Some("intercept".into());
        let (link, addr, guard) = match conn.open_link(entry, internal_ok, note).await {
            Ok(opened) => opened,
            Err(refused) => return refused,
        };
        conn.cut.spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            let client = Counted::client(TokioIo::new(upgraded), &guard);
            let to = Destination {
                host,
                port,
                rule,
                addr,
            };
            intercepted(client, link, to, work_conn, guard).await;
        });
        return Response::new(empty());
    }
    let note = Some("tunnel".into());
    let (counted, guard) = match conn.open(entry, internal_ok, note).await {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    conn.cut.spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let (mut client, mut upstream) = (TokioIo::new(upgraded), counted);
        let _ = tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut upstream,
            TUNNEL_BUFFER,
            TUNNEL_BUFFER,
        )
        .await;
        drop(guard);
    });
    Response::new(empty())
}

/// Each direction's buffer in a tunnel: large enough that a download takes few reads
/// and writes (tokio's default is 8 KiB).
const TUNNEL_BUFFER: usize = 64 * 1024;

/// Where an intercepted connection goes (the address checked for it), and the rule that
/// allowed it.
struct Destination {
    host: String,
    port: u16,
    rule: Option<String>,
    addr: SocketAddr,
}

impl Destination {
    fn key(&self) -> pool::Key {
        pool::Key {
            host: self.host.clone(),
            port: self.port,
            addr: self.addr,
        }
    }
}

/// The upstream side of an intercepted connection when CONNECT is answered.
enum Link {
    /// A new TCP connection to a checked address; TLS is opened with the client's.
    Fresh(TcpStream),
    /// An idle TLS connection of this generation to the same host, port and address.
    Pooled(Upstream),
}

type Upstream = hyper::client::conn::http1::SendRequest<Body>;

/// TLS toward `host` over `tcp`, verified with the upstream trust, and HTTP/1.1 on it;
/// the connection's task ends with `conn`'s generation.
async fn upstream_session(conn: &Conn, host: &str, tcp: TcpStream) -> Result<Upstream, String> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host} is no TLS server name: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(conn.config.upstream_tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("upstream TLS with {host}: {e}"))?;
    let (sender, upstream_conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP with {host}: {e}"))?;
    conn.cut.spawn(async move {
        let _ = upstream_conn.await;
    });
    Ok(sender)
}

/// A new upstream connection to the destination's checked address (no lookup).
async fn fresh(conn: &Conn, to: &Destination) -> Result<Upstream, String> {
    let (_, tcp) = conn
        .connect_to(&to.host, to.port, vec![to.addr.ip()])
        .await
        .map_err(|fail| match fail {
            Fail::Internal(why) | Fail::Unreachable(why) => why,
        })?;
    upstream_session(conn, &to.host, tcp).await
}

/// Keeps `sender` in the pool once its last response has been read to the end (a
/// connection left mid-body or closed is not kept), until it has been idle too long.
async fn give_back(conn: &Conn, key: pool::Key, mut sender: Upstream) {
    let ready = tokio::time::timeout(Duration::from_secs(1), sender.ready()).await;
    if !matches!(ready, Ok(Ok(()))) {
        return;
    }
    let (pool, generation) = (conn.pool.clone(), conn.cut.generation);
    let Some(id) = pool.put(generation, key.clone(), sender) else {
        return;
    };
    conn.cut.spawn(async move {
        tokio::time::sleep(pool::IDLE).await;
        pool.expire(&key, id);
    });
}

/// TLS opened on both sides; each request inside is checked (Host, method) and may have
/// a placeholder swapped before it goes on over the one upstream connection, which is
/// given back to the pool when the client's connection ends.
async fn intercepted(
    client: Counted<TokioIo<hyper::upgrade::Upgraded>>,
    link: Link,
    to: Destination,
    conn: Arc<Conn>,
    guard: LogOnClose,
) {
    let host = to.host.clone();
    let Ok(server_config) = conn.config.ca.server_config(&host) else {
        return;
    };
    let accept = tokio_rustls::TlsAcceptor::from(server_config).accept(client);
    // A new upstream connection's handshake runs beside the client's: it names the
    // checked host and carries nothing of the client's, which goes nowhere before the
    // server name check below.
    let (client_tls, upstream) = match link {
        Link::Pooled(sender) => (accept.await, Ok((sender, true))),
        Link::Fresh(tcp) => {
            let (client_tls, upstream) = tokio::join!(accept, upstream_session(&conn, &host, tcp));
            (client_tls, upstream.map(|s| (s, false)))
        }
    };
    let Ok(client_tls) = client_tls else {
        return;
    };
    // The upstream handshake names the CONNECT host whatever the client said; a client
    // naming another host in its TLS is after a host the check did not see, so nothing
    // of that connection goes anywhere.
    if let Some(sni) = client_tls.get_ref().1.server_name() {
        if normalize(sni) != normalize(&host) {
            let mut guard = guard;
            if let Some(entry) = guard.entry.as_mut() {
                entry.decision = Reason::Allowlist.as_str().into();
                entry.rule = Some(format!(
                    "the TLS server name is {sni} but the connection is to {host}:{}",
                    to.port
                ));
            }
            return;
        }
    }
    let (sender, reused) = match upstream {
        Ok(up) => up,
        Err(why) => {
            let mut guard = guard;
            if let Some(entry) = guard.entry.as_mut() {
                entry.decision = "failed".into();
                entry.note = Some(why);
            }
            return;
        }
    };
    // The server half handles one request at a time, so the sender is taken for a
    // request and put back when its response head is in.
    let slot = Arc::new(Mutex::new(Slot {
        sender: Some(sender),
        reused,
    }));
    let to = Arc::new(to);
    let svc = {
        let (conn, to, slot) = (conn.clone(), to.clone(), slot.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (conn, to, slot) = (conn.clone(), to.clone(), slot.clone());
            async move { Ok::<_, Infallible>(inner_request(req, conn, &to, slot).await) }
        })
    };
    let _ = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(client_tls), svc)
        .await;
    let sender = slot.lock().unwrap_or_else(|e| e.into_inner()).sender.take();
    if let Some(sender) = sender {
        give_back(&conn, to.key(), sender).await;
    }
    // Logged once the upstream connection is back in the pool (or gone): the entry
    // says the connection is over.
    drop(guard);
}

/// An intercepted connection's upstream, between its requests.
struct Slot {
    sender: Option<Upstream>,
    /// Taken from the pool, and no request answered on it yet: its server may have
    /// closed it while it was idle.
    reused: bool,
}

/// One request inside an intercepted connection. Its entry carries the connection's rule
/// and the bytes of both bodies, and is logged when the response's body is done.
async fn inner_request(
    mut req: Request<Incoming>,
    conn: Arc<Conn>,
    to: &Destination,
    slot: Arc<Mutex<Slot>>,
) -> Response<Body> {
    let (host, port) = (to.host.as_str(), to.port);
    let mut entry = conn.entry(Some(&req), host, port);
    entry.rule = to.rule.clone();
    if let Some(why) = target_mismatch(&req, host, port, 443) {
        return conn.refuse(entry, Reason::Allowlist, why);
    }
    if let Some(rule) = method_refusal(&req, &conn.policy, host, port) {
        return conn.refuse(entry, Reason::Method, rule);
    }
    entry.note = inject(&mut req, &conn.policy, host, port, Wire::Tls);
    *req.uri_mut() = origin_form(req.uri());
    keep_alive(req.headers_mut());
    let up = Arc::new(AtomicU64::new(0));
    let req = req.map(|body| counted_body(body, up.clone(), None));
    let (mut s, reused) = {
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.sender.take() {
            Some(s) => (s, slot.reused),
            None => return conn.fail(entry, "the upstream connection is busy".into()),
        }
    };
    // A pooled connection its server closed while idle fails before the request is
    // written (it comes back), or just after with no response (a body-less request is
    // rebuilt): either goes again on a new connection to the same checked address.
    let again =
        (reused && hyper::body::Body::is_end_stream(req.body())).then(|| bodiless_copy(&req));
    let sent = match s.ready().await {
        Ok(()) => s.try_send_request(req).await.map_err(|mut e| {
            let message = e.take_message();
            (message, e.into_error())
        }),
        Err(e) => Err((Some(req), e)),
    };
    let sent = match sent {
        Err((message, e)) if reused => {
            let retry =
                message.or_else(|| again.filter(|_| e.is_incomplete_message() || e.is_canceled()));
            match retry {
                Some(req) => match fresh(&conn, to).await {
                    Ok(mut new) => {
                        let sent = new.send_request(req).await;
                        s = new;
                        sent
                    }
                    Err(why) => {
                        put_back(&slot, s);
                        return conn.fail(entry, why);
                    }
                },
                None => Err(e),
            }
        }
        Err((_, e)) => Err(e),
        Ok(resp) => Ok(resp),
    };
    put_back(&slot, s);
    match sent {
        Ok(resp) => {
            let down = Arc::new(AtomicU64::new(0));
            let guard = LogOnClose {
                conn: conn.clone(),
                entry: Some(entry),
                up,
                down: down.clone(),
            };
            resp.map(|body| counted_body(body, down, Some(guard)))
        }
        Err(e) => {
            entry.bytes_up = up.load(Ordering::Relaxed);
            conn.fail(entry, format!("failed to forward to {host}: {e}"))
        }
    }
}

fn put_back(slot: &Mutex<Slot>, sender: Upstream) {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    slot.sender = Some(sender);
    slot.reused = false;
}

/// The request's head again, with an empty body (for a request that had none).
fn bodiless_copy(req: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Drops a `Connection` header that only says `close` or `keep-alive`: the client's
/// connection to the proxy is its own, and the upstream one may serve the next client
/// connection to the same host. Any other token (an upgrade, say) is left as it is.
fn keep_alive(headers: &mut hyper::HeaderMap) {
    let only_persistence = headers.get_all(CONNECTION).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').all(|t| {
                let t = t.trim();
                t.eq_ignore_ascii_case("close") || t.eq_ignore_ascii_case("keep-alive")
            })
        })
    });
    if only_persistence {
        headers.remove(CONNECTION);
        headers.remove("keep-alive");
    }
}

/// `body`, its data bytes added to `count` as they pass; `guard` (a request's entry) is
/// logged when the body is dropped, done or cut short.
fn counted_body(body: Incoming, count: Arc<AtomicU64>, guard: Option<LogOnClose>) -> Body {
    body.map_frame(move |frame| {
        let _logged_on_drop = &guard;
        if let Some(data) = frame.data_ref() {
            count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    })
    .boxed()
}

/// A request in absolute form (`GET http://host/path`): plain HTTP, checked and forwarded
/// over a connection of its own.
async fn plain_http(mut req: Request<Incoming>, conn: Arc<Conn>) -> Response<Body> {
    if req.uri().scheme_str() != Some("http") {
        return status(
            StatusCode::BAD_REQUEST,
            "hangar: send an absolute http:// URL, or CONNECT for https\n",
        );
    }
    let Some((host, port)) = authority(req.uri(), 80) else {
        return status(StatusCode::BAD_REQUEST, "hangar: the URL has no host\n");
    };
    let mut entry = conn.entry(Some(&req), &host, port);
    if let Some(why) = target_mismatch(&req, &host, port, 80) {
        return conn.refuse(entry, Reason::Allowlist, why);
    }
    let internal_ok = match conn.policy.check_host(&host, port) {
        Verdict::Block { reason, rule } => return conn.refuse(entry, reason, rule),
        Verdict::Allow {
            rule, internal_ok, ..
        } => {
            entry.rule = rule;
            internal_ok
        }
    };
    if let Some(rule) = method_refusal(&req, &conn.policy, &host, port) {
        return conn.refuse(entry, Reason::Method, rule);
    }
    let note = inject(&mut req, &conn.policy, &host, port, Wire::Plain);
    for h in ["proxy-connection", "proxy-authorization", "keep-alive"] {
        req.headers_mut().remove(h);
    }
    *req.uri_mut() = origin_form(req.uri());
    let (counted, guard) = match conn.open(entry, internal_ok, note).await {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    let (mut sender, upstream_conn) =
        match hyper::client::conn::http1::handshake(TokioIo::new(counted)).await {
            Ok(x) => x,
            Err(e) => {
                drop(guard);
                return status(StatusCode::BAD_GATEWAY, &format!("hangar: {e}\n"));
            }
        };
    conn.cut.spawn(async move {
        let _guard = guard;
        let _ = upstream_conn.await;
    });
    match sender.send_request(req).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => status(
            StatusCode::BAD_GATEWAY,
            &format!("hangar: failed to forward to {host}: {e}\n"),
        ),
    }
}

/// A request whose Host header (or absolute URL) names another host than the one the
/// connection was checked for would reach a host no rule allowed. Two Host headers are
/// refused whatever they say: which one a server (or a front end before it) believes is
/// its own choice, and a projected secret would go with both.
fn target_mismatch<B>(req: &Request<B>, host: &str, port: u16, default: u16) -> Option<String> {
    let mut named = Vec::new();
    let mut hosts = req.headers().get_all(HOST).iter();
    if let Some(h) = hosts.next() {
        if hosts.next().is_some() {
            return Some("the request has more than one Host header".into());
        }
        match h.to_str().ok().and_then(|h| h.parse::<Uri>().ok()) {
            Some(u) => named.extend(authority(&u, default)),
            None => return Some("the Host header is not a host".into()),
        }
    }
    if req.uri().authority().is_some() {
        named.extend(authority(req.uri(), default));
    }
    named
        .into_iter()
        .find(|(h, p)| normalize(h) != normalize(host) || *p != port)
        .map(|(h, p)| format!("the request names {h}:{p} but the connection is to {host}:{port}"))
}

/// The headers that ask a server to treat a request as another method (frameworks honour
/// one or another of them, or a `_method` query parameter).
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The rule that refuses the request's method, or a method the request asks the server
/// to use instead. An override naming an allowed method is harmless and passes; any
/// other is refused rather than stripped, so the agent and the log see why.
fn method_refusal<B>(
    req: &Request<B>,
    policy: &PhasePolicy,
    host: &str,
    port: u16,
) -> Option<String> {
    if let Some(rule) = policy.check_method(host, port, req.method().as_str()) {
        return Some(rule);
    }
    if policy.methods.is_empty() {
        return None;
    }
    let headers = METHOD_OVERRIDES.iter().flat_map(|name| {
        req.headers().get_all(*name).iter().map(move |v| {
            (
                name.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
    });
    let query = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k.eq_ignore_ascii_case("_method"))
        .map(|(_, v)| ("the query's _method".to_string(), v.into_owned()));
    headers
        .chain(query)
        .flat_map(|(via, value)| {
            value
                .split(',')
                .map(|m| (via.clone(), m.trim().to_ascii_uppercase()))
                .collect::<Vec<_>>()
        })
        .filter(|(_, m)| !m.is_empty())
        .find_map(|(via, m)| {
            policy
                .check_method(host, port, &m)
                .map(|rule| format!("{rule} ({via} asks for {m})"))
        })
}

/// How a request travels between the proxy and its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// Inside TLS the proxy opened and verified: no one on the way reads it.
    Tls,
    /// In the clear: anyone on the path reads what it carries.
    Plain,
}

/// Swaps projected secrets' placeholders for their values in the named header, for the
/// named hosts only, and over plain HTTP only where the secret allows it. A placeholder
/// anywhere else stays as it is; the returned note says which went out unchanged, or
/// which were injected.
fn inject<B>(
    req: &mut Request<B>,
    policy: &PhasePolicy,
    host: &str,
    port: u16,
    wire: Wire,
) -> Option<String> {
    let mut notes = Vec::new();
    for inj in &policy.injections {
        let here = inj.applies_to(host, port);
        let clear_refused = wire == Wire::Plain && !inj.plain_http;
        let mut swap = None;
        for (name, value) in req.headers().iter() {
            if !contains(value.as_bytes(), inj.placeholder.as_bytes()) {
                continue;
            }
            if here && name.as_str() == inj.header && clear_refused {
                notes.push(format!(
                    "placeholder of {} sent unchanged over plain HTTP (it is injected only \
                     inside TLS unless its inject has plain_http = true)",
                    inj.name
                ));
            } else if here && name.as_str() == inj.header {
                swap = Some(name.clone());
            } else {
                notes.push(format!(
                    "placeholder of {} sent unchanged in {} (it is injected only into {} for {})",
                    inj.name,
                    name.as_str(),
                    inj.header,
                    inj.hosts
                        .iter()
                        .map(|h| h.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if contains(req.uri().to_string().as_bytes(), inj.placeholder.as_bytes()) {
            notes.push(format!(
                "placeholder of {} sent unchanged in the URL",
                inj.name
            ));
        }
        if let Some(name) = swap {
            let value = inj.format.replacen("{}", inj.value.expose_str(), 1);
            if let Ok(v) = HeaderValue::from_str(&value) {
                let mut v = v;
                v.set_sensitive(true);
                req.headers_mut().insert(name, v);
                notes.push(format!("injected {} into {}", inj.name, inj.header));
            }
        }
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `host` and `port` of a URI's authority; IPv6 without brackets.
fn authority(uri: &Uri, default_port: u16) -> Option<(String, u16)> {
    let a = uri.authority()?;
    let host = a.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((
        host.to_ascii_lowercase(),
        a.port_u16().unwrap_or(default_port),
    ))
}

fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

fn full(s: String) -> Body {
    Full::new(Bytes::from(s)).map_err(|n| match n {}).boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|n| match n {}).boxed()
}

fn status(code: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(msg.to_string()));
    *r.status_mut() = code;
    r
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Logs a connection's entry with its byte counts when the connection ends, however it
/// ends (closed, failed, or cut by a phase switch).
struct LogOnClose {
    conn: Arc<Conn>,
    entry: Option<AuditEntry>,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Drop for LogOnClose {
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            e.bytes_up = self.up.load(Ordering::Relaxed);
            e.bytes_down = self.down.load(Ordering::Relaxed);
            self.conn.log(e);
        }
    }
}

/// A stream that counts the bytes read from and written to it.
struct Counted<S> {
    inner: S,
    written: Arc<AtomicU64>,
    read: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    /// An upstream stream: what is written to it goes up, what is read from it down.
    fn new(inner: S) -> Counted<S> {
        Counted {
            inner,
            written: Arc::default(),
            read: Arc::default(),
        }
    }

    /// A client's stream, counted into `guard`'s entry: what the client sends goes up,
    /// what it is sent down. (An intercepted connection's upstream may be another
    /// client connection's before and after, so its bytes are counted on this side.)
    fn client(inner: S, guard: &LogOnClose) -> Counted<S> {
        Counted {
            inner,
            written: guard.down.clone(),
            read: guard.up.clone(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
