//! The disk limit of one sandbox, kept by a watchdog: the upper dir (everything the
//! sandbox wrote) is measured now and then, and once it passes the limit every process
//! but init is killed, again at each look for as long as it stays over, and the size is
//! recorded for the owner to report.
//!
//! The data dir's filesystem need not support project quotas (ext4 needs `prjquota`,
//! tmpfs and overlay-on-overlay have none), so a watchdog is the one way that works
//! everywhere. It is a soft limit: what is written between two looks passes it, which
//! is why the looks are frequent while a walk is cheap.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::cgroup::CgroupLayout;

/// The shortest pause between two looks.
const MIN_INTERVAL: Duration = Duration::from_millis(250);
/// A walk may take at most this share of one core: the pause after a walk is this many
/// times as long as the walk took (a snapshot with a large `node_modules` is looked at
/// less often than an empty upper).
const PAUSE_PER_WALK: u32 = 20;

/// A sandbox's upper dir that grew past its disk limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskExceeded {
    /// What the upper dir held when the watchdog saw it over (allocated bytes).
    pub used: u64,
    pub limit: u64,
}

/// The running watchdog; it stops when this is dropped.
pub(crate) struct DiskWatch {
    _stop: mpsc::Sender<()>,
    /// The size seen over the limit, 0 while under.
    exceeded: Arc<AtomicU64>,
    limit: u64,
}

impl DiskWatch {
    /// Starts watching `upper` on a thread of its own; `cgroup` holds the processes
    /// killed when it passes `limit`.
    pub(crate) fn start(
        upper: PathBuf,
        limit: u64,
        layout: CgroupLayout,
        cgroup: String,
    ) -> DiskWatch {
        let (stop, stopped) = mpsc::channel::<()>();
        let exceeded = Arc::new(AtomicU64::new(0));
        let seen = exceeded.clone();
        std::thread::Builder::new()
            .name("hangar-disk-watch".into())
            .spawn(move || {
                let mut pause = MIN_INTERVAL;
                // Disconnected (the sandbox is gone) ends the loop; nothing is ever sent.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(pause) {
                    let began = Instant::now();
                    let used = usage(&upper);
                    pause = MIN_INTERVAL.max(began.elapsed() * PAUSE_PER_WALK);
                    if used > limit {
                        seen.fetch_max(used, Ordering::Relaxed);
                        kill_all_but_init(&layout, &cgroup);
                    }
                }
            })
            .expect("spawn the disk watchdog thread");
        DiskWatch {
            _stop: stop,
            exceeded,
            limit,
        }
    }

    pub(crate) fn exceeded(&self) -> Option<DiskExceeded> {
        match self.exceeded.load(Ordering::Relaxed) {
            0 => None,
            used => Some(DiskExceeded {
                used,
                limit: self.limit,
            }),
        }
    }
}

/// The bytes allocated to a tree (st_blocks, so a sparse file counts what it holds),
/// without following symlinks; a hard-linked file counts once. Entries that vanish
/// during the walk are skipped: the sandbox keeps writing.
pub fn usage(root: &Path) -> u64 {
    let mut total = 0;
    let mut linked = HashSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.nlink() > 1 && !meta.is_dir() && !linked.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    total
}

/// SIGKILLs every process of the sandbox's cgroup but its init, which the owner still
/// needs to end the sandbox in order.
fn kill_all_but_init(layout: &CgroupLayout, cgroup: &str) {
    let Ok(init) = crate::mounts::init_pid(layout, cgroup) else {
        return;
    };
    for pid in crate::reap::pids_in(&layout.memory_dir(cgroup)) {
        if pid as u32 != init {
            // SAFETY: kill(2) with a pid read from the sandbox's cgroup; no memory is shared.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_allocated_bytes_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![1u8; 1 << 20];
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/a"), &data).unwrap();
        fs::hard_link(dir.path().join("sub/a"), dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("root")).unwrap();
        // A sparse file of 1 GiB holds nothing.
        fs::File::create(dir.path().join("sparse"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let used = usage(dir.path());
        assert!(
            ((1 << 20)..(1 << 20) + (64 << 10)).contains(&used),
            "{used} bytes"
        );
    }
}
