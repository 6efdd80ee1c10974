//! Crash recovery: removes what is left of sandboxes whose owning process died (killed
//! container processes, overlay mount, network namespace, cgroups, directory).
//!
//! A live sandbox holds an flock on `run/<id>.lock` taken before its directory exists
//! and dropped only after the directory is gone, so a directory whose lock can be taken
//! belongs to nobody. Reaping is therefore safe while other processes run sandboxes.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{io_err, Result};
use crate::netns::NetNs;
use crate::runtime::{runtime, RuntimeKind};
use crate::sandbox::{claim, lock_path, Dirs, HostConfig, Parts, SandboxId, RUNTIME_FILE};

/// What one [`reap`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Sandboxes of dead owners that were removed.
    pub removed: Vec<SandboxId>,
    /// Sandboxes that could not be removed, with what remains of each.
    pub failed: Vec<(SandboxId, String)>,
}

/// Removes every sandbox under `host.run_dir` whose owner is gone; leaves live ones alone.
pub fn reap(host: &HostConfig) -> Result<Reaped> {
    let mut reaped = Reaped::default();
    let entries = match fs::read_dir(&host.run_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(reaped),
        Err(e) => return Err(io_err("list", &host.run_dir)(e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(id) = SandboxId::new(name.trim_end_matches(".lock")) else {
            continue;
        };
        let dirs = Dirs::new(&host.run_dir, &id);
        if name.ends_with(".lock") && dirs.base.exists() {
            continue; // handled with its directory
        }
        let Some(lock) = claim(&lock_path(&dirs))? else {
            continue; // its owner is alive
        };
        if !dirs.base.exists() {
            // A lock file left by an owner that died between its steps, or by us.
            let _ = fs::remove_file(lock_path(&dirs));
            continue;
        }
        match reap_one(host, id.clone(), dirs, lock) {
            Ok(()) => reaped.removed.push(id),
            Err(e) => reaped.failed.push((id, e.to_string())),
        }
    }
    Ok(reaped)
}

fn reap_one(host: &HostConfig, id: SandboxId, dirs: Dirs, lock: fs::File) -> Result<()> {
    let kind: RuntimeKind = fs::read_to_string(dirs.base.join(RUNTIME_FILE))
        .ok()
        .and_then(|name| name.parse().ok())
        .unwrap_or_default();
    let cgroup = host.cgroups.sandbox_path(&id.host_name());
    let mut parts = Parts {
        netns: NetNs::existing(&id.host_name()),
        runtime: runtime(kind, &host.state_dir)?,
        cgroups: host.cgroups.clone(),
        cgroup,
        mounted: true,
        runtime_done: false,
        lock: Some(lock),
        id,
        dirs,
    };
    // The runtime's `delete --force` (in teardown) kills the container when its state
    // survived; processes of a container whose state is gone are killed by cgroup.
    kill_cgroup(host, &parts.cgroup);
    let name = parts.id.host_name();
    let done = parts.teardown(None);
    // The dead owner's `crun run` (or runc) exits once its container is gone; one that
    // lingers is stopped, so nothing of the sandbox runs after a reap.
    kill_runtime_processes(&name);
    done
}

/// SIGKILLs processes whose arguments name the container `name` (the runtime's own),
/// and waits briefly until they are gone.
fn kill_runtime_processes(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = runtime_pids(name);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) with a pid read from /proc; no memory is shared.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runtime_pids(name: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0);
            let program = Path::new(std::str::from_utf8(args.next()?).ok()?);
            let is_runtime = ["crun", "runc"]
                .iter()
                .any(|r| program.file_name().is_some_and(|f| f == *r));
            (is_runtime && args.any(|a| a == name.as_bytes())).then_some(pid)
        })
        .collect()
}

/// SIGKILLs every process left in a sandbox's cgroups and waits briefly for them to go,
/// so the cgroup directories can be removed.
fn kill_cgroup(host: &HostConfig, cgroup: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut any = false;
        for dir in host.cgroups.existing_dirs(cgroup) {
            for pid in pids_in(&dir) {
                any = true;
                // SAFETY: kill(2) with a pid read from the cgroup; no memory is shared.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !any || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn pids_in(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
