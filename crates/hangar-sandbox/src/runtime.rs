//! OCI runtimes behind one trait: crun (the default) and runc. Both are driven the same way,
//! `run` in the foreground with the control socket preserved as fd 3, so that the runtime
//! deletes the container itself when hangar-init exits.

use std::ffi::OsString;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::cgroup::CgroupLayout;
use crate::error::{Result, SandboxError};

/// Which runtime binary drives a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RuntimeKind {
    #[default]
    Crun,
    Runc,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 2] = [RuntimeKind::Crun, RuntimeKind::Runc];

    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Crun => "crun",
            RuntimeKind::Runc => "runc",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "crun" => Ok(RuntimeKind::Crun),
            "runc" => Ok(RuntimeKind::Runc),
            other => Err(format!("unknown OCI runtime `{other}`: use crun or runc")),
        }
    }
}

/// One OCI runtime command-line tool. Implementations differ only in their quirks; the
/// conformance suite in `tests/` runs every implementation through the same cases.
pub trait OciRuntime: Send + Sync + fmt::Debug {
    fn kind(&self) -> RuntimeKind;
    fn binary(&self) -> &Path;
    /// The runtime's state directory (`--root`), private to hangar.
    fn state_root(&self) -> &Path;

    /// Arguments that run a bundle in the foreground: the runtime starts PID 1, waits for
    /// it, and deletes the container when it exits.
    fn run_args(&self, bundle: &Path, id: &str, preserve_fds: u32) -> Vec<OsString> {
        vec![
            "--root".into(),
            self.state_root().into(),
            "run".into(),
            "--bundle".into(),
            bundle.into(),
            "--preserve-fds".into(),
            preserve_fds.to_string().into(),
            id.into(),
        ]
    }

    /// Arguments that forcibly delete a container, running or not.
    fn delete_args(&self, id: &str) -> Vec<OsString> {
        vec![
            "--root".into(),
            self.state_root().into(),
            "delete".into(),
            "--force".into(),
            id.into(),
        ]
    }

    /// Whether the runtime must run in a private mount namespace with the hybrid cgroup2
    /// mount removed (crun refuses "hybrid" cgroup setups).
    fn needs_private_mount_ns(&self, layout: &CgroupLayout) -> bool;
}

#[derive(Debug)]
pub struct Crun {
    binary: PathBuf,
    root: PathBuf,
}

#[derive(Debug)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
}

impl OciRuntime for Crun {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Crun
    }
    fn binary(&self) -> &Path {
        &self.binary
    }
    fn state_root(&self) -> &Path {
        &self.root
    }
    fn needs_private_mount_ns(&self, layout: &CgroupLayout) -> bool {
        layout.hybrid
    }
}

impl OciRuntime for Runc {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Runc
    }
    fn binary(&self) -> &Path {
        &self.binary
    }
    fn state_root(&self) -> &Path {
        &self.root
    }
    fn needs_private_mount_ns(&self, _layout: &CgroupLayout) -> bool {
        false
    }
}

/// Finds the runtime's binary and returns its driver; state goes under `state_base/<name>`.
pub fn runtime(kind: RuntimeKind, state_base: &Path) -> Result<Arc<dyn OciRuntime>> {
    let binary = find_binary(kind.name()).ok_or_else(|| SandboxError::RuntimeNotFound {
        name: kind.name().into(),
    })?;
    let root = state_base.join(kind.name());
    Ok(match kind {
        RuntimeKind::Crun => Arc::new(Crun { binary, root }),
        RuntimeKind::Runc => Arc::new(Runc { binary, root }),
    })
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A runtime invocation. When the runtime needs it, the child enters a private mount
/// namespace with the hybrid cgroup2 mount detached; `control` becomes its fd 3.
pub fn runtime_command(
    rt: &dyn OciRuntime,
    layout: &CgroupLayout,
    args: &[std::ffi::OsString],
    control: Option<&OwnedFd>,
) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(rt.binary());
    cmd.args(args);
    let private_ns = rt.needs_private_mount_ns(layout);
    let control_raw = control.as_ref().map(|fd| fd.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls with
    // static, NUL-terminated strings: no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            if private_ns {
                leave_hybrid_cgroup2()?;
            }
            if let Some(fd) = control_raw {
                if fd == hangar_init::CONTROL_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0);
                } else if libc::dup2(fd, hangar_init::CONTROL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// For a child between fork and exec (a `pre_exec` hook): a private mount namespace
/// without the cgroup2 mount a hybrid layout has at `/sys/fs/cgroup/unified`, which crun
/// refuses. Only raw syscalls with static, NUL-terminated strings: no allocation, no
/// locks, so it is safe after fork.
pub fn leave_hybrid_cgroup2() -> std::io::Result<()> {
    // SAFETY: unshare, mount and umount2 take only the static C strings and null
    // pointers given here; none of them allocates or locks.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
    }
    Ok(())
}
