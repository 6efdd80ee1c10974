//! Requests that try to get past the proxy's per-request checks, sent through the real
//! proxy to a real upstream: a projected secret asked for over plain HTTP, ambiguous or
//! conflicting Host (two headers, a TLS name other than the CONNECT host), and method
//! overrides (`X-HTTP-Method-Override` and its kin, `_method`) past a `methods` list.

use std::net::SocketAddr;
use std::sync::Arc;

use hangar_net::{Ca, Injection, PhasePolicy, Proxy, ProxyConfig, Rule, StaticResolver};
use hangar_secrets::Secret;
use hangar_spec::{Access, HostRule};
use hangar_testkit::upstream::Upstream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const PLACEHOLDER: &str = "hangar-placeholder-test-0";
const VALUE: &str = "the-real-secret-value";

/// How the request reaches the upstream.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `GET http://host:port/...` to the proxy.
    Plain,
    /// CONNECT, then TLS the proxy opens (with this server name), then the request.
    Tls(&'static str),
}

/// One attack: the policy's `methods`, whether the secret allows plain HTTP and the hosts
/// it names (where `HTTP`/`HTTPS` stand for the upstream's ports), how the request goes, and
/// the request's head after its request line (`TARGET` is the upstream's address).
struct Attack {
    methods: &'static [&'static str],
    inject_hosts: &'static [&'static str],
    plain_http: bool,
    via: Via,
    request_line: &'static str,
    headers: Vec<&'static str>,
}

/// What came of it: the status the client got (or `closed`), and what the upstream saw
/// in `Authorization` (`-` when no request reached it).
fn check(attack: Attack, expected: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(run(&attack));
    assert_eq!(got, expected, "{:?} {}", attack.via, attack.request_line);
}

async fn run(attack: &Attack) -> String {
    let upstream = Upstream::start("127.0.0.1".parse().unwrap(), &["localhost"]);
    let ports = |s: &str| {
        s.replace("HTTPS", &upstream.https.port().to_string())
            .replace("HTTP", &upstream.http.port().to_string())
    };
    let target: SocketAddr = match attack.via {
        Via::Plain => upstream.http,
        Via::Tls(_) => upstream.https,
    };
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::load_or_create(ca_dir.path()).unwrap());
    let config = ProxyConfig {
        ca,
        resolver: Arc::new(StaticResolver::new()),
        upstream_tls: hangar_net::upstream_tls(upstream.ca_pem.as_bytes()).unwrap(),
    };
    let policy = PhasePolicy {
        phase: "agent".into(),
        access: Access::Limited,
        // The exact host and port: the upstream is on loopback.
        allow: vec![Rule::new(
            HostRule::parse(&target.to_string()).unwrap(),
            "network.agent.allow",
        )],
        deny: Vec::new(),
        internal: hangar_net::Internal::ExactRules,
        methods: attack.methods.iter().map(|m| m.to_string()).collect(),
        injections: vec![Injection {
            name: "KEY".into(),
            placeholder: PLACEHOLDER.into(),
            value: Secret::new(VALUE.into()).unwrap(),
            hosts: attack
                .inject_hosts
                .iter()
                .map(|h| HostRule::parse(&ports(h)).unwrap())
                .collect(),
            header: "authorization".into(),
            format: "Bearer {}".into(),
            plain_http: attack.plain_http,
        }],
        intercept_all: false,
    };
    let (audit, mut entries) = mpsc::unbounded_channel();
    tokio::spawn(async move { while entries.recv().await.is_some() {} });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let _proxy = Proxy::start(listener, config, policy, audit).unwrap();

    let mut head = attack.request_line.replace("TARGET", &target.to_string());
    head.push_str("\r\n");
    for h in &attack.headers {
        head.push_str(&h.replace("TARGET", &target.to_string()));
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "Authorization: Bearer {PLACEHOLDER}\r\nConnection: close\r\n\r\n"
    ));
    let mut tcp = TcpStream::connect(proxy_addr).await.unwrap();
    let status = match attack.via {
        Via::Plain => exchange(&mut tcp, &head).await,
        Via::Tls(name) => {
            let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            assert_eq!(exchange(&mut tcp, &connect).await, "200");
            let tls = rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate))
                .with_no_client_auth();
            match tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(ServerName::try_from(name).unwrap(), tcp)
                .await
            {
                Ok(mut tls) => exchange(&mut tls, &head).await,
                Err(_) => "closed".to_string(),
            }
        }
    };
    // A request the upstream answered was recorded before it answered.
    let seen = upstream.seen();
    let auth = match seen.as_slice() {
        [] => "-".to_string(),
        [one] => one.header("authorization").unwrap_or("none").to_string(),
        more => panic!("one request, the upstream saw {}", more.len()),
    };
    format!("{status} {auth}")
}

