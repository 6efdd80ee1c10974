//! The egress proxy against a direct connection and tinyproxy, in one run, on loopback
//! against a local HTTPS server: per-request latency (a new connection and TLS handshake
//! per request, as a CLI makes them) and the throughput of a 100 MB download, direct,
//! tunnelled, intercepted, and through tinyproxy as a forward proxy.
//! Run as `cargo bench -p hangar-net --bench proxy` (needs `tinyproxy`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_net::{Ca, PhasePolicy, Proxy, ProxyConfig, Rule, StaticResolver};
use hangar_spec::{Access, HostRule};
use hangar_testkit::bench::{summarize, Row};
use hangar_testkit::upstream::Upstream;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUESTS: usize = 300;
const DOWNLOAD: u64 = 100 * 1000 * 1000;

fn main() {
    let upstream = Upstream::start("127.0.0.1".parse().unwrap(), &["localhost"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(upstream));
}

async fn run(upstream: Upstream) {
    let target = upstream.https;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::load_or_create(ca_dir.path()).unwrap());
    let config = ProxyConfig {
        ca: ca.clone(),
        resolver: Arc::new(StaticResolver::new()),
        upstream_tls: hangar_net::upstream_tls(upstream.ca_pem.as_bytes()).unwrap(),
    };
    let (audit, mut drain) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while drain.recv().await.is_some() {} });
    let rule = HostRule::parse(&target.to_string()).unwrap();
    let policy = |methods: Vec<String>| PhasePolicy {
        phase: "agent".into(),
        access: Access::Limited,
        allow: vec![Rule::new(rule.clone(), "bench")],
        deny: Vec::new(),
        methods,
        injections: Vec::new(),
        intercept_all: false,
        internal: hangar_net::Internal::ExactRules,
    };
    let start = |methods: Vec<String>| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let p = Proxy::start(l, config.clone(), policy(methods), audit.clone()).unwrap();
        (p, addr)
    };
    let (_tunnel, tunnel_addr) = start(Vec::new());
    let (_intercept, intercept_addr) = start(vec!["GET".into()]);
    let tiny = TinyProxy::start(target.port());

    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in [upstream.ca_pem.as_str(), ca.cert_pem()] {
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    let routes: Vec<(&str, Option<SocketAddr>)> = vec![
        ("direct", None),
        ("hangar tunnelled", Some(tunnel_addr)),
        ("hangar intercepted", Some(intercept_addr)),
        ("tinyproxy", Some(tiny.addr)),
    ];
    println!("per request: new TCP connection + TLS handshake + GET, {REQUESTS} sequential");
    let mut rows: Vec<Row> = Vec::new();
    for (name, via) in &routes {
        let client = Client {
            via: *via,
            target,
            tls: tls.clone(),
        };
        for _ in 0..20 {
            client.get("/warm", false).await;
        }
        let mut samples = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let t = Instant::now();
            client.get("/echo", false).await;
            samples.push(t.elapsed());
        }
        rows.push(summarize(name, samples));
    }
    println!("{:<20} {:>10} {:>10}", "route", "p50", "p95");
    for r in &rows {
        println!("{:<20} {:>10.3?} {:>10.3?}", r.name, r.p50, r.p95);
    }
    let overhead = rows[1].p50.saturating_sub(rows[0].p50);
    println!(
        "tunnelled overhead p50: {overhead:.3?} (target <= 1ms: {})",
        if overhead <= Duration::from_millis(1) {
            "met"
        } else {
            "NOT met"
        }
    );

    println!("\n{DOWNLOAD} byte download, best of 3");
    let mut mbps = Vec::new();
    for (name, via) in &routes {
        let client = Client {
            via: *via,
            target,
            tls: tls.clone(),
        };
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let n = client.get(&format!("/bytes/{DOWNLOAD}"), true).await;
            assert!(n >= DOWNLOAD, "{name}: got {n} bytes");
            best = best.min(t.elapsed());
        }
        let rate = DOWNLOAD as f64 / best.as_secs_f64() / 1e6;
        println!("{name:<20} {best:>10.1?} {rate:>8.0} MB/s");
        mbps.push(rate);
    }
    println!(
        "tunnelled throughput vs tinyproxy: {:.2}x (target >= 1: {})",
        mbps[1] / mbps[3],
        if mbps[1] >= mbps[3] { "met" } else { "NOT met" }
    );
}

struct Client {
    via: Option<SocketAddr>,
    target: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    /// One request on a new connection; the bytes of the response read.
    async fn get(&self, path: &str, big: bool) -> u64 {
        let mut tcp = TcpStream::connect(self.via.unwrap_or(self.target))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        if self.via.is_some() {
            let t = self.target;
            tcp.write_all(format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let head = read_head(&mut tcp).await;
            assert!(
                head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
                "{head}"
            );
        }
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.target
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; if big { 256 * 1024 } else { 4096 }];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        total
    }
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// tinyproxy as a plain forward proxy on a free port, stopped on drop.
struct TinyProxy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl TinyProxy {
    fn start(connect_port: u16) -> TinyProxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 100\n\
                 Allow 127.0.0.1\nConnectPort {connect_port}\nLogLevel Critical\n"
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy is installed (scripts/install-deps)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TinyProxy {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for TinyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
