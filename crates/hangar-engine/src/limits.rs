//! The limits every attempt's sandbox gets: the environment's `[resources]`, and for
//! what it leaves out a default derived from the machine, so no sandbox is ever
//! unlimited (an agent or repository code could otherwise take the host's memory,
//! processes or disk from every other attempt).

use std::path::Path;

use hangar_sandbox::Resources;
use hangar_spec::{format_bytes, ResourceLimits};

/// `[resources] pids` unless set: far above what a build runs, far below a fork bomb.
pub const DEFAULT_PIDS: i64 = 4096;

/// The machine's size: what the default limits and admission are shares of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Machine {
    /// Physical memory, in bytes.
    pub memory: u64,
    pub cores: usize,
}

impl Machine {
    pub(crate) fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: sysconf only reads system constants.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Machine {
            memory: pages.max(0) as u64 * page.max(0) as u64,
            cores,
        }
    }
}

/// The machine's defaults for one sandbox, computed once per engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineLimits {
    pub memory: u64,
    pub pids: i64,
    pub cpus: f64,
    pub disk: u64,
}

impl MachineLimits {
    /// Memory: three quarters of the machine's, shared by `slots` attempts, those that
    /// start whatever the machine's load (the rest is the host's, the daemon's and the
    /// proxies'). More may run; a limit is a ceiling, and admission keeps what the
    /// running attempts reserve within the machine. CPUs: all cores, since an idle core
    /// lent is no loss; the kernel shares them fairly. Disk: half of the data dir's
    /// filesystem, shared likewise (snapshots and kept layers need the rest).
    pub fn detect(data_dir: &Path, slots: usize) -> MachineLimits {
        let m = Machine::detect();
        MachineLimits::from_machine(m.memory, m.cores, fs_size(data_dir), slots)
    }

    /// The defaults of a machine with `memory` bytes, `cores` and a data dir
    /// filesystem of `fs_size` bytes (0 when unknown), for `slots` attempts at once.
    pub fn from_machine(memory: u64, cores: usize, fs_size: u64, slots: usize) -> MachineLimits {
        let slots = slots.max(1) as u64;
        // A sandbox below this could not run a package manager; one slot that gets it
        // on a small machine is better than none that works.
        const FLOOR: u64 = 512 << 20;
        let fs_size = if fs_size == 0 { 64 << 30 } else { fs_size };
        // Whole MiB: the kernel keeps a memory limit in pages, and the log reads better.
        let mib = |n: u64| (n >> 20 << 20).max(FLOOR);
        MachineLimits {
            memory: mib(memory / 4 * 3 / slots),
            pids: DEFAULT_PIDS,
            cpus: cores.max(1) as f64,
            disk: mib(fs_size / 2 / slots),
        }
    }

    /// The sandbox's limits: each `[resources]` value the environment sets, else this
    /// machine's default.
    pub fn apply(&self, env: &ResourceLimits) -> Resources {
        Resources {
            memory_bytes: Some(env.memory.unwrap_or(self.memory)),
            pids: Some(env.pids.unwrap_or(self.pids)),
            cpus: Some(env.cpus.unwrap_or(self.cpus)),
            disk_bytes: Some(env.disk.unwrap_or(self.disk)),
        }
    }

    /// The line an attempt's log gets: each limit and whether the environment set it.
    pub fn describe(&self, env: &ResourceLimits) -> String {
        let r = self.apply(env);
        let from = |set: bool| if set { "" } else { " (default)" };
        format!(
            "limits: memory {}{}, pids {}{}, cpus {}{}, disk {}{}",
            format_bytes(r.memory_bytes.unwrap_or_default()),
            from(env.memory.is_some()),
            r.pids.unwrap_or_default(),
            from(env.pids.is_some()),
            r.cpus.unwrap_or_default(),
            from(env.cpus.is_some()),
            format_bytes(r.disk_bytes.unwrap_or_default()),
            from(env.disk.is_some()),
        )
    }
}

/// The size of the filesystem holding `dir` (0 when it cannot be read).
fn fs_size(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes only into the zeroed struct it is given; the path is a
    // NUL-terminated string that outlives the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_blocks as u64 * st.f_frsize as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(memory: u64, cores: usize, fs: u64, slots: usize, expected: MachineLimits) {
        assert_eq!(
            MachineLimits::from_machine(memory, cores, fs, slots),
            expected,
            "for {memory} bytes, {cores} cores, {fs} bytes of disk, {slots} slots"
        );
    }

    #[test]
    fn defaults_share_the_machine_between_slots() {
        check(
            16 << 30,
            8,
            200 << 30,
            4,
            MachineLimits {
                memory: 3 << 30,
                pids: DEFAULT_PIDS,
                cpus: 8.0,
                disk: 25 << 30,
            },
        );
        // A small machine still gets a sandbox that can run a package manager.
        check(
            1 << 30,
            1,
            1 << 30,
            4,
            MachineLimits {
                memory: 512 << 20,
                pids: DEFAULT_PIDS,
                cpus: 1.0,
                disk: 512 << 20,
            },
        );
        // Odd sizes are cut to whole MiB; an unreadable filesystem size is taken as 64 GiB.
        check(
            (8 << 30) + 12345,
            2,
            0,
            1,
            MachineLimits {
                memory: 6 << 30,
                pids: DEFAULT_PIDS,
                cpus: 2.0,
                disk: 32 << 30,
            },
        );
        check(
            8 << 30,
            2,
            100_000_000_000,
            3,
            MachineLimits {
                memory: 2 << 30,
                pids: DEFAULT_PIDS,
                cpus: 2.0,
                disk: 15_894 << 20,
            },
        );
    }

    #[test]
    fn the_environment_wins_limit_by_limit_and_the_log_says_which() {
        let machine = MachineLimits::from_machine(8 << 30, 2, 100 << 30, 2);
        let env = ResourceLimits {
            memory: Some(1 << 30),
            disk: Some(64 << 20),
            ..ResourceLimits::default()
        };
        assert_eq!(
            machine.apply(&env),
            Resources {
                memory_bytes: Some(1 << 30),
                pids: Some(DEFAULT_PIDS),
                cpus: Some(2.0),
                disk_bytes: Some(64 << 20),
            }
        );
        assert_eq!(
            machine.describe(&env),
            "limits: memory 1GiB, pids 4096 (default), cpus 2 (default), disk 64MiB"
        );
        assert_eq!(
            machine.describe(&ResourceLimits::default()),
            "limits: memory 3GiB (default), pids 4096 (default), cpus 2 (default), disk 25GiB (default)"
        );
    }
}
