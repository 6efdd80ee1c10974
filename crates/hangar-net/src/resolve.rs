//! Name resolution for the proxy, behind a trait: the system's resolver in production, a
//! fixed table in tests (so they can make a name resolve to an internal address).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;

pub type Resolving<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Resolves a host name (never an IP literal: the proxy handles those itself).
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a>;
}

/// The host's resolver (getaddrinfo on a blocking thread).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, port)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
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
