//! The overlay root filesystem of a sandbox: read-only lowers and one writable upper.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{sys_err, Result, SandboxError};

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

pub fn mount_overlay(id: &str, dirs: &OverlayDirs) -> Result<()> {
    let opts = options(dirs);
    if opts.len() > MAX_OPTIONS {
        return Err(SandboxError::OverlayOptionsTooLong {
            id: id.to_string(),
            len: opts.len(),
        });
    }
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
