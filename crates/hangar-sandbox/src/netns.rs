//! Network namespaces with only loopback, made in-process and pinned at `/run/netns/NAME`
//! (where `ip netns` looks), so they can be listed, joined by the runtime, and removed.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::error::{io_err, sys_err, Result, SandboxError};

pub const NETNS_DIR: &str = "/run/netns";

/// A pinned network namespace. Dropping it does not remove it; call [`NetNs::remove`].
#[derive(Debug)]
pub struct NetNs {
    path: PathBuf,
}

impl NetNs {
    /// Creates the namespace on a short-lived thread: `unshare(CLONE_NEWNET)` changes only
    /// the calling thread, so the rest of the process keeps the host's network.
    pub fn create(name: &str) -> Result<NetNs> {
        NetNs::start(name)?.finish()
    }

    /// Starts creating the namespace on its helper thread and returns at once, so the
    /// caller can prepare other parts of a sandbox meanwhile; see [`PendingNetNs::finish`].
    pub fn start(name: &str) -> Result<PendingNetNs> {
        let dir = Path::new(NETNS_DIR);
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let path = dir.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create the network namespace pin", &path))?;
        let pin = path.clone();
        let thread = std::thread::spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(sys_err("create a network namespace"))?;
            loopback_up()?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &pin,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(sys_err(format!(
                "pin the network namespace at {}",
                pin.display()
            )))
        });
        Ok(PendingNetNs { path, thread })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pin of a namespace made earlier, possibly by a process that has died.
    pub(crate) fn existing(name: &str) -> Option<NetNs> {
        let path = Path::new(NETNS_DIR).join(name);
        path.exists().then_some(NetNs { path })
    }

    /// Unpins and deletes the namespace; the kernel frees it once nothing is inside.
    pub fn remove(&self) -> Result<()> {
        match umount2(&self.path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(sys_err(format!("unpin {}", self.path.display()))(e)),
        }
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &self.path)(e)),
        }
    }
}

/// A namespace being made; [`PendingNetNs::finish`] waits for it.
#[derive(Debug)]
pub struct PendingNetNs {
    path: PathBuf,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl PendingNetNs {
    /// Waits for the helper thread; on failure, nothing of the namespace remains.
    pub fn finish(self) -> Result<NetNs> {
        let made = self.thread.join().unwrap_or_else(|_| {
            Err(SandboxError::Sys {
                action: "create a network namespace (helper thread panicked)".into(),
                source: nix::Error::EIO,
            })
        });
        let ns = NetNs { path: self.path };
        if let Err(e) = made {
            let _ = ns.remove();
            return Err(e);
        }
        Ok(ns)
    }
}

/// Sets `lo` up in the calling thread's network namespace.
fn loopback_up() -> Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys_err("open a socket in the new network namespace"))?;
    // SAFETY: an all-zero ifreq is valid; the name is copied in below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into `req`, a valid ifreq naming `lo`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(sys_err("read the flags of lo")(nix::Error::last()));
    }
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS just filled.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(sys_err("bring lo up")(nix::Error::last()));
    }
    Ok(())
}

/// Lists pinned network namespaces (for tests and crash recovery).
pub fn netns_names() -> Vec<String> {
    fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Binds a TCP listener inside the network namespace pinned at `netns`, on a short-lived
/// helper thread (`setns` changes only the calling thread). The socket stays in that
/// namespace and can be served from anywhere in this process: the proxy's way in.
pub fn listen_in(netns: &Path, addr: std::net::SocketAddr) -> Result<std::net::TcpListener> {
    let ns = fs::File::open(netns).map_err(io_err("open", netns))?;
    let thread = std::thread::spawn(move || -> Result<std::net::TcpListener> {
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(sys_err("enter the sandbox's network namespace"))?;
        std::net::TcpListener::bind(addr)
            .map_err(|e| sys_err(format!("listen on {addr} in the sandbox"))(errno_of(&e)))
    });
    thread.join().unwrap_or_else(|_| {
        Err(SandboxError::Sys {
            action: "listen in the sandbox (helper thread panicked)".into(),
            source: nix::Error::EIO,
        })
    })
}

fn errno_of(e: &std::io::Error) -> nix::Error {
    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
