//! Name resolution for the proxy, behind a trait: the system's resolver in production, a
//! fixed table in tests (so they can make a name resolve to an internal address).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

pub type Resolving<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Resolves a host name (never an IP literal: the proxy handles those itself).
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a>;
}

/// The host's resolver (getaddrinfo on a blocking thread). A temporary failure
/// (`EAI_AGAIN`: a resolver timing out or answering SERVFAIL) is asked again twice,
/// because it would otherwise fail a sandbox's request that the next second would
/// pass, and a client cannot tell a failed CONNECT from a refusal worth giving up on.
#[derive(Debug, Default)]
pub struct SystemResolver;

/// Pauses before asking again after a temporary failure.
const AGAIN_AFTER: [Duration; 2] = [Duration::from_millis(500), Duration::from_millis(2000)];

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> Resolving<'a> {
        Box::pin(asking_again(host, lookup, &AGAIN_AFTER))
    }
}

/// Looks `host` up, pausing and asking again after each temporary failure while pauses
/// are left.
async fn asking_again(
    host: &str,
    lookup: fn(&str) -> Result<Vec<IpAddr>, Lookup>,
    pauses: &[Duration],
) -> io::Result<Vec<IpAddr>> {
    let mut pauses = pauses.iter();
    loop {
        let name = host.to_string();
        let looked = tokio::task::spawn_blocking(move || lookup(&name))
            .await
            .map_err(io::Error::other)?;
        match (looked, pauses.next()) {
            (Err(Lookup::Again(_)), Some(pause)) => tokio::time::sleep(*pause).await,
            (Ok(addrs), _) => return Ok(addrs),
            (Err(Lookup::Again(e) | Lookup::Other(e)), _) => return Err(e),
        }
    }
}

enum Lookup {
    Again(io::Error),
    Other(io::Error),
}

fn lookup(host: &str) -> Result<Vec<IpAddr>, Lookup> {
    let hints = dns_lookup::AddrInfoHints {
        socktype: dns_lookup::SockType::Stream.into(),
        ..Default::default()
    };
    let found = dns_lookup::getaddrinfo(Some(host), None, Some(hints)).map_err(|e| {
        if matches!(e.kind(), dns_lookup::LookupErrorKind::Again) {
            Lookup::Again(e.into())
        } else {
            Lookup::Other(e.into())
        }
    })?;
    let mut addrs = Vec::new();
    for info in found {
        let ip = info.map_err(Lookup::Other)?.sockaddr.ip();
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    Ok(addrs)
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
        for r in [&SystemResolver as &dyn Resolve, &fixed] {
            check(r, "localhost", Some("127.0.0.1")).await;
            check(r, "no-such-host.invalid", None).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const PAUSES: [Duration; 2] = [Duration::from_millis(1), Duration::from_millis(1)];

    /// Regression: one `EAI_AGAIN` from the host's resolver failed an install's
    /// download through the proxy (curl does not retry a failed CONNECT).
    #[tokio::test]
    async fn a_temporary_failure_is_asked_again_and_others_are_not() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        fn again_twice(_: &str) -> Result<Vec<IpAddr>, Lookup> {
            match CALLS.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(Lookup::Again(io::Error::other("temporary"))),
                _ => Ok(vec!["192.0.2.1".parse().unwrap()]),
            }
        }
        let got = asking_again("a.test", again_twice, &PAUSES).await.unwrap();
        assert_eq!(got, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(CALLS.load(Ordering::SeqCst), 3);

        static ALWAYS: AtomicUsize = AtomicUsize::new(0);
        fn always_again(_: &str) -> Result<Vec<IpAddr>, Lookup> {
            ALWAYS.fetch_add(1, Ordering::SeqCst);
            Err(Lookup::Again(io::Error::other("temporary")))
        }
        let err = asking_again("a.test", always_again, &PAUSES)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "temporary");
        assert_eq!(ALWAYS.load(Ordering::SeqCst), 1 + PAUSES.len());

        static NONAME: AtomicUsize = AtomicUsize::new(0);
        fn no_name(_: &str) -> Result<Vec<IpAddr>, Lookup> {
            NONAME.fetch_add(1, Ordering::SeqCst);
            Err(Lookup::Other(io::Error::other("no such name")))
        }
        assert!(asking_again("a.test", no_name, &PAUSES).await.is_err());
        assert_eq!(NONAME.load(Ordering::SeqCst), 1);
    }
}
