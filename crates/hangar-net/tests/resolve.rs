//! The system resolver against a DNS server of the test's own on loopback: TTLs from the
//! answer honoured, one query for a burst, temporary failures asked again, missing names
//! final, the hosts file first and re-read, getaddrinfo where resolv.conf is unusable.

#[path = "support/dns.rs"]
mod dns;

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use dns::{FakeDns, Reply};
use hangar_net::{Resolve, ResolverSettings, SystemResolver};

const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const PAUSES: [Duration; 2] = [Duration::from_millis(10), Duration::from_millis(10)];

fn answered(_: usize, _: hickory_resolver::proto::rr::RecordType) -> Reply {
    Reply::Answer
}

async fn lookup(r: &SystemResolver, name: &str) -> io::Result<Vec<IpAddr>> {
    r.resolve(name, 443).await
}

/// Two lookups of one name; the server's count of queries after them (an A and an AAAA
/// query per lookup that was not cached).
async fn check_ttl(ttl: u32, expected_queries: usize) {
    let server = FakeDns::start(IP, ttl, answered).await;
    let r = server.resolver(&PAUSES);
    for _ in 0..2 {
        assert_eq!(
            lookup(&r, "ttl.example.test").await.unwrap(),
            [IpAddr::V4(IP)]
        );
    }
    assert_eq!(server.queries(), expected_queries, "ttl {ttl}");
}

#[tokio::test]
async fn an_answer_is_kept_for_the_ttl_the_server_gave() {
    check_ttl(300, 2).await;
    check_ttl(0, 4).await;
}

/// Regression: under `npm ci`, 1,598 CONNECTs asked a flaky resolver 1,598 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connects_asks_the_resolver_once() {
    let server = FakeDns::start(IP, 300, answered).await;
    let r = Arc::new(server.resolver(&PAUSES));
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { lookup(&r, "burst.example.test").await })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.unwrap().unwrap(), [IpAddr::V4(IP)]);
    }
    assert_eq!(server.queries(), 2, "one A and one AAAA query");
}

/// Regression: one SERVFAIL or timeout failed an install's download through the proxy
/// (curl does not retry a failed CONNECT).
#[tokio::test]
async fn a_servfail_or_a_dropped_query_is_asked_again() {
    for failure in [Reply::ServFail, Reply::Drop] {
        let server = FakeDns::start(IP, 300, move |n, _| match n {
            0 | 1 => failure,
            _ => Reply::Answer,
        })
        .await;
        let r = server.resolver(&PAUSES);
        let got = lookup(&r, "flaky.example.test").await;
        assert_eq!(got.unwrap(), [IpAddr::V4(IP)], "{failure:?}");
        assert!(server.queries() > 2, "{failure:?}: asked again");
    }
}

#[tokio::test]
async fn a_missing_name_is_not_asked_again() {
    let server = FakeDns::start(IP, 60, |_, _| Reply::NxDomain).await;
    let r = server.resolver(&PAUSES);
    let err = lookup(&r, "missing.example.test").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert_eq!(server.queries(), 2, "one A and one AAAA query, no retry");
}

#[tokio::test]
async fn the_hosts_file_comes_first_and_an_edit_is_seen_by_the_next_lookup() {
    let server = FakeDns::start(IP, 300, answered).await;
    let r = server.resolver(&PAUSES);
    for (hosts, expected) in [
        ("127.0.0.2 edited.example.test\n", "127.0.0.2"),
        ("# edited\n127.0.0.3 edited.example.test\n", "127.0.0.3"),
        (
            "::1 edited.example.test\n127.0.0.4 edited.example.test\n",
            "127.0.0.4",
        ),
    ] {
        std::fs::write(server.hosts(), hosts).unwrap();
        let got = lookup(&r, "Edited.Example.Test").await.unwrap();
        assert_eq!(got[0], expected.parse::<IpAddr>().unwrap(), "{hosts}");
    }
    assert_eq!(server.queries(), 0);
    assert_eq!(
        lookup(&r, "dns.example.test").await.unwrap(),
        [IpAddr::V4(IP)]
    );
}

#[tokio::test]
async fn without_a_usable_resolv_conf_names_are_looked_up_with_getaddrinfo() {
    let dir = tempfile::tempdir().unwrap();
    let resolv_conf = dir.path().join("resolv.conf");
    for contents in [None, Some(""), Some("nameserver not-an-address\n")] {
        let _ = std::fs::remove_file(&resolv_conf);
        if let Some(c) = contents {
            std::fs::write(&resolv_conf, c).unwrap();
        }
        let r = SystemResolver::new(ResolverSettings {
            resolv_conf: resolv_conf.clone(),
            hosts: dir.path().join("no-hosts-file"),
            ..ResolverSettings::default()
        });
        // Found by getaddrinfo, in the system's own hosts file.
        let got = lookup(&r, "localhost").await.unwrap();
        assert!(
            got.contains(&"127.0.0.1".parse().unwrap()),
            "{contents:?}: {got:?}"
        );
    }
}
