//! Leases: a holder's directory (a running sandbox's `run/<id>/`, a kept attempt layer's
//! `kept/<name>/`) names, one file per [`LeaseKind`], the layers it stands on. The lease
//! ends with its holder's directory (a sandbox's teardown removes it), so a crashed
//! holder leaks nothing; every collector skips what a lease names.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::{io_err, Bucket, Result, Store};

/// What a lease file names, and so which collector it keeps away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseKind {
    /// Unpacked image layers (their diff_ids' hex): [`Store::gc`].
    Layers,
    /// Environment snapshots (their keys).
    Snapshot,
    /// Kept attempt layers (their names).
    Kept,
    /// Agent CLI layers (their keys).
    Harness,
}

impl LeaseKind {
    pub const ALL: [LeaseKind; 4] = [
        LeaseKind::Layers,
        LeaseKind::Snapshot,
        LeaseKind::Kept,
        LeaseKind::Harness,
    ];

    /// The bucket whose entries a lease of this kind names.
    pub fn bucket(self) -> Bucket {
        match self {
            LeaseKind::Layers => Bucket::Layers,
            LeaseKind::Snapshot => Bucket::Snapshots,
            LeaseKind::Kept => Bucket::Kept,
            LeaseKind::Harness => Bucket::Harnesses,
        }
    }

    /// The lease file's name in its holder's directory.
    pub fn file_name(self) -> &'static str {
        match self {
            LeaseKind::Layers => "layers",
            LeaseKind::Snapshot => "snapshot",
            LeaseKind::Kept => "kept",
            LeaseKind::Harness => "harness",
        }
    }
}

/// A lease held by this process alone, for work that is not a sandbox (packing a
/// snapshot for export): it ends when this is dropped.
#[derive(Debug)]
pub struct Hold {
    _holder: tempfile::TempDir,
}

/// Records, in a holder's directory, the names of `kind` it uses (replacing what it
/// named of that kind before).
pub fn lease(holder: &Path, kind: LeaseKind, names: &[&str]) -> Result<()> {
    let path = holder.join(kind.file_name());
    let text: String = names.iter().map(|n| format!("{n}\n")).collect();
    fs::write(&path, text).map_err(io_err("write", &path))
}

impl Store {
    /// Leases, for a sandbox standing on `lowers`, every layer among them that a
    /// collector could remove: image layers, snapshots, kept and harness layers, each
    /// kind named by its directory in its bucket. Other directories are not leased.
    pub fn lease_stack(&self, holder: &Path, lowers: &[PathBuf]) -> Result<()> {
        for kind in LeaseKind::ALL {
            let bucket = self.path(kind.bucket());
            let names: Vec<&str> = lowers
                .iter()
                .filter_map(|l| l.strip_prefix(&bucket).ok()?.iter().next()?.to_str())
                .collect();
            if !names.is_empty() {
                lease(holder, kind, &names)?;
            }
        }
        Ok(())
    }

    /// A lease on `names` of `kind` until the returned [`Hold`] is dropped (a holder's
    /// directory of its own under `run/`).
    pub fn hold(&self, kind: LeaseKind, names: &[&str]) -> Result<Hold> {
        let run = self.path(Bucket::Run);
        let holder = tempfile::Builder::new()
            .prefix("hold-")
            .tempdir_in(&run)
            .map_err(io_err("create a directory in", &run))?;
        lease(holder.path(), kind, names)?;
        Ok(Hold { _holder: holder })
    }

    /// Everything running sandboxes and kept attempt layers hold a `kind` lease on.
    pub fn leased(&self, kind: LeaseKind) -> HashSet<String> {
        leased_in(&[self.path(Bucket::Run), self.path(Bucket::Kept)], kind)
    }

    /// Everything running sandboxes alone hold a `kind` lease on.
    pub fn leased_by_sandboxes(&self, kind: LeaseKind) -> HashSet<String> {
        leased_in(&[self.path(Bucket::Run)], kind)
    }
}

fn leased_in(dirs: &[PathBuf], kind: LeaseKind) -> HashSet<String> {
    let mut out = HashSet::new();
    for holders in dirs {
        let Ok(entries) = fs::read_dir(holders) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(text) = fs::read_to_string(e.path().join(kind.file_name())) {
                out.extend(text.lines().map(str::to_string));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_files_are_named_by_kind() {
        let names = LeaseKind::ALL.map(LeaseKind::file_name);
        assert_eq!(names, ["layers", "snapshot", "kept", "harness"]);
    }

    #[test]
    fn leases_are_read_from_sandboxes_and_kept_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sandbox = store.path(Bucket::Run).join("sb");
        let kept = store.path(Bucket::Kept).join("t-1");
        for holder in [&sandbox, &kept] {
            fs::create_dir_all(holder).unwrap();
        }
        lease(&sandbox, LeaseKind::Harness, &["h1"]).unwrap();
        lease(&sandbox, LeaseKind::Snapshot, &["s1"]).unwrap();
        lease(&kept, LeaseKind::Snapshot, &["s2"]).unwrap();
        // A lock file beside the holders is no holder.
        fs::write(store.path(Bucket::Run).join("sb.lock"), "").unwrap();

        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        assert_eq!(store.leased(LeaseKind::Snapshot), set(&["s1", "s2"]));
        assert_eq!(store.leased_by_sandboxes(LeaseKind::Snapshot), set(&["s1"]));
        assert_eq!(store.leased_by_sandboxes(LeaseKind::Harness), set(&["h1"]));
        assert_eq!(store.leased(LeaseKind::Kept), set(&[]));
        // A new lease of a kind replaces the holder's old one.
        lease(&sandbox, LeaseKind::Harness, &["h2"]).unwrap();
        assert_eq!(store.leased(LeaseKind::Harness), set(&["h2"]));
        // A hold is a holder of its own while it lives.
        let hold = store.hold(LeaseKind::Snapshot, &["s3"]).unwrap();
        assert_eq!(
            store.leased_by_sandboxes(LeaseKind::Snapshot),
            set(&["s1", "s3"])
        );
        drop(hold);
        assert_eq!(store.leased_by_sandboxes(LeaseKind::Snapshot), set(&["s1"]));
    }

    #[test]
    fn a_stack_leases_each_layer_by_its_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sandbox = store.path(Bucket::Run).join("sb");
        fs::create_dir_all(&sandbox).unwrap();
        let hex = "a".repeat(64);
        let lowers = [
            store.path(Bucket::Kept).join("t-2/upper"),
            store.path(Bucket::Kept).join("t-1/upper"),
            store.path(Bucket::Snapshots).join("key"),
            store.path(Bucket::Harnesses).join("h"),
            store.path(Bucket::Layers).join(&hex),
            // Not a layer any collector owns.
            dir.path().join("elsewhere"),
        ];
        store.lease_stack(&sandbox, &lowers).unwrap();
        let read = |kind: LeaseKind| fs::read_to_string(sandbox.join(kind.file_name())).unwrap();
        assert_eq!(read(LeaseKind::Kept), "t-2\nt-1\n");
        assert_eq!(read(LeaseKind::Snapshot), "key\n");
        assert_eq!(read(LeaseKind::Harness), "h\n");
        assert_eq!(read(LeaseKind::Layers), format!("{hex}\n"));
        let bare = store.path(Bucket::Run).join("bare");
        fs::create_dir_all(&bare).unwrap();
        store
            .lease_stack(&bare, &[store.path(Bucket::Layers).join(&hex)])
            .unwrap();
        let files: Vec<_> = fs::read_dir(&bare)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(files, ["layers"], "only the kinds it stands on");
    }
}
