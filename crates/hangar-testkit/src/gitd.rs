//! `git daemon` serving the repositories under one directory over `git://` on a free
//! port, on loopback or at an address outside the host: a repository by URL, for callers
//! that may not name a local path (a workspace token's environments). Stopped on drop.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct GitDaemon {
    child: Child,
    ip: IpAddr,
    port: u16,
}

impl GitDaemon {
    /// Serves every repository under `base`, read-only, on loopback.
    pub fn serve(base: &Path) -> GitDaemon {
        GitDaemon::start(base, IpAddr::V4(Ipv4Addr::LOCALHOST), None)
    }

    /// Serves `base` at `ip` in the testkit's outside namespace
    /// ([`crate::upstream::outside_address`]): a public host, as far as hangar can tell.
    pub fn serve_outside(base: &Path, ip: IpAddr) -> GitDaemon {
        let ns = crate::upstream::outside_address(ip);
        let name = ns.file_name().expect("a namespace name").to_owned();
        GitDaemon::start(base, ip, Some(&name))
    }

    fn start(base: &Path, ip: IpAddr, netns: Option<&std::ffi::OsStr>) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.arg("netns").arg("exec").arg(ns).arg("git");
                c
            }
            None => Command::new("git"),
        };
        let child = cmd
            .arg("daemon")
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg(format!("--listen={ip}"))
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        let started = Instant::now();
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "git daemon did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        GitDaemon { child, ip, port }
    }

    /// Where it listens, `IP:PORT`.
    pub fn authority(&self) -> String {
        std::net::SocketAddr::new(self.ip, self.port).to_string()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of repository `name` (a directory under the base).
    pub fn url(&self, name: &str) -> String {
        format!("git://{}/{name}", self.authority())
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
