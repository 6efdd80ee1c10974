//! The daemon's TCP listener as a remote client meets it: over TLS, verified against the
//! system's roots plus `HANGAR_CA`; plain HTTP only on loopback unless the daemon's admin
//! (`--insecure-listen`) and the client (`--insecure-url`) both say otherwise, so a bearer
//! token does not cross a network in clear by default. Each daemon has a fresh data dir:
//! nothing here needs an image.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

/// A documentation address on `lo`: local, so tests can listen on it, but not loopback,
/// which is what a daemon's remote interface looks like to both ends.
const REMOTE_IP: &str = "198.51.100.70";

/// A throwaway CA and a server certificate it signed for `localhost`, 127.0.0.1 and
/// [`REMOTE_IP`], as files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        common::write_pki(dir.path(), &["localhost", "127.0.0.1", REMOTE_IP]);
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The flags that give a daemon this certificate.
    fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("cert.pem"),
            "--tls-key".into(),
            self.path("key.pem"),
        ]
    }
}

/// `hangar serve` over a fresh data dir, stopped on drop.
struct Daemon {
    home: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    fn spawn(args: &[String]) -> Daemon {
        let home = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(home.path().join("serve.log")).unwrap();
        let child = common::hangar(home.path())
            .arg("serve")
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon { home, child }
    }

    fn said(&self) -> String {
        std::fs::read_to_string(self.home.path().join("serve.log")).unwrap()
    }

    /// A daemon that serves; returns once its listeners are up.
    fn start(args: &[String]) -> Daemon {
        let mut d = Daemon::spawn(args);
        common::wait_serving(&mut d.child, &d.home.path().join("serve.log"));
        d
    }

