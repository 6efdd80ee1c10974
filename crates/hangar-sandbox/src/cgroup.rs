//! Where sandbox cgroups go, and what the host reads back from them (OOM kills, leftovers).
//!
//! Sandboxes are placed under the caller's own cgroup, so a hangar started inside a
//! delegated or limited cgroup keeps its sandboxes inside the same limits.

use std::fs;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup layout of this machine, read once.
#[derive(Debug, Clone)]
pub struct CgroupLayout {
    /// True when `/sys/fs/cgroup` is a cgroup2 mount (pure v2).
    pub unified: bool,
    /// True when v1 controllers sit beside a cgroup2 mount at `/sys/fs/cgroup/unified`:
    /// crun refuses this unless run in a private mount namespace without that mount.
    pub hybrid: bool,
    /// The caller's cgroup path (memory controller's on v1), under which sandboxes go.
    pub parent: String,
}

impl CgroupLayout {
    pub fn detect() -> CgroupLayout {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let fstype_at = |target: &str| {
            mountinfo.lines().find_map(|l| {
                let mut parts = l.split(" - ");
                let left = parts.next()?;
                let right = parts.next()?;
                (left.split(' ').nth(4)? == target)
                    .then(|| right.split(' ').next().unwrap_or("").to_string())
            })
        };
        let unified = fstype_at(CGROUP_ROOT).as_deref() == Some("cgroup2");
        let hybrid = !unified && fstype_at("/sys/fs/cgroup/unified").as_deref() == Some("cgroup2");
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        CgroupLayout {
            unified,
            hybrid,
            parent: parent_from_proc(&own, unified),
        }
    }

    /// The cgroup path of one sandbox.
    pub fn sandbox_path(&self, name: &str) -> String {
        format!("{}/{}", self.parent.trim_end_matches('/'), name)
    }

    /// The directory holding memory accounting files for a cgroup path.
    pub fn memory_dir(&self, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        if self.unified {
            Path::new(CGROUP_ROOT).join(rel)
        } else {
            Path::new(CGROUP_ROOT).join("memory").join(rel)
        }
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup.
    pub fn oom_kills(&self, path: &str) -> u64 {
        let dir = self.memory_dir(path);
        let (file, key) = if self.unified {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok())?
                })
            })
            .unwrap_or(0)
    }

    /// Every directory of this cgroup path that exists in any hierarchy: empty after a
    /// clean teardown.
    pub fn existing_dirs(&self, path: &str) -> Vec<PathBuf> {
        let rel = path.trim_start_matches('/');
        let mut roots = vec![PathBuf::from(CGROUP_ROOT)];
        if !self.unified {
            if let Ok(entries) = fs::read_dir(CGROUP_ROOT) {
                roots = entries.flatten().map(|e| e.path()).collect();
            }
        }
        roots
            .into_iter()
            .map(|r| r.join(rel))
            .filter(|p| p.is_dir())
            .collect()
    }
}

/// Picks the caller's cgroup from `/proc/self/cgroup` text: the memory controller's path
/// on v1 (the controller whose limits matter), the unified path on v2.
fn parent_from_proc(text: &str, unified: bool) -> String {
    let mut v2 = None;
    let mut memory = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        } else if ctrls.split(',').any(|c| c == "memory") {
            memory = Some(path.to_string());
        }
    }
    let chosen = if unified { v2 } else { memory.or(v2) };
    chosen.unwrap_or_else(|| "/".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, unified: bool, expected: &str) {
        assert_eq!(parent_from_proc(text, unified), expected, "for {text:?}");
    }

    #[test]
    fn parent_is_the_callers_own_cgroup() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/510f\n1:cpu:/\n0::/\n";
        check(hybrid, false, "/process_api/510f");
        check(
            "0::/user.slice/session-1.scope\n",
            true,
            "/user.slice/session-1.scope",
        );
        check("", false, "/");
    }

    #[test]
    fn sandbox_path_joins_without_double_slash() {
        let layout = CgroupLayout {
            unified: false,
            hybrid: true,
            parent: "/".into(),
        };
        assert_eq!(layout.sandbox_path("hangar-x"), "/hangar-x");
        let layout = CgroupLayout {
            parent: "/a/b".into(),
            ..layout
        };
        assert_eq!(layout.sandbox_path("hangar-x"), "/a/b/hangar-x");
    }
}
