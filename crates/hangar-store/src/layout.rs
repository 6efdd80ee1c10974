//! The data dir's layout: [`Bucket`] names every folder and file directly under it, so
//! one table says what is on disk and who owns it (as uv's cache buckets do); code
//! reaches an entry through [`Store::path`] (or [`Bucket::at`] before a store is open),
//! never by joining a name of its own onto the root.
//!
//! ```text
//! blobs/sha256/<hex>        manifests, configs, compressed layers        content store
//! layers/sha256/<hex>       unpacked image layers, keyed by diff_id     content store
//! images/<name>.json        image records                                content store
//! tmp/                      staging: writes land here, then are renamed  content store
//! run/<id>/, run/<id>.lock  sandboxes, with their leases (`run/<id>/<kind>`)   sandbox
//! snapshots/<key>[.lock]    environment snapshots, their build locks     engine layers
//! kept/<task>-<n>/          attempt layers kept for follow-ups, leases   engine layers
//! harnesses/<key>[.done|.lock]  agent CLI layers, done markers, locks    engine layers
//! mirrors/                  bare repository mirrors                      engine git
//! locks/task-<id>.lock      a running task's lock (crash recovery)       engine
//! proxy/ca.pem              the proxies' CA                              engine net
//! hangar.db[-wal|-shm]      metadata (SQLite), `hangar.migrate.lock`     store db
//! secret.key                the key that encrypts secrets (default)      engine secrets
//! hangar.sock[.lock]        the daemon's socket (default), its lock      CLI daemon
//! daemon.log                the background daemon's output               CLI daemon
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use crate::{io_err, private, Result, Store};

/// One entry directly under the data dir (a folder, or a file for the few that are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// Blobs by sha256: manifests, configs, compressed layers.
    Blobs,
    /// Unpacked image layers by diff_id.
    Layers,
    /// Image records, one JSON file per name.
    Images,
    /// Staging for every write of the store (same filesystem: renamed into place).
    Tmp,
    /// Sandboxes' directories and locks (hangar-sandbox's), and their leases.
    Run,
    /// Environment snapshots (beside `run/`: an upper dir becomes one by a rename).
    Snapshots,
    /// Finished attempts' layers kept for follow-ups (beside `run/`, for the same reason).
    Kept,
    /// Agent CLI layers, one per image and install.
    Harnesses,
    /// Bare mirrors of the environments' repositories.
    Mirrors,
    /// Locks of the tasks a live process is running.
    Locks,
    /// The proxies' certificate authority.
    Proxy,
    /// The metadata database file (SQLite puts `-wal` and `-shm` beside it).
    Database,
    /// The key that encrypts secrets, unless another file is configured.
    SecretKey,
    /// The daemon's Unix socket, unless another path is configured (its lock beside it).
    Socket,
    /// What the daemon started in the background writes.
    DaemonLog,
}

impl Bucket {
    /// Every entry, in the order of the layout table.
    pub const ALL: [Bucket; 15] = [
        Bucket::Blobs,
        Bucket::Layers,
        Bucket::Images,
        Bucket::Tmp,
        Bucket::Run,
        Bucket::Snapshots,
        Bucket::Kept,
        Bucket::Harnesses,
        Bucket::Mirrors,
        Bucket::Locks,
        Bucket::Proxy,
        Bucket::Database,
        Bucket::SecretKey,
        Bucket::Socket,
        Bucket::DaemonLog,
    ];

    /// The entry's path relative to the data dir.
    pub fn rel(self) -> &'static str {
        match self {
            Bucket::Blobs => "blobs/sha256",
            Bucket::Layers => "layers/sha256",
            Bucket::Images => "images",
            Bucket::Tmp => "tmp",
            Bucket::Run => "run",
            Bucket::Snapshots => "snapshots",
            Bucket::Kept => "kept",
            Bucket::Harnesses => "harnesses",
            Bucket::Mirrors => "mirrors",
            Bucket::Locks => "locks",
            Bucket::Proxy => "proxy",
            Bucket::Database => "hangar.db",
            Bucket::SecretKey => "secret.key",
            Bucket::Socket => "hangar.sock",
            Bucket::DaemonLog => "daemon.log",
        }
    }

    /// A folder (created when the store opens), rather than a file its owner creates.
    pub fn is_dir(self) -> bool {
        !matches!(
            self,
            Bucket::Database | Bucket::SecretKey | Bucket::Socket | Bucket::DaemonLog
        )
    }

    /// The entry under the data dir `root` (for callers that have no [`Store`] yet, such
    /// as the CLI finding its daemon's socket).
    pub fn at(self, root: &Path) -> PathBuf {
        root.join(self.rel())
    }
}