    /// A daemon that must refuse to start; what it said.
    fn refused(args: &[String]) -> String {
        let mut d = Daemon::spawn(args);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = d.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the daemon started: {}",
                d.said()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(1), "{}", d.said());
        d.said()
    }

    /// The port of its TCP listener, as it says on start.
    fn port(&self) -> u16 {
        common::tcp_port(&self.said())
    }

    /// `hangar` on the daemon's own socket: the local admin.
    fn local(&self, args: &[&str]) -> Output {
        common::hangar(self.home.path())
            .args(args)
            .output()
            .unwrap()
    }

    /// A token for a new workspace.
    fn token(&self) -> String {
        let out = self.local(&["token", "create", "--workspace", "remote"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `hangar list` from elsewhere: `url`, the token (if any), `env` (HANGAR_CA) and
    /// `args`.
    fn remote(
        &self,
        url: &str,
        token: Option<&str>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Output {
        // Another data dir: nothing reaches this daemon but through `url`.
        let elsewhere = tempfile::tempdir().unwrap();
        let mut cmd = common::hangar(elsewhere.path());
        cmd.env("HANGAR_URL", url)
            .env_remove("HANGAR_TOKEN")
            .env_remove("HANGAR_CA")
            .envs(env.iter().copied())
            .args(args)
            .arg("list");
        if let Some(t) = token {
            cmd.env("HANGAR_TOKEN", t);
        }
        cmd.output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.local(&["shutdown"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn add_remote_ip() {
    hangar_testkit::upstream::add_loopback_address(REMOTE_IP.parse::<IpAddr>().unwrap());
}

/// Runs a remote command that must exit 1 with `expected` in its stderr.
fn check_fails(out: Output, expected: &str) -> String {
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(expected), "expected `{expected}` in: {err}");
    err
}

#[test]
fn a_tls_listener_serves_clients_that_trust_its_ca_and_no_one_else() {
    let pki = Pki::new();
    let mut args = strings(&["--listen", "tcp:127.0.0.1:0"]);
    args.extend(pki.flags());
    let d = Daemon::start(&args);
    assert!(
        d.said().contains("(TLS; bearer tokens only)"),
        "{}",
        d.said()
    );
    let port = d.port();
    let token = d.token();
    let token = Some(token.as_str());
    let ca = pki.path("ca.pem");
    let trusted = [("HANGAR_CA", ca.as_str())];

    for host in ["127.0.0.1", "localhost"] {
        let out = d.remote(&format!("https://{host}:{port}"), token, &trusted, &[]);
        assert_eq!(out.status.code(), Some(0), "{host}: {}", stderr(&out));
    }
    let out = d.remote(&format!("https://127.0.0.1:{port}"), None, &trusted, &[]);
    check_fails(out, "failed to authenticate");
    let out = d.remote(
        &format!("https://127.0.0.1:{port}"),
        token,
        &[],
        &["--ca", &ca],
    );
    assert_eq!(out.status.code(), Some(0), "--ca: {}", stderr(&out));

    // Without the private CA, the system's roots do not vouch for the daemon.
    let out = d.remote(&format!("https://127.0.0.1:{port}"), token, &[], &[]);
    let err = check_fails(
        out,
        &format!("failed to verify the hangar daemon at https://127.0.0.1:{port}"),
    );
    assert!(err.contains("HANGAR_CA"), "{err}");
    // Nor does another CA.
    let other = Pki::new();
    let other_ca = other.path("ca.pem");
    let out = d.remote(
        &format!("https://127.0.0.1:{port}"),
        token,
        &[("HANGAR_CA", other_ca.as_str())],
        &[],
    );
    check_fails(out, "failed to verify the hangar daemon");
    // A HANGAR_CA that holds no certificate is named.
    let key = pki.path("key.pem");
    let out = d.remote(
        &format!("https://127.0.0.1:{port}"),
        token,
        &[("HANGAR_CA", key.as_str())],
        &[],
    );
    check_fails(
        out,
        &format!("failed to read CA certificates from {key}: it holds no PEM certificate"),
    );

    // Plain HTTP to the TLS port is told so, and never served.
    let out = d.remote(&format!("http://127.0.0.1:{port}"), token, &trusted, &[]);
    let err = check_fails(out, "this listener speaks TLS only (use an https:// URL)");
    assert!(!err.contains("failed to authenticate"), "{err}");
}

#[test]
fn plain_http_listens_on_loopback_only_unless_insecure_listen() {
    add_remote_ip();
    let check = |listen: &str, ip: &str| {
        let said = Daemon::refused(&strings(&["--listen", listen]));
        assert!(
            said.contains(&format!(
                "failed to listen on {listen}: {ip} is not a loopback address"
            )) && said.contains("--tls-cert and --tls-key, or --insecure-listen"),
            "{listen}: {said}"
        );
    };
    check("tcp:0.0.0.0:0", "0.0.0.0");
    check(&format!("tcp:{REMOTE_IP}:0"), REMOTE_IP);
    check("tcp:[::]:0", "::");

    for (listen, host) in [
        ("tcp:127.0.0.1:0", "127.0.0.1"),
        ("tcp:localhost:0", "localhost"),
    ] {
        let d = Daemon::start(&strings(&["--listen", listen]));
        assert!(d.said().contains("(plain HTTP; bearer tokens only)"));
        assert!(!d.said().contains("warning"), "{}", d.said());
        let token = d.token();
        let out = d.remote(&format!("{host}:{}", d.port()), Some(&token), &[], &[]);
        assert_eq!(out.status.code(), Some(0), "{listen}: {}", stderr(&out));
    }
    let d = Daemon::start(&strings(&[
        "--listen",
        &format!("tcp:{REMOTE_IP}:0"),
        "--insecure-listen",
    ]));
    assert!(
        d.said()
            .contains("bearer tokens cross the network in clear"),
        "{}",
        d.said()
    );
}

/// The attack: a remote client with a token and a plain `HANGAR_URL` sent the token in
/// clear to whatever listened there. Now the client refuses before it connects, and an
/// eavesdropper's listener at that address never sees a connection.
#[test]
fn a_token_is_not_sent_in_clear_beyond_loopback() {
    add_remote_ip();
    let plain = Daemon::start(&strings(&[
        "--listen",
        &format!("tcp:{REMOTE_IP}:0"),
        "--insecure-listen",
    ]));
    let token = plain.token();
    let token = Some(token.as_str());

    let eavesdropper = std::net::TcpListener::bind((REMOTE_IP, 0)).unwrap();
    let port = eavesdropper.local_addr().unwrap().port();
    for url in [
        format!("http://{REMOTE_IP}:{port}"),
        format!("{REMOTE_IP}:{port}"),
        format!("tcp:{REMOTE_IP}:{port}"),
    ] {
        let out = plain.remote(&url, token, &[], &[]);
        check_fails(out, "plain HTTP would send the bearer token in clear");
    }
    eavesdropper.set_nonblocking(true).unwrap();
    match eavesdropper.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the client connected: {other:?}"),
    }

    // The daemon's admin opting in is not enough: the client must too, for a network
    // its users trust.
    let url = format!("http://{REMOTE_IP}:{}", plain.port());
    check_fails(
        plain.remote(&url, token, &[], &[]),
        "plain HTTP would send the bearer token in clear",
    );
    let out = plain.remote(&url, token, &[], &["--insecure-url"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Over TLS the same address needs no opt-in.
    let pki = Pki::new();
    let mut args = strings(&["--listen", &format!("tcp:{REMOTE_IP}:0")]);
    args.extend(pki.flags());
    let tls = Daemon::start(&args);
    let token = tls.token();
    let ca = pki.path("ca.pem");
    let url = format!("https://{REMOTE_IP}:{}", tls.port());
    let out = tls.remote(&url, Some(&token), &[("HANGAR_CA", ca.as_str())], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn bad_tls_files_are_errors_naming_the_file() {
    let pki = Pki::new();
    let (cert, key, other) = (
        pki.path("cert.pem"),
        pki.path("key.pem"),
        pki.path("other-key.pem"),
    );
    let missing = pki.dir.path().join("missing.pem");
    let missing = missing.display().to_string();
    let check = |cert: &str, key: &str, expected: &str| {
        let said = Daemon::refused(&strings(&[
            "--listen",
            "tcp:127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ]));
        assert!(said.contains(expected), "expected `{expected}` in: {said}");
        assert!(!said.contains("serving on"), "{said}");
    };
    check(
        &cert,
        &other,
        &format!("failed to use the TLS key {other}: it does not match the certificate in {cert}"),
    );
    check(
        &cert,
        &cert,
        &format!("failed to read the TLS key {cert}: it holds no PEM private key"),
    );
    check(
        &key,
        &key,
        &format!("failed to read the TLS certificate {key}: it holds no PEM certificate"),
    );
    check(
        &cert,
        &missing,
        &format!("failed to read the TLS key {missing}: No such file or directory"),
    );

    // A certificate without a TCP listener would protect nothing.
    let said = Daemon::refused(&pki.flags());
    assert!(said.contains("failed to use --tls-cert"), "{said}");
    // One without the other is a usage error.
    let out = common::hangar(Path::new("/nonexistent"))
        .args(["serve", "--tls-cert", &cert])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
