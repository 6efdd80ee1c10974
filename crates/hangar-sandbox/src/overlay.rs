//! The overlay root filesystem of a sandbox: read-only lowers and one writable upper.
//! The kernel shows the mount's options in the sandbox's `/proc/self/mountinfo` as they
//! were given, so the overlay is mounted with names relative to the sandbox's own
//! directory (links to the layers), never with the host's paths.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{io_err, sys_err, Result, SandboxError};

/// The kernel copies mount data into one page.
const MAX_OPTIONS: usize = 4095;

/// The directories of one overlay mount.
#[derive(Debug, Clone)]
pub struct OverlayDirs {
    /// Read-only layers, top-most first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
}

/// The option string for `mount -t overlay`.
pub fn options(dirs: &OverlayDirs) -> String {
    let lowers: Vec<String> = dirs.lowers.iter().map(|p| escape(p)).collect();
    // `volatile`: no syncs to the upper filesystem. An upper is scratch space for one
    // sandbox, and unmounting a non-volatile overlay costs a journal commit (~40 ms here).
    // Whoever keeps an upper (a snapshot) syncs it explicitly.
    // No redirects or metacopy, whatever the kernel's defaults: a kept upper must be a
    // plain tree that packs as an OCI layer.
    format!(
        "lowerdir={},upperdir={},workdir={},volatile,redirect_dir=off,metacopy=off",
        lowers.join(":"),
        escape(&dirs.upper),
        escape(&dirs.work)
    )
}

/// Overlay splits lowerdir on ':' and options on ','; both are escaped with '\'.
fn escape(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Mounts `dirs` as the root of sandbox `id`, naming every directory relative to `base`
/// (the sandbox's directory): the lowers by links `base/lower/<n>`, the upper and work
/// directories (which are in `base`) by their names there.
pub fn mount_overlay(id: &str, base: &Path, dirs: &OverlayDirs) -> Result<()> {
    let links = base.join("lower");
    fs::create_dir(&links).map_err(io_err("create", &links))?;
    let mut names = OverlayDirs {
        lowers: Vec::with_capacity(dirs.lowers.len()),
        upper: relative(base, &dirs.upper),
        work: relative(base, &dirs.work),
        target: dirs.target.clone(),
    };
    for (n, lower) in dirs.lowers.iter().enumerate() {
        let link = links.join(n.to_string());
        std::os::unix::fs::symlink(lower, &link).map_err(io_err("link", &link))?;
        names.lowers.push(Path::new("lower").join(n.to_string()));
    }
    let opts = options(&names);
    if opts.len() > MAX_OPTIONS {
        return Err(SandboxError::OverlayOptionsTooLong {
            id: id.to_string(),
            len: opts.len(),
        });
    }
    // Relative names resolve against the working directory: changed on a thread of its
    // own (after it stops sharing the process's), so no other thread's paths move.
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_FS)
                .map_err(sys_err("unshare the fs context to mount the overlay"))?;
            nix::unistd::chdir(base).map_err(sys_err(format!("enter {}", base.display())))?;
            mount(
                Some("overlay"),
                &dirs.target,
                Some("overlay"),
                MsFlags::empty(),
                Some(opts.as_str()),
            )
            .map_err(sys_err(format!(
                "mount the overlay root at {}",
                dirs.target.display()
            )))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(SandboxError::Sys {
                action: format!("mount the overlay root of {id} (helper thread panicked)"),
                source: nix::Error::EIO,
            })
        })
    })
}

/// `path` relative to `base` when it is inside it, else as it is.
fn relative(base: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(base).unwrap_or(path).to_path_buf()
}

/// Unmounts the root, lazily if something still holds it, and ignores "not mounted".
pub fn unmount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(nix::Error::EBUSY) => umount2(target, MntFlags::MNT_DETACH)
            .map_err(sys_err(format!("unmount {}", target.display()))),
        Err(e) => Err(sys_err(format!("unmount {}", target.display()))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_escape_separators() {
        let dirs = OverlayDirs {
            lowers: vec!["/l/a".into(), "/l/b:c".into()],
            upper: "/u,x".into(),
            work: "/w".into(),
            target: "/t".into(),
        };
        assert_eq!(
            options(&dirs),
            r"lowerdir=/l/a:/l/b\:c,upperdir=/u\,x,workdir=/w,volatile,redirect_dir=off,metacopy=off"
        );
    }
}
