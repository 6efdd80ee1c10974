//! Name resolution for the proxy, behind a trait: the host's resolver with a cache in
//! production, a fixed table in tests (so they can make a name resolve to an internal address).
//!
//! The cache holds address lists only; the proxy checks every address of every answer,
//! cached or not, before it connects (see `proxy::Conn::connect`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Hosts, Name, ResolveError, TokioResolver};
use tokio::sync::OnceCell;
use tokio::time::Instant;

pub type Resolving<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Resolves a host name (never an IP literal: the proxy handles those itself).
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a>;
}

/// Where [`SystemResolver`] reads its configuration, and how it retries.
#[derive(Debug, Clone)]
pub struct ResolverSettings {
    /// The nameservers, search list and `options timeout:/attempts:/ndots:`.
    pub resolv_conf: PathBuf,
    /// Names looked up before DNS, as `hosts: files dns` in nsswitch.conf says.
    pub hosts: PathBuf,
    /// The nameservers' port: 53, or a test's own server on loopback.
    pub port: u16,
    /// Pauses before asking again after a temporary failure (a timeout, SERVFAIL).
    pub pauses: Vec<Duration>,
}

impl Default for ResolverSettings {
    fn default() -> ResolverSettings {
        ResolverSettings {
            resolv_conf: "/etc/resolv.conf".into(),
            hosts: "/etc/hosts".into(),
            port: 53,
            pauses: vec![Duration::from_millis(500), Duration::from_millis(2000)],
        }
    }
}

/// The host's resolver, cached: `/etc/hosts` first, then DNS with the nameservers of
/// `/etc/resolv.conf`, asked directly (hickory) because getaddrinfo reports no TTL and so
/// cannot be cached honestly. Without a usable resolv.conf it falls back to getaddrinfo
/// uncached. Both files are re-read when they change, as glibc does.
///
/// Why: under `npm ci`'s burst (1,598 CONNECTs to a few hosts) every CONNECT asked a
/// flaky resolver again, 709 failed, and the install took 20 times the host's time. Now an
/// answer is kept for its TTL, concurrent lookups of one name share one query, and a
/// temporary failure is asked again after a pause, since a client cannot tell a failed
/// CONNECT from a refusal worth giving up on.
pub struct SystemResolver {
    cache: Cached<SystemLookup>,
}

impl SystemResolver {
    pub fn new(settings: ResolverSettings) -> SystemResolver {
        let pauses = settings.pauses.clone();
        SystemResolver {
            cache: Cached::new(SystemLookup::new(settings), pauses),
        }
    }
}

impl Default for SystemResolver {
    fn default() -> SystemResolver {
        SystemResolver::new(ResolverSettings::default())
    }
}

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> Resolving<'a> {
        Box::pin(async move { self.cache.resolve(host).await.map_err(io::Error::from) })
    }
}

/// Why a lookup found no address.
#[derive(Debug, Clone, thiserror::Error)]
enum Failure {
    /// A timeout, SERVFAIL or an unreachable nameserver: the next try may pass.
    #[error("the resolver did not answer: {0}")]
    Temporary(String),
    /// NXDOMAIN, or a name with no address records: asking again will not help.
    #[error("no such name ({0})")]
    NoName(String, Duration),
    #[error("{0}")]
    Other(String),
}

impl From<Failure> for io::Error {
    fn from(f: Failure) -> io::Error {
        let kind = match f {
            Failure::Temporary(_) => io::ErrorKind::TimedOut,
            Failure::NoName(..) => io::ErrorKind::NotFound,
            Failure::Other(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, f)
    }
}

/// What an upstream lookup found, and for how long it holds.
#[derive(Debug, Clone)]
struct Answer {
    addrs: Vec<IpAddr>,
    ttl: Duration,
}

type Asking<'a> = Pin<Box<dyn Future<Output = Result<Answer, Failure>> + Send + 'a>>;

/// One lookup of a name, uncached and tried once: what [`Cached`] sits on.
trait Upstream: Send + Sync + 'static {
    fn ask<'a>(&'a self, name: &'a str) -> Asking<'a>;
}

/// A negative answer is kept no longer than this, whatever the zone's SOA says: a name
/// that appears (a registry's new host) should not stay missing for minutes.
const NEGATIVE_MAX: Duration = Duration::from_secs(5);
/// Above this many names, settled and expired entries are dropped on the next insert.
const PRUNE_AT: usize = 1024;

