//! The data dir is hangar's alone: it holds every workspace's environments, logs,
//! snapshots, kept layers and keys, so no other local user may even list it. What hangar
//! creates there gets no group or other access, and an older install's open modes are
//! closed when the store or its database opens.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Group and other permission bits.
const OTHERS: u32 = 0o077;

/// Takes group and other access off `path`, a file or directory (a symlink is left as it
/// is: its mode means nothing). A missing path is no error.
pub(crate) fn tighten(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & OTHERS == 0 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & !OTHERS & 0o7777))
}

/// Creates `path` if missing, readable and writable by its owner only (SQLite gives its
/// WAL and shared-memory files the database file's mode), and tightens it if present.
pub(crate) fn create_file(path: &Path) -> io::Result<fs::File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    tighten(path)?;
    Ok(f)
}

/// `dir` and every entry directly in it, tightened: below those nothing is reachable by
/// others, whatever its own mode (layers keep the modes their images gave them).
pub(crate) fn tighten_tree_top(dir: &Path) -> io::Result<()> {
    tighten(dir)?;
    for entry in fs::read_dir(dir)? {
        tighten(&entry?.path())?;
    }
    Ok(())
}
