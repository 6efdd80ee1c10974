//! The destinations no sandbox reaches unless a rule names them: host-local and internal
//! addresses, in exactly the ranges DESIGN.md lists (v4, v6 and v4-mapped forms), and
//! every address of the host's own interfaces, whatever its range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses of the host's own interfaces, read afresh on every call so an address
/// added since counts at once. A service bound to `0.0.0.0` (the daemon's TCP API, say)
/// answers on each of them, so a public address of the host is as host-local as loopback.
/// An unreadable list is empty: the ranges of [`is_internal`] still hold.
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        tracing::warn!("failed to list the host's interface addresses");
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// Whether `ip` is internal or one of `host` (the host's addresses, see
/// [`host_addresses`]); a v4-mapped v6 address counts as its v4 form.
pub fn is_host_local(ip: IpAddr, host: &[IpAddr]) -> bool {
    let plain = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    is_internal(ip) || host.iter().any(|h| plain(*h) == plain(ip))
}

/// Whether `ip` is host-local or internal. Documentation and benchmarking ranges are
/// deliberately not refused: they are neither, and tests stand in for public hosts there.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 0 // 0.0.0.0/8
        || a == 127 // loopback
        || a == 10
        || (a == 172 && b & 0xf0 == 16) // 172.16.0.0/12
        || (a == 192 && b == 168)
        || (a == 100 && b & 0xc0 == 64) // CGNAT 100.64.0.0/10
        || (a == 169 && b == 254) // link-local, cloud metadata
        || a & 0xf0 == 224 // multicast 224.0.0.0/4
        || ip == Ipv4Addr::BROADCAST
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || s & 0xfe00 == 0xfc00 // unique local fc00::/7
        || s & 0xffc0 == 0xfe80 // link-local fe80::/10
        || s & 0xff00 == 0xff00 // multicast ff00::/8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ip: &str, internal: bool) {
        let parsed: IpAddr = ip.parse().unwrap();
        assert_eq!(is_internal(parsed), internal, "{ip}");
    }

    /// Regression: with unrestricted access the proxy reached a service bound to 0.0.0.0
    /// through the host's own public address.
    #[test]
    fn the_hosts_own_addresses_are_host_local_whatever_their_range() {
        let host: Vec<IpAddr> = vec![
            "198.51.100.77".parse().unwrap(),
            "2001:db8::77".parse().unwrap(),
        ];
        for (ip, local) in [
            ("198.51.100.77", true),
            ("::ffff:198.51.100.77", true),
            ("2001:db8::77", true),
            ("198.51.100.78", false),
            ("127.0.0.1", true),
        ] {
            assert_eq!(is_host_local(ip.parse().unwrap(), &host), local, "{ip}");
        }
        // The list is the kernel's: loopback is on it.
        assert!(host_addresses().contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn the_ranges_of_design_md_exactly() {
        for (ip, internal) in [
            ("0.0.0.0", true),
            ("0.255.255.255", true),
            ("1.0.0.0", false),
            ("126.255.255.255", false),
            ("127.0.0.1", true),
            ("127.255.255.254", true),
            ("10.1.2.3", true),
            ("11.0.0.0", false),
            ("172.15.255.255", false),
            ("172.16.0.0", true),
            ("172.31.255.255", true),
            ("172.32.0.0", false),
            ("192.168.1.1", true),
            ("192.169.0.0", false),
            ("100.63.255.255", false),
            ("100.64.0.0", true),
            ("100.127.255.255", true),
            ("100.128.0.0", false),
            ("169.254.169.254", true),
            ("169.255.0.0", false),
            ("224.0.0.1", true),
            ("239.255.255.255", true),
            ("240.0.0.1", false),
            ("255.255.255.255", true),
            ("255.255.255.254", false),
            // documentation and benchmarking ranges are reserved but not refused
            ("192.0.2.1", false),
            ("198.51.100.7", false),
            ("203.0.113.10", false),
            ("198.18.0.1", false),
            ("8.8.8.8", false),
            ("::", true),
            ("::1", true),
            ("::2", false),
            ("fc00::1", true),
            ("fdff:ffff::1", true),
            ("fe00::1", false),
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", false),
            ("ff02::1", true),
            ("2001:db8::1", false),
            ("2606:4700::1111", false),
            ("::ffff:127.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("::ffff:10.0.0.1", true),
            ("::ffff:8.8.8.8", false),
        ] {
            check(ip, internal);
        }
    }
}