/// A cache in front of an [`Upstream`]: answers kept for their TTL, negative answers
/// briefly, one lookup in flight per name, temporary failures asked again after pauses.
struct Cached<U> {
    upstream: U,
    pauses: Vec<Duration>,
    names: Mutex<HashMap<String, Arc<Flight>>>,
}

/// A name's lookup: in flight until the cell is set, then its outcome until `until`.
/// The cell's initialiser runs once; if its caller goes away (a client hangs up), the
/// next waiter runs it.
type Flight = OnceCell<Settled>;

#[derive(Debug, Clone)]
struct Settled {
    found: Result<Vec<IpAddr>, Failure>,
    until: Instant,
}

fn current(flight: &Flight, now: Instant) -> bool {
    flight.get().is_none_or(|s| now < s.until)
}

impl<U: Upstream> Cached<U> {
    fn new(upstream: U, pauses: Vec<Duration>) -> Cached<U> {
        Cached {
            upstream,
            pauses,
            names: Mutex::new(HashMap::new()),
        }
    }

    async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, Failure> {
        let name = host.to_ascii_lowercase();
        let flight = self.flight(&name);
        let settled = flight.get_or_init(|| self.settle(&name)).await;
        settled.found.clone()
    }

    /// The name's current flight, or a new one in place of an expired one. Checked and
    /// replaced under one lock, so callers racing past an expiry join one new lookup.
    fn flight(&self, name: &str) -> Arc<Flight> {
        let now = Instant::now();
        let mut names = self.names.lock().expect("resolver cache");
        if let Some(f) = names.get(name).filter(|f| current(f, now)) {
            return f.clone();
        }
        if names.len() >= PRUNE_AT {
            names.retain(|_, f| current(f, now));
        }
        let f = Arc::new(Flight::new());
        names.insert(name.to_string(), f.clone());
        f
    }

    /// Asks upstream, again after each temporary failure while pauses are left.
    async fn settle(&self, name: &str) -> Settled {
        let mut pauses = self.pauses.iter();
        loop {
            let asked = self.upstream.ask(name).await;
            let now = Instant::now();
            let (found, ttl) = match (asked, pauses.next()) {
                (Err(Failure::Temporary(_)), Some(pause)) => {
                    tokio::time::sleep(*pause).await;
                    continue;
                }
                (Ok(a), _) => (Ok(a.addrs), a.ttl),
                (Err(Failure::NoName(why, ttl)), _) => {
                    (Err(Failure::NoName(why, ttl)), ttl.min(NEGATIVE_MAX))
                }
                (Err(e), _) => (Err(e), Duration::ZERO),
            };
            return Settled {
                found,
                until: now + ttl,
            };
        }
    }
}

/// The system's files, re-read when they change.
struct SystemLookup {
    settings: ResolverSettings,
    loaded: Mutex<Arc<Loaded>>,
}

/// What the files said when last read.
struct Loaded {
    stamp: Stamp,
    hosts: Hosts,
    /// `None` when resolv.conf is missing or names no nameserver: getaddrinfo then.
    dns: Option<TokioResolver>,
}

/// Identifies a version of each file (size, inode, mtime), so an edit is noticed.
#[derive(Debug, PartialEq)]
struct Stamp([Option<(u64, u64, SystemTime)>; 2]);

impl Stamp {
    fn of(settings: &ResolverSettings) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        let one = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.len(), m.ino(), m.modified().ok()?))
        };
        Stamp([one(&settings.resolv_conf), one(&settings.hosts)])
    }
}

impl SystemLookup {
    fn new(settings: ResolverSettings) -> SystemLookup {
        let loaded = Loaded::read(&settings, Stamp::of(&settings));
        SystemLookup {
            settings,
            loaded: Mutex::new(Arc::new(loaded)),
        }
    }

    /// The files as they are now: two `stat`s per lookup that missed the cache, as cheap as
    /// glibc's own check of resolv.conf.
    fn current(&self) -> Arc<Loaded> {
        let stamp = Stamp::of(&self.settings);
        let mut loaded = self.loaded.lock().expect("resolver files");
        if loaded.stamp != stamp {
            *loaded = Arc::new(Loaded::read(&self.settings, stamp));
        }
        loaded.clone()
    }
}

