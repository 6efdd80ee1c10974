//! What the CLI's test and bench binaries share: the `hangar` command over a data dir, with the
//! test build of hangar-init; the daemon its commands start stops soon after the last.

// Each test binary compiles this module and uses a different part of it.
#![allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]

use std::path::Path;
use std::process::Command;

/// The daemon the commands start stops this long after the last of them (and its tasks).
pub const DAEMON_IDLE: &str = "5s";

/// `hangar` over the data dir `home`.
pub fn hangar(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hangar"));
    cmd.env("HANGAR_HOME", home)
        .env("HANGAR_INIT", hangar_testkit::init_binary())
        .env("HANGAR_DAEMON_IDLE", DAEMON_IDLE);
    cmd
}

/// `hangar` over the shared test data dir, its Debian image built.
pub fn hangar_shared() -> Command {
    let store = hangar_testkit::shared_store();
    hangar_testkit::debian_image(&store);
    hangar(store.root())
}

/// A throwaway CA and a certificate it signed for `names`, as files in `dir`: `ca.pem`
/// (for the CLI's `HANGAR_CA`), `cert.pem`, `key.pem`, and `other-key.pem` (a key that
/// is not the certificate's).
pub fn write_pki(dir: &Path, names: &[&str]) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "hangar test private CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    for (name, pem) in [
        ("ca.pem", ca_cert.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
        ("other-key.pem", other_key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
}

/// Waits until the `hangar serve` running as `child`, its stderr in `log`, serves: it
/// says so once every listener is up. Fails the test, with what it said, if it exits
/// first or takes a minute. What it said.
pub fn wait_serving(child: &mut std::process::Child, log: &Path) -> String {
    let started = std::time::Instant::now();
    loop {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        if said.contains("hangar: serving on unix:") {
            return said;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the daemon exited ({status}): {said}");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the daemon did not start: {said}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The address (`HOST:PORT`) of the TCP listener a daemon's start-up lines name.
pub fn tcp_listener(said: &str) -> String {
    said.lines()
        .find_map(|l| l.strip_prefix("hangar: serving on tcp:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no TCP listener in: {said}"))
        .to_string()
}

/// The port of that listener.
pub fn tcp_port(said: &str) -> u16 {
    let addr = tcp_listener(said);
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in tcp:{addr}"))
}
