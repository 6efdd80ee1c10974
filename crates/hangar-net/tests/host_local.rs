//! The real proxy against the daemon host's own services: a listener bound to `0.0.0.0`
//! reached through one of the host's own addresses (not in any internal range), and a
//! loopback service through a token tenant's exact rule. Each is refused unless the local
//! admin's decision (exact rules in the admin's workspace, named hosts for a tenant)
//! opens it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hangar_net::{Ca, Internal, PhasePolicy, Proxy, ProxyConfig, Rule, StaticResolver};
use hangar_spec::{Access, HostRule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A proxy under `policy` on a loopback port of its own; its address.
fn proxy(policy: PhasePolicy, ca_dir: &std::path::Path) -> (Proxy, SocketAddr) {
    let config = ProxyConfig {
        ca: Arc::new(Ca::load_or_create(ca_dir).unwrap()),
        resolver: Arc::new(StaticResolver::new()),
        upstream_tls: hangar_net::upstream_tls(b"").unwrap(),
    };
    let (audit, _entries) = mpsc::unbounded_channel();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The receiver is dropped: entries are not what these tests look at.
    (Proxy::start(listener, config, policy, audit).unwrap(), addr)
}

fn policy(access: Access, allow: &[&str], internal: Internal) -> PhasePolicy {
    PhasePolicy {
        access,
        allow: allow
            .iter()
            .map(|r| Rule::new(HostRule::parse(r).unwrap(), "network.agent.allow"))
            .collect(),
        internal,
        ..PhasePolicy::off("agent")
    }
}

/// `CONNECT target` through the proxy: the status line's code and the reason header.
async fn connect(proxy: SocketAddr, target: &str) -> String {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let code = head.split_whitespace().nth(1).unwrap_or("-").to_string();
    let reason = head
        .lines()
        .find_map(|l| l.strip_prefix("x-hangar-reason: "))
        .unwrap_or("-")
        .trim()
        .to_string();
    format!("{code} {reason}")
}

/// Adds `ip` to the host's `lo`: a public address of the host's own, as eth0's would be.
fn host_address(ip: &str) -> IpAddr {
    let ip: IpAddr = ip.parse().unwrap();
    hangar_testkit::upstream::add_loopback_address(ip);
    ip
}

/// Regression: with unrestricted access the proxy reached a service bound to `0.0.0.0`
/// (the daemon's TCP API, say) through the host's own non-private address. The host's
/// addresses are read per connection, so one added after the proxy started counts too.
#[tokio::test(flavor = "multi_thread")]
async fn the_hosts_own_addresses_are_refused_as_loopback_is() {
    let service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = service.local_addr().unwrap().port();
    let first = host_address("198.51.100.77");
    let ca = tempfile::tempdir().unwrap();
    let (_p, addr) = proxy(
        policy(Access::Unrestricted, &[], Internal::ExactRules),
        ca.path(),
    );
    let refused = "403 blocked-private-address";
    assert_eq!(connect(addr, &format!("{first}:{port}")).await, refused);
    let later = host_address("198.51.100.78");
    assert_eq!(connect(addr, &format!("{later}:{port}")).await, refused);
    // The admin's own exact rule still opens one, as for loopback.
    let (_p, addr) = proxy(
        policy(
            Access::Limited,
            &[&format!("{first}:{port}")],
            Internal::ExactRules,
        ),
        ca.path(),
    );
    assert_eq!(connect(addr, &format!("{first}:{port}")).await, "200 -");
}

/// Regression: a token tenant's exact allow rule opened the daemon host's loopback. For
/// a tenant only the hosts the admin named open internal addresses, checked at connect
/// time whatever the environment's rules say.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_exact_rule_opens_loopback_only_when_the_admin_named_it() {
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = service.local_addr().unwrap().to_string();
    let ca = tempfile::tempdir().unwrap();
    let check = |opened: &[&str], expected: &'static str| {
        let opened: Arc<[HostRule]> = opened.iter().map(|h| HostRule::parse(h).unwrap()).collect();
        let (target, ca) = (target.clone(), ca.path().to_path_buf());
        async move {
            let (_p, addr) = proxy(
                policy(Access::Limited, &[&target], Internal::Opened(opened)),
                &ca,
            );
            assert_eq!(connect(addr, &target).await, expected, "{target}");
        }
    };
    check(&[], "403 blocked-private-address").await;
    check(&["127.0.0.1:1"], "403 blocked-private-address").await;
    check(&[target.as_str()], "200 -").await;
}