impl Loaded {
    fn read(settings: &ResolverSettings, stamp: Stamp) -> Loaded {
        let mut hosts = Hosts::default();
        match std::fs::File::open(&settings.hosts) {
            Ok(f) => {
                if let Err(e) = hosts.read_hosts_conf(f) {
                    tracing::warn!("failed to read {}: {e}", settings.hosts.display());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("failed to read {}: {e}", settings.hosts.display()),
        }
        let dns = match dns_resolver(settings) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(
                    "failed to use {} ({e}); names not in {} are looked up with getaddrinfo, \
                     uncached",
                    settings.resolv_conf.display(),
                    settings.hosts.display()
                );
                None
            }
        };
        Loaded { stamp, hosts, dns }
    }

    fn listed(&self, name: &str) -> Vec<IpAddr> {
        let Ok(name) = Name::from_str(name) else {
            return Vec::new();
        };
        [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|t| {
                self.hosts
                    .lookup_static_host(&Query::query(name.clone(), t))
            })
            .flat_map(|l| l.iter().filter_map(|r| r.ip_addr()).collect::<Vec<_>>())
            .collect()
    }
}

/// A DNS client for resolv.conf's nameservers and options, with no cache of its own
/// (`Cached` is the one cache) and no hosts file (read here, re-read on change).
fn dns_resolver(settings: &ResolverSettings) -> Result<TokioResolver, ResolveError> {
    let text = std::fs::read(&settings.resolv_conf)?;
    let (config, mut options) = hickory_resolver::system_conf::parse_resolv_conf(text)?;
    let servers: Vec<NameServerConfig> = config
        .name_servers()
        .iter()
        .map(|s| NameServerConfig {
            socket_addr: SocketAddr::new(s.socket_addr.ip(), settings.port),
            ..s.clone()
        })
        .collect();
    let config =
        ResolverConfig::from_parts(config.domain().cloned(), config.search().to_vec(), servers);
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    Ok(
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(options)
            .build(),
    )
}

impl Upstream for SystemLookup {
    fn ask<'a>(&'a self, name: &'a str) -> Asking<'a> {
        Box::pin(async move {
            let loaded = self.current();
            let listed = loaded.listed(name);
            if !listed.is_empty() {
                // The hosts file has no TTL and is re-read when it changes: not cached.
                return Ok(Answer {
                    addrs: listed,
                    ttl: Duration::ZERO,
                });
            }
            match &loaded.dns {
                Some(dns) => ask_dns(dns, name).await,
                None => {
                    let name = name.to_string();
                    tokio::task::spawn_blocking(move || getaddrinfo(&name))
                        .await
                        .map_err(|e| Failure::Other(e.to_string()))?
                }
            }
        })
    }
}

/// Asks for A and AAAA records side by side and keeps the IPv4 addresses first (the host
/// may have no IPv6 route, and the proxy tries addresses in order). hickory's own dual-stack
/// strategies are not used: they answer with one family when the other's query timed out,
/// which a cache would then keep for a whole TTL (IPv6 only on a host without IPv6). Here an
/// answer that one family's temporary failure left incomplete is used but not cached.
async fn ask_dns(dns: &TokioResolver, name: &str) -> Result<Answer, Failure> {
    let (v4, v6) = tokio::join!(
        dns.lookup(name, RecordType::A),
        dns.lookup(name, RecordType::AAAA)
    );
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut ttl: Option<u32> = None;
    let mut complete = true;
    let mut failure: Option<Failure> = None;
    for part in [v4, v6] {
        match part {
            Ok(found) => {
                // It holds as long as its shortest-lived record (a CNAME included).
                let shortest = found.records().iter().map(|r| r.ttl()).min();
                ttl = ttl.into_iter().chain(shortest).min();
                for ip in found.iter().filter_map(|d| d.ip_addr()) {
                    if !addrs.contains(&ip) {
                        addrs.push(ip);
                    }
                }
            }
            Err(e) => {
                let f = dns_failure(&e);
                if !matches!(f, Failure::NoName(..)) {
                    complete = false;
                }
                // A temporary failure outranks "no such name": asking again may find it.
                if !matches!(failure, Some(Failure::Temporary(_))) {
                    failure = Some(match (failure, f) {
                        (Some(Failure::NoName(a, t1)), Failure::NoName(_, t2)) => {
                            Failure::NoName(a, t1.min(t2))
                        }
                        (_, f) => f,
                    });
                }
            }
        }
    }
    match failure {
        Some(f) if addrs.is_empty() => Err(f),
        _ => Ok(Answer {
            addrs,
            ttl: match complete {
                true => Duration::from_secs(ttl.unwrap_or(0).into()),
                false => Duration::ZERO,
            },
        }),
    }
}

