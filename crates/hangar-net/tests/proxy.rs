//! The proxy's audit entries for the requests inside an intercepted connection: each
//! names its method, path, the rule that allowed the connection (or the one that refused
//! the request), and the bytes of its bodies.

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