/// Writes `head` and reads the answer's status code, or `closed`.
async fn exchange(s: &mut (impl AsyncRead + AsyncWrite + Unpin), head: &str) -> String {
    if s.write_all(head.as_bytes()).await.is_err() {
        return "closed".into();
    }
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        match s.read(&mut b).await {
            Ok(1) => got.push(b[0]),
            _ => return "closed".into(),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split(' ').nth(1).unwrap_or("garbled").to_string()
}

/// The agent controls its client and need not verify anything.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

const SECRET_SEEN: &str = "Bearer the-real-secret-value";
const PLACEHOLDER_SEEN: &str = "Bearer hangar-placeholder-test-0";

fn plain(request_line: &'static str, headers: &[&'static str]) -> Attack {
    Attack {
        methods: &[],
        inject_hosts: &["127.0.0.1"],
        plain_http: false,
        via: Via::Plain,
        request_line,
        headers: headers.to_vec(),
    }
}

fn tls(request_line: &'static str, headers: &[&'static str]) -> Attack {
    Attack {
        via: Via::Tls("127.0.0.1"),
        ..plain(request_line, headers)
    }
}

/// Regression: a projected secret whose rule names no port was injected into plain HTTP
/// on any port, readable by anyone on the path.
#[test]
fn a_projected_secret_is_not_injected_over_plain_http() {
    check(
        plain("GET http://TARGET/ HTTP/1.1", &["Host: TARGET"]),
        &format!("200 {PLACEHOLDER_SEEN}"),
    );
    // Over TLS the same rule injects.
    check(
        tls("GET / HTTP/1.1", &["Host: TARGET"]),
        &format!("200 {SECRET_SEEN}"),
    );
    // An explicit `plain_http` for the exact port does.
    check(
        Attack {
            inject_hosts: &["127.0.0.1:HTTP"],
            plain_http: true,
            ..plain("GET http://TARGET/ HTTP/1.1", &["Host: TARGET"])
        },
        &format!("200 {SECRET_SEEN}"),
    );
}

/// Regression: a request with two Host headers got the secret and was forwarded with
/// both, leaving the choice of host to the server.
#[test]
fn a_request_with_two_host_headers_is_refused() {
    check(
        tls("GET / HTTP/1.1", &["Host: TARGET", "Host: evil.example"]),
        "403 -",
    );
    check(
        tls("GET / HTTP/1.1", &["Host: TARGET", "Host: TARGET"]),
        "403 -",
    );
    check(
        plain(
            "GET http://TARGET/ HTTP/1.1",
            &["Host: TARGET", "Host: evil.example"],
        ),
        "403 -",
    );
}

#[test]
fn a_host_that_conflicts_with_the_connection_is_refused() {
    check(tls("GET / HTTP/1.1", &["Host: evil.example"]), "403 -");
    check(
        tls("GET https://evil.example/ HTTP/1.1", &["Host: TARGET"]),
        "403 -",
    );
    check(
        plain("GET http://TARGET/ HTTP/1.1", &["Host: evil.example"]),
        "403 -",
    );
    // A TLS server name other than the CONNECT host: nothing goes on.
    check(
        Attack {
            via: Via::Tls("evil.example"),
            ..tls("GET / HTTP/1.1", &["Host: TARGET"])
        },
        "closed -",
    );
}

fn get_only(via: Via, request_line: &'static str, headers: &[&'static str]) -> Attack {
    Attack {
        methods: &["GET", "HEAD"],
        via,
        ..plain(request_line, headers)
    }
}

/// Regression: `methods = ["GET", ...]` let a GET that asked the server to treat it as a
/// DELETE (an override header, or `_method`) through.
#[test]
fn method_overrides_past_a_method_list_are_refused() {
    let over_tls = Via::Tls("127.0.0.1");
    for header in [
        "X-HTTP-Method-Override: DELETE",
        "X-HTTP-Method: delete",
        "X-Method-Override: PUT",
    ] {
        let headers = &["Host: TARGET", header];
        check(get_only(over_tls, "GET / HTTP/1.1", headers), "403 -");
        check(
            get_only(Via::Plain, "GET http://TARGET/ HTTP/1.1", headers),
            "403 -",
        );
    }
    check(
        get_only(
            over_tls,
            "GET /items/1?_method=DELETE HTTP/1.1",
            &["Host: TARGET"],
        ),
        "403 -",
    );
    check(
        get_only(
            over_tls,
            "GET /items/1?a=1&_%6Dethod=patch HTTP/1.1",
            &["Host: TARGET"],
        ),
        "403 -",
    );
    // An override naming an allowed method changes nothing and passes.
    check(
        get_only(
            over_tls,
            "GET /?_method=get HTTP/1.1",
            &["Host: TARGET", "X-HTTP-Method-Override: HEAD"],
        ),
        &format!("200 {SECRET_SEEN}"),
    );
    // Without a method list the headers are the server's business.
    check(
        tls(
            "GET / HTTP/1.1",
            &["Host: TARGET", "X-HTTP-Method-Override: DELETE"],
        ),
        &format!("200 {SECRET_SEEN}"),
    );
}