impl Store {
    /// Opens the data dir at `root`, creating it and every folder of the layout, all
    /// private to their owner.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err("create", &root))?;
        // Before anything is created inside: nothing below is then reachable by others.
        private::tighten_tree_top(&root).map_err(io_err("restrict access to", &root))?;
        for bucket in Bucket::ALL.into_iter().filter(|b| b.is_dir()) {
            let p = bucket.at(&root);
            fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        private::tighten_tree_top(&root).map_err(io_err("restrict access to", &root))?;
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `bucket` lives in this data dir.
    pub fn path(&self, bucket: Bucket) -> PathBuf {
        bucket.at(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In octal, as `ls` and chmod speak of it.
    fn mode(p: &Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        format!(
            "{:o}",
            fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
        )
    }

    /// Regression: the data dir and `snapshots/`, `kept/` were 0755, so any local user
    /// read every workspace's snapshots and kept layers.
    #[test]
    fn the_data_dir_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        Store::open(&root).unwrap();
        assert_eq!(mode(&root), "700");
        for sub in ["blobs", "layers", "images", "tmp", "run"] {
            assert_eq!(mode(&root.join(sub)), "700", "{sub}");
        }
        // What an older install left open is closed; what is below keeps its modes
        // (a layer's files are its image's).
        let open = fs::Permissions::from_mode(0o755);
        fs::set_permissions(&root, open.clone()).unwrap();
        for sub in ["snapshots/k/layer", "kept/a1"] {
            fs::create_dir_all(root.join(sub)).unwrap();
            fs::set_permissions(root.join(sub), open.clone()).unwrap();
        }
        for top in ["snapshots", "kept"] {
            fs::set_permissions(root.join(top), open.clone()).unwrap();
        }
        fs::write(root.join("secret.key"), "k").unwrap();
        fs::set_permissions(root.join("secret.key"), fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("link")).unwrap();
        Store::open(&root).unwrap();
        assert_eq!(mode(&root), "700");
        assert_eq!(mode(&root.join("snapshots")), "700");
        assert_eq!(mode(&root.join("kept")), "700");
        assert_eq!(mode(&root.join("secret.key")), "600");
        assert_eq!(mode(&root.join("snapshots/k/layer")), "755");
        assert_eq!(mode(&root.join("kept/a1")), "755");
    }

    #[test]
    fn every_bucket_has_its_own_path() {
        let root = Path::new("/data");
        let table = [
            (Bucket::Blobs, "/data/blobs/sha256", true),
            (Bucket::Layers, "/data/layers/sha256", true),
            (Bucket::Images, "/data/images", true),
            (Bucket::Tmp, "/data/tmp", true),
            (Bucket::Run, "/data/run", true),
            (Bucket::Snapshots, "/data/snapshots", true),
            (Bucket::Kept, "/data/kept", true),
            (Bucket::Harnesses, "/data/harnesses", true),
            (Bucket::Mirrors, "/data/mirrors", true),
            (Bucket::Locks, "/data/locks", true),
            (Bucket::Proxy, "/data/proxy", true),
            (Bucket::Database, "/data/hangar.db", false),
            (Bucket::SecretKey, "/data/secret.key", false),
            (Bucket::Socket, "/data/hangar.sock", false),
            (Bucket::DaemonLog, "/data/daemon.log", false),
        ];
        assert_eq!(
            table.map(|(b, _, _)| b),
            Bucket::ALL,
            "the table covers every bucket, in order"
        );
        for (bucket, path, dir) in table {
            assert_eq!(bucket.at(root), Path::new(path), "{bucket:?}");
            assert_eq!(bucket.is_dir(), dir, "{bucket:?}");
        }
        // No two entries share a top-level name (one owner each).
        let mut tops: Vec<&str> = Bucket::ALL
            .iter()
            .map(|b| b.rel().split('/').next().unwrap())
            .collect();
        tops.sort();
        tops.dedup();
        assert_eq!(tops.len(), Bucket::ALL.len());
    }

    #[test]
    fn opening_creates_every_folder_and_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("data")).unwrap();
        for bucket in Bucket::ALL {
            let p = store.path(bucket);
            assert_eq!(p.is_dir(), bucket.is_dir(), "{bucket:?}");
            assert_eq!(p.exists(), bucket.is_dir(), "{bucket:?}");
        }
    }
}
