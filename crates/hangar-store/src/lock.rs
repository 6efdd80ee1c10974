//! Lock files (flock) that say "a live process holds this": the kernel drops a lock when
//! its holder dies, so a lock that can be taken belongs to nobody.

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::Path;

/// Opens (creating it and its directory) and locks `path` without waiting: `None` when
/// another process or handle holds it.
pub fn try_lock(path: &Path) -> io::Result<Option<File>> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}