fn dns_failure(e: &ResolveError) -> Failure {
    let Some(kind) = e.proto().map(|p| p.kind()) else {
        return Failure::Other(e.to_string());
    };
    match kind {
        ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NXDomain | ResponseCode::NoError,
            negative_ttl,
            ..
        } => Failure::NoName(
            e.to_string(),
            Duration::from_secs(negative_ttl.unwrap_or(0).into()),
        ),
        ProtoErrorKind::NoRecordsFound { .. }
        | ProtoErrorKind::Timeout
        | ProtoErrorKind::Io(_)
        | ProtoErrorKind::NoConnections
        | ProtoErrorKind::Busy => Failure::Temporary(e.to_string()),
        _ => Failure::Other(e.to_string()),
    }
}

/// The system's own lookup, where resolv.conf is unusable; it reports no TTL.
fn getaddrinfo(host: &str) -> Result<Answer, Failure> {
    let hints = dns_lookup::AddrInfoHints {
        socktype: dns_lookup::SockType::Stream.into(),
        ..Default::default()
    };
    let found = dns_lookup::getaddrinfo(Some(host), None, Some(hints)).map_err(|e| {
        let kind = e.kind();
        let why = io::Error::from(e).to_string();
        match kind {
            dns_lookup::LookupErrorKind::Again => Failure::Temporary(why),
            dns_lookup::LookupErrorKind::NoName => Failure::NoName(why, Duration::ZERO),
            _ => Failure::Other(why),
        }
    })?;
    let mut addrs = Vec::new();
    for info in found {
        let ip = info
            .map_err(|e| Failure::Other(e.to_string()))?
            .sockaddr
            .ip();
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    Ok(Answer {
        addrs,
        ttl: Duration::ZERO,
    })
}

/// A fixed table of names; anything else does not resolve.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    pub fn with(mut self, name: &str, addrs: &[IpAddr]) -> StaticResolver {
        self.names.insert(name.to_ascii_lowercase(), addrs.to_vec());
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> Resolving<'a> {
        let found = self.names.get(&host.to_ascii_lowercase()).cloned();
        Box::pin(async move {
            found.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{host} does not resolve"))
            })
        })
    }
}

/// Every implementation resolves the same way where their tables agree.
#[cfg(test)]
mod conformance {
    use super::*;

    async fn check(r: &dyn Resolve, host: &str, expected: Option<&str>) {
        let got = r.resolve(host, 80).await.ok();
        let expected: Option<IpAddr> = expected.map(|e| e.parse().unwrap());
        assert_eq!(
            got.map(|a| a.contains(&expected.unwrap())).unwrap_or(false),
            expected.is_some(),
            "{host}"
        );
    }

