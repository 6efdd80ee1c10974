//! The egress proxy against a direct connection and tinyproxy, in one run, on loopback
//! against a local HTTPS server: per-request latency (a new connection and TLS handshake
//! per request, as a CLI makes them) and the throughput of a 100 MB download, direct,
//! tunnelled, intercepted, and through tinyproxy as a forward proxy; the routes take
//! turns so they share whatever else the machine is doing. The measures are reported
//! against the direct route (and the tunnel's latency against tinyproxy's).
//! Run as `cargo bench -p hangar-net --bench proxy` (needs `tinyproxy`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_net::{Ca, PhasePolicy, Proxy, ProxyConfig, Rule, StaticResolver};
use hangar_spec::{Access, HostRule};
use hangar_testkit::bench::{print_table, report, summarize, Measure, Row, Stat, Target, Unit};
use hangar_testkit::upstream::Upstream;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUESTS: usize = 300;
const DOWNLOAD: u64 = 100 * 1000 * 1000;
const DOWNLOADS: usize = 5;

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
    let clients: Vec<Client> = routes
        .iter()
        .map(|(_, via)| Client {
            via: *via,
            target,
            tls: tls.clone(),
        })
        .collect();
    // The routes take turns, request by request, so load from elsewhere on the machine
    // falls on all of them alike.
    println!(
        "per request: new TCP connection + TLS handshake + GET, {REQUESTS} per route, interleaved"
    );
    for _ in 0..20 {
        for c in &clients {
            c.get("/warm", false).await;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(REQUESTS); routes.len()];
    for _ in 0..REQUESTS {
        for (c, s) in clients.iter().zip(&mut samples) {
            let t = Instant::now();
            c.get("/echo", false).await;
            s.push(t.elapsed());
        }
    }
    let latency: Vec<Stat> = samples.iter().map(|s| Stat::of_durations(s)).collect();
    let rows: Vec<Row> = routes
        .iter()
        .zip(samples)
        .map(|((name, _), s)| summarize(name, s))
        .collect();
    print_table("per request", 20, &rows);

    println!("\n{DOWNLOAD} byte download, {DOWNLOADS} per route, interleaved");
    let mut rates: Vec<Vec<f64>> = vec![Vec::with_capacity(DOWNLOADS); routes.len()];
    for _ in 0..DOWNLOADS {
        for ((c, r), (name, _)) in clients.iter().zip(&mut rates).zip(&routes) {
            let t = Instant::now();
            let n = c.get(&format!("/bytes/{DOWNLOAD}"), true).await;
            assert!(n >= DOWNLOAD, "{name}: got {n} bytes");
            r.push(DOWNLOAD as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
    }
    let throughput: Vec<Stat> = rates.iter().map(|r| Stat::of(r)).collect();
    for ((name, _), t) in routes.iter().zip(&throughput) {
        println!(
            "{name:<20} p50 {:>6.0} MB/s  max {:>6.0} MB/s",
            t.p50, t.max
        );
    }
    println!();

    let (direct, tunnelled, intercepted, tinyproxy) = (0, 1, 2, 3);
    let measure = |measure: &str, baseline: &str, unit, ours: Stat, base: Stat, target| Measure {
        measure: measure.into(),
        baseline: Some(baseline.into()),
        unit,
        ours,
        base: Some(base),
        target,
        note: None,
    };
    let over = |p50| Target::OverAtMost { p50 };
    let ratio = |p50| Target::RatioAtLeast { p50 };
    for m in [
        measure(
            "proxy: intercepted HTTPS request (new connection, TLS, GET)",
            "direct",
            Unit::Ms,
            latency[intercepted],
            latency[direct],
            over(0.5),
        ),
        measure(
            "proxy: tunnelled HTTPS request (new connection, TLS, GET)",
            "direct",
            Unit::Ms,
            latency[tunnelled],
            latency[direct],
            over(1.0),
        ),
        measure(
            "proxy: tunnelled request, over tinyproxy",
            "tinyproxy",
            Unit::Ms,
            latency[tunnelled],
            latency[tinyproxy],
            over(0.0),
        ),
        measure(
            "proxy: intercepted 100 MB download",
            "direct",
            Unit::MBps,
            throughput[intercepted],
            throughput[direct],
            ratio(0.9),
        ),
        measure(
            "proxy: tunnelled 100 MB download",
            "direct",
            Unit::MBps,
            throughput[tunnelled],
            throughput[direct],
            ratio(0.9),
        ),
    ] {
        report(&m);
    }
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
