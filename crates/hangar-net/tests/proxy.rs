//! The proxy's audit entries for the requests inside an intercepted connection: each
//! names its method, path, the rule that allowed the connection (or the one that refused
//! the request), and the bytes of its bodies; and the pool of upstream connections they
//! leave, reused only within one host, address and policy generation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hangar_net::{AuditEntry, Ca, PhasePolicy, Proxy, ProxyConfig, Rule, StaticResolver};
use hangar_spec::{Access, HostRule};
use hangar_testkit::upstream::Upstream;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// An entry as one line: `METHOD PATH DECISION by RULE, up N, down M|>0 [NOTE]`.
fn line(e: &AuditEntry) -> String {
    let down = match e.bytes_down {
        0 => "0".to_string(),
        _ => ">0".to_string(),
    };
    format!(
        "{} {} {} by {}, up {}, down {down}{}",
        e.method.as_deref().unwrap_or("CONNECT"),
        e.path.as_deref().unwrap_or("-"),
        e.decision,
        e.rule.as_deref().unwrap_or("-"),
        e.bytes_up,
        e.note
            .as_deref()
            .map(|n| format!(" [{n}]"))
            .unwrap_or_default(),
    )
}

/// Sends `requests` (method, path with query, body) over one intercepted connection and
/// compares the entries of the requests, in the order they were made, with `expected`
/// (where `TARGET` is the upstream's address).
async fn check(requests: &[(&str, &str, &str)], expected: &[&str]) {
    let upstream = Upstream::start("127.0.0.1".parse().unwrap(), &["localhost"]);
    let target = upstream.https;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::load_or_create(ca_dir.path()).unwrap());
    let config = ProxyConfig {
        ca: ca.clone(),
        resolver: Arc::new(StaticResolver::new()),
        upstream_tls: hangar_net::upstream_tls(upstream.ca_pem.as_bytes()).unwrap(),
    };
    let policy = PhasePolicy {
        phase: "agent".into(),
        access: Access::Limited,
        allow: vec![Rule::new(
            HostRule::parse(&target.to_string()).unwrap(),
            "network.agent.allow",
        )],
        deny: Vec::new(),
        // A method list is what makes the proxy open TLS.
        methods: vec!["GET".into(), "POST".into()],
        injections: Vec::new(),
        intercept_all: false,
        internal: hangar_net::Internal::ExactRules,
    };
    let (audit, mut entries) = mpsc::unbounded_channel();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let proxy = Proxy::start(listener, config, policy, audit).unwrap();

    let mut tcp = TcpStream::connect(proxy_addr).await.unwrap();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(tcp.read(&mut b).await.unwrap(), 1, "the proxy closed");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let client = tokio::spawn(conn);
    for (method, path, body) in requests {
        let req = Request::builder()
            .method(*method)
            .uri(*path)
            .header("host", target.to_string())
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    drop(sender);
    let _ = client.await;

    // The requests' entries, then the connection's when it closes.
    let mut got = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), entries.recv())
            .await
            .expect("the connection's entry")
            .expect("an entry");
        if e.method.is_none() {
            assert_eq!(e.note.as_deref(), Some("intercept"), "{e:?}");
            break;
        }
        got.push(e);
    }
    drop(proxy);
    let lines: Vec<String> = got.iter().map(line).collect();
    let expected: Vec<String> = expected
        .iter()
        .map(|l| l.replace("TARGET", &target.to_string()))
        .collect();
    assert_eq!(lines, expected);
    let times: Vec<i64> = got.iter().map(|e| e.time_ms).collect();
    assert!(times.is_sorted(), "{times:?}");
}

/// Regression: requests inside an intercepted connection were logged without their path,
/// the rule that allowed them, or any bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_inside_an_intercepted_connection_are_logged_with_path_rule_and_bytes() {
    check(
        &[
            ("GET", "/get?token=not-logged", ""),
            ("POST", "/upload", "hello"),
            ("DELETE", "/thing", ""),
        ],
        &[
            "GET /get allowed by network.agent.allow TARGET, up 0, down >0",
            "POST /upload allowed by network.agent.allow TARGET, up 5, down >0",
            "DELETE /thing blocked-by-method by network.agent.methods = [GET, POST], up 0, down 0",
        ],
    )
    .await;
}

