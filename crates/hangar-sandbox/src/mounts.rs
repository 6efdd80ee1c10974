//! Mounts made from the host inside a running sandbox: a read-only view of a directory
//! (the workspace, for an agent in read-only mode). The host thread enters the sandbox's
//! mount namespace and works on file descriptors only (open_tree, mount_setattr,
//! move_mount), so no path the sandbox controls is followed: a symlink anywhere in the
//! path is refused.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sched::CloneFlags;

use crate::cgroup::CgroupLayout;
use crate::error::{io_err, Result, SandboxError};

/// A read-only mount over a directory of the sandbox; [`ReadOnly::undo`] removes it (it
/// also goes with the sandbox).
#[derive(Debug)]
pub struct ReadOnly {
    mntns: fs::File,
    tree: OwnedFd,
    path: String,
}

fn sys(action: String) -> impl FnOnce(nix::Error) -> SandboxError {
    move |source| SandboxError::Sys { action, source }
}

fn last_errno() -> nix::Error {
    nix::Error::last()
}

/// The host PID of the sandbox's init: the process of its cgroup that is PID 1 in its own
/// PID namespace.
pub(crate) fn init_pid(cgroups: &CgroupLayout, cgroup: &str) -> Result<u32> {
    let procs = cgroups.memory_dir(cgroup).join("cgroup.procs");
    let list = fs::read_to_string(&procs).map_err(io_err("read", &procs))?;
    list.lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("NSpid:"))
                        .map(|l| l.split_whitespace().last() == Some("1"))
                })
                .unwrap_or(false)
        })
        .ok_or_else(|| SandboxError::Sys {
            action: format!("find the sandbox's init in {}", procs.display()),
            source: nix::Error::ESRCH,
        })
}

/// Runs `f` on a helper thread inside the mount namespace `mntns` (its root and working
/// directory are the namespace's root).
fn in_mount_ns<T: Send + 'static>(
    mntns: &fs::File,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = mntns
        .try_clone()
        .map_err(io_err("open", Path::new("mnt")))?;
    std::thread::spawn(move || -> Result<T> {
        // A thread shares its root and cwd with the process until it unshares them, and
        // setns into a mount namespace refuses a thread that shares them.
        nix::sched::unshare(CloneFlags::CLONE_FS).map_err(sys("unshare the fs context".into()))?;
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS)
            .map_err(sys("enter the sandbox's mount namespace".into()))?;
        f()
    })
    .join()
    .unwrap_or_else(|_| {
        Err(SandboxError::Sys {
            action: "mount in the sandbox (helper thread panicked)".into(),
            source: nix::Error::EIO,
        })
    })
}

impl ReadOnly {
    /// Mounts `path` (absolute, inside the sandbox) read-only over itself.
    pub(crate) fn mount(init_pid: u32, path: &str) -> Result<ReadOnly> {
        let ns_path = format!("/proc/{init_pid}/ns/mnt");
        let mntns = fs::File::open(&ns_path).map_err(io_err("open", Path::new(&ns_path)))?;
        let target = path.to_string();
        let tree = in_mount_ns(&mntns, move || {
            let what = |a: &str| format!("{a} {target} in the sandbox");
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            let dir = openat2(nix::fcntl::AT_FDCWD, target.as_str(), how)
                .map_err(sys(what("open (no symlinks)")))?;
            // SAFETY: open_tree takes a valid fd, a NUL-terminated empty path and flags;
            // it returns a new fd or -1.
            let tree = unsafe {
                libc::syscall(
                    libc::SYS_open_tree,
                    dir.as_raw_fd(),
                    c"".as_ptr(),
                    libc::OPEN_TREE_CLONE
                        | libc::OPEN_TREE_CLOEXEC
                        | libc::AT_EMPTY_PATH as u32
                        | libc::AT_RECURSIVE as u32,
                )
            };
            if tree < 0 {
                return Err(sys(what("clone the mount of"))(last_errno()));
            }
            // SAFETY: the syscall returned a new fd that nothing else owns.
            let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
            let attr = libc::mount_attr {
                attr_set: libc::MOUNT_ATTR_RDONLY,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            // SAFETY: a valid fd, an empty path, a pointer to a mount_attr and its size.
            let set = unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    tree.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
                    &attr as *const libc::mount_attr,
                    std::mem::size_of::<libc::mount_attr>(),
                )
            };
            if set < 0 {
                return Err(sys(what("make read-only"))(last_errno()));
            }
            // SAFETY: two valid fds with empty paths, flags saying both are fds.
            let moved = unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    tree.as_raw_fd(),
                    c"".as_ptr(),
                    dir.as_raw_fd(),
                    c"".as_ptr(),
                    libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
                )
            };
            if moved < 0 {
                return Err(sys(what("mount read-only"))(last_errno()));
            }
            Ok(tree)
        })?;
        Ok(ReadOnly {
            mntns,
            tree,
            path: path.to_string(),
        })
    }

    /// Removes the read-only mount, wherever the sandbox moved it.
    pub fn undo(self) -> Result<()> {
        let ReadOnly { mntns, tree, path } = self;
        in_mount_ns(&mntns, move || {
            nix::unistd::fchdir(&tree).map_err(sys(format!("enter the mount of {path}")))?;
            nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
                .map_err(sys(format!("unmount the read-only {path}")))
        })
    }
}
