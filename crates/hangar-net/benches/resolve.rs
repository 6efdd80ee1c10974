//! CONNECTs to one name through the proxy, with the cached system resolver against the
//! uncached getaddrinfo lookups it replaced, in one run, on loopback only: per-CONNECT
//! latency one at a time, and an `npm ci`-like run (many CONNECTs, 16 at a time) against a
//! nameserver that drops every fifth query, with and without caching (TTL 300 vs 0).
//! getaddrinfo cannot be pointed at a test's nameserver, so its row resolves `localhost`
//! from /etc/hosts: its cheapest case, with no DNS traffic at all.
//! Run as `cargo bench -p hangar-net --bench resolve`.

// The tests' nameserver; the bench needs only some of its replies.
#[allow(dead_code)]
#[path = "../tests/support/dns.rs"]
mod dns;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dns::{FakeDns, Reply};
use hangar_net::resolve::Resolving;
use hangar_net::{
    Ca, PhasePolicy, Proxy, ProxyConfig, Resolve, ResolverSettings, Rule, SystemResolver,
};
use hangar_spec::{Access, HostRule};
use hangar_testkit::bench::{print_table, summarize, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SEQUENTIAL: usize = 300;
const BURST: usize = 400;
const AT_ONCE: usize = 16;
const NAME: &str = "registry.example.test";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// The lookups the proxy made before the cache: getaddrinfo on a blocking thread, every
/// time.
struct Getaddrinfo;

impl Resolve for Getaddrinfo {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> Resolving<'a> {
        let host = host.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || dns_lookup::lookup_host(&host))
                .await
                .map_err(io::Error::other)?
                .map(|a| a.collect())
        })
    }
}

async fn run() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = upstream.accept().await {
            drop(s);
        }
    });
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::load_or_create(ca_dir.path()).unwrap());
    let (audit, mut drain) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while drain.recv().await.is_some() {} });
    let start = |resolver: Arc<dyn Resolve>, name: &str| {
        let config = ProxyConfig {
            ca: ca.clone(),
            resolver,
            upstream_tls: hangar_net::upstream_tls(b"").unwrap(),
        };
        // A rule naming the host and port exactly opens its loopback address.
        let rule = HostRule::parse(&format!("{name}:{port}")).unwrap();
        let policy = PhasePolicy {
            phase: "setup".into(),
            access: Access::Limited,
            allow: vec![Rule::new(rule, "bench")],
            deny: Vec::new(),
            methods: Vec::new(),
            injections: Vec::new(),
            intercept_all: false,
            internal: hangar_net::Internal::ExactRules,
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        (
            Proxy::start(l, config, policy, audit.clone()).unwrap(),
            addr,
        )
    };
    let loopback = Ipv4Addr::LOCALHOST;
    let pauses = ResolverSettings::default().pauses;
    let cached = FakeDns::start(loopback, 300, |_, _| Reply::Answer).await;
    let uncached = FakeDns::start(loopback, 0, |_, _| Reply::Answer).await;

    let routes: Vec<(&str, Arc<dyn Resolve>, &str)> = vec![
        (
            "getaddrinfo, uncached (before)",
            Arc::new(Getaddrinfo),
            "localhost",
        ),
        (
            "system resolver, /etc/hosts",
            Arc::new(SystemResolver::default()),
            "localhost",
        ),
        (
            "system resolver, DNS ttl 0",
            Arc::new(uncached.resolver(&pauses)),
            NAME,
        ),
        (
            "system resolver, DNS ttl 300",
            Arc::new(cached.resolver(&pauses)),
            NAME,
        ),
    ];
    let mut rows: Vec<Row> = Vec::new();
    for (label, resolver, name) in routes {
        let (_proxy, via) = start(resolver, name);
        for _ in 0..20 {
            connect(via, name, port).await.unwrap();
        }
        let mut samples = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..SEQUENTIAL {
            let t = Instant::now();
            connect(via, name, port).await.unwrap();
            samples.push(t.elapsed());
        }
        rows.push(summarize(label, samples));
    }
    print_table(
        &format!("one CONNECT at a time through the proxy, {SEQUENTIAL} sequential"),
        32,
        &rows,
    );

    println!(
        "\n{BURST} CONNECTs, {AT_ONCE} at a time, a nameserver dropping every fifth query \
         (1 s timeout)"
    );
    println!("{:<32} {:>9} {:>9} {:>9}", "", "wall", "failed", "queries");
    for ttl in [0, 300] {
        let flaky = FakeDns::start(loopback, ttl, |n, _| match n % 5 {
            4 => Reply::Drop,
            _ => Reply::Answer,
        })
        .await;
        let (_proxy, via) = start(Arc::new(flaky.resolver(&pauses)), NAME);
        let next = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        let workers: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let (next, failed) = (next.clone(), failed.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::SeqCst) < BURST {
                        if connect(via, NAME, port).await.is_err() {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        println!(
            "{:<32} {:>9.2?} {:>9} {:>9}",
            format!("system resolver, DNS ttl {ttl}"),
            t.elapsed(),
            failed.load(Ordering::SeqCst),
            flaky.queries()
        );
    }
}

/// One CONNECT on a new connection to the proxy; Ok when it answers 200.
async fn connect(via: SocketAddr, name: &str, port: u16) -> Result<(), String> {
    let mut tcp = TcpStream::connect(via).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).unwrap();
    let target = format!("{name}:{port}");
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head);
    match head.starts_with("HTTP/1.1 200") {
        true => Ok(()),
        false => Err(head.into_owned()),
    }
}