    #[tokio::test]
    async fn both_resolvers_find_localhost_and_fail_on_unknown_names() {
        let fixed = StaticResolver::new().with("localhost", &["127.0.0.1".parse().unwrap()]);
        let system = SystemResolver::default();
        for r in [&system as &dyn Resolve, &fixed] {
            check(r, "localhost", Some("127.0.0.1")).await;
            check(r, "no-such-host.invalid", None).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const PAUSES: [Duration; 2] = [Duration::from_millis(500), Duration::from_millis(2000)];

    /// An upstream that answers from a script (then repeats its last line), counts the
    /// questions, and takes a second of (paused) time per answer, so concurrent callers
    /// overlap.
    struct Scripted {
        script: Mutex<VecDeque<Result<Answer, Failure>>>,
        asked: AtomicUsize,
    }

    impl Scripted {
        fn new(script: Vec<Result<Answer, Failure>>) -> Cached<Scripted> {
            let upstream = Scripted {
                script: Mutex::new(script.into()),
                asked: AtomicUsize::new(0),
            };
            Cached::new(upstream, PAUSES.to_vec())
        }
    }

    impl Upstream for Scripted {
        fn ask<'a>(&'a self, _name: &'a str) -> Asking<'a> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let mut script = self.script.lock().unwrap();
                if script.len() > 1 {
                    script.pop_front().unwrap()
                } else {
                    script[0].clone()
                }
            })
        }
    }

    fn answer(ip: &str, ttl_secs: u64) -> Result<Answer, Failure> {
        Ok(Answer {
            addrs: vec![ip.parse().unwrap()],
            ttl: Duration::from_secs(ttl_secs),
        })
    }

    fn temporary() -> Result<Answer, Failure> {
        Err(Failure::Temporary("SERVFAIL".into()))
    }

    fn no_name(negative_ttl_secs: u64) -> Result<Answer, Failure> {
        Err(Failure::NoName(
            "NXDOMAIN".into(),
            Duration::from_secs(negative_ttl_secs),
        ))
    }

    /// One step of a cache's life: wait `after` (paused time), resolve, and expect the
    /// address (or a failure) and the upstream's count of questions so far.
    struct Step {
        after: u64,
        expect: Option<&'static str>,
        asked: usize,
    }

    async fn check(script: Vec<Result<Answer, Failure>>, steps: &[Step]) {
        let cache = Scripted::new(script);
        for (i, s) in steps.iter().enumerate() {
            tokio::time::sleep(Duration::from_secs(s.after)).await;
            let got = cache.resolve("a.example.test").await;
            let got = got.ok().map(|a| a[0]);
            assert_eq!(got, s.expect.map(|e| e.parse().unwrap()), "step {i}");
            assert_eq!(
                cache.upstream.asked.load(Ordering::SeqCst),
                s.asked,
                "step {i}"
            );
        }
    }

    fn step(after: u64, expect: Option<&'static str>, asked: usize) -> Step {
        Step {
            after,
            expect,
            asked,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_answer_is_not_asked_again_within_its_ttl_and_is_after_it() {
        let ttl_60 = vec![answer("192.0.2.1", 60), answer("192.0.2.2", 60)];
        check(
            ttl_60,
            &[
                step(0, Some("192.0.2.1"), 1),
                step(30, Some("192.0.2.1"), 1),
                step(28, Some("192.0.2.1"), 1),
                step(2, Some("192.0.2.2"), 2),
            ],
        )
        .await;
        let ttl_0 = vec![answer("192.0.2.1", 0), answer("192.0.2.2", 0)];
        check(
            ttl_0,
            &[step(0, Some("192.0.2.1"), 1), step(0, Some("192.0.2.2"), 2)],
        )
        .await;
    }

    /// Regression: under `npm ci`, 1,598 CONNECTs asked a flaky resolver 1,598 times.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_connects_asks_the_resolver_once() {
        let cache = Arc::new(Scripted::new(vec![answer("192.0.2.1", 0)]));
        let burst: Vec<_> = (0..200)
            .map(|i| {
                let cache = cache.clone();
                let name = if i % 2 == 0 {
                    "A.example.test"
                } else {
                    "a.example.test"
                };
                tokio::spawn(async move { cache.resolve(name).await })
            })
            .collect();
        for b in burst {
            assert_eq!(
                b.await.unwrap().unwrap(),
                ["192.0.2.1".parse::<IpAddr>().unwrap()]
            );
        }
        assert_eq!(cache.upstream.asked.load(Ordering::SeqCst), 1);
    }

    /// Regression: one SERVFAIL or timeout failed an install's download through the proxy
    /// (curl does not retry a failed CONNECT).
    #[tokio::test(start_paused = true)]
    async fn a_temporary_failure_is_asked_again_until_the_pauses_run_out() {
        let twice = vec![temporary(), temporary(), answer("192.0.2.1", 60)];
        check(twice, &[step(0, Some("192.0.2.1"), 3)]).await;
        // Always failing: tried once per pause and once more, and not cached, so the next
        // connection asks again.
        check(vec![temporary()], &[step(0, None, 3), step(0, None, 6)]).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_name_is_not_asked_again_and_is_cached_briefly() {
        let missing = vec![no_name(3600), answer("192.0.2.1", 60)];
        check(
            missing,
            &[
                step(0, None, 1),
                step(4, None, 1),
                step(1, Some("192.0.2.1"), 2),
            ],
        )
        .await;
        check(
            vec![no_name(0), answer("192.0.2.1", 60)],
            &[step(0, None, 1), step(0, Some("192.0.2.1"), 2)],
        )
        .await;
    }

    /// A client that hangs up while its lookup is in flight leaves the lookup to the next
    /// caller instead of failing it.
    #[tokio::test(start_paused = true)]
    async fn a_lookup_whose_caller_went_away_is_taken_over() {
        let cache = Scripted::new(vec![answer("192.0.2.1", 60)]);
        let gave_up =
            tokio::time::timeout(Duration::from_millis(10), cache.resolve("a.example.test"));
        assert!(gave_up.await.is_err());
        assert_eq!(
            cache.resolve("a.example.test").await.unwrap(),
            ["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(cache.upstream.asked.load(Ordering::SeqCst), 2);
    }
}