/// A TCP relay in front of the upstream: counts the connections the proxy makes through
/// it and how many are open, and can cut them all (a server closing idle connections).
struct Relay {
    addr: std::net::SocketAddr,
    opened: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            opened: Arc::default(),
            open: Arc::default(),
            links: Arc::default(),
        };
        let (opened, open, links) = (
            relay.opened.clone(),
            relay.open.clone(),
            relay.links.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (mut down, _) = listener.accept().await.unwrap();
                opened.fetch_add(1, Ordering::SeqCst);
                open.fetch_add(1, Ordering::SeqCst);
                let open = OpenGuard(open.clone());
                let link = tokio::spawn(async move {
                    let _open = open;
                    let mut up = TcpStream::connect(to).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                links.lock().unwrap().push(link.abort_handle());
            }
        });
        relay
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    /// Waits until exactly `n` relayed connections are open (a guard against a hang, not
    /// a timing check: it fails only if that never happens).
    async fn wait_open(&self, n: usize) {
        for _ in 0..1000 {
            if self.open.load(Ordering::SeqCst) == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{} relayed connections open, expected {n}",
            self.open.load(Ordering::SeqCst)
        );
    }

    fn cut_all(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One client connection through the proxy: CONNECT `host:port`, TLS naming `host`, one
/// GET with `Connection: close`; the response's status line. Returns once the proxy has
/// logged the connection's entry, by when its upstream connection is back in the pool.
async fn one_get(
    proxy: std::net::SocketAddr,
    host: &str,
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    entries: &mut mpsc::UnboundedReceiver<AuditEntry>,
) -> String {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(
        format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(tcp.read(&mut b).await.unwrap(), 1, "the proxy closed");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    let mut s = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .unwrap();
    s.write_all(
        format!("GET /pooled HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response).await;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), entries.recv())
            .await
            .expect("the connection's entry")
            .expect("an entry");
        if e.method.is_none() {
            assert_eq!(e.host, host);
            assert!(e.bytes_up > 0 && e.bytes_down > 0, "{e:?}");
            break;
        }
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    response.lines().next().unwrap_or("").to_string()
}

/// The upstream TLS connections intercepted connections leave are reused only by the next
/// connection to the same host (server name), port and address in the same policy
/// generation: a second host at the same address gets its own, a new policy none of the
/// old ones (they are closed), and one its server closed while idle is not handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_upstream_connection_serves_only_its_host_and_generation() {
    let upstream = Upstream::start("127.0.0.1".parse().unwrap(), &["a.test", "b.test"]);
    let relay = Relay::start(upstream.https).await;
    let port = relay.addr.port();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::load_or_create(ca_dir.path()).unwrap());
    let loopback = ["127.0.0.1".parse().unwrap()];
    let config = ProxyConfig {
        ca: ca.clone(),
        resolver: Arc::new(
            StaticResolver::new()
                .with("a.test", &loopback)
                .with("b.test", &loopback),
        ),
        upstream_tls: hangar_net::upstream_tls(upstream.ca_pem.as_bytes()).unwrap(),
    };
    let policy = |phase: &str| PhasePolicy {
        phase: phase.into(),
        access: Access::Limited,
        allow: ["a.test", "b.test"]
            .iter()
            .map(|h| {
                Rule::new(
                    HostRule::parse(&format!("{h}:{port}")).unwrap(),
                    "network.agent.allow",
                )
            })
            .collect(),
        deny: Vec::new(),
        methods: vec!["GET".into()],
        injections: Vec::new(),
        intercept_all: false,
        internal: hangar_net::Internal::ExactRules,
    };
    let (audit, mut entries) = mpsc::unbounded_channel();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let proxy = Proxy::start(listener, config, policy("setup"), audit).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut get = async |host: &str| one_get(proxy_addr, host, port, &tls, &mut entries).await;

    assert_eq!(get("a.test").await, "HTTP/1.1 200 OK");
    assert_eq!(relay.opened(), 1);
    assert_eq!(get("a.test").await, "HTTP/1.1 200 OK");
    assert_eq!(
        relay.opened(),
        1,
        "the second connection to a.test reuses the first's"
    );
    // a.test's connection is idle in the pool, at the same address: b.test gets its own.
    assert_eq!(get("b.test").await, "HTTP/1.1 200 OK");
    assert_eq!(relay.opened(), 2, "b.test never rides a.test's connection");
    assert_eq!(get("a.test").await, "HTTP/1.1 200 OK");
    assert_eq!(get("b.test").await, "HTTP/1.1 200 OK");
    assert_eq!(relay.opened(), 2);
    let hosts: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.header("host").unwrap_or("").to_string())
        .collect();
    let (a, b) = (format!("a.test:{port}"), format!("b.test:{port}"));
    assert_eq!(hosts, [&a, &a, &b, &a, &b].map(String::clone));

    // Another phase: the old generation's idle connections are closed, none reused.
    proxy.set_policy(policy("agent"));
    relay.wait_open(0).await;
    assert_eq!(get("a.test").await, "HTTP/1.1 200 OK");
    assert_eq!(
        relay.opened(),
        3,
        "after set_policy a new upstream connection is made"
    );
    relay.wait_open(1).await;

    // The server closes the idle connection: the next client gets a new one.
    relay.cut_all();
    relay.wait_open(0).await;
    assert_eq!(get("a.test").await, "HTTP/1.1 200 OK");
    assert_eq!(relay.opened(), 4);
}
